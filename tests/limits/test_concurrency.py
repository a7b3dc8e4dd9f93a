"""Budgets under a thousand concurrent requests (security.md B1 / T19), on one limiter and on three instances.

Every request runs the pipeline's dance (admit; seed a cold window from the 'store'; admit again), so the
first-request race on a new budget (LiteLLM #40095) is part of each run. Three Redis instances are three
RedisLimiters with their own client sharing the Redis. The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from lockgate.limits import Limit, Limiter
from tests.limits.conftest import Backend, Run, admit_seeding, ask

SETUPS = ["local", "redis", "redis x3"]
BUDGET = 1.0
ESTIMATE = 0.01


@pytest.fixture(params=SETUPS)
def limiters(request: pytest.FixtureRequest, run: Run[Any]) -> Any:
    from tests.limits.conftest import flush_db13

    name: str = request.param
    if name != "local":
        flush_db13()
    harness = Backend("local" if name == "local" else "redis", run)
    try:
        yield name, [harness.make() for _ in range(3 if name == "redis x3" else 1)]
    finally:
        harness.close()


@dataclass
class Outcome:
    admitted: int
    spent: float
    estimated: float  # the sum of the admitted requests' estimates
    excess: float  # the sum over admitted requests of max(0, real - estimate)
    degraded: int


def race(
    limiters: list[Limiter],
    run: Run[Any],
    real_cost: Callable[[random.Random], float],
    *,
    requests: int = 1000,
    in_flight: int | None = None,
    seeded: float = 0.0,
    hold: float = 0.002,
) -> Outcome:
    """``requests`` tasks released together; each admitted one holds ~``hold`` s, then settles its real cost."""
    budget = Limit("end_user:new-customer", "budget", BUDGET)
    rng = random.Random(1234)
    costs = [real_cost(rng) for _ in range(requests)]
    holds = [rng.uniform(0, hold) for _ in range(requests)]

    async def main() -> Outcome:
        start = asyncio.Event()
        gate = asyncio.Semaphore(in_flight or requests)
        admitted: list[int] = []
        degraded = 0

        async def one(i: int) -> None:
            nonlocal degraded
            limiter = limiters[i % len(limiters)]
            await start.wait()
            async with gate:
                admission = await admit_seeding(limiter, ask(budget, cost=ESTIMATE, rid=f"r{i}"), spent=seeded)
                degraded += admission.degraded
                if not admission.allowed:
                    return
                assert admission.ticket is not None
                admitted.append(i)
                await asyncio.sleep(holds[i])
                await limiter.settle(admission.ticket, tokens=0, cost=costs[i])

        tasks = [asyncio.create_task(one(i)) for i in range(requests)]
        await asyncio.sleep(0)
        start.set()
        await asyncio.gather(*tasks)
        spent = await limiters[0].spent(budget)
        excess = sum(max(0.0, costs[i] - ESTIMATE) for i in admitted)
        return Outcome(len(admitted), spent, ESTIMATE * len(admitted), excess, degraded)

    outcome: Outcome = run(main())
    return outcome


def report(setup: str, case: str, outcome: Outcome) -> None:
    over = outcome.spent - BUDGET
    print(f"\nT19 {setup:8} {case:32} admitted={outcome.admitted:4} spent={outcome.spent:.9f} overspend={over:+.9f}")


def test_real_cost_equal_to_the_estimate_admits_exactly_the_budget(limiters: Any, run: Run[Any]) -> None:
    setup, made = limiters
    outcome = race(made, run, lambda rng: ESTIMATE)
    report(setup, "real = estimate", outcome)
    assert outcome.degraded == 0
    assert outcome.admitted == 100  # floor($1 / $0.01), exactly
    assert outcome.spent == pytest.approx(BUDGET, abs=1e-9)


def test_a_new_budget_seeded_from_the_store_counts_its_spend_once(limiters: Any, run: Run[Any]) -> None:
    setup, made = limiters
    outcome = race(made, run, lambda rng: ESTIMATE, seeded=0.5)  # every request seeds the same 0.5; one wins
    report(setup, "cold window seeded at $0.50", outcome)
    assert outcome.admitted == 50
    assert outcome.spent == pytest.approx(BUDGET, abs=1e-9)


def test_an_estimate_that_is_the_maximum_cost_never_overspends(limiters: Any, run: Run[Any]) -> None:
    setup, made = limiters
    outcome = race(made, run, lambda rng: ESTIMATE * rng.uniform(0.5, 1.0))  # max_tokens fixed (T19's wording)
    report(setup, "real 0.5-1.0x estimate", outcome)
    assert outcome.admitted >= 100
    assert outcome.spent <= BUDGET + 1e-9


def test_real_costs_above_the_estimate_overspend_by_at_most_the_in_flight_excess(limiters: Any, run: Run[Any]) -> None:
    setup, made = limiters
    outcome = race(made, run, lambda rng: ESTIMATE * rng.uniform(0.5, 1.5))
    report(setup, "real 0.5-1.5x, 1000 in flight", outcome)
    assert outcome.admitted >= 66  # at least floor($1 / $0.015)
    # admission keeps spent + reserved + estimate <= budget; what can go over is only what requests already
    # admitted spend beyond their estimate (the upstream has spent it before settle can refuse anything)
    assert outcome.spent <= BUDGET + outcome.excess + 1e-9


def test_real_costs_above_the_estimate_with_three_in_flight_overspend_by_less_than_one_request(
    limiters: Any, run: Run[Any]
) -> None:
    setup, made = limiters
    outcome = race(made, run, lambda rng: ESTIMATE * rng.uniform(0.5, 1.5), in_flight=3)
    report(setup, "real 0.5-1.5x, 3 in flight", outcome)
    assert outcome.spent <= BUDGET + 1.5 * ESTIMATE + 1e-9  # one request's largest real cost
