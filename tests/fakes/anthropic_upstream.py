"""A fake Anthropic upstream speaking the real Messages API wire format over loopback HTTP.

``FakeAnthropic`` runs an aiohttp.web server on 127.0.0.1 in a background thread with its own event
loop (see :class:`~tests.fakes.server.FakeServer`), so synchronous pytest tests can point a gateway (or the
official ``anthropic`` SDK) at ``fake.url``.

Every route needs the key -- ``x-api-key: <api_key>``, or ``Authorization: Bearer <api_key>`` when there is no
``x-api-key`` (the official SDK >= 2.x sends the API key that way) -- else 401 ``authentication_error``, and an
``anthropic-version`` header of any value (400 ``invalid_request_error`` otherwise):

* ``POST /v1/messages`` -- deterministic ``message`` objects, or the named SSE events when ``stream`` is true.
  The reply is a text block ``"echo: <text of the last user message>"`` (a ``tool_result`` block reads as
  ``"tool said: <its content>"``), preceded by a ``thinking`` block when thinking is enabled/adaptive and
  followed by a ``tool_use`` block (``stop_reason: "tool_use"``) when ``tools`` are given and the last
  message is a user turn without ``tool_result``. ``max_tokens`` (in words) and ``stop_sequences``
  truncate the text. ``cache_control`` breakpoints are honoured: the first request with a given prefix
  writes it to the cache, identical later prefixes read it (see :meth:`FakeAnthropic.clear_cache`).
* ``POST /v1/messages/count_tokens`` -- ``{"input_tokens": N}``, see :func:`count_input_tokens`.
* ``GET /v1/models`` and ``GET /v1/models/{id}``.

The body is validated like the real API: unknown top-level fields, missing or mistyped ``model`` /
``max_tokens`` / ``messages``, malformed content blocks, ``tool_use`` / ``tool_result`` pairing, thinking
``signature`` checks (see :func:`signature_for`) and the "final assistant turn must start with a thinking
block" rule when thinking is enabled all give 400 ``invalid_request_error`` with the real message shape.

Token counts are word counts (``str.split``) -- see :func:`count_input_tokens`. Faults are selected by the
request's model name, see :data:`FAULTS`. Every request is recorded in ``FakeAnthropic.requests`` (a list of
:class:`~tests.fakes.server.RecordedRequest`) before it is answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .server import FakeServer, RecordedRequest

__all__ = [
    "ADAPTIVE_ONLY_MODELS",
    "ANTHROPIC_VERSION",
    "COUNT_TOKENS_FIELDS",
    "DEFAULT_API_KEY",
    "FAULTS",
    "MESSAGES_FIELDS",
    "MESSAGE_TOKEN_OVERHEAD",
    "MODELS",
    "TOOL_INPUT",
    "TOOL_USE_ID",
    "FakeAnthropic",
    "RecordedRequest",
    "count_input_tokens",
    "last_user_text",
    "parse_fault",
    "signature_for",
]

DEFAULT_API_KEY = "sk-ant-upstream-secret"
ANTHROPIC_VERSION = "2023-06-01"
ORGANIZATION_ID = "00000000-0000-4000-8000-00000000fa4e"
#: ``(id, display_name, created_at)`` of the models listed by ``GET /v1/models``.
MODELS: tuple[tuple[str, str, str], ...] = (
    ("claude-opus-4-7", "Claude Opus 4.7", "2026-04-16T00:00:00Z"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
)
#: Models that accept only ``thinking: {"type": "adaptive"}`` (400 on ``enabled`` / ``disabled``).
ADAPTIVE_ONLY_MODELS = re.compile(r"^claude-(?:opus-4-[7-9]|[a-z]+-[5-9])(?:-|$)")
TOOL_USE_ID = "toolu_01"
TOOL_INPUT: dict[str, Any] = {"x": 1}
TOOL_INPUT_JSON = '{"x": 1}'
#: Input tokens added per message on top of its words.
MESSAGE_TOKEN_OVERHEAD = 3
MAX_CACHE_BREAKPOINTS = 4

#: Top-level fields accepted by ``POST /v1/messages`` (anything else: "<field>: Extra inputs are not permitted").
MESSAGES_FIELDS: frozenset[str] = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "cache_control",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "stream",
        "metadata",
        "service_tier",
        "container",
        "inference_geo",
        "speed",
        "diagnostics",
        "user_profile_id",
        "workspace_id",
        "context_management",
        "mcp_servers",
    }
)
#: Top-level fields accepted by ``POST /v1/messages/count_tokens``.
COUNT_TOKENS_FIELDS: frozenset[str] = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "cache_control",
        "speed",
        "user_profile_id",
        "workspace_id",
        "context_management",
        "mcp_servers",
    }
)

#: Fault model names understood by the fake (``<n>`` is an integer).
FAULTS: tuple[str, ...] = (
    "fault-status-<code>",  # that HTTP status with Anthropic's error body (429 adds retry-after)
    "fault-slow-<ms>",  # wait <ms> before responding (before headers when streaming)
    "fault-slowstream-<ms>",  # stream: headers + first event at once, then <ms> between later events
    "fault-drop",  # abort the connection without any response
    "fault-dropmidstream",  # 200 SSE with 2 events then abort (non-stream: half a JSON body, then abort)
    "fault-streamerror",  # 200 SSE: message_start, then `event: error` (overloaded_error); non-stream: 529
    "fault-badjson",  # 200, content-type application/json, invalid body
)

_FAULT = re.compile(
    r"^fault-(?:(?P<kind>status|slow|slowstream)-(?P<value>\d+)"
    r"|(?P<bare>drop|dropmidstream|streamerror|badjson))$"
)
_WORD_PIECES = re.compile(r"(?<=\S)(?=\s)")
_ARG_PIECES = re.compile(r"\w+|\s+|[^\w\s]+")
_BLOCK_TYPES: tuple[str, ...] = (
    "text",
    "image",
    "document",
    "search_result",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "tool_result",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "container_upload",
)
_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class _BadRequest(Exception):
    """A validation failure: answered with 400 ``invalid_request_error`` and this message."""


# -- public helpers --------------------------------------------------------------------------------------


def signature_for(thinking: str) -> str:
    """The ``signature`` the fake gives (and expects back on) a thinking block with this text."""
    return "sig_" + hashlib.sha256(thinking.encode()).hexdigest()[:16]


def parse_fault(model: str) -> tuple[str, int]:
    """Return ``(kind, value)`` for a fault model name, ``("", 0)`` for a normal model."""
    m = _FAULT.match(model)
    if m is None:
        return "", 0
    if m["bare"]:
        return m["bare"], 0
    return m["kind"], int(m["value"])


def last_user_text(messages: Any) -> str:
    """Text of the last ``user`` message: its string content, or its text blocks joined by spaces, where a
    ``tool_result`` block reads as ``"tool said: <content>"``."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message.get("content"))
    return ""


def count_input_tokens(payload: dict[str, Any]) -> int:
    """Total input tokens of a request: the words of the tools (name and description), of the system
    prompt and of every message's blocks, plus :data:`MESSAGE_TOKEN_OVERHEAD` per message. This is what
    ``count_tokens`` returns and what ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``
    adds up to in a Messages reply."""
    return sum(seg.tokens for seg in _segments(payload))


# -- small helpers ---------------------------------------------------------------------------------------


def _words(text: str) -> int:
    return len(text.split())


def _pieces(text: str) -> list[str]:
    """Split text into word pieces whose concatenation is the text ("a b" -> ["a", " b"])."""
    return [p for p in _WORD_PIECES.split(text) if p]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _blocks_text(content: Any) -> str:
    """Text of a ``tool_result`` content: a string or the text blocks of a list, joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_result":
            texts.append(f"tool said: {_blocks_text(block.get('content'))}")
    return " ".join(texts)


def _block_tokens(block: Any) -> int:
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind == "text":
        return _words(str(block.get("text", "")))
    if kind == "tool_use":
        return _words(json.dumps(block.get("input", {})))
    if kind == "tool_result":
        return _words(_blocks_text(block.get("content")))
    if kind == "thinking":
        return _words(str(block.get("thinking", "")))
    return 0


def _without_cache_control(item: Any) -> Any:
    if isinstance(item, dict):
        return {k: v for k, v in item.items() if k != "cache_control"}
    return item


def _is_marked(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("cache_control"), dict)


@dataclass
class _Segment:
    """One cacheable unit of the prompt (a tool, a system block, a message block), in cache-prefix order."""

    tokens: int
    content: Any  # what identifies it in a cache prefix (without cache_control)
    cache_control: dict[str, Any] | None


def _segments(payload: dict[str, Any]) -> list[_Segment]:
    """The prompt in Anthropic's cache-prefix order: tools, then system, then messages."""
    out: list[_Segment] = []
    tools = payload.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, dict):
                tokens = _words(str(tool.get("name", ""))) + _words(str(tool.get("description", "")))
                out.append(_Segment(tokens, ["tool", _without_cache_control(tool)], tool.get("cache_control")))
    system = payload.get("system")
    if isinstance(system, str):
        out.append(_Segment(_words(system), ["system", system], None))
    elif isinstance(system, list):
        for block in system:
            out.append(_Segment(_block_tokens(block), ["system", _without_cache_control(block)], _cc(block)))
    messages = payload.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            role = message.get("role")
            content = message.get("content")
            if isinstance(content, list) and content:
                for j, block in enumerate(content):
                    overhead = MESSAGE_TOKEN_OVERHEAD if j == 0 else 0
                    key = [role, i, _without_cache_control(block)]
                    out.append(_Segment(_block_tokens(block) + overhead, key, _cc(block)))
            else:
                text = content if isinstance(content, str) else ""
                out.append(_Segment(_words(text) + MESSAGE_TOKEN_OVERHEAD, [role, i, text], None))
    if isinstance(payload.get("cache_control"), dict) and out:  # automatic caching: mark the last block
        out[-1].cache_control = out[-1].cache_control or payload["cache_control"]
    return out


def _cc(item: Any) -> dict[str, Any] | None:
    return item["cache_control"] if _is_marked(item) else None


@dataclass
class _Breakpoint:
    digest: str
    tokens: int  # prompt tokens up to and including the marked block
    ttl: str


def _breakpoints(model: str, segments: list[_Segment]) -> list[_Breakpoint]:
    h = hashlib.sha256(model.encode())
    total = 0
    out: list[_Breakpoint] = []
    for seg in segments:
        h.update(json.dumps(seg.content, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\x00")
        total += seg.tokens
        if seg.cache_control is not None:
            ttl = "1h" if seg.cache_control.get("ttl") == "1h" else "5m"
            out.append(_Breakpoint(h.copy().hexdigest(), total, ttl))
    return out


# -- validation ------------------------------------------------------------------------------------------


def _check_extra(payload: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in payload:
        if key not in allowed:
            raise _BadRequest(f"{key}: Extra inputs are not permitted")


def _check_block(block: Any, where: str, role: str) -> None:
    if not isinstance(block, dict):
        raise _BadRequest(f"{where}: Input should be a valid dictionary")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _BadRequest(f"{where}: Unable to extract tag using discriminator 'type'")
    if kind not in _BLOCK_TYPES:
        expected = ", ".join(f"'{t}'" for t in _BLOCK_TYPES)
        raise _BadRequest(
            f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {expected}"
        )
    required: dict[str, tuple[tuple[str, type], ...]] = {
        "text": (("text", str),),
        "image": (("source", dict),),
        "document": (("source", dict),),
        "thinking": (("thinking", str), ("signature", str)),
        "redacted_thinking": (("data", str),),
        "tool_use": (("id", str), ("name", str), ("input", dict)),
        "tool_result": (("tool_use_id", str),),
    }
    for field, type_ in required.get(kind, ()):
        if field not in block:
            raise _BadRequest(f"{where}.{kind}.{field}: Field required")
        if not isinstance(block[field], type_):
            name = "dictionary" if type_ is dict else "string"
            raise _BadRequest(f"{where}.{kind}.{field}: Input should be a valid {name}")
    if kind == "text" and not block["text"]:
        raise _BadRequest("messages: text content blocks must be non-empty")
    if kind in ("tool_use", "thinking", "redacted_thinking") and role != "assistant":
        raise _BadRequest(f"{where}: `{kind}` blocks can only be in `assistant` messages")
    if kind == "tool_result" and role != "user":
        raise _BadRequest(f"{where}: `tool_result` blocks can only be in `user` messages")


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise _BadRequest("messages: Input should be a valid list")
    if not messages:
        raise _BadRequest("messages: at least one message is required")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _BadRequest(f"{where}: Input should be a valid dictionary")
        for key in message:
            if key not in ("role", "content"):
                raise _BadRequest(f"{where}.{key}: Extra inputs are not permitted")
        role = message.get("role")
        if role is None:
            raise _BadRequest(f"{where}.role: Field required")
        if role not in ("user", "assistant"):
            raise _BadRequest(f"{where}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise _BadRequest(f"{where}.content: Field required")
        content = message["content"]
        if not isinstance(content, str | list):
            raise _BadRequest(f"{where}.content: Input should be a valid list")
        if not content and not (role == "assistant" and i == len(messages) - 1):
            raise _BadRequest(
                f"{where}: all messages must have non-empty content except for the optional final assistant message"
            )
        if isinstance(content, list):
            for j, block in enumerate(content):
                _check_block(block, f"{where}.content.{j}", role)
    _check_tool_pairing(messages)
    return messages


def _tool_use_ids(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if message.get("role") != "assistant" or not isinstance(content, list):
        return []
    return [b["id"] for b in content if b.get("type") == "tool_use"]


def _check_tool_pairing(messages: list[dict[str, Any]]) -> None:
    for i, message in enumerate(messages):
        content = message["content"]
        if message["role"] == "user" and isinstance(content, list):
            previous = set(_tool_use_ids(messages[i - 1])) if i > 0 else set()
            for j, block in enumerate(content):
                if block.get("type") == "tool_result" and block["tool_use_id"] not in previous:
                    raise _BadRequest(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` "
                        "block in the previous message."
                    )
        ids = _tool_use_ids(message)
        if ids and i + 1 < len(messages):
            following = messages[i + 1]
            answered: set[str] = set()
            if following["role"] == "user" and isinstance(following["content"], list):
                answered = {b["tool_use_id"] for b in following["content"] if b.get("type") == "tool_result"}
            missing = [x for x in ids if x not in answered]
            if missing:
                raise _BadRequest(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in "
                    "the next message."
                )


def _check_thinking_blocks(messages: list[dict[str, Any]], thinking_on: bool) -> None:
    for i, message in enumerate(messages):
        content = message["content"]
        if message["role"] != "assistant" or not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if block.get("type") == "thinking" and block["signature"] != signature_for(block["thinking"]):
                raise _BadRequest(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
    if not thinking_on:
        return
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if message["role"] != "assistant":
            continue
        content = message["content"]
        if isinstance(content, list) and any(b.get("type") == "tool_use" for b in content):
            first = content[0].get("type")
            if first not in ("thinking", "redacted_thinking"):
                raise _BadRequest(
                    f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. "
                    "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
                    "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
                    "thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please "
                    f"consult our documentation at {_THINKING_DOCS}"
                )
        return


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _BadRequest("system: Input should be a valid list")
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _BadRequest(f"system.{j}.type: Input should be 'text'")
        if not isinstance(block.get("text"), str):
            raise _BadRequest(f"system.{j}.text: Field required")
        if not block["text"]:
            raise _BadRequest("system: text content blocks must be non-empty")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _BadRequest("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _BadRequest(f"tools.{i}: Input should be a valid dictionary")
        if not isinstance(tool.get("name"), str):
            raise _BadRequest(f"tools.{i}.custom.name: Field required")
        if tool.get("type", "custom") == "custom" and not isinstance(tool.get("input_schema"), dict):
            raise _BadRequest(f"tools.{i}.custom.input_schema: Field required")


def _check_tool_choice(tool_choice: Any) -> None:
    if tool_choice is None:
        return
    if not isinstance(tool_choice, dict) or tool_choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _BadRequest("tool_choice: Input tag found using 'type' does not match any of the expected tags")
    if tool_choice["type"] == "tool" and not isinstance(tool_choice.get("name"), str):
        raise _BadRequest("tool_choice.tool.name: Field required")


def _thinking_enabled(payload: dict[str, Any], max_tokens: int | None) -> bool:
    thinking = payload.get("thinking")
    if thinking is None:
        return False
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
        raise _BadRequest(
            "thinking: Input tag found using 'type' does not match any of the expected tags: "
            "'enabled', 'disabled', 'adaptive'"
        )
    if thinking["type"] != "adaptive" and ADAPTIVE_ONLY_MODELS.match(str(payload.get("model"))):
        raise _BadRequest(
            f"`thinking.type.{thinking['type']}` is not supported for this model. Use `thinking.type.adaptive` "
            "and `output_config.effort` to control thinking behavior."
        )
    if thinking["type"] == "disabled":
        return False
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise _BadRequest("thinking.enabled.budget_tokens: Field required")
        if budget < 1024:
            raise _BadRequest("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        if max_tokens is not None and max_tokens <= budget:
            raise _BadRequest(
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
                f"{_THINKING_DOCS}#max-tokens-and-context-window-size"
            )
    choice = payload.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        raise _BadRequest("Thinking may not be enabled when tool_choice forces tool use.")
    return True


def _validate(payload: dict[str, Any], *, count_tokens: bool) -> tuple[list[dict[str, Any]], bool]:
    """Validate a Messages (or count_tokens) body; returns ``(messages, thinking_enabled)``."""
    _check_extra(payload, COUNT_TOKENS_FIELDS if count_tokens else MESSAGES_FIELDS)
    max_tokens: int | None = None
    if not count_tokens:
        if "max_tokens" not in payload:
            raise _BadRequest("max_tokens: Field required")
        value = payload["max_tokens"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise _BadRequest("max_tokens: Input should be a valid integer")
        if value < 0:
            raise _BadRequest("max_tokens: Input should be greater than or equal to 0")
        max_tokens = value
        if "stream" in payload and not isinstance(payload["stream"], bool):
            raise _BadRequest("stream: Input should be a valid boolean")
        stops = payload.get("stop_sequences")
        if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
            raise _BadRequest("stop_sequences: Input should be a valid list of strings")
    if "messages" not in payload:
        raise _BadRequest("messages: Field required")
    messages = _check_messages(payload["messages"])
    _check_system(payload.get("system"))
    _check_tools(payload.get("tools"))
    _check_tool_choice(payload.get("tool_choice"))
    thinking_on = _thinking_enabled(payload, max_tokens)
    _check_thinking_blocks(messages, thinking_on)
    marks = sum(1 for seg in _segments(payload) if seg.cache_control is not None)
    if marks > MAX_CACHE_BREAKPOINTS:
        raise _BadRequest(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {marks}."
        )
    return messages, thinking_on


# -- responses -------------------------------------------------------------------------------------------


def _base_headers() -> dict[str, str]:
    return {"request-id": _new_id("req_"), "anthropic-organization-id": ORGANIZATION_ID}


def _error(
    status: int, message: str, type_: str | None = None, *, headers: dict[str, str] | None = None
) -> web.Response:
    if type_ is None:
        type_ = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    base = _base_headers()
    body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": base["request-id"]}
    return web.Response(
        status=status, body=_dumps(body), content_type="application/json", headers={**base, **(headers or {})}
    )


def _status_fault(status: int, model: str) -> web.Response:
    """The response for ``fault-status-<code>``: Anthropic's error shapes for the common statuses."""
    if status == 429:
        return _error(
            429,
            "This request would exceed the rate limit for your organization "
            f"({ORGANIZATION_ID}) of 50 requests per minute. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. "
            "Please reduce the prompt length or the maximum tokens requested, or try again later.",
            headers={
                "retry-after": "1",
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:01Z",
            },
        )
    messages = {
        400: "Invalid request (injected fault).",
        401: "invalid x-api-key",
        402: "Your credit balance is too low to access the Anthropic API.",
        403: "Your API key does not have permission to use the specified resource.",
        404: f"model: {model}",
        413: "Request exceeds the maximum allowed number of bytes.",
        500: "Internal server error (upstream internal detail: shard fake-7 stack trace omitted)",
        504: "Request timed out.",
        529: "Overloaded",
    }
    return _error(status, messages.get(status, f"Injected fault: HTTP {status}."))


@dataclass
class _Plan:
    """What a Messages reply contains, shared by the JSON and SSE renderings."""

    content: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int
    cache_creation_input_tokens: int
    cache_creation_1h: bool
    cache_read_input_tokens: int
    output_tokens: int

    def usage(self) -> dict[str, Any]:
        created = self.cache_creation_input_tokens
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 0 if self.cache_creation_1h else created,
                "ephemeral_1h_input_tokens": created if self.cache_creation_1h else 0,
            },
            "output_tokens": self.output_tokens,
            "service_tier": "standard",
        }

    def message(self, model: str, msg_id: str) -> dict[str, Any]:
        return {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": self.content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage(),
        }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps({"type": name, **data}) + b"\n\n"


def _sse_events(plan: _Plan, model: str) -> list[bytes]:
    """All SSE events of a streamed reply, in the real API's order."""
    start_usage = {**plan.usage(), "output_tokens": 1}
    start = {**plan.message(model, _new_id("msg_01")), "content": [], "stop_reason": None, "usage": start_usage}
    events = [_event("message_start", {"message": start}), _event("ping", {})]
    for index, block in enumerate(plan.content):
        kind = block["type"]
        first: dict[str, Any]
        deltas: list[dict[str, Any]]
        if kind == "thinking":
            first = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "text":
            first = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        else:  # tool_use
            first = {**block, "input": {}}
            frags = ["", *_ARG_PIECES.findall(json.dumps(block["input"]))]
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in frags]
        events.append(_event("content_block_start", {"index": index, "content_block": first}))
        events.extend(_event("content_block_delta", {"index": index, "delta": d}) for d in deltas)
        events.append(_event("content_block_stop", {"index": index}))
    usage = plan.usage()
    final_usage = {
        "input_tokens": usage["input_tokens"],
        "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
        "cache_read_input_tokens": usage["cache_read_input_tokens"],
        "output_tokens": usage["output_tokens"],
    }
    delta = {"stop_reason": plan.stop_reason, "stop_sequence": plan.stop_sequence}
    events.append(_event("message_delta", {"delta": delta, "usage": final_usage}))
    events.append(_event("message_stop", {}))
    return events


def _model_obj(model_id: str, display_name: str, created_at: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name,
        "created_at": created_at,
        "lifecycle": "active",
    }


class FakeAnthropic(FakeServer):
    """Fake Anthropic upstream on 127.0.0.1 (see the module docstring for routes and faults).

    ``url`` is the base URL without ``/v1`` (what ``anthropic.Anthropic(base_url=...)`` expects). Usage::

        with FakeAnthropic() as fake:
            client = anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-upstream-secret")
            ...
            assert fake.requests[-1].json["model"] == "claude-sonnet-4-6"
    """

    def __init__(self, *, api_key: str | None = DEFAULT_API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self._cache: set[str] = set()

    def clear_cache(self) -> None:
        """Forget every cached prompt prefix: the next request with a breakpoint writes the cache again.

        (:meth:`clear` forgets only the recorded requests and keeps the prompt cache.)
        """
        with self._lock:
            self._cache.clear()

    # -- request handling ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request, recorded: RecordedRequest, *, bad_json: bool) -> web.StreamResponse:
        path, payload = recorded.path, recorded.json
        is_models = path == "/v1/models" or path.startswith("/v1/models/")
        if path not in ("/v1/messages", "/v1/messages/count_tokens") and not is_models:
            return _error(404, "Not Found")
        denied = self._check_key(request)
        if denied is not None:
            return denied
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        if is_models:
            if request.method != "GET":
                return _error(405, f"Method Not Allowed: {request.method} {path}", "invalid_request_error")
            return self._models(path[len("/v1/models/") :] if path.startswith("/v1/models/") else None)
        if request.method != "POST":
            return _error(405, f"Method Not Allowed: {request.method} {path}", "invalid_request_error")
        if bad_json or not isinstance(payload, dict):
            return _error(400, "There was an error parsing the body of your request: expected a JSON object")
        model = payload.get("model")
        if "model" not in payload:
            return _error(400, "model: Field required")
        if not isinstance(model, str) or not model:
            return _error(400, "model: Input should be a valid string")
        count_tokens = path == "/v1/messages/count_tokens"
        stream = not count_tokens and payload.get("stream") is True

        fault, value = parse_fault(model)
        if fault == "status":
            return _status_fault(value, model)
        if fault == "slow":
            await asyncio.sleep(value / 1000)
        elif fault == "drop":
            return self._abort(request)
        elif fault == "badjson":
            return web.Response(
                status=200,
                body=b'{"id": "msg_broken", "type": "message", "content": [{"type": "text",',
                content_type="application/json",
                headers=_base_headers(),
            )
        elif fault == "streamerror" and not stream:
            return _status_fault(529, model)

        try:
            messages, thinking_on = _validate(payload, count_tokens=count_tokens)
        except _BadRequest as exc:
            return _error(400, str(exc))
        if count_tokens:
            return web.Response(
                body=_dumps({"input_tokens": count_input_tokens(payload)}),
                content_type="application/json",
                headers=_base_headers(),
            )
        plan = self._plan(payload, model, messages, thinking_on)
        if stream:
            return await self._stream(request, plan, model, fault, value)
        data = _dumps(plan.message(model, _new_id("msg_01")))
        if fault == "dropmidstream":
            return await self._send_half_then_abort(request, data, _base_headers())
        return web.Response(status=200, body=data, content_type="application/json", headers=_base_headers())

    def _check_key(self, request: web.Request) -> web.Response | None:
        """``x-api-key`` decides when present; otherwise ``Authorization: Bearer`` (what the SDK sends)."""
        if self.api_key is None:
            return None
        provided = request.headers.get("x-api-key")
        if provided is None:
            auth = request.headers.get("Authorization", "")
            provided = auth[7:] if auth[:7].lower() == "bearer " else None
        if provided == self.api_key:
            return None
        return _error(401, "invalid x-api-key" if provided else "x-api-key header is required")

    # -- models ----------------------------------------------------------------------------------------

    @staticmethod
    def _models(model_id: str | None) -> web.Response:
        if model_id is not None:
            found = [m for m in MODELS if m[0] == model_id]
            if not found:
                return _error(404, f"model: {model_id}")
            obj: dict[str, Any] = _model_obj(*found[0])
        else:
            obj = {
                "data": [_model_obj(*m) for m in MODELS],
                "has_more": False,
                "first_id": MODELS[0][0],
                "last_id": MODELS[-1][0],
            }
        return web.Response(body=_dumps(obj), content_type="application/json", headers=_base_headers())

    # -- messages --------------------------------------------------------------------------------------

    def _cache_usage(self, payload: dict[str, Any], model: str) -> tuple[int, int, bool]:
        """``(cache_creation_input_tokens, cache_read_input_tokens, written_with_1h_ttl)``; remembers prefixes."""
        marks = _breakpoints(model, _segments(payload))
        if not marks:
            return 0, 0, False
        last = marks[-1]
        with self._lock:
            read = max((m.tokens for m in marks if m.digest in self._cache), default=0)
            self._cache.update(m.digest for m in marks)
        return last.tokens - read, read, last.ttl == "1h"

    def _plan(self, payload: dict[str, Any], model: str, messages: list[dict[str, Any]], thinking_on: bool) -> _Plan:
        source = last_user_text(messages)
        max_tokens: int = payload["max_tokens"]
        content: list[dict[str, Any]] = []
        stop_reason = "end_turn"
        stop_sequence: str | None = None
        output_tokens = 0
        if max_tokens == 0:
            stop_reason = "max_tokens"
        else:
            if thinking_on:
                thought = f"Let me think about: {source}" if source else "Let me think about this."
                content.append({"type": "thinking", "thinking": thought, "signature": signature_for(thought)})
                output_tokens += _words(thought)
            text = f"echo: {source}" if source else "echo:"
            hits = [(text.find(s), s) for s in payload.get("stop_sequences") or () if s and s in text]
            if hits:
                at, stop_sequence = min(hits)
                text = text[:at]
                stop_reason = "stop_sequence"
            pieces = _pieces(text)
            if max_tokens < len(pieces):
                text = "".join(pieces[:max_tokens])
                stop_reason, stop_sequence = "max_tokens", None
            if text:
                content.append({"type": "text", "text": text})
                output_tokens += _words(text)
            tool_name = self._tool_name(payload, messages)
            if tool_name is not None and stop_reason == "end_turn":
                content.append({"type": "tool_use", "id": TOOL_USE_ID, "name": tool_name, "input": dict(TOOL_INPUT)})
                output_tokens += _words(TOOL_INPUT_JSON)
                stop_reason = "tool_use"
            output_tokens = max(output_tokens, 1)
        total = count_input_tokens(payload)
        created, read, one_hour = self._cache_usage(payload, model)
        return _Plan(
            content=content,
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            input_tokens=total - created - read,
            cache_creation_input_tokens=created,
            cache_creation_1h=one_hour,
            cache_read_input_tokens=read,
            output_tokens=output_tokens,
        )

    @staticmethod
    def _tool_name(payload: dict[str, Any], messages: list[dict[str, Any]]) -> str | None:
        tools = payload.get("tools")
        if not tools:
            return None
        last = messages[-1]
        content = last["content"]
        if last["role"] != "user":
            return None
        if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
            return None
        choice = payload.get("tool_choice")
        if isinstance(choice, dict):
            if choice.get("type") == "none":
                return None
            if choice.get("type") == "tool":
                return str(choice["name"])
        return str(tools[0]["name"])

    async def _stream(
        self, request: web.Request, plan: _Plan, model: str, fault: str, value: int
    ) -> web.StreamResponse:
        events = _sse_events(plan, model)
        if fault == "streamerror":
            error = {"error": {"type": "overloaded_error", "message": "Overloaded"}}
            events = [events[0], _event("error", error)]
        resp = web.StreamResponse(
            status=200,
            headers={
                **_base_headers(),
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
            },
        )
        await resp.prepare(request)
        for i, event in enumerate(events):
            if fault == "dropmidstream" and i == 2:
                await asyncio.sleep(0.05)  # let the two events leave before the connection is torn down
                return self._abort(request)
            if fault == "slowstream" and i > 0:
                await asyncio.sleep(value / 1000)
            await resp.write(event)
        await resp.write_eof()
        return resp
