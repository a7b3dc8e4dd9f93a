"""Golden-file tests for the Anthropic Messages ↔ OpenAI Chat Completions translation.

Each case is a directory ``tests/golden/anthropic_openai/<direction>/<case>/`` holding what arrives
(``input.json``, or ``input.sse``: the exact bytes of an upstream's stream) and what lockgate must send on
(``expected.json`` / ``expected.sse``), so a failing test shows what changed on the wire:

==========================  ===================================================  ==========================
direction                   function                                             files
==========================  ===================================================  ==========================
messages_to_chat            Anthropic request → OpenAI request                   input.json, expected.json
chat_to_messages            OpenAI request → Anthropic request                   input.json, expected.json
message_to_chat_response    Anthropic response → OpenAI response                 input.json, expected.json
chat_response_to_message    OpenAI response → Anthropic response                 input.json, expected.json
messages_to_chat_stream     MessagesToChatStream: Anthropic SSE → OpenAI chunks  input.sse, expected.sse
chat_to_messages_stream     ChatToMessagesStream: OpenAI chunks → Anthropic SSE  input.sse, expected.sse
==========================  ===================================================  ==========================

``created`` depends on the clock: the tests set it to 0 before comparing (the code is left alone). Streams are
fed whole, per event, and in pieces of 7 and of 1 bytes; every splitting must give the same bytes.

To regenerate: ``LOCKGATE_UPDATE_GOLDEN=1 pytest tests/dialects``, then review every changed expected file by
hand against the wire-format reference (the provider docs, and the official SDKs' types for shapes) before
keeping it. Cases in :data:`KNOWN_BUGS` hold hand-written expectations (what the output must be) and are never
overwritten; they are strict xfails, so fixing a bug makes its test fail until the mark is removed.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson
import pytest

from lockgate.dialects.anthropic import (
    chat_response_to_message,
    chat_to_messages,
    message_to_chat_response,
    messages_to_chat,
)
from lockgate.dialects.anthropic_stream import ChatToMessagesStream, MessagesToChatStream

if TYPE_CHECKING:  # the SDKs take seconds to import: only the tests that parse with them load them
    import httpx2
    from anthropic.types import Message
    from openai.lib.streaming.chat import ChatCompletionStreamState

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "anthropic_openai"
UPDATE = os.environ.get("LOCKGATE_UPDATE_GOLDEN") == "1"
MODEL = "client-model"  # the model name the client asked for, which responses and streams report

# (direction, case) → why the code's current output is wrong. The expected file is hand-written.
KNOWN_BUGS: dict[tuple[str, str], str] = {}  # (direction, case) -> why; empty: every known bug is fixed


def _case_dirs(direction: str) -> list[Any]:
    params = []
    for path in sorted((GOLDEN / direction).iterdir()):
        if not path.is_dir():
            continue
        reason = KNOWN_BUGS.get((direction, path.name))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(path, id=path.name, marks=marks))
    return params


def _is_known_bug(case: Path) -> bool:
    return (case.parent.name, case.name) in KNOWN_BUGS


# --- JSON goldens ----------------------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    """Pretty, key-sorted JSON: what the golden files hold, and what is compared (so 1 ≠ 1.0 ≠ true)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _check_json(case: Path, actual: Any) -> None:
    wire = orjson.loads(orjson.dumps(actual))  # what would go on the wire
    expected_path = case / "expected.json"
    if UPDATE and not _is_known_bug(case):
        expected_path.write_text(_canonical(wire), encoding="utf-8")
        return
    assert _canonical(wire) == _canonical(_load(expected_path))


def _zero_created(response: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(response.get("created"), int)
    return {**response, "created": 0}


JSON_DIRECTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "messages_to_chat": messages_to_chat,
    "chat_to_messages": chat_to_messages,
    "message_to_chat_response": lambda body: _zero_created(message_to_chat_response(body, MODEL)),
    "chat_response_to_message": lambda body: chat_response_to_message(body, MODEL),
}


def _run_json(direction: str, case: Path) -> None:
    body = _load(case / "input.json")
    pristine = copy.deepcopy(body)
    actual = JSON_DIRECTIONS[direction](body)
    assert body == pristine, "the translation changed its input"
    _check_json(case, actual)


@pytest.mark.parametrize("case", _case_dirs("messages_to_chat"))
def test_messages_to_chat(case: Path) -> None:
    _run_json("messages_to_chat", case)


@pytest.mark.parametrize("case", _case_dirs("chat_to_messages"))
def test_chat_to_messages(case: Path) -> None:
    _run_json("chat_to_messages", case)


@pytest.mark.parametrize("case", _case_dirs("message_to_chat_response"))
def test_message_to_chat_response(case: Path) -> None:
    _run_json("message_to_chat_response", case)


@pytest.mark.parametrize("case", _case_dirs("chat_response_to_message"))
def test_chat_response_to_message(case: Path) -> None:
    _run_json("chat_response_to_message", case)


def test_thinking_blocks_travel_byte_for_byte() -> None:
    """Signed thinking blocks go back to Anthropic first in the assistant turn, exactly as they came."""
    body = _load(GOLDEN / "chat_to_messages" / "thinking_blocks_before_tool_calls" / "input.json")
    sent = next(m for m in body["messages"] if m.get("thinking_blocks"))["thinking_blocks"]
    assistant = next(m for m in chat_to_messages(body)["messages"] if m["role"] == "assistant")
    assert [orjson.dumps(b) for b in assistant["content"][: len(sent)]] == [orjson.dumps(b) for b in sent]
    assert [b["type"] for b in assistant["content"][len(sent) :]] == ["text", "tool_use"]


# --- request validity: what the receiving API would refuse, whatever the exact translation ----------------

# Extra inputs whose exact translation is a design choice, but whose output must still be a valid request.
EXTRA_OPENAI_REQUESTS: dict[str, dict[str, Any]] = {
    "assistant_empty_content": {
        "model": "claude-alias",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "Are you there?"},
        ],
    },
}
EXTRA_ANTHROPIC_REQUESTS: dict[str, dict[str, Any]] = {
    "five_stop_sequences": {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stop_sequences": ["a", "b", "c", "d", "e"],
        "messages": [{"role": "user", "content": "Say something."}],
    },
}
INVALID_NOW: dict[str, str] = {}  # case -> why the translation is still invalid; empty: all fixed
REASONING_EFFORTS = {"none", "minimal", "low", "medium", "high", "xhigh", "max"}


def _requests(direction: str, extra: dict[str, dict[str, Any]]) -> list[Any]:
    found = [(p.name, _load(p / "input.json")) for p in (GOLDEN / direction).iterdir() if p.is_dir()]
    params = []
    for name, body in sorted([*found, *extra.items()], key=lambda item: item[0]):
        reason = INVALID_NOW.get(name)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(body, id=name, marks=marks))
    return params


def _anthropic_request_problems(body: dict[str, Any]) -> list[str]:
    """Rules of the Messages API (wire-formats 2.1-2.2 and the SDK's param types) that a request breaks."""
    problems = []
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        problems.append(f"max_tokens {max_tokens!r}")
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not (isinstance(budget, int) and isinstance(max_tokens, int) and 1024 <= budget < max_tokens):
            problems.append(f"thinking.budget_tokens {budget!r} must be >= 1024 and < max_tokens {max_tokens!r}")
    if thinking.get("type") in ("enabled", "adaptive"):
        problems += [f"{name} with thinking on" for name in ("temperature", "top_k") if name in body]
    if not 0 <= body.get("temperature", 0) <= 1:
        problems.append(f"temperature {body['temperature']!r} outside 0..1")
    choice = body.get("tool_choice")
    if choice is not None:
        allowed = {"none": {"type"}, "auto": {"type", "disable_parallel_tool_use"}}.get(
            choice.get("type"), {"type", "name", "disable_parallel_tool_use"}
        )
        if not set(choice) <= allowed:
            problems.append(f"tool_choice {choice!r}")
        if choice.get("type") == "tool" and choice.get("name") not in {t["name"] for t in body.get("tools") or []}:
            problems.append(f"tool_choice names an unknown tool {choice.get('name')!r}")
    blocks = [*(body.get("system") or [])]
    pending: set[str] = set()
    for message in body["messages"]:
        if message["role"] not in ("user", "assistant"):
            problems.append(f"role {message['role']!r}")
        content = message["content"]
        if not content:
            problems.append(f"empty {message['role']} content")
        content = content if isinstance(content, list) else [{"type": "text", "text": content}]
        blocks += content
        answered = {b["tool_use_id"] for b in content if b["type"] == "tool_result"}
        if pending and not pending <= answered:
            problems.append(f"tool_use ids without a tool_result in the next message: {sorted(pending - answered)}")
        pending = {b["id"] for b in content if b["type"] == "tool_use"}
    problems += ["an empty text block" for b in blocks if b.get("type") == "text" and not b.get("text")]
    breakpoints = sum("cache_control" in b for b in [*blocks, *(body.get("tools") or [])])
    if breakpoints > 4:
        problems.append(f"{breakpoints} cache_control breakpoints (at most 4)")
    return problems


def _openai_request_problems(body: dict[str, Any]) -> list[str]:
    """Rules of Chat Completions (wire-formats 1.1 and the SDK's param types) that a request breaks."""
    problems = []
    stop = body.get("stop")
    if isinstance(stop, list) and not 1 <= len(stop) <= 4:
        problems.append(f"stop has {len(stop)} sequences (up to 4)")
    if "reasoning_effort" in body and body["reasoning_effort"] not in REASONING_EFFORTS:
        problems.append(f"reasoning_effort {body['reasoning_effort']!r}")
    tools = {t["function"]["name"] for t in body.get("tools") or []}
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice["function"]["name"] not in tools:
        problems.append(f"tool_choice names an unknown tool {choice!r}")
    elif choice is not None and not isinstance(choice, dict) and choice not in ("none", "auto", "required"):
        problems.append(f"tool_choice {choice!r}")
    if choice is not None and not tools:
        problems.append("tool_choice without tools")
    pending: set[str] = set()
    for message in body["messages"]:
        role = message["role"]
        if role == "tool":
            if message["tool_call_id"] not in pending:
                problems.append(f"tool message {message['tool_call_id']!r} answers no pending tool call")
            pending.discard(message["tool_call_id"])
            continue
        if pending:
            problems.append(f"tool calls without a tool message: {sorted(pending)}")
        if role not in ("system", "developer", "user", "assistant"):
            problems.append(f"role {role!r}")
        calls = message.get("tool_calls") or []
        for call in calls:
            if not isinstance(orjson.loads(call["function"]["arguments"]), dict) or call["type"] != "function":
                problems.append(f"tool call {call!r}")
        pending = {call["id"] for call in calls}
        if message.get("content") is None and not calls:
            problems.append(f"{role} message without content")
    if pending:
        problems.append(f"tool calls without a tool message: {sorted(pending)}")
    return problems


@pytest.mark.parametrize("body", _requests("chat_to_messages", EXTRA_OPENAI_REQUESTS))
def test_chat_to_messages_gives_a_valid_anthropic_request(body: dict[str, Any]) -> None:
    assert _anthropic_request_problems(chat_to_messages(body)) == []


@pytest.mark.parametrize("body", _requests("messages_to_chat", EXTRA_ANTHROPIC_REQUESTS))
def test_messages_to_chat_gives_a_valid_openai_request(body: dict[str, Any]) -> None:
    assert _openai_request_problems(messages_to_chat(body)) == []


# --- stream goldens --------------------------------------------------------------------------------------


class _Converter(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


STREAM_DIRECTIONS: dict[str, Callable[[], _Converter]] = {
    "messages_to_chat_stream": lambda: MessagesToChatStream(MODEL),
    "chat_to_messages_stream": lambda: ChatToMessagesStream(MODEL),
}
_CREATED = re.compile(rb'"created":\d+')
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def _per_event(data: bytes) -> list[bytes]:
    pieces, start = [], 0
    for match in _EVENT_END.finditer(data):
        pieces.append(data[start : match.end()])
        start = match.end()
    return [*pieces, data[start:]] if start < len(data) else pieces


def _splittings(data: bytes) -> dict[str, list[bytes]]:
    return {
        "whole": [data],
        "per_event": _per_event(data),
        "bytes_7": [data[i : i + 7] for i in range(0, len(data), 7)],
        "bytes_1": [data[i : i + 1] for i in range(len(data))],
    }


def _convert(direction: str, pieces: list[bytes]) -> bytes:
    converter = STREAM_DIRECTIONS[direction]()
    out = b"".join(converter.feed(piece) for piece in pieces)
    return _CREATED.sub(b'"created":0', out + converter.flush())


def _sse_events(data: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per event; checks the framing is exactly ``[event: n\\n]data: x\\n\\n``."""
    events: list[tuple[str | None, Any]] = []
    for raw in data.split(b"\n\n")[:-1]:
        lines = raw.split(b"\n")
        name = None
        if lines[0].startswith(b"event: "):
            name = lines.pop(0)[7:].decode()
        assert len(lines) == 1 and lines[0].startswith(b"data: "), f"malformed SSE event {raw!r}"
        payload = lines[0][6:]
        events.append((name, "[DONE]" if payload == b"[DONE]" else orjson.loads(payload)))
    assert data.endswith(b"\n\n") or not data, f"the stream ends mid-event: {data[-80:]!r}"
    return events


def _event_lines(data: bytes) -> list[str]:
    """One readable line per event, for diffs."""
    return [
        f"{name or '-'} {json.dumps(value, sort_keys=True, ensure_ascii=False)}" for name, value in _sse_events(data)
    ]


@functools.cache
def _stream_output(direction: str, case: Path) -> bytes:
    """The converter's output (created zeroed), after checking every splitting of the input gives the same."""
    data = (case / "input.sse").read_bytes()
    outputs = {name: _convert(direction, pieces) for name, pieces in _splittings(data).items()}
    whole = outputs["whole"]
    for name, out in outputs.items():
        assert _event_lines(out) == _event_lines(whole), f"splitting {name!r} changed the output"
        assert out == whole, f"splitting {name!r} changed the output bytes"
    return whole


def _run_stream(direction: str, case: Path) -> None:
    actual = _stream_output(direction, case)
    expected_path = case / "expected.sse"
    if UPDATE and not _is_known_bug(case):
        expected_path.write_bytes(actual)
        return
    assert _event_lines(actual) == _event_lines(expected_path.read_bytes())


@pytest.mark.parametrize("case", _case_dirs("messages_to_chat_stream"))
def test_messages_to_chat_stream(case: Path) -> None:
    _run_stream("messages_to_chat_stream", case)


@pytest.mark.parametrize("case", _case_dirs("chat_to_messages_stream"))
def test_chat_to_messages_stream(case: Path) -> None:
    _run_stream("chat_to_messages_stream", case)


# --- round-trip and parse properties (no golden files) ----------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "\n".join(p["text"] for p in parts if isinstance(p, dict) and p.get("type") == "text")


def _conversation(body: dict[str, Any]) -> dict[str, Any]:
    """What a round trip must keep: the system text, each turn's text, tool calls and tool results."""
    messages = body["messages"]
    return {
        "system": "\n".join(_text(m["content"]) for m in messages if m["role"] in ("system", "developer")),
        "turns": [(m["role"], _text(m.get("content"))) for m in messages if m["role"] in ("user", "assistant")],
        "tool_calls": [
            (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"] or "{}"))
            for m in messages
            for c in m.get("tool_calls") or []
        ],
        "tool_results": [(m["tool_call_id"], _text(m["content"])) for m in messages if m["role"] == "tool"],
    }


def _plain(direction: str, *, known_bugs: bool = True) -> list[Any]:
    """The cases of a direction without their xfail marks (for properties that do not depend on the bug)."""
    paths = [p.values[0] for p in _case_dirs(direction)]
    return [pytest.param(p, id=p.name) for p in paths if known_bugs or not _is_known_bug(p)]


@pytest.mark.parametrize("case", _plain("chat_to_messages"))
def test_chat_round_trip_keeps_conversation(case: Path) -> None:
    body = _load(case / "input.json")
    assert _conversation(messages_to_chat(chat_to_messages(body))) == _conversation(body)


def _response(data: bytes, url: str) -> httpx2.Response:
    import httpx2

    headers = {"content-type": "text/event-stream"}
    return httpx2.Response(200, content=data, headers=headers, request=httpx2.Request("POST", url))


def _anthropic_final(data: bytes) -> Message:
    """The message the official SDK accumulates from an Anthropic stream (raises on an ``error`` event)."""
    import anthropic
    from anthropic.lib.streaming import MessageStream
    from anthropic.types import RawMessageStreamEvent

    client = anthropic.Anthropic(api_key="sk-test", base_url="http://gateway.invalid")
    response = _response(data, "http://gateway.invalid/v1/messages")
    raw: anthropic.Stream[RawMessageStreamEvent] = anthropic.Stream(
        cast_to=cast("type[RawMessageStreamEvent]", RawMessageStreamEvent), response=response, client=client
    )
    return MessageStream(raw, anthropic.NOT_GIVEN).get_final_message()


def _openai_final(data: bytes) -> ChatCompletionStreamState[None]:
    """The official SDK's accumulation of an OpenAI stream (raises on an error chunk)."""
    import openai
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    client = openai.OpenAI(api_key="sk-test", base_url="http://gateway.invalid/v1")
    response = _response(data, "http://gateway.invalid/v1/chat/completions")
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in openai.Stream(cast_to=ChatCompletionChunk, response=response, client=client):
        state.handle_chunk(chunk)
    return state


def _has_error(events: list[tuple[str | None, Any]]) -> bool:
    return any(name == "error" or (isinstance(v, dict) and "error" in v) for name, v in events)


@pytest.mark.parametrize("case", _plain("messages_to_chat_stream", known_bugs=False))
def test_openai_stream_parses(case: Path) -> None:
    """Every chunk produced is JSON with choices[].delta (or the usage chunk, or an error), and the SDK takes it."""
    import openai

    data = _stream_output("messages_to_chat_stream", case)
    events = _sse_events(data)
    for name, chunk in events:
        assert name is None
        if chunk == "[DONE]":
            continue
        assert isinstance(chunk, dict)
        if "error" in chunk:
            assert set(chunk["error"]) >= {"message", "type"}
            continue
        assert chunk["object"] == "chat.completion.chunk"
        for choice in chunk["choices"]:
            assert isinstance(choice["delta"], dict) and isinstance(choice["index"], int)
        if not chunk["choices"]:
            assert isinstance(chunk["usage"], dict)
    if _has_error(events):
        assert events[-1][1] != "[DONE]"
        with pytest.raises(openai.APIError):
            _openai_final(data)
        return
    assert events[-1] == (None, "[DONE]")
    completion = _openai_final(data).current_completion_snapshot
    upstream = _anthropic_final((case / "input.sse").read_bytes())
    calls = [
        (c.id, c.function.name, orjson.loads(c.function.arguments))
        for c in completion.choices[0].message.tool_calls or []
    ]
    assert calls == [(b.id, b.name, b.input) for b in upstream.content if b.type == "tool_use"]
    text = "".join(b.text for b in upstream.content if b.type == "text")
    assert (completion.choices[0].message.content or "") == text
    assert completion.usage is not None
    assert completion.usage.completion_tokens == upstream.usage.output_tokens


@pytest.mark.parametrize("case", _plain("chat_to_messages_stream", known_bugs=False))
def test_anthropic_stream_accumulates(case: Path) -> None:
    """The Anthropic stream produced accumulates with the official SDK into the message the upstream meant."""
    import anthropic

    data = _stream_output("chat_to_messages_stream", case)
    if _has_error(_sse_events(data)):
        with pytest.raises(anthropic.APIStatusError):
            _anthropic_final(data)
        return
    message = _anthropic_final(data)
    choice = _openai_final((case / "input.sse").read_bytes()).current_completion_snapshot.choices[0]
    assert "".join(b.text for b in message.content if b.type == "text") == (choice.message.content or "")
    calls = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    wanted = [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in choice.message.tool_calls or []]
    assert calls == wanted
    assert message.stop_reason is not None


@pytest.mark.parametrize(
    "case", [*_plain("messages_to_chat_stream", known_bugs=False), *_plain("chat_to_messages_stream")]
)
def test_stream_inputs_are_valid_upstream_streams(case: Path) -> None:
    """The fixtures themselves parse with the upstream's official SDK (so the goldens test real traffic)."""
    import anthropic
    import openai

    data = (case / "input.sse").read_bytes()
    events = _sse_events(data.replace(b"\r\n", b"\n"))  # SSE allows CRLF; this framing check reads LF
    if case.parent.name == "messages_to_chat_stream":
        if _has_error(events):
            with pytest.raises(anthropic.APIStatusError):
                _anthropic_final(data)
        else:
            assert _anthropic_final(data).stop_reason is not None
    elif _has_error(events):
        with pytest.raises(openai.APIError):
            _openai_final(data)
    else:
        assert _openai_final(data).current_completion_snapshot.choices[0].finish_reason is not None
