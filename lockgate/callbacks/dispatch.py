"""Runs every callback off the request path: one bounded queue and one task per callback.

    Gateway.emit(record)            on the event loop, after the response has been sent
      → Dispatcher.emit(...)        builds one Event, appends it to each interested callback's queue: O(callbacks),
                                    no I/O, no await; a full queue drops the event (counted; logged the first time)
      → lane task (one per callback) takes up to ``max_batch`` events (after waiting up to ``linger`` s for a
                                    fuller batch) and awaits ``callback.send(batch)``; one send at a time per
                                    callback, so a slow sink only ever delays its own queue
      → close()                     at shutdown, after the server drained: each lane sends what it holds, bounded in
                                    time, then the callback closes (flushing its SDK)

Routing follows LiteLLM: a callback named in ``callbacks`` gets every event, in ``success_callback`` the requests
that succeeded, in ``failure_callback`` those that failed (an error status, or an error once the answer had begun).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lockgate.callbacks.base import Callback, Event, registered
from lockgate.errors import describe
from lockgate.observe import RequestRecord

if TYPE_CHECKING:
    from lockgate.auth import Principal
    from lockgate.callbacks.settings import CallbackSpec, ObserveSettings
    from lockgate.routing.router import Router

__all__ = ["Dispatcher", "owner_of"]

log = logging.getLogger("lockgate.callbacks")

ERROR_LOG_EVERY = 60.0  # seconds between two log lines about one callback's failures


class _Lane:
    """One callback, its queue and its counters."""

    def __init__(self, callback: Callback, spec: CallbackSpec, capacity: int) -> None:
        self.callback = callback
        self.spec = spec
        self.capacity = capacity
        self.queue: collections.deque[Event] = collections.deque()
        self.ready = asyncio.Event()
        self.full = asyncio.Event()
        self.max_batch = max(1, int(getattr(callback, "max_batch", 100)))
        self.linger = max(0.0, float(getattr(callback, "linger", 0.0)))
        self.sent = self.dropped = self.failed = 0
        self.task: asyncio.Task[None] | None = None
        self.told_drop = False
        self.failures_since_log = 0
        self.last_error_log = -ERROR_LOG_EVERY

    def offer(self, event: Event) -> None:
        if len(self.queue) >= self.capacity:
            self.dropped += 1
            if not self.told_drop:
                self.told_drop = True
                log.warning("callback %s is behind: its queue holds %d events; newer events are dropped (counted; "
                            "the total is logged at shutdown)", self.spec.name, self.capacity)  # fmt: skip
            return
        self.queue.append(event)
        self.ready.set()
        if len(self.queue) >= self.max_batch:
            self.full.set()


class Dispatcher:
    """The configured callbacks and their lanes. Build with :meth:`from_settings`; ``start()`` on the event loop,
    ``emit()`` per request, ``close()`` at shutdown."""

    def __init__(self, callbacks: Sequence[tuple[Callback, CallbackSpec]], *, queue_size: int = 10_000,
                 message_logging: bool = True) -> None:  # fmt: skip
        self._lanes = [_Lane(callback, spec, queue_size) for callback, spec in callbacks]
        self._message_logging = message_logging
        self._closing = False
        self._names: tuple[object, dict[str, str]] = (None, {})

    @classmethod
    def from_settings(cls, settings: ObserveSettings) -> Dispatcher | None:
        """The callbacks the settings name (None when there are none). Each is built by its registered factory."""
        built: list[tuple[Callback, CallbackSpec]] = []
        for spec in settings.callbacks:
            plugin = registered(spec.kind)
            if plugin is None:  # (the config checked it; a plug-in unregistered since)
                log.error("callback %s is not registered: not run", spec.name)
                continue
            built.append((plugin.factory(settings, {**spec.options, "name": spec.name}), spec))
        if not built:
            return None
        return cls(built, queue_size=settings.queue_size, message_logging=settings.message_logging)

    @property
    def names(self) -> list[str]:
        return [lane.spec.name for lane in self._lanes]

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for lane in self._lanes:
            if lane.task is None:
                lane.task = loop.create_task(self._run(lane), name=f"lockgate-callback-{lane.spec.name}")

    def emit(
        self,
        record: RequestRecord,
        *,
        owner: Mapping[str, str] | None = None,
        router: Router | None = None,
        content: tuple[Any, Any] | None = None,
    ) -> None:
        """Queue a finished request for every callback that wants it (``content``: its prompt and answer as the
        ledger stores them; ``router``: where its deployments' upstream model names are read). Never waits."""
        if self._closing:
            return
        record.time = record.time or time.time()
        failed = record.status >= 400 or record.error_type is not None
        models = self._models(record, router) if router is not None else {}
        plain = with_content = None
        for lane in self._lanes:
            if not (lane.spec.failure if failed else lane.spec.success):
                continue
            if content is not None and self._message_logging and lane.spec.message_logging:
                if with_content is None:
                    with_content = Event(record, failed, owner or {}, models or {}, content[0], content[1])
                lane.offer(with_content)
            else:
                if plain is None:
                    plain = Event(record, failed, owner or {}, models or {})
                lane.offer(plain)

    def _models(self, record: RequestRecord, router: Router) -> dict[str, str]:
        """Deployment id -> upstream model, for the deployments the request's attempts went to."""
        if self._names[0] is not router:
            names = {t.deployment.id: t.deployment.upstream_model for t in router.targets()}
            self._names = (router, {ident: name for ident, name in names.items() if "*" not in name})
        names = self._names[1]
        return {a.deployment_id: names[a.deployment_id] for a in record.attempt_log if a.deployment_id in names}

    async def _run(self, lane: _Lane) -> None:
        while True:
            if not lane.queue:
                if self._closing:
                    return
                lane.ready.clear()
                await lane.ready.wait()
                continue
            if lane.linger > 0 and len(lane.queue) < lane.max_batch and not self._closing:
                lane.full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.full.wait(), lane.linger)
            batch = [lane.queue.popleft() for _ in range(min(len(lane.queue), lane.max_batch))]
            await self._send(lane, batch)

    async def _send(self, lane: _Lane, batch: list[Event]) -> None:
        try:
            await lane.callback.send(batch)
        except asyncio.CancelledError:
            lane.failed += len(batch)
            raise
        except Exception as exc:  # a callback's failure is its own: counted and logged, never raised further
            lane.failed += len(batch)
            lane.failures_since_log += len(batch)
            now = time.monotonic()
            if now - lane.last_error_log >= ERROR_LOG_EVERY:
                log.error("callback %s failed; %d events lost since the last report: %s",
                          lane.spec.name, lane.failures_since_log, describe(exc))  # fmt: skip
                lane.last_error_log, lane.failures_since_log = now, 0
        else:
            lane.sent += len(batch)

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds in all), then close every callback."""
        self._closing = True
        for lane in self._lanes:
            lane.ready.set()
            lane.full.set()
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for lane in self._lanes:
            lane.task = None
            if lane.dropped + lane.failed + len(lane.queue):
                log.warning("callback %s: %d events sent, %d dropped (queue full), %d failed, %d unsent at shutdown",
                            lane.spec.name, lane.sent, lane.dropped, lane.failed, len(lane.queue))  # fmt: skip
        await asyncio.gather(*(self._close(lane, timeout) for lane in self._lanes))

    async def _close(self, lane: _Lane, timeout: float) -> None:
        try:
            await asyncio.wait_for(lane.callback.close(), timeout)
        except Exception as exc:  # (a timeout included: an SDK still flushing to a dead collector)
            log.error("callback %s did not close cleanly: %s", lane.spec.name, describe(exc))

    def stats(self) -> dict[str, dict[str, int]]:
        """Per callback: events ``sent``, ``dropped`` (queue full), ``failed`` (its send raised), ``queued``."""
        return {
            lane.spec.name: {"sent": lane.sent, "dropped": lane.dropped, "failed": lane.failed,
                             "queued": len(lane.queue)}
            for lane in self._lanes
        }  # fmt: skip


def owner_of(principal: Principal | None) -> dict[str, str]:
    """What the record does not say about who sent a request (it has the team, user and key alias): the key's
    hash, as the ledger stores it (never the key), and the organisation."""
    if principal is None:
        return {}
    owner: dict[str, str] = {}
    if principal.key is not None:
        owner["key_hash"] = principal.key.token_hash
    if principal.org is not None:
        owner["org_id"] = principal.org.organization_id
    return owner
