"""Quota leases (limits/leases.py): RedisLimiter admits most requests in memory, from slices of each limit it
holds, and every guarantee of the shared counters still holds. Real Redis (database 13, or a private server).

Each test also checks that leases were in use (few script calls per request), so that a test cannot pass only
because every request went to Redis. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from lockgate.limits import Admission, Limit, RedisLimiter, Window
from lockgate.limits.leases import RETURN_AFTER
from lockgate.limits.scripts import SETTLE, SETTLE_SCRIPT
from tests.limits.conftest import REDIS_URL, T0, Backend, RedisServer, Run, admit_seeding, ask

LEASE = 0.25


def sync_client(url: str = REDIS_URL) -> Any:
    return redis.Redis.from_url(url, decode_responses=True)


def rate_used(client: Any, limit: Limit) -> int:
    """What Redis counts for a rpm/tpm limit now (every bucket of the test is in the window)."""
    return sum(int(n) for n in client.hvals(f"lockgate:rate:{limit.kind}:{limit.scope}"))


async def hammer(
    limiters: list[RedisLimiter],
    limit: Limit,
    seconds: float,
    *,
    clients: int = 8,
    cost: float = 0.0,
    real: Callable[[random.Random], float] | None = None,
) -> tuple[int, int, float]:
    """``clients`` tasks per limiter admit (and settle at once) as fast as they can for ``seconds``; a refused one
    tries again 10 ms later. (admitted, script calls, USD settled)."""
    deadline = time.monotonic() + seconds
    rng = random.Random(5)
    admitted = 0
    spent = 0.0

    async def client(limiter: RedisLimiter, n: int) -> None:
        nonlocal admitted, spent
        i = 0
        while time.monotonic() < deadline:
            i += 1
            admission = await admit_seeding(limiter, ask(limit, cost=cost, rid=f"{n}.{i}"))
            assert not admission.degraded
            if admission.allowed:
                assert admission.ticket is not None
                admitted += 1
                paid = cost if real is None else real(rng)
                spent += paid
                await limiter.settle(admission.ticket, tokens=0, cost=paid)
                await asyncio.sleep(0)  # a server's request reads its socket
            else:
                await asyncio.sleep(0.01)

    before = sum(limiter.script_calls for limiter in limiters)
    await asyncio.gather(*(client(limiter, n) for limiter in limiters for n in range(clients)))
    return admitted, sum(limiter.script_calls for limiter in limiters) - before, spent


def make(backend: Backend, count: int, **options: Any) -> list[RedisLimiter]:
    made = [backend.make(fallback_share=count, lease_seconds=LEASE, **options) for _ in range(count)]
    assert all(isinstance(limiter, RedisLimiter) for limiter in made)
    return made  # type: ignore[return-value]


# --- exactness across instances -------------------------------------------------------------------------


def test_rpm_3000_over_three_hammered_limiters_admits_exactly_3000(redis_backend: Backend, run: Run[Any]) -> None:
    limiters = make(redis_backend, 3)
    rpm = Limit("key:lease-rpm", "rpm", 3000)

    admitted, calls, _ = run(hammer(limiters, rpm, 2.0))
    print(f"\nleases: rpm 3000, 3 limiters x 8 clients for 2 s: admitted {admitted}, {calls} script calls")
    assert admitted == 3000  # never more (every grant is counted), never less (every slice is spent or returned)
    assert rate_used(sync_client(), rpm) == 3000  # and Redis holds exactly that once the leases are back


def test_a_budget_over_three_hammered_limiters_is_spent_to_the_nano_dollar(
    redis_backend: Backend, run: Run[Any]
) -> None:
    limiters = make(redis_backend, 3)
    budget = Limit("team:lease-budget", "budget", 30.0)

    async def main() -> tuple[int, int, float, float]:
        admitted, calls, spent = await hammer(limiters, budget, 2.0, cost=0.01)
        for limiter in limiters:
            await limiter.close()  # hands back every lease: Redis holds the spend of each request
        check = RedisLimiter.from_url(REDIS_URL)
        try:
            return admitted, calls, spent, await check.spent(budget)
        finally:
            await check.close()

    admitted, calls, spent, recorded = run(main())
    print(f"\nleases: $30 budget, $0.01 asks, 3 limiters: admitted {admitted}, {calls} calls, Redis ${recorded:.9f}")
    assert admitted == 3000
    assert recorded == pytest.approx(30.0, abs=1e-9) and spent == pytest.approx(30.0, abs=1e-9)


def test_tpm_over_three_limiters_never_exceeds_the_limit_plus_one_request(
    redis_backend: Backend, run: Run[Any]
) -> None:
    limiters = make(redis_backend, 3)
    tpm = Limit("key:lease-tpm", "tpm", 200_000)
    rng = random.Random(3)

    async def main() -> tuple[int, int]:
        deadline = time.monotonic() + 1.5
        counted = 0

        async def client(limiter: RedisLimiter, n: int) -> None:
            nonlocal counted
            i = 0
            while time.monotonic() < deadline:
                i += 1
                estimate, real = 100, rng.randint(50, 150)
                admission = await limiter.admit(ask(tpm, tokens=estimate, rid=f"{n}.{i}"))
                if admission.allowed:
                    assert admission.ticket is not None
                    counted += real
                    await limiter.settle(admission.ticket, tokens=real, cost=0)
                    await asyncio.sleep(0)
                else:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(client(limiter, n) for limiter in limiters for n in range(8)))
        for limiter in limiters:
            await limiter.close()
        return counted, sum(limiter.script_calls for limiter in limiters)

    counted, calls = run(main())
    used = rate_used(sync_client(), tpm)
    print(f"\nleases: tpm 200,000, 3 limiters: {counted} real tokens admitted, Redis counts {used}, {calls} calls")
    assert used == counted  # every estimate replaced by the real count, every unused token given back
    assert 200_000 - 150 <= counted <= 200_000 + 150  # admits while used < limit: one request over at most


# --- slices come back --------------------------------------------------------------------------------------


def test_an_idle_instance_gives_its_slices_back(redis_backend: Backend, run: Run[Any]) -> None:
    first, second = make(redis_backend, 2)
    rpm = Limit("key:lease-idle", "rpm", 100_000)

    async def main() -> tuple[int, int, int, float]:
        used, _, _ = await hammer([first], rpm, 0.5, clients=4)
        held = rate_used(sync_client(), rpm) - used  # first is idle now, holding its last lease
        started = time.monotonic()
        while rate_used(sync_client(), rpm) != used:
            assert time.monotonic() - started < 1.5, "the idle instance kept its slice"
            await asyncio.sleep(0.01)
        back = time.monotonic() - started
        more = 0  # the other instance can now take everything else, to the last request
        while (await second.admit(ask(rpm, rid=str(more)))).allowed:
            more += 1
            if more % 1000 == 0:
                await asyncio.sleep(0)
        return used, held, more, back

    used, held, more, back = run(main())
    print(f"\nleases: an idle instance held {held} of rpm 100,000 and gave it back after {back:.2f} s")
    assert held > 0  # it did hold a slice
    assert held <= 100_000 // (4 * 2) + 1  # at most a quarter of the headroom over the instances
    assert back <= 1.0
    assert used + more == 100_000


def test_close_gives_every_slice_back(redis_backend: Backend, run: Run[Any]) -> None:
    (limiter,) = make(redis_backend, 1)
    rpm, budget = Limit("key:lease-close", "rpm", 1_000_000), Limit("key:lease-close", "budget", 1000.0)
    parallel = Limit("key:lease-close", "parallel", 10_000)
    client = sync_client()

    async def main() -> int:
        admitted = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            admission = await admit_seeding(limiter, ask(rpm, budget, parallel, cost=0.001, rid=str(admitted)))
            assert admission.allowed and admission.ticket is not None
            await limiter.settle(admission.ticket, tokens=0, cost=0.001)
            admitted += 1
            await asyncio.sleep(0)
        assert rate_used(client, rpm) > admitted  # a slice is out
        await limiter.close()
        return admitted

    admitted = run(main())
    assert rate_used(client, rpm) == admitted
    assert client.zcard("lockgate:parallel:key:lease-close") == 0
    spend = client.hgetall("lockgate:budget:ever:0:key:lease-close")
    assert spend["reserved"] == "0" and int(spend["spent"]) == admitted * 1_000_000
    assert [field for field in spend if field not in ("spent", "reserved")] == []  # no r:, x:, p: left over
    assert client.keys("lockgate:lease:*") == []


# --- how often Redis is asked --------------------------------------------------------------------------------


def test_at_a_high_rate_a_request_costs_far_less_than_one_script_call(redis_server: RedisServer, run: Run[Any]) -> None:
    limits = (
        Limit("key:calls", "rpm", 1e9),
        Limit("key:calls", "tpm", 1e12),
        Limit("key:calls", "parallel", 1e6),
        Limit("key:calls", "budget", 1e6),
    )
    client = redis.Redis(port=redis_server.port)

    async def main() -> tuple[int, int]:
        limiter = RedisLimiter.from_url(redis_server.url, timeout=5.0)
        deadline, done = time.monotonic() + 1.5, 0

        async def one(n: int) -> None:
            nonlocal done
            while time.monotonic() < deadline:
                admission = await admit_seeding(limiter, ask(*limits, tokens=500, cost=0.002, rid=f"{n}.{done}"))
                assert admission.allowed and admission.ticket is not None
                await limiter.settle(admission.ticket, tokens=480, cost=0.0019)
                done += 1
                await asyncio.sleep(0)

        await asyncio.gather(*(one(n) for n in range(16)))
        calls = limiter.script_calls
        await limiter.close()
        return done, calls

    client.config_resetstat()
    done, calls = run(main())
    stats = client.info("commandstats")
    round_trips = sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))
    print(f"\nleases: {done} admit+settle, {calls} script calls ({calls / done:.4f} each), {round_trips} round trips")
    assert done > 2000
    assert calls / done < 0.02  # without leases: 2
    assert round_trips <= calls + 5


# --- what a request is told ------------------------------------------------------------------------------------


def test_remaining_on_one_instance_counts_down_by_one_through_leases(redis_backend: Backend, run: Run[Any]) -> None:
    (limiter,) = make(redis_backend, 1)
    rpm = Limit("key:lease-remaining", "rpm", 10_000)

    async def main() -> list[float]:
        seen = []
        for i in range(2000):  # 200 a (simulated) second over 10 s: leases of ~50
            admission = await limiter.admit(ask(rpm, rid=str(i)), T0 + i / 200)
            assert admission.allowed and admission.ticket is not None
            seen.append(admission.remaining[("key:lease-remaining", "rpm")])
            await limiter.settle(admission.ticket, tokens=0, cost=0, now=T0 + i / 200)
        return seen

    seen = run(main())
    calls = limiter.script_calls
    print(f"\nleases: 2,000 admits on one instance, {calls} script calls")
    assert seen == [10_000 - i - 1 for i in range(2000)]
    assert calls < 400


# --- budgets ------------------------------------------------------------------------------------------------------


async def warm(limiters: list[RedisLimiter], budget: Limit, requests: int) -> None:
    """Sustained traffic (one request at a time per limiter), so that each limiter holds an open lease."""
    for i in range(requests):
        limiter = limiters[i % len(limiters)]
        admission = await admit_seeding(limiter, ask(budget, cost=0.01, rid=f"w{i}"))
        assert admission.allowed and admission.ticket is not None
        await limiter.settle(admission.ticket, tokens=0, cost=0.01)
        await asyncio.sleep(0.0005)


async def spent_in_redis(limiters: list[RedisLimiter], budget: Limit) -> float:
    for limiter in limiters:
        await limiter.close()  # every lease back: what Redis says is every settled request, once
    check = RedisLimiter.from_url(REDIS_URL)
    try:
        return await check.spent(budget)
    finally:
        await check.close()


@pytest.mark.parametrize("budget_usd", [1.0, 10.0])
def test_bursts_of_1000_asks_on_open_leases_end_at_exactly_the_budget(
    redis_backend: Backend, run: Run[Any], budget_usd: float
) -> None:
    """1000 asks at once while each limiter holds a lease: never over; a limiter's lease may leave others short
    for a moment (at most 1/(4 x instances) of the headroom each), and what it held comes back to be spent."""
    limiters = make(redis_backend, 3)
    budget = Limit(f"end_user:burst-{budget_usd:g}", "budget", budget_usd)
    left = round((budget_usd - 0.60) / 0.01)

    async def burst() -> int:
        start = asyncio.Event()

        async def one(i: int) -> bool:
            limiter = limiters[i % 3]
            await start.wait()
            admission = await limiter.admit(ask(budget, cost=0.01, rid=str(i)))
            if admission.allowed:
                assert admission.ticket is not None
                await asyncio.sleep(random.uniform(0, 0.002))
                await limiter.settle(admission.ticket, tokens=0, cost=0.01)
            return admission.allowed

        tasks = [asyncio.create_task(one(i)) for i in range(1000)]
        await asyncio.sleep(0)
        start.set()
        return sum(await asyncio.gather(*tasks))

    async def main() -> tuple[list[int], float, int]:
        await warm(limiters, budget, 60)  # $0.60 spent; leases open on each limiter
        calls = sum(limiter.script_calls for limiter in limiters)
        admitted = [await burst()]
        while sum(admitted) < left and len(admitted) < 8:
            await asyncio.sleep(LEASE + 0.5)  # the leases held come back
            admitted.append(await burst())
        return admitted, await spent_in_redis(limiters, budget), calls

    admitted, spent, warm_calls = run(main())
    print(f"\nleases: ${budget_usd:g} budget, $0.60 spent, bursts of 1000 asks: admitted {admitted}, ${spent:.9f}")
    assert warm_calls < 2 * 60  # the warm-up did run on leases
    assert admitted[0] >= left * 3 // 4  # the three limiters' slices held at most 3/12 of the headroom
    assert sum(admitted) == left  # never more; and nothing lost: what a lease held was spent after all
    assert spent == pytest.approx(budget_usd, abs=1e-9)


@pytest.mark.parametrize("budget_usd", [1.0, 10.0])
def test_overspend_with_leases_stays_within_the_excess_of_requests_in_flight(
    redis_backend: Backend, run: Run[Any], budget_usd: float
) -> None:
    """As without leases (test_concurrency.py): 3 requests in flight at a time, real costs 0.5-1.5x the estimate;
    the small budget runs nearly per request, the large one mostly on leases."""
    limiters = make(redis_backend, 3)
    budget = Limit(f"end_user:overspend-{budget_usd:g}", "budget", budget_usd)
    rng = random.Random(99)

    async def main() -> tuple[int, float, tuple[int, int]]:
        gate = asyncio.Semaphore(3)
        admitted = 0
        until_refused: tuple[int, int] | None = None  # (admitted, script calls) at the first refusal

        async def one(i: int) -> None:
            nonlocal admitted, until_refused
            limiter = limiters[i % 3]
            async with gate:
                admission = await admit_seeding(limiter, ask(budget, cost=0.01, rid=str(i)))
                if admission.allowed:
                    assert admission.ticket is not None
                    admitted += 1
                    await asyncio.sleep(rng.uniform(0, 0.002))
                    await limiter.settle(admission.ticket, tokens=0, cost=0.01 * rng.uniform(0.5, 1.5))
                elif until_refused is None:
                    until_refused = admitted, sum(limiter.script_calls for limiter in limiters)

        await asyncio.gather(*(one(i) for i in range(int(budget_usd * 200))))
        assert until_refused is not None
        return admitted, await spent_in_redis(limiters, budget), until_refused

    admitted, spent, (before, calls) = run(main())
    print(f"\nleases: ${budget_usd:g} budget, 3 in flight: admitted {admitted} ({before} with {calls} script calls "
          f"before the first refusal), spent ${spent:.9f}")  # fmt: skip
    assert spent <= budget_usd + 3 * 0.005 + 1e-9  # what the three in flight spend beyond their estimates
    assert admitted >= budget_usd / 0.015
    if budget_usd >= 10:
        assert calls < before  # leases did the work (without them: 2 a request)


def test_a_lease_never_spans_a_budget_window(redis_backend: Backend, run: Run[Any]) -> None:
    (limiter,) = make(redis_backend, 1)
    window = Window.parse("2s", datetime.fromtimestamp(T0, UTC))
    budget = Limit("key:lease-window", "budget", 100.0, window)
    cost = 0.001

    async def main() -> tuple[list[float], int]:
        spent: dict[int, float] = {}
        for i in range(1200):  # 200 a second over 6 simulated seconds: three windows, leases of ~50 requests
            now = T0 + i / 200
            admission = await admit_seeding(limiter, ask(budget, cost=cost, rid=str(i)), now)
            assert admission.allowed and admission.ticket is not None
            start = int(window.bounds(now)[0])
            spent[start] = spent.get(start, 0.0) + cost
            await limiter.settle(admission.ticket, tokens=0, cost=cost, now=now + 0.001)
        calls = limiter.script_calls
        await limiter.close()
        check = RedisLimiter.from_url(REDIS_URL)
        try:
            recorded = [await check.spent(budget, T0 + 2 * k) for k in range(3)]
        finally:
            await check.close()
        assert sorted(spent) == [int(T0), int(T0) + 2, int(T0) + 4]
        return recorded, calls

    recorded, calls = run(main())
    print(f"\nleases: a 2 s budget window, 1,200 requests over 6 s: {calls} calls, spent per window {recorded}")
    assert recorded == [pytest.approx(0.4, abs=1e-9)] * 3  # each request in the window it was admitted in
    assert calls < 300


# --- an instance that dies, a Redis that stops -------------------------------------------------------------------


def test_a_limiter_dropped_without_close_leaves_reservations_that_expire(redis_backend: Backend, run: Run[Any]) -> None:
    (dropped,) = make(redis_backend, 1, reservation_ttl=5)
    limits = (
        Limit("key:lease-crash", "rpm", 100_000),
        Limit("key:lease-crash", "parallel", 1000),
        Limit("key:lease-crash", "budget", 100.0),
    )
    client = sync_client()
    budget_key, slots = "lockgate:budget:ever:0:key:lease-crash", "lockgate:parallel:key:lease-crash"

    async def main() -> tuple[int, Admission]:
        for i in range(400):  # 200 a simulated second: the last lease is open when the instance dies
            admission = await admit_seeding(dropped, ask(*limits, cost=0.001, rid=str(i)), T0 + i / 200)
            assert admission.allowed and admission.ticket is not None
            await dropped.settle(admission.ticket, tokens=0, cost=0.001, now=T0 + i / 200)
        reaper = dropped._book._reaper
        assert reaper is not None
        reaper.cancel()  # the process dies: nothing runs for it any more
        await asyncio.gather(reaper, return_exceptions=True)
        held = rate_used(client, limits[0]) - 400
        assert held > 0 and client.zcard(slots) > 0 and int(client.hget(budget_key, "reserved")) > 0
        other = RedisLimiter.from_url(REDIS_URL, reservation_ttl=5)
        try:
            later = await other.admit(ask(*limits, cost=0.001, rid="later"), T0 + 2 + 5.1)  # past the ttl
            assert later.allowed and later.ticket is not None
            assert client.zcard(slots) == 1  # the dead instance's slots expired: only this request's
            assert int(client.hget(budget_key, "reserved")) == 1_000_000  # and its budget reservation
            minute = await other.admit(ask(limits[0], rid="minute"), T0 + 61)  # its rpm units left the window
            return held, minute
        finally:
            await other.close()

    held, minute = run(main())
    print(f"\nleases: a dead instance held {held} rpm units; they left with the 60 s window")
    assert held <= 100_000 // 4
    assert minute.allowed and minute.remaining[("key:lease-crash", "rpm")] == 100_000 - 1 - 1  # 'later' counts


def test_lease_settles_are_replayed_after_a_redis_outage(redis_server: RedisServer, run: Run[Any]) -> None:
    rpm, budget = Limit("key:lease-replay", "rpm", 1_000_000), Limit("key:lease-replay", "budget", 1000.0)
    client = sync_client(redis_server.url)

    async def main() -> tuple[int, int, float]:
        limiter = RedisLimiter.from_url(redis_server.url, timeout=0.1, lease_seconds=LEASE)
        shared, cost, outage = 0, 0.0, False
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            elapsed = time.monotonic() - started
            if elapsed > 0.6 and not outage:
                redis_server.pause()  # leases open, requests settled on them and not yet told to Redis
                outage = True
            if elapsed > 1.2 and outage:
                redis_server.resume()
                outage = False
            admission = await admit_seeding(limiter, ask(rpm, budget, cost=0.001, rid=str(shared)))
            if admission.allowed and not admission.degraded:
                assert admission.ticket is not None
                shared += 1
                cost += 0.001
            if admission.ticket is not None:
                await limiter.settle(admission.ticket, tokens=0, cost=0.001)
            await asyncio.sleep(0.0005)
        assert not limiter.degraded
        for _ in range(200):  # the replay runs in the background
            if rate_used(client, rpm) == shared:
                break
            await asyncio.sleep(0.01)
        calls = limiter.script_calls
        await limiter.close()
        return shared, calls, cost

    shared, calls, cost = run(main())
    spent = int(client.hget("lockgate:budget:ever:0:key:lease-replay", "spent")) / 1e9
    print(f"\nleases: Redis paused 0.6 s: {shared} shared admissions, {calls} calls, counted {rate_used(client, rpm)}")
    assert rate_used(client, rpm) == shared  # every unused unit given back, once, through the outage
    assert spent == pytest.approx(cost, abs=1e-9)  # every settled cost added, once
    assert client.hget("lockgate:budget:ever:0:key:lease-replay", "reserved") == "0"


def test_lease_settles_count_once_however_often_and_in_whatever_order_they_arrive(
    redis_backend: Backend, run: Run[Any]
) -> None:
    """Every SETTLE a limiter makes (partial ones of groups with requests in flight included) is kept from Redis,
    then applied three times: in order, reversed, in order again. The counters come out exact."""
    (limiter,) = make(redis_backend, 1)
    limits = (
        Limit("key:lease-replay-order", "rpm", 1_000_000),
        Limit("key:lease-replay-order", "tpm", 10**9),
        Limit("key:lease-replay-order", "parallel", 10_000),
        Limit("key:lease-replay-order", "budget", 1000.0),
    )
    recorded: list[tuple[list[str], list[str]]] = []
    real = limiter._batcher.call

    def spy(script: Any, keys: list[str], args: list[str], then: Any = None, lost: Any = None) -> Any:
        if script is SETTLE_SCRIPT:
            recorded.append((keys, args))
            future = asyncio.get_running_loop().create_future()
            future.set_result(1)
            return future
        return real(script, keys, args, then, lost)

    limiter._batcher.call = spy  # type: ignore[method-assign]
    rng = random.Random(8)

    async def main() -> tuple[int, int, int]:
        admitted, tokens, nano = 0, 0, 0
        held = []
        for i in range(600):  # 200 a simulated second: leases; every tenth request stays in flight a while
            now = T0 + i / 200
            admission = await admit_seeding(limiter, ask(*limits, tokens=100, cost=0.001, rid=str(i)), now)
            assert admission.allowed and admission.ticket is not None
            admitted += 1
            if i % 10 == 0:
                held.append(admission.ticket)
            else:
                real_tokens = rng.randint(50, 150)
                tokens, nano = tokens + real_tokens, nano + 1_000_000
                await limiter.settle(admission.ticket, tokens=real_tokens, cost=0.001, now=now)
            if i % 100 == 99:
                await asyncio.sleep(RETURN_AFTER + 0.1)  # the reaper gives back what closed groups hold beyond these
                for ticket in held:
                    tokens, nano = tokens + 120, nano + 2_000_000
                    await limiter.settle(ticket, tokens=120, cost=0.002, now=now)
                held = []
        await limiter.close()
        return admitted, tokens, nano

    admitted, tokens, nano = run(main())
    client = sync_client()
    settle = client.register_script(SETTLE)
    partial = sum(1 for _, args in recorded if args[3] == "0")
    for order in (recorded, recorded[::-1], recorded):
        for keys, args in order:
            settle(keys=keys, args=args)
    print(f"\nleases: {len(recorded)} SETTLEs ({partial} partial), each applied three times, in three orders")
    assert partial > 0
    assert rate_used(client, limits[0]) == admitted
    assert rate_used(client, limits[1]) == tokens
    assert client.zcard("lockgate:parallel:key:lease-replay-order") == 0
    budget = client.hgetall("lockgate:budget:ever:0:key:lease-replay-order")
    assert int(budget["spent"]) == nano and budget["reserved"] == "0"
    assert sorted(budget) == ["reserved", "spent"]
