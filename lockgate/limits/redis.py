"""RedisLimiter: limits shared by every gateway instance through one Redis, one Lua script call per step.

An admit is one EVALSHA of :data:`ADMIT` over every limit of the request (check all, then count all, or
count nothing); a settle is one EVALSHA of :data:`SETTLE`. Redis runs a script alone, so two instances'
checks and counts never interleave. The script reads the server's clock (``TIME``) unless a test injects
``now``. The calls made during one event-loop turn go out as one pipeline (:class:`_Batcher`): one write,
one round trip. Keys (all ``lockgate:``-prefixed; a scope is ids and key hashes, never a secret)::

    lockgate:rate:rpm:<scope>                       hash  second -> requests        expire 120 s after a write
    lockgate:rate:tpm:<scope>                       hash  second -> tokens
    lockgate:parallel:<scope>                       zset  ticket -> expiry (ms)     expires reservation_ttl after one
    lockgate:budget:<window id>:<start ms>:<scope>  hash  spent, reserved (nano-USD), r:<ticket> -> reserved,
                                                          x:<ticket> (reservation expired unsettled)
    lockgate:budget-holds:<same>                    zset  ticket -> expiry (ms)     both expire a day after the
                                                                                    window ends (lifetime: idle a day)
    lockgate:void:<ticket>                          string  an admit given up on    expires after 30 min

A budget window's start and end are computed here (calendar months are not Lua's business) from this
process's clock corrected by the server's (each reply carries the server time); the script refuses to count
when the server's clock is outside the window it was given, and the admit is recomputed at the server's time.

Degraded mode, when Redis errs or answers slower than ``timeout``: rate limits (rpm, tpm, parallel) are
enforced by an in-process :class:`LocalLimiter` with each limit divided by ``fallback_share`` (the number of
instances; rounded up, at least 1); budget limits are refused unless ``budgets_fail_open`` (then they are not
enforced); admissions say ``degraded=True``. One WARNING when entering, one INFO when recovering; while
degraded, Redis is tried again at most once per ``probe_every`` (1 s) by one admit, the others answered
locally at once. On recovery, in the background: settles that failed are replayed (bounded queue), and
admits that timed out are voided (:data:`VOID`: their parallel and budget reservations undone, or, if the
admit has not reached Redis yet, the marker stops it from counting at all).

Known limits: an admit that timed out but ran on the server keeps its rpm/tpm counts until they leave the
60 s window. Give the client no retries of its own (:meth:`RedisLimiter.from_url` does): a retried script
may count a request twice. One Redis, not Redis Cluster (a request's keys span hash slots).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import time
from collections import deque
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

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
from lockgate.limits.local import LocalLimiter

__all__ = ["ADMIT", "SEED", "SETTLE", "VOID", "RedisLimiter"]

log = logging.getLogger("lockgate.limits")

FAILURES = (RedisError, OSError, TimeoutError)
PENDING_MAX = 10_000  # failed settles and voids kept for replay
REPLAY_BATCH = 200
VOID_PREFIX = "lockgate:void:"
VOID_MIN_MS = 1_800_000  # a void marker outlives any delayed admit (TCP gives up retransmitting in ~15 min)
_CODE = {"rpm": "r", "tpm": "t", "parallel": "p", "budget": "b"}

# KEYS: the ticket's void marker, then per limit one key (rpm, tpm, parallel) or two (budget: hash, holds zset).
# ARGV: now ms ('' = server clock), ticket id, tokens, cost (nano), reservation ttl ms, and one string with, per
#       limit, "kind limit start end " (kind r t p b; limit in nano-USD for a budget; the budget window's start
#       and end ms, 0 0 for none): one argument rather than four per limit, as encoding arguments is most of
#       the client's cost.
# Reply: {1, t, used...} counted (used: what each limit had before this request);
#        {0, t, index of the refusing limit or 0, retry ms or -1, indexes of cold budgets...} nothing counted;
#        {2, t} a budget window given does not contain t: nothing counted, recompute the windows at t;
#        {3, t} the ticket was voided (its admit had timed out on the client): nothing counted.
ADMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {3, 0} end
local t
if ARGV[1] == '' then
  local now = redis.call('TIME')
  t = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
else
  t = tonumber(ARGV[1])
end
local s = math.floor(t / 1000)
local id, tokens, cost, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local specs = {}
for kind, lim, start, stop in string.gmatch(ARGV[6], '(%a) (%S+) (%S+) (%S+)') do
  specs[#specs + 1] = {kind, tonumber(lim), tonumber(start), tonumber(stop)}
end
local n = #specs
local used, first, cold = {}, {}, {}
local k = 2

local function fits(kind, lim, total)
  if kind == 'r' then return total + 1 <= lim end
  return total < lim
end

for i = 1, n do
  local kind, lim = specs[i][1], specs[i][2]
  local key = KEYS[k]
  first[i] = k
  if kind == 'r' or kind == 't' then
    k = k + 1
    local flat = redis.call('HGETALL', key)
    local total, stale, live = 0, {}, {}
    for j = 1, #flat, 2 do
      local sec = tonumber(flat[j])
      if sec <= s - 60 then
        stale[#stale + 1] = flat[j]
      else
        local amount = tonumber(flat[j + 1])
        total = total + amount
        live[#live + 1] = {sec, amount}
      end
    end
    if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
    if not fits(kind, lim, total) then
      table.sort(live, function(x, y) return x[1] < y[1] end)
      local retry, left = 60000, total
      for _, b in ipairs(live) do
        left = left - b[2]
        if fits(kind, lim, left) then retry = math.max(0, (b[1] + 60) * 1000 - t); break end
      end
      return {0, t, i, retry, unpack(cold)}
    end
    used[i] = total
  elseif kind == 'p' then
    k = k + 1
    redis.call('ZREMRANGEBYSCORE', key, '-inf', t)
    local busy = redis.call('ZCARD', key)
    if busy + 1 > lim then return {0, t, i, -1, unpack(cold)} end
    used[i] = busy
  else
    local holds = KEYS[k + 1]
    k = k + 2
    local start, stop = specs[i][3], specs[i][4]
    if stop > 0 and (t < start or t >= stop) then return {2, t} end
    local spent = redis.call('HGET', key, 'spent')
    if not spent then
      cold[#cold + 1] = i
      used[i] = 0
    else
      local gone = redis.call('ZRANGEBYSCORE', holds, '-inf', t)
      if #gone > 0 then
        for _, tid in ipairs(gone) do
          local amount = tonumber(redis.call('HGET', key, 'r:' .. tid) or '0')
          redis.call('HINCRBY', key, 'reserved', string.format('%d', -amount))
          redis.call('HDEL', key, 'r:' .. tid)
          redis.call('HSET', key, 'x:' .. tid, '1')
        end
        redis.call('ZREMRANGEBYSCORE', holds, '-inf', t)
      end
      local total = tonumber(spent) + tonumber(redis.call('HGET', key, 'reserved') or '0')
      if total + cost > lim then
        local retry = -1
        if stop > 0 then retry = stop - t end
        return {0, t, i, retry, unpack(cold)}
      end
      used[i] = total
    end
  end
end
if #cold > 0 then return {0, t, 0, -1, unpack(cold)} end

local second = string.format('%d', s)
local expiry = string.format('%d', t + ttl)
for i = 1, n do
  local kind = specs[i][1]
  local key = KEYS[first[i]]
  if kind == 'r' then
    redis.call('HINCRBY', key, second, 1)
    redis.call('PEXPIRE', key, 120000)
  elseif kind == 't' then
    redis.call('HINCRBY', key, second, ARGV[3])
    redis.call('PEXPIRE', key, 120000)
  elseif kind == 'p' then
    redis.call('ZADD', key, expiry, id)
    redis.call('PEXPIRE', key, ttl)
  else
    local holds = KEYS[first[i] + 1]
    local stop = specs[i][4]
    local life = 86400000
    if stop > 0 then life = stop - t + 86400000 end
    redis.call('HINCRBY', key, 'reserved', ARGV[4])
    redis.call('HSET', key, 'r:' .. id, ARGV[4])
    redis.call('ZADD', holds, expiry, id)
    redis.call('PEXPIRE', key, life)
    redis.call('PEXPIRE', holds, life)
  end
end
return {1, t, unpack(used)}
"""

# KEYS: per settled limit one key (tpm, parallel) or two (budget: hash, holds zset).
# ARGV: now ms ('' = server clock), ticket id, admission second, tokens delta (real - reserved), cost (nano),
#       and the limits' kinds as one string (t p b, e.g. "tpbb").
# A budget's cost is added once: if its reservation is still held, or had expired unsettled (x:<ticket>);
# a window whose counters are gone is left alone (the next admit finds it cold and seeds it from the store).
SETTLE = """
local t
if ARGV[1] == '' then
  local now = redis.call('TIME')
  t = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
else
  t = tonumber(ARGV[1])
end
local s = math.floor(t / 1000)
local id, at = ARGV[2], tonumber(ARGV[3])
local k = 1
for i = 1, #ARGV[6] do
  local kind = string.sub(ARGV[6], i, i)
  if kind == 't' then
    local key = KEYS[k]
    k = k + 1
    if at > s - 60 and redis.call('HEXISTS', key, ARGV[3]) == 1 then
      redis.call('HINCRBY', key, ARGV[3], ARGV[4])
    end
  elseif kind == 'p' then
    redis.call('ZREM', KEYS[k], id)
    k = k + 1
  else
    local key, holds = KEYS[k], KEYS[k + 1]
    k = k + 2
    if redis.call('HEXISTS', key, 'spent') == 1 then
      local count = false
      if redis.call('ZREM', holds, id) == 1 then
        local amount = tonumber(redis.call('HGET', key, 'r:' .. id) or '0')
        redis.call('HINCRBY', key, 'reserved', string.format('%d', -amount))
        redis.call('HDEL', key, 'r:' .. id)
        count = true
      elseif redis.call('HDEL', key, 'x:' .. id) == 1 then
        count = true
      end
      if count then redis.call('HINCRBY', key, 'spent', ARGV[5]) end
    end
  end
end
return 1
"""

# KEYS: the budget hash. ARGV: spent (nano), lifetime ms. 1 if seeded, 0 if the window already had a spend.
SEED = """
if redis.call('HSETNX', KEYS[1], 'spent', ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


# KEYS: the ticket's void marker, then per parallel limit its key, per budget its hash and holds.
# ARGV: ticket id, marker lifetime ms, the limits' kinds as one string (p b). Undoes the reservations of an admit the
# client gave up on, whether it ran or not (the marker stops it if it arrives later); rate buckets expire.
VOID = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
local k = 2
for i = 1, #ARGV[3] do
  if string.sub(ARGV[3], i, i) == 'p' then
    redis.call('ZREM', KEYS[k], ARGV[1])
    k = k + 1
  else
    local key, holds = KEYS[k], KEYS[k + 1]
    k = k + 2
    if redis.call('ZREM', holds, ARGV[1]) == 1 and redis.call('HEXISTS', key, 'spent') == 1 then
      local amount = tonumber(redis.call('HGET', key, 'r:' .. ARGV[1]) or '0')
      redis.call('HINCRBY', key, 'reserved', string.format('%d', -amount))
      redis.call('HDEL', key, 'r:' .. ARGV[1])
    end
    redis.call('HDEL', key, 'x:' .. ARGV[1])
  end
end
return 1
"""


class _Script:
    """A constant Lua script, run by EVALSHA (by EVAL when the server does not have it yet)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


_ADMIT, _SETTLE, _SEED, _VOID = _Script(ADMIT), _Script(SETTLE), _Script(SEED), _Script(VOID)
Call = tuple[_Script, list[str], list[str]]  # a script, its keys, its arguments


def _function(name: str, body: str) -> str:
    """A script's text as a local Lua function of its own KEYS and ARGV (its top-level returns become the
    function's)."""
    return f"local function {name}(KEYS, ARGV)\n{body}\nend\n"


# Several calls in one script run: ARGV[1] is "<code> <nkeys> <nargs> " per call (codes a s d v), then every
# call's arguments in order; KEYS every call's keys in order. Reply: each call's reply, in order. One reply to
# parse per event-loop turn, not one per call; Redis runs the whole batch atomically.
BATCH = (
    _function("admit", ADMIT)
    + _function("settle", SETTLE)
    + _function("seed", SEED)
    + _function("void", VOID)
    + """
local run = {a = admit, s = settle, d = seed, v = void}
local out, ki, ai = {}, 1, 2
for code, nk, na in string.gmatch(ARGV[1], '(%a) (%d+) (%d+)') do
  nk, na = tonumber(nk), tonumber(na)
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = KEYS[ki + j - 1] end
  for j = 1, na do args[j] = ARGV[ai + j - 1] end
  ki, ai = ki + nk, ai + na
  out[#out + 1] = run[code](keys, args)
end
return out
"""
)
_BATCH = _Script(BATCH)
_CODES = {id(_ADMIT): "a", id(_SETTLE): "s", id(_SEED): "d", id(_VOID): "v"}


class _Batcher:
    """Sends the script calls made during one event-loop turn to Redis as one pipeline: one write and one
    round trip for all of them (Redis still runs each script alone). A caller that stops waiting (its
    timeout) does not stop the call."""

    def __init__(self, client: redis.asyncio.Redis, timeout: float | None = None) -> None:
        self._client = client
        self._timeout = timeout  # one timer for the whole batch: its callers need none of their own
        self._queue: list[tuple[Call, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def call(self, script: _Script, keys: list[str], args: list[str]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:  # the sender starts on the loop's next turn, with every call made until then
            task = loop.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        self._queue.append(((script, keys, args), future))
        return future

    async def _send(self) -> None:
        batch, self._queue = self._queue, []
        try:
            async with asyncio.timeout(self._timeout):
                results = await self._pipeline([call for call, _ in batch], load=False)
                missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
                if missing:  # a restarted or flushed server: EVAL loads the script
                    again = await self._pipeline([batch[i][0] for i in missing], load=True)
                    for i, result in zip(missing, again, strict=True):
                        results[i] = result
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (close): so are its callers
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _pipeline(self, calls: list[Call], *, load: bool) -> list[Any]:
        """The calls as one script run (BATCH) when there are several, else the one call's own script; packed
        by hand (redis-py's packing cost more CPU than everything else a governed request does). A NOSCRIPT
        reply is the result of the call(s) it stands for: the caller retries them with EVAL."""
        if len(calls) == 1:
            script, keys, args = calls[0]
            return [await self._roundtrip(_pack(b"EVAL" if load else b"EVALSHA", script.text if load else script.sha,
                                                keys, args))]  # fmt: skip
        header = "".join(f"{_CODES[id(script)]} {len(keys)} {len(args)} " for script, keys, args in calls)
        all_keys = [key for _, keys, _ in calls for key in keys]
        all_args = [header, *(arg for _, _, args in calls for arg in args)]
        data = _pack(b"EVAL" if load else b"EVALSHA", BATCH if load else _BATCH.sha, all_keys, all_args)
        reply = await self._roundtrip(data)
        if isinstance(reply, Exception):
            return [reply] * len(calls)
        return list(reply)

    async def _roundtrip(self, data: bytes) -> Any:
        """One packed command on one pooled connection: its reply, or the error reply as an exception object."""
        pool = self._client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(data, check_health=False)
            try:
                return await conn.read_response()
            except ResponseError as exc:
                return exc
        except BaseException:
            await conn.disconnect()  # the reply may still be on its way: never reuse the connection
            raise
        finally:
            await pool.release(conn)

    async def close(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)


def _pack(command: bytes, script: str, keys: list[str], args: list[str]) -> bytes:
    """One Redis command in RESP: ``command script numkeys key... arg...``."""
    parts = [script.encode(), str(len(keys)).encode(), *(k.encode() for k in keys), *(a.encode() for a in args)]
    out = [b"*%d\r\n$%d\r\n%s\r\n" % (len(parts) + 1, len(command), command)]
    out.extend(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
    return b"".join(out)


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
    ) -> None:
        self._redis = client  # owned: closed by close()
        self._batcher = _Batcher(client, timeout)
        self._instances = max(1, fallback_share)
        self._fail_open = budgets_fail_open
        self._timeout = timeout
        self._ttl_ms = round(reservation_ttl * 1000)
        self._void_ms = max(self._ttl_ms, VOID_MIN_MS)
        self._probe_every = probe_every
        self._local = LocalLimiter(reservation_ttl=reservation_ttl)
        self._degraded = False
        self._next_probe = 0.0
        self._offset = 0.0  # the server's clock minus ours, from the last reply
        self._bounds: dict[Window, tuple[int, int]] = {}  # the last budget window seen of each series
        self._pending: deque[Call] = deque()  # settles and voids that failed, replayed on recovery
        self._dropped = 0
        self._replay: asyncio.Task[None] | None = None

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

    # --- admit ----------------------------------------------------------------------------------------

    async def admit(self, ask: Ask, now: float | None = None) -> Admission:
        if not ask.limits:
            return Admission(True, None, None, {}, Ticket("", ask.request_id, (), (), 0, ask.tokens, 0, now))
        if self._degraded:
            clock = time.monotonic()
            if clock < self._next_probe:
                return self._fallback(ask, now)
            self._next_probe = clock + self._probe_every  # this admit probes; the others stay local meanwhile
        tid = os.urandom(12).hex()
        try:
            admission = await self._admit(ask, now, tid)  # each Redis call is bounded by the batcher's timer
        except FAILURES as exc:
            self._fail(exc)
            self._keep(self._void_call(ask, now, tid))  # it may still run: undo its reservations on recovery
            return self._fallback(ask, now)
        if self._degraded:
            self._recover()
        return admission

    async def _admit(self, ask: Ask, now: float | None, tid: str) -> Admission:
        cost = to_nano(ask.cost)
        at = now if now is not None else time.time() + self._offset
        for _ in range(3):
            starts: list[int] = []
            keys = [VOID_PREFIX + tid]
            specs: list[str] = []
            for limit in ask.limits:
                start, end = self._window(limit, at)
                starts.append(start)
                keys += _keys(limit, start)
                ceiling = to_nano(limit.limit) if limit.kind == "budget" else repr(float(limit.limit))
                specs.append(f"{_CODE[limit.kind]} {ceiling} {start} {end}")
            moment = "" if now is None else str(round(now * 1000))
            args = [moment, tid, str(ask.tokens), str(cost), str(self._ttl_ms), " ".join(specs)]
            reply = await self._batcher.call(_ADMIT, keys, args)
            if reply[0] == 3:
                raise RedisError("the admit's ticket was voided")
            t_ms = int(reply[1])
            if now is None:
                self._offset = t_ms / 1000 - time.time()
            if reply[0] != 2:
                break
            at = t_ms / 1000  # our clock and the server's disagree about a budget window: use the server's
        else:
            raise RedisError("budget window kept moving under the admit")
        if reply[0] == 0:
            return self._refusal(ask, reply)
        used = [int(n) for n in reply[2:]]
        remaining: dict[tuple[str, Kind], float] = {}
        settles: list[Limit] = []
        settle_starts: list[int] = []
        for limit, n, start in zip(ask.limits, used, starts, strict=True):
            if limit.kind != "parallel":
                remaining[(limit.scope, limit.kind)] = headroom(limit, n, ask.tokens, cost)
            if limit.kind != "rpm":
                settles.append(limit)
                settle_starts.append(start)
        ticket = Ticket(tid, ask.request_id, tuple(settles), tuple(settle_starts), t_ms // 1000, ask.tokens, cost, now)
        return Admission(True, None, None, remaining, ticket)

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
    def _refusal(ask: Ask, reply: list[Any]) -> Admission:
        index, retry_ms = int(reply[2]), int(reply[3])
        cold = tuple(ask.limits[int(i) - 1] for i in reply[4:])
        if index == 0:
            return Admission(False, None, None, {}, None, cold)
        denied = ask.limits[index - 1]
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

    def _void_call(self, ask: Ask, now: float | None, tid: str) -> Call:
        at = now if now is not None else time.time() + self._offset
        keys, kinds = [VOID_PREFIX + tid], ""
        for limit in ask.limits:
            if limit.kind == "parallel" or limit.kind == "budget":
                keys += _keys(limit, self._window(limit, at)[0])
                kinds += _CODE[limit.kind]
        return _VOID, keys, [tid, str(self._void_ms), kinds]

    # --- settle, seed, spent ----------------------------------------------------------------------------

    async def settle(self, ticket: Ticket, tokens: int, cost: float, now: float | None = None) -> None:
        try:
            if ticket.settled:
                return
            if ticket.local:
                self._local.settle_now(ticket, tokens, cost, now)
                return
            ticket.settled = True
            if not ticket.limits:
                return
            call = self._settle_call(ticket, tokens, to_nano(cost), now)
            if self._degraded and time.monotonic() < self._next_probe:
                self._keep(call)
                return
            try:
                await self._batcher.call(*call)  # bounded by the batcher's timer
            except FAILURES as exc:
                self._fail(exc)
                self._keep(call)
        except Exception:  # settle runs after the response: it must never fail the request
            log.exception("limits: settle failed")

    @staticmethod
    def _settle_call(ticket: Ticket, tokens: int, nano: int, now: float | None) -> Call:
        if now is None:
            now = ticket.now
        keys: list[str] = []
        args = ["" if now is None else str(round(now * 1000)), ticket.id, str(ticket.second)]
        args += [str(tokens - ticket.tokens), str(nano), "".join(_CODE[limit.kind] for limit in ticket.limits)]
        for limit, start in zip(ticket.limits, ticket.starts, strict=True):
            keys += _keys(limit, start)
        return _SETTLE, keys, args

    async def seed(self, limit: Limit, spent: float, now: float | None = None) -> None:
        at = now if now is not None else time.time() + self._offset
        start, end = self._window(limit, at)
        life = BUDGET_GRACE * 1000 + (end - round(at * 1000) if end else 0)
        try:
            await self._batcher.call(_SEED, _keys(limit, start)[:1], [str(to_nano(spent)), str(max(1000, life))])
        except FAILURES as exc:  # the admit that follows answers in degraded mode
            self._fail(exc)

    async def spent(self, limit: Limit, now: float | None = None) -> float:
        at = now if now is not None else time.time() + self._offset
        value = await self._redis.hget(_keys(limit, self._window(limit, at)[0])[0], "spent")
        return 0.0 if value is None else int(value) / NANO

    async def close(self) -> None:
        if self._replay is not None:
            self._replay.cancel()
            await asyncio.gather(self._replay, return_exceptions=True)
        await self._batcher.close()
        await self._redis.aclose()

    # --- degraded mode ----------------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if not self._degraded:
            self._degraded = True
            self._next_probe = time.monotonic() + self._probe_every
            log.warning(
                "limits: Redis unavailable (%s: %.200s); rate limits now per instance (1/%d of each), budgets %s",
                type(exc).__name__,
                exc,
                self._instances,
                "not enforced" if self._fail_open else "refused",
            )

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
            self._replay = asyncio.get_running_loop().create_task(self._replay_pending())

    async def _replay_pending(self) -> None:
        """Run the settles and voids that failed while Redis was unavailable, oldest first, a batch at a time."""
        while self._pending and not self._degraded:
            batch = [self._pending[i] for i in range(min(REPLAY_BATCH, len(self._pending)))]
            try:
                async with asyncio.timeout(max(self._timeout, 1.0)):
                    await asyncio.gather(*(self._batcher.call(*call) for call in batch))
            except FAILURES as exc:
                self._fail(exc)
                return
            for _ in batch:
                self._pending.popleft()
