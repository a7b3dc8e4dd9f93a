"""Router: model groups, wildcards, weighted order, order tiers, retries and fallbacks."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lockgate.config import parse_settings
from lockgate.errors import ModelNotFound, PermissionDenied
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
