"""Tests of the fake Gemini API upstream itself, driven with plain httpx (no google-genai SDK)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .gemini_upstream import (
    API_KEY_INVALID_MESSAGE,
    CACHED_CONTENT_TOKENS,
    DEFAULT_API_KEY,
    FUNCTION_CALL_ARGS,
    IMAGE_TOKENS,
    MISSING_SIGNATURE_MESSAGE,
    FakeGemini,
    count_tokens,
    last_user_text,
    parse_fault,
    thought_signature_for,
)

KEY = DEFAULT_API_KEY
MODEL = "gemini-2.5-flash"
TOOLS: list[Any] = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
            },
            {"name": "get_time", "description": "Current time"},
        ]
    }
]
THINKING: Any = {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}


def user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": t} for t in texts]}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeGemini) -> FakeGemini:
    server.clear()
    return server


@pytest.fixture
def client(fake: FakeGemini) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, headers={"x-goog-api-key": KEY}, timeout=5) as c:
        yield c


def generate(client: httpx.Client, body: Any, model: str = MODEL, **kwargs: Any) -> httpx.Response:
    return client.post(f"/v1beta/models/{model}:generateContent", json=body, **kwargs)


def stream_raw(client: httpx.Client, body: Any, model: str = MODEL, alt: str | None = "sse") -> httpx.Response:
    params = {"alt": alt} if alt else None
    return client.post(f"/v1beta/models/{model}:streamGenerateContent", json=body, params=params)


def sse_chunks(raw: bytes) -> list[Any]:
    """Parse a CRLF-framed SSE body into its JSON chunks, checking the framing on the way."""
    assert raw.endswith(b"\r\n\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")  # every line ending is CRLF
    events = raw.split(b"\r\n\r\n")
    assert events[-1] == b""
    chunks = []
    for event in events[:-1]:
        assert event.startswith(b"data: ")
        assert b"[DONE]" not in event
        chunks.append(json.loads(event[len(b"data: ") :]))
    return chunks


def texts(parts: list[Any], *, thought: bool = False) -> str:
    return "".join(p["text"] for p in parts if "text" in p and bool(p.get("thought")) == thought)


def assert_error(resp: httpx.Response, code: int, status: str, message: str | None = None) -> dict[str, Any]:
    assert resp.status_code == code, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code
    assert error["status"] == status
    if message is not None:
        assert message in error["message"]
    return error


# -- plain text --------------------------------------------------------------------------------------------


def test_generate_text(client: httpx.Client, fake: FakeGemini) -> None:
    body = {"contents": [user("hello there")], "systemInstruction": {"parts": [{"text": "be brief"}]}}
    resp = generate(client, body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    data = resp.json()
    candidate = data["candidates"][0]
    assert candidate["content"] == {"role": "model", "parts": [{"text": "echo: hello there"}]}
    assert candidate["finishReason"] == "STOP"
    assert candidate["index"] == 0
    usage = data["usageMetadata"]
    assert usage["promptTokenCount"] == 4 == count_tokens(body)
    assert usage["candidatesTokenCount"] == 3
    assert usage["totalTokenCount"] == 7
    assert "thoughtsTokenCount" not in usage and "cachedContentTokenCount" not in usage
    assert data["modelVersion"] == MODEL
    assert isinstance(data["responseId"], str) and data["responseId"]
    recorded = fake.last_request
    assert recorded.path == f"/v1beta/models/{MODEL}:generateContent"
    assert recorded.headers["x-goog-api-key"] == KEY
    assert recorded.json == body
    assert fake.requests_with_key_in_url() == []


def test_role_defaults_to_user_and_snake_case_is_accepted(client: httpx.Client) -> None:
    body = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "system_instruction": {"parts": [{"text": "sys"}]},
        "generation_config": {"max_output_tokens": 100, "response_mime_type": "text/plain"},
    }
    resp = generate(client, body)
    assert resp.status_code == 200, resp.text
    assert texts(resp.json()["candidates"][0]["content"]["parts"]) == "echo: hi"


def test_multi_turn_echoes_last_user_text_and_counts_images(client: httpx.Client) -> None:
    image = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    body = {
        "contents": [
            user("first"),
            {"role": "model", "parts": [{"text": "echo: first"}]},
            {"role": "user", "parts": [{"text": "second one"}, image]},
        ]
    }
    resp = generate(client, body)
    data = resp.json()
    assert texts(data["candidates"][0]["content"]["parts"]) == "echo: second one"
    usage = data["usageMetadata"]
    assert usage["promptTokenCount"] == 1 + 2 + 2 + IMAGE_TOKENS
    assert usage["promptTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": 5},
        {"modality": "IMAGE", "tokenCount": IMAGE_TOKENS},
    ]
    assert last_user_text(body["contents"]) == "second one"


def test_max_output_tokens_json_mode_and_stop_sequences(client: httpx.Client) -> None:
    data = generate(client, {"contents": [user("a b c d")], "generationConfig": {"maxOutputTokens": 2}}).json()
    assert data["candidates"][0]["content"]["parts"] == [{"text": "echo: a"}]
    assert data["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert data["usageMetadata"]["candidatesTokenCount"] == 2

    body = {"contents": [user("hi you")], "generationConfig": {"responseMimeType": "application/json"}}
    data = generate(client, body).json()
    assert json.loads(data["candidates"][0]["content"]["parts"][0]["text"]) == {"echo": "hi you"}

    data = generate(client, {"contents": [user("x STOP y")], "generationConfig": {"stopSequences": ["STOP"]}}).json()
    assert data["candidates"][0]["content"]["parts"] == [{"text": "echo: x "}]
    assert data["candidates"][0]["finishReason"] == "STOP"


def test_cached_content(client: httpx.Client) -> None:
    body = {"contents": [user("hi")], "cachedContent": "cachedContents/abc123"}
    usage = generate(client, body).json()["usageMetadata"]
    assert usage["cachedContentTokenCount"] == CACHED_CONTENT_TOKENS
    assert usage["promptTokenCount"] == 1 + CACHED_CONTENT_TOKENS
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    bad = generate(client, {**body, "systemInstruction": {"parts": [{"text": "s"}]}})
    assert_error(bad, 400, "INVALID_ARGUMENT", "CachedContent can not be used")


def test_count_tokens(client: httpx.Client) -> None:
    body = {"contents": [user("one two three")], "tools": TOOLS}
    prompt = generate(client, body).json()["usageMetadata"]["promptTokenCount"]
    resp = client.post(f"/v1beta/models/{MODEL}:countTokens", json={"generateContentRequest": {"model": MODEL, **body}})
    assert resp.status_code == 200
    assert resp.json()["totalTokens"] == prompt == count_tokens(body)
    resp = client.post(f"/v1beta/models/{MODEL}:countTokens", json={"contents": [user("one two three")]})
    assert resp.json() == {"totalTokens": 3, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 3}]}
    bad = client.post(f"/v1beta/models/{MODEL}:countTokens", json={"contents": [], "bogus": 1})
    assert_error(bad, 400, "INVALID_ARGUMENT", 'Unknown name "bogus"')


# -- streaming ---------------------------------------------------------------------------------------------


def test_stream_sse(client: httpx.Client) -> None:
    body = {"contents": [user("hello big world")]}
    full = generate(client, body).json()
    resp = stream_raw(client, body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(resp.content)
    assert len(chunks) == 4  # one per word of "echo: hello big world"
    assert "".join(texts(c["candidates"][0]["content"]["parts"]) for c in chunks) == "echo: hello big world"
    for chunk in chunks[:-1]:
        assert "finishReason" not in chunk["candidates"][0]
        assert chunk["usageMetadata"]["promptTokenCount"] == 3
    assert [c["usageMetadata"]["candidatesTokenCount"] for c in chunks] == [1, 2, 3, 4]  # cumulative
    last = chunks[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"] == full["usageMetadata"]
    assert {c["responseId"] for c in chunks} == {last["responseId"]}
    assert all(c["modelVersion"] == MODEL for c in chunks)


def test_stream_without_alt_is_a_json_array(client: httpx.Client) -> None:
    resp = stream_raw(client, {"contents": [user("hi")]}, alt=None)
    assert resp.status_code == 200
    chunks = resp.json()
    assert isinstance(chunks, list) and len(chunks) == 2
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_stream_max_tokens(client: httpx.Client) -> None:
    body = {"contents": [user("a b c d")], "generationConfig": {"maxOutputTokens": 3}}
    chunks = sse_chunks(stream_raw(client, body).content)
    assert "".join(texts(c["candidates"][0]["content"]["parts"]) for c in chunks) == "echo: a b"
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"


# -- thinking ----------------------------------------------------------------------------------------------


def test_thinking_parts_and_usage(client: httpx.Client) -> None:
    body = {"contents": [user("why sky blue")], "generationConfig": THINKING}
    data = generate(client, body).json()
    parts = data["candidates"][0]["content"]["parts"]
    assert parts[0] == {"text": "Let me think about: why sky blue", "thought": True}
    assert parts[1] == {"text": "echo: why sky blue"}
    usage = data["usageMetadata"]
    assert usage["thoughtsTokenCount"] == 7
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"] + 7


def test_thinking_variants(client: httpx.Client) -> None:
    hidden = {"contents": [user("q")], "generationConfig": {"thinkingConfig": {"thinkingBudget": 512}}}
    data = generate(client, hidden).json()
    assert data["candidates"][0]["content"]["parts"] == [{"text": "echo: q"}]
    assert data["usageMetadata"]["thoughtsTokenCount"] == 5

    level = {
        "contents": [user("q")],
        "generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW", "includeThoughts": True}},
    }
    parts = generate(client, level).json()["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True

    off = {
        "contents": [user("q")],
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 0, "includeThoughts": True}},
    }
    data = generate(client, off).json()
    assert "thoughtsTokenCount" not in data["usageMetadata"]
    assert len(data["candidates"][0]["content"]["parts"]) == 1

    both = {
        "contents": [user("q")],
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 5, "thinkingLevel": "LOW"}},
    }
    assert_error(generate(client, both), 400, "INVALID_ARGUMENT", "only one of thinking budget and thinking level")


def test_thinking_stream(client: httpx.Client) -> None:
    body = {"contents": [user("why sky blue")], "generationConfig": THINKING}
    chunks = sse_chunks(stream_raw(client, body).content)
    parts = [c["candidates"][0]["content"]["parts"][0] for c in chunks]
    thought_chunks = [p for p in parts if p.get("thought")]
    assert parts[: len(thought_chunks)] == thought_chunks  # thoughts come first
    assert texts(parts, thought=True) == "Let me think about: why sky blue"
    assert texts(parts) == "echo: why sky blue"
    assert len(thought_chunks) == 7 and len(chunks) == 7 + 4
    assert [c["usageMetadata"]["thoughtsTokenCount"] for c in chunks] == [1, 2, 3, 4, 5, 6, 7, 7, 7, 7, 7]
    assert "candidatesTokenCount" not in chunks[0]["usageMetadata"]
    last = chunks[-1]["usageMetadata"]
    assert last["thoughtsTokenCount"] == 7 and last["candidatesTokenCount"] == 4
    assert last["totalTokenCount"] == last["promptTokenCount"] + 4 + 7


# -- function calling --------------------------------------------------------------------------------------


def call_turn(name: str = "get_weather", signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": FUNCTION_CALL_ARGS}}
    if signature is not None:
        part["thoughtSignature"] = signature
    return {"role": "model", "parts": [part]}


def response_turn(name: str = "get_weather") -> dict[str, Any]:
    return {"role": "user", "parts": [{"functionResponse": {"name": name, "response": {"temp": 21}}}]}


def test_function_call_then_response_with_signature(client: httpx.Client) -> None:
    first = {"contents": [user("weather?")], "tools": TOOLS}
    data = generate(client, first).json()
    candidate = data["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    [part] = candidate["content"]["parts"]
    assert part["functionCall"] == {"name": "get_weather", "args": {"x": 1}}
    signature = thought_signature_for("get_weather")
    assert part["thoughtSignature"] == signature
    assert thought_signature_for("get_weather") == signature != thought_signature_for("get_time")
    assert data["usageMetadata"]["candidatesTokenCount"] > 0

    follow = {"contents": [user("weather?"), candidate["content"], response_turn()], "tools": TOOLS}
    resp = generate(client, follow)
    assert resp.status_code == 200, resp.text
    assert resp.json()["candidates"][0]["content"]["parts"] == [{"text": 'echo: tool said: {"temp":21}'}]
    assert last_user_text(follow["contents"]) == 'tool said: {"temp":21}'


def test_follow_up_without_signature_is_rejected(client: httpx.Client) -> None:
    body = {"contents": [user("weather?"), call_turn(), response_turn()], "tools": TOOLS}
    error = assert_error(generate(client, body), 400, "INVALID_ARGUMENT", MISSING_SIGNATURE_MESSAGE)
    assert "default_api:get_weather" in error["message"] and "position 2" in error["message"]

    body["contents"][1] = call_turn(signature="Zm9vYmFy")
    assert_error(generate(client, body), 400, "INVALID_ARGUMENT", "Corrupted thought signature.")

    body["contents"][1] = call_turn(signature="skip_thought_signature_validator")
    assert generate(client, body).status_code == 200


def test_function_call_pairing(client: httpx.Client) -> None:
    sig = thought_signature_for("get_weather")
    orphan = {"contents": [user("hi"), response_turn()], "tools": TOOLS}
    assert_error(generate(client, orphan), 400, "INVALID_ARGUMENT", "function response turn comes immediately after")
    wrong_name = {"contents": [user("hi"), call_turn(signature=sig), response_turn("get_time")], "tools": TOOLS}
    assert_error(generate(client, wrong_name), 400, "INVALID_ARGUMENT", "get_time")
    first_call = {"contents": [call_turn(signature=sig), response_turn()], "tools": TOOLS}
    assert_error(generate(client, first_call), 400, "INVALID_ARGUMENT", "function call turn comes immediately after")


def test_tool_config_modes(client: httpx.Client) -> None:
    none = {"contents": [user("hi")], "tools": TOOLS, "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}
    assert generate(client, none).json()["candidates"][0]["content"]["parts"] == [{"text": "echo: hi"}]
    config = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}
    data = generate(client, {"contents": [user("hi")], "tools": TOOLS, "toolConfig": config}).json()
    assert data["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_time"
    bad_mode = {"contents": [user("hi")], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}
    assert_error(generate(client, bad_mode), 400, "INVALID_ARGUMENT", "Invalid value at")
    bad_name = {"contents": [user("hi")], "tools": [{"functionDeclarations": [{"name": "1abc"}]}]}
    assert_error(generate(client, bad_name), 400, "INVALID_ARGUMENT", "Invalid function name")


def test_function_call_with_thinking_and_stream(client: httpx.Client) -> None:
    body = {"contents": [user("weather?")], "tools": TOOLS, "generationConfig": THINKING}
    parts = generate(client, body).json()["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True
    assert parts[1]["thoughtSignature"] == thought_signature_for("get_weather")

    chunks = sse_chunks(stream_raw(client, body).content)
    last = chunks[-1]["candidates"][0]
    assert last["content"]["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"x": 1}},
            "thoughtSignature": thought_signature_for("get_weather"),
        }
    ]
    assert last["finishReason"] == "STOP"
    assert all("functionCall" not in c["candidates"][0]["content"]["parts"][0] for c in chunks[:-1])


# -- auth and validation -----------------------------------------------------------------------------------


def test_wrong_or_missing_key(fake: FakeGemini) -> None:
    url = f"{fake.url}/v1beta/models/{MODEL}:generateContent"
    body = {"contents": [user("hi")]}
    for headers in ({"x-goog-api-key": "AIza-wrong"}, {}):
        resp = httpx.post(url, json=body, headers=headers)
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert error["message"] == API_KEY_INVALID_MESSAGE
        assert error["status"] == "INVALID_ARGUMENT"
        assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
        assert error["details"][0]["reason"] == "API_KEY_INVALID"


def test_key_in_query_is_accepted_and_recorded(fake: FakeGemini) -> None:
    resp = httpx.post(
        f"{fake.url}/v1beta/models/{MODEL}:generateContent", params={"key": KEY}, json={"contents": [user("hi")]}
    )
    assert resp.status_code == 200
    assert fake.last_request.query["key"] == KEY
    assert fake.requests_with_key_in_url() == [fake.last_request]
    assert "x-goog-api-key" not in fake.last_request.headers


def test_unknown_fields(client: httpx.Client) -> None:
    error = assert_error(generate(client, {"contents": [user("hi")], "temperature": 0.5}), 400, "INVALID_ARGUMENT")
    assert error["message"] == 'Invalid JSON payload received. Unknown name "temperature": Cannot find field.'
    nested = {"contents": [user("hi")], "generationConfig": {"max_tokens": 5}}
    error = assert_error(generate(client, nested), 400, "INVALID_ARGUMENT")
    assert error["message"] == (
        "Invalid JSON payload received. Unknown name \"max_tokens\" at 'generation_config': Cannot find field."
    )
    in_part = {"contents": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    assert_error(generate(client, in_part), 400, "INVALID_ARGUMENT", "at 'contents[0].parts[0]'")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "contents is not specified"),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "Please use a valid role: user, model."),
        ({"contents": [{"role": "user", "parts": []}]}, "contents.parts must not be empty"),
        ({"contents": [{"role": "user", "parts": [{}]}]}, "required oneof field 'data'"),
        ({"contents": [{"role": "user", "parts": [{"text": 5}]}]}, "(TYPE_STRING)"),
        ({"contents": [{"role": "user", "parts": [{"text": "a", "functionCall": {"name": "f"}}]}]}, "Oneof field"),
        ({"contents": "hi"}, "Invalid value at 'contents'"),
    ],
)
def test_invalid_bodies(client: httpx.Client, body: Any, message: str) -> None:
    assert_error(generate(client, body), 400, "INVALID_ARGUMENT", message)


def test_bad_json_and_unknown_route(client: httpx.Client) -> None:
    resp = client.post(f"/v1beta/models/{MODEL}:generateContent", content=b"{nope")
    assert_error(resp, 400, "INVALID_ARGUMENT", "Invalid JSON payload received")
    assert_error(client.post(f"/v1beta/models/{MODEL}:embedThings", json={}), 404, "NOT_FOUND")
    assert_error(client.get(f"/v1beta/models/{MODEL}:generateContent"), 404, "NOT_FOUND")
    ok = client.post(f"/v1/models/{MODEL}:generateContent", json={"contents": [user("hi")]})
    assert ok.status_code == 200


# -- faults ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
        (404, "NOT_FOUND"),
        (403, "PERMISSION_DENIED"),
    ],
)
def test_status_faults(client: httpx.Client, code: int, status: str) -> None:
    model = f"fault-status-{code}"
    body = {"contents": [user("hi")]}
    for resp in (generate(client, body, model), stream_raw(client, body, model)):
        error = assert_error(resp, code, status)
        assert resp.headers["content-type"].startswith("application/json")
        if code == 500:
            assert "upstream internal detail" in error["message"]
        if code == 429:
            assert any(d["@type"].endswith("RetryInfo") for d in error["details"])
        if code == 404:
            assert f"models/{model} is not found" in error["message"]


def test_fault_drop(client: httpx.Client) -> None:
    with pytest.raises(httpx.TransportError):
        generate(client, {"contents": [user("hi")]}, "fault-drop")


def test_fault_dropmidstream(client: httpx.Client) -> None:
    body = {"contents": [user("one two three four")]}
    with pytest.raises(httpx.TransportError):
        generate(client, body, "fault-dropmidstream")
    received = b""
    with (
        pytest.raises(httpx.TransportError),
        client.stream("POST", "/v1beta/models/fault-dropmidstream:streamGenerateContent?alt=sse", json=body) as resp,
    ):
        assert resp.status_code == 200
        for piece in resp.iter_raw():
            received += piece
    chunks = sse_chunks(received)
    assert len(chunks) == 2
    assert all("finishReason" not in c["candidates"][0] for c in chunks)


def test_fault_safety(client: httpx.Client) -> None:
    body = {"contents": [user("hi")]}
    data = generate(client, body, "fault-safety").json()
    [candidate] = data["candidates"]
    assert candidate["finishReason"] == "SAFETY"
    assert "content" not in candidate
    assert data["usageMetadata"]["promptTokenCount"] == 1
    [chunk] = sse_chunks(stream_raw(client, body, "fault-safety").content)
    assert chunk["candidates"][0]["finishReason"] == "SAFETY"


def test_fault_blocked(client: httpx.Client) -> None:
    body = {"contents": [user("hi")]}
    data = generate(client, body, "fault-blocked").json()
    assert "candidates" not in data
    assert data["promptFeedback"]["blockReason"] == "SAFETY"
    [chunk] = sse_chunks(stream_raw(client, body, "fault-blocked").content)
    assert chunk["promptFeedback"]["blockReason"] == "SAFETY"


def test_fault_streamerror(client: httpx.Client) -> None:
    body = {"contents": [user("hello world")]}
    resp = stream_raw(client, body, "fault-streamerror")
    assert resp.status_code == 200
    first, second = sse_chunks(resp.content)
    assert first["candidates"][0]["content"]["parts"] == [{"text": "echo:"}]
    assert second == {
        "error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}
    }
    assert_error(generate(client, body, "fault-streamerror"), 503, "UNAVAILABLE")


def test_fault_slow_and_badjson(client: httpx.Client) -> None:
    body = {"contents": [user("a b c")]}
    assert generate(client, body, "fault-slow-20").status_code == 200
    assert len(sse_chunks(stream_raw(client, body, "fault-slowstream-10").content)) == 4
    resp = generate(client, body, "fault-badjson")
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        resp.json()


def test_parse_fault_and_lifecycle() -> None:
    assert parse_fault("fault-status-429") == ("status", 429)
    assert parse_fault("fault-safety") == ("safety", 0)
    assert parse_fault(MODEL) == ("", 0)
    fake = FakeGemini(api_key=None)
    with pytest.raises(RuntimeError):
        _ = fake.url
    with fake:
        resp = httpx.post(f"{fake.url}/v1beta/models/{MODEL}:generateContent", json={"contents": [user("hi")]})
        assert resp.status_code == 200  # no key configured: anything goes
        assert fake.last_request.json == {"contents": [user("hi")]}
        fake.clear()
        with pytest.raises(AssertionError):
            _ = fake.last_request
    fake.stop()  # idempotent
