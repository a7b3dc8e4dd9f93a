"""A fake AWS STS answering ``AssumeRole`` (query protocol, XML), for the Bedrock assumed-role path.

The gateway reaches it through botocore's service-specific endpoint override (``AWS_ENDPOINT_URL_STS``). It
records each request (the form fields and the SigV4 ``Authorization`` header: who asked) and answers with the
temporary credentials it was built with. The signature itself is not checked here; FakeBedrock checks the
temporary credentials' signatures.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from aiohttp import web

from .server import FakeServer, RecordedRequest

__all__ = ["FakeSTS"]


class FakeSTS(FakeServer):
    def __init__(self, *, access_key: str, secret_key: str, session_token: str, lifetime: timedelta) -> None:
        super().__init__()
        self.access_key, self.secret_key, self.session_token = access_key, secret_key, session_token
        self.lifetime = lifetime

    def form(self, index: int = -1) -> dict[str, str]:
        """The form fields of a recorded request."""
        return {k: v[0] for k, v in parse_qs(self.requests[index].body.decode()).items()}

    async def _dispatch(self, request: web.Request, recorded: RecordedRequest, *, bad_json: bool) -> web.StreamResponse:
        form = {k: v[0] for k, v in parse_qs(recorded.body.decode()).items()}
        if form.get("Action") != "AssumeRole" or not form.get("RoleArn") or not form.get("RoleSessionName"):
            return web.Response(
                status=400, text="<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>"
            )
        expires = (datetime.now(UTC) + self.lifetime).strftime("%Y-%m-%dT%H:%M:%SZ")
        xml = f"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>{self.access_key}</AccessKeyId>
      <SecretAccessKey>{self.secret_key}</SecretAccessKey>
      <SessionToken>{self.session_token}</SessionToken>
      <Expiration>{expires}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <AssumedRoleId>AROAFAKE:{form["RoleSessionName"]}</AssumedRoleId>
      <Arn>{form["RoleArn"]}/{form["RoleSessionName"]}</Arn>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>fake-sts-request</RequestId></ResponseMetadata>
</AssumeRoleResponse>"""
        return web.Response(text=xml, content_type="text/xml")
