"""Prompt storage's parts (lockgate/prompts.py): who asked for it, what is taken from requests, answers and
streams of both dialects, and how it is cut and redacted. End to end: tests/api/test_prompt_storage.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from lockgate.auth import Principal
from lockgate.errors import BadRequest, PermissionDenied
from lockgate.keys import new_record
from lockgate.prompts import (
    FLAG,
    MAX_CHARS,
    PromptCapture,
    StreamCapture,
    check_flag,
    clip,
    keep_flag,
    request_messages,
    response_of,
    wanted,
)
from lockgate.redact import Redactor
from lockgate.storage.base import TeamRecord

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def team(flag: object = None) -> TeamRecord:
    metadata = {} if flag is None else {FLAG: flag}
    return TeamRecord("t", None, None, (), None, None, None, None, None, metadata, False, NOW, NOW)


def principal(key_flag: object = None, team_flag: object = None) -> Principal:
    key = new_record("sk-" + "k" * 40, {"metadata": {} if key_flag is None else {FLAG: key_flag}, "team_id": "t"})
    return Principal("key", key=key, team=team(team_flag))


@pytest.mark.parametrize(
    ("default", "team_flag", "key_flag", "stored"),
    [
        (False, None, None, False),  # off unless asked for
        (True, None, None, True),  # the gateway's setting
        (False, True, None, True),  # a team opts in
        (True, False, None, False),  # a team opts out of the gateway's setting
        (False, None, True, True),  # a key opts in
        (False, False, True, True),  # the key's own setting is the most specific
        (True, True, False, False),  # a key opts out of its team's
        (True, "yes", None, False),  # anything but true is not a yes
    ],
)
def test_the_most_specific_setting_wins(default: bool, team_flag: object, key_flag: object, stored: bool) -> None:
    assert wanted(default, principal(key_flag, team_flag)) is stored


def test_the_master_key_follows_the_gateway() -> None:
    assert wanted(True, Principal("master")) is True and wanted(False, None) is False


def test_only_booleans_and_only_admins() -> None:
    check_flag({FLAG: True})
    check_flag({FLAG: None})
    check_flag({"other": "x"})
    with pytest.raises(BadRequest):
        check_flag({FLAG: "true"})
    # someone who is not a proxy admin: the key's value is carried over, and may not be changed
    assert keep_flag({"tag": 1}, {FLAG: True}) == {"tag": 1, FLAG: True}
    assert keep_flag({"tag": 1}, None) == {"tag": 1}
    assert keep_flag({FLAG: False, "tag": 2}, {FLAG: False}) == {FLAG: False, "tag": 2}
    for sent, current in (({FLAG: True}, None), ({FLAG: True}, {FLAG: False}), ({FLAG: None}, {FLAG: False})):
        with pytest.raises(PermissionDenied):
            keep_flag(sent, current)


def test_what_a_request_gives() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    assert request_messages(chat, "openai", "chat") == [{"role": "user", "content": "hi"}]
    claude = {"model": "m", "system": [{"type": "text", "text": "be brief"}], "messages": [{"role": "user"}]}
    assert request_messages(claude, "anthropic", "chat") == [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user"},
    ]
    assert request_messages({"messages": [{"role": "user"}]}, "anthropic", "chat") == [{"role": "user"}]
    assert request_messages({"model": "e", "input": ["a", "b"]}, "openai", "embeddings") == ["a", "b"]


def test_whole_answers_of_both_dialects() -> None:
    chat = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Sure.",
                    "reasoning_content": "think",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    assert response_of(chat) == {
        "content": "Sure.",
        "reasoning": "think",
        "tool_calls": [{"id": "c1", "name": "f", "arguments": "{}"}],
        "finish_reason": "tool_calls",
    }
    message = {
        "type": "message",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "tu1", "name": "get", "input": {"q": 1}},
        ],
        "stop_reason": "tool_use",
    }
    assert response_of(message) == {
        "content": "Hello",
        "reasoning": "hmm",
        "tool_calls": [{"id": "tu1", "name": "get", "arguments": '{"q":1}'}],
        "finish_reason": "tool_use",
    }
    assert response_of({"object": "list", "data": [{"embedding": [0.1]}]}) is None


def _sse(events: list[bytes]) -> bytes:
    return b"".join(events)


def _feed_in_pieces(stage: StreamCapture, stream: bytes, size: int) -> bytes:
    out = b"".join(stage.feed(stream[n : n + size]) for n in range(0, len(stream), size))
    return out + stage.flush()


OPENAI_STREAM = _sse(
    [b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}) + b"\n\n"]
    + [b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": w}}]}) + b"\n\n" for w in ("Hel", "lo")]
    + [
        b"data: "
        + orjson.dumps(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]},
                    }
                ]
            }
        )
        + b"\r\n\r\n",
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
        b'"function":{"arguments":"{\\"a\\":"}}]}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
    ]
)
ANTHROPIC_STREAM = _sse(
    [
        b'event: message_start\ndata: {"type":"message_start","message":{"content":[]}}\n\n',
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"thinking","thinking":""}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"thinking_delta","thinking":"hmm"}}\n\n',
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
        b'"content_block":{"type":"text","text":""}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        b'"delta":{"type":"text_delta","text":"Hel"}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        b'"delta":{"type":"text_delta","text":"lo"}}\n\n',
        b'event: content_block_start\ndata: {"type":"content_block_start","index":2,'
        b'"content_block":{"type":"tool_use","id":"tu1","name":"get","input":{}}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":2,'
        b'"delta":{"type":"input_json_delta","partial_json":"{\\"q\\":"}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":2,'
        b'"delta":{"type":"input_json_delta","partial_json":"1}"}}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use"}}\n\n',
        b'event: message_stop\ndata: {"type":"message_stop"}',  # the last event without its blank line
    ]
)


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_streams_pass_through_and_are_put_together(size: int) -> None:
    openai = StreamCapture("openai")
    assert _feed_in_pieces(openai, OPENAI_STREAM, size) == OPENAI_STREAM  # not a byte changed
    assert openai.answer.result() == {
        "content": "Hello",
        "tool_calls": [{"id": "c1", "name": "f", "arguments": '{"a":1}'}],
        "finish_reason": "tool_calls",
    }
    anthropic = StreamCapture("anthropic")
    assert _feed_in_pieces(anthropic, ANTHROPIC_STREAM, size) == ANTHROPIC_STREAM
    assert anthropic.answer.result() == {
        "content": "Hello",
        "reasoning": "hmm",
        "tool_calls": [{"id": "tu1", "name": "get", "arguments": '{"q":1}'}],
        "finish_reason": "tool_use",
    }


def test_a_long_stream_stops_being_read() -> None:
    stage = StreamCapture("openai")
    word = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": "x" * 1000}}]}) + b"\n\n"
    for _ in range(200):
        assert stage.feed(word) == word
    answer = stage.answer.result()
    assert answer["truncated"] is True and MAX_CHARS <= len(answer["content"]) <= MAX_CHARS + 5000


REDACTOR = Redactor(["known-secret-value-123"])


def test_clip_cuts_text_lists_and_blobs() -> None:
    short = [{"role": "user", "content": "hello alice@example.com"}]
    assert clip(short, REDACTOR) == [{"role": "user", "content": "hello [REDACTED:email]"}]
    long = [{"role": "user", "content": "word " * 20_000}]
    cut = clip(long, REDACTOR)
    assert len(cut[0]["content"]) < MAX_CHARS + 100
    assert cut[0]["content"].endswith("…[truncated: 100000 characters in all]")
    many = clip([{"role": "user", "content": "b " * 500}] * 200, REDACTOR)
    assert len(many) < 70 and many[-1] == f"[truncated: {200 - len(many) + 1} more items]"
    assert len(orjson.dumps(many)) < MAX_CHARS + 5000
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "iVBORw0KGgo" * 50_000}}
    assert clip(image, REDACTOR) == {
        "type": "image_url",
        "image_url": {"url": "[omitted: 550022 characters of base64 data]"},
    }
    assert clip({"text": "nul\x00here"}, REDACTOR) == {"text": "nul\ufffdhere"}
    assert clip(None, REDACTOR) is None and clip([1, 2.5, True], REDACTOR) == [1, 2.5, True]


def test_a_secret_across_the_cut_is_not_left_half_there() -> None:
    for offset in range(-30, 30, 3):
        text = "x" * (MAX_CHARS + offset) + " sk-proj-" + "S" * 40 + " " + "known-secret-value-123"
        kept = clip(text, REDACTOR)
        assert "SSSSS" not in kept and "known-secret" not in kept, offset


def test_a_capture_redacts_and_drops_the_answer_of_a_failure() -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "my key is sk-" + "z" * 30}]}
    capture = PromptCapture(body, "openai", "chat")
    capture.take_response({"choices": [{"message": {"content": "noted: sk-" + "z" * 30}}]})
    assert capture.stored(REDACTOR, 200) == (
        [{"role": "user", "content": "my key is [REDACTED:openai_key]"}],
        {"content": "noted: [REDACTED:openai_key]"},
    )
    assert capture.stored(REDACTOR, 502) == ([{"role": "user", "content": "my key is [REDACTED:openai_key]"}], None)
    streamed = PromptCapture(body, "openai", "chat")
    streamed.stream_stage("openai").feed(OPENAI_STREAM[:200])  # cut short: what came is kept
    stored = streamed.stored(REDACTOR, 200)
    assert stored is not None and stored[1] == {"content": "Hello"}
