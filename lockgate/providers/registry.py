"""Which provider serves each ``litellm_params.model`` prefix. Built-ins are listed here like any other."""

from __future__ import annotations

from lockgate.providers.anthropic import Anthropic
from lockgate.providers.azure import Azure
from lockgate.providers.base import Provider
from lockgate.providers.bedrock import Bedrock
from lockgate.providers.demo import Demo
from lockgate.providers.gemini import Gemini
from lockgate.providers.openai import FAMILY

__all__ = ["PLANNED", "PROVIDERS", "get"]

PROVIDERS: dict[str, Provider] = {p.name: p for p in (*FAMILY, Azure(), Anthropic(), Bedrock(), Gemini(), Demo())}

# LiteLLM prefixes that lockgate will serve but does not yet: a clear config error, not "unknown".
PLANNED = frozenset({"vertex_ai"})


def get(name: str) -> Provider | None:
    return PROVIDERS.get(name)
