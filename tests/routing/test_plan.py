"""Plan: what a request tries after each kind of failure (retries, retry policies, the three kinds of fallbacks,
backoff, retry-after, the retry budget, health)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from lockgate.config import parse_settings
from lockgate.routing.health import Health, HealthPolicy
from lockgate.routing.plan import Failure, Plan, RetryBudget
from lockgate.routing.router import Router


def dep(name: str, model: str, **params: object) -> dict[str, object]:
    return {"model_name": name, "litellm_params": {"model": model, "api_base": "http://127.0.0.1:1/v1", **params}}


GROUPS = [dep("g", "openai/a", order=1), dep("g", "openai/b", order=2), dep("f", "openai/c"), dep("big", "openai/d"),
          dep("safe", "openai/e"), dep("last", "openai/z")]  # fmt: skip


def start(router_settings: dict[str, Any] | None = None, model_list: list[Any] | None = None, **kw: Any) -> Plan:
    settings = parse_settings({"model_list": model_list or GROUPS, "router_settings": router_settings or {}}, {})
    return Router(settings, random.Random(1)).start("g", **kw)


def walk(plan: Plan, *kinds: str) -> list[str | None]:
    """The upstream model tried first, then after each failure (None: the client gets the error)."""
    seen: list[str | None] = [plan.current.deployment.upstream_model]
    for kind in kinds:
        step = plan.after(Failure(kind))
        seen.append(None if step is None else step[0].deployment.upstream_model)
        if step is None:
            break
    return seen


def test_a_clients_bad_request_is_not_retried() -> None:
    assert walk(start({"num_retries": 3, "fallbacks": [{"g": ["f"]}]}), "bad_request") == ["a", None]


def test_retries_go_to_other_deployments_then_to_the_fallbacks() -> None:
    plan = start({"num_retries": 2, "fallbacks": [{"g": ["f"]}]})
    assert walk(plan, "server", "server", "server", "server", "server", "server") == [
        "a", "b", "a", "c", "c", "c", None]  # fmt: skip
    assert plan.attempts == 6


def test_retry_policy_per_kind_and_per_group() -> None:
    policy = {"RateLimitErrorRetries": 0, "InternalServerErrorRetries": 1}
    plan = start({"num_retries": 5, "retry_policy": policy, "fallbacks": [{"g": ["f"]}]})
    assert walk(plan, "rate_limit") == ["a", "c"]  # straight to the fallback
    plan = start({"num_retries": 5, "retry_policy": policy, "model_group_retry_policy": {
        "g": {"RateLimitErrorRetries": 2}}, "fallbacks": [{"g": ["f"]}]})  # fmt: skip
    assert walk(plan, "rate_limit", "rate_limit", "rate_limit") == ["a", "b", "a", "c"]


def test_context_window_and_content_policy_have_their_own_fallbacks() -> None:
    settings = {"num_retries": 2, "fallbacks": [{"g": ["f"]}], "context_window_fallbacks": [{"g": ["big"]}],
                "content_policy_fallbacks": [{"g": ["safe"]}]}  # fmt: skip
    assert walk(start(settings), "context_window") == ["a", "d"]
    assert walk(start(settings), "content_policy") == ["a", "e"]
    assert walk(start({"num_retries": 2, "fallbacks": [{"g": ["f"]}]}), "context_window") == ["a", None]


def test_default_fallbacks_when_the_group_has_none_and_max_fallbacks() -> None:
    assert walk(start({"default_fallbacks": ["last"]}), "server") == ["a", "z"]
    settings = {"fallbacks": [{"g": ["f", "big", "safe"]}], "max_fallbacks": 2}
    assert walk(start(settings), "server", "server", "server") == ["a", "c", "d", None]


def test_fallbacks_never_loop() -> None:
    settings = {"fallbacks": [{"g": ["f"]}, {"f": ["g"]}]}
    assert walk(start(settings), "server", "server") == ["a", "c", None]


def test_a_lone_deployment_is_retried_after_a_jittered_backoff() -> None:
    model_list = [dep("g", "openai/a")]
    plan = start({"num_retries": 4}, model_list)
    waits = []
    for _ in range(4):
        step = plan.after(Failure("server"))
        assert step is not None and step[0].deployment.upstream_model == "a"
        waits.append(step[1])
    assert plan.after(Failure("server")) is None
    assert all(0 <= wait <= cap for wait, cap in zip(waits, (0.25, 0.5, 1.0, 2.0), strict=True))


def test_retry_after_is_honoured_when_short_and_sends_elsewhere_when_long() -> None:
    model_list = [dep("g", "openai/a"), dep("f", "openai/c")]
    plan = start({"num_retries": 2, "fallbacks": [{"g": ["f"]}]}, model_list)
    step = plan.after(Failure("rate_limit", retry_after=2.0))
    assert step is not None and step[0].deployment.upstream_model == "a" and step[1] >= 2.0
    step = plan.after(Failure("rate_limit", retry_after=60.0))
    assert step is not None and step[0].deployment.upstream_model == "c" and step[1] == 0.0


def test_auth_and_not_found_are_not_retried_on_the_same_deployment_unless_asked() -> None:
    model_list = [dep("g", "openai/a"), dep("f", "openai/c")]
    assert walk(start({"num_retries": 3, "fallbacks": [{"g": ["f"]}]}, model_list), "auth") == ["a", "c"]
    plan = start({"num_retries": 3, "retry_policy": {"AuthenticationErrorRetries": 1}}, model_list)
    assert walk(plan, "auth", "auth") == ["a", "a", None]
    assert walk(start({"num_retries": 3}), "not_found") == ["a", "b"]  # another deployment: yes


def test_router_settings_retry_after_is_the_least_wait() -> None:
    step = start({"num_retries": 1, "retry_after": 0.5}).after(Failure("server"))
    assert step is not None and step[1] == 0.5


def test_the_retry_budget_stops_retries_when_spent() -> None:
    clock = [0.0]
    budget = RetryBudget(ratio=0.5, floor=1.0, window=2.0, clock=lambda: clock[0])
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]  # the floor: 1/s over 2 s
    for _ in range(4):
        budget.request()  # 4 requests earn 2 retries
    assert [budget.withdraw() for _ in range(3)] == [True, True, False]
    clock[0] += 1.0
    assert budget.withdraw() and not budget.withdraw()
    assert budget.refused == 3
    spent = RetryBudget(ratio=0.0, floor=0.0, window=1.0, clock=lambda: 0.0)
    spent.withdraw()
    plan = start({"num_retries": 3, "fallbacks": [{"g": ["f"]}]}, budget=spent)
    assert walk(plan, "server") == ["a", None]


def test_health_puts_a_cooling_deployment_last() -> None:
    health = Health(HealthPolicy(allowed_fails=0, cooldown_time=60))
    router = Router(parse_settings({"model_list": GROUPS, "router_settings": {"num_retries": 1}}, {}))
    first = router.start("g", health=health).current.deployment
    assert first.upstream_model == "a"  # order 1
    health.failed(first.id, "server")
    assert router.start("g", health=health).current.deployment.upstream_model == "b"


@pytest.mark.parametrize("kind", ["server", "rate_limit", "timeout", "connection"])
def test_every_retryable_kind_moves_on(kind: str) -> None:
    assert walk(start({"num_retries": 1}), kind) == ["a", "b"]
