"""Anthropic's Messages API: ``model: anthropic/<model>``, key in ``x-api-key``.

The upstream speaks the ``anthropic`` dialect: Claude Code's requests pass through untouched (with its
``anthropic-version`` and ``anthropic-beta`` headers); OpenAI-dialect clients are translated by the
pipeline (:mod:`lockgate.dialects.anthropic`).
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.deployment import Deployment
from lockgate.dialects.anthropic import MESSAGES_FIELDS, fit_thinking
from lockgate.dialects.cache_points import inject_cache_points, valid_points
from lockgate.errors import BadRequest, UpstreamUnavailable, upstream_error
from lockgate.providers.base import Call, Provider
from lockgate.upstream import UpstreamRequest, UpstreamResponse

__all__ = ["Anthropic"]

API_VERSION = "2023-06-01"
# What Anthropic's token counter takes: the Messages body less generation settings.
_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
                           "cache_control", "mcp_servers", "context_management"})  # fmt: skip


def _int_field(data: bytes, name: str) -> int:
    try:
        value = orjson.loads(data).get(name)
    except (orjson.JSONDecodeError, AttributeError):
        value = None
    if not isinstance(value, int):
        raise UpstreamUnavailable("the upstream's token count is not a number")
    return value


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
        if points is not None and not valid_points(points):
            problems.append(
                (
                    "cache_control_injection_points",
                    "must be a list of {location: message, role: system|user|assistant} "
                    "or {location: message, index: N}",
                )
            )
        return problems

    def adapt(self, body: dict[str, Any], deployment: Deployment) -> dict[str, Any] | None:
        fitted = fit_thinking(body, deployment.upstream_model)
        marked = inject_cache_points(fitted or body, deployment.options.get("cache_control_injection_points"))
        return marked or fitted

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

    async def count_tokens(self, call: Call) -> int | None:
        body = orjson.dumps({k: v for k, v in call.body.items() if k in _COUNT_FIELDS})
        request = UpstreamRequest(self._url(call.deployment, "messages/count_tokens"), self._headers(call), body)
        resp = await call.http.send(request, stream=False, timeouts=call.timeouts)
        data = await resp.read()
        if resp.status >= 400:
            raise upstream_error(resp.status, data, call.deployment.secrets())
        return _int_field(data, "input_tokens")

    async def embeddings(self, call: Call) -> UpstreamResponse:
        raise BadRequest("The anthropic provider does not serve embeddings.", param="model")
