"""Quota leases: slices of a shared limit's headroom that one process spends without asking Redis.

A lease is granted by the same ADMIT that admits a request (scripts.py), counted in Redis at once (rpm and tpm
units in the bucket of the grant's second, parallel slots as members, a budget reservation), and then spent
here: a request whose every limit has an open lease with room is admitted and settled in memory::

    Track   per limit (scope, kind): its current lease, the ADMIT on its way that asks for one (others wait
            for it), the rate of admissions (what a lease asks for: ``lease_seconds`` of it), the requests in
            flight (parallel: twice the most in flight lately)
    Group   the leases one ADMIT granted; open for ``lease_seconds`` (never past a budget window's end) or until
            one of them cannot take a request, then closed; once its requests in flight have settled, one SETTLE
            gives back what it did not use and replaces reservations by what was used (if they take long, one
            more SETTLE before that, after RETURN_AFTER, gives back what they do not hold)
    Lease   one limit's slice in a group, and what this process has done with it
    Single  an ADMIT that granted just its request (a small limit, or one near exhaustion): one SETTLE, as
            before leases
    Book    the tracks and groups of one limiter, and a reaper task that closes groups whose time is up

    room     rpm  grant - admitted               tpm     grant - estimates in flight - real tokens settled
             parallel  grant - in flight         budget  grant - estimates in flight - real cost settled
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from lockgate.limits.base import NANO, Limit, Ticket
from lockgate.limits.batcher import Call
from lockgate.limits.scripts import LEASE_PREFIX, SETTLE_SCRIPT

__all__ = ["OPEN", "PARALLEL_MAX", "Book", "Group", "Lease", "Single", "Track", "hold_slot", "want"]

OPEN, STOPPED, RETURNED, DONE = 0, 1, 2, 3  # a group's states (RETURNED: its unused part given back)
PARALLEL_MAX = 256  # slots asked for at once (each is a zset member)
RETURN_AFTER = 0.5  # seconds a closed group waits for its requests before giving back what they do not hold
SWEEP_EVERY = 60.0
_CODE = {"rpm": "r", "tpm": "t", "parallel": "p", "budget": "b"}


class Track:
    """What this process knows about one limit across its leases."""

    __slots__ = (
        "busy", "ceiling", "count", "current", "keys", "mark", "peak", "pending", "prefix", "rate", "seen", "value",
    )  # fmt: skip

    def __init__(self, t: float, mono: float) -> None:
        self.current: Lease | None = None  # the lease new admissions take from
        self.pending: asyncio.Future[Any] | None = None  # an ADMIT asking for a lease on this limit, on its way
        self.count = 0  # admissions since ``mark``
        self.mark = t  # the limiter's clock
        self.rate = 0.0  # admissions per second (smoothed)
        self.busy = 0  # requests in flight (parallel)
        self.peak = 0  # the most in flight at once since the last lease asked for (parallel)
        self.seen = mono
        self.value = -1.0  # the limit this describes (its value; -1: nothing yet)
        self.ceiling: float = 0  # the limit as counted: nano-USD for a budget
        self.prefix = ""  # "<code> <ceiling>", as ADMIT reads it
        self.keys: list[str] = []  # its Redis keys (a budget's depend on the window: see RedisLimiter)

    def describe(self, limit: Limit, ceiling: float, keys: list[str]) -> None:
        self.value, self.ceiling, self.keys = limit.limit, ceiling, keys
        self.prefix = f"{_CODE[limit.kind]} {ceiling if limit.kind == 'budget' else repr(float(limit.limit))}"


def want(track: Track, t: float, lease_seconds: float) -> int:
    """How many requests' worth of this limit to ask for: ``lease_seconds`` at the measured rate (at least 1).
    The rate is sampled over at least a fifth of ``lease_seconds``, so a burst at one instant asks for none."""
    if lease_seconds <= 0:
        return 1
    elapsed = t - track.mark
    if elapsed >= lease_seconds / 5:
        sample = track.count / elapsed
        track.rate = sample if track.rate == 0 else (track.rate + sample) / 2
        track.count, track.mark = 0, t
    elif elapsed < 0:  # a clock that went back
        track.count, track.mark = 0, t
    return max(1, min(10**9, round(track.rate * lease_seconds)))


class Group:
    """The leases one ADMIT granted, and how far Redis has been told about them."""

    __slots__ = ("clock", "created", "gid", "inflight", "leases", "mono_until", "seq", "state", "stopped", "until")

    def __init__(self, gid: str, until: float, mono_until: float, created: float, clock: float | None) -> None:
        self.gid = gid
        self.leases: list[Lease] = []
        self.until = until  # the limiter's clock: no admission at or after it
        self.mono_until = mono_until  # the same on the monotonic clock (the reaper's)
        self.created = created
        self.clock = clock  # the injected clock at the grant (tests), else None: Redis uses its own
        self.inflight = 0  # holds of requests not yet settled (or, during an ADMIT, not yet decided)
        self.state = STOPPED
        self.seq = 0
        self.stopped = created

    def settle_spec(self, final: bool) -> tuple[list[str], str]:
        """The keys and the per-limit argument of a SETTLE bringing Redis up to date (nothing for limits whose
        Redis state is already right)."""
        keys: list[str] = []
        specs: list[str] = []
        for index, lease in enumerate(self.leases, 1):
            spec = lease.spec(final)
            if spec is not None:
                keys += lease.keys
                specs.append(f"{lease.code} {index} {spec}")
        return keys, " ".join(specs)


def hold_slot(track: Track) -> None:
    track.busy += 1
    if track.busy > track.peak:
        track.peak = track.busy


class Single:
    """An ADMIT that granted nothing beyond its request and held no lease: settled by one SETTLE made from the
    ticket (no :class:`Group`, no :class:`Lease`: the common case for small limits costs no more than it did)."""

    __slots__ = ("codes", "gid", "indexes", "keys", "slots")

    def __init__(self, gid: str) -> None:
        self.gid = gid
        self.codes = ""  # the settled limits' codes (t p b)
        self.indexes: list[int] = []  # their positions in the ADMIT (1-based)
        self.keys: list[str] = []
        self.slots: list[Track] = []  # the parallel limits' tracks (their requests in flight)

    def spec(self, reserved: int, tokens: int, cost: int) -> str:
        parts = []
        for code, index in zip(self.codes, self.indexes, strict=True):
            if code == "t":
                parts.append(f"t {index} {tokens} 0")
            elif code == "p":
                parts.append(f"p {index} 0 1")
            else:
                parts.append(f"b {index} - {cost}")
        return " ".join(parts)

    def call(self, ticket: Ticket, tokens: int, cost: int, clock: float | None) -> Call | None:
        """The SETTLE of the ticket's request (None when it has nothing to settle: rpm only)."""
        for track in self.slots:
            track.busy -= 1
        if not self.codes:
            return None
        moment = "" if clock is None else str(round(clock * 1000))
        args = [moment, self.gid, "1", "1", self.spec(ticket.tokens, tokens, cost)]
        return SETTLE_SCRIPT, [LEASE_PREFIX + self.gid, *self.keys], args


class Lease:
    """One limit's slice, granted in a :class:`Group`."""

    __slots__ = (
        "actual", "base", "busy", "ceiling", "code", "est", "grant", "group", "keys", "limit", "present", "sent",
        "sent_spend", "start", "taken", "track",
    )  # fmt: skip

    def __init__(
        self, group: Group, limit: Limit, track: Track, grant: int, base: int, start: int, keys: list[str]
    ) -> None:
        self.group = group
        self.limit = limit
        self.code = _CODE[limit.kind]
        self.track = track
        self.grant = grant
        self.base = base  # what the limit had used (Redis' count) before the grant
        self.ceiling = track.ceiling
        self.start = start  # the budget window's start ms (0 otherwise)
        self.keys = keys
        self.taken = 0  # rpm: admitted
        self.est = 0  # tpm tokens / budget nano-USD reserved by requests in flight
        self.actual = 0  # tpm tokens / budget nano-USD used by settled requests
        self.busy = 0  # parallel: in flight
        self.present = grant  # parallel: slots Redis holds for this lease
        self.sent = grant  # rpm/tpm: units Redis holds for this lease; budget: nano-USD reserved
        self.sent_spend = 0  # budget: nano-USD added to the spend

    def fits(self, tokens: int, cost: int) -> bool:
        code = self.code
        if code == "r":
            return self.taken < self.grant
        if code == "p":
            return self.busy < self.grant
        return self.est + self.actual + (tokens if code == "t" else cost) <= self.grant

    def take(self, tokens: int, cost: int) -> float:
        """Count one admission; what the limit has left after it, as this process sees it (the grant's view
        of what was used, plus what was done here since)."""
        self.track.count += 1
        code = self.code
        if code == "r":
            left = self.ceiling - self.base - self.taken - 1
            self.taken += 1
            return float(left) if left > 0 else 0.0
        if code == "p":
            self.busy += 1
            hold_slot(self.track)
            return 0.0
        amount = tokens if code == "t" else cost
        left = self.ceiling - self.base - self.est - self.actual - amount
        self.est += amount
        if left <= 0:
            return 0.0
        return float(left) if code == "t" else left / NANO

    def untake(self, tokens: int, cost: int) -> None:
        """Undo :meth:`take` (the request was refused on another limit)."""
        code = self.code
        if code == "r":
            self.taken -= 1
        elif code == "p":
            self.busy -= 1
            self.track.busy -= 1
        else:
            self.est -= tokens if code == "t" else cost

    def settle(self, reserved_tokens: int, reserved_cost: int, tokens: int, cost: int) -> None:
        code = self.code
        if code == "p":
            self.busy -= 1
            self.track.busy -= 1
        elif code == "t":
            self.est -= reserved_tokens
            self.actual += tokens
        elif code == "b":
            self.est -= reserved_cost
            self.actual += cost

    def spec(self, final: bool) -> str | None:
        """This lease's part of a SETTLE ("a b", see scripts.py), or None when Redis already has it right."""
        code = self.code
        if code == "r" or code == "t":
            target = self.taken if code == "r" else self.est + self.actual
            if target == self.sent and (code == "r" or not final):  # a last tpm settle deletes the lease record
                return None
            self.sent = target
            return f"{target} 0"
        if code == "p":
            keep = 0 if final else self.busy
            if keep >= self.present:
                return None
            present, self.present = self.present, keep
            return f"{keep} {present}"
        reserve = 0 if final else self.est
        if not final and reserve == self.sent and self.actual == self.sent_spend:
            return None
        told = "-" if final and self.sent_spend == 0 else str(reserve)  # "-": no spend to look up
        self.sent, self.sent_spend = reserve, self.actual
        return f"{told} {self.actual}"


Send = Callable[[Call | None], None]


class Book:
    """One limiter's tracks and lease groups: groups closed when their time is up (a reaper task), and the
    SETTLEs that tell Redis about them, handed to ``send`` (which sends them, or keeps them for replay)."""

    def __init__(self, send: Send, lease_seconds: float, reservation_ttl: float) -> None:
        self.tracks: dict[tuple[str, str], Track] = {}  # by (scope, kind)
        self.groups: set[Group] = set()  # groups with a lease, until their last SETTLE
        self.now: float | None = None  # the last injected clock (tests): what the reaper's SETTLEs say
        self._send = send
        self._lease_seconds = lease_seconds
        self._ttl = reservation_ttl
        self._reaper: asyncio.Task[None] | None = None
        self._swept = time.monotonic()

    def open(self, group: Group) -> None:
        group.state = OPEN
        self.groups.add(group)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    def stop(self, group: Group, mono: float) -> None:
        """No more admissions under this group; tell Redis at once if nothing is in flight."""
        if group.state != OPEN:
            return
        group.state = STOPPED
        group.stopped = mono
        for lease in group.leases:
            if lease.track.current is lease:
                lease.track.current = None
        if group.inflight == 0:
            self._send(self.final(group))

    def stop_all(self) -> None:
        mono = time.monotonic()
        for group in list(self.groups):
            self.stop(group, mono)

    def unhold(self, group: Group) -> None:
        """A request held under the group is done with it (refused, or needs no settle)."""
        group.inflight -= 1
        if group.inflight == 0 and (group.state == STOPPED or group.state == RETURNED):
            self._send(self.final(group))

    def settle(self, ticket: Ticket, tokens: int, cost: int) -> list[Group]:
        """The ticket's request settled on its leases; the closed groups this leaves with nothing in flight."""
        finished: list[Group] = []
        for lease in ticket.leases:
            lease.settle(ticket.tokens, ticket.cost, tokens, cost)
            group = lease.group
            group.inflight -= 1
            closed = group.state == STOPPED or group.state == RETURNED
            if group.inflight == 0 and closed and group not in finished:
                finished.append(group)
        return finished

    def final(self, group: Group, clock: float | None = None) -> Call | None:
        """The group's last SETTLE (None when Redis already holds exactly what it used)."""
        group.state = DONE
        self.groups.discard(group)
        return self.settle_call(group, final=True, clock=clock)

    def settle_call(self, group: Group, final: bool, clock: float | None = None) -> Call | None:
        if clock is None and group.clock is not None:  # a test's clock: the latest it gave
            clock = max(group.clock, self.now or group.clock)
        keys, spec = group.settle_spec(final)
        if not spec:
            return None
        group.seq += 1
        moment = "" if clock is None else str(round(clock * 1000))
        args = [moment, group.gid, str(group.seq), "1" if final else "0", spec]
        return SETTLE_SCRIPT, [LEASE_PREFIX + group.gid, *keys], args

    def give_back(self, group: Group) -> None:
        """A closed group's SETTLE for what it holds beyond its requests in flight."""
        group.state = RETURNED
        self._send(self.settle_call(group, final=False))

    async def close(self) -> None:
        """Every group closed; what requests still in flight hold stays until they settle or it expires."""
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        mono = time.monotonic()
        for group in list(self.groups):
            self.stop(group, mono)
            if group.state == STOPPED:
                self.give_back(group)
            self.groups.discard(group)

    async def _reap(self) -> None:
        """Close groups whose time is up, give back what closed ones hold beyond their requests in flight, give
        up on requests never settled; forget idle limits."""
        every = max(0.02, self._lease_seconds / 2) if self._lease_seconds > 0 else 1.0
        while True:
            await asyncio.sleep(every)
            mono = time.monotonic()
            for group in list(self.groups):
                if group.state == OPEN and mono >= group.mono_until:
                    self.stop(group, mono)
                elif group.state == STOPPED and mono - group.stopped >= RETURN_AFTER:
                    self.give_back(group)
                if mono - group.created >= self._ttl:  # requests never settled: their reservations expire
                    self.stop(group, mono)
                    if group.state != DONE:
                        self._send(self.final(group))
            if mono - self._swept >= SWEEP_EVERY:
                self._swept = mono
                for key, track in list(self.tracks.items()):
                    idle = track.current is None and track.busy == 0 and mono - track.seen >= SWEEP_EVERY
                    if idle and (track.pending is None or track.pending.done()):
                        del self.tracks[key]
