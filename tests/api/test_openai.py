"""End to end through a real gateway process: the official ``openai`` SDK -> lockgate -> fake OpenAI upstream."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai_upstream import FakeOpenAI, embedding_for
from tests.support import MASTER_KEY, GatewayProcess


def config_for(fake: FakeOpenAI) -> str:
    base = fake.url + "/v1"

    def entry(name: str, model: str, extra: str = "") -> str:
        return (
            f"  - model_name: {name}\n    litellm_params:\n      model: {model}\n      api_base: {base}\n"
            f"      api_key: os.environ/UPSTREAM_KEY\n{extra}"
        )

    return "\n".join(
        [
            "model_list:",
            entry("gpt-4o", "openai/gpt-4o")
            + "    model_info:\n      max_input_tokens: 128000\n      max_output_tokens: 16384\n"
            "      input_cost_per_token: 2.5e-06\n      output_cost_per_token: 1.0e-05\n"
            "      supports_vision: true\n      supports_prompt_caching: true\n",
            entry("embed", "openai/text-embedding-3-small") + "    model_info:\n      mode: embedding\n",
            entry("vllm", "hosted_vllm/meta-llama/Llama-3-8B"),
            entry("err-500", "openai/fault-status-500"),
            entry("err-429", "openai/fault-status-429"),
            entry("err-400", "openai/fault-status-400"),
            entry("drop", "openai/fault-drop"),
            entry("midstream", "openai/fault-dropmidstream"),
            entry("badjson", "openai/fault-badjson"),
            entry("nousage", "openai/fault-nousage"),
            entry("slow", "openai/fault-slow-3000", "      timeout: 0.4\n      stream_timeout: 0.4\n"),
            entry("with-fallback", "openai/fault-status-503"),
            entry("flaky", "openai/fault-status-502", "      order: 1\n"),
            entry("flaky", "openai/gpt-4o-mini", "      order: 2\n"),
            entry("defaults", "openai/gpt-4o", "      temperature: 0.25\n"),
            "  - model_name: wrong-key\n    litellm_params:\n      model: openai/gpt-4o\n"
            f"      api_base: {base}\n      api_key: sk-wrong-upstream-key-123456\n",
            "  - model_name: azure-gpt\n    litellm_params:\n      model: azure/my-deployment\n"
            f"      api_base: {fake.url}\n      api_key: os.environ/UPSTREAM_KEY\n      api_version: 2024-10-21\n",
            entry("openai/*", "openai/*"),
            "litellm_settings:\n  num_retries: 1\n  fallbacks: [{with-fallback: [gpt-4o]}]\n",
            "lockgate:\n  max_request_size_mb: 0.05\n",
        ]
    )


@pytest.fixture(scope="module")
def gateway(fake_openai: FakeOpenAI) -> Iterator[GatewayProcess]:
    with GatewayProcess(config_for(fake_openai), env={"UPSTREAM_KEY": UPSTREAM_KEY}) as gw:
        yield gw
        logs = gw.logs()
    # No secret ever reaches a log line.
    assert UPSTREAM_KEY not in logs
    assert MASTER_KEY not in logs


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=10)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assert_clean(body: str, fake: FakeOpenAI) -> None:
    """An error body carries no credential, URL, internal path or traceback."""
    for leak in (UPSTREAM_KEY, "sk-up", str(fake.port), "http://", "Traceback", "/work/", ".py"):
        assert leak not in body, f"{leak!r} leaked in {body}"


# --- chat completions -------------------------------------------------------------------------------


def test_chat_non_streaming(client: openai.OpenAI, fake_openai: FakeOpenAI, gateway: GatewayProcess) -> None:
    fake_openai.clear()
    response = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=user("hello gateway"))
    completion = response.parse()
    assert completion.choices[0].message.content == "echo: hello gateway"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    upstream = fake_openai.last_request
    assert upstream.json["model"] == "gpt-4o"
    assert upstream.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert response.headers["x-lockgate-model-group"] == "gpt-4o"
    record = gateway.wait_record(response.headers["x-request-id"])
    assert record["usage"]["total_tokens"] == completion.usage.total_tokens
    assert record["status"] == 200 and record["attempts"] == 1


def test_chat_without_v1_prefix(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.url, api_key=MASTER_KEY, max_retries=0)
    completion = client.chat.completions.create(model="gpt-4o", messages=user("no prefix"))
    assert completion.choices[0].message.content == "echo: no prefix"


def test_stream_with_usage(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=user("stream me please"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me please"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert fake_openai.last_request.json["stream_options"] == {"include_usage": True}


def test_stream_usage_captured_without_sending_it(
    client: openai.OpenAI, fake_openai: FakeOpenAI, gateway: GatewayProcess
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=user("count me quietly"), stream=True
    ) as response:
        raw = b"".join(response.iter_bytes())
        request_id = response.headers["x-request-id"]
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    assert events[-1].startswith(b": x-lockgate-response-cost ")  # the cost ends the stream, as an SSE comment
    events = events[:-1]
    assert events[-1] == b"data: [DONE]"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert all(p["choices"] for p in payloads), "the client did not ask for the usage chunk"
    # ...but the gateway asked the upstream for it, and accounted for it.
    assert fake_openai.last_request.json["stream_options"] == {"include_usage": True}
    assert gateway.wait_record(request_id)["usage"]["completion_tokens"] == 4


def test_tools_non_streaming_and_streaming(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        }
    ]
    completion = client.chat.completions.create(
        model="gpt-4o", messages=user("use a tool"), tools=tools, tool_choice="auto"
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"x": 1}
    assert completion.choices[0].finish_reason == "tool_calls"
    stream = client.chat.completions.create(model="gpt-4o", messages=user("use a tool"), tools=tools, stream=True)
    arguments = "".join(
        tc.function.arguments or ""
        for chunk in stream
        if chunk.choices
        for tc in (chunk.choices[0].delta.tool_calls or [])
        if tc.function
    )
    assert json.loads(arguments) == {"x": 1}


def test_response_format_and_image_parts(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            }
        ],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"echo": "describe"}
    sent = fake_openai.last_request.json
    assert sent["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png")


def test_body_passes_through_unchanged_when_nothing_changes(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    raw = b'{"model": "gpt-4o",  "messages": [{"role": "user", "content": "exact bytes"}], "seed": 7}'
    response = httpx.post(gateway.url + "/v1/chat/completions", content=raw, headers=gateway.headers())
    assert response.status_code == 200
    assert fake_openai.last_request.body == raw


def test_deployment_defaults_and_upstream_model(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    client.chat.completions.create(model="defaults", messages=user("hi"))
    assert fake_openai.last_request.json["temperature"] == 0.25
    client.chat.completions.create(model="defaults", messages=user("hi"), temperature=0.9)
    assert fake_openai.last_request.json["temperature"] == 0.9
    client.chat.completions.create(model="vllm", messages=user("hi"), extra_body={"top_k": 5})
    sent = fake_openai.last_request.json
    assert sent["model"] == "meta-llama/Llama-3-8B" and sent["top_k"] == 5


def test_wildcard_model(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    completion = client.chat.completions.create(model="openai/gpt-4.1-nano", messages=user("wild"))
    assert completion.choices[0].message.content == "echo: wild"
    assert fake_openai.last_request.json["model"] == "gpt-4.1-nano"


def test_azure_deployment(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    completion = client.chat.completions.create(model="azure-gpt", messages=user("to azure"))
    assert completion.choices[0].message.content == "echo: to azure"
    upstream = fake_openai.last_request
    assert upstream.path == "/openai/deployments/my-deployment/chat/completions"
    assert upstream.query == {"api-version": "2024-10-21"}
    assert upstream.headers["api-key"] == UPSTREAM_KEY and "authorization" not in upstream.headers


# --- parameters ---------------------------------------------------------------------------------------


def test_unsupported_parameter_refused_or_dropped(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=user("hi"), extra_body={"thinking": {"type": "x"}})
    assert "thinking" in caught.value.message and "drop_params" in caught.value.message
    # Cline sends drop_params and litellm_session_id: both are the gateway's, never forwarded.
    client.chat.completions.create(
        model="gpt-4o",
        messages=user("hi"),
        extra_body={"thinking": {"type": "x"}, "drop_params": True, "litellm_session_id": "cline-1"},
    )
    sent = fake_openai.last_request.json
    assert "thinking" not in sent and "drop_params" not in sent and "litellm_session_id" not in sent


@pytest.mark.parametrize(
    "field", ["api_base", "api_key", "base_url", "aws_access_key_id", "vertex_credentials", "extra_headers"]
)
def test_client_cannot_redirect_traffic(client: openai.OpenAI, fake_openai: FakeOpenAI, field: str) -> None:
    fake_openai.clear()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4o", messages=user("hi"), extra_body={field: "http://169.254.169.254/", "drop_params": True}
        )
    assert caught.value.body["param"] == field  # type: ignore[index]
    assert caught.value.body["code"] == "forbidden_field"  # type: ignore[index]
    assert fake_openai.requests == []


# --- errors -------------------------------------------------------------------------------------------


def post(gateway: GatewayProcess, body: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        content=body,
        headers=gateway.headers() if headers is None else headers,
        timeout=10,
    )


def test_malformed_and_incomplete_requests(gateway: GatewayProcess) -> None:
    cases = [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "missing_required_parameter"),
        (b'{"model": "gpt-4o"}', 400, None),
        (b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}', 404, "model_not_found"),
        (b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
    ]
    for body, status, code in cases:
        response = post(gateway, body)
        assert response.status_code == status, (body[:40], response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"]
        if code:
            assert error["code"] == code


def test_body_over_limit_is_413(gateway: GatewayProcess) -> None:
    big = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 60_000}]})
    response = post(gateway, big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no content-length: the limit holds while reading
        yield big.encode()[:30_000]
        yield big.encode()[30_000:]

    response = httpx.post(gateway.url + "/v1/chat/completions", content=chunked(), headers=gateway.headers())
    assert response.status_code == 413


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": MASTER_KEY},
        {"x-api-key": "sk-nope"},
        {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()},
    ],
)
def test_auth_refused(gateway: GatewayProcess, headers: dict[str, str]) -> None:
    response = post(gateway, b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}', headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert MASTER_KEY not in response.text


@pytest.mark.parametrize("header", ["Authorization", "x-api-key", "x-litellm-api-key"])
def test_auth_headers_accepted(gateway: GatewayProcess, header: str) -> None:
    value = f"Bearer {MASTER_KEY}" if header == "Authorization" else MASTER_KEY
    response = httpx.get(gateway.url + "/v1/models", headers={header: value})
    assert response.status_code == 200


def test_unknown_route_and_method(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url + "/v1/secret-admin").status_code == 404  # 404 before auth
    response = httpx.get(gateway.url + "/v1/chat/completions", headers=gateway.headers())
    assert response.status_code == 405 and response.headers["allow"] == "POST"


def test_upstream_errors_keep_status_and_are_scrubbed(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.clear()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="err-500", messages=user("hi"))
    assert caught.value.status_code == 500
    assert "upstream internal detail" in caught.value.message  # the upstream's message is kept
    assert len(fake_openai.requests) == 2  # num_retries: 1
    assert_clean(caught.value.response.text, fake_openai)

    with pytest.raises(openai.RateLimitError) as rate:
        client.chat.completions.create(model="err-429", messages=user("hi"))
    assert rate.value.status_code == 429

    fake_openai.clear()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="err-400", messages=user("hi"))
    assert len(fake_openai.requests) == 1  # a client error is not retried

    with pytest.raises(openai.AuthenticationError) as auth:
        client.chat.completions.create(model="wrong-key", messages=user("hi"))
    assert_clean(auth.value.response.text, fake_openai)
    assert "sk-wrong" not in auth.value.response.text


def test_dropped_connection_and_bad_json(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="drop", messages=user("hi"))
    assert caught.value.status_code == 502
    assert_clean(caught.value.response.text, fake_openai)
    with pytest.raises(openai.APIStatusError) as bad:
        client.chat.completions.create(model="badjson", messages=user("hi"))
    assert bad.value.status_code == 502


def test_timeouts_give_504_not_a_hang(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="slow", messages=user("hi"))
    assert caught.value.status_code == 504
    with pytest.raises(openai.APIStatusError) as stream_caught:
        client.chat.completions.create(model="slow", messages=user("hi"), stream=True)
    assert stream_caught.value.status_code == 504


def test_stream_broken_midway_ends_with_error_event(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    stream = client.chat.completions.create(model="midstream", messages=user("one two three four"), stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
    assert received, "the first chunks reached the client before the break"
    assert "stream" in caught.value.message
    assert_clean(str(caught.value.body), fake_openai)


def test_stream_without_upstream_usage(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="nousage", messages=user("a b"), stream=True
    ) as response:
        raw = b"".join(response.iter_bytes())
        request_id = response.headers["x-request-id"]
    assert raw.endswith(b"data: [DONE]\n\n")
    usage = gateway.wait_record(request_id)["usage"]  # none came: what was produced is counted, an event a token
    assert usage["estimated"] is True and usage["completion_tokens"] >= 2 and "prompt_tokens" not in usage


def test_retry_moves_to_next_deployment(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.clear()
    response = client.chat.completions.with_raw_response.create(model="flaky", messages=user("retry"))
    assert response.parse().choices[0].message.content == "echo: retry"
    assert [r.json["model"] for r in fake_openai.requests] == ["fault-status-502", "gpt-4o-mini"]
    assert response.headers["x-lockgate-attempts"] == "2"


def test_fallback_group(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.clear()
    response = client.chat.completions.with_raw_response.create(model="with-fallback", messages=user("fall"))
    assert response.parse().choices[0].message.content == "echo: fall"
    assert [r.json["model"] for r in fake_openai.requests] == ["fault-status-503", "fault-status-503", "gpt-4o"]
    assert response.headers["x-lockgate-model-group"] == "gpt-4o"


# --- embeddings, models, model info ------------------------------------------------------------------


def test_embeddings_base64_default_and_float(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    result = client.embeddings.create(model="embed", input=["alpha", "beta"])  # the SDK asks for base64
    assert fake_openai.last_request.json["encoding_format"] == "base64"
    assert [round(x, 5) for x in result.data[1].embedding] == [round(x, 5) for x in embedding_for("beta")]
    floats = client.embeddings.create(model="embed", input="alpha", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(embedding_for("alpha"))
    assert floats.usage.prompt_tokens > 0


def test_embeddings_refuse_chat_fields(gateway: GatewayProcess) -> None:
    response = httpx.post(
        gateway.url + "/v1/embeddings",
        json={"model": "embed", "input": "x", "messages": []},
        headers=gateway.headers(),
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    missing = httpx.post(gateway.url + "/v1/embeddings", json={"model": "embed"}, headers=gateway.headers())
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"


def test_models_list(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o" in ids and "azure-gpt" in ids and "flaky" in ids
    assert ids.count("flaky") == 1
    assert "openai/*" not in ids


def test_model_info_shape_for_cline(gateway: GatewayProcess) -> None:
    # Cline calls /v1/model/info with x-litellm-api-key and reads these fields.
    response = httpx.get(gateway.url + "/v1/model/info", headers={"x-litellm-api-key": MASTER_KEY})
    assert response.status_code == 200
    data = response.json()["data"]
    gpt = next(d for d in data if d["model_name"] == "gpt-4o")
    assert gpt["litellm_params"]["model"] == "openai/gpt-4o"
    info = gpt["model_info"]
    assert info["max_input_tokens"] == 128000 and info["max_output_tokens"] == 16384
    assert info["input_cost_per_token"] == 2.5e-06 and info["supports_vision"] is True
    for key in ("max_tokens", "supports_reasoning", "cache_read_input_token_cost", "cache_creation_input_token_cost"):
        assert key in info
    assert UPSTREAM_KEY not in response.text and "api_key" not in response.text
    assert "sk-wrong-upstream-key" not in response.text
    assert httpx.get(gateway.url + "/model/info", headers=gateway.headers()).json() == response.json()


def test_model_info_shows_the_prices_the_gateway_charges(tmp_path: Path) -> None:
    """As LiteLLM merges its cost map into model_info: a deployment priced by the catalog shows the catalog's prices
    and limits; its own model_info wins field by field; base_model finds a price-file entry; no credential."""
    from lockgate.catalog import load_catalog

    price_file = tmp_path / "model_prices_and_context_window.json"
    price_file.write_text(
        json.dumps({"azure/gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                                     "litellm_provider": "azure", "max_input_tokens": 128000,
                                     "max_output_tokens": 16384, "mode": "chat"}})
    )  # fmt: skip
    config = (
        "model_list:\n"
        "  - model_name: opus\n    litellm_params: {model: anthropic/claude-opus-5, api_key: sk-ant-hidden-1}\n"
        "  - model_name: opus-cheap\n    litellm_params: {model: anthropic/claude-opus-5, api_key: sk-ant-hidden-1}\n"
        "    model_info: {input_cost_per_token: 1.0e-06, max_output_tokens: 4096}\n"
        "  - model_name: azure-gpt\n    litellm_params: {model: azure/my-prod-gpt, api_base: 'http://127.0.0.1:1',"
        " api_key: sk-azure-hidden-2, api_version: 2024-10-21}\n"
        "    model_info: {base_model: gpt-4o}\n"
        "  - model_name: unpriced\n    litellm_params: {model: demo/echo}\n"
        f"lockgate:\n  price_file: {price_file}\n"
    )
    opus = load_catalog().prices_for("anthropic", "claude-opus-5")
    assert opus is not None
    with GatewayProcess(config) as gw:
        response = httpx.get(gw.url + "/v1/model/info", headers={"x-litellm-api-key": MASTER_KEY})
    assert response.status_code == 200
    info = {d["model_name"]: d["model_info"] for d in response.json()["data"]}
    shown = info["opus"]
    for name in ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
                 "cache_creation_input_token_cost", "cache_creation_input_token_cost_above_1hr",
                 "max_input_tokens", "max_output_tokens"):  # fmt: skip
        assert shown[name] == opus[name], name
    assert shown["max_tokens"] == opus["max_output_tokens"]  # LiteLLM's older name for the output limit
    assert "source" not in shown and "checked" not in shown
    cheap = info["opus-cheap"]
    assert cheap["input_cost_per_token"] == 1e-06 and cheap["output_cost_per_token"] == opus["output_cost_per_token"]
    assert cheap["max_output_tokens"] == cheap["max_tokens"] == 4096
    assert cheap["max_input_tokens"] == opus["max_input_tokens"]
    azure = info["azure-gpt"]
    assert azure["input_cost_per_token"] == 2.5e-06 and azure["output_cost_per_token"] == 1e-05
    assert azure["max_input_tokens"] == 128000 and azure["key"] == "my-prod-gpt"
    assert info["unpriced"]["input_cost_per_token"] is None and info["unpriced"]["output_cost_per_token"] is None
    assert "hidden" not in response.text and "api_key" not in response.text


def test_health_endpoints(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.url + "/health/liveliness").status_code == 200
    ready = httpx.get(gateway.url + "/health/readiness")
    assert ready.status_code == 200 and ready.json()["status"] == "healthy"
    assert httpx.get(gateway.url + "/health").status_code == 401


def test_health_reports_each_deployment_without_secrets(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    response = httpx.get(gateway.url + "/health", headers=gateway.headers(), timeout=30)
    assert response.status_code == 200
    report = response.json()
    healthy = {e["model"] for e in report["healthy_endpoints"]}
    unhealthy = {e["model"]: e["error"] for e in report["unhealthy_endpoints"]}
    assert {"gpt-4o", "azure-gpt", "embed", "vllm"} <= healthy
    assert unhealthy["err-500"].startswith("500:") and unhealthy["err-429"].startswith("429:")
    assert "wrong-key" in unhealthy
    assert report["healthy_count"] == len(report["healthy_endpoints"])
    assert_clean(response.text, fake_openai)
    assert "sk-wrong" not in response.text


def test_too_many_headers_is_431(gateway: GatewayProcess) -> None:
    headers = {**gateway.headers(), **{f"x-filler-{i}": "x" for i in range(150)}}
    response = httpx.get(gateway.url + "/v1/models", headers=headers)
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "request_header_fields_too_large"
