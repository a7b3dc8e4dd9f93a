"""The provider interface and the field allowlists every OpenAI-dialect endpoint shares.

A provider turns a prepared OpenAI-dialect request into an upstream call and hands back the upstream's
response in the OpenAI dialect. HTTP providers only say how to address the upstream (URL, headers);
the shared client in :mod:`lockgate.upstream` is passed in with each call, never held globally.

Adding a provider: subclass :class:`Provider` (or :class:`lockgate.providers.openai.OpenAICompatible`
for OpenAI-compatible servers) in its own module and list it in :mod:`lockgate.providers.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lockgate.deployment import Deployment
from lockgate.dialects import Dialect
from lockgate.dialects.thinking import ThinkingMemory
from lockgate.upstream import HttpClient, Timeouts, UpstreamResponse

__all__ = [
    "CHAT_FIELDS",
    "COMMON_CONFIG_PARAMS",
    "EMBEDDING_FIELDS",
    "FORBIDDEN_FIELDS",
    "FORBIDDEN_PREFIXES",
    "GATEWAY_FIELDS",
    "Call",
    "Provider",
]

# Top-level fields of OpenAI's chat completions request that OpenAI-dialect upstreams accept.
CHAT_FIELDS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "n", "stop", "seed", "logprobs", "top_logprobs", "presence_penalty",
        "frequency_penalty", "logit_bias", "user", "tools", "tool_choice", "parallel_tool_calls",
        "response_format", "reasoning_effort", "store", "service_tier", "modalities", "audio",
        "prediction", "verbosity", "web_search_options", "functions", "function_call",
        "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
    }
)  # fmt: skip

EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})

# Fields the gateway itself reads (LiteLLM's request-level controls); never forwarded upstream.
GATEWAY_FIELDS = frozenset(
    {
        "drop_params", "litellm_session_id", "litellm_trace_id", "metadata", "litellm_metadata", "tags",
        "num_retries", "fallbacks", "context_window_fallbacks", "mock_response", "caching", "cache",
        "guardrails", "timeout", "stream_timeout", "request_timeout",
    }
)  # fmt: skip

# Fields that would let a client choose where traffic goes or with which credentials: always refused.
FORBIDDEN_FIELDS = frozenset(
    {
        "api_base", "base_url", "api_key", "api_version", "api_type", "organization", "azure_ad_token",
        "azure_ad_token_provider", "custom_llm_provider", "user_config", "extra_headers", "headers",
        "litellm_params", "model_list", "credentials", "litellm_credential_name", "client",
        "deployment_id", "proxy", "proxies", "http_client", "ssl_verify", "input_cost_per_token",
        "output_cost_per_token",
    }
)  # fmt: skip
FORBIDDEN_PREFIXES = ("aws_", "vertex_", "azure_", "gcp_", "watsonx_")

# litellm_params keys every provider understands (the rest are provider parameters or defaults).
COMMON_CONFIG_PARAMS = frozenset(
    {
        "model", "api_base", "base_url", "api_key", "api_version", "organization", "timeout",
        "stream_timeout", "rpm", "tpm", "weight", "order", "max_retries", "custom_llm_provider",
        "drop_params",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Call:
    """One upstream attempt: the deployment, the body to send (upstream model already set)."""

    deployment: Deployment
    body: dict[str, Any]
    raw: bytes | None
    """The body already serialised, when the gateway had nothing to change (sent as is)."""
    stream: bool
    http: HttpClient
    timeouts: Timeouts
    headers: Mapping[str, str] = field(default_factory=dict)
    """Client headers the upstream's dialect defines (``anthropic-version``, ``anthropic-beta``), forwarded."""
    thinking: ThinkingMemory | None = None
    """Where providers keep opaque reasoning signatures their clients cannot carry."""


class Provider(ABC):
    """One upstream API. Instances are stateless and shared."""

    name: str
    dialect: Dialect = "openai"
    """The wire dialect of the upstream's chat endpoint; the pipeline translates when the client's differs."""
    default_api_base: str | None = None
    requires_api_base: bool = False
    config_params: frozenset[str] = frozenset()
    """Provider-specific ``litellm_params`` keys (credentials, endpoints) this provider reads."""
    extra_chat_fields: frozenset[str] = frozenset()
    """Request fields this upstream accepts beyond OpenAI's."""
    supports_embeddings: bool = True
    supports_stream_usage: bool = True
    passes_cache_control: bool = False
    """An OpenAI-dialect upstream that takes Anthropic-style ``cache_control`` markers in messages (OpenRouter,
    which hands them to Anthropic); for the others they are taken off unless ``model_info`` claims
    ``supports_prompt_caching``."""
    """Whether the upstream honours ``stream_options.include_usage``."""

    def __init__(self) -> None:
        self.chat_fields = CHAT_FIELDS | self.extra_chat_fields

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        """Problems with a deployment's settings, as (litellm_params key, message)."""
        problems: list[tuple[str, str]] = []
        if self.requires_api_base and not (deployment.api_base or self.default_api_base):
            problems.append(("api_base", f"the {self.name} provider needs api_base (the server's URL)"))
        if deployment.api_base and not deployment.api_base.startswith(("http://", "https://")):
            problems.append(("api_base", "api_base must be an http:// or https:// URL"))
        return problems

    def accepts_chat_field(self, deployment: Deployment, name: str) -> bool:
        return name in self.chat_fields

    def adapt(self, body: dict[str, Any], deployment: Deployment) -> dict[str, Any] | None:
        """A deployment's own changes to a prepared chat body (a new dict), or None when it has none."""
        return None

    @abstractmethod
    async def chat(self, call: Call) -> UpstreamResponse:
        """Send a chat request; the body, the response and its stream are in :attr:`dialect`."""

    async def count_tokens(self, call: Call) -> int | None:
        """The upstream's own count of a request's input tokens (body in :attr:`dialect`), or None when the
        provider has no counter."""
        return None

    @abstractmethod
    async def embeddings(self, call: Call) -> UpstreamResponse:
        """Send an embeddings request; the response is in the OpenAI dialect."""
