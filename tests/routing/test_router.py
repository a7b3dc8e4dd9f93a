"""Router: model groups, wildcards, weighted order, order tiers, retries and fallbacks."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from lockgate.config import parse_settings
from lockgate.errors import ModelNotFound, PermissionDenied
from lockgate.routing.health import Health
from lockgate.routing.router import Router


def router(model_list: list[dict[str, object]], seed: int = 1, **settings: object) -> Router:
    return Router(parse_settings({"model_list": model_list, "litellm_settings": settings}, {}), random.Random(seed))


def dep(name: str, model: str, model_info: dict[str, object] | None = None, **params: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "model_name": name,
        "litellm_params": {"model": model, "api_base": "http://127.0.0.1:1/v1", **params},
    }
    return entry if model_info is None else {**entry, "model_info": model_info}


def test_exact_group_and_unknown_model() -> None:
    r = router([dep("a", "openai/x")])
    assert [t.deployment.upstream_model for t in r.plan("a")] == ["x"]
    with pytest.raises(ModelNotFound):
        list(r.plan("b"))


def test_wildcards_most_specific_first() -> None:
    r = router([dep("*", "openai/*"), dep("groq/*", "groq/*")])
    assert r.group("groq/llama-3")[0].deployment.provider == "groq"
    assert r.group("groq/llama-3")[0].deployment.upstream_model == "llama-3"
    assert r.group("gpt-4o")[0].deployment.upstream_model == "gpt-4o"
    assert r.names() == ["groq/*", "*"]


def test_weights_shape_the_first_choice() -> None:
    r = router([dep("g", "openai/a", weight=9), dep("g", "openai/b", weight=1)], seed=7)
    firsts = Counter(next(iter(r.plan("g"))).deployment.upstream_model for _ in range(2000))
    assert 0.85 < firsts["a"] / 2000 < 0.95


def test_rpm_is_a_weight_when_no_weight_is_set() -> None:
    r = router([dep("g", "openai/a", rpm=100), dep("g", "openai/b", rpm=300)], seed=3)
    firsts = Counter(next(iter(r.plan("g"))).deployment.upstream_model for _ in range(2000))
    assert 0.68 < firsts["b"] / 2000 < 0.82


def test_order_tiers_come_first() -> None:
    r = router([dep("g", "openai/low", order=2), dep("g", "openai/high", order=1)])
    for _ in range(50):
        assert [t.deployment.upstream_model for t in r.plan("g", 1)] == ["high", "low"]


def test_retries_cycle_through_deployments_then_fallbacks() -> None:
    r = router(
        [dep("g", "openai/a", order=1), dep("g", "openai/b", order=2), dep("f", "openai/c")],
        num_retries=2,
        fallbacks=[{"g": ["f"]}],
    )
    assert [t.deployment.upstream_model for t in r.plan("g")] == ["a", "b", "a", "c", "c", "c"]
    assert [t.deployment.upstream_model for t in r.plan("g", 0)] == ["a", "c"]


def test_targets_have_timeouts_from_deployment_or_settings() -> None:
    r = router([dep("a", "openai/x", timeout=5, stream_timeout=2), dep("b", "openai/y")], request_timeout=42)
    a, b = r.group("a")[0], r.group("b")[0]
    assert (a.timeouts.total, a.timeouts.first_byte) == (5, 2)
    assert (b.timeouts.total, b.timeouts.first_byte) == (42, 42)


def test_model_group_alias_exact_wildcard_and_hidden() -> None:
    settings = parse_settings(
        {
            "model_list": [dep("claude", "openai/big"), dep("fast", "openai/small")],
            "router_settings": {
                "model_group_alias": {
                    "claude-sonnet-4-20250514": "claude",
                    "*haiku*": "fast",
                    "gpt-4": {"model": "claude", "hidden": True},
                }
            },
        },
        {},
    )
    r = Router(settings, random.Random(1))
    assert [t.deployment.upstream_model for t in r.plan("claude-sonnet-4-20250514")] == ["big"]
    assert [t.deployment.upstream_model for t in r.plan("claude-3-5-haiku-20241022")] == ["small"]
    assert r.group("gpt-4")[0].group == "claude"
    assert r.names() == ["claude", "fast", "claude-sonnet-4-20250514"]
    with pytest.raises(ModelNotFound) as caught:
        r.group("claude-opus-4")
    assert "model_group_alias" in caught.value.message


def test_alias_to_a_missing_group_is_a_config_error() -> None:
    from lockgate.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_settings(
            {"model_list": [dep("a", "openai/x")], "router_settings": {"model_group_alias": {"b": "nope"}}}, {}
        )
    assert "'nope' is not a model_name" in str(caught.value)


def test_targets_carry_catalog_prices_that_model_info_overrides() -> None:
    from lockgate.catalog import load_catalog

    model_list = [
        {"model_name": "opus", "litellm_params": {"model": "anthropic/claude-opus-5", "api_key": "k"}},
        {
            "model_name": "opus-cheap",
            "litellm_params": {"model": "anthropic/claude-opus-5", "api_key": "k"},
            "model_info": {"input_cost_per_token": 1e-06},
        },
        {"model_name": "other", "litellm_params": {"model": "demo/x"}},
    ]
    router = Router(parse_settings({"model_list": model_list}, {}), catalog=load_catalog())
    listed = router.group("opus")[0].prices
    assert listed["input_cost_per_token"] == 5e-06 and listed["output_cost_per_token"] == 2.5e-05
    cheap = router.group("opus-cheap")[0].prices
    assert cheap["input_cost_per_token"] == 1e-06 and cheap["output_cost_per_token"] == 2.5e-05
    assert "input_cost_per_token" not in router.group("other")[0].prices


def priced_router(model_list: list[dict[str, object]], unpriced: str = "warn") -> Router:
    from lockgate.catalog import load_catalog

    settings = parse_settings({"model_list": model_list, "lockgate": {"unpriced": unpriced}}, {})
    return Router(settings, random.Random(1), catalog=load_catalog())


def test_a_wildcard_deployment_is_priced_per_model_it_serves() -> None:
    r = priced_router([dep("anthropic/*", "anthropic/*", api_key="sk-ant-test")])
    sonnet, unknown = r.group("anthropic/claude-sonnet-5")[0], r.group("anthropic/no-such-model")[0]
    assert sonnet.priced and sonnet.prices["input_cost_per_token"] > 0
    assert not unknown.priced
    assert r.group("anthropic/claude-sonnet-5")[0] is sonnet  # specialised once, then reused


def test_model_info_prices_override_the_catalog_and_make_a_model_priced() -> None:
    r = priced_router([dep("own", "openai/in-house", model_info={"input_cost_per_token": 1e-6})])
    assert r.group("own")[0].priced


def test_refuse_leaves_unpriced_deployments_out_and_refuses_a_model_with_none() -> None:
    model_list = [
        dep("g", "openai/in-house"),
        dep("g", "openai/priced", model_info={"output_cost_per_token": 1e-6}),
        dep("free", "openai/free"),
        dep("h", "openai/other-free"),
    ]
    warned = priced_router(model_list)
    assert {t.deployment.upstream_model for t in warned.plan("g", 3)} == {"in-house", "priced"}
    refusing = priced_router(model_list, "refuse")
    assert {t.deployment.upstream_model for t in refusing.plan("g", 3)} == {"priced"}
    with pytest.raises(PermissionDenied) as refused:
        list(refusing.plan("free"))
    assert refused.value.code == "model_not_priced" and "lockgate.unpriced" in refused.value.message


def test_unpriced_takes_warn_or_refuse() -> None:
    from lockgate.config import ConfigError

    with pytest.raises(ConfigError, match=r"lockgate\.unpriced"):
        parse_settings({"model_list": [dep("a", "openai/x")], "lockgate": {"unpriced": "ignore"}}, {})


def strategy_router(strategy: str, model_list: list[dict[str, object]], **args: object) -> Router:
    router_settings: dict[str, object] = {"routing_strategy": strategy}
    if args:
        router_settings["routing_strategy_args"] = args
    return Router(parse_settings({"model_list": model_list, "router_settings": router_settings}, {}), random.Random(5))


def firsts(r: Router, health: Health, n: int = 200, **request: Any) -> Counter[str]:
    return Counter(r.order(r.group("g"), health, **request)[0].deployment.upstream_model for _ in range(n))


def test_least_busy_takes_the_deployment_with_fewest_attempts_under_way() -> None:
    r = strategy_router("least-busy", [dep("g", "openai/a"), dep("g", "openai/b"), dep("g", "openai/c")])
    health = Health()
    ids = {t.deployment.upstream_model: t.deployment.id for t in r.group("g")}
    for name, busy in (("a", 3), ("b", 1), ("c", 2)):
        for _ in range(busy):
            health.begin(ids[name])
    assert firsts(r, health) == {"b": 200}
    for _ in range(3):
        health.end(ids["a"])
    assert firsts(r, health) == {"a": 200}


def test_latency_based_routing_prefers_the_fastest_for_requests_of_this_size() -> None:
    r = strategy_router("latency-based-routing", [dep("g", "openai/a"), dep("g", "openai/b")])
    health = Health()
    a, b = (t.deployment.id for t in sorted(r.group("g"), key=lambda t: t.deployment.upstream_model))
    assert set(firsts(r, health)) == {"a", "b"}  # nothing measured: either, at random
    health.succeeded(a, latency=1.0, ttft=0.2, prompt_tokens=100)
    assert firsts(r, health, stream=True) == {"b": 200}  # never measured: tried first, to be measured
    health.succeeded(b, latency=1.0, ttft=0.9, prompt_tokens=100)
    health.succeeded(b, latency=1.0, ttft=0.1, prompt_tokens=50_000)  # fast on long prompts: another shape
    health.succeeded(a, latency=3.0, ttft=2.0, prompt_tokens=50_000)
    assert firsts(r, health, stream=True, prompt_tokens=100) == {"a": 200}
    assert firsts(r, health, stream=True, prompt_tokens=50_000) == {"b": 200}


def test_latency_buffer_shares_the_load_among_the_nearly_fastest() -> None:
    r = strategy_router(
        "latency-based-routing", [dep("g", "openai/a"), dep("g", "openai/b")], lowest_latency_buffer=0.5
    )
    health = Health()
    a, b = (t.deployment.id for t in sorted(r.group("g"), key=lambda t: t.deployment.upstream_model))
    health.succeeded(a, latency=1.0, ttft=0.2)
    health.succeeded(b, latency=1.0, ttft=0.25)
    shares = firsts(r, health, stream=True)
    assert shares["a"] > 50 and shares["b"] > 50


def test_usage_based_routing_takes_the_deployment_with_most_headroom() -> None:
    r = strategy_router("usage-based-routing-v2", [dep("g", "openai/a", tpm=1000), dep("g", "openai/b", tpm=10_000)])
    health = Health()
    health.track_usage = True  # (the gateway turns it on for usage-based routing only)
    a, b = (t.deployment.id for t in sorted(r.group("g"), key=lambda t: t.deployment.upstream_model))
    health.begin(a)
    health.end(a, 100)  # 10 % of a's tpm
    health.begin(b)
    health.end(b, 5000)  # 50 % of b's
    assert firsts(r, health) == {"a": 200}
    assert health.usage(a) == (1, 100)


def test_cost_based_routing_takes_the_cheapest_and_unpriced_last() -> None:
    r = strategy_router("cost-based-routing", [
        dep("g", "openai/dear", model_info={"input_cost_per_token": 5e-6, "output_cost_per_token": 2e-5}),
        dep("g", "openai/cheap", model_info={"input_cost_per_token": 1e-7, "output_cost_per_token": 4e-7}),
        dep("g", "openai/unknown"),
    ])  # fmt: skip
    order = [t.deployment.upstream_model for t in r.order(r.group("g"), Health())]
    assert order == ["cheap", "dear", "unknown"]


def test_strategies_work_within_order_tiers() -> None:
    r = strategy_router("least-busy", [dep("g", "openai/a", order=1), dep("g", "openai/b", order=2)])
    health = Health()
    a = next(t.deployment.id for t in r.group("g") if t.deployment.upstream_model == "a")
    for _ in range(5):
        health.begin(a)
    assert firsts(r, health) == {"a": 200}  # busier, but the first tier


@pytest.mark.parametrize(
    ("model", "info", "words"),
    [
        ("bedrock/arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc", {}, "ARN does not name"),
        ("azure/my-prod-gpt", {}, "named by you"),
        ("azure/my-prod-gpt", {"base_model": "gpt-unknown"}, "no entry for its base_model"),
        ("openai/gpt-unknown", {}, "give it input_cost_per_token"),
    ],
)
def test_an_unpriced_deployment_is_told_what_to_give(model: str, info: dict[str, object], words: str) -> None:
    from lockgate.routing.router import price_hint

    params = {"api_key": "k", "api_version": "2024-10-21"} if model.startswith("azure/") else {}
    params |= {"aws_region_name": "us-east-1"} if model.startswith("bedrock/") else {}
    (target,) = router([dep("m", model, info or None, **params)]).targets()
    assert not target.priced and words in price_hint(target.deployment)
