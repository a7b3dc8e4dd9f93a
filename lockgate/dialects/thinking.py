"""Remembers the signatures of the thinking blocks lockgate returned, to restore them when a client drops them.

Claude refuses a tool-loop turn whose assistant message does not start with a signed thinking block, and
some OpenAI-dialect clients (the Cline CLI) send earlier reasoning back as plain ``reasoning_content``
without its signature. When Claude's thinking goes out to an OpenAI client, its signature is kept here,
keyed by a hash of the thinking text (the text itself is never stored), bounded in size and time. When
such a client sends the reasoning back, the signed block is restored.

One process keeps its own memory; instances behind a load balancer share it once Redis is configured
(with the shared counters).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

__all__ = ["ThinkingMemory"]


class ThinkingMemory:
    def __init__(self, *, max_entries: int = 20_000, ttl_seconds: float = 6 * 3600) -> None:
        self._entries: OrderedDict[bytes, tuple[float, str]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_seconds

    @staticmethod
    def _key(thinking: str) -> bytes:
        return hashlib.sha256(thinking.encode("utf-8", "surrogatepass")).digest()

    def remember(self, thinking: str, signature: str) -> None:
        if not thinking or not signature:
            return
        key = self._key(thinking)
        self._entries[key] = (time.monotonic() + self._ttl, signature)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def signature(self, thinking: str) -> str | None:
        found = self._entries.get(self._key(thinking))
        if found is None:
            return None
        expires, signature = found
        if expires < time.monotonic():
            del self._entries[self._key(thinking)]
            return None
        return signature

    def __len__(self) -> int:
        return len(self._entries)
