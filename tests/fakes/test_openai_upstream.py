"""Tests of the fake OpenAI upstream itself, driven mostly through the official ``openai`` SDK."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from .openai_upstream import DEFAULT_API_KEY, FakeOpenAI, embedding_for, mask_key, parse_fault

KEY = DEFAULT_API_KEY
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
        },
    }
]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpenAI) -> FakeOpenAI:
    server.clear()
    return server


@pytest.fixture
def client(fake: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0, timeout=5)


def raw(
    fake: FakeOpenAI, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request to the fake: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, data, hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def sse_chunks(payload: bytes) -> list[Any]:
    """The JSON events of an SSE body, with ``[DONE]`` kept as the string."""
    out: list[Any] = []
    for event in payload.decode().split("\n\n"):
        if event.startswith("data: "):
            data = event[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- chat ------------------------------------------------------------------------------------------------


def test_chat_non_stream(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    resp = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello big world"},
        ],
    )
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-4o-mini"
    assert resp.created > 0
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: hello big world"
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 2 + 3 + 5
    assert resp.usage.completion_tokens == 4
    assert resp.usage.total_tokens == 14
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 0
    assert resp.usage.completion_tokens_details is not None
    assert resp.usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_content_parts_and_images(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "text", "text": "this?"},
                ],
            }
        ],
    )
    assert resp.choices[0].message.content == "echo: what is this?"


def test_chat_json_mode_and_max_tokens(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "give json"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(resp.choices[0].message.content or "") == {"echo": "give json"}

    resp = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "one two three four"}], max_tokens=2
    )
    assert resp.choices[0].message.content == "echo: one"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 2


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert {c.model for c in chunks} == {"gpt-4o"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me please"
    assert all(c.usage is None for c in chunks[:-1])
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (8, 4, 12)


def test_chat_stream_without_usage(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "no usage"}], stream=True)
    )
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"

    # on the wire the "usage" key is absent (not null) when include_usage is off
    status, headers, body = raw(
        fake,
        "POST",
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "no usage"}], "stream": True},
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_chunks(body)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    # and present as null on every chunk when it is on
    status, _, body = raw(
        fake,
        "POST",
        "/v1/chat/completions",
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "usage"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = sse_chunks(body)
    assert all(e["usage"] is None for e in events[:-2])
    assert events[-2]["choices"] == [] and events[-2]["usage"]["total_tokens"] == 6 + 2


def test_tools_non_stream(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id == "call_1"
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"x": 1}

    # after the tool result the model answers in text
    resp = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=TOOLS,
    )
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.content == "echo: weather?"


def test_tools_stream(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    with client.chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name) == ("call_1", "get_weather")
    assert json.loads(call.function.arguments) == {"x": 1}

    # OpenAI's fragment form: id/type/name first with empty arguments, then index+arguments only
    _, _, body = raw(
        fake,
        "POST",
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "w"}], "tools": TOOLS, "stream": True},
    )
    events = sse_chunks(body)
    fragments = [e["choices"][0]["delta"]["tool_calls"][0] for e in events[:-1] if e["choices"][0]["delta"]]
    assert fragments[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert len(fragments) > 2
    assert all(set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in fragments[1:])
    assert "".join(f["function"]["arguments"] for f in fragments) == '{"x": 1}'


def test_chat_validation_errors(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=[])
    assert exc.value.status_code == 400
    status, _, body = raw(fake, "POST", "/v1/chat/completions", {"model": "gpt-4o"})
    assert status == 400
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == "messages"
    status, _, body = raw(fake, "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
    assert status == 400 and "model" in json.loads(body)["error"]["message"]


def test_paths_without_v1_prefix_and_models(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    status, _, body = raw(
        fake, "POST", "/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "echo: hi"
    models = client.models.list()
    assert "gpt-4o" in [m.id for m in models.data]
    status, _, body = raw(fake, "GET", "/models")
    assert status == 200 and json.loads(body)["object"] == "list"
    status, _, _ = raw(fake, "GET", "/v1/nope")
    assert status == 404


# -- embeddings ------------------------------------------------------------------------------------------


def test_embeddings_default_base64(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    resp = client.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])
    assert fake.last_request.json["encoding_format"] == "base64"  # the SDK asks for base64 by default
    assert resp.model == "text-embedding-3-small"
    assert [d.index for d in resp.data] == [0, 1]
    assert resp.data[0].embedding == embedding_for("alpha beta")
    assert resp.data[1].embedding == embedding_for("gamma")
    assert len(resp.data[0].embedding) == 8
    assert resp.data[0].embedding != resp.data[1].embedding
    assert resp.usage.prompt_tokens == 3 and resp.usage.total_tokens == 3


def test_embeddings_float_and_tokens(client: openai.OpenAI) -> None:
    resp = client.embeddings.create(model="text-embedding-3-small", input="alpha beta", encoding_format="float")
    assert resp.data[0].embedding == embedding_for("alpha beta")
    resp = client.embeddings.create(model="text-embedding-3-small", input=[1, 2, 3], encoding_format="float")
    assert len(resp.data) == 1 and resp.data[0].embedding == embedding_for([1, 2, 3])
    assert resp.usage.prompt_tokens == 3


# -- auth and faults -------------------------------------------------------------------------------------


def test_wrong_key_401(fake: FakeOpenAI) -> None:
    bad = openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-wrong-key-1234", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        bad.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 401
    body = exc.value.body
    assert isinstance(body, dict)
    assert body["code"] == "invalid_api_key" and body["type"] == "invalid_request_error"
    assert "Incorrect API key provided: sk-wr****1234" in body["message"]
    assert mask_key(KEY) == "sk-up****cret"
    status, _, _ = raw(fake, "GET", "/v1/models", headers={"Authorization": ""})
    assert status == 401


def test_no_api_key_configured_accepts_anything() -> None:
    with FakeOpenAI(api_key=None) as fake:
        c = openai.OpenAI(base_url=fake.url + "/v1", api_key="whatever", max_retries=0)
        resp = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == "echo: hi"


def test_fault_429(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="fault-status-429", messages=[{"role": "user", "content": "hi"}])
    headers = exc.value.response.headers
    assert headers["retry-after"] == "1"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-tokens" in headers
    assert len(fake.requests) == 1  # max_retries=0: one attempt, recorded


def test_fault_500_and_embeddings_status(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="fault-status-500", messages=[{"role": "user", "content": "x"}])
    assert "upstream internal detail" in exc.value.message
    with pytest.raises(openai.APIStatusError) as exc2:
        client.embeddings.create(model="fault-status-503", input="x")
    assert exc2.value.status_code == 503


def test_fault_drop(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="fault-drop", messages=[{"role": "user", "content": "hi"}])
    assert fake.requests[-1].json["model"] == "fault-drop"


def test_fault_drop_mid_stream(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    got: list[Any] = []
    with pytest.raises(Exception):  # noqa: B017 - the transport error type is the HTTP library's
        for chunk in client.chat.completions.create(
            model="fault-dropmidstream", messages=[{"role": "user", "content": "a b c d"}], stream=True
        ):
            got.append(chunk)
    assert len(got) <= 2
    with pytest.raises(http.client.IncompleteRead):
        raw(
            fake,
            "POST",
            "/v1/chat/completions",
            {"model": "fault-dropmidstream", "messages": [{"role": "user", "content": "a b c"}], "stream": True},
        )


def test_fault_slow_and_slowstream(client: openai.OpenAI) -> None:
    t0 = time.monotonic()
    client.chat.completions.create(model="fault-slow-200", messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - t0 >= 0.2

    t0 = time.monotonic()
    stream = client.chat.completions.create(
        model="fault-slowstream-60", messages=[{"role": "user", "content": "one two"}], stream=True
    )
    first = next(iter(stream))
    t_first = time.monotonic() - t0
    rest = list(stream)
    total = time.monotonic() - t0
    assert first.choices[0].delta.role == "assistant"
    assert t_first < 0.5
    # 5 events follow the first one (3 words, finish chunk, [DONE]), each 60 ms apart
    assert total >= 0.06 * 5 - 0.01
    assert len(rest) == 4


def test_fault_nousage_and_badjson(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="fault-nousage",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    status, headers, body = raw(
        fake, "POST", "/v1/chat/completions", {"model": "fault-badjson", "messages": [{"role": "user"}]}
    )
    assert status == 200 and headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        json.loads(body)


def test_scripted_faults_then_normal_answers(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    fake.script("dep-a", "retry-7", "context", "policy", "ok", "status-503")
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="dep-a", messages=hi)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.BadRequestError) as long:
        client.chat.completions.create(model="dep-a", messages=hi)  # type: ignore[arg-type]
    assert long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as filtered:
        client.chat.completions.create(model="dep-a", messages=hi)  # type: ignore[arg-type]
    assert filtered.value.code == "content_filter"
    assert client.chat.completions.create(model="dep-a", messages=hi).choices  # type: ignore[arg-type]
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="dep-a", messages=hi)  # type: ignore[arg-type]
    assert client.chat.completions.create(model="dep-a", messages=hi).choices  # type: ignore[arg-type]
    assert fake.served("dep-a") == 6
    with pytest.raises(ValueError):
        fake.script("dep-a", "nonsense")


def test_fault_firstbyte_and_stall(client: openai.OpenAI) -> None:
    hi: Any = [{"role": "user", "content": "one two three"}]
    t0 = time.monotonic()
    with client.chat.completions.with_streaming_response.create(
        model="fault-firstbyte-300", messages=hi, stream=True
    ) as r:
        headers_at = time.monotonic() - t0
        chunks = list(r.iter_lines())
    assert headers_at < 0.25 and time.monotonic() - t0 >= 0.3 and chunks
    t0 = time.monotonic()
    stream = iter(client.chat.completions.create(model="fault-stall-300", messages=hi, stream=True))
    next(stream), next(stream)
    assert time.monotonic() - t0 < 0.25
    rest = list(stream)
    assert time.monotonic() - t0 >= 0.3 and rest


def test_parse_fault() -> None:
    assert parse_fault("fault-status-429") == ("status", 429)
    assert parse_fault("fault-slowstream-5") == ("slowstream", 5)
    assert parse_fault("fault-drop") == ("drop", 0)
    assert parse_fault("gpt-4o") == ("", 0)
    assert parse_fault("fault-unknown") == ("", 0)


# -- Azure -----------------------------------------------------------------------------------------------


def test_azure_chat_and_embeddings(fake: FakeOpenAI) -> None:
    az = openai.AzureOpenAI(azure_endpoint=fake.url, api_key=KEY, api_version="2024-10-21", max_retries=0)
    resp = az.chat.completions.create(model="my-deploy", messages=[{"role": "user", "content": "hi azure"}])
    assert resp.choices[0].message.content == "echo: hi azure"
    assert resp.model == "my-deploy"
    req = fake.last_request
    assert req.path == "/openai/deployments/my-deploy/chat/completions"
    assert req.query == {"api-version": "2024-10-21"}
    assert req.headers["api-key"] == KEY
    assert "authorization" not in req.headers

    emb = az.embeddings.create(model="emb-deploy", input="x y")
    assert emb.data[0].embedding == embedding_for("x y")
    assert fake.last_request.path == "/openai/deployments/emb-deploy/embeddings"

    stream = az.chat.completions.create(model="fault-nousage", messages=[{"role": "user", "content": "s"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: s"

    bad = openai.AzureOpenAI(azure_endpoint=fake.url, api_key="wrong-key-123", api_version="2024-10-21")
    with pytest.raises(openai.AuthenticationError):
        bad.with_options(max_retries=0).chat.completions.create(model="d", messages=[{"role": "user", "content": "x"}])
    status, _, body = raw(
        fake,
        "POST",
        "/openai/deployments/d/chat/completions",
        {"messages": [{"role": "user", "content": "x"}]},
        headers={"api-key": KEY},
    )
    assert status == 400 and "api-version" in json.loads(body)["error"]["message"]


# -- recording -------------------------------------------------------------------------------------------


def test_requests_recorded(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "rec"}], user="u1")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="fault-status-429", messages=[{"role": "user", "content": "x"}])
    raw(fake, "GET", "/v1/models?limit=3")
    assert [(r.method, r.path) for r in fake.requests] == [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
    ]
    first = fake.requests[0]
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.headers["content-type"] == "application/json"
    assert first.json == {"model": "gpt-4o", "messages": [{"role": "user", "content": "rec"}], "user": "u1"}
    assert json.loads(first.body) == first.json
    assert fake.requests[2].query == {"limit": "3"} and fake.requests[2].json is None
    fake.clear()
    assert fake.requests == []
