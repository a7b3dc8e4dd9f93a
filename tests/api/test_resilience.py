"""Retries, fallbacks, cooldowns and timeouts end to end: a gateway process in front of the fake OpenAI, whose
deployments fail as each test scripts them (tests/fakes/openai_upstream.py). Each test says what the client saw
and how many attempts each deployment received."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import MASTER_KEY, GatewayProcess


def deployment(group: str, model: str, info: str = "", provider: str = "openai", **params: Any) -> str:
    extra = "".join(f", {k}: {v}" for k, v in params.items())
    return (
        f"  - model_name: {group}\n"
        f"    litellm_params: {{model: {provider}/{model}, api_base: 'FAKE/v1', api_key: {UPSTREAM_KEY}{extra}}}\n"
        f"    model_info: {{id: {model}{info}}}\n"
    )


CONFIG = (
    "model_list:\n"
    + deployment("retry", "r-a", order=1)
    + deployment("retry", "r-b", order=2)
    + deployment("cool", "c-a", order=1)
    + deployment("cool", "c-b", order=2)
    + deployment("lone", "lone")
    + deployment("small", "small")
    + deployment("large", "large")
    + deployment("strict", "strict")
    + deployment("lenient", "lenient")
    + deployment("ttft", "t-a", order=1, stream_timeout=0.3)
    + deployment("ttft", "t-b", order=2)
    + deployment("stall", "stall")
    + deployment("broken", "x-a", order=1)
    + deployment("broken", "x-b", order=2)
    + deployment("spare", "spare")
    + deployment("tiny", "tiny", ", max_input_tokens: 100")
    + deployment("thinker", "ds-a", ", supports_prompt_caching: true", provider="deepseek")
    + deployment("plain", "gpt-b")
    + """router_settings:
  num_retries: 1
  allowed_fails: 1
  cooldown_time: 2
  fallbacks: [{broken: [spare]}, {thinker: [plain]}]
  context_window_fallbacks: [{small: [large]}, {tiny: [large]}]
  content_policy_fallbacks: [{strict: [lenient]}]
lockgate:
  stream_idle_timeout: 0.4
"""
)
HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def gateway(fake_openai: FakeOpenAI) -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG.replace("FAKE", fake_openai.url)) as gw:
        yield gw


def chat(gw: GatewayProcess, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": HI, **extra}
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                      json=body, timeout=20)  # fmt: skip


def test_a_failing_deployment_is_retried_on_the_other(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    for fault in ("status-500", "drop", "status-503", "retry-0"):
        before = fake_openai.served("r-a"), fake_openai.served("r-b")
        fake_openai.script("r-a", fault)
        answer = chat(gateway, "retry")
        assert answer.status_code == 200, (fault, answer.text)
        assert answer.headers["x-lockgate-deployment"] == "r-b" and answer.headers["x-lockgate-attempts"] == "2"
        assert (fake_openai.served("r-a") - before[0], fake_openai.served("r-b") - before[1]) == (1, 1), fault
        assert chat(gateway, "retry").headers["x-lockgate-deployment"] == "r-a"  # a success takes the failure back


def test_a_clients_bad_request_is_not_retried(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    before = fake_openai.served("lone")
    fake_openai.script("lone", "status-400")
    answer = chat(gateway, "lone")
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert fake_openai.served("lone") - before == 1


def test_retry_after_is_honoured_on_a_lone_deployment(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    before = fake_openai.served("lone")
    fake_openai.script("lone", "retry-1")
    started = time.monotonic()
    answer = chat(gateway, "lone")
    assert answer.status_code == 200 and answer.headers["x-lockgate-attempts"] == "2"
    assert time.monotonic() - started >= 1.0
    assert fake_openai.served("lone") - before == 2


def test_cooldown_then_half_open_then_back(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("c-a", "status-500", "status-500")
    assert [chat(gateway, "cool").headers["x-lockgate-deployment"] for _ in range(2)] == ["c-b", "c-b"]
    assert fake_openai.served("c-a") == 2  # two failures: more than allowed_fails (1), cooled down for 2 s
    answered = [chat(gateway, "cool").headers["x-lockgate-deployment"] for _ in range(5)]
    assert answered == ["c-b"] * 5 and fake_openai.served("c-a") == 2  # not tried while cooling down
    time.sleep(2.2)
    trial = chat(gateway, "cool")
    assert trial.headers["x-lockgate-deployment"] == "c-a" and trial.headers["x-lockgate-attempts"] == "1"
    assert chat(gateway, "cool").headers["x-lockgate-deployment"] == "c-a"  # healthy again: first in order


def test_fallbacks_after_the_groups_retries(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("x-a", "status-500")
    fake_openai.script("x-b", "status-502")
    answer = chat(gateway, "broken")
    assert answer.status_code == 200 and answer.headers["x-lockgate-model-group"] == "spare"
    assert answer.headers["x-lockgate-attempts"] == "3"


def test_context_window_and_content_policy_fallbacks(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small", "context")
    answer = chat(gateway, "small")
    assert answer.status_code == 200 and answer.headers["x-lockgate-deployment"] == "large", answer.text
    fake_openai.script("strict", "policy")
    answer = chat(gateway, "strict")
    assert answer.status_code == 200 and answer.headers["x-lockgate-deployment"] == "lenient", answer.text
    fake_openai.script("large", "context")  # no fallback of its own: the client gets the upstream's 400
    answer = chat(gateway, "large")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "context_length_exceeded"


def test_a_slow_first_token_goes_to_another_deployment_before_any_byte(
    gateway: GatewayProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("t-a", "firstbyte-3000")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    started = time.monotonic()
    response = client.chat.completions.with_raw_response.create(model="ttft", messages=HI, stream=True)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert response.headers["x-lockgate-deployment"] == "t-b" and text == "echo: hello there"
    assert time.monotonic() - started < 2.0  # the 0.3 s first-token timeout, not the 3 s stall


def test_a_stream_stalled_after_its_first_byte_ends_with_an_error_event(
    gateway: GatewayProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("stall", "stall-3000")
    started = time.monotonic()
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                      json={"model": "stall", "messages": HI, "stream": True}, timeout=10) as streamed:  # fmt: skip
        body = b"".join(streamed.iter_bytes())
    assert time.monotonic() - started < 2.5
    events = [e for e in body.split(b"\n\n") if e.startswith(b"data: ")]
    assert events[0].startswith(b'data: {"id"') and b'"error"' in events[-1], body[-500:]
    assert fake_openai.served("stall") == 1  # no retry once bytes reached the client


def test_a_prompt_certainly_too_long_goes_to_the_larger_model_without_a_call(
    gateway: GatewayProcess, fake_openai: FakeOpenAI
) -> None:
    long = [{"role": "user", "content": "word " * 1000}]  # 5,000 characters: over 100 tokens at any tokenizer
    answer = chat(gateway, "tiny", messages=long)
    assert answer.status_code == 200 and answer.headers["x-lockgate-deployment"] == "large"
    assert fake_openai.served("tiny") == 0
    assert chat(gateway, "tiny").headers["x-lockgate-deployment"] == "tiny"  # a short one fits


def test_a_client_that_hangs_up_cancels_the_upstream_call(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    """Non-streamed: the gateway closes its upstream connection within a second of the client leaving; the
    request is logged as 499 and its prompt counted."""
    import socket

    fake_openai.script("lone", "slow-5000")
    body = b'{"model": "lone", "messages": [{"role": "user", "content": "hang up on me"}]}'
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + MASTER_KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)  # fmt: skip
        time.sleep(0.5)  # the upstream call is under way
    left = time.monotonic()
    record = None
    while time.monotonic() - left < 3 and record is None:
        record = next((r for r in gateway.records() if r.get("status") == 499), None)
        time.sleep(0.05)
    assert record is not None and record["client_disconnected"] and record["error_type"] == "ClientDisconnected"
    assert time.monotonic() - left < 1.0
    assert record["usage"]["estimated"] and record["usage"]["prompt_tokens"] > 0
    closed = fake_openai.requests[-1]
    assert closed.json["model"] == "lone"


def test_health_shows_the_routers_view_and_filters_by_model(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("x-a", "status-500", "status-500")  # twice: more than allowed_fails, a cooldown
    fake_openai.script("x-b", "status-500", "status-500")
    chat(gateway, "broken")
    chat(gateway, "broken")
    fake_openai.script("x-a", "status-401")  # the on-demand check fails too (scripted), x-b's passes
    fake_openai.script("x-b")
    answer = httpx.get(gateway.url + "/health", params={"model": "broken"},
                       headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)  # fmt: skip
    body = answer.json()
    assert answer.status_code == 200 and body["healthy_count"] == 1 and body["unhealthy_count"] == 1
    (bad,) = body["unhealthy_endpoints"]
    (good,) = body["healthy_endpoints"]
    assert bad["model_id"] == "x-a" and bad["error"].startswith("401") and bad["state"] == "cooldown"
    assert good["model_id"] == "x-b" and good["state"] == "healthy"  # its check passed: its cooldown ended
    assert UPSTREAM_KEY not in answer.text and "127.0.0.1" not in answer.text


def test_background_health_checks_cool_down_a_failing_deployment(fake_openai: FakeOpenAI) -> None:
    config = (
        "model_list:\n" + deployment("pair", "bg-a", order=1) + deployment("pair", "bg-b", order=2)
        + "general_settings:\n  background_health_checks: true\n  health_check_interval: 1\n"
        + "router_settings:\n  allowed_fails: 0\n  cooldown_time: 30\n"
    ).replace("FAKE", fake_openai.url)  # fmt: skip
    fake_openai.script("bg-a", "status-500")  # its first check fails
    with GatewayProcess(config) as gw:
        deadline = time.monotonic() + 5
        while fake_openai.served("bg-a") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        answer = chat(gw, "pair")
        assert answer.headers["x-lockgate-deployment"] == "bg-b"  # cooled down by the check, not by a client
        latest = httpx.get(gw.url + "/health", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10).json()
        assert "checked_at" in latest and latest["healthy_count"] + latest["unhealthy_count"] == 2


def test_a_fallback_without_a_feature_gets_the_request_without_it(
    gateway: GatewayProcess, fake_openai: FakeOpenAI
) -> None:
    """Cline's prompt-caching markers and a thinking parameter, on a request whose model fails over to one that
    supports neither: the fallback gets the request without them, and the answer says what was dropped."""
    fake_openai.script("ds-a", "status-500", "status-500")  # and its retry
    rules = {"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}
    marked = [{"role": "system", "content": [rules]}, {"role": "user", "content": "hi"}]
    answer = chat(gateway, "thinker", messages=marked, thinking={"type": "enabled"})
    assert answer.status_code == 200 and answer.headers["x-lockgate-deployment"] == "gpt-b", answer.text
    notice = answer.headers["x-lockgate-notice"]
    assert "dropped 'thinking'" in notice and "dropped cache_control" in notice, notice
    tried, served = [r.json for r in fake_openai.requests if r.json.get("model") in ("ds-a", "gpt-b")][-2:]
    assert tried["model"] == "ds-a" and tried["thinking"] and "cache_control" in tried["messages"][0]["content"][0]
    assert served["model"] == "gpt-b" and "thinking" not in served
    assert served["messages"][0]["content"] == [{"type": "text", "text": "rules"}]
    direct = chat(gateway, "plain", thinking={"type": "enabled"})  # asked for directly: refused, as before
    assert direct.status_code == 400 and direct.json()["error"]["param"] == "thinking"


@pytest.mark.parametrize("stream", [False, True])
def test_hedging_takes_the_first_answer_and_cancels_the_other(fake_openai: FakeOpenAI, stream: bool) -> None:
    config = (
        "model_list:\n" + deployment("hedge", "h-a", order=1) + deployment("hedge", "h-b", order=2)
        + "lockgate:\n  hedge_after: 0.2\n"
    ).replace("FAKE", fake_openai.url)  # fmt: skip
    with GatewayProcess(config) as gw:
        fake_openai.script("h-a", "firstbyte-3000" if stream else "slow-3000")
        started = time.monotonic()
        answer = chat(gw, "hedge", stream=stream)
        assert answer.status_code == 200 and answer.headers["x-lockgate-deployment"] == "h-b"
        assert answer.headers["x-lockgate-attempts"] == "2" and time.monotonic() - started < 1.5
        assert b"hello" in answer.content
        fast = chat(gw, "hedge", stream=stream)  # answered within the delay: no second attempt
        assert fast.headers["x-lockgate-deployment"] == "h-a" and fast.headers["x-lockgate-attempts"] == "1"
        record = next(r for r in reversed(gw.records()) if r.get("request_id") == answer.headers["x-request-id"])
        assert record["deployment_id"] == "h-b" and record["status"] == 200


def test_a_cooldown_on_one_instance_holds_on_the_others(fake_openai: FakeOpenAI) -> None:
    """Two gateways sharing Redis: the deployment one of them cooled down is not tried by the other, which has
    seen no failure of its own (the cooldown is published on the key-change channel)."""
    config = (
        "model_list:\n" + deployment("shared", "sh-a", order=1) + deployment("shared", "sh-b", order=2)
        + "router_settings:\n  allowed_fails: 0\n  cooldown_time: 30\n  num_retries: 1\n"
        + "  redis_url: redis://127.0.0.1:6379/9\n"
    ).replace("FAKE", fake_openai.url)  # fmt: skip
    with GatewayProcess(config) as one, GatewayProcess(config) as two:
        time.sleep(0.3)  # both subscribed
        fake_openai.script("sh-a", "status-500")
        assert chat(one, "shared").headers["x-lockgate-deployment"] == "sh-b"  # sh-a failed there: cooled down
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            answer = chat(two, "shared")
            if answer.headers["x-lockgate-deployment"] == "sh-b":
                break
            time.sleep(0.05)  # (sh-a answers normally now: only the published cooldown keeps two off it)
        assert answer.headers["x-lockgate-deployment"] == "sh-b" and answer.headers["x-lockgate-attempts"] == "1"
        assert fake_openai.served("sh-a") <= 2


def test_the_request_log_tells_each_attempt_and_each_refusal(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("x-a", "status-500")
    fake_openai.script("x-b", "status-429")
    answer = chat(gateway, "broken")
    record = next(r for r in reversed(gateway.records()) if r["request_id"] == answer.headers["x-request-id"])
    log = [(a["deployment_id"], a["outcome"], a["status"], a["error_kind"]) for a in record["attempt_log"]]
    assert log in (
        [("x-a", "failed", 500, "server"), ("x-b", "failed", 429, "rate_limit"), ("spare", "answered", 200, None)],
        [("x-b", "failed", 429, "rate_limit"), ("x-a", "failed", 500, "server"), ("spare", "answered", 200, None)],
    ), log  # (x-a may be cooling down from an earlier test, and then comes second)
    assert all(a["duration_ms"] > 0 for a in record["attempt_log"]) and record["modality"] == "text"
    picture = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    image = [{"role": "user", "content": [{"type": "text", "text": "what is it"}, picture]}]
    pictured = chat(gateway, "spare", messages=image)
    assert next(r for r in reversed(gateway.records()) if r["request_id"] == pictured.headers["x-request-id"])[
        "modality"] == "image"  # fmt: skip
    key = httpx.post(gateway.url + "/key/generate", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                     json={"rpm_limit": 1}, timeout=10).json()["key"]  # fmt: skip
    for _ in range(2):
        refused = httpx.post(gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": "spare", "messages": HI}, timeout=10)  # fmt: skip
    assert refused.status_code == 429
    record = next(r for r in reversed(gateway.records()) if r["request_id"] == refused.headers["x-request-id"])
    assert record["status"] == 429 and record["denied"] == "key" and record["attempt_log"] == []
