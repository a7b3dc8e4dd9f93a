"""Tests of the fake Anthropic upstream itself, driven mostly through the official ``anthropic`` SDK."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic._constants import ANTHROPIC_API_VERSION as SDK_API_VERSION

from .anthropic_upstream import (
    ANTHROPIC_VERSION,
    DEFAULT_API_KEY,
    MESSAGE_TOKEN_OVERHEAD,
    TOOL_USE_ID,
    FakeAnthropic,
    count_input_tokens,
    last_user_text,
    parse_fault,
    signature_for,
)

KEY = DEFAULT_API_KEY
MODEL = "claude-sonnet-4-6"
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
    }
]
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAnthropic) -> FakeAnthropic:
    server.clear()
    return server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0, timeout=5) as c:
        yield c


def raw(
    fake: FakeAnthropic, path: str, body: Any = None, headers: dict[str, str] | None = None, method: str = "POST"
) -> httpx.Response:
    """One plain HTTP request to the fake with a valid key and version unless ``headers`` override them."""
    hdrs = {"x-api-key": KEY, "anthropic-version": ANTHROPIC_VERSION, **(headers or {})}
    hdrs = {k: v for k, v in hdrs.items() if v}
    return httpx.request(method, fake.url + path, json=body, headers=hdrs, timeout=5)


def sse_events(payload: bytes) -> list[tuple[str, Any]]:
    """``(event name, parsed data)`` for each SSE event of a body."""
    out: list[tuple[str, Any]] = []
    for chunk in payload.decode().split("\n\n"):
        if not chunk.strip():
            continue
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def error_of(exc: anthropic.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    err = body["error"]
    assert isinstance(err, dict)
    return err


# -- text ------------------------------------------------------------------------------------------------


def test_non_stream_text(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    msg = client.messages.create(
        model=MODEL,
        max_tokens=100,
        system="be brief",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]}],
    )
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: hello world"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    usage = msg.usage
    assert usage.input_tokens == 2 + 2 + MESSAGE_TOKEN_OVERHEAD  # "be brief" + "hello world" + 1 message
    assert usage.output_tokens == 3
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert usage.cache_creation is not None and usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert usage.service_tier == "standard"
    assert fake.last_request.headers["anthropic-version"] == SDK_API_VERSION


def test_max_tokens_and_stop_sequences(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "one two three"}])
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: one"
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 2

    msg = client.messages.create(
        model=MODEL, max_tokens=50, stop_sequences=["three"], messages=[{"role": "user", "content": "one two three"}]
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: one two "
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "three"

    msg = client.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "warm"}])
    assert msg.content == [] and msg.stop_reason == "max_tokens"


def test_stream_matches_non_stream(client: anthropic.Anthropic) -> None:
    kwargs: Any = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "stream me please"}]}
    expected = client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["echo:", " stream", " me", " please"]
    assert [b.to_dict() for b in final.content] == [b.to_dict() for b in expected.content]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == expected.usage.output_tokens == 4
    assert final.usage.input_tokens == expected.usage.input_tokens


def test_raw_sse_event_sequence(fake: FakeAnthropic) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 2000,
        "stream": True,
        "thinking": THINKING,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "hi there"}],
    }
    resp = raw(fake, "/v1/messages", body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.content)
    assert all(data["type"] == name for name, data in events)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 1 and start["usage"]["cache_read_input_tokens"] == 0
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": TOOL_USE_ID, "name": "get_weather", "input": {}},
    ]
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert [d["type"] for d in deltas if d["type"] == "signature_delta"] == ["signature_delta"]
    assert "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta") == '{"x": 1}'
    assert names.count("content_block_stop") == 3
    final = events[-2][1]
    assert final["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert final["usage"]["input_tokens"] == start["usage"]["input_tokens"]
    assert set(final["usage"]) >= {"output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"}


# -- thinking --------------------------------------------------------------------------------------------


def test_thinking_non_stream_and_round_trip(client: anthropic.Anthropic) -> None:
    question: Any = {"role": "user", "content": "weather?"}
    msg = client.messages.create(model=MODEL, max_tokens=2000, thinking=THINKING, tools=TOOLS, messages=[question])
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use"]
    thinking = msg.content[0]
    assert thinking.type == "thinking"
    assert thinking.thinking == "Let me think about: weather?"
    assert thinking.signature == signature_for(thinking.thinking)
    assert msg.stop_reason == "tool_use"

    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": TOOL_USE_ID, "content": "sunny"}]}
    follow = client.messages.create(
        model=MODEL, max_tokens=2000, thinking=THINKING, tools=TOOLS, messages=[question, msg.to_param(), result]
    )
    assert follow.stop_reason == "end_turn"
    assert [b.type for b in follow.content] == ["thinking", "text"]
    assert follow.content[1].type == "text" and follow.content[1].text == "echo: tool said: sunny"

    tampered = msg.to_param()
    blocks: Any = [b.to_dict() for b in msg.content]
    blocks[0]["signature"] = "sig_forged"
    tampered["content"] = blocks
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(
            model=MODEL, max_tokens=2000, thinking=THINKING, tools=TOOLS, messages=[question, tampered, result]
        )
    assert error_of(exc.value) == {
        "type": "invalid_request_error",
        "message": "messages.1.content.0: Invalid `signature` in `thinking` block",
    }


def test_thinking_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=2000, thinking={"type": "adaptive"}, messages=[{"role": "user", "content": "why"}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and "signature" in kinds
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "Let me think about: why"
    assert thinking.signature == signature_for("Let me think about: why")
    assert final.usage.output_tokens == 5 + 2  # thinking words + "echo: why"


def test_thinking_requires_final_assistant_turn_to_start_with_thinking(client: anthropic.Anthropic) -> None:
    messages: Any = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "sunny"}]},
    ]
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model=MODEL, max_tokens=2000, thinking=THINKING, tools=TOOLS, messages=messages)
    message = error_of(exc.value)["message"]
    assert "Expected `thinking` or `redacted_thinking`, but found `tool_use`" in message
    assert message.startswith("messages.1.content.0.type: ")
    # The same conversation is fine without thinking.
    msg = client.messages.create(model=MODEL, max_tokens=2000, tools=TOOLS, messages=messages)
    assert msg.stop_reason == "end_turn"


def test_thinking_budget_validation(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="greater than or equal to 1024"):
        client.messages.create(
            model=MODEL,
            max_tokens=2000,
            thinking={"type": "enabled", "budget_tokens": 10},
            messages=[{"role": "user", "content": "x"}],
        )
    with pytest.raises(anthropic.BadRequestError, match=r"must be greater than `thinking\.budget_tokens`"):
        client.messages.create(
            model=MODEL, max_tokens=1024, thinking=THINKING, messages=[{"role": "user", "content": "x"}]
        )


# -- tools -----------------------------------------------------------------------------------------------


def test_tools_then_tool_result(client: anthropic.Anthropic) -> None:
    question: Any = {"role": "user", "content": "weather in Paris"}
    msg = client.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=[question])
    assert [b.type for b in msg.content] == ["text", "tool_use"]
    tool = msg.content[1]
    assert tool.type == "tool_use" and tool.id == TOOL_USE_ID and tool.name == "get_weather" and tool.input == {"x": 1}
    assert msg.stop_reason == "tool_use"

    result: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": TOOL_USE_ID, "content": [{"type": "text", "text": "rain"}]}],
    }
    follow = client.messages.create(
        model=MODEL, max_tokens=100, tools=TOOLS, messages=[question, msg.to_param(), result]
    )
    assert follow.stop_reason == "end_turn"
    assert [b.type for b in follow.content] == ["text"]
    assert follow.content[0].type == "text" and follow.content[0].text == "echo: tool said: rain"

    none = client.messages.create(
        model=MODEL, max_tokens=100, tools=TOOLS, tool_choice={"type": "none"}, messages=[question]
    )
    assert none.stop_reason == "end_turn"

    with client.messages.stream(model=MODEL, max_tokens=100, tools=TOOLS, messages=[question]) as stream:
        final = stream.get_final_message()
    assert [b.to_dict() for b in final.content] == [b.to_dict() for b in msg.content]


def test_tool_pairing_errors(client: anthropic.Anthropic) -> None:
    orphan: Any = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_zz", "content": "x"}]}]
    with pytest.raises(anthropic.BadRequestError, match="unexpected `tool_use_id`"):
        client.messages.create(model=MODEL, max_tokens=100, messages=orphan)
    unanswered: Any = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}]},
        {"role": "user", "content": "never mind"},
    ]
    with pytest.raises(anthropic.BadRequestError, match="`tool_use` ids were found without `tool_result`"):
        client.messages.create(model=MODEL, max_tokens=100, messages=unanswered)
    bad_input: Any = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "f", "input": "{}"}]},
    ]
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.1\.content\.0\.tool_use\.input"):
        client.messages.create(model=MODEL, max_tokens=100, messages=bad_input)


# -- caching and counting --------------------------------------------------------------------------------


def test_cache_control_creation_then_read(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    system: Any = [
        {"type": "text", "text": f"long shared context {uuid.uuid4().hex}", "cache_control": {"type": "ephemeral"}}
    ]

    def ask(question: str) -> anthropic.types.Usage:
        messages: Any = [{"role": "user", "content": question}]
        usage = client.messages.create(model=MODEL, max_tokens=100, system=system, messages=messages).usage
        total = count_input_tokens(fake.last_request.json)
        assert (
            usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
            == total
        )
        return usage

    first = ask("first question")
    assert first.cache_creation_input_tokens == 4 and first.cache_read_input_tokens == 0
    assert first.cache_creation is not None and first.cache_creation.ephemeral_5m_input_tokens == 4
    assert first.input_tokens == 2 + MESSAGE_TOKEN_OVERHEAD
    second = ask("another different question")
    assert second.cache_creation_input_tokens == 0 and second.cache_read_input_tokens == 4
    assert second.input_tokens == 3 + MESSAGE_TOKEN_OVERHEAD

    with client.messages.stream(
        model=MODEL, max_tokens=100, system=system, messages=[{"role": "user", "content": "streamed"}]
    ) as stream:
        usage = stream.get_final_message().usage
    assert usage.cache_read_input_tokens == 4 and usage.cache_creation_input_tokens == 0

    fake.clear_cache()
    assert ask("again").cache_creation_input_tokens == 4


def test_cache_breakpoint_in_messages_and_1h_ttl(client: anthropic.Anthropic) -> None:
    tag = uuid.uuid4().hex
    messages: Any = [
        {
            "role": "user",
            "content": [{"type": "text", "text": f"doc {tag}", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        },
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "question"},
    ]
    first = client.messages.create(model=MODEL, max_tokens=100, messages=messages).usage
    assert first.cache_creation_input_tokens == 2 + MESSAGE_TOKEN_OVERHEAD
    assert first.cache_creation is not None and first.cache_creation.ephemeral_1h_input_tokens == 5
    assert first.cache_creation.ephemeral_5m_input_tokens == 0
    second = client.messages.create(model=MODEL, max_tokens=100, messages=messages).usage
    assert second.cache_read_input_tokens == 5 and second.cache_creation_input_tokens == 0


def test_count_tokens(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    result = client.messages.count_tokens(
        model=MODEL,
        system="you are terse",
        messages=[{"role": "user", "content": "a b c"}, {"role": "assistant", "content": "d"}],
    )
    assert result.input_tokens == 3 + 3 + 1 + 2 * MESSAGE_TOKEN_OVERHEAD
    assert fake.last_request.path == "/v1/messages/count_tokens"
    resp = raw(
        fake,
        "/v1/messages/count_tokens",
        {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "max_tokens: Extra inputs are not permitted"


def test_models(client: anthropic.Anthropic) -> None:
    models = list(client.models.list())
    assert models and all(m.type == "model" for m in models)
    one = client.models.retrieve(models[0].id)
    assert one.id == models[0].id
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-nope")


# -- auth, headers, validation ---------------------------------------------------------------------------


def test_wrong_key_401(fake: FakeAnthropic) -> None:
    with (
        anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-wrong", max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError) as exc,
    ):
        bad.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert error_of(exc.value) == {"type": "authentication_error", "message": "invalid x-api-key"}
    assert fake.last_request.headers["authorization"] == "Bearer sk-ant-wrong"

    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    assert raw(fake, "/v1/messages", body).status_code == 200  # x-api-key works too
    resp = raw(fake, "/v1/messages", body, headers={"x-api-key": "sk-ant-wrong"})
    assert resp.status_code == 401 and resp.json()["error"]["message"] == "invalid x-api-key"
    # x-api-key decides even when a valid bearer token is also present
    resp = raw(fake, "/v1/messages", body, headers={"x-api-key": "sk-ant-wrong", "authorization": f"Bearer {KEY}"})
    assert resp.status_code == 401
    resp = raw(fake, "/v1/messages", body, headers={"x-api-key": ""})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"


def test_adaptive_only_models(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match=r"thinking\.type\.enabled` is not supported"):
        client.messages.create(
            model="claude-opus-4-7", max_tokens=2000, thinking=THINKING, messages=[{"role": "user", "content": "x"}]
        )
    msg = client.messages.create(
        model="claude-opus-4-7",
        max_tokens=2000,
        thinking={"type": "adaptive"},
        messages=[{"role": "user", "content": "x"}],
    )
    assert msg.content[0].type == "thinking"


def test_missing_anthropic_version_400(fake: FakeAnthropic) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    resp = raw(fake, "/v1/messages", body, headers={"anthropic-version": ""})
    assert resp.status_code == 400
    data = resp.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in data["error"]["message"]
    assert resp.headers["request-id"] == data["request_id"]
    assert raw(fake, "/v1/messages", body).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
        ({"model": MODEL, "max_tokens": "10", "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Input"),
        ({"model": MODEL, "max_tokens": 10}, "messages: Field required"),
        ({"model": MODEL, "max_tokens": 10, "messages": []}, "messages: at least one message is required"),
        ({"model": MODEL, "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        (
            {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "n": 2},
            "n: Extra inputs are not permitted",
        ),
    ],
)
def test_validation_errors(fake: FakeAnthropic, body: dict[str, Any], message: str) -> None:
    resp = raw(fake, "/v1/messages", body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(message)


def test_extra_field_via_sdk(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}], extra_body={"frequency_penalty": 1}
        )
    assert error_of(exc.value)["message"] == "frequency_penalty: Extra inputs are not permitted"


def test_requests_and_headers_recorded(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    client.messages.create(
        model=MODEL,
        max_tokens=10,
        messages=[{"role": "user", "content": "recorded"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14"},
    )
    assert len(fake.requests) == 1
    req = fake.last_request
    assert req.method == "POST" and req.path == "/v1/messages"
    assert req.headers["anthropic-beta"] == "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14"
    assert req.headers["anthropic-version"] == SDK_API_VERSION
    assert req.headers["authorization"] == f"Bearer {KEY}"  # how the SDK sends api_key
    assert req.json == {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "recorded"}]}
    assert json.loads(req.body) == req.json
    fake.clear()
    assert fake.requests == []
    with pytest.raises(AssertionError):
        _ = fake.last_request


# -- faults ----------------------------------------------------------------------------------------------


def test_parse_fault_and_helpers() -> None:
    assert parse_fault("fault-status-529") == ("status", 529)
    assert parse_fault("fault-streamerror") == ("streamerror", 0)
    assert parse_fault(MODEL) == ("", 0)
    assert signature_for("abc").startswith("sig_") and len(signature_for("abc")) == 20
    assert last_user_text([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == "a"


def test_fault_429(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(model="fault-status-429", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert exc.value.response.headers["retry-after"] == "1"
    assert error_of(exc.value)["type"] == "rate_limit_error"
    assert fake.last_request.json["model"] == "fault-status-429"


def test_fault_529_and_500(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.OverloadedError) as exc:
        client.messages.create(model="fault-status-529", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert error_of(exc.value) == {"type": "overloaded_error", "message": "Overloaded"}
    with pytest.raises(anthropic.InternalServerError) as exc2:
        client.messages.create(model="fault-status-500", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert error_of(exc2.value)["type"] == "api_error"
    assert "upstream internal detail" in error_of(exc2.value)["message"]
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(model="fault-status-403", max_tokens=10, messages=[{"role": "user", "content": "x"}])


def test_fault_drop(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model="fault-drop", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert fake.last_request.json["model"] == "fault-drop"


def test_fault_drop_mid_stream(fake: FakeAnthropic) -> None:
    body = {
        "model": "fault-dropmidstream",
        "max_tokens": 10,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    received = b""
    with (
        pytest.raises(httpx.TransportError),
        httpx.stream(
            "POST",
            fake.url + "/v1/messages",
            json=body,
            headers={"x-api-key": KEY, "anthropic-version": ANTHROPIC_VERSION},
            timeout=5,
        ) as resp,
    ):
        assert resp.status_code == 200
        for chunk in resp.iter_bytes():
            received += chunk
    assert [name for name, _ in sse_events(received)] == ["message_start", "ping"]


def test_fault_stream_error(client: anthropic.Anthropic) -> None:
    with (
        client.messages.stream(
            model="fault-streamerror", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as stream,
        pytest.raises(anthropic.APIStatusError) as exc,
    ):
        for _ in stream:
            pass
    assert error_of(exc.value) == {"type": "overloaded_error", "message": "Overloaded"}
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model="fault-streamerror", max_tokens=10, messages=[{"role": "user", "content": "x"}])


def test_fault_slow(client: anthropic.Anthropic) -> None:
    started = time.perf_counter()
    msg = client.messages.create(model="fault-slow-200", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert time.perf_counter() - started >= 0.2
    assert msg.model == "fault-slow-200"
