"""``lockgate top``'s arithmetic: percentiles from histogram buckets, and a table from two scrapes."""

from __future__ import annotations

import math

import pytest

from lockgate.metrics import DeploymentView, Live, Metrics
from lockgate.observe import RequestRecord
from lockgate.top import TopError, fetch, parse, quantile, table


def test_quantile_interpolates_within_a_bucket() -> None:
    buckets = {0.1: 0.0, 0.5: 50.0, 1.0: 100.0, math.inf: 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.5)
    assert quantile(0.25, buckets) == pytest.approx(0.3)  # halfway through (0.1, 0.5]
    assert quantile(0.95, buckets) == pytest.approx(0.95)
    assert quantile(0.5, {0.1: 0.0, 1.0: 0.0, math.inf: 0.0}) is None
    assert quantile(0.99, {1.0: 1.0, math.inf: 10.0}) == 1.0  # in +Inf: the largest finite bound


def scrape(m: Metrics, at: float, in_flight: int = 0) -> str:
    view = [DeploymentView("d1", "chat", "openai", in_flight, "healthy"), DeploymentView("e", "idle", "openai", 0, "")]
    return m.exposition(Live(in_flight, view)).decode()


def test_a_table_from_two_scrapes() -> None:
    m = Metrics()
    usage = {"prompt_tokens": 5, "completion_tokens": 5}
    done = RequestRecord("r", "/v1/chat/completions", 200, model_group="chat", deployment_id="d1", provider="openai",
                         usage=usage, latency_ms=200.0, first_token_ms=50.0)  # fmt: skip
    m.emit(done)
    before = parse(scrape(m, 0), at=0.0)
    for _ in range(9):
        m.emit(done)
    m.emit(RequestRecord("r", "/v1/chat/completions", 502, model_group="chat", deployment_id="d1", provider="openai",
                         error_type="UpstreamUnavailable"))  # fmt: skip
    after = parse(scrape(m, 2, in_flight=3), at=2.0)
    text = table(before, after, "http://gw")
    rows = {line.split()[0]: line.split() for line in text.splitlines()[3:]}
    assert rows["chat"][1:] == ["5.0", "11", "10.0%", "175ms", "242ms", "38ms", "49ms", "3"]
    assert rows["idle"][1:] == ["0.0", "0", "-", "-", "-", "-", "-", "0"]
    assert text.splitlines()[0].endswith("in flight 3")
    assert list(rows) == ["chat", "idle"]  # busiest first


def test_an_unreachable_gateway_or_a_bad_url_is_said() -> None:
    with pytest.raises(TopError, match="cannot reach"):
        fetch("http://127.0.0.1:9", None, timeout=1)
    with pytest.raises(TopError, match="not an http"):
        fetch("file:///etc/passwd", None)
