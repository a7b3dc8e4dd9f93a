"""The contract every limiter keeps: each test runs once per backend (LocalLimiter, RedisLimiter; see conftest).

Clocks are simulated with ``now=`` (seconds from T0, a minute boundary), never by sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from lockgate.limits import Limit, Limiter, Window
from tests.limits.conftest import T0, Backend, Run, admit_seeding, ask

KEY_RPM = Limit("key:abc", "rpm", 5)
KEY_TPM = Limit("key:abc", "tpm", 1000)
KEY_PARALLEL = Limit("key:abc", "parallel", 2)
EVER = Limit("key:abc", "budget", 1.0)


def at(seconds: float) -> float:
    return T0 + seconds


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


# --- rpm -------------------------------------------------------------------------------------------------


def test_rpm_admits_exactly_the_limit_then_frees_after_60s(limiter: Limiter, run: Run[Any]) -> None:
    async def body() -> None:
        for i in range(5):
            admission = await limiter.admit(ask(KEY_RPM), at(i * 0.1))
            assert admission.allowed and admission.remaining[("key:abc", "rpm")] == 4 - i
        denied = await limiter.admit(ask(KEY_RPM), at(10))
        assert not denied.allowed and denied.denied == KEY_RPM and denied.ticket is None
        assert denied.retry_after == pytest.approx(50)  # the bucket of second 0 leaves the window at 60
        assert denied.remaining == {("key:abc", "rpm"): 0}
        assert not (await limiter.admit(ask(KEY_RPM), at(59.99))).allowed
        for _ in range(5):
            assert (await limiter.admit(ask(KEY_RPM), at(60))).allowed
        assert not (await limiter.admit(ask(KEY_RPM), at(60.5))).allowed

    run(body())


def test_rpm_window_slides_rather_than_resetting_on_the_minute(limiter: Limiter, run: Run[Any]) -> None:
    rpm = Limit("key:slide", "rpm", 60)

    async def body() -> None:
        for second in range(30, 90):  # 60 requests, one a second, spanning the minute boundary at 60
            assert (await limiter.admit(ask(rpm), at(second))).allowed, second
        # a fixed window [60, 120) would hold 30 here and admit; the sliding one holds 60
        refused = await limiter.admit(ask(rpm), at(89.5))
        assert not refused.allowed and refused.retry_after == pytest.approx(0.5)  # second 30 leaves at 90
        assert (await limiter.admit(ask(rpm), at(90))).allowed
        assert not (await limiter.admit(ask(rpm), at(90.9))).allowed
        assert (await limiter.admit(ask(rpm), at(91))).allowed

    run(body())


def test_rpm_retry_after_waits_for_enough_of_the_window(limiter: Limiter, run: Run[Any]) -> None:
    rpm = Limit("key:retry", "rpm", 3)

    async def body() -> None:
        for second in (0, 20, 40):
            assert (await limiter.admit(ask(rpm), at(second))).allowed
        refused = await limiter.admit(ask(rpm), at(45.25))
        assert refused.retry_after == pytest.approx(14.75)  # the request of second 0 leaves at 60
        assert (await limiter.admit(ask(rpm), at(45.25 + 14.75))).allowed
        assert (await limiter.admit(ask(rpm), at(61))).retry_after == pytest.approx(19)

    run(body())


# --- tpm -------------------------------------------------------------------------------------------------


def test_tpm_reserves_the_estimate_and_settle_replaces_it(limiter: Limiter, run: Run[Any]) -> None:
    async def body() -> None:
        tickets = []
        for used in (0, 400, 800):  # admits while used + reserved < limit: the third goes over
            admission = await limiter.admit(ask(KEY_TPM, tokens=400), at(1))
            assert admission.allowed and admission.remaining[("key:abc", "tpm")] == max(0, 1000 - used - 400)
            tickets.append(admission.ticket)
        refused = await limiter.admit(ask(KEY_TPM, tokens=1), at(2))
        assert not refused.allowed and refused.denied == KEY_TPM and refused.retry_after == pytest.approx(59)
        for ticket in tickets:
            assert ticket is not None
            await limiter.settle(ticket, tokens=100, cost=0, now=at(3))  # 300 tokens really used
        admission = await limiter.admit(ask(KEY_TPM, tokens=50), at(4))
        assert admission.allowed and admission.remaining[("key:abc", "tpm")] == 1000 - 300 - 50

    run(body())


def test_tpm_settle_after_the_bucket_left_the_window_changes_nothing(limiter: Limiter, run: Run[Any]) -> None:
    async def body() -> None:
        first = await limiter.admit(ask(KEY_TPM, tokens=500), at(0))
        assert first.ticket is not None
        await limiter.settle(first.ticket, tokens=5000, cost=0, now=at(61))
        later = await limiter.admit(ask(KEY_TPM, tokens=10), at(61))
        assert later.allowed and later.remaining[("key:abc", "tpm")] == 990

    run(body())


def test_tpm_settle_is_idempotent(limiter: Limiter, run: Run[Any]) -> None:
    async def body() -> None:
        first = await limiter.admit(ask(KEY_TPM, tokens=500), at(0))
        assert first.ticket is not None
        await limiter.settle(first.ticket, tokens=100, cost=0, now=at(1))
        await limiter.settle(first.ticket, tokens=100, cost=0, now=at(1))
        assert (await limiter.admit(ask(KEY_TPM, tokens=0), at(2))).remaining[("key:abc", "tpm")] == 900

    run(body())


# --- parallel --------------------------------------------------------------------------------------------


def test_parallel_slots_are_taken_and_released_once(limiter: Limiter, run: Run[Any]) -> None:
    async def body() -> None:
        a = await limiter.admit(ask(KEY_PARALLEL), at(0))
        b = await limiter.admit(ask(KEY_PARALLEL), at(0))
        assert a.allowed and b.allowed and a.remaining == {}  # parallel has no remaining header
        refused = await limiter.admit(ask(KEY_PARALLEL), at(1))
        assert not refused.allowed and refused.denied == KEY_PARALLEL and refused.retry_after is None
        assert a.ticket is not None
        await limiter.settle(a.ticket, tokens=0, cost=0, now=at(2))
        await limiter.settle(a.ticket, tokens=0, cost=0, now=at(2))  # a second settle frees nothing more
        assert (await limiter.admit(ask(KEY_PARALLEL), at(3))).allowed
        assert not (await limiter.admit(ask(KEY_PARALLEL), at(3))).allowed

    run(body())


# --- budget ----------------------------------------------------------------------------------------------


def test_budget_is_cold_until_seeded_and_seed_never_overwrites(limiter: Limiter, run: Run[Any]) -> None:
    async def body() -> None:
        rpm = Limit("key:cold", "rpm", 10)
        cold = await limiter.admit(ask(rpm, EVER, cost=0.1), at(0))
        assert not cold.allowed and cold.denied is None and cold.cold == (EVER,) and cold.ticket is None
        await limiter.seed(EVER, 0.5, at(0))
        await limiter.seed(EVER, 0.9, at(0))  # someone else seeded first: ignored
        assert await limiter.spent(EVER, at(0)) == pytest.approx(0.5)
        admission = await limiter.admit(ask(rpm, EVER, cost=0.1), at(0))
        assert admission.allowed and admission.remaining[("key:abc", "budget")] == pytest.approx(0.4)
        assert admission.remaining[("key:cold", "rpm")] == 9  # the cold attempt counted nothing

    run(body())


def test_budget_reserves_then_settles_to_the_real_cost(limiter: Limiter, run: Run[Any]) -> None:
    async def body() -> None:
        tickets = []
        for _ in range(3):
            admission = await admit_seeding(limiter, ask(EVER, cost=0.3), at(0))
            assert admission.allowed
            tickets.append(admission.ticket)
        refused = await limiter.admit(ask(EVER, cost=0.3), at(0))  # 0.9 reserved + 0.3 > 1.0
        assert not refused.allowed and refused.denied == EVER and refused.retry_after is None  # lifetime budget
        assert await limiter.spent(EVER, at(0)) == 0
        assert tickets[0] is not None
        await limiter.settle(tickets[0], tokens=0, cost=0.1, now=at(1))
        assert await limiter.spent(EVER, at(1)) == pytest.approx(0.1)
        exact = await limiter.admit(ask(EVER, cost=0.3), at(1))  # 0.1 + 0.6 + 0.3 == 1.0 exactly: admitted
        assert exact.allowed and exact.remaining[("key:abc", "budget")] == 0
        assert not (await limiter.admit(ask(EVER, cost=0.000000001), at(1))).allowed  # one nano-dollar over

    run(body())


def test_budget_settle_is_idempotent(limiter: Limiter, run: Run[Any]) -> None:
    async def body() -> None:
        admission = await admit_seeding(limiter, ask(EVER, cost=0.3), at(0))
        assert admission.ticket is not None
        for _ in range(3):
            await limiter.settle(admission.ticket, tokens=0, cost=0.25, now=at(1))
        assert await limiter.spent(EVER, at(1)) == pytest.approx(0.25)
        assert (await limiter.admit(ask(EVER, cost=0.75), at(1))).allowed

    run(body())


def test_hourly_budget_starts_afresh_each_hour(limiter: Limiter, run: Run[Any]) -> None:
    hourly = Limit("team:t1", "budget", 1.0, Window.parse("1h", datetime(2025, 12, 31, 23, 30, tzinfo=UTC)))

    async def body() -> None:
        first = await admit_seeding(limiter, ask(hourly, cost=0.8), at(0))  # window 23:30 → 00:30
        assert first.allowed and first.ticket is not None
        await limiter.settle(first.ticket, tokens=0, cost=0.8, now=at(60))
        refused = await limiter.admit(ask(hourly, cost=0.8), at(60))
        assert refused.denied == hourly and refused.retry_after == pytest.approx(1800 - 60)  # until 00:30
        assert not (await limiter.admit(ask(hourly, cost=0.8), at(1799.999))).allowed
        fresh = await limiter.admit(ask(hourly, cost=0.8), at(1800))
        assert not fresh.allowed and fresh.cold == (hourly,)  # a new window: the store says what it holds
        assert (await admit_seeding(limiter, ask(hourly, cost=0.8), at(1800))).allowed
        assert await limiter.spent(hourly, at(1799)) == pytest.approx(0.8)

    run(body())


def test_daily_budget(limiter: Limiter, run: Run[Any]) -> None:
    daily = Limit("user:u1", "budget", 2.0, Window.parse("1d", datetime(2025, 12, 1, 6, tzinfo=UTC)))

    async def body() -> None:
        now = utc(2026, 1, 5, 5, 59)
        admission = await admit_seeding(limiter, ask(daily, cost=1.5), now, spent=0.4)
        assert admission.allowed and admission.remaining[("user:u1", "budget")] == pytest.approx(0.1)
        refused = await limiter.admit(ask(daily, cost=0.2), now)
        assert refused.retry_after == pytest.approx(60)  # the day turns at 06:00
        assert (await admit_seeding(limiter, ask(daily, cost=2.0), utc(2026, 1, 5, 6))).allowed

    run(body())


def test_monthly_budget_across_a_month_end(limiter: Limiter, run: Run[Any]) -> None:
    monthly = Limit("org:o1", "budget", 10.0, Window.parse("1mo", datetime(2025, 11, 15, 12, tzinfo=UTC)))

    async def body() -> None:
        before_the_turn = utc(2026, 2, 15, 11, 59, 59)  # still the window Jan 15 12:00 → Feb 15 12:00
        admission = await admit_seeding(limiter, ask(monthly, cost=4), utc(2026, 1, 31, 23))
        assert admission.allowed and admission.ticket is not None
        await limiter.settle(admission.ticket, tokens=0, cost=4, now=utc(2026, 2, 1, 1))  # across Jan → Feb
        assert await limiter.spent(monthly, before_the_turn) == pytest.approx(4)
        refused = await limiter.admit(ask(monthly, cost=7), before_the_turn)
        assert refused.denied == monthly and refused.retry_after == pytest.approx(1)
        assert (await limiter.admit(ask(monthly, cost=7), utc(2026, 2, 15, 12))).cold == (monthly,)
        assert await limiter.spent(monthly, utc(2026, 2, 15, 12)) == 0

    run(body())


def test_monthly_budget_anchored_on_the_31st(limiter: Limiter, run: Run[Any]) -> None:
    monthly = Limit("org:o31", "budget", 1.0, Window.parse("1mo", datetime(2026, 1, 31, 10, tzinfo=UTC)))

    async def body() -> None:
        spend = await admit_seeding(limiter, ask(monthly, cost=1.0), utc(2026, 2, 28, 9, 59))  # Jan 31 → Feb 28
        assert spend.allowed and spend.ticket is not None
        await limiter.settle(spend.ticket, tokens=0, cost=1.0, now=utc(2026, 2, 28, 9, 59))
        refused = await limiter.admit(ask(monthly, cost=0.01), utc(2026, 2, 28, 9, 59))
        assert refused.retry_after == pytest.approx(60)
        assert (await admit_seeding(limiter, ask(monthly, cost=1.0), utc(2026, 2, 28, 10))).allowed  # → Mar 31
        assert (await admit_seeding(limiter, ask(monthly, cost=1.0), utc(2026, 3, 31, 10))).allowed  # → Apr 30
        assert await limiter.spent(monthly, utc(2026, 3, 30)) == 0  # reserved, never settled: not spent

    run(body())


def test_reservation_across_a_window_boundary_counts_once_in_its_own_window(limiter: Limiter, run: Run[Any]) -> None:
    hourly = Limit("key:edge", "budget", 1.0, Window.parse("1h", datetime(2026, 1, 1, tzinfo=UTC)))

    async def body() -> None:
        early = await admit_seeding(limiter, ask(hourly, cost=0.5), at(3599))
        assert early.allowed and early.ticket is not None
        fresh = await admit_seeding(limiter, ask(hourly, cost=0.5), at(3600), spent=0.0)
        assert fresh.allowed and fresh.remaining[("key:edge", "budget")] == pytest.approx(0.5)
        await limiter.settle(early.ticket, tokens=0, cost=0.6, now=at(3605))  # settled in the next window
        await limiter.settle(early.ticket, tokens=0, cost=0.6, now=at(3606))
        assert await limiter.spent(hourly, at(3599)) == pytest.approx(0.6)  # once, in the window it ran in
        assert await limiter.spent(hourly, at(3605)) == 0
        assert (await limiter.admit(ask(hourly, cost=0.5), at(3605))).allowed  # the new window: 0.5 + 0.5

    run(body())


# --- several limits ---------------------------------------------------------------------------------------


def test_several_limits_are_all_or_nothing(limiter: Limiter, run: Run[Any]) -> None:
    rpm, tpm = Limit("key:k", "rpm", 10), Limit("key:k", "tpm", 1000)
    parallel, team = Limit("key:k", "parallel", 1), Limit("team:t", "budget", 1.0)

    async def body() -> None:
        await limiter.seed(team, 0.95, at(0))
        refused = await limiter.admit(ask(rpm, tpm, team, parallel, tokens=100, cost=0.1), at(0))
        assert not refused.allowed and refused.denied == team and refused.retry_after is None
        admission = await limiter.admit(ask(rpm, tpm, parallel, tokens=100), at(1))  # nothing was counted
        assert admission.allowed
        assert admission.remaining == {("key:k", "rpm"): 9, ("key:k", "tpm"): 900}
        second = await limiter.admit(ask(rpm, tpm, parallel, tokens=100), at(2))
        assert not second.allowed and second.denied == parallel
        assert admission.ticket is not None
        await limiter.settle(admission.ticket, tokens=100, cost=0, now=at(3))
        third = await limiter.admit(ask(rpm, tpm, parallel, tokens=100), at(3))
        assert third.remaining == {("key:k", "rpm"): 8, ("key:k", "tpm"): 800}

    run(body())


def test_a_cold_budget_counts_nothing_and_the_first_refusal_is_named(limiter: Limiter, run: Run[Any]) -> None:
    rpm, budget = Limit("key:c", "rpm", 1), Limit("key:c", "budget", 1.0)

    async def body() -> None:
        cold = await limiter.admit(ask(rpm, budget, cost=0.1), at(0))
        assert cold.cold == (budget,) and cold.denied is None
        assert (await limiter.admit(ask(rpm), at(0))).allowed  # the cold attempt left the rpm alone
        both = await limiter.admit(ask(budget, rpm, cost=0.1), at(0))
        assert both.denied == rpm and both.cold == (budget,)  # a refusal is named even when a budget is cold

    run(body())


def test_remaining_covers_every_rpm_tpm_and_budget_limit(limiter: Limiter, run: Run[Any]) -> None:
    limits = (
        Limit("key:r", "rpm", 100),
        Limit("key:r", "tpm", 10_000),
        Limit("key:r", "parallel", 4),
        Limit("key:r", "budget", 5.0),
        Limit("team:r", "rpm", 1000),
        Limit("team:r", "budget", 50.0),
    )

    async def body() -> None:
        await limiter.seed(limits[3], 1.25, at(0))
        await limiter.seed(limits[5], 10.0, at(0))
        admission = await limiter.admit(ask(*limits, tokens=700, cost=0.25), at(0))
        assert admission.remaining == {
            ("key:r", "rpm"): 99,
            ("key:r", "tpm"): 9300,
            ("key:r", "budget"): pytest.approx(3.5),
            ("team:r", "rpm"): 999,
            ("team:r", "budget"): pytest.approx(39.75),
        }

    run(body())


# --- reservations of tickets never settled ----------------------------------------------------------------


def test_unsettled_reservations_expire_after_the_reservation_ttl(backend: Backend, run: Run[Any]) -> None:
    limiter = backend.make(reservation_ttl=100)
    parallel, budget = Limit("key:lost", "parallel", 1), Limit("key:lost", "budget", 1.0)

    async def body() -> None:
        lost = await admit_seeding(limiter, ask(parallel, budget, cost=0.6), at(0))  # its instance dies
        assert lost.allowed and lost.ticket is not None
        assert (await limiter.admit(ask(parallel, budget, cost=0.6), at(99.9))).denied == parallel
        later = await limiter.admit(ask(parallel, budget, cost=0.6), at(100))
        assert later.allowed and later.ticket is not None
        # the lost request did finish after all, late: its cost counts once
        await limiter.settle(lost.ticket, tokens=0, cost=0.5, now=at(150))
        await limiter.settle(later.ticket, tokens=0, cost=0.6, now=at(151))
        assert await limiter.spent(budget, at(151)) == pytest.approx(1.1)
        assert (await limiter.admit(ask(parallel), at(152))).allowed

    run(body())


def test_settle_with_no_settleable_limits_is_harmless(limiter: Limiter, run: Run[Any]) -> None:
    async def body() -> None:
        admission = await limiter.admit(ask(KEY_RPM), at(0))
        assert admission.ticket is not None and admission.ticket.limits == ()
        await limiter.settle(admission.ticket, tokens=10, cost=1.0, now=at(1))

    run(body())


def test_zero_limits_refuse_everything(limiter: Limiter, run: Run[Any]) -> None:
    async def body() -> None:
        for zero in (Limit("key:z", "rpm", 0), Limit("key:z", "tpm", 0), Limit("key:z", "parallel", 0)):
            refused = await limiter.admit(ask(zero, tokens=1), at(0))
            assert not refused.allowed and refused.denied == zero
            assert refused.retry_after == (None if zero.kind == "parallel" else 60)
        nothing = Limit("key:z", "budget", 0.0)
        await limiter.seed(nothing, 0.0, at(0))
        assert not (await limiter.admit(ask(nothing, cost=0.000001), at(0))).allowed

    run(body())
