"""The metrics sink's aggregation (lockgate/metrics.py) and its exposition, read back with prometheus_client's own
text parser; the settings that govern it."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lockgate.app import Gateway
from lockgate.config import ConfigError, parse_settings
from lockgate.metrics import DeploymentView, Live, Metrics, input_size, output_size
from lockgate.observe import AttemptRecord, RequestRecord

Sample = tuple[str, dict[str, str], float]


def samples(metrics: Metrics, live: Live | None = None) -> list[Sample]:
    text = metrics.exposition(live or Live()).decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    return sum(v for n, got, v in found if n == name and all(got.get(k) == w for k, w in labels.items()))


def record(group: str = "g", deployment: str = "d1", **fields: Any) -> RequestRecord:
    fields.setdefault("usage", {"prompt_tokens": 10, "completion_tokens": 5})
    fields.setdefault("latency_ms", 120.0)
    return RequestRecord("r", "/v1/chat/completions", fields.pop("status", 200), model_group=group,
                         deployment_id=deployment, provider="openai", **fields)  # fmt: skip


def attempt(deployment: str, group: str, started: float, duration: float, outcome: Any, kind: str | None = None,
            ) -> AttemptRecord:  # fmt: skip
    return AttemptRecord(deployment, "openai", group, started, duration, None, 500 if kind else 200, outcome, kind)


def test_requests_tokens_and_spend_are_counted() -> None:
    m = Metrics()
    usage = {"prompt_tokens": 2000, "completion_tokens": 300, "completion_tokens_details": {"reasoning_tokens": 40},
             "prompt_tokens_details": {"cached_tokens": 1500, "cache_write_tokens": 200}}  # fmt: skip
    m.emit(record(usage=usage, cost=0.25))
    m.emit(record(usage=usage, cost=0.25))
    m.emit(record(status=502, error_type="UpstreamUnavailable", usage=None))
    found = samples(m)
    where = {"model_group": "g", "deployment": "d1", "provider": "openai"}
    assert value(found, "lockgate_requests_total", **where, status="200", error_type="") == 2
    assert value(found, "lockgate_requests_total", status="502", error_type="UpstreamUnavailable") == 1
    tokens = {kind: value(found, "lockgate_tokens_total", **where, kind=kind)
              for kind in ("input", "output", "cached_read", "cache_write", "reasoning")}  # fmt: skip
    assert tokens == {"input": 4000, "output": 600, "cached_read": 3000, "cache_write": 400, "reasoning": 80}
    assert value(found, "lockgate_spend_usd_total", **where) == pytest.approx(0.5)
    # the failed request is not a latency sample
    assert value(found, "lockgate_request_latency_seconds_count") == 2


def test_requests_without_a_cost_are_counted_as_unpriced() -> None:
    m = Metrics()
    m.emit(record(deployment="free", cost=None))  # usage, no prices: counted $0 against budgets
    m.emit(record(deployment="free", cost=None))
    m.emit(record(deployment="priced", cost=0.0))  # priced at $0 (a free model) is not unpriced
    m.emit(record(deployment="free", status=502, error_type="UpstreamUnavailable", usage=None))  # nothing used
    found = samples(m)
    assert value(found, "lockgate_unpriced_requests_total", deployment="free", model_group="g") == 2
    assert value(found, "lockgate_unpriced_requests_total", deployment="priced") == 0


def test_histograms_are_labelled_by_shape_and_modality() -> None:
    m = Metrics()
    m.emit(record(usage={"prompt_tokens": 5000, "completion_tokens": 300}, latency_ms=2500.0, first_token_ms=500.0,
                  stream=True, modality="image"))  # fmt: skip
    m.emit(record(usage={"prompt_tokens": 10, "completion_tokens": 1}, latency_ms=30.0))
    found = samples(m)
    shape = {"input_size": "4k-16k", "output_size": "256-1k", "modality": "image"}
    assert value(found, "lockgate_request_latency_seconds_count", **shape) == 1
    assert value(found, "lockgate_request_latency_seconds_sum", **shape) == pytest.approx(2.5)
    assert value(found, "lockgate_request_latency_seconds_bucket", **shape, le="2.0") == 0
    assert value(found, "lockgate_request_latency_seconds_bucket", **shape, le="4.0") == 1
    assert value(found, "lockgate_time_to_first_token_seconds_bucket", **shape, le="0.5") == 1
    assert value(found, "lockgate_time_to_first_token_seconds_bucket", **shape, le="0.35") == 0
    assert value(found, "lockgate_output_tokens_per_second_sum", **shape) == pytest.approx(150.0)  # 300 / 2 s
    small = {"input_size": "0-1k", "output_size": "0-256", "modality": "text"}
    assert value(found, "lockgate_request_latency_seconds_bucket", **small, le="0.05") == 1
    assert value(found, "lockgate_time_to_first_token_seconds_count", **small) == 0  # not a stream


def test_retries_fallbacks_and_hedges_from_the_attempt_log() -> None:
    m = Metrics()
    m.emit(record(group="spare", deployment="s", attempt_log=[
        attempt("a", "main", 0, 10, "failed", "server"), attempt("b", "main", 12, 10, "failed", "rate_limit"),
        attempt("s", "spare", 25, 50, "answered"),
    ]))  # fmt: skip
    m.emit(record(attempt_log=[attempt("a", "g", 0, 900, "cancelled"), attempt("b", "g", 300, 200, "answered")]))
    found = samples(m)
    assert value(found, "lockgate_retries_total", model_group="main", error_kind="server") == 1
    assert value(found, "lockgate_fallbacks_total", model_group="main", fallback_group="spare") == 1
    assert value(found, "lockgate_hedges_total", model_group="g") == 1
    assert value(found, "lockgate_retries_total") == 1
    assert value(found, "lockgate_deployment_attempts_total", deployment="a", outcome="failed") == 1
    assert value(found, "lockgate_deployment_attempts_total", outcome="answered") == 2


def test_limit_rejections_cooldowns_and_live_gauges() -> None:
    m = Metrics()
    m.emit(record(status=429, error_type="RateLimited", denied="key", deployment=None, usage=None))
    m.cooled("d1", 5.0)
    m.cooled("d1", 10.0)
    m.cooled("gone", 5.0)
    live = Live(4, [DeploymentView("d1", "g", "openai", 2, "cooldown"), DeploymentView("d2", "g", "openai", 0, "")])
    found = samples(m, live)
    assert value(found, "lockgate_limit_rejections_total", model_group="g", limit="key") == 1
    assert value(found, "lockgate_requests_total", status="429", deployment="") == 1
    assert value(found, "lockgate_deployment_cooldowns_total", deployment="d1", model_group="g") == 2
    assert value(found, "lockgate_deployment_cooldowns_total", deployment="gone") == 1
    assert value(found, "lockgate_in_flight_requests") == 4
    assert value(found, "lockgate_deployment_in_flight", deployment="d1") == 2
    assert value(found, "lockgate_deployment_state", deployment="d1") == 2
    assert value(found, "lockgate_deployment_state", deployment="d2") == 0


def test_label_sets_are_capped_and_the_overflow_counted(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics(max_series=2)
    with caplog.at_level(logging.WARNING, "lockgate"):
        for group in ("a", "b", "c", "d", "a"):
            m.emit(record(group=group))
    found = samples(m)
    assert value(found, "lockgate_requests_total", model_group="a") == 2
    assert value(found, "lockgate_requests_total", model_group="other", status="other") == 2
    assert {labels["model_group"] for name, labels, _ in found if name == "lockgate_requests_total"} == {
        "a", "b", "other"}  # fmt: skip
    assert value(found, "lockgate_metrics_overflow_total", metric="requests") == 2
    assert value(found, "lockgate_metrics_overflow_total", metric="tokens") == 2
    assert len(m.requests) == 3 and len(m.shapes) == 3  # the cap, and one 'other'
    assert sum("label sets of requests" in r.message for r in caplog.records) == 1


def test_owner_labels_only_when_asked_for() -> None:
    owned = record(team_id="t-1", user_id="u-1", key_alias="ci-bot", end_user="cust")
    plain = Metrics()
    plain.emit(owned)
    names = {k for _, labels, _ in samples(plain) for k in labels}
    assert not names & {"team", "user", "key", "end_user"}
    labelled = Metrics(labels=("team", "key"))
    labelled.emit(owned)
    found = samples(labelled)
    assert value(found, "lockgate_requests_total", team="t-1", key="ci-bot") == 1
    assert value(found, "lockgate_spend_usd_total", team="t-1", key="ci-bot") == 0
    assert all("team" not in labels for name, labels, _ in found if "latency" in name)


def test_size_buckets() -> None:
    assert [input_size(n) for n in (0, 1023, 1024, 4095, 4096, 16384, 65535, 65536)] == [
        "0-1k", "0-1k", "1k-4k", "1k-4k", "4k-16k", "16k-64k", "16k-64k", "64k+"]  # fmt: skip
    assert [output_size(n) for n in (0, 255, 256, 1024, 4096)] == ["0-256", "0-256", "256-1k", "1k-4k", "4k+"]


def test_settings() -> None:
    models: dict[str, Any] = {"model_list": []}
    default = parse_settings(models, {})
    assert (default.metrics, default.metrics_labels, default.metrics_max_series) == ("viewer", (), 1000)
    assert Gateway(default).routes["/metrics"].permission == "viewer"
    public = parse_settings({**models, "lockgate": {"metrics": "public", "metrics_labels": ["team"]}}, {})
    assert Gateway(public).routes["/metrics"].permission == "public" and public.metrics_labels == ("team",)
    off = parse_settings({**models, "lockgate": {"metrics": False}}, {})  # YAML's `off`
    gateway = Gateway(off)
    assert "/metrics" not in gateway.routes and gateway.metrics is None
    loose = parse_settings({**models, "litellm_settings": {"require_auth_for_metrics_endpoint": False}}, {})
    assert loose.metrics == "viewer"
    assert any("require_auth_for_metrics_endpoint" in w.path for w in loose.warnings)
    strict = parse_settings({**models, "litellm_settings": {"require_auth_for_metrics_endpoint": True}}, {})
    assert strict.metrics == "viewer" and not strict.warnings
    with pytest.raises(ConfigError, match="metrics_labels"):
        parse_settings({**models, "lockgate": {"metrics_labels": ["api_key"]}}, {})
    with pytest.raises(ConfigError, match=r"lockgate\.metrics"):
        parse_settings({**models, "lockgate": {"metrics": "everyone"}}, {})


def test_label_values_are_escaped() -> None:
    m = Metrics(labels=("end_user",))
    m.emit(record(end_user='a "quoted"\\ name\nwith a newline'))
    found = samples(m)
    assert value(found, "lockgate_requests_total", end_user='a "quoted"\\ name\nwith a newline') == 1
