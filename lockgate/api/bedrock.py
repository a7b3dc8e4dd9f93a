"""``/bedrock/model/{modelId}/{operation}``: native Bedrock Runtime requests, re-signed by the gateway.

For clients that speak Bedrock themselves (an AWS SDK with ``endpoint_url=<gateway>/bedrock``, Claude Code
with ``ANTHROPIC_BEDROCK_BASE_URL``). The client authenticates to lockgate like any other client; an AWS
SDK does so with ``AWS_BEARER_TOKEN_BEDROCK=<lockgate key>``, which it sends as ``Authorization: Bearer``.
Its own SigV4 headers, if any, are never passed on: the request is signed again with the credentials of the
configured deployment serving that model id. Bodies and responses (event-stream frames included) pass
through untouched; usage is read on the way for the request log. Errors are in Bedrock's shape.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from lockgate.asgi import Request
from lockgate.dialects.anthropic import messages_usage_to_chat
from lockgate.dialects.converse import cache_creation
from lockgate.errors import GatewayError, NotFound, upstream_error
from lockgate.observe import RequestRecord
from lockgate.providers.bedrock import Bedrock
from lockgate.routing.router import Target
from lockgate.upstream import UpstreamRequest

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = ["PREFIX", "passthrough"]

PREFIX = "/bedrock/model/"
OPERATIONS = frozenset({"converse", "converse-stream", "invoke", "invoke-with-response-stream"})
_PASSED_HEADERS = ("accept", "x-amzn-bedrock-accept", "x-amzn-bedrock-content-type")  # Content-Type is ours


def _target(gw: Gateway, model_id: str) -> Target:
    """The Bedrock deployment serving a model id (or a model group of that name)."""
    try:
        group = gw.router.group(model_id)
    except GatewayError:
        group = ()
    for target in group:
        if isinstance(target.provider, Bedrock):
            return target
    for target in gw.router.targets():
        if isinstance(target.provider, Bedrock) and Bedrock.route(target.deployment)[1] == model_id:
            return target
    raise NotFound(f"No Bedrock deployment serves the model id '{model_id[:200]}' on this gateway.")


class _UsageTap:
    """Reads usage from Bedrock event-stream frames without changing them."""

    def __init__(self, operation: str) -> None:
        from botocore.eventstream import EventStreamBuffer

        self._frames = EventStreamBuffer()
        self._operation = operation
        self._anthropic: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        self._frames.add_data(chunk)
        try:
            for message in self._frames:
                self._read(message.headers.get(":event-type"), message.payload)
        except Exception:  # a frame the gateway cannot read still reaches the client unchanged
            return

    def _read(self, event_type: Any, payload: bytes) -> None:
        data = orjson.loads(payload) if payload else {}
        if event_type == "metadata" and isinstance(data.get("usage"), dict):
            self.usage = _converse_usage(data["usage"])
        elif event_type == "chunk" and isinstance(data.get("bytes"), str):
            event = orjson.loads(base64.b64decode(data["bytes"]))
            usage = event.get("usage") or (event.get("message") or {}).get("usage")
            if isinstance(usage, dict):
                merged = {**(self._anthropic or {}), **{k: v for k, v in usage.items() if v is not None}}
                self._anthropic = merged
                self.usage = messages_usage_to_chat(merged)


def _converse_usage(usage: dict[str, Any]) -> dict[str, Any]:
    return messages_usage_to_chat(
        {
            "input_tokens": usage.get("inputTokens"),
            "output_tokens": usage.get("outputTokens"),
            "cache_read_input_tokens": usage.get("cacheReadInputTokens"),
            "cache_creation_input_tokens": usage.get("cacheWriteInputTokens"),
            "cache_creation": cache_creation(usage),
        }
    )


def _usage_of(operation: str, body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    return _converse_usage(usage) if operation == "converse" else messages_usage_to_chat(usage)


async def passthrough(gw: Gateway, req: Request) -> None:
    rest = req.path[len(PREFIX) :]
    model_id, _, operation = rest.rpartition("/")
    model_id = unquote(model_id)
    if not model_id or operation not in OPERATIONS:
        raise NotFound(f"Unknown Bedrock operation '{operation[:60]}'.")
    if req.principal is not None:
        model_id = req.principal.resolve_alias(model_id)
    target = _target(gw, model_id)
    if req.principal is not None:  # access is decided on the model group the id lands on
        req.principal.check_model(target.deployment.model_name, gw.access_groups)
    provider = target.provider
    assert isinstance(provider, Bedrock)
    deployment = target.deployment
    body = await req.body(gw.body_limit)
    url, region = provider.url_for(deployment, operation, Bedrock.route(deployment)[1])
    passed = {name: req.headers[name] for name in _PASSED_HEADERS if name in req.headers}
    headers = await provider.sign(deployment, url, region, body, passed)
    stream = operation.endswith("stream")
    record = RequestRecord(req.request_id, req.path[:200], 200, model_group=deployment.model_name, stream=stream,
                           deployment_id=deployment.id, provider="bedrock", attempts=1)  # fmt: skip
    resp = await gw.http.send(UpstreamRequest(url, headers, body), stream=stream, timeouts=target.timeouts)
    if resp.status >= 400:
        error = upstream_error(resp.status, await resp.read(), deployment.secrets())
        record.status, record.error_type = error.status, type(error).__name__
        gw.emit(record, req)
        raise error
    content_type = resp.headers.get("content-type", "application/json").encode("latin-1")
    if not stream:
        payload = await resp.read()
        record.usage = _usage_of(operation, payload)
        await req.respond(200, payload, content_type)
        gw.emit(record, req)
        return
    tap = _UsageTap(operation)
    out_headers = [(b"content-type", content_type), *req.response_headers]
    await req.send({"type": "http.response.start", "status": 200, "headers": out_headers})
    record.first_token_ms = (time.perf_counter() - req.started) * 1000
    try:
        async for chunk in resp.chunks():
            tap.feed(chunk)
            await req.send({"type": "http.response.body", "body": chunk, "more_body": True})
    except GatewayError as error:
        record.error_type = type(error).__name__
    record.usage = tap.usage
    await req.send({"type": "http.response.body", "body": b"", "more_body": False})
    gw.emit(record, req)
