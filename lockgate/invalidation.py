"""Tells every gateway instance at once that a key (or the models) changed, through Redis publish/subscribe.

Key lookups are cached per instance (``user_api_key_cache_ttl``). When an admin blocks, updates or deletes
a key on one instance, that instance drops its cached copy and publishes the key's hash; every instance
subscribed drops its copy too, so the change holds everywhere within moments rather than a cache lifetime.
Without Redis, or while Redis is unreachable, the cache lifetime is the bound (the subscriber reconnects
by itself).

Messages on the one channel::

    <64 hex digits>   this key changed: forget it          (forget(token_hash))
    *                 every key may have changed (a team)  (forget("*"))
    models            the models added through the API changed: reload them   (models_changed())
    cooldown <id> <s> <from>   a deployment went into cooldown for <s> seconds on instance <from>
                      (routing/health.py): the others cool it down too, rather than each finding out
                      from failures of its own   (publish_cooldown(); an instance ignores its own)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

__all__ = ["CHANNEL", "MODELS", "KeyInvalidation"]

log = logging.getLogger("lockgate")
CHANNEL = "lockgate:keys:changed"
MODELS = "models"


class KeyInvalidation:
    def __init__(
        self,
        redis: Any,
        forget: Callable[[str], None],
        models_changed: Callable[[], None] | None = None,
        cooldown: Callable[[str, float], None] | None = None,
    ) -> None:
        self._redis = redis
        self._forget = forget
        self._models_changed = models_changed
        self._cooldown = cooldown
        self._me = secrets.token_hex(6)
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def publish(self, token_hash: str) -> None:
        """Tell the other instances this key changed (``*``: every key)."""
        await self._send(token_hash, "key change")

    async def publish_models(self) -> None:
        """Tell the other instances the models added through the API changed."""
        await self._send(MODELS, "model change")

    def publish_cooldown(self, deployment_id: str, seconds: float) -> None:
        """Tell the other instances this deployment went into cooldown (in the background: the caller is a
        request's failure path)."""
        if any(c.isspace() for c in deployment_id):
            return
        task = asyncio.get_running_loop().create_task(
            self._send(f"cooldown {deployment_id} {seconds:.3f} {self._me}", "cooldown")
        )
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, message: str, what: str) -> None:
        try:
            async with asyncio.timeout(1.0):
                await self._redis.publish(CHANNEL, message)
        except Exception as exc:  # other instances fall back to their cache lifetime / reload period
            log.warning("%s not published to Redis (%s)", what, type(exc).__name__)

    def _dispatch(self, message: str) -> None:
        if message == MODELS:
            if self._models_changed is not None:
                self._models_changed()
        elif message.startswith("cooldown "):
            parts = message.split(" ")
            if len(parts) == 4 and parts[3] != self._me and self._cooldown is not None:
                try:
                    seconds = float(parts[2])
                except ValueError:
                    return
                self._cooldown(parts[1], seconds)
        else:
            self._forget(message)

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
                        self._dispatch(data.decode() if isinstance(data, bytes) else str(data))
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
