"""OpenAI and the OpenAI-compatible family (vLLM, Ollama, Groq, DeepSeek, Mistral, OpenRouter, Together).

They all speak OpenAI's wire format at ``{api_base}/chat/completions`` and ``{api_base}/embeddings`` with
``Authorization: Bearer``; they differ only in their default base URL and the extra request fields they
accept, so each is one row built from :class:`OpenAICompatible`.
"""

from __future__ import annotations

import orjson

from lockgate.deployment import Deployment
from lockgate.providers.base import Call, Provider
from lockgate.upstream import UpstreamRequest, UpstreamResponse

__all__ = ["FAMILY", "OpenAICompatible"]

# Sampling and decoding fields that self-hosted OpenAI-compatible servers (vLLM, SGLang, LM Studio) accept.
_SELF_HOSTED_FIELDS = frozenset(
    {
        "top_k", "min_p", "repetition_penalty", "length_penalty", "min_tokens", "ignore_eos",
        "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
        "guided_json", "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend",
        "structured_outputs", "chat_template", "chat_template_kwargs", "add_generation_prompt",
        "continue_final_message", "echo", "priority", "truncate_prompt_tokens", "best_of",
        "use_beam_search", "stop_token_ids", "bad_words", "documents", "mm_processor_kwargs",
    }
)  # fmt: skip

_OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"


class OpenAICompatible(Provider):
    """An upstream that speaks OpenAI's chat completions and embeddings APIs."""

    def __init__(
        self,
        name: str,
        default_api_base: str | None,
        *,
        extra_chat_fields: frozenset[str] = frozenset(),
        append_v1: bool = False,
        supports_embeddings: bool = True,
        supports_stream_usage: bool = True,
        passes_cache_control: bool = False,
    ) -> None:
        self.name = name
        self.passes_cache_control = passes_cache_control
        self.default_api_base = default_api_base
        self.requires_api_base = default_api_base is None
        self.extra_chat_fields = extra_chat_fields
        self.supports_embeddings = supports_embeddings
        self.supports_stream_usage = supports_stream_usage
        self._append_v1 = append_v1
        super().__init__()

    def base_url(self, deployment: Deployment) -> str:
        base = (deployment.api_base or self.default_api_base or "").rstrip("/")
        if self._append_v1 and not base.endswith("/v1"):
            base += "/v1"
        return base

    def accepts_chat_field(self, deployment: Deployment, name: str) -> bool:
        if name in self.chat_fields:
            return True
        # openai/ pointed at one's own server (vLLM, LM Studio...) accepts what such servers accept.
        return self.name == "openai" and self._is_custom_base(deployment) and name in _SELF_HOSTED_FIELDS

    def _is_custom_base(self, deployment: Deployment) -> bool:
        return bool(deployment.api_base) and self.base_url(deployment) != _OPENAI_DEFAULT_BASE

    def headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if deployment.api_key:
            headers["Authorization"] = "Bearer " + deployment.api_key.reveal()
        if deployment.organization:
            headers["OpenAI-Organization"] = deployment.organization
        return headers

    def chat_request(self, call: Call) -> UpstreamRequest:
        body = call.raw if call.raw is not None else orjson.dumps(call.body)
        return UpstreamRequest(
            self.base_url(call.deployment) + "/chat/completions", self.headers(call.deployment), body
        )

    def embeddings_request(self, call: Call) -> UpstreamRequest:
        body = call.raw if call.raw is not None else orjson.dumps(call.body)
        return UpstreamRequest(self.base_url(call.deployment) + "/embeddings", self.headers(call.deployment), body)

    async def chat(self, call: Call) -> UpstreamResponse:
        return await call.http.send(self.chat_request(call), stream=call.stream, timeouts=call.timeouts)

    async def embeddings(self, call: Call) -> UpstreamResponse:
        return await call.http.send(self.embeddings_request(call), stream=False, timeouts=call.timeouts)


FAMILY: tuple[OpenAICompatible, ...] = (
    OpenAICompatible("openai", _OPENAI_DEFAULT_BASE),
    OpenAICompatible("hosted_vllm", None, extra_chat_fields=_SELF_HOSTED_FIELDS, append_v1=True),
    *(
        OpenAICompatible(
            name,  # LiteLLM's ollama/ and ollama_chat/ both reach Ollama's OpenAI-compatible /v1 API
            "http://localhost:11434",
            extra_chat_fields=frozenset({"top_k", "min_p", "repeat_penalty", "num_ctx", "keep_alive"}),
            append_v1=True,
        )
        for name in ("ollama_chat", "ollama")
    ),
    OpenAICompatible(
        "groq",
        "https://api.groq.com/openai/v1",
        extra_chat_fields=frozenset({"reasoning_format", "include_reasoning", "search_settings"}),
    ),
    OpenAICompatible("deepseek", "https://api.deepseek.com/v1", extra_chat_fields=frozenset({"thinking"})),
    OpenAICompatible(
        "mistral",
        "https://api.mistral.ai/v1",
        extra_chat_fields=frozenset({"safe_prompt", "random_seed", "prompt_mode"}),
    ),
    OpenAICompatible(
        "openrouter",
        "https://openrouter.ai/api/v1",
        extra_chat_fields=frozenset(
            {"transforms", "models", "route", "provider", "reasoning", "usage", "plugins", "top_k", "min_p"}
        ),
        passes_cache_control=True,
    ),
    OpenAICompatible(
        "together_ai",
        "https://api.together.xyz/v1",
        extra_chat_fields=frozenset({"top_k", "min_p", "repetition_penalty", "safety_model", "reasoning"}),
    ),
)
