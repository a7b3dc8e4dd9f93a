"""Rate limits and budgets that hold under concurrency and across gateway instances.

    base.py     the vocabulary (Limit, Window, Ask, Admission, Ticket) and the Limiter interface
    local.py    LocalLimiter: in this process's memory (one instance; also the degraded fallback)
    redis.py    RedisLimiter: shared through Redis; most requests admitted and settled in memory on leases
    leases.py   the leases: slices of a limit's headroom this process spends without asking Redis
    scripts.py  the Lua scripts (admit and grant, settle a lease group, seed, void) and their batch
    batcher.py  the script calls of one event-loop turn sent to Redis as one command

The pipeline calls ``admit`` before the upstream call and ``settle`` after it; see base.py for the dance
(cold budget windows are seeded from the store and the admit retried once).
"""

from typing import TYPE_CHECKING, Any

from lockgate.limits.base import Admission, Ask, Kind, Limit, Limiter, Ticket, Window, to_nano
from lockgate.limits.local import LocalLimiter

if TYPE_CHECKING:
    from lockgate.limits.redis import RedisLimiter


def __getattr__(name: str) -> Any:
    """``RedisLimiter`` is imported when first asked for: a gateway without Redis never loads the client."""
    if name == "RedisLimiter":
        from lockgate.limits.redis import RedisLimiter

        return RedisLimiter
    raise AttributeError(name)


__all__ = [
    "Admission",
    "Ask",
    "Kind",
    "Limit",
    "Limiter",
    "LocalLimiter",
    "RedisLimiter",
    "Ticket",
    "Window",
    "to_nano",
]
