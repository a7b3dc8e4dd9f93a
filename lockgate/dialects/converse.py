"""Anthropic Messages ↔ AWS Bedrock Converse: requests, responses and stream events.

Bedrock's Converse API carries the same conversation as Anthropic's Messages API in other words
(``toolUse`` for ``tool_use``, ``reasoningContent`` for thinking, ``cachePoint`` markers after a cached
block instead of ``cache_control`` on it). The Bedrock provider speaks the Anthropic dialect to the rest
of the gateway and uses these functions at its edge, so OpenAI and Anthropic clients alike reach
Converse models through one translation.
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.dialects.anthropic import text_of

__all__ = ["ConverseToMessagesStream", "converse_to_message", "messages_to_converse"]

_CACHE_POINT = {"cachePoint": {"type": "default"}}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
STOP_REASONS = {  # Converse stopReason → Anthropic stop_reason
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
    "model_context_window_exceeded": "model_context_window_exceeded",
}


def _block(block: dict[str, Any]) -> list[dict[str, Any]]:
    """One Anthropic content block → Converse content (a block, then a cache point if it was marked)."""
    kind = block.get("type")
    out: dict[str, Any] | None = None
    if kind == "text":
        out = {"text": block.get("text", "")}
    elif kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            fmt = _IMAGE_FORMATS.get(str(source.get("media_type", "")).lower(), "png")
            out = {"image": {"format": fmt, "source": {"bytes": source.get("data", "")}}}
    elif kind == "tool_use":
        out = {
            "toolUse": {
                "toolUseId": block.get("id", ""),
                "name": block.get("name", ""),
                "input": block.get("input") or {},
            }
        }
    elif kind == "tool_result":
        content = block.get("content")
        parts = [{"text": content}] if isinstance(content, str) else [
            {"text": b.get("text", "")} for b in content or [] if isinstance(b, dict) and b.get("type") == "text"
        ]  # fmt: skip
        result: dict[str, Any] = {"toolUseId": block.get("tool_use_id", ""), "content": parts or [{"text": ""}]}
        if block.get("is_error"):
            result["status"] = "error"
        out = {"toolResult": result}
    elif kind == "thinking":
        text = {"text": block.get("thinking", ""), "signature": block.get("signature", "")}
        out = {"reasoningContent": {"reasoningText": text}}
    elif kind == "redacted_thinking":
        out = {"reasoningContent": {"redactedContent": block.get("data", "")}}
    elif kind == "document":
        source = block.get("source") or {}
        if source.get("type") == "text":
            out = {"text": source.get("data", "")}
    if out is None:
        return []
    return [out, _CACHE_POINT] if isinstance(block.get("cache_control"), dict) else [out]


def _content(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict):
            blocks.extend(_block(block))
    return blocks


def messages_to_converse(body: dict[str, Any], beta: str | None = None) -> dict[str, Any]:
    """An Anthropic Messages request → a Converse request (the model id goes in the URL, not the body)."""
    system: list[dict[str, Any]] = []
    raw_system = body.get("system")
    if isinstance(raw_system, str) and raw_system:
        system.append({"text": raw_system})
    elif isinstance(raw_system, list):
        for block in raw_system:
            if isinstance(block, dict):
                system.extend(_block(block))
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "system":  # Claude Code's mid-conversation system messages: Converse has them only on top
            system.append({"text": text_of(message.get("content"))})
            continue
        content = _content(message.get("content"))
        if content and messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(content)  # Converse wants alternating roles
        elif content:
            messages.append({"role": role, "content": content})
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config: dict[str, Any] = {}
    for source, target in (("max_tokens", "maxTokens"), ("temperature", "temperature"), ("top_p", "topP")):
        if body.get(source) is not None:
            config[target] = body[source]
    if body.get("stop_sequences"):
        config["stopSequences"] = body["stop_sequences"]
    if config:
        out["inferenceConfig"] = config
    tools: list[dict[str, Any]] = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or "name" not in tool:
            continue
        spec = {"name": tool["name"], "inputSchema": {"json": tool.get("input_schema") or {"type": "object"}}}
        if tool.get("description"):
            spec["description"] = tool["description"]
        tools.append({"toolSpec": spec})
        if isinstance(tool.get("cache_control"), dict):
            tools.append(_CACHE_POINT)
    choice = body.get("tool_choice")
    if tools and not (isinstance(choice, dict) and choice.get("type") == "none"):
        tool_config: dict[str, Any] = {"tools": tools}
        if isinstance(choice, dict) and choice.get("type") == "any":
            tool_config["toolChoice"] = {"any": {}}
        elif isinstance(choice, dict) and choice.get("type") == "tool":
            tool_config["toolChoice"] = {"tool": {"name": choice.get("name", "")}}
        out["toolConfig"] = tool_config
    extra: dict[str, Any] = {}
    if isinstance(body.get("thinking"), dict):
        extra["thinking"] = body["thinking"]
    if body.get("top_k") is not None:
        extra["top_k"] = body["top_k"]
    if beta:
        extra["anthropic_beta"] = [flag.strip() for flag in beta.split(",") if flag.strip()]
    if extra:
        out["additionalModelRequestFields"] = extra
    return out


def _usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    out: dict[str, Any] = {
        "input_tokens": int(usage.get("inputTokens") or 0),
        "output_tokens": int(usage.get("outputTokens") or 0),
        "cache_read_input_tokens": int(usage.get("cacheReadInputTokens") or 0),
        "cache_creation_input_tokens": int(usage.get("cacheWriteInputTokens") or 0),
    }
    creation = cache_creation(usage)
    if creation is not None:
        out["cache_creation"] = creation
    return out


def cache_creation(usage: dict[str, Any]) -> dict[str, int] | None:
    """Converse's ``cacheDetails`` ([{inputTokens, ttl: 5m | 1h}], the writes by cache lifetime, priced
    differently) as Anthropic's ``cache_creation``; None when the usage has none."""
    details = usage.get("cacheDetails")
    if not isinstance(details, list) or not details:
        return None
    by_ttl = {"5m": 0, "1h": 0}
    for detail in details:
        if isinstance(detail, dict) and detail.get("ttl") in by_ttl and isinstance(detail.get("inputTokens"), int):
            by_ttl[detail["ttl"]] += max(0, detail["inputTokens"])
    return {"ephemeral_5m_input_tokens": by_ttl["5m"], "ephemeral_1h_input_tokens": by_ttl["1h"]}


def _from_block(block: dict[str, Any]) -> dict[str, Any] | None:
    if "text" in block:
        return {"type": "text", "text": block["text"]}
    if "toolUse" in block:
        use = block["toolUse"]
        return {
            "type": "tool_use",
            "id": use.get("toolUseId", ""),
            "name": use.get("name", ""),
            "input": use.get("input") or {},
        }
    if "reasoningContent" in block:
        reasoning = block["reasoningContent"]
        if "redactedContent" in reasoning:
            return {"type": "redacted_thinking", "data": reasoning["redactedContent"]}
        text = reasoning.get("reasoningText") or {}
        return {"type": "thinking", "thinking": text.get("text", ""), "signature": text.get("signature", "")}
    return None


def converse_to_message(data: dict[str, Any], model: str, ident: str) -> dict[str, Any]:
    """A Converse response → an Anthropic Messages response."""
    message = (data.get("output") or {}).get("message") or {}
    content = [b for b in (_from_block(x) for x in message.get("content") or [] if isinstance(x, dict)) if b]
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(str(data.get("stopReason")), "end_turn"),
        "stop_sequence": None,
        "usage": _usage(data.get("usage")),
    }


def _sse(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **payload}) + b"\n\n"


class ConverseToMessagesStream:
    """ConverseStream events (already decoded from AWS event-stream frames) → Anthropic SSE bytes."""

    def __init__(self, model: str, ident: str) -> None:
        self._model = model
        self._ident = ident
        self._open: set[int] = set()
        self._stop = "end_turn"
        self._finished = False

    def event(self, kind: str, payload: dict[str, Any]) -> bytes:
        if kind == "messageStart":
            message: dict[str, Any] = {
                "id": self._ident, "type": "message", "role": "assistant", "model": self._model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
            }  # fmt: skip
            return _sse("message_start", {"message": message})
        index = int(payload.get("contentBlockIndex", 0))
        if kind == "contentBlockStart":
            use = (payload.get("start") or {}).get("toolUse")
            if use is None:
                return b""
            self._open.add(index)
            block = {"type": "tool_use", "id": use.get("toolUseId", ""), "name": use.get("name", ""), "input": {}}
            return _sse("content_block_start", {"index": index, "content_block": block})
        if kind == "contentBlockDelta":
            return self._delta(index, payload.get("delta") or {})
        if kind == "contentBlockStop":
            self._open.discard(index)
            return _sse("content_block_stop", {"index": index})
        if kind == "messageStop":
            self._stop = STOP_REASONS.get(str(payload.get("stopReason")), "end_turn")
            return b""
        if kind == "metadata":
            return self._end(payload.get("usage"))
        return b""

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        out = b""
        if "text" in delta:
            out += self._start(index, {"type": "text", "text": ""})
            return out + _sse(
                "content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": delta["text"]}}
            )
        if "toolUse" in delta:
            partial = (delta["toolUse"] or {}).get("input", "")
            return _sse(
                "content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": partial}}
            )
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict):
            if "redactedContent" in reasoning:
                block = {"type": "redacted_thinking", "data": reasoning["redactedContent"]}
                return self._start(index, block)
            out += self._start(index, {"type": "thinking", "thinking": "", "signature": ""})
            if "text" in reasoning:
                piece = {"type": "thinking_delta", "thinking": reasoning["text"]}
                out += _sse("content_block_delta", {"index": index, "delta": piece})
            if "signature" in reasoning:
                piece = {"type": "signature_delta", "signature": reasoning["signature"]}
                out += _sse("content_block_delta", {"index": index, "delta": piece})
        return out

    def _start(self, index: int, block: dict[str, Any]) -> bytes:
        if index in self._open:
            return b""
        self._open.add(index)
        return _sse("content_block_start", {"index": index, "content_block": block})

    def _end(self, usage: dict[str, Any] | None) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        delta = {"delta": {"stop_reason": self._stop, "stop_sequence": None}, "usage": _usage(usage)}
        return _sse("message_delta", delta) + _sse("message_stop", {})

    def finish(self) -> bytes:
        """A stream that ended after messageStop but without metadata still closes well-formed."""
        return self._end(None)
