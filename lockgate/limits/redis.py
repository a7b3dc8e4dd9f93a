"""RedisLimiter: limits shared by every gateway instance through one Redis, spent in process through leases.

A request whose limits all hold an open lease with room (leases.py) is admitted and settled in memory, with
no Redis call. Otherwise one EVALSHA of :data:`ADMIT` admits it over the limits without such a lease (check
all, then count all, or count nothing; those with a lease are held here meanwhile, and given back if Redis
refuses) and grants each a lease: ``min(want, floor(headroom / (4 x instances)))``, at least the request's
own need (``want``: about ``lease_seconds`` of this process's rate of admissions under the limit; one ADMIT
at a time asks for a lease on a limit, requests arriving meanwhile wait for it once). A lease group closes
after ``lease_seconds`` (default 0.25 s; sooner when one of its leases cannot take a request), and one
:data:`SETTLE`, once its requests have settled, gives back what it did not use and replaces reservations by
what was used (a closed group whose requests take long first gives back what they do not hold, after 0.5 s).
At a high rate a limit set costs a few Redis calls a second instead of two per request; a small limit, or one
near exhaustion, grants just the request, and behaves exactly as it did before leases. Redis runs a script
alone, so two instances' checks and counts never interleave; scripts read the server's clock (``TIME``)
unless a test injects ``now``. The calls made during one event-loop turn go out as one pipeline (batcher.py),
and the leases a batch grants are installed before any of its callers resumes. Keys (all
``lockgate:``-prefixed; a scope is ids and key hashes, never a secret)::

    lockgate:rate:rpm:<scope>                       hash  second -> requests        expire 120 s after a write
    lockgate:rate:tpm:<scope>                       hash  second -> tokens
    lockgate:parallel:<scope>                       zset  <group>:<n> -> expiry ms  expires reservation_ttl after one
    lockgate:budget:<window id>:<start ms>:<scope>  hash  spent, reserved (nano-USD), r:<group> -> reserved,
                                                          x:<group> (reservation expired unsettled),
                                                          p:<group> (spend added so far by a group)
    lockgate:budget-holds:<same>                    zset  group -> expiry (ms)      both expire a day after the
                                                                                    window ends (lifetime: idle a day)
    lockgate:lease:<group>                          string "<second> <seq> <c1>..." 120 s (reservation_ttl if it
                                                          (scripts.py)              holds slots); read and deleted
                                                                                    by the group's last SETTLE; a
                                                                                    VOID's tombstone "v": 30 min

Guarantees, as without leases: what is counted (grants, single requests) never exceeds a limit (each grant
is computed against counters that include every other grant); rpm and tpm are sliding 60 s windows of
per-second buckets (a lease's requests count in its grant's second: they leave the window up to
``lease_seconds`` early); a budget admits only while spent + reserved + estimate fits, so requests overspend
it only by what those admitted spend beyond their estimates; a lease never spans a budget window's end;
settles are idempotent and may be replayed in any order (SETTLE carries targets and a sequence number).

Degraded mode, when Redis errs or answers slower than ``timeout``: open leases close; rate limits (rpm, tpm,
parallel) are enforced by an in-process :class:`LocalLimiter` with each limit divided by ``fallback_share``
(the number of instances; rounded up, at least 1); budget limits are refused unless ``budgets_fail_open``
(then they are not enforced); admissions say ``degraded=True``. One WARNING when entering, one INFO when
recovering; while degraded, every admit is answered locally at once and settles are kept, and a background
task PINGs Redis once per ``probe_every`` (1 s; bounded by ``timeout``) until it answers. (Not an admit: the
admits answered locally while one waited for Redis made a burst that arrived as Redis came back count alone
on every instance, on top of what Redis counted.) On recovery, in the background: settles that failed are
replayed (bounded queue), and admits that timed out are voided (:data:`VOID`: all they counted undone, rpm
and tpm included, or, if the admit has not reached Redis yet, the tombstone stops it from counting at all).
What was counted locally never reaches Redis: in the minute around an outage a rate limit may admit up to
its limit in Redis plus ``ceil(limit / fallback_share)`` per instance locally (about twice the limit).
A restarted Redis is no outage: the batcher replaces a pooled connection its predecessor closed.

Known limits: what a lease holds is out of other instances' reach until it comes back: at most
1/(4 x instances) of a limit's headroom per instance and limit, back within ``lease_seconds`` + 0.5 s when
idle. So a burst that meets a limit all at once may see a few requests refused that would have fitted (and
fit again a moment later); over time the count is exact. Other instances learn a leased request's real
tokens and cost when its lease group closes, not at its settle. An instance that dies keeps its leases' rpm
and tpm units until they leave the 60 s window, its parallel slots and budget reservations until
``reservation_ttl`` (as with single requests), and the spend its open lease group had settled never reaches
Redis (the database has it: a window seeded again from the store counts it). Give the client no retries of
its own (:meth:`RedisLimiter.from_url` does): a retried ADMIT may count twice. One Redis, not Redis Cluster
(a request's keys span hash slots).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections import deque
from functools import partial
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from lockgate.limits.base import (
    BUDGET_GRACE,
    DEFAULT_RESERVATION_TTL,
    NANO,
    Admission,
    Ask,
    Kind,
    Limit,
    Ticket,
    Window,
    headroom,
    to_nano,
)
from lockgate.limits.batcher import Batcher, Call
from lockgate.limits.leases import PARALLEL_MAX, Book, Group, Lease, Single, Track, hold_slot, want
from lockgate.limits.local import LocalLimiter
from lockgate.limits.scripts import ADMIT, ADMIT_SCRIPT, LEASE_PREFIX, SEED, SEED_SCRIPT, SETTLE, VOID, VOID_SCRIPT

__all__ = ["ADMIT", "DEFAULT_LEASE_SECONDS", "SEED", "SETTLE", "VOID", "RedisLimiter"]

log = logging.getLogger("lockgate.limits")

FAILURES = (RedisError, OSError, TimeoutError)
PENDING_MAX = 10_000  # failed settles and voids kept for replay
REPLAY_BATCH = 200
VOID_MIN_MS = 1_800_000  # a tombstone outlives any delayed admit (TCP gives up retransmitting in ~15 min)
DEFAULT_LEASE_SECONDS = 0.25
SHARE = 4  # a lease takes at most 1/(SHARE x instances) of a limit's headroom
_CODE = {"rpm": "r", "tpm": "t", "parallel": "p", "budget": "b"}


def _keys(limit: Limit, start: int) -> list[str]:
    if limit.kind == "rpm" or limit.kind == "tpm":
        return [f"lockgate:rate:{limit.kind}:{limit.scope}"]
    if limit.kind == "parallel":
        return [f"lockgate:parallel:{limit.scope}"]
    name = f"{'ever' if limit.window is None else limit.window.id}:{start}:{limit.scope}"
    return [f"lockgate:budget:{name}", f"lockgate:budget-holds:{name}"]


def _share(limit: Limit, share: int) -> Limit:
    if share <= 1 or limit.limit == 0:
        return limit
    return Limit(limit.scope, limit.kind, max(1, math.ceil(limit.limit / share)), limit.window)


class _Attempt:
    """One ADMIT on its way: what its reply is applied to."""

    __slots__ = ("ask", "cost", "ends", "gid", "holds", "keys", "needs", "now", "remote", "starts", "tokens", "tracks")

    def __init__(self, ask: Ask, now: float | None, gid: str, tokens: int, cost: int) -> None:
        self.ask, self.now, self.gid, self.tokens, self.cost = ask, now, gid, tokens, cost
        self.holds: dict[int, tuple[Lease, float]] = {}  # limit index -> the lease held here, remaining
        self.remote: list[int] = []  # indexes of the limits asked of Redis
        self.needs: list[int] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.keys: list[list[str]] = []
        self.tracks: list[Track] = []


class RedisLimiter:
    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        fallback_share: int = 1,
        budgets_fail_open: bool = False,
        timeout: float = 0.1,
        reservation_ttl: float = DEFAULT_RESERVATION_TTL,
        probe_every: float = 1.0,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self._redis = client  # owned: closed by close()
        self._batcher = Batcher(client, timeout)
        self._instances = max(1, fallback_share)
        self._fail_open = budgets_fail_open
        self._timeout = timeout
        self._ttl = reservation_ttl
        self._ttl_ms = round(reservation_ttl * 1000)
        self._void_ms = max(self._ttl_ms, VOID_MIN_MS)
        self._probe_every = probe_every
        self._lease_seconds = max(0.0, lease_seconds)  # 0: no leases (every admit and settle asks Redis)
        self._share = str(SHARE * self._instances)
        self._ttl_arg, self._void_arg = str(self._ttl_ms), str(self._void_ms)
        self._local = LocalLimiter(reservation_ttl=reservation_ttl)
        self._degraded = False
        self._prober: asyncio.Task[None] | None = None  # while degraded: finds out when Redis is back
        self._closing = False
        self._offset = 0.0  # the server's clock minus ours, from the last reply
        self._bounds: dict[Window, tuple[int, int]] = {}  # the last budget window seen of each series
        self._pending: deque[Call] = deque()  # settles and voids that failed, replayed on recovery
        self._dropped = 0
        self._replay: asyncio.Task[None] | None = None
        self._book = Book(self._send, self._lease_seconds, reservation_ttl)
        self._tracks = self._book.tracks
        self._outgoing: set[asyncio.Future[Any]] = set()  # SETTLEs sent without a caller waiting
        self._ids = itertools.count(1)

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = 64, **options: Any) -> RedisLimiter:
        """A limiter with a client of its own: a pool that queues (rather than fails) when all ``max_connections``
        are busy, no client-side retries, socket timeouts near ``timeout``."""
        timeout = float(options.get("timeout", 0.1))
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=None,  # waiting for a connection is bounded by the limiter's own timeout
            socket_timeout=max(1.0, 10 * timeout),
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(redis.asyncio.Redis.from_pool(pool), **options)

    @property
    def degraded(self) -> bool:
        return self._degraded

    @property
    def script_calls(self) -> int:
        """Script calls sent to Redis so far (admits, settles, seeds, voids; a batch of n counts n)."""
        return self._batcher.calls

    @property
    def round_trips(self) -> int:
        return self._batcher.round_trips

    # --- admit ----------------------------------------------------------------------------------------

    async def admit(self, ask: Ask, now: float | None = None) -> Admission:
        if not ask.limits:
            return Admission(True, None, None, {}, Ticket("", ask.request_id, (), (), 0, ask.tokens, 0, now))
        if now is not None:
            self._book.now = now
        if self._degraded:  # answered here at once; the prober (not an admit) finds out when Redis is back
            return self._fallback(ask, now)
        admission = self._admit_leased(ask, now)
        if admission is not None:
            return admission
        try:
            return await self._acquire(ask, now)  # each Redis call is bounded by the batcher's timer
        except FAILURES as exc:
            self._fail(exc)
            return self._fallback(ask, now)

    def _admit_leased(self, ask: Ask, now: float | None) -> Admission | None:
        """The request admitted in memory when every limit has an open lease with room; else None."""
        t = now if now is not None else time.time() + self._offset
        mono = time.monotonic()
        tokens, cost = ask.tokens, to_nano(ask.cost)
        held: list[Lease] = []
        tracks = self._tracks
        for limit in ask.limits:
            track = tracks.get((limit.scope, limit.kind))
            lease = track.current if track is not None else None
            if lease is None:
                return None
            group = lease.group
            if t >= group.until or mono >= group.mono_until or not lease.fits(tokens, cost):
                return None
            granted = lease.limit
            if granted is not limit and (granted.limit != limit.limit or granted.window != limit.window):
                return None
            held.append(lease)
        return self._take(ask, now, held, tokens, cost)

    def _take(self, ask: Ask, now: float | None, held: list[Lease], tokens: int, cost: int) -> Admission:
        remaining: dict[tuple[str, Kind], float] = {}
        limits: list[Limit] = []
        leases: list[Lease] = []
        for limit, lease in zip(ask.limits, held, strict=True):
            left = lease.take(tokens, cost)
            if lease.code != "p":
                remaining[(limit.scope, limit.kind)] = left
            if lease.code != "r":
                limits.append(limit)
                leases.append(lease)
                lease.group.inflight += 1
        starts = tuple(lease.start for lease in leases)
        ticket = Ticket(str(next(self._ids)), ask.request_id, tuple(limits), starts, 0, tokens, cost, now,
                        leases=tuple(leases))  # fmt: skip
        return Admission(True, None, None, remaining, ticket)

    async def _acquire(self, ask: Ask, now: float | None) -> Admission:
        """Admit through Redis what has no lease with room here; hold the rest here meanwhile."""
        tokens, cost = ask.tokens, to_nano(ask.cost)
        waited = False
        admission: Admission | None = None
        for _ in range(4):
            t = now if now is not None else time.time() + self._offset
            held, remote, tracks, pending = self._split(ask, t, tokens, cost)
            if not remote:  # a lease arrived meanwhile
                return self._take(ask, now, [lease for lease in held if lease is not None], tokens, cost)
            if pending and not waited:  # another request is asking for a lease on the same limit: wait for it
                waited = True
                await asyncio.wait(pending)
                continue
            admission = await self._ask(ask, now, t, held, remote, tracks, tokens, cost)
            if admission.allowed or admission.denied is None:
                return admission
            denied = admission.denied  # refused: unless a lease on it has just arrived here
            track = self._tracks.get((denied.scope, denied.kind))
            lease = track.current if track is not None else None
            if lease is None or not self._usable(lease, denied, now, tokens, cost):
                return admission
        assert admission is not None
        return admission

    def _usable(self, lease: Lease, limit: Limit, now: float | None, tokens: int, cost: int) -> bool:
        t = now if now is not None else time.time() + self._offset
        group = lease.group
        open_ = t < group.until and time.monotonic() < group.mono_until
        return open_ and lease.fits(tokens, cost) and lease.limit == limit

    def _split(
        self, ask: Ask, t: float, tokens: int, cost: int
    ) -> tuple[list[Lease | None], list[int], list[Track], list[asyncio.Future[Any]]]:
        """Each limit's open lease with room (None where there is none); the indexes and tracks of those
        without, and the ADMITs on their way that ask for a lease on one of them. Leases found expired or too
        small are closed."""
        mono = time.monotonic()
        held: list[Lease | None] = []
        remote: list[int] = []
        tracks: list[Track] = []
        pending: list[asyncio.Future[Any]] = []
        for i, limit in enumerate(ask.limits):
            track = self._tracks.get((limit.scope, limit.kind))
            if track is None:
                track = self._tracks[(limit.scope, limit.kind)] = Track(t, mono)
            track.seen = mono
            lease = track.current
            if lease is not None:
                group = lease.group
                closed = t >= group.until or mono >= group.mono_until
                if closed or not lease.fits(tokens, cost) or lease.limit != limit:  # (a limit changed: a new lease)
                    self._book.stop(group, mono)
                    lease = None
            held.append(lease)
            if lease is None:
                remote.append(i)
                tracks.append(track)
                if track.pending is not None and not track.pending.done():
                    pending.append(track.pending)
        return held, remote, tracks, pending

    async def _ask(
        self, ask: Ask, now: float | None, t: float, held: list[Lease | None], remote: list[int],
        tracks: list[Track], tokens: int, cost: int,
    ) -> Admission:  # fmt: skip
        """One ADMIT (retried when a budget window moved): the admission, or Redis' refusal."""
        attempt = _Attempt(ask, now, os.urandom(12).hex(), tokens, cost)
        if len(remote) < len(held):
            for i, lease in enumerate(held):
                if lease is not None:
                    attempt.holds[i] = (lease, lease.take(tokens, cost))
                    lease.group.inflight += 1
        attempt.remote, attempt.tracks = remote, tracks
        amounts: list[str] = []  # "need want" per remote limit
        asking: list[Track] = []
        for i, track in zip(remote, tracks, strict=True):
            limit = ask.limits[i]
            if track.value != limit.limit:  # what does not change from one request to the next, once
                track.describe(limit, to_nano(limit.limit) if limit.kind == "budget" else limit.limit, _keys(limit, 0))
            need, wanted = self._want(limit, track, t, tokens, cost)
            if track.pending is not None and not track.pending.done():
                wanted = need  # one ADMIT at a time asks for a lease on a limit: the others just for their request
            attempt.needs.append(need)
            amounts.append(f"{need} {wanted}")
            if wanted > need:
                asking.append(track)
        kinds = "".join(track.prefix[0] for track in tracks)
        at = t
        void: Call | None = None
        try:
            for _ in range(3):
                keys, args = self._admit_call(attempt, at, amounts)
                void = VOID_SCRIPT, keys, [attempt.gid, self._void_arg, kinds]
                lost = partial(self._abandoned, attempt, void)
                future = self._batcher.call(ADMIT_SCRIPT, keys, args, partial(self._granted, attempt), lost)
                for track in asking:
                    track.pending = future
                try:
                    result = await future
                except asyncio.CancelledError:  # the request is gone: put right whatever the reply brought
                    if not future.cancelled():
                        lost(future.result() if future.exception() is None else future.exception())
                    raise
                if isinstance(result, Admission):
                    return result
                reply: list[Any] = result
                if reply[0] == 3:
                    raise RedisError("the admit's group was voided")
                t_ms = int(reply[1])
                if now is None:
                    self._offset = t_ms / 1000 - time.time()
                if reply[0] != 2:
                    break
                at = t_ms / 1000  # our clock and the server's disagree about a budget window: use the server's
            else:
                raise RedisError("budget window kept moving under the admit")
        except FAILURES:
            self._release(attempt)
            if void is not None:
                self._keep(void)  # it may still run: undo what it counts on recovery
            raise
        self._release(attempt)
        return self._refusal(ask, remote, reply)

    def _admit_call(self, attempt: _Attempt, at: float, amounts: list[str]) -> tuple[list[str], list[str]]:
        """The keys and arguments of the ADMIT (budget windows as of ``at``)."""
        keys = [LEASE_PREFIX + attempt.gid]
        parts: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        own_keys: list[list[str]] = []
        limits = attempt.ask.limits
        for i, track, amount in zip(attempt.remote, attempt.tracks, amounts, strict=True):
            limit = limits[i]
            if limit.window is None:
                start = end = 0
                own = track.keys
            else:
                start, end = self._window(limit, at)
                own = _keys(limit, start)
            starts.append(start)
            ends.append(end)
            own_keys.append(own)
            keys += own
            parts.append(f"{track.prefix} {start} {end} {amount}")
        attempt.starts, attempt.ends, attempt.keys = starts, ends, own_keys
        moment = "" if attempt.now is None else str(round(attempt.now * 1000))
        return keys, [moment, attempt.gid, self._ttl_arg, self._share, " ".join(parts)]

    def _want(self, limit: Limit, track: Track, t: float, tokens: int, cost: int) -> tuple[int, int]:
        """(need, want) of one limit: what the request needs, and the lease to ask for (at least the need)."""
        count = want(track, t, self._lease_seconds)
        kind = limit.kind
        if kind == "rpm":
            return 1, count
        if kind == "parallel":  # slots are reused: enough for twice the most in flight lately
            peak, track.peak = max(track.peak, track.busy), track.busy
            return 1, 1 if count <= 1 else min(PARALLEL_MAX, 2 * peak + 2)
        need = tokens if kind == "tpm" else cost
        return need, need if count <= 1 else max(need, count * max(need, 1))

    def _granted(self, attempt: _Attempt, reply: list[Any]) -> Admission | list[Any]:
        """An ADMIT's reply applied here, before any caller of its batch resumes: the new leases installed and
        the request's admission built; any other reply is left to the caller."""
        if reply[0] != 1:
            return reply
        t_ms = int(reply[1])
        now = attempt.now
        if now is None:
            self._offset = t_ms / 1000 - time.time()
        clock = now if now is not None else t_ms / 1000
        mono = time.monotonic()
        until = clock + self._lease_seconds
        for end in attempt.ends:
            if end:
                until = min(until, end / 1000)
        ask, tokens, cost = attempt.ask, attempt.tokens, attempt.cost
        needs = attempt.needs
        if not attempt.holds and all(int(reply[3 + 2 * j]) <= need for j, need in enumerate(needs)):
            return self._single(attempt, reply, t_ms)
        group = Group(attempt.gid, until, mono + (until - clock), mono, now)
        fresh: dict[int, Lease] = {}
        keep = False
        for j, i in enumerate(attempt.remote):
            limit = ask.limits[i]
            used, grant = int(reply[2 + 2 * j]), int(reply[3 + 2 * j])
            lease = fresh[i] = Lease(group, limit, attempt.tracks[j], grant, used, attempt.starts[j], attempt.keys[j])
            group.leases.append(lease)
            if grant > attempt.needs[j]:
                keep = True
        remaining: dict[tuple[str, Kind], float] = {}
        limits: list[Limit] = []
        leases: list[Lease] = []
        for i, limit in enumerate(ask.limits):
            if i in fresh:
                lease = fresh[i]
                left = lease.take(tokens, cost)
                if lease.code != "r":
                    group.inflight += 1
            else:
                lease, left = attempt.holds[i]
                if lease.code == "r":  # held only until now: nothing to settle
                    self._book.unhold(lease.group)
            if lease.code != "p":
                remaining[(limit.scope, limit.kind)] = left
            if lease.code != "r":
                limits.append(limit)
                leases.append(lease)
        attempt.holds = {}
        if keep and self._lease_seconds > 0:
            self._book.open(group)
            for j, i in enumerate(attempt.remote):
                lease = fresh[i]
                if lease.grant > attempt.needs[j]:
                    previous = lease.track.current
                    if previous is not None:
                        self._book.stop(previous.group, mono)
                    lease.track.current = lease
        starts = tuple(lease.start for lease in leases)
        ticket = Ticket(attempt.gid, ask.request_id, tuple(limits), starts, t_ms // 1000, tokens, cost, now,
                        leases=tuple(leases))  # fmt: skip
        return Admission(True, None, None, remaining, ticket)

    def _single(self, attempt: _Attempt, reply: list[Any], t_ms: int) -> Admission:
        """The admission of an ADMIT that counted just its request (see :class:`Single`)."""
        ask, tokens, cost = attempt.ask, attempt.tokens, attempt.cost
        single = Single(attempt.gid)
        remaining: dict[tuple[str, Kind], float] = {}
        limits: list[Limit] = []
        starts: list[int] = []
        for j, limit in enumerate(ask.limits):  # every limit was asked of Redis, in order
            track = attempt.tracks[j]
            track.count += 1
            kind = limit.kind
            if kind != "parallel":
                remaining[(limit.scope, kind)] = headroom(limit, int(reply[2 + 2 * j]), tokens, cost)
            else:
                hold_slot(track)
                single.slots.append(track)
            if kind != "rpm":
                limits.append(limit)
                starts.append(attempt.starts[j])
                single.codes += _CODE[kind]
                single.indexes.append(j + 1)
                single.keys += attempt.keys[j]
        ticket = Ticket(attempt.gid, ask.request_id, tuple(limits), tuple(starts), t_ms // 1000, tokens, cost,
                        attempt.now, leases=(single,))  # fmt: skip
        return Admission(True, None, None, remaining, ticket)

    def _release(self, attempt: _Attempt) -> None:
        """The leases held for a request that Redis did not admit, given back."""
        for lease, _ in attempt.holds.values():
            lease.untake(attempt.tokens, attempt.cost)
            lease.track.count -= 1
            self._book.unhold(lease.group)
        attempt.holds = {}

    def _abandoned(self, attempt: _Attempt, void: Call, outcome: Any) -> None:
        """The caller of an ADMIT went away (cancelled) before its reply: undo what the reply counted."""
        if isinstance(outcome, Admission) and outcome.ticket is not None:
            ticket = outcome.ticket
            ticket.settled = True
            if ticket.leases and isinstance(ticket.leases[0], Single):
                self._send(ticket.leases[0].call(ticket, 0, 0, attempt.now))
            else:
                for group in self._book.settle(ticket, 0, 0):
                    self._send(self._book.final(group, attempt.now))
            return
        if isinstance(outcome, FAILURES):
            self._keep(void)
        self._release(attempt)

    def _window(self, limit: Limit, at: float) -> tuple[int, int]:
        """The budget window containing ``at`` in ms ((0, 0) for a lifetime budget), remembered per series."""
        window = limit.window
        if window is None:
            return 0, 0
        known = self._bounds.get(window)
        at_ms = at * 1000
        if known is not None and known[0] <= at_ms < known[1]:
            return known
        if len(self._bounds) >= 10_000:
            self._bounds.clear()
        bounds = self._bounds[window] = window.bounds_ms(at)
        return bounds

    @staticmethod
    def _refusal(ask: Ask, remote: list[int], reply: list[Any]) -> Admission:
        index, retry_ms = int(reply[2]), int(reply[3])
        cold = tuple(ask.limits[remote[int(i) - 1]] for i in reply[4:])
        if index == 0:
            return Admission(False, None, None, {}, None, cold)
        denied = ask.limits[remote[index - 1]]
        remaining: dict[tuple[str, Kind], float] = {}
        if denied.kind != "parallel":
            remaining[(denied.scope, denied.kind)] = 0.0
        return Admission(False, denied, None if retry_ms < 0 else retry_ms / 1000, remaining, None, cold)

    def _fallback(self, ask: Ask, now: float | None) -> Admission:
        """The degraded answer: rate limits here at limit / fallback_share; budgets refused (or not enforced)."""
        budgets = [limit for limit in ask.limits if limit.kind == "budget"]
        if budgets and not self._fail_open:
            first = budgets[0]
            return Admission(False, first, 1.0, {(first.scope, "budget"): 0.0}, None, degraded=True)
        originals = [limit for limit in ask.limits if limit.kind != "budget"]
        shared = tuple(_share(limit, self._instances) for limit in originals)
        admission = self._local.admit_now(Ask(ask.request_id, shared, ask.tokens, ask.cost), now, degraded=True)
        if admission.denied is not None:
            admission.denied = originals[shared.index(admission.denied)]
        return admission

    # --- settle, seed, spent ----------------------------------------------------------------------------

    async def settle(self, ticket: Ticket, tokens: int, cost: float, now: float | None = None) -> None:
        try:
            if ticket.settled:
                return
            if ticket.local:
                self._local.settle_now(ticket, tokens, cost, now)
                return
            ticket.settled = True
            if not ticket.leases:
                return
            if now is not None:
                self._book.now = now
            clock = now if now is not None else ticket.now
            first, nano = ticket.leases[0], to_nano(cost)
            if isinstance(first, Single):
                calls: list[Call | None] = [first.call(ticket, tokens, nano, clock)]
            else:
                calls = [self._book.final(group, clock) for group in self._book.settle(ticket, tokens, nano)]
            futures: list[tuple[Call, asyncio.Future[Any]]] = []
            for call in calls:
                if call is None:
                    continue
                if self._degraded:
                    self._keep(call)
                else:
                    futures.append((call, self._batcher.call(*call)))  # all in one batch
            for call, future in futures:
                try:
                    await future  # bounded by the batcher's timer
                except FAILURES as exc:
                    self._fail(exc)
                    self._keep(call)
        except Exception:  # settle runs after the response: it must never fail the request
            log.exception("limits: settle failed")

    async def seed(self, limit: Limit, spent: float, now: float | None = None) -> None:
        at = now if now is not None else time.time() + self._offset
        start, end = self._window(limit, at)
        life = BUDGET_GRACE * 1000 + (end - round(at * 1000) if end else 0)
        try:
            await self._batcher.call(SEED_SCRIPT, _keys(limit, start)[:1], [str(to_nano(spent)), str(max(1000, life))])
        except FAILURES as exc:  # the admit that follows answers in degraded mode
            self._fail(exc)

    async def spent(self, limit: Limit, now: float | None = None) -> float:
        at = now if now is not None else time.time() + self._offset
        value = await self._redis.hget(_keys(limit, self._window(limit, at)[0])[0], "spent")
        return 0.0 if value is None else int(value) / NANO

    async def close(self) -> None:
        """Give back every lease (what requests still in flight hold expires with its reservation), then
        close the client."""
        self._closing = True
        await self._book.close()
        if self._outgoing and not self._degraded:
            try:
                async with asyncio.timeout(max(self._timeout, 1.0)):
                    await asyncio.gather(*self._outgoing, return_exceptions=True)
            except TimeoutError:
                pass
        for task in (self._replay, self._prober):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._batcher.close()
        await self._redis.aclose()

    # --- telling Redis without waiting ---------------------------------------------------------------

    def _send(self, call: Call | None) -> None:
        """A SETTLE nobody waits for: kept for replay if Redis is unavailable or fails it."""
        if call is None:
            return
        if self._degraded:
            self._keep(call)
            return
        future = self._batcher.call(*call)
        self._outgoing.add(future)
        future.add_done_callback(partial(self._sent, call))

    def _sent(self, call: Call, future: asyncio.Future[Any]) -> None:
        self._outgoing.discard(future)
        if future.cancelled():
            self._keep(call)
            return
        exc = future.exception()
        if exc is None:
            return
        if isinstance(exc, FAILURES):
            self._fail(exc)
            self._keep(call)
        else:  # pragma: no cover - a script error: a bug
            log.error("limits: a lease settle failed: %s", exc)

    # --- degraded mode ----------------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if not self._degraded:
            self._degraded = True
            if not self._closing and (self._prober is None or self._prober.done()):
                self._prober = asyncio.get_running_loop().create_task(self._probe())
            log.warning(
                "limits: Redis unavailable (%s: %.200s); rate limits now per instance (1/%d of each), budgets %s",
                type(exc).__name__,
                exc,
                self._instances,
                "not enforced" if self._fail_open else "refused",
            )
            self._book.stop_all()  # the shared counters are out of reach: no more admitting on leases

    async def _probe(self) -> None:
        """While degraded: a PING once per ``probe_every`` (bounded by the timeout) until Redis answers, then
        shared counting again. Not an admit: while one waited for Redis, every other admit was answered here,
        so a burst arriving as Redis came back was counted alone (each instance its whole share, on top of what
        Redis counted) for as long as that admit took to come back; and a probe that met a connection the
        restarted server's predecessor had left in the pool failed, and kept the limiter degraded a second more."""
        while self._degraded:
            await asyncio.sleep(self._probe_every)
            try:
                await self._batcher.ping()
            except FAILURES:
                continue
            except Exception:  # pragma: no cover - keep probing whatever the client raises
                log.exception("limits: probing Redis failed")
                continue
            if self._degraded:
                self._recover()

    def _keep(self, call: Call) -> None:
        if len(self._pending) >= PENDING_MAX:
            self._pending.popleft()
            self._dropped += 1
        self._pending.append(call)

    def _recover(self) -> None:
        self._degraded = False
        log.info("limits: Redis reachable again; shared limits restored (%d settles to replay)", len(self._pending))
        if self._dropped:
            log.warning("limits: %d settles were dropped while Redis was unavailable", self._dropped)
            self._dropped = 0
        if self._pending and (self._replay is None or self._replay.done()):
            first = self._replay_batch()  # sent before any admit made after this one
            self._replay = asyncio.get_running_loop().create_task(self._replay_pending(first))

    def _replay_batch(self) -> list[asyncio.Future[Any]]:
        count = min(REPLAY_BATCH, len(self._pending))
        return [self._batcher.call(*self._pending[i]) for i in range(count)]

    async def _replay_pending(self, batch: list[asyncio.Future[Any]]) -> None:
        """Run the settles and voids that failed while Redis was unavailable, oldest first, a batch at a time."""
        while batch:
            try:
                async with asyncio.timeout(max(self._timeout, 1.0)):
                    results = await asyncio.gather(*batch, return_exceptions=True)
            except TimeoutError as exc:
                self._fail(exc)
                return
            failed = next((result for result in results if isinstance(result, FAILURES)), None)
            if failed is not None:
                self._fail(failed)
                return
            for _ in batch:
                self._pending.popleft()
            if not self._pending or self._degraded:
                return
            batch = self._replay_batch()
