"""Remembers opaque reasoning signatures lockgate returned, to restore them when a client drops them.

Claude refuses a tool-loop turn whose assistant message does not start with a signed thinking block, and
some OpenAI-dialect clients (the Cline CLI) send earlier reasoning back as plain ``reasoning_content``
without its signature; Gemini's function calls carry a ``thoughtSignature`` OpenAI clients cannot keep.
When such a signature goes out, it is kept here, keyed by a hash of the thinking text or of the tool-call
id (never the text itself), bounded in size and time. When the client sends the turn back, the signature
is restored.

Each process keeps an in-memory copy. With Redis configured, signatures are also written there (without
waiting), and :meth:`ThinkingMemory.prefetch` loads the ones a request needs before it is translated, so
a conversation can move between gateway instances. Redis being unreachable only loses that sharing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any

__all__ = ["ThinkingMemory"]

log = logging.getLogger("lockgate")
REDIS_PREFIX = "lockgate:thinking:"


class ThinkingMemory:
    def __init__(self, *, max_entries: int = 20_000, ttl_seconds: float = 6 * 3600, redis: Any = None) -> None:
        self._entries: OrderedDict[bytes, tuple[float, str]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_seconds
        self._redis = redis  # a redis.asyncio client, or None
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def shared(self) -> bool:
        return self._redis is not None

    @staticmethod
    def _key(thinking: str) -> bytes:
        return hashlib.sha256(thinking.encode("utf-8", "surrogatepass")).digest()

    def _store(self, key: bytes, signature: str, expires: float) -> None:
        self._entries[key] = (expires, signature)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def remember(self, thinking: str, signature: str) -> None:
        if not thinking or not signature:
            return
        key = self._key(thinking)
        self._store(key, signature, time.monotonic() + self._ttl)
        if self._redis is not None:
            task = asyncio.get_running_loop().create_task(self._share(key, signature))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _share(self, key: bytes, signature: str) -> None:
        try:
            await self._redis.set(REDIS_PREFIX + key.hex(), signature, ex=int(self._ttl))
        except Exception as exc:  # sharing is best effort; the local copy still serves this instance
            log.warning("thinking signatures: Redis write failed (%s)", type(exc).__name__)

    async def prefetch(self, texts: list[str]) -> None:
        """Load from Redis the signatures of ``texts`` this instance does not hold."""
        if self._redis is None or not texts:
            return
        missing = [k for k in (self._key(t) for t in texts) if k not in self._entries]
        if not missing:
            return
        try:
            values = await self._redis.mget([REDIS_PREFIX + k.hex() for k in missing])
        except Exception as exc:
            log.warning("thinking signatures: Redis read failed (%s)", type(exc).__name__)
            return
        expires = time.monotonic() + self._ttl
        for key, value in zip(missing, values, strict=True):
            if value is not None:
                self._store(key, value.decode() if isinstance(value, bytes) else str(value), expires)

    def signature(self, thinking: str) -> str | None:
        found = self._entries.get(self._key(thinking))
        if found is None:
            return None
        expires, signature = found
        if expires < time.monotonic():
            del self._entries[self._key(thinking)]
            return None
        return signature

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    def __len__(self) -> int:
        return len(self._entries)
