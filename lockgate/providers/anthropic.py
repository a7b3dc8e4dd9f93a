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
from lockgate.errors import BadRequest
from lockgate.providers.base import Call, Provider
from lockgate.upstream import UpstreamRequest, UpstreamResponse

__all__ = ["Anthropic"]

API_VERSION = "2023-06-01"


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

    async def count_tokens(self, call: Call) -> UpstreamResponse:
        body = orjson.dumps(call.body)
        request = UpstreamRequest(self._url(call.deployment, "messages/count_tokens"), self._headers(call), body)
        return await call.http.send(request, stream=False, timeouts=call.timeouts)

    async def embeddings(self, call: Call) -> UpstreamResponse:
        raise BadRequest("The anthropic provider does not serve embeddings.", param="model")
