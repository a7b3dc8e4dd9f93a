"""Health endpoints: liveness and readiness for orchestrators (public), ``/health`` for admins.

``/health`` sends each deployment a minimal request and reports healthy and unhealthy deployments by
model name and id, with a scrubbed reason; never a key or an upstream URL.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from lockgate import __version__
from lockgate.asgi import Request
from lockgate.errors import GatewayError, upstream_error
from lockgate.providers.base import Call
from lockgate.routing.router import Target
from lockgate.upstream import Timeouts

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = ["health", "liveliness", "readiness"]

CHECK_TIMEOUT = 30.0


async def liveliness(gw: Gateway, req: Request) -> None:
    await req.respond(200, b'"I\'m alive!"')


async def readiness(gw: Gateway, req: Request) -> None:
    status = "draining" if gw.draining else "healthy"
    body = {"status": status, "db": "Not connected", "cache": None, "lockgate_version": __version__}
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
    return entry


async def health(gw: Gateway, req: Request) -> None:
    results = await asyncio.gather(*(_check(gw, t) for t in gw.router.targets()))
    healthy = [r for r in results if "error" not in r]
    unhealthy = [r for r in results if "error" in r]
    body = {
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": len(healthy),
        "unhealthy_count": len(unhealthy),
    }
    await req.respond(200, orjson.dumps(body))
