"""``GET /metrics``: the Prometheus text format of :mod:`lockgate.metrics`, with what is live now (requests in
flight, each deployment's attempts under way and its state). Who may read it is ``lockgate.metrics``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lockgate.asgi import Request
from lockgate.errors import NotFound
from lockgate.metrics import CONTENT_TYPE, DeploymentView, Live

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = ["metrics"]


async def metrics(gw: Gateway, req: Request) -> None:
    if gw.metrics is None:  # lockgate.metrics: off
        raise NotFound("Metrics are off (lockgate.metrics: off).")
    await req.respond(200, gw.metrics.exposition(live(gw)), CONTENT_TYPE.encode())


def live(gw: Gateway) -> Live:
    health, seen = gw.health, set()
    deployments = []
    for target in gw.router.targets():
        d = target.deployment
        if d.id not in seen:
            seen.add(d.id)
            state = health.status(d.id)[0]
            deployments.append(DeploymentView(d.id, d.model_name, target.provider.name, health.inflight(d.id), state))
    return Live(gw.in_flight, deployments, gw.limits_degraded)
