"""A fake webhook receiver: the generic webhook callback's endpoint and a Slack-compatible incoming webhook.

Every POST is recorded (tests/fakes/server.py). :meth:`FakeWebhook.records` flattens what was received as JSON
records (a JSON array, NDJSON lines or a single object per request); :meth:`FakeWebhook.texts` gives the
Slack messages' ``text``. ``delay`` answers each request that many seconds late (a slow sink); ``fail(n, status)``
answers the next ``n`` requests with ``status``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer, RecordedRequest

__all__ = ["FakeWebhook"]


class FakeWebhook(FakeServer):
    def __init__(self, *, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self._failures: list[int] = []

    def fail(self, times: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    async def _dispatch(self, request: web.Request, recorded: RecordedRequest, *, bad_json: bool) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            status = self._failures.pop(0) if self._failures else 200
        return web.Response(status=status, text="ok" if status == 200 else "no")

    def records(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        with self._lock:
            bodies = [r.body for r in self.requests if r.method == "POST"]
        for body in bodies:
            text = body.decode()
            try:
                value = json.loads(text)
            except ValueError:  # NDJSON
                found.extend(json.loads(line) for line in text.splitlines() if line)
                continue
            found.extend(value if isinstance(value, list) else [value])
        return found

    def texts(self) -> list[str]:
        return [str(record.get("text", "")) for record in self.records()]
