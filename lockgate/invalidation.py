"""Tells every gateway instance at once that a key changed, through Redis publish/subscribe.

Key lookups are cached per instance (``user_api_key_cache_ttl``). When an admin blocks, updates or deletes
a key on one instance, that instance drops its cached copy and publishes the key's hash; every instance
subscribed drops its copy too, so the change holds everywhere within moments rather than a cache lifetime.
Without Redis, or while Redis is unreachable, the cache lifetime is the bound (the subscriber reconnects
by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["CHANNEL", "KeyInvalidation"]

log = logging.getLogger("lockgate")
CHANNEL = "lockgate:keys:changed"


class KeyInvalidation:
    def __init__(self, redis: Any, forget: Callable[[str], None]) -> None:
        self._redis = redis
        self._forget = forget
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def publish(self, token_hash: str) -> None:
        try:
            async with asyncio.timeout(1.0):
                await self._redis.publish(CHANNEL, token_hash)
        except Exception as exc:  # other instances fall back to their cache lifetime
            log.warning("key change not published to Redis (%s)", type(exc).__name__)

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(CHANNEL)
                self.ready.set()
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message.get("data")
                        self._forget(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.ready.clear()
                log.warning("key-change subscription lost (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
