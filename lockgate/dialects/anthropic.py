"""Anthropic Messages ↔ OpenAI Chat Completions: requests, responses, usage and stop reasons.

Pure functions over parsed JSON; no I/O. Four directions are needed:

    inbound Anthropic (Claude Code) → OpenAI-dialect upstream:   messages_to_chat, chat_response_to_message
    inbound OpenAI (Cline, SDKs)    → Anthropic-native upstream: chat_to_messages, message_to_chat_response

Usage follows each side's semantics: OpenAI's ``prompt_tokens`` include cached tokens; Anthropic's
``input_tokens`` exclude cache reads and writes. Thinking blocks travel through the OpenAI dialect in
LiteLLM's extension fields ``reasoning_content`` and ``thinking_blocks`` (with their signatures), so a
Claude conversation with thinking survives an OpenAI client. Streams are in :mod:`.anthropic_stream`.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from lockgate.dialects.thinking import ThinkingMemory
from lockgate.errors import BadRequest

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "FINISH_REASONS",
    "MESSAGES_FIELDS",
    "STOP_REASONS",
    "chat_response_to_message",
    "chat_to_messages",
    "chat_usage_to_messages",
    "fit_thinking",
    "message_to_chat_response",
    "messages_to_chat",
    "messages_usage_to_chat",
    "text_of",
]

# Top-level fields of Anthropic's Messages request.
MESSAGES_FIELDS = frozenset(
    {
        "model", "messages", "system", "max_tokens", "metadata", "stop_sequences", "stream", "temperature",
        "top_p", "top_k", "tools", "tool_choice", "thinking", "output_config", "cache_control", "service_tier",
        "container", "inference_geo", "context_management", "mcp_servers",
    }
)  # fmt: skip

DEFAULT_MAX_TOKENS = 4096
# reasoning_effort → thinking budget (a gateway convention, as LiteLLM's).
_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384, "xhigh": 32000, "max": 32000}

STOP_REASONS = {  # Anthropic stop_reason → OpenAI finish_reason
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
FINISH_REASONS = {  # OpenAI finish_reason → Anthropic stop_reason
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# --- thinking across model generations ----------------------------------------------------------------

# Claude models that take only {type: enabled, budget_tokens}, not {type: adaptive}. Newer ones (Opus 4.6,
# Sonnet 4.6 and later) take adaptive; unknown names are left alone rather than guessed at.
_ENABLED_ONLY = ("claude-3", "sonnet-4-2025", "opus-4-2025", "opus-4-1", "opus-4-5", "sonnet-4-5", "haiku-4-5")


def fit_thinking(body: dict[str, Any], model: str) -> dict[str, Any] | None:
    """For a model that predates adaptive thinking, ``{type: adaptive}`` becomes ``{type: enabled}`` with a
    budget from ``output_config.effort`` (Claude Code sends adaptive for names it does not recognise, such as
    a gateway alias). Returns a new body, or None when nothing had to change."""
    thinking = body.get("thinking")
    if not (isinstance(thinking, dict) and thinking.get("type") == "adaptive"):
        return None
    if not any(marker in model for marker in _ENABLED_ONLY):
        return None
    out = dict(body)
    config = out.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    budget = _BUDGETS.get(str(effort), _BUDGETS["medium"])
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if isinstance(config, dict):  # effort steers adaptive thinking only; these models do not take it
        rest = {k: v for k, v in config.items() if k != "effort"}
        if rest:
            out["output_config"] = rest
        else:
            del out["output_config"]
    if int(out.get("max_tokens") or 0) <= budget:
        out["max_tokens"] = budget + DEFAULT_MAX_TOKENS
    return out


# --- usage -------------------------------------------------------------------------------------------


def messages_usage_to_chat(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage → OpenAI usage: prompt_tokens counts every input token, cached ones included."""
    fresh = int(usage.get("input_tokens") or 0)
    read = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    output = int(usage.get("output_tokens") or 0)
    prompt = fresh + read + written
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": written},
        # LiteLLM's fields, which Cline reads for prompt-caching costs.
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
    }
    creation = usage.get("cache_creation")  # the writes by cache lifetime, priced differently
    one_hour = creation.get("ephemeral_1h_input_tokens") if isinstance(creation, dict) else None
    if isinstance(one_hour, int) and one_hour > 0:
        out["prompt_tokens_details"]["cache_write_1h_tokens"] = one_hour
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and details.get("thinking_tokens") is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": details["thinking_tokens"]}
    tools = usage.get("server_tool_use")  # searches the provider ran, billed per search (LiteLLM keeps them here)
    if isinstance(tools, dict) and tools:
        out["server_tool_use"] = dict(tools)
    return out


def chat_usage_to_messages(usage: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI usage → Anthropic usage: input_tokens excludes what was read from or written to the cache."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    read = int(details.get("cached_tokens") or usage.get("cache_read_input_tokens") or 0)
    written = int(details.get("cache_write_tokens") or usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("prompt_tokens") or 0)
    out: dict[str, Any] = {
        "input_tokens": max(0, prompt - read - written),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }
    tools = usage.get("server_tool_use")
    if isinstance(tools, dict) and tools:
        out["server_tool_use"] = dict(tools)
    return out


# --- Anthropic request → OpenAI request ----------------------------------------------------------------


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or its text blocks / parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic tool_use block → an OpenAI tool call (arguments as a JSON string)."""
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "id": block.get("id", ""),
        "type": "function",
        "function": {"name": block.get("name", ""), "arguments": arguments},
    }


def _image_to_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = source.get("url", "")
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _user_to_chat(content: Any) -> list[dict[str, Any]]:
    """One Anthropic user turn → tool messages (first: they answer the previous turn) and a user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            part = _image_to_part(block)
            if part is not None:
                parts.append(part)
        elif kind == "document" and (block.get("source") or {}).get("type") == "text":
            parts.append({"type": "text", "text": block["source"].get("data", "")})
        elif kind == "tool_result":
            text = text_of(block.get("content"))
            if block.get("is_error"):
                text = f"Error: {text}"
            tools.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text})
            for inner in block.get("content") if isinstance(block.get("content"), list) else []:
                if isinstance(inner, dict) and inner.get("type") == "image":  # OpenAI tool messages are text only
                    part = _image_to_part(inner)
                    if part is not None:
                        parts.append(part)
    out = tools
    if parts:
        simple = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "\n".join(p["text"] for p in parts) if simple else parts})
    return out


def _assistant_to_chat(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append(_tool_call(block))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request → the equivalent OpenAI chat request (for an OpenAI-dialect upstream).

    Thinking blocks and cache markers have no OpenAI equivalent and are left out; ``thinking`` becomes
    ``reasoning_effort``, which the pipeline drops for upstreams that do not take it."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": text_of(system)})
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            raise BadRequest("messages: each message must be an object", param="messages")
        role = message.get("role")
        content = message.get("content")
        if role == "user":
            messages.extend(_user_to_chat(content))
        elif role == "assistant":
            messages.append(_assistant_to_chat(content))
        elif role == "system":
            messages.append({"role": "system", "content": text_of(content)})
        else:
            raise BadRequest(f"messages: unknown role {str(role)[:40]!r}", param="messages")
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p", "top_k", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])[:4]  # OpenAI takes at most four
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"][:256]
    tools = [
        {
            "type": "function",
            "function": {
                "name": t.get("name", ""),
                "description": t.get("description", ""),
                "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
            },
        }
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") in (None, "custom") and "name" in t
    ]
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice.get("type")
            if kind == "any":
                out["tool_choice"] = "required"
            elif kind == "tool":
                out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
            elif kind in ("auto", "none"):
                out["tool_choice"] = kind
            if choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        effort = (body.get("output_config") or {}).get("effort")
        if effort not in _BUDGETS:
            budget = int(thinking.get("budget_tokens") or 4096)
            effort = "high" if budget >= 16384 else "medium" if budget >= 4096 else "low"
        out["reasoning_effort"] = "high" if effort in ("xhigh", "max") else effort
    fmt = (body.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt.get("schema", {})},
        }
    return out


# --- OpenAI response → Anthropic response --------------------------------------------------------------


def chat_response_to_message(chat: dict[str, Any], model: str) -> dict[str, Any]:
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "input": arguments if isinstance(arguments, dict) else {"value": arguments},
            }
        )
    return {
        "id": str(chat.get("id") or "msg_lockgate"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": FINISH_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": chat_usage_to_messages(chat.get("usage")),
    }


# --- OpenAI request → Anthropic request ----------------------------------------------------------------


def _data_url_block(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type = header.split(";")[0] or "image/png"
        if ";base64" not in header:
            data = base64.b64encode(data.encode()).decode()
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _parts_to_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        block: dict[str, Any] | None = None
        if kind == "text":
            block = {"type": "text", "text": part.get("text", "")}
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else str(image or "")
            block = _data_url_block(url)
        if block is not None:
            if isinstance(part.get("cache_control"), dict):  # Cline's prompt-caching markers
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
    return blocks


def _mark_last(blocks: list[dict[str, Any]], cache_control: Any) -> None:
    if isinstance(cache_control, dict) and blocks:
        blocks[-1]["cache_control"] = cache_control


def _assistant_blocks(message: dict[str, Any], memory: ThinkingMemory | None) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for block in message.get("thinking_blocks") or []:  # signed thinking, sent back as received
        if isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking"):
            blocks.append({k: v for k, v in block.items() if k in ("type", "thinking", "signature", "data")})
    reasoning = message.get("reasoning_content")
    if not blocks and isinstance(reasoning, str) and reasoning and memory is not None:
        signature = memory.signature(reasoning)  # reasoning sent back without its signature: restore it
        if signature:
            blocks.append({"type": "thinking", "thinking": reasoning, "signature": signature})
    blocks.extend(_parts_to_blocks(message.get("content")))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            raise BadRequest("messages: a tool call's arguments are not valid JSON", param="messages") from exc
        blocks.append(
            {"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""), "input": arguments}
        )
    return blocks


def chat_to_messages(
    body: dict[str, Any], memory: ThinkingMemory | None = None, notes: list[str] | None = None
) -> dict[str, Any]:
    """An OpenAI chat request → the equivalent Anthropic Messages request (for an Anthropic upstream).

    With thinking on, an assistant tool-call turn must start with its signed thinking block: it comes from
    ``thinking_blocks``, or from ``memory`` when the client sent only ``reasoning_content``. Where neither
    has it, thinking is turned off for this request (Claude would refuse it) and ``notes`` says so."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            raise BadRequest("messages: each message must be an object", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            blocks = _parts_to_blocks(message.get("content"))
            _mark_last(blocks, message.get("cache_control"))
            system.extend(blocks)
        elif role == "tool":
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id", ""),
                "content": text_of(message.get("content")),
            }
            if isinstance(message.get("cache_control"), dict):
                result["cache_control"] = message["cache_control"]
            previous = messages[-1] if messages else None
            if previous and previous["role"] == "user" and previous.get("_results"):
                previous["content"].append(result)
            else:
                messages.append({"role": "user", "content": [result], "_results": True})
        elif role == "user":
            blocks = _parts_to_blocks(message.get("content"))
            _mark_last(blocks, message.get("cache_control"))
            messages.append({"role": "user", "content": blocks})
        elif role == "assistant":
            blocks = [b for b in _assistant_blocks(message, memory) if b.get("type") != "text" or b.get("text")]
            _mark_last(blocks, message.get("cache_control"))
            if blocks:  # Claude refuses empty text blocks; an empty assistant turn says nothing anyway
                messages.append({"role": "assistant", "content": blocks})
        else:
            raise BadRequest(f"messages: unknown role {str(role)[:40]!r}", param="messages")
    for message in messages:
        message.pop("_results", None)
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if system:
        out["system"] = system
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    out["max_tokens"] = max_tokens
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)  # Anthropic's range is 0..1
    for name in ("top_p", "top_k", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    tools = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            continue
        entry: dict[str, Any] = {
            "name": function.get("name", ""),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        if isinstance(tool.get("cache_control"), dict):
            entry["cache_control"] = tool["cache_control"]
        tools.append(entry)
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    mapped: dict[str, Any] | None = None
    if choice == "required":
        mapped = {"type": "any"}
    elif choice in ("auto", "none"):
        mapped = {"type": choice}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mapped = {"type": "tool", "name": choice["function"].get("name", "")}
    if body.get("parallel_tool_calls") is False and tools and (mapped or {}).get("type") != "none":
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    if mapped is not None and (tools or mapped["type"] == "none"):
        out["tool_choice"] = mapped
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        out["thinking"] = thinking
    elif body.get("reasoning_effort") in _BUDGETS:
        out["thinking"] = {"type": "enabled", "budget_tokens": _BUDGETS[body["reasoning_effort"]]}
    budget = out.get("thinking", {}).get("budget_tokens") if isinstance(out.get("thinking"), dict) else None
    if isinstance(budget, int) and out["max_tokens"] <= budget:  # Claude needs budget_tokens < max_tokens
        out["max_tokens"] = budget + DEFAULT_MAX_TOKENS
    if isinstance(out.get("thinking"), dict) and out["thinking"].get("type") in ("enabled", "adaptive"):
        if _unsigned_tool_turn(messages):
            del out["thinking"]
            if notes is not None:
                notes.append("thinking dropped: an earlier tool-call turn came back without its signed thinking")
        else:
            out.pop("temperature", None)  # Claude refuses temperature with thinking on
            out.pop("top_k", None)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    return out


def _unsigned_tool_turn(messages: list[dict[str, Any]]) -> bool:
    """Whether the last assistant turn calls tools without starting with a thinking block."""
    for message in reversed(messages):
        if message["role"] != "assistant":
            continue
        content = message["content"]
        uses_tools = any(b.get("type") == "tool_use" for b in content)
        starts_signed = bool(content) and content[0].get("type") in ("thinking", "redacted_thinking")
        return uses_tools and not starts_signed
    return False


# --- Anthropic response → OpenAI response --------------------------------------------------------------


def message_to_chat_response(
    message: dict[str, Any], model: str, memory: ThinkingMemory | None = None
) -> dict[str, Any]:
    texts: list[str] = []
    thinking: list[str] = []
    blocks: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
            blocks.append(block)
            if memory is not None:
                memory.remember(block.get("thinking", ""), block.get("signature", ""))
        elif kind == "redacted_thinking":
            blocks.append(block)
        elif kind == "tool_use":
            calls.append(_tool_call(block))
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        reply["tool_calls"] = calls
    if blocks:
        reply["reasoning_content"] = "".join(thinking)
        reply["thinking_blocks"] = blocks
    return {
        "id": str(message.get("id") or "chatcmpl-lockgate"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": STOP_REASONS.get(message.get("stop_reason") or "end_turn", "stop"),
                "logprobs": None,
            }
        ],
        "usage": messages_usage_to_chat(message.get("usage") or {}),
    }
