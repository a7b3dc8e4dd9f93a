"""Callbacks and alerts end to end: a gateway process in front of the fake OpenAI, sending to a fake OTLP collector,
a fake Langfuse (the same OTLP receiver at Langfuse's path, behind Basic auth: what Langfuse's SDK sends), two fake
webhooks and a fake Slack. Each test says what each receiver got; the last ones measure that slow receivers do not
slow requests and that no secret reaches a log or a receiver."""

from __future__ import annotations

import base64
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.otlp import FakeOTLP
from tests.fakes.webhook import FakeWebhook
from tests.support import MASTER_KEY, GatewayProcess

LANGFUSE_PUBLIC, LANGFUSE_SECRET = "pk-lf-public-1234", "sk-lf-secret-canary-5678"
OTEL_TOKEN = "otel-token-canary-4242"
SLACK_TOKEN = "slack-path-token-canary-9999"
PROMPT_CANARY = "prompt-canary-7c1e"  # never stored unless a key asks for it, never in a log
PRICES = "input_cost_per_token: 0.001, output_cost_per_token: 0.01"


def deployment(group: str, model: str, ident: str, order: int = 1) -> str:
    params = f"model: openai/{model}, api_base: 'FAKE/v1', api_key: {UPSTREAM_KEY}, order: {order}"
    return f"  - model_name: {group}\n    litellm_params: {{{params}}}\n    model_info: {{id: {ident}, {PRICES}}}\n"


CONFIG = (
    "model_list:\n"
    + deployment("chat", "gpt-a", "dep-a", 1)
    + deployment("chat", "gpt-b", "dep-b", 2)
    + deployment("cool", "cool-a", "cool-a", 1)
    + deployment("cool", "cool-b", "cool-b", 2)
    + deployment("slow", "fault-slow-400", "slow-a")
    + deployment("broken", "fault-status-400", "broken-a")
    + """router_settings: {num_retries: 1, allowed_fails: 1, cooldown_time: 5}
litellm_settings:
  callbacks: [otel]
  success_callback: [langfuse]
callback_settings:
  otel: {message_logging: false}
  hook: {callback_type: generic_api, endpoint: 'HOOK/logs', flush_interval: 0.2, headers: {x-hook-token: hook-secret-1}}
  failures: {callback_type: generic_api, endpoint: 'FAILURES/in', log_format: ndjson, flush_interval: 0.2,
             event_types: [llm_api_failure]}
general_settings:
  alerting: [slack]
  alerting_threshold: 0.3
"""
)


@pytest.fixture(scope="module")
def sinks() -> Iterator[dict[str, Any]]:
    auth = "Basic " + base64.b64encode(f"{LANGFUSE_PUBLIC}:{LANGFUSE_SECRET}".encode()).decode()
    with FakeOTLP() as otlp, FakeOTLP(auth=auth) as langfuse, FakeWebhook() as hook, FakeWebhook() as failures, \
            FakeWebhook() as slack:  # fmt: skip
        yield {"otlp": otlp, "langfuse": langfuse, "hook": hook, "failures": failures, "slack": slack}


def environment(sinks: dict[str, Any]) -> dict[str, str]:
    return {
        "OTEL_EXPORTER": "otlp_http", "OTEL_ENDPOINT": sinks["otlp"].url, "OTEL_HEADERS": f"x-otel-token={OTEL_TOKEN}",
        "OTEL_SERVICE_NAME": "lockgate-test", "LANGFUSE_PUBLIC_KEY": LANGFUSE_PUBLIC,
        "LANGFUSE_SECRET_KEY": LANGFUSE_SECRET, "LANGFUSE_HOST": sinks["langfuse"].url,
        "SLACK_WEBHOOK_URL": f"{sinks['slack'].url}/services/T0/B0/{SLACK_TOKEN}",
    }  # fmt: skip


@pytest.fixture(scope="module")
def gateway(fake_openai: FakeOpenAI, sinks: dict[str, Any]) -> Iterator[GatewayProcess]:
    config = (CONFIG.replace("FAKE", fake_openai.url).replace("HOOK", sinks["hook"].url)
              .replace("FAILURES", sinks["failures"].url))  # fmt: skip
    with GatewayProcess(config, env=environment(sinks)) as gw:
        yield gw


def chat(
    gw: GatewayProcess, model: str, key: str = MASTER_KEY, text: str = "hello there", **extra: Any
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body,
                      timeout=20)  # fmt: skip


def admin(gw: GatewayProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gw.url + path, headers={"Authorization": f"Bearer {MASTER_KEY}"}, json=body, timeout=10)


def wait_for(found: Callable[[], Any], timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def trace(receiver: FakeOTLP, request_id: str) -> list[dict[str, Any]]:
    """The spans of one request: its root first, then its attempts in order."""

    def spans() -> list[dict[str, Any]]:
        roots = [s for s in receiver.spans() if s["attributes"].get("lockgate.request_id") == request_id]
        if not roots:
            return []
        children = [s for s in receiver.spans() if s["parent_span_id"] == roots[0]["span_id"]]
        return [roots[0], *sorted(children, key=lambda s: s["start"])]

    return list(wait_for(spans))


def test_otel_one_trace_per_request_with_a_span_per_attempt(gateway: GatewayProcess, sinks: dict[str, Any],
                                                           fake_openai: FakeOpenAI) -> None:  # fmt: skip
    fake_openai.script("gpt-a", "status-500")
    answer = chat(gateway, "chat")
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    root, first, second = trace(sinks["otlp"], request_id)
    assert root["kind"] == "SPAN_KIND_SERVER" and root["name"] == "chat chat"
    assert root["resource"]["service.name"] == "lockgate-test"
    attrs = root["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.response.model"] == "gpt-b"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["http.response.status_code"] == 200 and attrs["lockgate.attempts"] == 2
    assert attrs["lockgate.cost_usd"] > 0
    for span in (first, second):
        assert span["kind"] == "SPAN_KIND_CLIENT" and span["trace_id"] == root["trace_id"]
        assert root["start"] <= span["start"] <= span["end"] <= root["end"]
    assert first["name"] == "chat gpt-a" and first["status"] == "STATUS_CODE_ERROR"
    assert first["attributes"]["error.type"] == "server" and first["attributes"]["http.response.status_code"] == 500
    assert second["name"] == "chat gpt-b" and second["attributes"]["lockgate.attempt.outcome"] == "answered"
    assert second["attributes"]["gen_ai.usage.output_tokens"] == attrs["gen_ai.usage.output_tokens"]
    assert first["end"] <= second["start"]
    assert all("gen_ai.input.messages" not in s["attributes"] for s in (root, first, second))
    assert sinks["otlp"].last_request.headers["x-otel-token"] == OTEL_TOKEN


def test_langfuse_gets_generations_through_its_sdk_and_only_successes(gateway: GatewayProcess,
                                                                     sinks: dict[str, Any]) -> None:  # fmt: skip
    ok = chat(gateway, "chat").headers["x-request-id"]
    refused = chat(gateway, "broken")
    assert refused.status_code == 400
    root, generation = trace(sinks["langfuse"], ok)
    assert root["path"] == "/api/public/otel/v1/traces"
    assert root["attributes"]["langfuse.observation.type"] == "span"
    assert root["attributes"]["langfuse.trace.name"] == "chat chat"
    assert generation["attributes"]["langfuse.observation.type"] == "generation"
    assert generation["attributes"]["langfuse.observation.model.name"] == "gpt-a"
    usage = json.loads(generation["attributes"]["langfuse.observation.usage_details"])
    assert usage["input"] > 0 and usage["output"] > 0
    assert json.loads(generation["attributes"]["langfuse.observation.cost_details"])["total"] > 0
    headers = sinks["langfuse"].last_request.headers
    assert headers["x-langfuse-public-key"] == LANGFUSE_PUBLIC and headers["authorization"].startswith("Basic ")
    # the failure went to the otel callback (callbacks: both) and the failure webhook, never to Langfuse
    trace(sinks["otlp"], refused.headers["x-request-id"])
    wait_for(lambda: [r for r in sinks["failures"].records() if r["request_id"] == refused.headers["x-request-id"]])
    time.sleep(1.5)  # past the Langfuse callback's batching
    ids = {s["attributes"].get("lockgate.request_id") for s in sinks["langfuse"].spans()}
    assert refused.headers["x-request-id"] not in ids


def test_webhooks_get_records_batched_retried_and_routed(gateway: GatewayProcess, sinks: dict[str, Any]) -> None:
    hook, failures = sinks["hook"], sinks["failures"]
    hook.fail(1, 503)  # the next batch is refused once, then taken
    ids = [chat(gateway, "chat").headers["x-request-id"] for _ in range(3)]
    bad = chat(gateway, "broken").headers["x-request-id"]
    got = wait_for(lambda: (lambda r: r if {*ids, bad} <= r.keys() else None)(
        {record["request_id"]: record for record in hook.records()}))  # fmt: skip
    assert got[ids[0]]["event"] == "success" and got[bad]["event"] == "failure" and got[bad]["status"] == 400
    assert got[ids[0]]["attempt_log"][0]["deployment_id"] in ("dep-a", "dep-b")
    assert "messages" not in got[ids[0]] and got[ids[0]]["key_alias"] == "master_key"
    assert hook.last_request.headers["x-hook-token"] == "hook-secret-1"
    assert any(r.headers.get("content-type") == "application/json" for r in hook.requests)
    failed = wait_for(lambda: [r for r in failures.records() if r["request_id"] == bad])
    assert failed[0]["event"] == "failure"
    assert all(r["event"] == "failure" for r in failures.records())  # event_types: [llm_api_failure]
    assert failures.last_request.headers["content-type"] == "application/x-ndjson"


def test_prompts_go_only_where_message_logging_is_on(gateway: GatewayProcess, sinks: dict[str, Any]) -> None:
    stored = admin(gateway, "/key/generate", {"metadata": {"store_prompts_in_spend_logs": True}}).json()["key"]
    plain = admin(gateway, "/key/generate", {}).json()["key"]
    with_prompt = chat(gateway, "chat", key=stored, text=f"{PROMPT_CANARY}-stored").headers["x-request-id"]
    without = chat(gateway, "chat", key=plain, text=f"{PROMPT_CANARY}-plain").headers["x-request-id"]
    got = wait_for(lambda: (lambda r: r if {with_prompt, without} <= r.keys() else None)(
        {record["request_id"]: record for record in sinks["hook"].records()}))  # fmt: skip
    assert got[with_prompt]["messages"] == [{"role": "user", "content": f"{PROMPT_CANARY}-stored"}]
    assert "messages" not in got[without]
    trace(sinks["otlp"], with_prompt)
    trace(sinks["otlp"], without)
    # callback_settings.otel.message_logging: false keeps them from the collector even for the storing key
    assert PROMPT_CANARY.encode() not in b"".join(r.body for r in sinks["otlp"].requests)
    assert f"{PROMPT_CANARY}-plain".encode() not in b"".join(r.body for r in sinks["hook"].requests)


def test_alerts_cooldown_slowness_and_budgets(gateway: GatewayProcess, sinks: dict[str, Any],
                                              fake_openai: FakeOpenAI) -> None:  # fmt: skip
    slack = sinks["slack"]
    fake_openai.script("cool-a", "status-500", "status-500")
    for _ in range(2):
        assert chat(gateway, "cool").status_code == 200
    wait_for(lambda: [t for t in slack.texts() if "`cool-a` entered cooldown" in t])
    assert chat(gateway, "slow").status_code == 200
    wait_for(lambda: [t for t in slack.texts() if "Slow request" in t and "`slow-a`" in t])
    key = admin(gateway, "/key/generate", {"max_budget": 0.5, "soft_budget": 0.1}).json()["key"]
    statuses = []
    while 400 not in statuses and len(statuses) < 40:  # ~3 cents a request: refused after about 15
        statuses.append(chat(gateway, "chat", key=key, max_tokens=5).status_code)
    assert statuses.count(200) >= 5 and statuses[-1] == 400
    assert chat(gateway, "chat", key=key, max_tokens=5).status_code == 400
    wait_for(lambda: [t for t in slack.texts() if "reached its budget of $0.5" in t])
    texts = slack.texts()
    assert sum("80% of its budget" in t for t in texts) == 1  # once per budget, level and period
    assert sum("reached its budget of $0.5" in t for t in texts) == 1
    assert sum("crossed its soft budget of $0.1" in t for t in texts) == 1
    assert all(text.startswith("lockgate ") for text in texts)
    assert slack.last_request.path == f"/services/T0/B0/{SLACK_TOKEN}"


def test_no_secret_or_prompt_reaches_the_request_log_or_a_receiver(gateway: GatewayProcess,
                                                                  sinks: dict[str, Any]) -> None:  # fmt: skip
    answer = chat(gateway, "chat", text=f"{PROMPT_CANARY}-log")
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    assert gateway.wait_record(request_id)["request_id"] == request_id  # one JSON line per request, with its id
    lines = [line for line in gateway.logs().splitlines() if line.startswith("{")]
    assert len([line for line in lines if json.loads(line).get("request_id") == request_id]) == 1
    logs = gateway.logs()
    for canary in (MASTER_KEY, UPSTREAM_KEY, PROMPT_CANARY, LANGFUSE_SECRET, OTEL_TOKEN, SLACK_TOKEN, "hook-secret-1"):
        assert logs.count(canary) == 0, canary
    received = b"".join(r.body for name in ("otlp", "langfuse", "hook", "failures", "slack")
                        for r in sinks[name].requests)  # fmt: skip
    for canary in (MASTER_KEY, UPSTREAM_KEY, LANGFUSE_SECRET, OTEL_TOKEN, SLACK_TOKEN):
        assert canary.encode() not in received, canary


def _p50(gw: GatewayProcess, n: int) -> float:
    times = []
    with httpx.Client(headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=20) as client:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(n):
            started = time.perf_counter()
            assert client.post(gw.url + "/v1/chat/completions", json=body).status_code == 200
            times.append(time.perf_counter() - started)
    return statistics.median(times[5:]) * 1000  # (the first few warm the connections)


def test_slow_receivers_do_not_slow_requests(fake_openai: FakeOpenAI) -> None:
    plain = "model_list:\n" + deployment("chat", "gpt-a", "dep-a")
    slow_config = (
        plain
        + """litellm_settings: {callbacks: [otel, langfuse]}
callback_settings:
  hook: {callback_type: generic_api, endpoint: 'HOOK/logs', log_format: single}
lockgate: {callback_queue_size: 20}
"""
    )
    with FakeOTLP(delay=3.0) as otlp, FakeOTLP(delay=3.0) as langfuse, FakeWebhook(delay=3.0) as hook:
        env = {"OTEL_ENDPOINT": otlp.url, "LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk",
               "LANGFUSE_HOST": langfuse.url}  # fmt: skip
        with GatewayProcess(plain.replace("FAKE", fake_openai.url)) as gw:
            base = _p50(gw, 80)
        config = slow_config.replace("FAKE", fake_openai.url).replace("HOOK", hook.url)
        with GatewayProcess(config, env=env) as gw:
            slow = _p50(gw, 80)
            logs = gw.logs()
    print(f"\np50 without callbacks {base:.2f} ms; with otel, langfuse and a webhook whose receivers answer in 3 s: "
          f"{slow:.2f} ms")  # fmt: skip
    assert slow < base * 1.5 + 3.0
    assert "callback hook is behind" in logs  # its queue filled: drops counted and logged once
    assert logs.count("callback hook is behind") == 1
