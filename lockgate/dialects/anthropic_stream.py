"""Streaming translation between Anthropic's SSE events and OpenAI's chat.completion.chunk events.

Each converter is fed upstream bytes as they arrive and returns the bytes to send on (possibly empty);
``finish()`` returns whatever must close the stream. Both keep the little state the mapping needs (which
content block is which, the tool-call index map, usage seen so far). Events are parsed one by one; a
partial event waits for its terminating blank line.

:class:`MessagesUsageTap` reads usage from an Anthropic stream that passes through untouched.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from lockgate.dialects.anthropic import FINISH_REASONS, STOP_REASONS, chat_usage_to_messages, messages_usage_to_chat
from lockgate.dialects.thinking import ThinkingMemory

__all__ = ["ChatToMessagesStream", "MessagesToChatStream", "MessagesUsageTap", "sse_events"]


class _Splitter:
    """Splits an SSE byte stream into complete events."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def events(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk
        if b"\r" in data:  # after joining: a CRLF may be split across two reads
            data = data.replace(b"\r\n", b"\n")
        parts = data.split(b"\n\n")
        self._pending = parts.pop()
        return [p for p in parts if p.strip()]


def sse_events(event: bytes) -> tuple[str | None, bytes]:
    """(event name, data payload) of one SSE event."""
    name: str | None = None
    data: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode("latin-1")
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip())
    return name, b"\n".join(data)


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class MessagesUsageTap:
    """Keeps the usage of an Anthropic stream (input from message_start, the last message_delta's output)."""

    __slots__ = ("_splitter", "usage")

    def __init__(self) -> None:
        self._splitter = _Splitter()
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        if b"message_start" in chunk or b"message_delta" in chunk or self._splitter._pending:
            for event in self._splitter.events(chunk):
                if b"message_start" in event or b"message_delta" in event:
                    self._read(event)
        return chunk

    def _read(self, event: bytes) -> None:
        payload = _json(sse_events(event)[1]) or {}
        usage = payload.get("usage") or (payload.get("message") or {}).get("usage")
        if isinstance(usage, dict):
            self.usage = {**(self.usage or {}), **{k: v for k, v in usage.items() if v is not None}}

    def flush(self) -> bytes:
        return b""


class MessagesToChatStream:
    """Anthropic SSE (from an Anthropic-native upstream) → OpenAI chunks (for an OpenAI client)."""

    def __init__(self, model: str, memory: ThinkingMemory | None = None) -> None:
        self._splitter = _Splitter()
        self._model = model
        self._memory = memory
        self._id = "chatcmpl-lockgate"
        self._created = int(time.time())
        self._blocks: dict[int, dict[str, Any]] = {}
        self._tool_index: dict[int, int] = {}
        self._usage: dict[str, Any] = {}
        self._finish: str | None = None
        self._done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._splitter.events(chunk):
            name, data = sse_events(event)
            payload = _json(data)
            if payload is None:
                continue
            out.append(self._on(name or payload.get("type", ""), payload))
        return b"".join(out)

    def _on(self, name: str, payload: dict[str, Any]) -> bytes:
        if name == "message_start":
            message = payload.get("message") or {}
            self._id = str(message.get("id") or self._id)
            self._usage.update(message.get("usage") or {})
            return self._chunk({"role": "assistant", "content": ""})
        if name == "content_block_start":
            index, block = int(payload.get("index", 0)), payload.get("content_block") or {}
            self._blocks[index] = {
                **block,
                "thinking": block.get("thinking", ""),
                "signature": block.get("signature", ""),
            }
            if block.get("type") == "tool_use":
                position = self._tool_index[index] = len(self._tool_index)
                call = {"index": position, "id": block.get("id", ""), "type": "function",
                        "function": {"name": block.get("name", ""), "arguments": ""}}  # fmt: skip
                return self._chunk({"tool_calls": [call]})
            if block.get("type") == "redacted_thinking":
                return self._chunk({"thinking_blocks": [block]})
            return b""
        if name == "content_block_delta":
            index, delta = int(payload.get("index", 0)), payload.get("delta") or {}
            kind = delta.get("type")
            if kind == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if kind == "input_json_delta":
                call = {
                    "index": self._tool_index.get(index, 0),
                    "function": {"arguments": delta.get("partial_json", "")},
                }
                return self._chunk({"tool_calls": [call]})
            if kind == "thinking_delta":
                self._blocks.setdefault(index, {"type": "thinking", "thinking": "", "signature": ""})
                self._blocks[index]["thinking"] += delta.get("thinking", "")
                return self._chunk({"reasoning_content": delta.get("thinking", "")})
            if kind == "signature_delta":
                self._blocks.setdefault(index, {"type": "thinking", "thinking": "", "signature": ""})
                self._blocks[index]["signature"] += delta.get("signature", "")
            return b""
        if name == "content_block_stop":
            block = self._blocks.get(int(payload.get("index", 0))) or {}
            if block.get("type") == "thinking":  # the signed block, whole, for the client to send back
                signed = {"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]}
                if self._memory is not None:
                    self._memory.remember(block["thinking"], block["signature"])
                return self._chunk({"thinking_blocks": [signed]})
            return b""
        if name == "message_delta":
            self._usage.update({k: v for k, v in (payload.get("usage") or {}).items() if v is not None})
            reason = (payload.get("delta") or {}).get("stop_reason")
            if reason:
                self._finish = STOP_REASONS.get(reason, "stop")
            return b""
        if name == "message_stop":
            return self._close()
        if name == "error":
            self._done = True
            error = payload.get("error") or {}
            body = {"error": {"message": error.get("message", "upstream error"), "type": error.get("type", "api_error"),
                              "param": None, "code": None}}  # fmt: skip
            return b"data: " + orjson.dumps(body) + b"\n\n"
        return b""  # ping and event types added later

    def _close(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        final = self._chunk({}, self._finish or "stop")
        usage = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                 "choices": [], "usage": messages_usage_to_chat(self._usage)}  # fmt: skip
        return final + b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n"

    @property
    def usage(self) -> dict[str, Any]:
        return messages_usage_to_chat(self._usage)

    def flush(self) -> bytes:
        return b""


class ChatToMessagesStream:
    """OpenAI chunks (from an OpenAI-dialect upstream) → Anthropic SSE (for an Anthropic client)."""

    def __init__(self, model: str) -> None:
        self._splitter = _Splitter()
        self._model = model
        self._started = False
        self._open: tuple[str, int] | None = None  # (kind, tool position) of the open content block
        self._index = -1
        self._stop: str | None = None
        self._usage: dict[str, Any] | None = None
        self._done = False

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._splitter.events(chunk):
            _, data = sse_events(event)
            if data == b"[DONE]":
                out.append(self._close())
                continue
            payload = _json(data)
            if payload is not None:
                out.append(self._on(payload))
        return b"".join(out)

    def _start(self, ident: str) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": ident, "type": "message", "role": "assistant", "model": self._model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
        }  # fmt: skip
        return _event("message_start", {"type": "message_start", "message": message})

    def _open_block(self, kind: str, block: dict[str, Any], position: int = -1) -> bytes:
        out = self._close_block()
        self._index += 1
        self._open = (kind, position)
        payload = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + _event("content_block_start", payload)

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _on(self, payload: dict[str, Any]) -> bytes:
        out = b"" if self._started else self._start(str(payload.get("id") or "msg_lockgate"))
        if "error" in payload and isinstance(payload["error"], dict):
            self._done = True
            error = {"type": "error", "error": {"type": "api_error", "message": payload["error"].get("message", "")}}
            return out + _event("error", error)
        if isinstance(payload.get("usage"), dict):
            self._usage = payload["usage"]
        for choice in payload.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                if self._open is None or self._open[0] != "thinking":
                    out += self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out += self._delta({"type": "thinking_delta", "thinking": reasoning})
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open is None or self._open[0] != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or []:
                position = int(call.get("index", 0))
                function = call.get("function") or {}
                if self._open is None or self._open != ("tool", position):
                    block = {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "input": {},
                    }
                    out += self._open_block("tool", block, position)
                if function.get("arguments"):
                    out += self._delta({"type": "input_json_delta", "partial_json": function["arguments"]})
            if choice.get("finish_reason"):
                self._stop = FINISH_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def _close(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        out = b"" if self._started else self._start("msg_lockgate")
        out += self._close_block()
        usage = chat_usage_to_messages(self._usage)
        delta = {"type": "message_delta", "delta": {"stop_reason": self._stop or "end_turn", "stop_sequence": None},
                 "usage": usage}  # fmt: skip
        return out + _event("message_delta", delta) + _event("message_stop", {"type": "message_stop"})

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._usage

    def flush(self) -> bytes:
        """An upstream that ended without ``[DONE]`` still gets a well-formed end if it had finished."""
        return self._close() if self._stop is not None else b""
