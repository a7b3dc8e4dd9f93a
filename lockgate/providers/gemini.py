"""Google Gemini (AI Studio): ``model: gemini/<model>``, key in the ``x-goog-api-key`` header.

The key never goes in a URL (the API also accepts ``?key=``, which ends up in logs). The provider speaks
the OpenAI dialect to the gateway and translates at its edge (:mod:`lockgate.dialects.gemini`):
``generateContent``, and ``streamGenerateContent?alt=sse`` whose chunks end without a sentinel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote

import orjson

from lockgate.deployment import Deployment
from lockgate.dialects.gemini import GeminiToChatStream, chat_to_gemini, gemini_to_chat_response
from lockgate.dialects.thinking import ThinkingMemory
from lockgate.errors import BadRequest, UpstreamUnavailable, upstream_error
from lockgate.providers.base import Call, Provider
from lockgate.upstream import UpstreamRequest, UpstreamResponse

__all__ = ["Gemini"]

# The OpenAI request fields the translation carries to Gemini; anything else is refused or dropped.
_FIELDS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "seed", "max_tokens",
        "max_completion_tokens", "stop", "response_format", "reasoning_effort", "tools", "tool_choice", "user",
        "parallel_tool_calls",
    }
)  # fmt: skip


class _Translated:
    """A Gemini response seen in the OpenAI dialect."""

    def __init__(self, resp: UpstreamResponse, model: str, memory: ThinkingMemory | None) -> None:
        self._resp = resp
        self._model = model
        self._memory = memory
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        body = await self._resp.read()
        if self.status >= 400:
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable("the upstream sent a response that is not valid JSON") from None
        return orjson.dumps(gemini_to_chat_response(data, self._model, self._memory))

    async def chunks(self) -> AsyncIterator[bytes]:
        converter = GeminiToChatStream(self._model, self._memory)
        async for chunk in self._resp.chunks():
            out = converter.feed(chunk)
            if out:
                yield out
        tail = converter.flush()
        if tail:
            yield tail

    def close(self) -> None:
        self._resp.close()


class Gemini(Provider):
    name = "gemini"
    default_api_base = "https://generativelanguage.googleapis.com"
    supports_embeddings = False

    def __init__(self) -> None:
        super().__init__()
        self.chat_fields = _FIELDS

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        problems = super().check(deployment)
        if not deployment.api_key:
            problems.append(("api_key", "the gemini provider needs api_key"))
        return problems

    def _url(self, deployment: Deployment, stream: bool) -> str:
        base = (deployment.api_base or self.default_api_base or "").rstrip("/").removesuffix("/v1beta")
        model = quote(_model_id(deployment), safe="")
        operation = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{base}/v1beta/models/{model}:{operation}"

    async def chat(self, call: Call) -> UpstreamResponse:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if call.deployment.api_key:
            headers["x-goog-api-key"] = call.deployment.api_key.reveal()
        body = orjson.dumps(chat_to_gemini(call.body, call.thinking))
        request = UpstreamRequest(self._url(call.deployment, call.stream), headers, body)
        resp = await call.http.send(request, stream=call.stream, timeouts=call.timeouts)
        return _Translated(resp, str(call.body.get("model") or call.deployment.upstream_model), call.thinking)

    async def count_tokens(self, call: Call) -> int | None:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if call.deployment.api_key:
            headers["x-goog-api-key"] = call.deployment.api_key.reveal()
        model = quote(_model_id(call.deployment), safe="")
        content = chat_to_gemini(call.body, call.thinking)
        content.pop("generationConfig", None)
        body = orjson.dumps({"generateContentRequest": {"model": f"models/{_model_id(call.deployment)}", **content}})
        base = (call.deployment.api_base or self.default_api_base or "").rstrip("/").removesuffix("/v1beta")
        request = UpstreamRequest(f"{base}/v1beta/models/{model}:countTokens", headers, body)
        resp = await call.http.send(request, stream=False, timeouts=call.timeouts)
        data = await resp.read()
        if resp.status >= 400:
            raise upstream_error(resp.status, data, call.deployment.secrets())
        try:
            total = orjson.loads(data).get("totalTokens")
        except (orjson.JSONDecodeError, AttributeError):
            total = None
        if not isinstance(total, int):
            raise UpstreamUnavailable("the upstream's token count is not a number")
        return total

    async def embeddings(self, call: Call) -> UpstreamResponse:
        raise BadRequest("Gemini embeddings are not supported yet.", param="model")


def _model_id(deployment: Deployment) -> str:
    """The model's id in Gemini's URLs: ``gemini/models/gemini-x`` (the API's resource name) and ``gemini/gemini-x``
    name the same model."""
    return deployment.upstream_model.removeprefix("models/")
