"""End to end through a real gateway process in both directions across dialects:

- the official ``anthropic`` SDK (as Claude Code) -> /v1/messages -> an Anthropic upstream (pass-through)
  and -> an OpenAI-dialect upstream (translated);
- the official ``openai`` SDK (as Cline) -> /v1/chat/completions -> an Anthropic upstream (translated).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.anthropic_upstream import FakeAnthropic, count_input_tokens
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import MASTER_KEY, GatewayProcess

ANTHROPIC_KEY = "sk-ant-upstream-canary-3b9d1e"


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI) -> Iterator[GatewayProcess]:
    def claude(name: str, model: str) -> str:
        return (
            f"  - model_name: {name}\n    litellm_params:\n      model: anthropic/{model}\n"
            f"      api_base: {fake_anthropic.url}\n      api_key: os.environ/ANTHROPIC_KEY\n"
        )

    config = "".join(
        [
            "model_list:\n",
            claude("claude", "claude-sonnet-4-5"),
            claude("claude-sonnet-4-5", "claude-sonnet-4-5"),
            claude("claude-overloaded", "fault-status-529"),
            claude("claude-stream-error", "fault-streamerror"),
            claude("claude-cached", "claude-sonnet-4-5")
            + "      cache_control_injection_points:\n        - location: message\n          role: system\n"
            "        - location: message\n          index: -1\n",
            "  - model_name: gpt-for-claude-code\n    litellm_params:\n      model: openai/gpt-4o\n"
            f"      api_base: {fake_openai.url}/v1\n      api_key: os.environ/UPSTREAM_KEY\n",
            "router_settings:\n  model_group_alias:\n    '*haiku*': claude\n",
        ]
    )
    env = {"ANTHROPIC_KEY": ANTHROPIC_KEY, "UPSTREAM_KEY": UPSTREAM_KEY}
    with GatewayProcess(config, env=env) as gw:
        yield gw
        logs = gw.logs()
    assert ANTHROPIC_KEY not in logs and UPSTREAM_KEY not in logs and MASTER_KEY not in logs


@pytest.fixture
def claude_code(gateway: GatewayProcess) -> anthropic.Anthropic:
    # Claude Code sends ANTHROPIC_AUTH_TOKEN as a bearer token.
    return anthropic.Anthropic(base_url=gateway.url, auth_token=MASTER_KEY, api_key=None, max_retries=0, timeout=10)


@pytest.fixture
def cline(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=10)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


TOOLS: list[dict[str, Any]] = [
    {
        "name": "lookup",
        "description": "look up",
        "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
    }
]


# --- Anthropic client -> Anthropic upstream: pass-through --------------------------------------------


def test_messages_pass_through_with_headers(claude_code: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    message = claude_code.messages.create(
        model="claude",
        max_tokens=256,
        messages=user("hello claude"),
        extra_headers={
            "anthropic-beta": "interleaved-thinking-2025-05-14",
            "anthropic-version": "2023-06-01",
            "X-Claude-Code-Session-Id": "s-1",
        },
    )
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello claude"
    sent = fake_anthropic.last_request
    assert sent.json["model"] == "claude-sonnet-4-5"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in sent.headers
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent.headers["anthropic-version"] == "2023-06-01"


def test_same_model_name_forwards_the_exact_bytes(gateway: GatewayProcess, fake_anthropic: FakeAnthropic) -> None:
    raw = b'{"model": "claude-sonnet-4-5", "max_tokens": 64,  "messages": [{"role": "user", "content": "exact"}]}'
    headers = {"x-api-key": MASTER_KEY, "content-type": "application/json"}
    response = httpx.post(gateway.url + "/v1/messages", content=raw, headers=headers)
    assert response.status_code == 200, response.text
    assert fake_anthropic.last_request.body == raw
    assert fake_anthropic.last_request.headers["anthropic-version"] == "2023-06-01"  # the default when none is sent


def test_messages_stream_and_usage_recorded(claude_code: anthropic.Anthropic, gateway: GatewayProcess) -> None:
    with claude_code.messages.with_streaming_response.create(
        model="claude", max_tokens=256, messages=user("stream to me"), stream=True
    ) as response:
        raw = b"".join(response.iter_bytes())
        request_id = response.headers["x-request-id"]
    names = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_delta" in names and "message_delta" in names
    record = gateway.wait_record(request_id)
    assert record["usage"]["completion_tokens"] > 0 and record["usage"]["prompt_tokens"] > 0


def test_thinking_signature_round_trip_through_the_gateway(claude_code: anthropic.Anthropic) -> None:
    first = claude_code.messages.create(
        model="claude",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=TOOLS,  # type: ignore[arg-type]
        messages=user("think and use a tool"),
    )
    kinds = [block.type for block in first.content]
    assert kinds[0] == "thinking" and "tool_use" in kinds
    tool_use = next(b for b in first.content if b.type == "tool_use")
    follow_up = claude_code.messages.create(
        model="claude",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[
            *user("think and use a tool"),
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "42"}]},
        ],
    )
    assert follow_up.stop_reason == "end_turn"


# --- Anthropic client -> OpenAI-dialect upstream: translated ------------------------------------------


def test_claude_code_on_an_openai_model(claude_code: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    message = claude_code.messages.create(
        model="gpt-for-claude-code", max_tokens=128, system="be brief", messages=user("translate me")
    )
    assert message.content[0].type == "text" and message.content[0].text == "echo: translate me"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    sent = fake_openai.last_request.json
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["model"] == "gpt-4o" and sent["max_tokens"] == 128


def test_claude_code_tool_loop_on_an_openai_model(claude_code: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    first = claude_code.messages.create(
        model="gpt-for-claude-code",
        max_tokens=128,
        tools=TOOLS,
        messages=user("use a tool"),  # type: ignore[arg-type]
    )
    tool_use = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and tool_use.input == {"x": 1}
    claude_code.messages.create(
        model="gpt-for-claude-code",
        max_tokens=128,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[
            *user("use a tool"),
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "42"}]},
        ],
    )
    sent = fake_openai.last_request.json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == tool_use.id
    assert sent[2] == {"role": "tool", "tool_call_id": tool_use.id, "content": "42"}


def test_claude_code_stream_on_an_openai_model(claude_code: anthropic.Anthropic) -> None:
    with claude_code.messages.stream(
        model="gpt-for-claude-code", max_tokens=128, messages=user("stream translated")
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream translated"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_alias_and_unknown_model_in_anthropic_shape(claude_code: anthropic.Anthropic) -> None:
    message = claude_code.messages.create(model="claude-haiku-4-5-20251001", max_tokens=64, messages=user("hi"))
    assert message.content[0].text == "echo: hi"  # type: ignore[union-attr]
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude_code.messages.create(model="claude-opus-9", max_tokens=64, messages=user("hi"))
    body = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "model_group_alias" in body["error"]["message"]  # type: ignore[index]


def test_anthropic_errors(claude_code: anthropic.Anthropic, gateway: GatewayProcess) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude_code.messages.create(model="claude-overloaded", max_tokens=64, messages=user("hi"))
    assert caught.value.status_code == 529
    missing = httpx.post(
        gateway.url + "/v1/messages", json={"model": "claude", "messages": user("x")}, headers={"x-api-key": MASTER_KEY}
    )
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: field required (a non-negative integer)"},
    }
    unauthorised = httpx.post(gateway.url + "/v1/messages", json={}, headers={"x-api-key": "nope"})
    assert unauthorised.status_code == 401 and unauthorised.json()["error"]["type"] == "authentication_error"


def test_stream_error_event_reaches_the_client(claude_code: anthropic.Anthropic) -> None:
    with (
        pytest.raises(anthropic.APIError),
        claude_code.messages.stream(model="claude-stream-error", max_tokens=64, messages=user("hi")) as stream,
    ):
        for _ in stream:
            pass


def test_count_tokens(claude_code: anthropic.Anthropic, gateway: GatewayProcess) -> None:
    counted = claude_code.messages.count_tokens(model="claude", messages=user("count these words please"))
    assert counted.input_tokens > 0
    estimate = httpx.post(
        gateway.url + "/v1/messages/count_tokens",
        json={"model": "gpt-for-claude-code", "messages": user("count these words please")},
        headers={"x-api-key": MASTER_KEY},
    )
    assert estimate.status_code == 200 and estimate.headers["x-lockgate-estimate"] == "true"
    assert estimate.json()["input_tokens"] > 0


# --- OpenAI client -> Anthropic upstream: translated --------------------------------------------------


def test_cline_on_claude(cline: openai.OpenAI, fake_anthropic: FakeAnthropic) -> None:
    completion = cline.chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]},  # type: ignore[list-item]
            {"role": "user", "content": "hello from cline"},
        ],
    )
    assert completion.choices[0].message.content == "echo: hello from cline"
    sent = fake_anthropic.last_request.json
    assert sent["system"] == [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]
    assert sent["max_tokens"] > 0 and sent["model"] == "claude-sonnet-4-5"
    usage = completion.usage
    assert usage is not None
    extra: dict[str, Any] = usage.model_extra or {}
    # OpenAI's prompt_tokens count every input token: Anthropic's input_tokens plus cache writes and reads.
    assert usage.prompt_tokens == count_input_tokens(sent)
    assert extra["cache_creation_input_tokens"] > 0  # the system block was marked for caching
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == extra["cache_read_input_tokens"]


def test_cline_stream_on_claude_with_usage(cline: openai.OpenAI) -> None:
    stream = cline.chat.completions.create(
        model="claude", messages=user("stream from claude"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream from claude"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]


def test_cline_thinking_and_tools_multi_turn_on_claude(cline: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    first = cline.chat.completions.create(
        model="claude",
        messages=user("think then call"),
        tools=tools,  # type: ignore[arg-type]
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
        max_tokens=2048,
    )
    message = first.choices[0].message
    extra: dict[str, Any] = message.model_extra or {}
    assert first.choices[0].finish_reason == "tool_calls"
    assert extra["reasoning_content"] and extra["thinking_blocks"][0]["signature"]
    call = message.tool_calls[0]  # type: ignore[index]
    follow_up = cline.chat.completions.create(
        model="claude",
        messages=[
            *user("think then call"),
            {
                "role": "assistant",
                "content": message.content,
                "tool_calls": [call.model_dump()],
                "thinking_blocks": extra["thinking_blocks"],
            },  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ],
        tools=tools,  # type: ignore[arg-type]
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
        max_tokens=2048,
    )
    assert follow_up.choices[0].finish_reason == "stop"


def test_cline_stream_with_thinking_on_claude(cline: openai.OpenAI) -> None:
    stream = cline.chat.completions.create(
        model="claude",
        messages=user("think while streaming"),
        stream=True,
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
        max_tokens=2048,
    )
    reasoning, blocks = "", []
    for chunk in stream:
        if not chunk.choices:
            continue
        delta: dict[str, Any] = chunk.choices[0].delta.model_extra or {}
        reasoning += delta.get("reasoning_content") or ""
        blocks += delta.get("thinking_blocks") or []
    assert reasoning and blocks and blocks[0]["signature"] and blocks[0]["thinking"] == reasoning


def test_overloaded_claude_is_503_for_openai_clients(cline: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        cline.chat.completions.create(model="claude-overloaded", messages=user("hi"))
    assert caught.value.status_code == 503
    assert json.loads(caught.value.response.text)["error"]["message"]


def _thinking_turn(cline: openai.OpenAI, prompt: str) -> tuple[Any, list[dict[str, Any]]]:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    first = cline.chat.completions.create(
        model="claude",
        messages=user(prompt),
        tools=tools,  # type: ignore[arg-type]
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
        max_tokens=2048,
    )
    return first.choices[0].message, tools


@pytest.mark.parametrize("known", [True, False])
def test_reasoning_sent_back_without_signature(
    cline: openai.OpenAI, fake_anthropic: FakeAnthropic, known: bool
) -> None:
    """The Cline CLI sends earlier reasoning back as plain reasoning_content, with thinking still on."""
    message, tools = _thinking_turn(cline, f"cli turn {known}")
    extra: dict[str, Any] = message.model_extra or {}
    reasoning = extra["reasoning_content"] if known else "reasoning this gateway never returned"
    call = message.tool_calls[0]  # type: ignore[index]
    response = cline.chat.completions.with_raw_response.create(
        model="claude",
        messages=[
            *user(f"cli turn {known}"),
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()], "reasoning_content": reasoning},  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ],
        tools=tools,  # type: ignore[arg-type]
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
        max_tokens=2048,
    )
    assert response.parse().choices[0].finish_reason == "stop"
    sent = fake_anthropic.last_request.json
    if known:  # the signed block was restored from memory: thinking stays on
        assert sent["messages"][1]["content"][0] == extra["thinking_blocks"][0]
        assert sent["thinking"]["type"] == "enabled" and "x-lockgate-notice" not in response.headers
    else:  # nothing to restore: thinking is off for this turn, and the response says so
        assert "thinking" not in sent
        assert "thinking dropped" in response.headers["x-lockgate-notice"]


def test_cache_control_injection_points(cline: openai.OpenAI, fake_anthropic: FakeAnthropic) -> None:
    """The Cline CLI sends no cache markers; the deployment's injection points add them."""
    messages = [{"role": "system", "content": "a long system prompt " * 20}, *user("first question")]
    first = cline.chat.completions.create(model="claude-cached", messages=messages)  # type: ignore[arg-type]
    sent = fake_anthropic.last_request.json
    assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert sent["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert (first.usage.model_extra or {})["cache_creation_input_tokens"] > 0  # type: ignore[union-attr]
    again = cline.chat.completions.create(model="claude-cached", messages=messages)  # type: ignore[arg-type]
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # type: ignore[union-attr]
