"""What only RedisLimiter does: its keys (prefix, expiry), the server's clock, EVALSHA/EVAL, large amounts."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from lockgate.limits import Limit, RedisLimiter, Window
from lockgate.limits.redis import ADMIT, SETTLE
from tests.limits.conftest import REDIS_URL, T0, Backend, Run, admit_seeding, ask


def sync_client() -> Any:
    return redis.Redis.from_url(REDIS_URL, decode_responses=True)


def test_keys_are_prefixed_hold_only_the_scope_and_expire(redis_backend: Backend, run: Run[Any]) -> None:
    limiter = redis_backend.make()
    anchor = datetime.fromtimestamp(time.time() - 3600, UTC)
    daily = Limit("key:5f0c", "budget", 10.0, Window.parse("1d", anchor))
    limits = (
        Limit("key:5f0c", "rpm", 10),
        Limit("key:5f0c", "tpm", 100),
        Limit("key:5f0c", "parallel", 3),
        daily,
        Limit("team:t9", "budget", 100.0),
    )

    async def body() -> None:
        admission = await admit_seeding(limiter, ask(*limits, tokens=10, cost=0.5))
        assert admission.allowed and not admission.degraded

    run(body())
    client = sync_client()
    keys = sorted(client.keys("*"))
    assert keys and all(key.startswith("lockgate:") for key in keys)
    # rate rpm, rate tpm, parallel; two budgets as a hash and a holds zset each; the admit's lease record
    assert len(keys) == 3 + 2 * 2 + 1
    ttls = {key: client.pttl(key) / 1000 for key in keys}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    (record,) = [key for key in keys if key.startswith("lockgate:lease:")]
    assert ttls[record] == pytest.approx(900, abs=2)  # as long as its parallel slots (else 120 s)
    assert [int(n) for n in client.get(record).split()][1:] == [0, 1, 10, 1, 0, 0]  # second, seq, counts: no more
    assert ttls["lockgate:rate:rpm:key:5f0c"] == pytest.approx(120, abs=2)
    assert ttls["lockgate:rate:tpm:key:5f0c"] == pytest.approx(120, abs=2)
    assert ttls["lockgate:parallel:key:5f0c"] == pytest.approx(900, abs=2)
    day = [key for key in keys if key.startswith("lockgate:budget:1d@")]
    assert len(day) == 1 and ttls[day[0]] == pytest.approx(86_400 - 3600 + 86_400, abs=5)  # window end + a day
    ever = [key for key in keys if key.startswith("lockgate:budget:ever:")]
    assert ever == ["lockgate:budget:ever:0:team:t9"] and ttls[ever[0]] == pytest.approx(86_400, abs=5)


def test_the_servers_clock_places_the_buckets(redis_backend: Backend, run: Run[Any]) -> None:
    limiter = redis_backend.make()
    client = sync_client()

    async def body() -> None:
        before = int(client.time()[0])
        assert (await limiter.admit(ask(Limit("key:clock", "rpm", 5)))).allowed
        after = int(client.time()[0])
        (second,) = client.hkeys("lockgate:rate:rpm:key:clock")
        assert before <= int(second) <= after

    run(body())


def test_a_client_clock_off_by_hours_still_counts_in_the_servers_window(redis_backend: Backend, run: Run[Any]) -> None:
    limiter = redis_backend.make()
    assert isinstance(limiter, RedisLimiter)
    window = Window.parse("1h", datetime(2020, 1, 1, tzinfo=UTC))
    hourly = Limit("key:skew", "budget", 1.0, window)
    client = sync_client()

    async def body() -> None:
        limiter._offset = 7200.0  # as if this machine's clock ran two hours ahead of the server's
        admission = await admit_seeding(limiter, ask(hourly, cost=0.25))
        assert admission.allowed
        server_now = float(client.time()[0])
        start_ms = window.bounds_ms(server_now)[0]
        assert client.hget(f"lockgate:budget:{window.id}:{start_ms}:key:skew", "reserved") == "250000000"
        assert abs(limiter._offset) < 5  # learnt from the reply

    run(body())


def test_a_flushed_script_cache_falls_back_to_eval(redis_backend: Backend, run: Run[Any]) -> None:
    limiter = redis_backend.make()
    rpm = Limit("key:noscript", "rpm", 10)

    async def body() -> None:
        first = await limiter.admit(ask(rpm, Limit("key:noscript", "tpm", 100)), T0)
        sync_client().script_flush()
        second = await limiter.admit(ask(rpm), T0)
        assert first.allowed and second.allowed and second.remaining[("key:noscript", "rpm")] == 8
        assert first.ticket is not None

        await limiter.settle(first.ticket, tokens=0, cost=0, now=T0)

    run(body())
    shas = [hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest() for script in (ADMIT, SETTLE)]
    assert sync_client().script_exists(*shas) == [True, True]  # loaded again by EVAL


def test_large_amounts_stay_exact(redis_backend: Backend, run: Run[Any]) -> None:
    limiter = redis_backend.make(reservation_ttl=10)
    big = Limit("org:big", "budget", 5_000_000.0)

    async def body() -> None:
        await limiter.seed(big, 1_000_000.123456789, T0)
        lost = await limiter.admit(ask(big, cost=3_999_999.876543211), T0)  # fills it to the nano-dollar
        assert lost.allowed and lost.remaining[("org:big", "budget")] == 0
        assert not (await limiter.admit(ask(big, cost=1e-9), T0 + 1)).allowed
        again = await limiter.admit(ask(big, cost=3_999_999.876543211), T0 + 10)  # the first reservation expired
        assert again.allowed and again.ticket is not None
        await limiter.settle(again.ticket, tokens=0, cost=3_000_000, now=T0 + 11)
        assert await limiter.spent(big, T0 + 11) == pytest.approx(4_000_000.123456789, abs=1e-9)

    run(body())
