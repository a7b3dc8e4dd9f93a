"""AWS Bedrock Runtime: Claude through InvokeModel, any chat model through Converse; SigV4-signed.

``model: bedrock/converse/<modelId>`` uses Converse (and ConverseStream); ``bedrock/invoke/<modelId>``
uses InvokeModel with Anthropic's body; a bare ``bedrock/<modelId>`` picks InvokeModel for Anthropic
models (the most faithful path for Claude) and Converse for the rest. The provider speaks the Anthropic
dialect to the gateway: Converse JSON and the AWS event-stream frames are translated at this edge
(:mod:`lockgate.dialects.converse`), so Claude Code and OpenAI clients both reach Bedrock.

Credentials come from botocore, never by hand: explicit ``aws_access_key_id`` / ``aws_secret_access_key``
/ ``aws_session_token``; else the standard chain (environment, ``aws_profile_name``, web identity,
container and instance roles); with ``aws_role_name`` (and ``aws_session_name``), an assumed role on top.
Resolving or refreshing credentials may call AWS, so it runs in a thread and only when they are about
to expire; signing itself is local. ``aws_bedrock_runtime_endpoint`` overrides the endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from lockgate.deployment import Deployment
from lockgate.dialects.anthropic import MESSAGES_FIELDS, fit_thinking, text_of
from lockgate.dialects.cache_points import inject_cache_points
from lockgate.dialects.converse import ConverseToMessagesStream, converse_to_message, messages_to_converse
from lockgate.errors import BadRequest, UpstreamUnavailable, upstream_error
from lockgate.providers.base import Call, Provider
from lockgate.secret import Secret
from lockgate.upstream import UpstreamRequest, UpstreamResponse

__all__ = ["Bedrock"]

INVOKE_VERSION = "bedrock-2023-05-31"
# anthropic-beta flags Bedrock accepts (AWS's Claude Messages request reference); any other flag makes Bedrock
# answer 400 "invalid beta flag", so the rest of what clients such as Claude Code send is left out.
BETA_FLAGS = frozenset(
    {
        "computer-use-2024-10-22", "computer-use-2025-01-24", "token-efficient-tools-2025-02-19",
        "interleaved-thinking-2025-05-14", "output-128k-2025-02-19", "dev-full-thinking-2025-05-14",
        "context-1m-2025-08-07", "context-management-2025-06-27", "effort-2025-11-24",
        "tool-search-tool-2025-10-19", "tool-examples-2025-10-29",
    }
)  # fmt: skip
# Flags with another name on Bedrock (Claude Code's first-party tool search is tool-search-tool there).
BETA_ALIASES = {"advanced-tool-use-2025-11-20": "tool-search-tool-2025-10-19"}


_PROFILES = frozenset({"us", "eu", "apac", "global", "jp", "au", "us-gov"})
"""Prefixes of Bedrock's cross-region inference profiles."""


def bedrock_betas(header: str | None) -> list[str]:
    """The client's anthropic-beta flags that Bedrock accepts, in order, without duplicates."""
    flags: list[str] = []
    for flag in (header or "").split(","):
        flag = BETA_ALIASES.get(flag.strip(), flag.strip())
        if flag in BETA_FLAGS and flag not in flags:
            flags.append(flag)
    return flags


REFRESH_MARGIN_SECONDS = 300.0
# Anthropic body fields InvokeModel does not take (the model is in the URL; streaming is the operation; the
# others are first-party API features Bedrock refuses as extraneous keys).
_NOT_IN_INVOKE = ("model", "stream", "metadata", "service_tier", "container", "inference_geo", "mcp_servers")
# Fields Bedrock takes only with their beta flag.
_BETA_FIELDS = {"output_config": "effort-2025-11-24", "context_management": "context-management-2025-06-27"}


class _Credentials:
    """One deployment's AWS credentials: resolved once, refreshed in a thread before they expire."""

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self._source: Any = None
        self._frozen: Any = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        if self._frozen is not None and time.time() < self._expires - REFRESH_MARGIN_SECONDS:
            return self._frozen
        async with self._lock:
            if self._frozen is None or time.time() >= self._expires - REFRESH_MARGIN_SECONDS:
                self._frozen, self._expires = await asyncio.to_thread(self._resolve)
        return self._frozen

    def _resolve(self) -> tuple[Any, float]:
        import botocore.credentials
        import botocore.session

        if self._source is None:
            self._source = self._build(botocore.session, botocore.credentials)
        if self._source is None:
            raise UpstreamUnavailable("no AWS credentials were found for this Bedrock deployment")
        frozen = self._source.get_frozen_credentials()
        expiry = getattr(self._source, "_expiry_time", None)
        return frozen, expiry.timestamp() if expiry is not None else float("inf")

    def _build(self, sessions: Any, credentials: Any) -> Any:
        options = self._deployment.options
        key, secret = options.get("aws_access_key_id"), options.get("aws_secret_access_key")
        token = options.get("aws_session_token")
        if key and secret:
            base = credentials.Credentials(
                str(key), _reveal(secret), _reveal(token) if token else None, method="explicit"
            )
        else:
            session = sessions.Session(profile=options.get("aws_profile_name"))
            base = session.get_credentials()
        role = options.get("aws_role_name")
        if role and base is not None:
            session = sessions.Session()
            fetcher = credentials.AssumeRoleCredentialFetcher(
                client_creator=session.create_client,
                source_credentials=base,
                role_arn=str(role),
                extra_args={"RoleSessionName": str(options.get("aws_session_name") or "lockgate")},
            )
            return credentials.DeferredRefreshableCredentials(
                method="assume-role", refresh_using=fetcher.fetch_credentials
            )
        return base


def _reveal(value: Any) -> str:
    return value.reveal() if isinstance(value, Secret) else str(value)


class _Translated:
    """A Bedrock response seen in the Anthropic dialect: JSON translated, event-stream frames decoded."""

    def __init__(self, resp: UpstreamResponse, mode: str, model: str) -> None:
        self._resp = resp
        self._mode = mode
        self._model = model
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        body = await self._resp.read()
        if self.status >= 400 or self._mode == "invoke":
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable("the upstream sent a response that is not valid JSON") from None
        return orjson.dumps(converse_to_message(data, self._model, "msg_bdrk_" + uuid.uuid4().hex[:20]))

    async def chunks(self) -> AsyncIterator[bytes]:
        from botocore.eventstream import ChecksumMismatch, EventStreamBuffer, ParserError

        frames = EventStreamBuffer()
        converter = ConverseToMessagesStream(self._model, "msg_bdrk_" + uuid.uuid4().hex[:20])
        async for chunk in self._resp.chunks():
            frames.add_data(chunk)
            out: list[bytes] = []
            try:
                for message in frames:
                    out.append(self._frame(message.headers, message.payload, converter))
            except (ChecksumMismatch, ParserError):
                self._resp.close()
                raise UpstreamUnavailable("the upstream sent a corrupt event-stream frame") from None
            data = b"".join(out)
            if data:
                yield data
        if self._mode == "converse":
            tail = converter.finish()
            if tail:
                yield tail

    def _frame(self, headers: Mapping[str, Any], payload: bytes, converter: ConverseToMessagesStream) -> bytes:
        if headers.get(":message-type") == "exception" or headers.get(":message-type") == "error":
            kind = str(headers.get(":exception-type") or headers.get(":error-code") or "serviceException")
            message = (orjson.loads(payload) or {}).get("message", kind) if payload else kind
            error_type = "overloaded_error" if "throttl" in kind.lower() else "api_error"
            body = {"type": "error", "error": {"type": error_type, "message": f"{kind}: {message}"}}
            return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
        try:
            event = orjson.loads(payload) if payload else {}
            if self._mode == "invoke":  # each chunk carries one Anthropic event, base64-encoded
                data = base64.b64decode(event.get("bytes", ""))
                name = orjson.loads(data).get("type", "message")
                return b"event: " + str(name).encode() + b"\ndata: " + data + b"\n\n"
        except (orjson.JSONDecodeError, ValueError, AttributeError):
            raise UpstreamUnavailable("the upstream sent an event that is not valid JSON") from None
        return converter.event(str(headers.get(":event-type", "")), event)

    def close(self) -> None:
        self._resp.close()


class Bedrock(Provider):
    name = "bedrock"
    dialect = "anthropic"
    supports_embeddings = False
    supports_stream_usage = False
    config_params = frozenset(
        {
            "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name",
            "aws_session_name", "aws_role_name", "aws_profile_name", "aws_web_identity_token",
            "aws_bedrock_runtime_endpoint", "cache_control_injection_points",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.chat_fields = MESSAGES_FIELDS
        self._credentials: dict[str, _Credentials] = {}

    def adapt(self, body: dict[str, Any], deployment: Deployment) -> dict[str, Any] | None:
        fitted = fit_thinking(body, deployment.upstream_model)
        marked = inject_cache_points(fitted or body, deployment.options.get("cache_control_injection_points"))
        return marked or fitted

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        problems = []
        options = deployment.options
        if not options.get("aws_region_name") and not options.get("aws_bedrock_runtime_endpoint"):
            problems.append(
                ("aws_region_name", "the bedrock provider needs aws_region_name (or aws_bedrock_runtime_endpoint)")
            )
        endpoint = options.get("aws_bedrock_runtime_endpoint")
        if endpoint and not str(endpoint).startswith(("http://", "https://")):
            problems.append(("aws_bedrock_runtime_endpoint", "must be an http:// or https:// URL"))
        if bool(options.get("aws_access_key_id")) != bool(options.get("aws_secret_access_key")):
            problems.append(("aws_secret_access_key", "aws_access_key_id and aws_secret_access_key go together"))
        return problems

    @staticmethod
    def route(deployment: Deployment) -> tuple[str, str]:
        """(``converse`` or ``invoke``, the model id) for a deployment."""
        model = deployment.upstream_model
        for mode in ("converse", "invoke"):
            if model.startswith(mode + "/"):
                return mode, model[len(mode) + 1 :]
        profile, dot, rest = model.partition(".")  # a cross-region inference profile: us.anthropic.claude-...
        base = rest if dot and profile in _PROFILES else model
        return ("invoke" if base.startswith("anthropic.") else "converse"), model

    def url_for(self, deployment: Deployment, operation: str, model_id: str) -> tuple[str, str]:
        """The runtime URL of an operation on a model, and the region to sign for."""
        options = deployment.options
        region = str(options.get("aws_region_name") or "us-east-1")
        endpoint = options.get("aws_bedrock_runtime_endpoint") or f"https://bedrock-runtime.{region}.amazonaws.com"
        return f"{str(endpoint).rstrip('/')}/model/{quote(model_id, safe='')}/{operation}", region

    def _body(self, call: Call, mode: str) -> bytes:
        betas = bedrock_betas(call.headers.get("anthropic-beta"))
        if mode == "converse":
            return orjson.dumps(messages_to_converse(call.body, ",".join(betas)))
        body = {k: v for k, v in call.body.items() if k not in _NOT_IN_INVOKE}
        for name, flag in _BETA_FIELDS.items():
            if name in body and flag not in betas:
                del body[name]
        body["anthropic_version"] = INVOKE_VERSION
        system = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "system"]
        if system:  # Claude Code's mid-conversation system messages go to the top-level system prompt
            body["messages"] = [m for m in body["messages"] if m not in system]
            extra = [{"type": "text", "text": text_of(m.get("content"))} for m in system]
            current = body.get("system")
            base = [{"type": "text", "text": current}] if isinstance(current, str) else list(current or [])
            body["system"] = base + extra
        if betas:
            body["anthropic_beta"] = betas
        return orjson.dumps(body)

    async def sign(
        self, deployment: Deployment, url: str, region: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """SigV4-signed headers for a POST of ``body`` to ``url`` with this deployment's credentials
        (``headers`` are added before signing)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = self._credentials.get(deployment.id)
        if credentials is None:
            credentials = self._credentials[deployment.id] = _Credentials(deployment)
        frozen = await credentials.get()
        request = AWSRequest(
            method="POST", url=url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        SigV4Auth(frozen, "bedrock", region).add_auth(request)
        return {k: v for k, v in request.headers.items()}

    async def chat(self, call: Call) -> UpstreamResponse:
        mode, model_id = self.route(call.deployment)
        stream = call.stream
        operation = {
            ("converse", False): "converse",
            ("converse", True): "converse-stream",
            ("invoke", False): "invoke",
            ("invoke", True): "invoke-with-response-stream",
        }[(mode, stream)]
        url, region = self.url_for(call.deployment, operation, model_id)
        body = self._body(call, mode)
        headers = await self.sign(call.deployment, url, region, body)
        headers["Accept"] = "application/vnd.amazon.eventstream" if stream else "application/json"
        resp = await call.http.send(UpstreamRequest(url, headers, body), stream=stream, timeouts=call.timeouts)
        return _Translated(resp, mode, model_id)

    async def count_tokens(self, call: Call) -> int | None:
        """Bedrock's CountTokens, over the same body the chat call would send."""
        mode, model_id = self.route(call.deployment)
        body = self._body(call, mode)
        if mode == "converse":
            converse = orjson.loads(body)
            fields = ("messages", "system", "toolConfig", "additionalModelRequestFields")
            payload = {"input": {"converse": {k: converse[k] for k in fields if k in converse}}}
        else:
            payload = {"input": {"invokeModel": {"body": base64.b64encode(body).decode()}}}
        data = orjson.dumps(payload)
        url, region = self.url_for(call.deployment, "count-tokens", model_id)
        headers = await self.sign(call.deployment, url, region, data)
        resp = await call.http.send(UpstreamRequest(url, headers, data), stream=False, timeouts=call.timeouts)
        answer = await resp.read()
        if resp.status >= 400:
            raise upstream_error(resp.status, answer, call.deployment.secrets())
        try:
            tokens = orjson.loads(answer).get("inputTokens")
        except (orjson.JSONDecodeError, AttributeError):
            tokens = None
        if not isinstance(tokens, int):
            raise UpstreamUnavailable("the upstream's token count is not a number")
        return tokens

    async def embeddings(self, call: Call) -> UpstreamResponse:
        raise BadRequest("Bedrock embeddings are not supported yet.", param="model")
