"""Gemini end to end: the official SDKs -> lockgate -> a fake Gemini API (AI Studio wire format)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes.gemini_upstream import FakeGemini
from tests.support import MASTER_KEY, GatewayProcess

GEMINI_KEY = "AIza-gemini-canary-key-3f2e1d0c9b8a7"


@pytest.fixture(scope="module")
def fake_gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=GEMINI_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(fake_gemini: FakeGemini) -> Iterator[GatewayProcess]:
    def entry(name: str, model: str) -> str:
        return (
            f"  - model_name: {name}\n    litellm_params:\n      model: gemini/{model}\n"
            f"      api_base: {fake_gemini.url}\n      api_key: os.environ/GEMINI_KEY\n"
        )

    config = (
        "model_list:\n"
        + entry("gemini", "gemini-2.5-flash")
        + entry("gemini-throttled", "fault-status-429")
        + entry("gemini-resource-name", "models/gemini-2.5-flash")  # the API's resource name, as some configs say
    )
    with GatewayProcess(config, env={"GEMINI_KEY": GEMINI_KEY}) as gw:
        yield gw
        logs = gw.logs()
    assert GEMINI_KEY not in logs
    assert fake_gemini.requests and fake_gemini.requests_with_key_in_url() == []  # the key never went in a URL


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=10)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
]


def test_chat_on_gemini(client: openai.OpenAI, fake_gemini: FakeGemini) -> None:
    completion = client.chat.completions.create(
        model="gemini",
        messages=[{"role": "system", "content": "be brief"}, *user("hello gemini")],  # type: ignore[list-item]
    )
    assert completion.choices[0].message.content == "echo: hello gemini"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    sent = fake_gemini.last_request
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY and "key" not in sent.query
    assert sent.json["systemInstruction"] == {"parts": [{"text": "be brief"}]}


def test_a_model_named_by_its_resource_name(client: openai.OpenAI, fake_gemini: FakeGemini) -> None:
    completion = client.chat.completions.create(model="gemini-resource-name", messages=user("hi"))  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "echo: hi"
    assert fake_gemini.last_request.path == "/v1beta/models/gemini-2.5-flash:generateContent"


def test_stream_on_gemini(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gemini",
        messages=user("stream from gemini"),
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: stream from gemini"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_thinking_tokens_are_reasoning_tokens(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gemini", messages=user("think"), reasoning_effort="low")  # type: ignore[arg-type]
    extra: dict[str, Any] = completion.choices[0].message.model_extra or {}
    assert extra.get("reasoning_content")
    usage = completion.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens > 0


def test_tool_loop_keeps_the_thought_signature(client: openai.OpenAI, fake_gemini: FakeGemini) -> None:
    first = client.chat.completions.create(model="gemini", messages=user("call a tool"), tools=TOOLS)  # type: ignore[arg-type]
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    follow_up = client.chat.completions.create(
        model="gemini",
        messages=[
            *user("call a tool"),  # type: ignore[list-item]
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert follow_up.choices[0].finish_reason == "stop"
    model_turn = fake_gemini.last_request.json["contents"][1]
    assert model_turn["parts"][0]["thoughtSignature"]  # restored by the gateway; the fake checks its value


def test_claude_code_on_gemini(gateway: GatewayProcess) -> None:
    claude = anthropic.Anthropic(base_url=gateway.url, auth_token=MASTER_KEY, api_key=None, max_retries=0)
    with claude.messages.stream(model="gemini", max_tokens=128, messages=user("from claude code")) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
    assert text == "echo: from claude code"


def test_gemini_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gemini-throttled", messages=user("hi"))  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gemini", messages=user("hi"), logit_bias={"1": 1})  # type: ignore[arg-type]
    assert "logit_bias" in caught.value.message


def test_count_tokens_asks_gemini(gateway: GatewayProcess, fake_gemini: FakeGemini) -> None:
    response = httpx.post(
        gateway.url + "/v1/messages/count_tokens",
        json={"model": "gemini", "system": "be brief", "messages": user("count these words please")},
        headers={"x-api-key": MASTER_KEY},
    )
    assert response.status_code == 200 and "x-lockgate-estimate" not in response.headers
    assert response.json()["input_tokens"] > 0
    assert fake_gemini.last_request.path == "/v1beta/models/gemini-2.5-flash:countTokens"
