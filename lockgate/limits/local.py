"""LocalLimiter: every limit counted in this process's memory, with no external service.

Used alone by a single gateway instance, and by :class:`~lockgate.limits.redis.RedisLimiter` as its degraded
fallback. Every public coroutine runs to completion without awaiting, so on one event loop each admit and
each settle is atomic (the check and the count cannot interleave with another request's).

State, per counted thing::

    (scope, "rpm"|"tpm")        _Rate: per-second buckets of the last 60 s and their running total
    scope (parallel)            {ticket id: expiry}                in-flight slots
    (scope, window id, start)   _Budget: spent and reserved nano-dollars, {ticket id: (amount, expiry)}

Reservations expire ``reservation_ttl`` after admission (an expired budget reservation is remembered so
that a late settle still counts its cost once). Idle state is swept once a minute.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from lockgate.limits.base import (
    BUDGET_GRACE,
    DEFAULT_RESERVATION_TTL,
    NANO,
    RATE_WINDOW,
    Admission,
    Ask,
    Kind,
    Limit,
    Ticket,
    headroom,
    to_nano,
)

__all__ = ["LocalLimiter"]

SWEEP_EVERY = 60.0


class _Rate:
    """Per-second buckets ``[second, amount]`` in ascending order, and their total."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
        self.total = 0

    def used(self, second: int) -> int:
        buckets = self.buckets
        while buckets and buckets[0][0] <= second - RATE_WINDOW:
            self.total -= buckets.popleft()[1]
        return self.total

    def add(self, second: int, amount: int) -> None:
        buckets = self.buckets
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += amount
        elif not buckets or buckets[-1][0] < second:
            buckets.append([second, amount])
        else:  # an earlier second than the newest bucket (a clock that went back): keep the order
            seconds = [b[0] for b in buckets]
            i = bisect.bisect_left(seconds, second)
            if i < len(buckets) and buckets[i][0] == second:
                buckets[i][1] += amount
            else:
                buckets.insert(i, [second, amount])
        self.total += amount

    def adjust(self, second: int, delta: int, now_second: int) -> None:
        """Change the bucket of ``second`` by ``delta`` if it is still in the window (never recreate it)."""
        if second <= now_second - RATE_WINDOW:
            return
        for bucket in reversed(self.buckets):
            if bucket[0] == second:
                bucket[1] += delta
                self.total += delta
                return
            if bucket[0] < second:
                return

    def retry_after(self, limit: Limit, t: float) -> float:
        """Seconds until enough buckets have left the window for one more request to fit."""
        remaining = self.total
        for second, amount in self.buckets:
            remaining -= amount
            if fits(limit, remaining):
                return max(0.0, second + RATE_WINDOW - t)
        return float(RATE_WINDOW)


def fits(limit: Limit, used: int) -> bool:
    """Whether one more request fits a rate limit that has ``used`` (rpm: one more; tpm: room left at all)."""
    return used + 1 <= limit.limit if limit.kind == "rpm" else used < limit.limit


@dataclass(slots=True)
class _Budget:
    spent: int
    end: float  # the window's end (inf for a lifetime budget); the state is dropped BUDGET_GRACE after it
    touched: float
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # ticket id -> (nano, expiry)
    expired: set[str] = field(default_factory=set)  # tickets whose hold expired unsettled

    def reclaim(self, t: float, everything: bool = False) -> None:
        """Drop expired holds: from the oldest while expired, or (``everything``) all of them."""
        for tid, (amount, expiry) in list(self.holds.items()):
            if expiry > t:
                if everything:
                    continue
                return
            del self.holds[tid]
            self.reserved -= amount
            self.expired.add(tid)


def _reclaim_slots(slots: dict[str, float], t: float, everything: bool = False) -> None:
    for tid, expiry in list(slots.items()):
        if expiry > t:
            if everything:
                continue
            return
        del slots[tid]


class LocalLimiter:
    def __init__(self, *, reservation_ttl: float = DEFAULT_RESERVATION_TTL) -> None:
        self._ttl = reservation_ttl
        self._rates: dict[tuple[str, Kind], _Rate] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._budgets: dict[tuple[str, str, int], _Budget] = {}
        self._swept = 0.0
        self._ids = itertools.count(1)

    # --- the interface --------------------------------------------------------------------------------

    async def admit(self, ask: Ask, now: float | None = None) -> Admission:
        return self.admit_now(ask, now)

    async def settle(self, ticket: Ticket, tokens: int, cost: float, now: float | None = None) -> None:
        self.settle_now(ticket, tokens, cost, now)

    async def seed(self, limit: Limit, spent: float, now: float | None = None) -> None:
        t = time.time() if now is None else now
        key, end = _budget_key(limit, t)
        if key not in self._budgets:
            self._budgets[key] = _Budget(spent=to_nano(spent), end=end, touched=t)

    async def spent(self, limit: Limit, now: float | None = None) -> float:
        budget = self._budgets.get(_budget_key(limit, time.time() if now is None else now)[0])
        return 0.0 if budget is None else budget.spent / NANO

    async def close(self) -> None:
        pass

    # --- synchronous steps (also called by RedisLimiter in degraded mode) ---------------------------------

    def admit_now(self, ask: Ask, now: float | None = None, *, degraded: bool = False) -> Admission:
        t = time.time() if now is None else now
        second = int(t // 1)
        cost = to_nano(ask.cost)
        if t - self._swept >= SWEEP_EVERY:
            self._sweep(t)
        used: list[int] = []
        keys: list[tuple[str, str, int] | None] = []
        cold: list[Limit] = []
        for limit in ask.limits:
            key = None
            if limit.kind == "rpm" or limit.kind == "tpm":
                rate = self._rates.get((limit.scope, limit.kind))
                n = 0 if rate is None else rate.used(second)
                if not fits(limit, n):
                    retry = float(RATE_WINDOW) if rate is None else rate.retry_after(limit, t)
                    return _refused(limit, retry, cold, degraded)
            elif limit.kind == "parallel":
                slots = self._slots.get(limit.scope)
                n = 0
                if slots:
                    _reclaim_slots(slots, t)
                    if len(slots) + 1 > limit.limit:
                        _reclaim_slots(slots, t, everything=True)
                    n = len(slots)
                if n + 1 > limit.limit:
                    return _refused(limit, None, cold, degraded)
            else:
                key, end = _budget_key(limit, t)
                budget = self._budgets.get(key)
                if budget is None:
                    cold.append(limit)
                    n = 0
                else:
                    budget.reclaim(t)
                    ceiling = to_nano(limit.limit)
                    if budget.spent + budget.reserved + cost > ceiling:
                        budget.reclaim(t, everything=True)
                    n = budget.spent + budget.reserved
                    if n + cost > ceiling:
                        return _refused(limit, None if end == float("inf") else end - t, cold, degraded)
            used.append(n)
            keys.append(key)
        if cold:
            return Admission(False, None, None, {}, None, tuple(cold), degraded)
        return self._count(ask, now, t, second, cost, used, keys, degraded)

    def _count(
        self,
        ask: Ask,
        now: float | None,
        t: float,
        second: int,
        cost: int,
        used: list[int],
        keys: list[tuple[str, str, int] | None],
        degraded: bool,
    ) -> Admission:
        tid = str(next(self._ids))
        expiry = t + self._ttl
        remaining: dict[tuple[str, Kind], float] = {}
        settles: list[Limit] = []
        starts: list[int] = []
        for limit, n, key in zip(ask.limits, used, keys, strict=True):
            if limit.kind == "rpm" or limit.kind == "tpm":
                rate = self._rates.get((limit.scope, limit.kind))
                if rate is None:
                    rate = self._rates[(limit.scope, limit.kind)] = _Rate()
                rate.add(second, 1 if limit.kind == "rpm" else ask.tokens)
                remaining[(limit.scope, limit.kind)] = headroom(limit, n, ask.tokens, cost)
            elif limit.kind == "parallel":
                self._slots.setdefault(limit.scope, {})[tid] = expiry
            else:
                assert key is not None
                budget = self._budgets[key]
                budget.reserved += cost
                budget.holds[tid] = (cost, expiry)
                budget.touched = t
                remaining[(limit.scope, limit.kind)] = headroom(limit, n, ask.tokens, cost)
            if limit.kind != "rpm":
                settles.append(limit)
                starts.append(key[2] if key is not None else 0)
        ticket = Ticket(
            id=tid,
            request_id=ask.request_id,
            limits=tuple(settles),
            starts=tuple(starts),
            second=second,
            tokens=ask.tokens,
            cost=cost,
            now=now,
            local=True,
        )
        return Admission(True, None, None, remaining, ticket, (), degraded)

    def settle_now(self, ticket: Ticket, tokens: int, cost: float, now: float | None = None) -> None:
        if ticket.settled:
            return
        ticket.settled = True
        t = now if now is not None else ticket.now if ticket.now is not None else time.time()
        nano = to_nano(cost)
        for limit, start in zip(ticket.limits, ticket.starts, strict=True):
            if limit.kind == "tpm":
                rate = self._rates.get((limit.scope, "tpm"))
                if rate is not None:
                    rate.adjust(ticket.second, tokens - ticket.tokens, int(t // 1))
            elif limit.kind == "parallel":
                slots = self._slots.get(limit.scope)
                if slots is not None:
                    slots.pop(ticket.id, None)
            elif limit.kind == "budget":
                budget = self._budgets.get((limit.scope, _window_id(limit), start))
                if budget is None:
                    continue  # the window is gone: the store's spend is the record, the next admit seeds
                hold = budget.holds.pop(ticket.id, None)
                if hold is not None:
                    budget.reserved -= hold[0]
                elif ticket.id in budget.expired:
                    budget.expired.discard(ticket.id)
                else:
                    continue
                budget.spent += nano

    def _sweep(self, t: float) -> None:
        """Forget idle state: empty rate windows and slot maps, budget windows past their grace."""
        self._swept = t
        second = int(t // 1)
        for rate_key, rate in list(self._rates.items()):
            if rate.used(second) == 0 and not rate.buckets:
                del self._rates[rate_key]
        for scope, slots in list(self._slots.items()):
            _reclaim_slots(slots, t, everything=True)
            if not slots:
                del self._slots[scope]
        for key, budget in list(self._budgets.items()):
            budget.reclaim(t, everything=True)
            idle = t - budget.touched > BUDGET_GRACE if budget.end == float("inf") else t > budget.end + BUDGET_GRACE
            if idle and not budget.holds:
                del self._budgets[key]


def _window_id(limit: Limit) -> str:
    return "ever" if limit.window is None else limit.window.id


def _budget_key(limit: Limit, t: float) -> tuple[tuple[str, str, int], float]:
    """The budget state's key for ``t`` and the window's end (inf for a lifetime budget)."""
    if limit.window is None:
        return (limit.scope, "ever", 0), float("inf")
    start, end = limit.window.bounds_ms(t)
    return (limit.scope, limit.window.id, start), end / 1000


def _refused(limit: Limit, retry_after: float | None, cold: list[Limit], degraded: bool) -> Admission:
    remaining: dict[tuple[str, Kind], float] = {} if limit.kind == "parallel" else {(limit.scope, limit.kind): 0.0}
    return Admission(False, limit, retry_after, remaining, None, tuple(cold), degraded)
