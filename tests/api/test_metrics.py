"""``/metrics`` and ``lockgate top`` end to end: a gateway process in front of the fake OpenAI, a mix of answers,
retries, fallbacks, a cooldown, a refused request, streams and an image; the exposition read back with
prometheus_client's text parser."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_resilience import deployment
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import MASTER_KEY, GatewayProcess

# (the fake upstream is shared by every test module: these model names are this module's own)
CONFIG = (
    "model_list:\n"
    + deployment("main", "mt-main-a", order=1)
    + deployment("main", "mt-main-b", order=2)
    + deployment("shaky", "mt-shaky")
    + deployment("backup", "mt-backup")
    + deployment("vision", "mt-vision")
    + """router_settings:
  num_retries: 1
  allowed_fails: 1
  cooldown_time: 30
  fallbacks: [{shaky: [backup]}]
"""
)
CAPPED = (
    "model_list:\n"
    + "".join(deployment(f"g{i}", f"mt-cap-{i}") for i in range(4))
    + "lockgate:\n  metrics: public\n  metrics_max_series: 2\n  metrics_labels: [team]\n"
)
HI = [{"role": "user", "content": "hello there"}]
PNG = {"url": "data:image/png;base64,iVBORw0KGgo="}
IMAGE = [
    {"role": "user", "content": [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": PNG}]}
]
Sample = tuple[str, dict[str, str], float]


@pytest.fixture(scope="module")
def gateway(fake_openai: FakeOpenAI) -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG.replace("FAKE", fake_openai.url)) as gw:
        yield gw


def chat(gw: GatewayProcess, model: str, key: str = MASTER_KEY, messages: Any = HI) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": messages}, timeout=20)  # fmt: skip


def scrape(gw: GatewayProcess, key: str | None = MASTER_KEY) -> list[Sample]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.get(gw.url + "/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(answer.text) for s in f.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    return sum(v for n, got, v in found if n == name and all(got.get(k) == w for k, w in labels.items()))


def test_counts_after_a_mix_of_requests(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    before = scrape(gateway)
    for _ in range(3):
        assert chat(gateway, "main").status_code == 200
    fake_openai.script("mt-main-a", "status-500", "status-500")  # retried on b twice; two failures cool a down
    assert [chat(gateway, "main").headers["x-lockgate-deployment"] for _ in range(2)] == ["mt-main-b", "mt-main-b"]
    fake_openai.script("mt-shaky", "status-503", "status-503")  # the group's retry fails too: fallback to backup
    answer = chat(gateway, "shaky")
    assert answer.status_code == 200 and answer.headers["x-lockgate-model-group"] == "backup"
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    for _ in range(2):
        assert "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="main", messages=HI, stream=True) if c.choices)  # fmt: skip
    assert chat(gateway, "vision", messages=IMAGE).status_code == 200
    key = httpx.post(gateway.url + "/key/generate", headers=gateway.headers(), json={"rpm_limit": 1}).json()["key"]
    assert chat(gateway, "main", key=key).status_code == 200
    refused = chat(gateway, "main", key=key)
    assert refused.status_code == 429

    after = scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("lockgate_requests_total", model_group="main", status="200", error_type="") == 3 + 2 + 2 + 1
    assert delta("lockgate_requests_total", model_group="main", status="429", error_type="RateLimited") == 1
    assert delta("lockgate_limit_rejections_total", model_group="main", limit="key") == 1
    assert delta("lockgate_requests_total", model_group="backup", deployment="mt-backup", status="200") == 1
    failed = {"outcome": "failed", "error_kind": "server"}
    assert delta("lockgate_deployment_attempts_total", deployment="mt-main-a", **failed) == 2
    assert delta("lockgate_retries_total", model_group="main", error_kind="server") == 2
    assert delta("lockgate_retries_total", model_group="shaky", error_kind="server") == 1
    assert delta("lockgate_fallbacks_total", model_group="shaky", fallback_group="backup") == 1
    assert delta("lockgate_deployment_cooldowns_total", deployment="mt-main-a", model_group="main") == 1
    assert value(after, "lockgate_deployment_state", deployment="mt-main-a") == 2
    assert value(after, "lockgate_deployment_state", deployment="mt-main-b") == 0
    assert delta("lockgate_time_to_first_token_seconds_count", model_group="main") == 2
    assert delta("lockgate_output_tokens_per_second_count", model_group="main") == 2
    assert delta("lockgate_request_latency_seconds_count", model_group="vision", modality="image",
                 input_size="0-1k", output_size="0-256") == 1  # fmt: skip
    assert delta("lockgate_request_latency_seconds_count", model_group="main", modality="text") == 3 + 2 + 2 + 1
    assert delta("lockgate_tokens_total", model_group="main", kind="input") > 0
    assert delta("lockgate_tokens_total", model_group="main", kind="output") > 0
    assert value(after, "lockgate_in_flight_requests") == 1  # the scrape itself
    assert value(after, "lockgate_deployment_in_flight", deployment="mt-main-b") == 0
    names = {labels_key for _, labels, _ in after for labels_key in labels}
    assert not names & {"team", "user", "key", "end_user", "api_key"}  # no owner labels unless asked for


def test_metrics_need_a_viewer_key_by_default(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url + "/metrics").status_code == 401
    key = httpx.post(gateway.url + "/key/generate", headers=gateway.headers(), json={}).json()["key"]
    assert httpx.get(gateway.url + "/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 403
    user = httpx.post(gateway.url + "/user/new", headers=gateway.headers(),
                      json={"user_role": "proxy_admin_viewer"}).json()  # fmt: skip
    viewer = httpx.post(gateway.url + "/key/generate", headers=gateway.headers(),
                        json={"user_id": user["user_id"]}).json()["key"]  # fmt: skip
    assert scrape(gateway, viewer)


def test_public_metrics_with_a_cap_on_label_sets(fake_openai: FakeOpenAI) -> None:
    with GatewayProcess(CAPPED.replace("FAKE", fake_openai.url)) as gw:
        team = httpx.post(gw.url + "/team/new", headers=gw.headers(), json={"team_alias": "a"}).json()["team_id"]
        key = httpx.post(gw.url + "/key/generate", headers=gw.headers(), json={"team_id": team}).json()["key"]
        for i in range(4):
            assert chat(gw, f"g{i}", key=key).status_code == 200
        found = scrape(gw, key=None)  # lockgate.metrics: public
        groups = {labels["model_group"] for name, labels, _ in found if name == "lockgate_requests_total"}
        assert groups == {"g0", "g1", "other"}
        assert value(found, "lockgate_requests_total", model_group="g0", team=team) == 1
        assert value(found, "lockgate_requests_total", model_group="other") == 2
        assert value(found, "lockgate_metrics_overflow_total", metric="requests") == 2
        assert "label sets of requests" in gw.logs()


def test_lockgate_top_once(gateway: GatewayProcess) -> None:
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            chat(gateway, "vision")

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.2)
        command = [sys.executable, "-m", "lockgate.cli", "top", "--url", gateway.url, "--key", MASTER_KEY, "--once",
                   "--interval", "0.5"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    finally:
        stop.set()
        worker.join()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"lockgate top  {gateway.url}") and "P95" in lines[2]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert set(rows) >= {"main", "vision", "backup"}
    assert float(rows["vision"][1]) > 0 and rows["vision"][3] == "0.0%" and rows["vision"][4].endswith("ms")
    refused = subprocess.run([*command[:6], "--key", "sk-wrong", "--once"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "answered 401" in refused.stderr
