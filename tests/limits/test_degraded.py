"""Redis down or stalled (security.md R2 / T21), on a private redis-server killed, paused and restarted.

While Redis cannot answer: admits keep answering within about the timeout, marked degraded; rate limits
hold per instance at limit / fallback_share; budgets are refused (or, opted in, not enforced); one warning
when it starts, one info line when Redis is back, within the 1 s probe interval. Real clocks throughout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import redis

from lockgate.limits import Admission, Limit, RedisLimiter
from tests.limits.conftest import RedisServer, Run, admit_seeding, ask

TIMEOUT = 0.1
SLACK = 0.15  # scheduling noise on a busy machine, on top of the timeout


def log_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lockgate.limits" and r.levelno == level]


async def timed(limiter: RedisLimiter, *limits: Limit, cost: float = 0.0) -> tuple[Admission, float]:
    started = time.perf_counter()
    admission = await limiter.admit(ask(*limits, cost=cost))
    return admission, time.perf_counter() - started


async def until_shared(limiter: RedisLimiter, limit: Limit, within: float) -> float:
    """Admit every 20 ms until an answer comes from Redis again; the seconds that took."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if not (await limiter.admit(ask(limit))).degraded:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"still degraded after {within} s")


def test_redis_killed_then_restarted(
    redis_server: RedisServer, run: Run[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lockgate.limits")
    rpm, budget = Limit("key:k", "rpm", 30), Limit("key:k", "budget", 10.0)
    probe = Limit("key:probe", "rpm", 1_000_000)

    async def main() -> None:
        limiter = RedisLimiter.from_url(redis_server.url, fallback_share=3, timeout=TIMEOUT)
        shared = await admit_seeding(limiter, ask(rpm, budget, cost=0.01))
        assert shared.allowed and not shared.degraded and shared.ticket is not None

        redis_server.kill()
        answers = [await timed(limiter, rpm) for _ in range(40)]
        assert all(admission.degraded for admission, _ in answers)
        assert sum(admission.allowed for admission, _ in answers) == 10  # ceil(30 / 3) per instance
        slowest = max(took for _, took in answers)
        print(f"\nT21 killed: 40 admits, slowest {slowest * 1000:.1f} ms, 10 admitted (rpm 30 / 3 instances)")
        assert slowest < TIMEOUT + SLACK
        refused, took = await timed(limiter, rpm, budget, cost=0.01)
        assert not refused.allowed and refused.denied == budget and refused.degraded and took < TIMEOUT + SLACK
        local = await limiter.admit(ask(Limit("key:p", "parallel", 3)))
        assert local.degraded and local.ticket is not None and local.ticket.local
        await limiter.settle(shared.ticket, tokens=0, cost=0.01)  # a Redis ticket: kept for later, never raises

        redis_server.start()
        back = await until_shared(limiter, probe, within=3.0)
        print(f"T21 restarted: shared counting again after {back:.2f} s")
        assert back <= 2.0
        await limiter.settle(local.ticket, tokens=0, cost=0)  # a degraded-mode ticket settles locally
        after = await admit_seeding(limiter, ask(rpm, budget, cost=0.01))
        assert after.allowed and not after.degraded  # a fresh Redis: the budget was seeded again
        await limiter.close()

    run(main())
    assert len(log_lines(caplog, logging.WARNING)) == 1, log_lines(caplog, logging.WARNING)
    assert len(log_lines(caplog, logging.INFO)) == 1, log_lines(caplog, logging.INFO)


def test_budgets_fail_open_when_the_admin_opts_in(redis_server: RedisServer, run: Run[Any]) -> None:
    rpm, budget = Limit("key:open", "rpm", 4), Limit("key:open", "budget", 1.0)

    async def main() -> None:
        limiter = RedisLimiter.from_url(redis_server.url, fallback_share=2, budgets_fail_open=True, timeout=TIMEOUT)
        await admit_seeding(limiter, ask(rpm, budget, cost=0.5))
        redis_server.kill()
        answers = [await limiter.admit(ask(rpm, budget, cost=0.5)) for _ in range(5)]
        assert [a.allowed for a in answers] == [True, True, False, False, False]  # rpm 4 / 2; the budget not enforced
        assert answers[2].denied == rpm and all(a.degraded for a in answers)
        assert answers[0].remaining == {("key:open", "rpm"): 1}
        await limiter.close()

    run(main())


def test_a_stalled_redis_costs_one_timeout_per_second_not_per_request(
    redis_server: RedisServer, run: Run[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lockgate.limits")
    rpm = Limit("key:stall", "rpm", 1000)

    async def main() -> None:
        limiter = RedisLimiter.from_url(redis_server.url, fallback_share=3, timeout=TIMEOUT)
        assert not (await limiter.admit(ask(rpm))).degraded
        redis_server.pause()  # a blackhole: connections stay open, nothing answers
        first, first_took = await timed(limiter, rpm)
        assert first.degraded and TIMEOUT * 0.9 <= first_took < TIMEOUT + SLACK
        answers = []
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            answers.append(await timed(limiter, rpm))
            await asyncio.sleep(0.01)
        slow = [took for _, took in answers if took > TIMEOUT / 2]
        print(f"\nT21 stalled: first admit {first_took * 1000:.0f} ms; {len(answers)} more, {len(slow)} paid a timeout")
        assert all(admission.degraded for admission, _ in answers)
        assert not slow  # Redis is probed once a second in the background: no admit waits for it
        redis_server.resume()
        back = await until_shared(limiter, rpm, within=3.0)
        print(f"T21 resumed: shared counting again after {back:.2f} s")
        assert back <= 2.0
        await limiter.close()

    run(main())
    assert len(log_lines(caplog, logging.WARNING)) == 1
    assert len(log_lines(caplog, logging.INFO)) == 1


def test_settles_and_timed_out_admits_are_put_right_on_recovery(redis_server: RedisServer, run: Run[Any]) -> None:
    budget, slot = Limit("key:replay", "budget", 1.0), Limit("key:replay", "parallel", 1)
    client = redis.Redis(port=redis_server.port)

    async def main() -> None:
        limiter = RedisLimiter.from_url(redis_server.url, timeout=TIMEOUT, budgets_fail_open=True)
        held = await admit_seeding(limiter, ask(budget, cost=0.3))
        assert held.ticket is not None and not held.degraded
        redis_server.pause()
        lost = await limiter.admit(ask(slot, budget, cost=0.3))  # sent, then given up on: Redis runs it later
        assert lost.degraded and lost.allowed
        await limiter.settle(held.ticket, tokens=0, cost=0.25)  # degraded: kept for later
        redis_server.resume()
        await until_shared(limiter, Limit("key:other", "rpm", 1000), within=3.0)
        for _ in range(100):  # the replay runs in the background
            if await limiter.spent(budget) > 0 and not client.zcard("lockgate:parallel:key:replay"):
                break
            await asyncio.sleep(0.01)
        assert await limiter.spent(budget) == pytest.approx(0.25)  # the settle, replayed
        again = await limiter.admit(ask(slot, budget, cost=0.75))  # the lost admit's slot and 0.3 were undone
        assert again.allowed and not again.degraded
        await limiter.close()

    run(main())


def test_a_timed_out_admit_leaves_no_rate_count(redis_server: RedisServer, run: Run[Any]) -> None:
    rpm = Limit("key:leak", "rpm", 2)

    async def main() -> None:
        limiter = RedisLimiter.from_url(redis_server.url, timeout=TIMEOUT)
        try:
            assert (await limiter.admit(ask(rpm))).allowed
            redis_server.pause()
            assert (await limiter.admit(ask(rpm))).degraded  # written to the socket, answered locally
            redis_server.resume()
            await until_shared(limiter, Limit("key:other", "rpm", 1000), within=3.0)
            second = await limiter.admit(ask(rpm))
            assert second.allowed and not second.degraded  # the void took the timed-out admit's count back
        finally:
            await limiter.close()

    run(main())


def test_under_load_redis_killed_and_restarted(
    redis_server: RedisServer, run: Run[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """200 requests a second for 3 s (admit, ~5 ms upstream, settle); Redis killed at 1 s, back at 2 s."""
    caplog.set_level(logging.INFO, logger="lockgate.limits")
    limits = (Limit("key:load", "rpm", 100_000), Limit("key:load", "tpm", 10**9), Limit("key:load", "parallel", 500))

    async def main() -> tuple[list[float], list[tuple[float, bool]], int]:
        limiter = RedisLimiter.from_url(redis_server.url, fallback_share=3, timeout=TIMEOUT)
        latencies: list[float] = []
        answers: list[tuple[float, bool]] = []  # (seconds since start, degraded)
        errors = 0
        started = time.monotonic()

        async def request(i: int) -> None:
            nonlocal errors
            try:
                t0 = time.perf_counter()
                admission = await limiter.admit(ask(*limits, rid=str(i)))
                latencies.append(time.perf_counter() - t0)
                answers.append((time.monotonic() - started, admission.degraded))
                await asyncio.sleep(0.005)
                if admission.ticket is not None:
                    await limiter.settle(admission.ticket, tokens=10, cost=0)
            except Exception:
                errors += 1

        tasks = []
        for i in range(600):
            at = started + i / 200
            if i == 200:
                redis_server.kill()
            if i == 400:
                redis_server.start()
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            tasks.append(asyncio.create_task(request(i)))
        await asyncio.gather(*tasks)
        await limiter.close()
        return latencies, answers, errors

    latencies, answers, errors = run(main())
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99)]
    degraded = [when for when, was in answers if was]
    print(
        f"\nT21 under load: 600 admits, {errors} errors, p99 {p99 * 1000:.1f} ms, degraded {min(degraded):.2f}", end=""
    )
    print(f"-{max(degraded):.2f} s (killed at 1.00, restarted at 2.00)")
    assert errors == 0
    assert p99 < TIMEOUT + SLACK
    assert min(degraded) >= 0.9 and max(degraded) < 2.0 + 1.0 + 0.2  # back within the probe interval
    assert not answers[-1][1]
    assert len(log_lines(caplog, logging.WARNING)) == 1
    assert len(log_lines(caplog, logging.INFO)) == 1


def test_connections_a_restarted_redis_closed_are_replaced_not_taken_for_an_outage(
    redis_server: RedisServer, run: Run[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis restarted while three instances were idle: the connections in their pools are closed. redis-py's
    pool hands them out anyway (it skips its check with maintenance notifications on, its default); each one's
    next call failed, and the instance counted alone for a second (1/3 of the limit, on top of what Redis had
    counted). A fresh key's burst must be counted once, in Redis."""
    caplog.set_level(logging.INFO, logger="lockgate.limits")
    old, fresh = Limit("key:before", "rpm", 10_000), Limit("key:after", "rpm", 60)

    async def burst(limiters: list[RedisLimiter], limit: Limit, n: int) -> list[Admission]:
        """``n`` admits spread over the instances and over event-loop turns (several batches in flight at once,
        so several pooled connections in use, as when requests arrive over HTTP)."""
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(limiters[i % len(limiters)].admit(ask(limit, rid=str(i)))))
            if i % 6 == 5:
                await asyncio.sleep(0)
        return list(await asyncio.gather(*tasks))

    async def main() -> None:
        # a stale connection fails at once, whatever the timeout: a long one keeps a busy machine's slow reconnect
        # (and its script reload) from passing for an outage
        limiters = [RedisLimiter.from_url(redis_server.url, fallback_share=3, timeout=1.0) for _ in range(3)]
        try:
            for n, limiter in enumerate(limiters):  # connected and scripts loaded, one at a time
                assert (await limiter.admit(ask(old, rid=f"w{n}"))).allowed
            warm = await burst(limiters, old, 300)  # leaves connections in each pool
            assert all(a.allowed and not a.degraded for a in warm)
            await asyncio.sleep(0.8)  # the leases given back
            redis_server.kill()
            redis_server.start()  # the same port, empty, while nobody was asking
            await asyncio.sleep(0.1)  # the old connections' end of file has arrived
            answers = await burst(limiters, fresh, 120)
            assert not [a for a in answers if a.degraded]
            assert sum(a.allowed for a in answers) == 60
        finally:
            for limiter in limiters:
                await limiter.close()

    run(main())
    assert log_lines(caplog, logging.WARNING) == []


def test_a_burst_as_redis_comes_back_is_counted_once(
    redis_server: RedisServer, run: Run[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Three instances counting alone (Redis killed), Redis back: the first burst is counted in Redis, exactly
    the limit. Redis was probed by an admit, and the admits arriving meanwhile were answered locally (up to
    1/3 of the limit each): 63 of 120 for an rpm of 60 here, 119 over three gateways whose event loops were
    busy with the burst's requests while the probe's reply waited."""
    caplog.set_level(logging.INFO, logger="lockgate.limits")
    old, fresh = Limit("key:before", "rpm", 60), Limit("key:after", "rpm", 60)

    async def main() -> None:
        limiters = [
            RedisLimiter.from_url(redis_server.url, fallback_share=3, timeout=TIMEOUT, probe_every=0.2)
            for _ in range(3)
        ]
        try:
            for limiter in limiters:
                assert not (await limiter.admit(ask(old))).degraded
            redis_server.kill()
            for limiter in limiters:
                assert (await limiter.admit(ask(old))).degraded
            redis_server.start()
            await asyncio.sleep(1.0)  # five probe intervals; no admit meanwhile
            alone = [limiter for limiter in limiters if limiter.degraded]
            answers = await asyncio.gather(*(limiters[i % 3].admit(ask(fresh, rid=str(i))) for i in range(120)))
            assert sum(a.allowed for a in answers) == 60
            assert not [a for a in answers if a.degraded]
            assert not alone  # back to Redis without waiting for a request
        finally:
            for limiter in limiters:
                await limiter.close()

    run(main())
    assert len(log_lines(caplog, logging.INFO)) == 3  # each instance: Redis reachable again, once
