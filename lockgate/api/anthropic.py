"""The Anthropic dialect: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` (Claude Code's API).

Errors on these routes are in Anthropic's shape. ``anthropic-version`` and ``anthropic-beta`` are
forwarded to Anthropic-native upstreams; ``X-Claude-Code-Session-Id`` is kept as the session id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from lockgate.asgi import Request
from lockgate.dialects.anthropic import messages_to_chat
from lockgate.errors import BadRequest, GatewayError
from lockgate.pipeline import Exchange, read_json, require_model, run, take_controls
from lockgate.providers.base import Call

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = ["count_tokens", "messages"]

FORWARDED = ("anthropic-version", "anthropic-beta")


def _forward(req: Request) -> dict[str, str]:
    return {name: req.headers[name] for name in FORWARDED if name in req.headers}


async def messages(gw: Gateway, req: Request) -> None:
    raw = await req.body(gw.body_limit)
    body = read_json(raw)
    model = require_model(body)
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise BadRequest("messages: field required (a non-empty list)", param="messages")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise BadRequest("max_tokens: field required (a non-negative integer)", param="max_tokens")
    controls = take_controls(body, "anthropic")
    if session := req.headers.get("x-claude-code-session-id"):
        controls.session_id = controls.session_id or session[:200]
    exchange = Exchange("anthropic", "chat", body.get("stream") is True, False, _forward(req))
    await run(gw, req, body, raw, model, controls, exchange)


async def count_tokens(gw: Gateway, req: Request) -> None:
    """The provider's own counter where it has one; otherwise an estimate, marked as such."""
    body = read_json(await req.body(gw.body_limit))
    model = require_model(body)
    take_controls(body, "anthropic")
    if req.principal is not None:  # counting calls the provider too: the same access check as a request
        model = req.principal.resolve_alias(model)
        req.principal.check_model(model, gw.access_groups)
    target = gw.router.group(model)[0]
    payload = body if target.provider.dialect == "anthropic" else messages_to_chat({**body, "max_tokens": 1})
    payload = {**payload, "model": target.deployment.upstream_model}
    call = Call(target.deployment, payload, None, False, gw.http, target.timeouts, _forward(req), gw.thinking)
    counted = await target.provider.count_tokens(call)
    if counted is not None:
        await req.respond(200, orjson.dumps({"input_tokens": counted}))
        return
    await req.respond(200, orjson.dumps({"input_tokens": _estimate(body)}), headers=[(b"x-lockgate-estimate", b"true")])


def _estimate(body: dict[str, Any]) -> int:
    """About four characters a token over the text the model would read (an estimate, not a count)."""
    try:
        chat = messages_to_chat({**body, "max_tokens": 1})
    except GatewayError:
        chat = {"messages": []}
    size = len(orjson.dumps(chat.get("messages", []))) + len(orjson.dumps(body.get("tools") or []))
    return max(1, size // 4)
