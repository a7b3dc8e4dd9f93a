"""Rate limits shared by three gateway instances (security.md R1 / T20): three RedisLimiters, one Redis.

Time is simulated (``now=``) except in the burst test. The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest

from lockgate.limits import Limit, Limiter
from tests.limits.conftest import T0, Backend, Run, ask


@pytest.fixture
def instances(redis_backend: Backend) -> Iterator[list[Limiter]]:
    yield [redis_backend.make() for _ in range(3)]


def test_rpm_60_over_three_instances_admits_at_most_61_of_600(instances: list[Limiter], run: Run[Any]) -> None:
    rpm = Limit("key:shared", "rpm", 60)

    async def main() -> int:
        admitted = 0
        for second in range(60):  # ten requests a second, each second's ten at once over the three instances
            batch = [instances[i % 3].admit(ask(rpm, rid=f"{second}.{i}"), T0 + second + i / 10) for i in range(10)]
            admitted += sum(admission.allowed for admission in await asyncio.gather(*batch))
        return admitted

    admitted = run(main())
    print(f"\nT20 rpm=60, 3 instances, 600 requests over a simulated 60 s: admitted {admitted}")
    assert admitted <= 61
    assert admitted == 60


def test_a_burst_on_the_servers_clock_admits_exactly_the_limit(instances: list[Limiter], run: Run[Any]) -> None:
    rpm = Limit("key:burst", "rpm", 60)

    async def main() -> int:
        results = await asyncio.gather(*(instances[i % 3].admit(ask(rpm, rid=str(i))) for i in range(600)))
        assert not any(admission.degraded for admission in results)
        return sum(admission.allowed for admission in results)

    admitted = run(main())
    print(f"\nT20 rpm=60, 3 instances, 600 concurrent requests (server clock): admitted {admitted}")
    assert admitted == 60


def window_peak(events: list[tuple[float, int]]) -> int:
    """The most tokens in any 60-second span [t, t + 60) of (time, tokens) events."""
    events.sort()
    peak = 0
    for i, (start, _) in enumerate(events):
        peak = max(peak, sum(tokens for when, tokens in events[i:] if when < start + 60))
    return peak


def test_tpm_10000_with_estimates_replaced_at_settle(instances: list[Limiter], run: Run[Any]) -> None:
    tpm = Limit("key:tokens", "tpm", 10_000)
    rng = random.Random(7)

    async def main() -> list[tuple[float, int]]:
        admitted: list[tuple[float, int]] = []
        for i in range(600):  # one request every 0.1 s over 60 s, round robin over the instances
            now, real = T0 + i / 10, rng.randint(100, 400)
            limiter = instances[i % 3]
            admission = await limiter.admit(ask(tpm, tokens=250, rid=str(i)), now)  # estimated 250
            if admission.allowed:
                assert admission.ticket is not None
                await limiter.settle(admission.ticket, tokens=real, cost=0, now=now)
                admitted.append((now, real))
        return admitted

    admitted = run(main())
    total = sum(tokens for _, tokens in admitted)
    print(
        f"\nT20 tpm=10,000, 3 instances, 600 requests (real 100-400 tokens): admitted {len(admitted)}, {total} tokens"
    )
    assert total <= 10_000 + 400  # the limit + one request
    assert total >= 10_000 - 400


def test_tpm_10000_under_concurrent_batches(instances: list[Limiter], run: Run[Any]) -> None:
    tpm = Limit("key:tokens-batch", "tpm", 10_000)
    rng = random.Random(11)

    async def main() -> list[tuple[float, int]]:
        admitted: list[tuple[float, int]] = []
        for second in range(120):  # two simulated minutes, ten concurrent requests a second
            sizes = [rng.randint(100, 400) for _ in range(10)]
            now = T0 + second
            batch = [instances[i % 3].admit(ask(tpm, tokens=n, rid=f"{second}.{i}"), now) for i, n in enumerate(sizes)]
            for n, admission in zip(sizes, await asyncio.gather(*batch), strict=True):
                if admission.allowed:
                    admitted.append((now, n))
        return admitted

    admitted = run(main())
    peak = window_peak(admitted)
    print(f"\nT20 tpm=10,000, 3 instances, 1,200 requests in concurrent batches: peak 60 s window {peak} tokens")
    assert peak <= 10_000 + 400
