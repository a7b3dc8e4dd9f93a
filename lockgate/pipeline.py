"""The request path shared by every inference endpoint, one named step each::

    read_json → require_model → take_controls → Router.plan → for each target:
        prepare (translate to the upstream's dialect if it differs, upstream model, defaults,
                 unsupported fields refused or dropped, include_usage for streams)
        → provider call → error before the first byte: next target, if retryable
        → relay: whole body, or SSE through a chain of stages (usage taps, dialect converters)
        → Gateway.emit(RequestRecord)

Same-dialect traffic is forwarded byte for byte when the gateway had nothing to change; across dialects
the translation functions of :mod:`lockgate.dialects` are applied to the body, the response and each
stream event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from lockgate import pricing
from lockgate.asgi import Request
from lockgate.dialects import Dialect
from lockgate.dialects import anthropic as ant
from lockgate.dialects.anthropic_stream import ChatToMessagesStream, MessagesToChatStream, MessagesUsageTap
from lockgate.errors import (
    BadRequest,
    ForbiddenField,
    GatewayError,
    InvalidJSON,
    RateLimited,
    UpstreamError,
    UpstreamUnavailable,
    upstream_error,
)
from lockgate.governance import prompt_tokens
from lockgate.observe import AttemptRecord, Modality, RequestRecord
from lockgate.prompts import PromptCapture
from lockgate.providers.base import EMBEDDING_FIELDS, FORBIDDEN_FIELDS, FORBIDDEN_PREFIXES, GATEWAY_FIELDS, Call
from lockgate.routing.failures import classify, retry_after_of
from lockgate.routing.health import FAILURE_KINDS
from lockgate.routing.plan import Failure
from lockgate.routing.router import Target, price_hint
from lockgate.streaming import UsageTap, error_event
from lockgate.upstream import UpstreamResponse

if TYPE_CHECKING:
    from lockgate.app import Gateway
    from lockgate.governance import Admitted
    from lockgate.routing.plan import Plan
    from lockgate.storage.base import EndUserRecord

__all__ = ["Controls", "Exchange", "read_json", "require_model", "run", "take_controls"]

log = logging.getLogger("lockgate")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


@dataclass(slots=True)
class Controls:
    """LiteLLM's request-level controls, taken out of the body before it goes upstream."""

    drop_params: bool | None = None
    num_retries: int | None = None
    session_id: str | None = None
    changed: bool = False


@dataclass(slots=True)
class Exchange:
    """What an endpoint asks of the pipeline."""

    dialect: Dialect
    kind: str  # "chat" or "embeddings"
    stream: bool = False
    wants_usage: bool = False
    forward: dict[str, str] = field(default_factory=dict)


class Stage(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


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


_ANTHROPIC_GATEWAY_FIELDS = GATEWAY_FIELDS - {"metadata"}  # Anthropic's own metadata.user_id is forwarded


def take_controls(body: dict[str, Any], dialect: Dialect = "openai") -> Controls:
    """Refuse routing/credential fields; remove the gateway's own fields and keep their values."""
    controls = Controls()
    gateway_fields = GATEWAY_FIELDS if dialect == "openai" else _ANTHROPIC_GATEWAY_FIELDS
    for key in list(body):
        if key in FORBIDDEN_FIELDS or key.startswith(FORBIDDEN_PREFIXES):
            raise ForbiddenField(
                f"The field '{key}' is not accepted: upstream endpoints and credentials are set by the "
                "gateway's configuration, never by a request.",
                param=key,
            )
        if key in gateway_fields:
            value = body.pop(key)
            controls.changed = True
            if key == "drop_params":
                controls.drop_params = value is True
            elif key == "num_retries" and isinstance(value, int) and not isinstance(value, bool):
                controls.num_retries = max(0, min(value, 10))
            elif key == "litellm_session_id" and isinstance(value, str):
                controls.session_id = value[:200]
    return controls


def _signed_texts(body: dict[str, Any]) -> list[str]:
    """What a request may need from the thinking memory: reasoning sent back without its signature, and the
    ids of tool calls (Gemini's signatures are kept by call id)."""
    texts: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        if isinstance(message.get("reasoning_content"), str) and not message.get("thinking_blocks"):
            texts.append(message["reasoning_content"])
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                texts.append("gemini-fc:" + str(call.get("id", "")))
    return texts


def _translate(
    gw: Gateway, body: dict[str, Any], inbound: Dialect, upstream: Dialect, notes: list[str]
) -> dict[str, Any]:
    if inbound == "openai" and upstream == "anthropic":
        return ant.chat_to_messages(body, gw.thinking, notes)
    if inbound == "anthropic" and upstream == "openai":
        return ant.messages_to_chat(body)
    raise BadRequest(f"No translation from the {inbound} dialect to {upstream}.")


def prepare(
    body: dict[str, Any],
    raw: bytes | None,
    target: Target,
    controls: Controls,
    *,
    allowed: frozenset[str] | None,
    inject_usage: bool,
    translated: bool = False,
    notes: list[str] | None = None,
    lenient: bool = False,
) -> tuple[dict[str, Any], bytes | None]:
    """The body for one target: upstream model, defaults, unsupported fields dropped or refused.

    Returns the body and, when nothing had to change, the client's bytes to send as they are. Fields a
    translation produced are dropped quietly when the upstream does not take them; ``lenient`` (a fallback, which
    the client did not choose): a field the target lacks is dropped rather than refused. Prompt-caching markers
    and reasoning history are taken off for an OpenAI-dialect upstream whose ``model_info`` does not claim
    ``supports_prompt_caching`` / ``supports_reasoning``. What was dropped is said in ``notes``."""
    deployment = target.deployment
    out = body
    changed = controls.changed or translated
    drop = translated or (controls.drop_params if controls.drop_params is not None else target.drop_params)
    for key in body:
        ok = key in allowed if allowed is not None else target.provider.accepts_chat_field(deployment, key)
        if ok:
            continue
        if not drop and lenient:
            if notes is not None:
                notes.append(f"dropped '{key}': not supported by {deployment.model_name}")
        elif not drop:
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
    if allowed is None and target.provider.dialect == "openai":
        stripped = _strip_features(out, raw, deployment.model_info, target.provider.passes_cache_control)
        if stripped is not None:
            out, dropped = stripped
            changed = True
            said = f"dropped {' and '.join(dropped)}: {deployment.model_name} does not support it"
            if notes is not None and said not in notes:
                notes.append(said)
    if allowed is None and (adapted := target.provider.adapt(out, deployment)) is not None:
        out, changed = adapted, True
    return out, (None if changed or raw is None else raw)


_FEATURES = (  # (model_info flag, what it is called in a notice, message keys, content-part keys, as bytes)
    ("supports_prompt_caching", "cache_control", ("cache_control",), ("cache_control",), (b'"cache_control"',)),
    ("supports_reasoning", "thinking history", ("thinking_blocks", "reasoning_content"), (),
     (b'"thinking_blocks"', b'"reasoning_content"')),
)  # fmt: skip


def _strip_features(
    body: dict[str, Any], raw: bytes | None, model_info: Mapping[str, Any], passes_cache_control: bool
) -> tuple[dict[str, Any], list[str]] | None:
    """``body`` without the features (LiteLLM's extension fields in messages and tools) the deployment does not
    claim to support, and their names; None when there was nothing to take off."""
    wanted = [
        f for f in _FEATURES
        if model_info.get(f[0]) is not True and not (passes_cache_control and f[1] == "cache_control")
    ]  # fmt: skip
    if not wanted or (raw is not None and not any(k in raw for f in wanted for k in f[4])):
        return None
    messages, tools = body.get("messages"), body.get("tools")
    dropped: list[str] = []
    new_messages: list[Any] = []
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            message = _without(message, wanted, dropped, part=False)
            content = message.get("content")
            if isinstance(content, list):
                parts = [_without(p, wanted, dropped, part=True) if isinstance(p, dict) else p for p in content]
                if any(a is not b for a, b in zip(parts, content, strict=True)):
                    message = {**message, "content": parts}
        new_messages.append(message)
    new_tools = [_without(t, wanted, dropped, part=True) if isinstance(t, dict) else t for t in tools] if isinstance(
        tools, list) else None  # fmt: skip
    if not dropped:
        return None
    out = {**body, "messages": new_messages} if isinstance(messages, list) else dict(body)
    if new_tools is not None:
        out["tools"] = new_tools
    return out, sorted(set(dropped))


def _without(item: dict[str, Any], wanted: list[Any], dropped: list[str], *, part: bool) -> dict[str, Any]:
    keys = [k for f in wanted for k in (f[3] if part else f[2]) if k in item]
    if not keys:
        return item
    for f in wanted:
        if any(k in item for k in (f[3] if part else f[2])):
            dropped.append(f[1])
    return {k: v for k, v in item.items() if k not in keys}


def _route_headers(target: Target, attempts: int) -> list[tuple[bytes, bytes]]:
    d = target.deployment
    return [
        (b"x-lockgate-model-group", d.model_name.encode("latin-1", "replace")),
        (b"x-lockgate-deployment", d.id.encode()),
        (b"x-lockgate-attempts", str(attempts).encode()),
        (b"x-litellm-model-id", d.id.encode()),
    ]


def _in_band_error(first: bytes, target: Target) -> GatewayError | None:
    """An error event before any content: a real failure, which can still be retried or reported."""
    if first.startswith(b'data: {"error"'):
        return upstream_error(502, first[6:].split(b"\n\n", 1)[0], target.deployment.secrets())
    if first.startswith(b"event: error"):
        payload = first.split(b"data:", 1)[-1].split(b"\n\n", 1)[0].strip()
        status = 529 if b"overloaded" in payload else 500
        return upstream_error(status, payload, target.deployment.secrets())
    return None


async def _first_chunk(resp: UpstreamResponse, target: Target) -> tuple[bytes, Any]:
    """The first body bytes: the gate before anything reaches the client (the upstream client bounds
    the wait by the deployment's first-byte timeout)."""
    chunks = resp.chunks()
    first = await anext(chunks, b"")
    error = _in_band_error(first, target)
    if error is not None:
        resp.close()
        raise error
    return first, chunks


async def _attempt(gw: Gateway, target: Target, call: Call, kind: str) -> UpstreamResponse:
    if kind == "embeddings":
        if not target.provider.supports_embeddings:
            raise BadRequest(f"The {target.provider.name} provider does not serve embeddings.", param="model")
        resp = await target.provider.embeddings(call)
    else:
        resp = await target.provider.chat(call)
    if resp.status >= 400:
        error = upstream_error(resp.status, await resp.read(), target.deployment.secrets())
        error.retry_after = retry_after_of(resp.headers)
        raise error
    return resp


async def run(
    gw: Gateway, req: Request, body: dict[str, Any], raw: bytes, model: str, controls: Controls, ex: Exchange
) -> None:
    """Try the plan's targets in order until one answers; relay its answer in the client's dialect."""
    requested = model
    if req.principal is not None:
        model = req.principal.resolve_alias(model)  # a key's (or its team's) own names for models
        req.principal.check_model(model, gw.access_groups)
    end_user = body.get("user") if ex.dialect == "openai" else None
    end_user_record = None
    if isinstance(end_user, str) and end_user:
        end_user_record = await gw.auth.check_end_user(end_user[:256])
    record = RequestRecord(
        req.request_id, req.path, 200, model_group=model, requested_model=requested, stream=ex.stream,
        session_id=controls.session_id, end_user=end_user[:256] if isinstance(end_user, str) and end_user else None,
    )  # fmt: skip
    if gw.stores_prompts(req.principal):  # off unless asked for (lockgate.prompts)
        req.capture = PromptCapture(body, ex.dialect, ex.kind)
    plan = gw.router.start(model, controls.num_retries, health=gw.health, budget=gw.retry_budget, stream=ex.stream,
                           prompt_tokens=len(raw) // 4)  # fmt: skip
    gw.retry_budget.request()
    record.modality, req.kinds = _modality(body), pricing.kinds_of(body)
    try:
        admitted = req.admitted = await _admit(gw, req, end_user_record, model, plan, len(raw), body)
    except GatewayError as refused:  # a limit or budget: seen by the request log and metrics, not the ledger
        record.status, record.error_type = refused.status, type(refused).__name__
        scope = getattr(refused, "scope", "") or ""
        record.denied = scope.partition(":")[0] or None
        gw.emit(record, req, ledger=False)
        raise
    if not ex.stream:  # (a stream watches for the client itself, and counts what it relayed)
        req.cancel_on_disconnect()
    try:
        await _attempts(gw, req, body, raw, model, controls, ex, record, plan)
    except asyncio.CancelledError:
        if not req.disconnected:
            raise
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        _client_left(gw, req, record, plan.current, body, len(raw))
    finally:
        if admitted is not None:
            await gw.governor.settle(admitted, record.usage, cost=record.cost, charged=req.charged)


def _client_left(gw: Gateway, req: Request, record: RequestRecord, target: Target, body: dict[str, Any],
                 size: int) -> None:  # fmt: skip
    """The client hung up before its answer: the upstream call was closed (corking.py). The prompt was sent and
    may be billed, so it is counted (estimated); what the model wrote before the close is unknown."""
    record.status, record.error_type, record.client_disconnected = 499, "ClientDisconnected", True
    if record.usage is None:
        prompt = prompt_tokens(body, size)
        record.usage = {"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": prompt, "estimated": True}
        _cost(gw, record, target, pricing.kinds_of(body))
    gw.emit(record, req)


async def _admit(
    gw: Gateway, req: Request, end_user: EndUserRecord | None, model: str, plan: Plan, size: int,
    body: dict[str, Any],
) -> Admitted | None:  # fmt: skip
    """Count the request against its limits (governance.py). A deployment at its own rpm/tpm is swapped for
    another deployment of its group; the client sees a 429 only when every one is full."""
    full: set[str] = set()
    while True:
        deployment = plan.current.deployment
        try:
            admitted = await gw.governor.admit(
                req.request_id, req.principal, end_user, model, deployment, size, body, plan.current.table,
                _end_user_id(body),
            )  # fmt: skip
        except RateLimited as error:
            if error.scope != f"deployment:{deployment.id}":
                raise
            full.add(deployment.id)
            others = [t for t in gw.router.eligible(plan.group, missing_ok=True) if t.deployment.id not in full]
            if not others:
                raise
            plan.replace(deployment.id, random.choice(others))  # noqa: S311 - load spreading, not security
            continue
        if admitted is not None:
            req.response_headers.extend(admitted.headers)
        return admitted


def _end_user_id(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    return user[:256] if isinstance(user, str) and user else None


@dataclass(slots=True)
class _Prepared:
    """One attempt, ready to send: its target, the call, and how its answer is to be relayed."""

    target: Target
    call: Call
    upstream: Dialect
    translated: bool
    inject: bool  # include_usage was added for the gateway's sake
    said: list[str]  # what the request lost on its way to this target (x-lockgate-notice)


@dataclass(slots=True)
class _Opened:
    """An attempt that answered: its response and, for a stream, the first bytes (read before the client sees
    anything) and the rest."""

    resp: UpstreamResponse
    first: bytes = b""
    chunks: Any = None


async def _attempts(
    gw: Gateway, req: Request, body: dict[str, Any], raw: bytes, model: str, controls: Controls, ex: Exchange,
    record: RequestRecord, plan: Plan,
) -> None:  # fmt: skip
    if gw.thinking.shared and ex.dialect == "openai" and ex.kind == "chat":
        await gw.thinking.prefetch(_signed_texts(body))  # signatures another instance may have returned
    translations: dict[str, dict[str, Any]] = {}
    notes: list[str] = []

    def prepared(target: Target) -> _Prepared:
        upstream: Dialect = target.provider.dialect if ex.kind == "chat" else "openai"
        translated = upstream != ex.dialect
        if translated and upstream not in translations:
            translations[upstream] = _translate(gw, body, ex.dialect, upstream, notes)
        source = translations[upstream] if translated else body
        inject = ex.stream and target.provider.supports_stream_usage and (translated or not ex.wants_usage)
        allowed = EMBEDDING_FIELDS if ex.kind == "embeddings" else None
        call_body, call_raw = prepare(
            source, None if translated else raw, target, controls, allowed=allowed, inject_usage=inject,
            translated=translated, notes=(said := list(notes)), lenient=plan.group != plan.origin,
        )  # fmt: skip
        call = Call(
            target.deployment, call_body, call_raw, ex.stream, gw.http, target.timeouts, ex.forward, gw.thinking
        )
        return _Prepared(target, call, upstream, translated, inject, said)

    target = plan.current
    hedge_after = gw.settings.resilience.hedge_after
    while True:
        if _certainly_too_long(target, body, len(raw)):  # straight to a larger model, if there is one
            step = plan.after(Failure("context_window"))
            if step is not None:
                target = step[0]
                continue
        attempt = prepared(target)
        record.attempts, record.deployment_id = plan.attempts, target.deployment.id
        record.provider, record.model_group = target.provider.name, target.deployment.model_name
        started = time.perf_counter()
        try:
            if hedge_after is not None and ex.kind == "chat":
                opened, attempt = await _hedged(gw, req, record, plan, attempt, prepared, hedge_after, ex)
                target = attempt.target
                record.attempts, record.deployment_id, record.provider = (
                    plan.attempts, target.deployment.id, target.provider.name)  # fmt: skip
            else:
                opened = await _open(gw, req, record, attempt, ex)
        except GatewayError as error:
            failure = classify(error)
            step = plan.after(failure)
            if step is None:
                record.status, record.error_type = error.status, type(error).__name__
                gw.emit(record, req)
                raise
            target, wait = step
            if wait > 0:
                await asyncio.sleep(wait)
            continue
        deployment_id = target.deployment.id
        first_byte = time.perf_counter() - started if ex.stream else None
        try:
            headers = _route_headers(target, plan.attempts)
            if attempt.said:  # what this answer's request lost on the way (translation, features it lacks)
                headers.append((b"x-lockgate-notice", "; ".join(attempt.said).encode("latin-1", "replace")))
            if ex.stream:
                stages = _stages(gw, ex, attempt.upstream, model, strip_usage=attempt.inject and not ex.wants_usage)
                if req.capture is not None:
                    stages.append(req.capture.stream_stage(ex.dialect))
                await _relay_stream(gw, req, opened.resp, opened.first, opened.chunks, headers, record, stages,
                                    ex.dialect, target)  # fmt: skip
            else:
                await _relay_body(gw, req, opened.resp, headers, record, ex.dialect if attempt.translated else None,
                                  model, target)  # fmt: skip
            _report(gw, target, record, time.perf_counter() - started, first_byte)
            return
        finally:
            used = (record.usage or {}).get("total_tokens")
            gw.health.end(deployment_id, used if isinstance(used, int) else 0)


async def _open(gw: Gateway, req: Request, record: RequestRecord, attempt: _Prepared, ex: Exchange) -> _Opened:
    """Send one attempt and wait for its answer (a stream's first bytes); its health is told of a failure, and
    of its start (the caller tells of its end once the answer is relayed); the record's attempt log gets it."""
    target = attempt.target
    deployment_id = target.deployment.id
    started = time.perf_counter()
    log_entry = AttemptRecord(deployment_id, target.provider.name, target.deployment.model_name,
                              (started - req.started) * 1000)  # fmt: skip
    record.attempt_log.append(log_entry)
    gw.health.begin(deployment_id)
    try:
        resp = await _attempt(gw, target, attempt.call, ex.kind)
        log_entry.status = resp.status
        if not ex.stream:
            return _Opened(resp)
        first, chunks = await _first_chunk(resp, target)
        log_entry.ttft_ms = (time.perf_counter() - started) * 1000
        return _Opened(resp, first, chunks)
    except GatewayError as error:
        failure = classify(error)
        gw.health.failed(deployment_id, failure.kind if failure.kind in FAILURE_KINDS else None, failure.retry_after)
        gw.health.end(deployment_id)
        log_entry.outcome, log_entry.error_kind = "failed", failure.kind
        log_entry.status = error.status if isinstance(error, UpstreamError) else 0
        log_entry.duration_ms = (time.perf_counter() - started) * 1000
        raise
    except asyncio.CancelledError:  # the client left, or the other of a hedged pair answered first
        gw.health.failed(deployment_id, None)
        gw.health.end(deployment_id)
        log_entry.outcome, log_entry.duration_ms = "cancelled", (time.perf_counter() - started) * 1000
        raise


async def _hedged(
    gw: Gateway, req: Request, record: RequestRecord, plan: Plan, attempt: _Prepared,
    prepared: Callable[[Target], _Prepared], delay: float, ex: Exchange,
) -> tuple[_Opened, _Prepared]:  # fmt: skip
    """``lockgate.hedge_after``: no answer from ``attempt`` within ``delay`` seconds, a second attempt goes to
    another deployment of the group; the first to answer wins and the other is cancelled (its connection closed).
    A failure of one leaves the other to answer; both failing raise the first's error."""
    first: asyncio.Future[_Opened] = asyncio.ensure_future(_open(gw, req, record, attempt, ex))
    done, _ = await asyncio.wait({first}, timeout=delay)
    other = None if done else plan.hedge()
    if other is None:
        return await first, attempt
    second_attempt = prepared(other)
    second: asyncio.Future[_Opened] = asyncio.ensure_future(_open(gw, req, record, second_attempt, ex))
    which = {first: attempt, second: second_attempt}
    pending: set[asyncio.Future[_Opened]] = {first, second}
    winner: asyncio.Future[_Opened] | None = None
    error: BaseException | None = None
    try:
        while pending and winner is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: f is not first):  # the first attempt wins a tie
                exc = future.exception()
                if exc is None and winner is None:
                    winner = future
                elif exc is None:  # answered in the same turn as the winner: not used
                    future.result().resp.close()
                    gw.health.end(which[future].target.deployment.id)
                elif error is None or future is first:
                    error = exc
    finally:
        for future in pending:
            future.cancel()
        for future in pending:
            with contextlib.suppress(BaseException):  # (one that failed or was cancelled has told its health)
                (await future).resp.close()  # answered as it was cancelled: not used
                gw.health.end(which[future].target.deployment.id)
    if winner is None:
        plan.current = attempt.target  # both failed: the plan goes on from the first
        assert error is not None
        raise error
    plan.current = which[winner].target
    return winner.result(), which[winner]


_PART_KINDS: dict[str, Modality] = {
    "image_url": "image", "image": "image", "input_image": "image", "document": "document", "file": "document",
    "input_file": "document", "input_audio": "audio", "audio": "audio",
}  # fmt: skip
_WEIGHT = {"text": 0, "audio": 1, "image": 2, "document": 3}


def _modality(body: dict[str, Any]) -> Modality:
    """The heaviest kind of input the request carries besides text (its latency and price differ)."""
    found: Modality = "text"
    messages = body.get("messages")
    if not isinstance(messages, list):
        return found
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                kind = _PART_KINDS.get(str(part.get("type"))) if isinstance(part, dict) else None
                if kind is not None and _WEIGHT[kind] > _WEIGHT[found]:
                    found = kind
    return found


def _certainly_too_long(target: Target, body: dict[str, Any], size: int) -> bool:
    """The prompt is longer than the deployment's ``max_input_tokens`` even at 8 characters a token (no tokenizer
    counts fewer): not worth sending when a context_window fallback can take it."""
    limit = target.prices.get("max_input_tokens")
    if not isinstance(limit, int) or limit <= 0 or size < limit * 4:  # cheap test first: too few bytes anyway
        return False
    return prompt_tokens(body, size) // 2 > limit


def _report(gw: Gateway, target: Target, record: RequestRecord, latency: float, first_byte: float | None) -> None:
    """How the deployment did, for its health: a stream that broke after its first byte is a failure."""
    if record.error_type is not None:
        gw.health.failed(target.deployment.id, "connection")
        return
    if record.client_disconnected:
        return  # says nothing about the deployment
    usage = record.usage or {}
    prompt, output = usage.get("prompt_tokens"), usage.get("completion_tokens")
    gw.health.succeeded(
        target.deployment.id, latency=latency, ttft=first_byte,
        prompt_tokens=prompt if isinstance(prompt, int) else 0, output_tokens=output if isinstance(output, int) else 0,
    )  # fmt: skip


def _stages(gw: Gateway, ex: Exchange, upstream: Dialect, model: str, *, strip_usage: bool) -> list[Stage]:
    if ex.dialect == upstream:
        return [UsageTap(strip_usage_chunk=strip_usage)] if upstream == "openai" else [MessagesUsageTap()]
    if upstream == "anthropic":  # Claude behind an OpenAI client
        return [MessagesToChatStream(model, gw.thinking), UsageTap(strip_usage_chunk=not ex.wants_usage)]
    return [UsageTap(strip_usage_chunk=False), ChatToMessagesStream(model)]  # an OpenAI model behind Claude Code


def _usage_of(stages: list[Stage]) -> dict[str, Any] | None:
    for stage in stages:
        if isinstance(stage, UsageTap):
            return stage.usage
    for stage in stages:
        if isinstance(stage, MessagesUsageTap) and stage.usage is not None:
            return ant.messages_usage_to_chat(stage.usage)
    return None


async def _relay_body(
    gw: Gateway,
    req: Request,
    resp: UpstreamResponse,
    headers: list[tuple[bytes, bytes]],
    record: RequestRecord,
    translate_to: Dialect | None,
    model: str,
    target: Target,
) -> None:
    payload = await resp.read()
    try:
        data = orjson.loads(payload)
        usage = data.get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        raise UpstreamUnavailable("the upstream sent a response that is not valid JSON") from None
    if req.capture is not None:
        req.capture.take_response(data)
    if translate_to == "openai":  # the client speaks OpenAI, the upstream Anthropic
        payload = orjson.dumps(ant.message_to_chat_response(data, model, gw.thinking))
    elif translate_to == "anthropic":  # the client speaks Anthropic, the upstream OpenAI
        payload = orjson.dumps(ant.chat_response_to_message(data, model))
    if isinstance(usage, dict):
        record.usage = ant.messages_usage_to_chat(usage) if "input_tokens" in usage else usage
    cost = _cost(gw, record, target, req.kinds)
    if cost is not None:
        value = f"{cost:.10g}".encode()
        headers = [*headers, (b"x-lockgate-response-cost", value), (b"x-litellm-response-cost", value)]
    await req.respond(200, payload, headers=headers)
    gw.emit(record, req)


def _cost(gw: Gateway, record: RequestRecord, target: Target, kinds: pricing.Kinds) -> float | None:
    """The request's cost at its deployment's prices (None: no prices, or no usage), kept on the record; an
    estimated usage (a stream cut short) at the prices of the ``kinds`` of tokens its request may be billed for. A
    deployment without prices is said once per process: its requests count $0 against every budget."""
    usage = record.usage
    if not usage:
        return None
    if usage.get("estimated"):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        cost = pricing.estimate(target.table, prompt if isinstance(prompt, int) else 0,
                                completion if isinstance(completion, int) else 0, kinds)  # fmt: skip
    else:
        cost = pricing.cost_of(target.table, usage)
    record.cost = cost
    if cost is None and not target.priced:
        deployment = target.deployment
        said = f"{deployment.id}/{deployment.upstream_model}"  # a wildcard deployment: once per model it served
        if deployment.id not in gw.unpriced and said not in gw.unpriced and len(gw.unpriced) < 10_000:
            gw.unpriced.add(said)
            log.warning("deployment %s (%s, model %s) has no prices: its requests count $0 against budgets and "
                        "spend; %s", deployment.id, deployment.model_name[:100], deployment.upstream_model[:100],
                        price_hint(deployment))  # fmt: skip
    return cost


def _pipe(stages: list[Stage], data: bytes) -> bytes:
    for stage in stages:
        data = stage.feed(data) if data else b""
    return data


def _drain(stages: list[Stage]) -> bytes:
    out = b""
    for stage in stages:
        out = (stage.feed(out) if out else b"") + stage.flush()
    return out


def _error_event(error: GatewayError, dialect: Dialect) -> bytes:
    if dialect == "anthropic":
        return b"event: error\ndata: " + error.anthropic_body() + b"\n\n"
    return error_event(error.openai_body())


async def _relay_stream(
    gw: Gateway,
    req: Request,
    resp: UpstreamResponse,
    first: bytes,
    chunks: Any,
    headers: list[tuple[bytes, bytes]],
    record: RequestRecord,
    stages: list[Stage],
    dialect: Dialect,
    target: Target,
) -> None:
    send = req.send
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + req.response_headers + headers})
    record.first_token_ms = (time.perf_counter() - req.started) * 1000
    disconnected = False

    async def watch() -> None:  # the client hanging up cancels the upstream call
        nonlocal disconnected
        while (await req.receive())["type"] != "http.disconnect":
            pass
        disconnected = True
        resp.close()

    watcher = asyncio.create_task(watch())
    events, complete = 0, False
    try:
        out = _pipe(stages, first)
        if out:
            events += out.count(b"\n\n")
            await send({"type": "http.response.body", "body": out, "more_body": True})
        async for chunk in chunks:
            out = _pipe(stages, chunk)
            if out:
                events += out.count(b"\n\n")
                await send({"type": "http.response.body", "body": out, "more_body": True})
        tail = _drain(stages)
        complete = not disconnected
    except GatewayError as error:
        tail = b"" if disconnected else _error_event(error, dialect)
        record.error_type = None if disconnected else type(error).__name__
    finally:
        watcher.cancel()
    record.usage, record.client_disconnected = _usage_of(stages), disconnected
    if not complete or record.usage is None:  # cut short, or no usage sent: count what was produced, an event a token
        usage = dict(record.usage or {})
        usage["completion_tokens"] = max(int(usage.get("completion_tokens") or 0), events)
        usage["estimated"] = True
        record.usage = usage
    cost = _cost(gw, record, target, req.kinds)
    if cost is not None and not disconnected:  # headers went out first: the cost ends the stream, as a comment
        tail += b": x-lockgate-response-cost " + f"{cost:.10g}".encode() + b"\n\n"
    await send({"type": "http.response.body", "body": tail, "more_body": False})
    gw.emit(record, req)
