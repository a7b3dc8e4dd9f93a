"""Wire dialects the gateway speaks to clients and upstreams, and pure translation between them.

``openai`` (Chat Completions) and ``anthropic`` (Messages). Traffic whose client and upstream speak the
same dialect passes through untouched; across dialects, :mod:`.anthropic` and :mod:`.anthropic_stream`
translate requests, responses, stream events and usage.
"""

from typing import Literal

Dialect = Literal["openai", "anthropic"]

__all__ = ["Dialect"]
