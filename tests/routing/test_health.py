"""Health: cooldowns (allowed_fails, cooldown_time, half-open, retry-after) and slowness against a deployment's
own normal, per request shape."""

from __future__ import annotations

import pytest

from lockgate.routing.health import MAX_COOLDOWN, PROBE_EVERY, Health, HealthPolicy, failure_kind


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ranked(health: Health, *ids: str) -> list[str]:
    return health.rank(list(ids), lambda d: d)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "rate_limit"), (401, "auth"), (403, "auth"), (404, "not_found"), (408, "timeout"), (500, "server"),
     (529, "server"), (400, None), (422, None), (413, None)],
)  # fmt: skip
def test_which_failures_say_something_about_the_deployment(status: int, kind: str | None) -> None:
    assert failure_kind(status) == kind
    assert failure_kind(None) == "connection" and failure_kind(200, timeout=True) == "timeout"


def test_allowed_fails_then_cooldown_then_half_open_then_back() -> None:
    clock = Clock()
    health = Health(HealthPolicy(allowed_fails=2, cooldown_time=5), clock)
    assert not health.failed("a", "server") and not health.failed("a", "server")
    assert health.failed("a", "server")  # the third within a minute
    assert health.status("a")[0] == "cooldown"
    assert ranked(health, "a", "b") == ["b", "a"]  # never dropped: last
    clock.now += 5.1
    assert ranked(health, "a", "b") == ["a", "b"]  # half-open: one trial
    assert ranked(health, "a", "b") == ["b", "a"]  # not a second one while the first is out
    health.succeeded("a", latency=0.5)
    assert health.status("a")[0] == "healthy" and ranked(health, "a", "b") == ["a", "b"]


def test_a_failed_trial_cools_down_twice_as_long_up_to_the_cap() -> None:
    clock = Clock()
    health = Health(HealthPolicy(allowed_fails=0, cooldown_time=10), clock)
    health.failed("a", "server")
    seconds = []
    for _ in range(8):
        start = clock.now
        while health.status("a")[0] == "cooldown":
            clock.now += 1
        seconds.append(clock.now - start)
        assert ranked(health, "a") == ["a"]  # the trial
        health.failed("a", "server")
    assert seconds[:4] == [10, 20, 40, 80] and max(seconds) == MAX_COOLDOWN


def test_retry_after_lengthens_a_cooldown() -> None:
    clock = Clock()
    health = Health(HealthPolicy(allowed_fails=0, cooldown_time=5), clock)
    health.failed("a", "rate_limit", retry_after=30)
    clock.now += 29
    assert health.status("a")[0] == "cooldown"
    clock.now += 2
    assert health.status("a")[0] == "healthy"


def test_sporadic_failures_on_a_busy_deployment_never_cool_it_down() -> None:
    clock = Clock()
    health = Health(HealthPolicy(allowed_fails=3), clock)
    for n in range(1000):  # 1,000 requests in a minute, 1 % failing
        clock.now += 0.06
        if n % 100 == 50:
            assert not health.failed("a", "server")
        else:
            health.succeeded("a", latency=0.2)
    assert health.status("a")[0] == "healthy"


def test_failures_older_than_a_minute_are_forgotten_and_kinds_count_apart() -> None:
    clock = Clock()
    health = Health(HealthPolicy(allowed_fails=1, fails_by_kind={"rate_limit": 5}), clock)
    health.failed("a", "server")
    clock.now += 61
    assert not health.failed("a", "server")  # the first one is gone
    for _ in range(5):
        assert not health.failed("a", "rate_limit")
    assert health.failed("a", "rate_limit")


def test_client_errors_and_disabled_cooldowns_never_cool_down() -> None:
    health = Health(HealthPolicy(allowed_fails=0))
    assert not health.failed("a", None)
    assert health.status("a")[0] == "healthy"
    off = Health(HealthPolicy(allowed_fails=0, disable_cooldowns=True))
    assert not off.failed("a", "server") and off.status("a")[0] == "healthy"


def test_an_answer_to_a_request_sent_before_the_cooldown_does_not_end_it() -> None:
    clock = Clock()
    health = Health(HealthPolicy(allowed_fails=0, cooldown_time=5), clock)
    health.failed("a", "server")
    health.succeeded("a", latency=1.0)  # sent earlier, answered now
    assert health.status("a")[0] == "cooldown"


def test_a_trial_that_never_reports_is_replaced_after_the_probe_timeout() -> None:
    clock = Clock()
    health = Health(HealthPolicy(allowed_fails=0, cooldown_time=1), clock)
    health.failed("a", "server")
    clock.now += 2
    assert ranked(health, "a", "b")[0] == "a"  # the trial, which is then lost (client went away)
    assert ranked(health, "a", "b")[0] == "b"
    clock.now += 61
    assert ranked(health, "a", "b")[0] == "a"


def test_every_deployment_cooling_down_are_still_tried_soonest_back_first() -> None:
    clock = Clock()
    health = Health(HealthPolicy(allowed_fails=0, cooldown_time=10), clock)
    health.failed("a", "server")
    clock.now += 5
    health.failed("b", "server")
    assert ranked(health, "b", "a") == ["a", "b"]


def feed(health: Health, deployment: str, ttft: float, n: int, prompt_tokens: int = 500) -> None:
    for _ in range(n):
        health.succeeded(deployment, latency=ttft + 1.0, ttft=ttft, prompt_tokens=prompt_tokens, output_tokens=100)


def test_slow_first_tokens_degrade_a_deployment_and_it_recovers() -> None:
    health = Health(HealthPolicy(degrade_factor=3.0, min_samples=20))
    feed(health, "a", 0.3, 50)
    feed(health, "b", 0.3, 50)
    assert health.status("a")[0] == "healthy"
    feed(health, "a", 2.0, 6)  # first tokens 6-7x slower than its normal
    state, why = health.status("a")
    assert state == "degraded" and "ttft" in why
    assert ranked(health, "a", "b") == ["b", "a"]
    feed(health, "a", 0.3, 10)
    assert health.status("a")[0] == "healthy"


def test_a_long_prompt_is_not_mistaken_for_a_slow_provider() -> None:
    health = Health(HealthPolicy(min_samples=20))
    feed(health, "a", 0.3, 50, prompt_tokens=500)
    feed(health, "a", 3.0, 50, prompt_tokens=100_000)  # long prompts take long: their own normal
    assert health.status("a")[0] == "healthy"
    feed(health, "a", 3.0, 6, prompt_tokens=500)  # but a short prompt that slow is not normal
    assert health.status("a")[0] == "degraded"


def test_trickling_tokens_degrade_a_deployment() -> None:
    health = Health(HealthPolicy(min_samples=20))
    for _ in range(40):
        health.succeeded("a", latency=1.3, ttft=0.3, output_tokens=100)  # 100 tokens/s
    for _ in range(6):
        health.succeeded("a", latency=10.3, ttft=0.3, output_tokens=100)  # 10 tokens/s
    state, why = health.status("a")
    assert state == "degraded" and "per_token" in why


def test_non_streamed_latency_is_compared_by_output_size() -> None:
    health = Health(HealthPolicy(min_samples=20))
    for _ in range(40):
        health.succeeded("a", latency=0.5, output_tokens=20)
        health.succeeded("a", latency=8.0, output_tokens=2000)
    assert health.status("a")[0] == "healthy"
    for _ in range(6):
        health.succeeded("a", latency=8.0, output_tokens=20)
    assert health.status("a")[0] == "degraded"


def test_an_slo_degrades_without_history() -> None:
    health = Health(HealthPolicy(slo_ttft=1.0))
    feed(health, "a", 2.5, 3)
    assert health.status("a") == ("degraded", "time to first token 2.50 s above the SLO 1 s")


def test_a_degraded_deployment_still_gets_a_request_now_and_then() -> None:
    health = Health(HealthPolicy(min_samples=20))
    feed(health, "a", 0.3, 50)
    feed(health, "a", 3.0, 6)
    firsts = [ranked(health, "a", "b")[0] for _ in range(PROBE_EVERY * 5)]
    assert firsts.count("a") == 5


def test_the_normal_does_not_learn_a_slow_spell() -> None:
    clock = Clock()
    health = Health(HealthPolicy(min_samples=20), clock)
    feed(health, "a", 0.3, 50)
    feed(health, "a", 3.0, 300)  # a long slow spell...
    assert health.status("a")[0] == "degraded"  # ...is still not normal
    clock.now += 601
    feed(health, "a", 3.0, 300)  # but after MAX_FROZEN it is accepted as the new normal
    assert health.status("a")[0] == "healthy"


def test_a_deployment_failing_most_requests_is_cooled_down_despite_some_successes() -> None:
    health = Health(HealthPolicy(allowed_fails=3))
    cooled = False
    for _ in range(10):  # two failures, one success, again and again
        cooled = health.failed("a", "server") or health.failed("a", "server") or cooled
        if cooled:
            break
        health.succeeded("a", latency=0.2)
    assert cooled and health.status("a")[0] == "cooldown"
