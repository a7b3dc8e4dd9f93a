"""Alerts to a Slack-compatible incoming webhook (``general_settings.alerting: [slack]``), off the request path.

What is told, by LiteLLM's alert type::

    budget_alerts        a budget crossed 80 % and 100 % of its max_budget (refusals begin), a soft budget crossed;
                         once per budget, level and budget period (per process)
    cooldown_deployment  a deployment entered cooldown here (it failed more than allowed_fails times a minute)
    llm_too_slow         a request took longer than alerting_threshold (default 300 s), or a deployment is degraded
                         (its recent time to first token is above lockgate.slo_ttft, or far above its normal)

Each subject (a deployment, a budget level) is told at most once per ``lockgate.alert_period`` (default an hour).
The hooks (:meth:`Alerter.budget`, :meth:`Alerter.cooldown`, :meth:`Alerter.request`) are called on the request
path and only queue a line of text; one task POSTs ``{"text": ...}`` to the webhook(s), with retries; a full queue
(a dead webhook) drops alerts, counted. Alerts name deployments, model groups and budget owners (a key by the
first characters of its hash), never a key, a URL or a prompt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from lockgate.callbacks.settings import AlertSettings
from lockgate.callbacks.webhook import WebhookFailed, post
from lockgate.observe import RequestRecord
from lockgate.upstream import HttpClient

if TYPE_CHECKING:
    from lockgate.routing.health import Health

__all__ = ["Alerter"]

log = logging.getLogger("lockgate.alerts")

QUEUE = 1000
_WHO = {"key": "key", "user": "user", "team": "team", "org": "organisation", "end_user": "end user"}


def _owner(scope: str) -> str:
    kind, _, rest = scope.partition(":")
    if kind == "proxy":
        return "the gateway"
    if ":model:" in rest:
        ident, _, model = rest.partition(":model:")
        return f"{_owner(f'{kind}:{ident}')}'s budget for {model[:100]}"
    if kind == "key":
        rest = rest[:12] + "…"
    return f"{_WHO.get(kind, kind)} `{rest[:100]}`"


class Alerter:
    """Queues alerts and sends them from one task. ``start()`` on the event loop; ``close()`` at shutdown."""

    def __init__(self, settings: AlertSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._queue: collections.deque[tuple[str, str]] = collections.deque()
        self._ready = asyncio.Event()
        self._seen: dict[tuple[str, ...], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._client: HttpClient | None = None
        self._health: Health | None = None
        self.sent = self.dropped = self.failed = 0

    # --- hooks (request path: no I/O) ----------------------------------------------------------------------

    def watch(self, health: Health) -> None:
        """Be told of this instance's cooldowns, and read deployments' slowness from ``health`` as requests end."""
        self._health = health
        health.cooldown_listeners.append(self.cooldown)

    def cooldown(self, deployment_id: str, seconds: float) -> None:
        self._alert("cooldown_deployment", ("cooldown", deployment_id),
                    f"Deployment `{deployment_id}` entered cooldown for {seconds:.0f} s after repeated failures: its "
                    "requests go to the other deployments of its group meanwhile.")  # fmt: skip

    def budget(self, scope: str, level: str, spent: float, threshold: float, period: str) -> None:
        """A budget crossed ``level`` (``soft``, ``80%`` or ``100%``); told once per budget, level and period."""
        who = _owner(scope)
        if level == "soft":
            text = f"Budget: {who} crossed its soft budget of ${threshold:g} (${spent:.4f} committed)."
        elif level == "100%":
            text = f"Budget: {who} has reached its budget of ${threshold:g}: its requests are being refused."
        else:
            text = f"Budget: {who} has committed {level} of its budget (${spent:.4f} of ${threshold:g})."
        self._alert("budget_alerts", ("budget", scope, level, period), text, once=True)

    def request(self, record: RequestRecord) -> None:
        """A request finished: too slow (``alerting_threshold``), or its deployment is now degraded."""
        if "llm_too_slow" not in self.settings.types:
            return
        seconds = record.latency_ms / 1000
        subject = record.deployment_id or record.model_group or "?"
        if seconds > self.settings.threshold:
            where = f"deployment `{record.deployment_id}` of " if record.deployment_id else ""
            self._alert("llm_too_slow", ("slow", subject),
                        f"Slow request: {seconds:.1f} s (alerting_threshold {self.settings.threshold:g} s) on "
                        f"{where}`{record.model_group}` (request {record.request_id}).")  # fmt: skip
        if self._health is not None and record.deployment_id:
            state, why = self._health.status(record.deployment_id)
            if state == "degraded":
                self._alert("llm_too_slow", ("degraded", record.deployment_id),
                            f"Deployment `{record.deployment_id}` of `{record.model_group}` is degraded: {why}. It is "
                            "tried after the healthy deployments of its group.")  # fmt: skip

    def _alert(self, kind: str, subject: tuple[str, ...], text: str, *, once: bool = False) -> None:
        if kind not in self.settings.types:
            return
        now = self._clock()
        last = self._seen.get(subject)
        if last is not None and (once or now - last < self.settings.period):
            return
        if len(self._seen) > 10_000:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.settings.period}
        self._seen[subject] = now
        if len(self._queue) >= QUEUE:
            self.dropped += 1
            return
        self._queue.append((kind, text))
        self._ready.set()

    # --- sending -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lockgate-alerts")

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            kind, text = self._queue.popleft()
            await self._send(kind, text)

    async def _send(self, kind: str, text: str) -> None:
        if self._client is None:
            self._client = HttpClient()
        body = orjson.dumps({"text": f"lockgate {kind}: {text}"})
        for url in self.settings.webhooks.get(kind, ()):
            try:
                await post(self._client, url, {"Content-Type": "application/json"}, body)
                self.sent += 1
            except WebhookFailed as exc:
                self.failed += 1
                log.error("alert not sent (%s): %s", kind, exc)

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (bounded in time), then stop."""
        deadline = self._clock() + timeout
        with contextlib.suppress(TimeoutError):
            while self._queue and self._clock() < deadline:
                await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self.dropped:
            log.warning("alerts: %d dropped (queue full)", self.dropped)
