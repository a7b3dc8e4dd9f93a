"""Anthropic's Messages API: ``model: anthropic/<model>``, key in ``x-api-key``.

The upstream speaks the ``anthropic`` dialect: Claude Code's requests pass through untouched (with its
``anthropic-version`` and ``anthropic-beta`` headers); OpenAI-dialect clients are translated by the
pipeline (:mod:`lockgate.dialects.anthropic`).
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.deployment import Deployment
from lockgate.dialects.anthropic import MESSAGES_FIELDS
from lockgate.errors import BadRequest
from lockgate.providers.base import Call, Provider
from lockgate.upstream import UpstreamRequest, UpstreamResponse

__all__ = ["Anthropic"]

API_VERSION = "2023-06-01"


MAX_CACHE_BREAKPOINTS = 4


class Anthropic(Provider):
    name = "anthropic"
    dialect = "anthropic"
    default_api_base = "https://api.anthropic.com"
    config_params = frozenset({"cache_control_injection_points"})
    supports_embeddings = False
    supports_stream_usage = False  # usage is always in message_start / message_delta

    def __init__(self) -> None:
        super().__init__()
        self.chat_fields = MESSAGES_FIELDS

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        problems = super().check(deployment)
        if not deployment.api_key:
            problems.append(("api_key", "the anthropic provider needs api_key"))
        points = deployment.options.get("cache_control_injection_points")
        if points is not None and not _valid_points(points):
            problems.append(
                (
                    "cache_control_injection_points",
                    "must be a list of {location: message, role: system|user|assistant} "
                    "or {location: message, index: N}",
                )
            )
        return problems

    def adapt(self, body: dict[str, Any], deployment: Deployment) -> dict[str, Any] | None:
        """LiteLLM's ``cache_control_injection_points``: cache markers added server-side, for clients that
        send none (the Cline CLI). Never past Anthropic's limit of four breakpoints."""
        points = deployment.options.get("cache_control_injection_points")
        if not points:
            return None
        out = dict(body)
        system = out.get("system")
        if isinstance(system, str) and system:
            out["system"] = [{"type": "text", "text": system}]
        messages = [dict(m) if isinstance(m, dict) else m for m in out.get("messages") or []]
        out["messages"] = messages
        budget = MAX_CACHE_BREAKPOINTS - _count_markers(out)
        for point in points:
            if budget <= 0:
                break
            role, index = point.get("role"), point.get("index")
            if role == "system" and out.get("system"):
                blocks = [dict(b) for b in out["system"]]
                out["system"] = blocks
                budget -= _mark(blocks)
            elif isinstance(index, int) and -len(messages) <= index < len(messages):
                budget -= _mark_message(messages, index)
            elif role in ("user", "assistant"):
                for i in range(len(messages) - 1, -1, -1):
                    if messages[i].get("role") == role:
                        budget -= _mark_message(messages, i)
                        break
        return out

    def _url(self, deployment: Deployment, path: str) -> str:
        base = (deployment.api_base or self.default_api_base or "").rstrip("/")
        base = base.removesuffix("/v1")
        return f"{base}/v1/{path}"

    def _headers(self, call: Call) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "anthropic-version": call.headers.get("anthropic-version") or API_VERSION,
        }
        beta = call.headers.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        if call.deployment.api_key:
            headers["x-api-key"] = call.deployment.api_key.reveal()
        return headers

    async def chat(self, call: Call) -> UpstreamResponse:
        body = call.raw if call.raw is not None else orjson.dumps(call.body)
        request = UpstreamRequest(self._url(call.deployment, "messages"), self._headers(call), body)
        return await call.http.send(request, stream=call.stream, timeouts=call.timeouts)

    async def count_tokens(self, call: Call) -> UpstreamResponse:
        body = orjson.dumps(call.body)
        request = UpstreamRequest(self._url(call.deployment, "messages/count_tokens"), self._headers(call), body)
        return await call.http.send(request, stream=False, timeouts=call.timeouts)

    async def embeddings(self, call: Call) -> UpstreamResponse:
        raise BadRequest("The anthropic provider does not serve embeddings.", param="model")


def _valid_points(points: Any) -> bool:
    return isinstance(points, list) and all(
        isinstance(p, dict)
        and p.get("location") == "message"
        and (p.get("role") in ("system", "user", "assistant") or isinstance(p.get("index"), int))
        for p in points
    )


def _count_markers(body: dict[str, Any]) -> int:
    count = 0
    for block in body.get("system") or []:
        count += isinstance(block, dict) and "cache_control" in block
    for tool in body.get("tools") or []:
        count += isinstance(tool, dict) and "cache_control" in tool
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            count += isinstance(block, dict) and "cache_control" in block
    return count


def _mark(blocks: list[dict[str, Any]]) -> int:
    """Put an ephemeral marker on the last block; 1 if a new marker was added."""
    if not blocks or "cache_control" in blocks[-1]:
        return 0
    blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
    return 1


def _mark_message(messages: list[Any], index: int) -> int:
    message = messages[index]
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return 0
    blocks = list(content)
    added = _mark(blocks)
    messages[index] = {**message, "content": blocks}
    return added
