"""The Lua scripts :class:`~lockgate.limits.redis.RedisLimiter` runs in Redis, and BATCH that runs several at once.

    ADMIT   admit one request (check every limit, then count every limit, or count nothing) and grant a
            lease on each of its limits: a slice of the limit's headroom, at least the request's own need
    SETTLE  bring Redis up to date with a lease group: give back what it did not use, replace the tpm and
            budget reservations of its settled requests by what they used, release parallel slots
    SEED    set a cold budget window's spend (from the store) unless one is already there
    VOID    undo an ADMIT the client gave up on (timed out), whether it ran or not

Each ADMIT that counts writes a lease record ``lockgate:lease:<group id>``, a string of numbers
``"<second> <seq> <c1> <c2> ..."``: the second its rpm/tpm grants were counted in, the last SETTLE applied,
and per limit the amount it holds in its bucket (rpm, tpm) or its number of slots (parallel; 0 for a
budget). SETTLE carries targets, not deltas (what the group should hold now), so a replayed or reordered
SETTLE changes nothing: rate targets apply only with a newer sequence number, or, for the group's last
SETTLE, only to whoever deletes the record (GETDEL); parallel slots are removed by name; budget reservations
only go down and spends only up (``p:<group>`` in the budget hash is what the group has added to ``spent``).
VOID reads the record to take the grant's rpm/tpm units back out of their bucket and its slots, then leaves a
tombstone (``v``) that stops an ADMIT still on its way.
"""

from __future__ import annotations

import hashlib

__all__ = ["ADMIT", "BATCH", "LEASE_PREFIX", "SEED", "SETTLE", "VOID", "Script"]

LEASE_PREFIX = "lockgate:lease:"  # + group id: the lease record

# KEYS: the group's lease record, then per limit one key (rpm, tpm, parallel) or two (budget: hash, holds zset).
# ARGV: now ms ('' = server clock), group id, reservation ttl ms, share (4 x instances), and one string with, per
#       limit, "kind limit start end need want " (kind r t p b; limit, need and want in nano-USD for a budget; the
#       budget window's start and end ms, 0 0 for none): one argument rather than six per limit, as encoding
#       arguments is most of the client's cost.
# A limit admits the request as it always did (rpm: used + 1 <= limit; tpm: used < limit; parallel: busy + 1 <=
# limit; budget: spent + reserved + cost <= limit); its grant is min(want, floor(headroom / share)) but at least
# the request's need, so a small or nearly exhausted limit grants just the request (exact, as before a lease).
# Reply: {1, t, used, grant, used, grant...} counted (used: what each limit had before this request);
#        {0, t, index of the refusing limit or 0, retry ms or -1, indexes of cold budgets...} nothing counted;
#        {2, t} a budget window given does not contain t: nothing counted, recompute the windows at t;
#        {3, t} the group was voided (its admit had timed out on the client): nothing counted.
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
local id, ttl, share = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local specs = {}
for kind, lim, start, stop, need, want in string.gmatch(ARGV[5], '(%a) (%S+) (%S+) (%S+) (%S+) (%S+)') do
  specs[#specs + 1] = {kind, tonumber(lim), tonumber(start), tonumber(stop), tonumber(need), tonumber(want)}
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
      if total + specs[i][5] > lim then
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
local record, life = {second, '0'}, 120000
local out = {1, t}
for i = 1, n do
  local kind, lim, need, want = specs[i][1], specs[i][2], specs[i][5], specs[i][6]
  local key = KEYS[first[i]]
  local grant = math.min(want, math.floor((lim - used[i]) / share))
  if grant < need then grant = need end
  local amount = string.format('%d', grant)
  if kind == 'r' or kind == 't' then
    redis.call('HINCRBY', key, second, amount)
    redis.call('PEXPIRE', key, 120000)
    record[#record + 1] = amount
  elseif kind == 'p' then
    local slots = {}
    for m = 1, grant do
      slots[#slots + 1] = expiry
      slots[#slots + 1] = id .. ':' .. m
      if #slots >= 1000 then redis.call('ZADD', key, unpack(slots)); slots = {} end
    end
    if #slots > 0 then redis.call('ZADD', key, unpack(slots)) end
    redis.call('PEXPIRE', key, ttl)
    record[#record + 1] = amount
    life = math.max(life, ttl)
  else
    record[#record + 1] = '0'
    local holds = KEYS[first[i] + 1]
    local stop = specs[i][4]
    local keep = 86400000
    if stop > 0 then keep = stop - t + 86400000 end
    redis.call('HINCRBY', key, 'reserved', amount)
    redis.call('HSET', key, 'r:' .. id, amount)
    redis.call('ZADD', holds, expiry, id)
    redis.call('PEXPIRE', key, keep)
    redis.call('PEXPIRE', holds, keep)
  end
  out[#out + 1] = used[i]
  out[#out + 1] = grant
end
redis.call('SET', KEYS[1], table.concat(record, ' '), 'PX', life)
return out
"""

# KEYS: the group's lease record, then per limit named in ARGV[5] one key (rpm, tpm, parallel) or two (budget).
# ARGV: now ms ('' = server clock), group id, sequence number, '1' if this is the group's last settle else '0',
#       and one string with, per limit, "kind index a b ":
#         r/t  a = the units the group holds in its bucket now (rpm: requests admitted; tpm: real tokens of
#              settled requests + estimates of those in flight); b unused
#         p    a = slots still in use, b = slots the group held until now: slots a+1..b are released
#         b    a = nano-USD still reserved (estimates in flight; '-' in a last settle when no settle before
#              added spend), b = nano-USD spent by settled requests
# A bucket is changed only while it is in the window and still exists; a budget whose counters are gone is left
# alone (the next admit finds it cold and seeds it from the store). A budget hold that expired unsettled (x:) still
# takes the spend, once.
SETTLE = """
local t
if ARGV[1] == '' then
  local now = redis.call('TIME')
  t = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
else
  t = tonumber(ARGV[1])
end
local s = math.floor(t / 1000)
local lease, id, seq, final = KEYS[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local raw
if final then raw = redis.call('GETDEL', lease) else raw = redis.call('GET', lease) end  -- a last one: once
local record = {}
if raw and raw ~= 'v' then
  for value in string.gmatch(raw, '%S+') do record[#record + 1] = value end
end
local at = tonumber(record[1])
local rates = at ~= nil and (final or tonumber(record[2]) < seq)
local k = 2
for kind, i, a, b in string.gmatch(ARGV[5], '(%a) (%d+) (%S+) (%S+)') do
  if kind == 'r' or kind == 't' then
    local key = KEYS[k]
    k = k + 1
    if rates then
      local delta = tonumber(a) - tonumber(record[2 + i] or a)
      if delta ~= 0 and at > s - 60 and redis.call('HEXISTS', key, record[1]) == 1 then
        redis.call('HINCRBY', key, record[1], string.format('%d', delta))
      end
      record[2 + i] = a
    end
  elseif kind == 'p' then
    local key = KEYS[k]
    k = k + 1
    local gone = {}
    for m = tonumber(a) + 1, tonumber(b) do
      gone[#gone + 1] = id .. ':' .. m
      if #gone >= 1000 then redis.call('ZREM', key, unpack(gone)); gone = {} end
    end
    if #gone > 0 then redis.call('ZREM', key, unpack(gone)) end
  else
    local key, holds = KEYS[k], KEYS[k + 1]
    k = k + 2
    if redis.call('HEXISTS', key, 'spent') == 1 then
      local live
      if final then live = redis.call('ZREM', holds, id) == 1 else live = redis.call('ZSCORE', holds, id) end
      local counts = false
      if live then
        counts = true
        local held = tonumber(redis.call('HGET', key, 'r:' .. id) or '0')
        local keep = 0
        if not final then keep = tonumber(a) end
        if keep < held then redis.call('HINCRBY', key, 'reserved', string.format('%d', keep - held)) end
        if final then
          redis.call('HDEL', key, 'r:' .. id)
        elseif keep < held then
          redis.call('HSET', key, 'r:' .. id, string.format('%d', keep))
        end
      elseif redis.call('HDEL', key, 'x:' .. id) == 1 then
        counts = true
        if not final then redis.call('HSET', key, 'x:' .. id, '1') end
      end
      if counts then
        local spend, before = tonumber(b), 0
        if a ~= '-' then before = tonumber(redis.call('HGET', key, 'p:' .. id) or '0') end
        if spend > before then redis.call('HINCRBY', key, 'spent', string.format('%d', spend - before)) end
        if final then
          if before > 0 then redis.call('HDEL', key, 'p:' .. id) end
        elseif spend > before then
          redis.call('HSET', key, 'p:' .. id, string.format('%d', spend))
        end
      end
    end
  end
end
if rates and not final then
  record[2] = ARGV[3]
  redis.call('SET', lease, table.concat(record, ' '), 'KEEPTTL')
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

# KEYS: the group's lease record, then per limit its key(s) as in its ADMIT. ARGV: group id, tombstone lifetime ms,
# the limits' kinds as one string (r t p b, in the ADMIT's order). Undoes what the ADMIT counted if it ran (its rpm
# and tpm units while their bucket is in the window, its slots, its budget reservations), then leaves the tombstone.
VOID = """
local lease, id = KEYS[1], ARGV[1]
local record = {}
for value in string.gmatch(redis.call('GET', lease) or '', '%S+') do record[#record + 1] = value end
local at = tonumber(record[1])
local now = redis.call('TIME')
local s = tonumber(now[1])
local field = string.format('%d', at or 0)
local k = 2
for i = 1, #ARGV[3] do
  local kind = string.sub(ARGV[3], i, i)
  if kind == 'b' then
    local key, holds = KEYS[k], KEYS[k + 1]
    k = k + 2
    if redis.call('ZREM', holds, id) == 1 and redis.call('HEXISTS', key, 'spent') == 1 then
      local amount = tonumber(redis.call('HGET', key, 'r:' .. id) or '0')
      redis.call('HINCRBY', key, 'reserved', string.format('%d', -amount))
      redis.call('HDEL', key, 'r:' .. id)
    end
    redis.call('HDEL', key, 'x:' .. id, 'p:' .. id)
  else
    local key = KEYS[k]
    k = k + 1
    local held = 0
    if at then held = tonumber(record[2 + i] or '0') end
    if held > 0 and kind == 'p' then
      local gone = {}
      for m = 1, held do
        gone[#gone + 1] = id .. ':' .. m
        if #gone >= 1000 then redis.call('ZREM', key, unpack(gone)); gone = {} end
      end
      if #gone > 0 then redis.call('ZREM', key, unpack(gone)) end
    elseif held > 0 and at > s - 60 and redis.call('HEXISTS', key, field) == 1 then
      redis.call('HINCRBY', key, field, string.format('%d', -held))
    end
  end
end
redis.call('SET', lease, 'v', 'PX', ARGV[2])
return 1
"""


class Script:
    """A constant Lua script, run by EVALSHA (by EVAL when the server does not have it yet)."""

    def __init__(self, text: str, code: str) -> None:
        self.text = text
        self.code = code  # its name in a BATCH header
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


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

ADMIT_SCRIPT, SETTLE_SCRIPT = Script(ADMIT, "a"), Script(SETTLE, "s")
SEED_SCRIPT, VOID_SCRIPT, BATCH_SCRIPT = Script(SEED, "d"), Script(VOID, "v"), Script(BATCH, "")
