"""Health endpoints: liveness and readiness for orchestrators (public), ``/health`` for admins.

``/health/readiness`` is 200 unless the gateway is draining (503), also while its database is not open yet: it
serves what needs no database then. Its ``db`` says ``connected`` once the database is open (start-up keeps
trying in the background when it could not be reached), ``Not connected`` before.

``/health`` (``?model=`` for one model group) sends each deployment a minimal request and reports healthy and
unhealthy deployments by model name and id, with a scrubbed reason, and how the router sees each one now
(``state``: healthy, degraded or cooldown, with why); never a key or an upstream URL. With
``general_settings.background_health_checks`` the checks also run every ``health_check_interval`` seconds (300)
and ``/health`` answers with the latest round (``checked_at``); a failed check counts as a failure of the
deployment (it may cool it down), a passed one ends its cooldown. Wildcard deployments serve whatever model is
asked for and are not checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from lockgate import __version__
from lockgate.asgi import Request
from lockgate.errors import GatewayError, upstream_error
from lockgate.providers.base import Call
from lockgate.routing.failures import classify
from lockgate.routing.health import FAILURE_KINDS
from lockgate.routing.router import Target
from lockgate.upstream import Timeouts

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = ["HealthChecks", "health", "liveliness", "readiness"]

log = logging.getLogger("lockgate")

CHECK_TIMEOUT = 30.0


async def liveliness(gw: Gateway, req: Request) -> None:
    await req.respond(200, b'"I\'m alive!"')


async def readiness(gw: Gateway, req: Request) -> None:
    status = "draining" if gw.draining else "healthy"
    db = "connected" if gw.database_connected else "Not connected"  # LiteLLM's words
    body = {"status": status, "db": db, "cache": None, "lockgate_version": __version__}
    await req.respond(503 if gw.draining else 200, orjson.dumps(body))


async def _check(gw: Gateway, target: Target) -> dict[str, Any]:
    d = target.deployment
    entry: dict[str, Any] = {"model": d.model_name, "model_id": d.id, "provider": d.provider}
    total = min(target.timeouts.total, CHECK_TIMEOUT)
    timeouts = Timeouts(total=total, first_byte=total, idle=total, connect=target.timeouts.connect)
    embedding = d.model_info.get("mode") == "embedding"
    body: dict[str, Any] = (
        {"model": d.upstream_model, "input": "ping"}
        if embedding
        else {"model": d.upstream_model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    )
    call = Call(d, body, None, False, gw.http, timeouts)
    try:
        resp = await (target.provider.embeddings(call) if embedding else target.provider.chat(call))
        payload = await resp.read()
        if resp.status >= 400:
            raise upstream_error(resp.status, payload, d.secrets())
    except GatewayError as error:
        entry["error"] = f"{error.status}: {error.message}"
        kind = classify(error).kind
        gw.health.failed(d.id, kind if kind in FAILURE_KINDS else None)
    else:
        gw.health.passed(d.id)
    return entry


async def check_all(gw: Gateway, model: str | None = None) -> dict[str, Any]:
    """One round of checks (of ``model``'s group only, when given), as ``/health`` shows it."""
    targets = [t for t in gw.router.targets() if "*" not in t.deployment.model_name]
    if model is not None:
        targets = [t for t in targets if t.deployment.model_name == model]
    results = await asyncio.gather(*(_check(gw, t) for t in targets))
    return _report(gw, list(results), time.time())


def _report(gw: Gateway, results: list[dict[str, Any]], at: float) -> dict[str, Any]:
    for entry in results:
        state, why = gw.health.status(entry["model_id"])
        entry["state"] = state
        if why:
            entry["state_reason"] = why
    healthy = [r for r in results if "error" not in r]
    unhealthy = [r for r in results if "error" in r]
    return {
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": len(healthy),
        "unhealthy_count": len(unhealthy),
        "checked_at": round(at, 3),
    }


async def health(gw: Gateway, req: Request) -> None:
    model = req.query.get("model") or None
    latest = gw.health_checks.latest if gw.health_checks is not None else None
    if latest is not None and model is None:  # background checks: their latest round, with the router's view now
        results, at = latest
        body = _report(gw, [dict(entry) for entry in results], at)
    else:
        body = await check_all(gw, model)
    await req.respond(200, orjson.dumps(body))


class HealthChecks:
    """``background_health_checks``: a round of checks every ``interval`` seconds, the latest kept."""

    def __init__(self, gw: Gateway, interval: float) -> None:
        self._gw = gw
        self._interval = max(1.0, interval)
        self.latest: tuple[list[dict[str, Any]], float] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                round_ = await check_all(self._gw)
            except Exception:  # a check round must never stop the next one
                log.exception("health: a round of background checks failed")
            else:
                entries = [*round_["healthy_endpoints"], *round_["unhealthy_endpoints"]]
                for entry in entries:
                    entry.pop("state", None)
                    entry.pop("state_reason", None)
                self.latest = (entries, round_["checked_at"])
                if round_["unhealthy_count"]:
                    log.warning("health: %d of %d deployments failed their check", round_["unhealthy_count"],
                                len(entries))  # fmt: skip
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
