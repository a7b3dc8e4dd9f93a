"""The limiter seam: what a request asks for, what the limiter answers, and the interface both backends keep.

The request pipeline calls a :class:`Limiter` twice per request::

    admission = await limiter.admit(Ask(request_id, limits, tokens=estimate, cost=estimate))
    if admission.cold:                     # a budget window the backend has no spend for yet
        for limit in admission.cold: await limiter.seed(limit, spend_from_the_database)
        admission = await limiter.admit(...)          # once
    if not admission.allowed: 429 naming admission.denied, Retry-After: admission.retry_after
    ... upstream call ...
    await limiter.settle(admission.ticket, tokens=real_tokens, cost=real_cost)   # never raises

Kinds of limit (:data:`Kind`):

    rpm       requests per sliding 60 s (per-second buckets; any 60 s span admits at most ``limit``)
    tpm       tokens per sliding 60 s; admits while used + reserved < limit; the estimate is reserved in the
              bucket of admission time and replaced by the real count at settle
    parallel  requests in flight; released at settle
    budget    USD spent in a :class:`Window` (or ever, ``window=None``); admits only if
              spent + reserved + cost <= limit; the estimate is reserved and replaced by the real cost

Money is counted in integer nano-dollars (:func:`to_nano`) in both backends, so budget comparisons are exact
integer comparisons (no float tolerance needed) and identical in Python and in Redis' Lua.

Backends: ``local.py`` (one process, also the degraded fallback) and ``redis.py`` (shared by every instance;
at a high rate it admits and settles in memory, on leases of each limit's headroom, see ``leases.py``).
Both pass ``tests/limits/test_contract.py``.
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

__all__ = [
    "NANO",
    "RATE_WINDOW",
    "Admission",
    "Ask",
    "Kind",
    "Limit",
    "Limiter",
    "Ticket",
    "Window",
    "headroom",
    "to_nano",
]

Kind = Literal["rpm", "tpm", "parallel", "budget"]
KINDS: frozenset[str] = frozenset({"rpm", "tpm", "parallel", "budget"})

NANO = 1_000_000_000  # nano-dollars per dollar
RATE_WINDOW = 60  # seconds in a rpm/tpm window
BUDGET_GRACE = 86_400  # seconds a budget window's counters outlive its end (late settles land in it)
DEFAULT_RESERVATION_TTL = 900.0


def to_nano(usd: float) -> int:
    """USD as integer nano-dollars (rounded to nearest): budgets compare exactly, in Python and in Lua."""
    return round(usd * NANO)


_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w|mo)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


@dataclass(frozen=True, slots=True)
class Window:
    """A budget period: ``duration`` ("30s", "10m", "1h", "1d", "7d", "1w", "30d", "1mo") anchored at an instant.

    Fixed durations tile time from ``anchor`` in steps of ``seconds``. Months are calendar months counted
    from the anchor's day and time, clamped to the month's length (anchored Jan 31: Jan 31 → Feb 28 →
    Mar 31 → Apr 30 ...), each boundary computed from the anchor, never chained.
    """

    duration: str  # normalised, e.g. "30d", "1mo"
    anchor: float  # epoch seconds (the entity's created_at or last budget reset)
    seconds: int = 0  # a fixed length, or 0 for calendar months
    months: int = 0

    @classmethod
    def parse(cls, duration: str, anchor: datetime) -> Window:
        """``duration`` as LiteLLM writes ``budget_duration``; a naive ``anchor`` is taken as UTC."""
        match = _DURATION.match(duration)
        if match is None or int(match.group(1)) <= 0:
            raise ValueError(f"not a budget duration: {duration!r} (expected e.g. 30s, 10m, 1h, 1d, 1w, 1mo)")
        count, unit = int(match.group(1)), match.group(2)
        if anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=UTC)
        if unit == "mo":
            return cls(f"{count}mo", anchor.timestamp(), months=count)
        return cls(f"{count}{unit}", anchor.timestamp(), seconds=count * _UNIT_SECONDS[unit])

    @property
    def id(self) -> str:
        """Names this window's series (duration and anchor) in a Redis key: ``"1d@1767225600000"``."""
        return f"{self.duration}@{round(self.anchor * 1000)}"

    def bounds(self, now: float) -> tuple[float, float]:
        """(start, end) in epoch seconds of the period containing ``now``: start <= now < end."""
        if self.seconds:
            k = math.floor((now - self.anchor) / self.seconds)
            return self.anchor + k * self.seconds, self.anchor + (k + 1) * self.seconds
        anchor = datetime.fromtimestamp(self.anchor, UTC)
        at = datetime.fromtimestamp(now, UTC)
        k = ((at.year - anchor.year) * 12 + at.month - anchor.month) // self.months
        while self._month(anchor, k) > at:
            k -= 1
        while self._month(anchor, k + 1) <= at:
            k += 1
        return self._month(anchor, k).timestamp(), self._month(anchor, k + 1).timestamp()

    def _month(self, anchor: datetime, k: int) -> datetime:
        year, month0 = divmod(anchor.month - 1 + k * self.months, 12)
        year += anchor.year
        day = min(anchor.day, calendar.monthrange(year, month0 + 1)[1])
        return anchor.replace(year=year, month=month0 + 1, day=day)

    def bounds_ms(self, now: float) -> tuple[int, int]:
        """:meth:`bounds` in integer milliseconds (what keys and the Lua script use)."""
        start, end = self.bounds(now)
        return round(start * 1000), round(end * 1000)


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str  # "key:<hash>", "team:<id>", "user:<id>", "org:<id>", "end_user:<id>", "key:<hash>:model:<name>", ...
    kind: Kind
    limit: float  # requests/min (rpm), tokens/min (tpm), requests in flight (parallel), USD (budget)
    window: Window | None = None  # budget only: the period the spend counts in (None: ever)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown limit kind {self.kind!r}")
        if self.window is not None and self.kind != "budget":
            raise ValueError("only a budget limit has a window")
        if not (self.limit >= 0 and math.isfinite(self.limit)):
            raise ValueError(f"a limit is a finite number >= 0, not {self.limit!r}")


@dataclass(frozen=True, slots=True)
class Ask:
    """What one request asks for. Each (scope, kind) appears at most once."""

    request_id: str
    limits: tuple[Limit, ...]
    tokens: int  # estimated tokens (the tpm reservation)
    cost: float  # estimated USD (the budget reservation)

    def __post_init__(self) -> None:
        if self.tokens < 0 or not self.cost >= 0:
            raise ValueError("tokens and cost are >= 0")
        if len({(limit.scope, limit.kind) for limit in self.limits}) != len(self.limits):
            raise ValueError("an Ask names each (scope, kind) once")


@dataclass(slots=True)
class Ticket:
    """What :meth:`Limiter.settle` needs to undo or replace an admission's reservations.

    ``limits`` are the admission's tpm, parallel and budget limits (rpm needs no settling); ``starts`` gives,
    for each, the budget window's start in ms at admission (0 otherwise): the cost counts in that window
    even when settled after it ended.
    """

    id: str
    request_id: str
    limits: tuple[Limit, ...]
    starts: tuple[int, ...]
    second: int  # the admission's second (its tpm bucket)
    tokens: int  # reserved tokens per tpm limit
    cost: int  # reserved nano-dollars per budget limit
    now: float | None = None  # the injected clock at admission (tests); settle then defaults to it
    local: bool = False  # issued by a LocalLimiter (a RedisLimiter's degraded mode settles it locally)
    settled: bool = False
    leases: tuple[Any, ...] = ()  # RedisLimiter: the lease each of ``limits`` was counted in (see leases.py)


@dataclass
class Admission:
    allowed: bool
    denied: Limit | None  # the first limit that refused
    # seconds until the denied limit frees up: rpm/tpm when enough of the window has passed; parallel None
    # (the caller uses 1); budget the seconds until the window ends (None for a lifetime budget)
    retry_after: float | None
    # (scope, kind) -> headroom after this request, for every rpm/tpm/budget limit (>= 0; USD for budgets);
    # on a refusal only the denied limit, at 0
    remaining: dict[tuple[str, Kind], float]
    ticket: Ticket | None  # to settle
    cold: tuple[Limit, ...] = ()  # budget limits whose window the backend holds no spend for yet (see seed)
    degraded: bool = False


def headroom(limit: Limit, used: int, tokens: int, cost: int) -> float:
    """What ``limit`` has left once a request that found ``used`` is counted (never below 0)."""
    if limit.kind == "rpm":
        return max(0.0, limit.limit - used - 1)
    if limit.kind == "tpm":
        return max(0.0, limit.limit - used - tokens)
    return max(0.0, (to_nano(limit.limit) - used - cost) / NANO)


class Limiter(Protocol):
    async def admit(self, ask: Ask, now: float | None = None) -> Admission:
        """One atomic step over all of ``ask.limits``: all counted, or none and the first refusal named."""
        ...

    async def settle(self, ticket: Ticket, tokens: int, cost: float, now: float | None = None) -> None:
        """Replace the reservations by the real ``tokens`` and ``cost``, release parallel slots; idempotent;
        never raises."""
        ...

    async def seed(self, limit: Limit, spent: float, now: float | None = None) -> None:
        """Set the spend of ``limit``'s current window unless the backend already has one (never overwrites)."""
        ...

    async def spent(self, limit: Limit, now: float | None = None) -> float:
        """USD settled in ``limit``'s current window (reservations not included)."""
        ...

    async def close(self) -> None: ...
