"""The OpenAI dialect: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``, ``/model/info``.

A chat completion goes through these steps, each a function below::

    read_json → take_controls → plan (router) → for each target: prepare → provider call
      → (error before the first byte: next target) → relay (whole body, or SSE with usage tap) → record

The body is parsed once, for what the gateway needs (model, stream flag, field allowlist); it is
re-serialised only when something in it changes, and forwarded byte for byte otherwise.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from lockgate.asgi import Request
from lockgate.errors import (
    BadRequest,
    ForbiddenField,
    GatewayError,
    InvalidJSON,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_error,
)
from lockgate.observe import RequestRecord
from lockgate.providers.base import (
    EMBEDDING_FIELDS,
    FORBIDDEN_FIELDS,
    FORBIDDEN_PREFIXES,
    GATEWAY_FIELDS,
    Call,
)
from lockgate.routing.router import Target
from lockgate.streaming import UsageTap, error_event
from lockgate.upstream import UpstreamResponse

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = ["chat_completions", "embeddings", "list_models", "model_info"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
RETRYABLE_STATUS = frozenset({401, 403, 404, 408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(slots=True)
class Controls:
    """LiteLLM's request-level controls, taken out of the body before it goes upstream."""

    drop_params: bool | None = None
    num_retries: int | None = None
    session_id: str | None = None
    changed: bool = False


def read_json(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidJSON("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"The request body is not valid JSON: {str(exc).split(':')[0]}.") from None
    if not isinstance(body, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    return body


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise BadRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string.", param="model")
    return model


def take_controls(body: dict[str, Any]) -> Controls:
    """Refuse routing/credential fields; remove the gateway's own fields and keep their values."""
    controls = Controls()
    for key in list(body):
        if key in FORBIDDEN_FIELDS or key.startswith(FORBIDDEN_PREFIXES):
            raise ForbiddenField(
                f"The field '{key}' is not accepted: upstream endpoints and credentials are set by the "
                "gateway's configuration, never by a request.",
                param=key,
            )
        if key in GATEWAY_FIELDS:
            value = body.pop(key)
            controls.changed = True
            if key == "drop_params":
                controls.drop_params = value is True
            elif key == "num_retries" and isinstance(value, int) and not isinstance(value, bool):
                controls.num_retries = max(0, min(value, 10))
            elif key == "litellm_session_id" and isinstance(value, str):
                controls.session_id = value[:200]
    return controls


def prepare(
    body: dict[str, Any],
    raw: bytes,
    target: Target,
    controls: Controls,
    *,
    allowed: frozenset[str] | None,
    inject_usage: bool,
) -> tuple[dict[str, Any], bytes | None]:
    """The body for one target: upstream model, defaults, unsupported fields dropped or refused.

    Returns the body and, when nothing had to change, the client's bytes to send as they are."""
    deployment = target.deployment
    out = body
    changed = controls.changed
    drop = controls.drop_params if controls.drop_params is not None else target.drop_params
    for key in body:
        ok = key in allowed if allowed is not None else target.provider.accepts_chat_field(deployment, key)
        if ok:
            continue
        if not drop:
            raise BadRequest(
                f"Unsupported parameter '{key}' for model '{body.get('model')}' ({target.provider.name}). "
                "Remove it, or set drop_params: true to drop unsupported parameters.",
                param=key,
                code="unsupported_parameter",
            )
        if out is body:
            out = dict(body)
        del out[key]
        changed = True
    if body.get("model") != deployment.upstream_model:
        out = dict(out) if out is body else out
        out["model"] = deployment.upstream_model
        changed = True
    for key, value in deployment.params.items():
        if key not in out:
            out = dict(out) if out is body else out
            out[key] = value
            changed = True
    if inject_usage:
        out = dict(out) if out is body else out
        options = out.get("stream_options")
        out["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        changed = True
    return out, (None if changed else raw)


def _retryable(error: GatewayError) -> bool:
    if isinstance(error, UpstreamUnavailable | UpstreamTimeout):
        return True
    return isinstance(error, UpstreamError) and error.status in RETRYABLE_STATUS


def _route_headers(target: Target, attempts: int) -> list[tuple[bytes, bytes]]:
    d = target.deployment
    return [
        (b"x-lockgate-model-group", d.model_name.encode("latin-1", "replace")),
        (b"x-lockgate-deployment", d.id.encode()),
        (b"x-lockgate-attempts", str(attempts).encode()),
        (b"x-litellm-model-id", d.id.encode()),
    ]


async def _first_chunk(resp: UpstreamResponse, target: Target) -> tuple[bytes, Any]:
    """Wait for the first body bytes (the gate before anything reaches the client); the upstream client
    bounds the wait by the deployment's first-byte timeout."""
    chunks = resp.chunks()
    first = await anext(chunks, b"")
    if first.startswith(b'data: {"error"'):  # an in-band error before any content: a real failure
        resp.close()
        payload = first[6:].split(b"\n\n", 1)[0]
        raise upstream_error(502, payload, target.deployment.secrets())
    return first, chunks


async def _attempt(
    gw: Gateway, target: Target, body: dict[str, Any], raw: bytes | None, stream: bool, kind: str
) -> UpstreamResponse:
    call = Call(target.deployment, body, raw, stream, gw.http, target.timeouts)
    if kind == "embeddings":
        if not target.provider.supports_embeddings:
            raise BadRequest(f"The {target.provider.name} provider does not serve embeddings.", param="model")
        resp = await target.provider.embeddings(call)
    else:
        resp = await target.provider.chat(call)
    if resp.status >= 400:
        raise upstream_error(resp.status, await resp.read(), target.deployment.secrets())
    return resp


async def chat_completions(gw: Gateway, req: Request) -> None:
    raw = await req.body(gw.body_limit)
    body = read_json(raw)
    model = require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", param="messages")
    controls = take_controls(body)
    stream = body.get("stream") is True
    options = body.get("stream_options")
    client_wants_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    await _run(gw, req, body, raw, model, controls, stream=stream, wants_usage=client_wants_usage, kind="chat")


async def embeddings(gw: Gateway, req: Request) -> None:
    raw = await req.body(gw.body_limit)
    body = read_json(raw)
    model = require_model(body)
    if "input" not in body:
        raise BadRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    controls = take_controls(body)
    await _run(gw, req, body, raw, model, controls, stream=False, wants_usage=False, kind="embeddings")


async def _run(
    gw: Gateway,
    req: Request,
    body: dict[str, Any],
    raw: bytes,
    model: str,
    controls: Controls,
    *,
    stream: bool,
    wants_usage: bool,
    kind: str,
) -> None:
    record = RequestRecord(req.request_id, req.path, 200, model_group=model, stream=stream)
    plan = list(gw.router.plan(model, controls.num_retries))
    allowed = EMBEDDING_FIELDS if kind == "embeddings" else None
    for attempt, target in enumerate(plan, start=1):
        inject = stream and not wants_usage and target.provider.supports_stream_usage
        call_body, call_raw = prepare(body, raw, target, controls, allowed=allowed, inject_usage=inject)
        record.attempts, record.deployment_id, record.provider = (
            attempt,
            target.deployment.id,
            target.provider.name,
        )
        try:
            resp = await _attempt(gw, target, call_body, call_raw, stream, kind)
            if stream:
                first, chunks = await _first_chunk(resp, target)
        except GatewayError as error:
            if attempt < len(plan) and _retryable(error):
                continue
            record.status, record.error_type = error.status, type(error).__name__
            gw.emit(record, req)
            raise
        headers = _route_headers(target, attempt)
        if stream:
            await _relay_stream(gw, req, resp, first, chunks, headers, record, strip_usage=inject)
        else:
            await _relay_body(gw, req, resp, headers, record)
        return


async def _relay_body(
    gw: Gateway,
    req: Request,
    resp: UpstreamResponse,
    headers: list[tuple[bytes, bytes]],
    record: RequestRecord,
) -> None:
    payload = await resp.read()
    try:
        usage = orjson.loads(payload).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        raise UpstreamUnavailable("the upstream sent a response that is not valid JSON") from None
    record.usage = usage if isinstance(usage, dict) else None
    await req.respond(200, payload, headers=headers)
    gw.emit(record, req)


async def _relay_stream(
    gw: Gateway,
    req: Request,
    resp: UpstreamResponse,
    first: bytes,
    chunks: Any,
    headers: list[tuple[bytes, bytes]],
    record: RequestRecord,
    *,
    strip_usage: bool,
) -> None:
    send = req.send
    tap = UsageTap(strip_usage_chunk=strip_usage)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": SSE_HEADERS + req.response_headers + headers,
        }
    )
    record.first_token_ms = (time.perf_counter() - req.started) * 1000
    disconnected = False

    async def watch() -> None:  # the client hanging up cancels the upstream call
        nonlocal disconnected
        while (await req.receive())["type"] != "http.disconnect":
            pass
        disconnected = True
        resp.close()

    watcher = asyncio.create_task(watch())
    try:
        out = tap.feed(first)
        if out:
            await send({"type": "http.response.body", "body": out, "more_body": True})
        async for chunk in chunks:
            out = tap.feed(chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        tail = tap.flush()
    except GatewayError as error:
        tail = b"" if disconnected else error_event(error.openai_body())
        record.error_type = None if disconnected else type(error).__name__
    finally:
        watcher.cancel()
    record.usage, record.client_disconnected = tap.usage, disconnected
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    gw.emit(record, req)


async def list_models(gw: Gateway, req: Request) -> None:
    created = gw.started_at
    wildcards = req.scope.get("query_string", b"").find(b"return_wildcard_routes=true") >= 0
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "lockgate"}
        for name in gw.router.names()
        if wildcards or "*" not in name
    ]
    await req.respond(200, orjson.dumps({"object": "list", "data": data}))


_INFO_FIELDS = (
    "max_tokens", "max_input_tokens", "max_output_tokens", "input_cost_per_token", "output_cost_per_token",
    "cache_read_input_token_cost", "cache_creation_input_token_cost", "output_cost_per_reasoning_token",
    "supports_vision", "supports_function_calling", "supports_tool_choice", "supports_prompt_caching",
    "supports_reasoning", "supports_response_schema", "supports_pdf_input",
)  # fmt: skip


async def model_info(gw: Gateway, req: Request) -> None:
    """LiteLLM's ``/model/info``: what Cline reads to show limits, capabilities and prices."""
    data = []
    for target in gw.router.targets():
        d = target.deployment
        info: dict[str, Any] = {name: d.model_info.get(name) for name in _INFO_FIELDS}
        info.update(
            id=d.id,
            db_model=False,
            mode=d.model_info.get("mode", "chat"),
            key=d.upstream_model,
            litellm_provider=d.provider,
            access_groups=d.model_info.get("access_groups", []),
        )
        data.append({"model_name": d.model_name, "litellm_params": d.public_params(), "model_info": info})
    await req.respond(200, orjson.dumps({"data": data}))
