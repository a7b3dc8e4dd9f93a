"""A fake AWS Bedrock Runtime upstream speaking the real wire format (SigV4, rest-json, event streams) over loopback.

``FakeBedrock`` runs an aiohttp.web server on 127.0.0.1 in a background thread with its own event loop (see
:class:`~tests.fakes.server.FakeServer`), so synchronous pytest tests can point a gateway (or
``boto3.client("bedrock-runtime", endpoint_url=fake.url)``) at it.

Routes (``modelId`` is percent-encoded in the path, e.g. ``us.anthropic.claude-3-7-sonnet-20250219-v1%3A0``):

* ``POST /model/{modelId}/converse`` and ``/converse-stream`` -- the unified Converse API. The request is
  checked and translated into an Anthropic Messages body (:func:`converse_to_messages`), answered by the
  Anthropic fake's reply planner, and translated back: a ``text`` block ``"echo: <last user text>"``, preceded
  by a ``reasoningContent`` block when ``additionalModelRequestFields.thinking`` (or ``reasoning_config``) is
  enabled and followed by a ``toolUse`` block (``stopReason: "tool_use"``) when tools are configured and the last
  user message has no ``toolResult``. Streams are AWS event-stream frames (:func:`encode_event`).
* ``POST /model/{modelId}/invoke`` and ``/invoke-with-response-stream`` -- the Anthropic Claude body
  (``anthropic_version: "bedrock-2023-05-31"``, no ``model``, no ``stream``); the reply is an Anthropic ``message``,
  or one ``chunk`` frame per Anthropic stream event (``{"bytes": base64(event JSON)}``), the final
  ``message_stop`` carrying ``amazon-bedrock-invocationMetrics``.

Every request must be SigV4-signed with the fake's credentials (service ``bedrock``, the fake's region) -- the
signature is recomputed with botocore from what was received -- or carry ``Authorization: Bearer <api_key>``
when the fake was given an ``api_key`` (Bedrock API keys). Errors use Bedrock's shape: the HTTP status, a
``{"message": ...}`` body and an ``x-amzn-ErrorType`` header. Faults are selected by the model id (its last
dot-separated part, so ``us.anthropic.fault-drop`` works too), see :data:`FAULTS`. Every request is recorded in
``FakeBedrock.requests`` (``path`` is the *raw* path, percent-encoding as sent) before it is verified or answered.

Event payloads carry a ``"p"`` padding field (random-length letters) like real Bedrock streams do -- observed
behaviour, not in the service model; clients must ignore unknown keys. Pass ``padding=False`` to drop it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import re
import struct
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from .anthropic_upstream import (
    FakeAnthropic,
    _BadRequest,
    _Plan,
    _sse_events,
    _validate,
    count_input_tokens,
    last_user_text,
    signature_for,
)
from .server import FakeServer, RecordedRequest

__all__ = [
    "ANTHROPIC_VERSION",
    "CONVERSE_FIELDS",
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_REGION",
    "DEFAULT_SECRET_KEY",
    "EXCEPTION_STATUS",
    "FAULTS",
    "TOOL_USE_ID",
    "BedrockValidationError",
    "FakeBedrock",
    "RecordedRequest",
    "claude_model_name",
    "converse_input_tokens",
    "converse_reply_text",
    "converse_to_messages",
    "decode_frames",
    "encode_event",
    "encode_exception",
    "encode_message",
    "parse_fault",
    "signature_for",
]

DEFAULT_ACCESS_KEY = "AKIDFAKEBEDROCK01"
DEFAULT_SECRET_KEY = "fake-secret-key-canary-7a1c"
DEFAULT_REGION = "us-east-1"
SERVICE = "bedrock"
ANTHROPIC_VERSION = "bedrock-2023-05-31"
TOOL_USE_ID = "tooluse_01"
#: ``maxTokens`` used when a Converse request has no ``inferenceConfig.maxTokens``.
DEFAULT_MAX_TOKENS = 4096
EVENT_STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)

#: HTTP status of each Bedrock Runtime exception (botocore's service model ``error.httpStatusCode``).
EXCEPTION_STATUS: dict[str, int] = {
    "ValidationException": 400,
    "ServiceQuotaExceededException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
_STATUS_EXCEPTION: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "Invalid request (injected fault)."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "The requested model could not be found (injected fault)."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model returned an error (injected fault)."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: (
        "InternalServerException",
        "The system encountered an unexpected error during processing. Try your request again. "
        "(upstream internal detail: shard fake-7 stack trace omitted)",
    ),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}

#: Fault model ids understood by the fake (``<n>`` is an integer); matched against the id's last ``.`` part.
FAULTS: tuple[str, ...] = (
    "fault-status-<code>",  # that status + Bedrock error (400 Validation, 403 AccessDenied, 404 ResourceNotFound,
    # 408 ModelTimeout, 424 ModelError, 429 Throttling, 500 InternalServer, 503 ServiceUnavailable; others by class)
    "fault-notready",  # 429 ModelNotReadyException
    "fault-slow-<ms>",  # wait <ms> before responding (before headers when streaming)
    "fault-slowstream-<ms>",  # stream: headers + first frame at once, then <ms> between later frames
    "fault-drop",  # abort the connection without any response
    "fault-dropmidstream",  # stream: 2 frames then abort (non-stream: half a JSON body, then abort)
    "fault-streamerror",  # stream: first frame, then an exception frame (throttlingException); non-stream: 429
    "fault-badcrc",  # stream: the second frame's message CRC is corrupted (non-stream: a normal reply)
)

#: Top-level members of ConverseRequest / ConverseStreamRequest besides ``modelId`` (service model 2023-09-30).
#: Anything else is rejected -- stricter than a Smithy server might be, to catch translation typos.
CONVERSE_FIELDS: frozenset[str] = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
    }
)
_CONTENT_BLOCK_MEMBERS: frozenset[str] = frozenset(
    {
        "text",
        "image",
        "document",
        "video",
        "audio",
        "toolUse",
        "toolResult",
        "guardContent",
        "cachePoint",
        "reasoningContent",
        "citationsContent",
        "searchResult",
        "toolAddition",
        "toolRemoval",
    }
)
_INVOKE_FIELDS: frozenset[str] = frozenset(
    {
        "anthropic_version",
        "anthropic_beta",
        "max_tokens",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "context_management",
        "cache_control",
    }
)
_ROUTE = re.compile(
    r"^/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream|invoke|invoke-with-response-stream|count-tokens)$"
)
_FAULT = re.compile(
    r"^fault-(?:(?P<kind>status|slow|slowstream)-(?P<value>\d+)"
    r"|(?P<bare>notready|drop|dropmidstream|streamerror|badcrc))$"
)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-fA-F]+)$"
)
_GEO_PREFIXES = ("us.", "eu.", "apac.", "global.", "jp.", "au.", "us-gov.", "ca.")
_WORD_PIECES = re.compile(r"(?<=\S)(?=\s)")
_ARG_PIECES = re.compile(r"\w+|\s+|[^\w\s]+")
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
_BAD_TOKEN = "The security token included in the request is invalid."
_MODEL_ERRORS = "The model returned the following errors: "
_STARTED = web.RequestKey("started", float)  # time.monotonic() when the request arrived


class BedrockValidationError(ValueError):
    """A request Bedrock would refuse with 400 ``ValidationException`` (the message is the exception's text)."""


# -- event-stream framing ----------------------------------------------------------------------------------


def _string_header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message with string-typed headers: prelude (total length, headers length, prelude
    CRC32), headers, payload, message CRC32 -- all big-endian, CRCs as ``zlib.crc32``."""
    raw_headers = b"".join(_string_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def encode_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """An ``event`` message (``:event-type``, ``:content-type: application/json``, ``:message-type: event``)."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, _dumps(payload))


def encode_exception(exception_type: str, message: str) -> bytes:
    """An ``exception`` message as Bedrock sends inside a stream, e.g. ``throttlingException``."""
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return encode_message(headers, _dumps({"message": message}))


def _header_value(kind: int, data: bytes, at: int) -> tuple[Any, int]:
    """Decode one header value of ``kind`` starting at ``data[at]``; returns ``(value, next offset)``."""
    fixed = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}
    if kind in (0, 1):
        return kind == 0, at
    if kind in fixed:
        fmt = fixed[kind]
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, data, at)[0], at + size
    if kind in (6, 7):
        (length,) = struct.unpack_from(">H", data, at)
        raw = data[at + 2 : at + 2 + length]
        return (raw.decode() if kind == 7 else raw), at + 2 + length
    if kind == 9:
        return uuid.UUID(bytes=data[at : at + 16]), at + 16
    raise ValueError(f"unknown event-stream header type {kind}")


def decode_frames(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """Split a whole event-stream body into ``(headers, payload)`` pairs, checking both CRCs.

    Independent of botocore (tests cross-check it against ``botocore.eventstream.EventStreamBuffer``); raises
    ``ValueError`` on a CRC mismatch or a truncated message.
    """
    frames: list[tuple[dict[str, Any], bytes]] = []
    at = 0
    while at < len(data):
        if len(data) - at < 16:
            raise ValueError(f"truncated event-stream message at byte {at}")
        total, headers_length, prelude_crc = struct.unpack_from(">III", data, at)
        if zlib.crc32(data[at : at + 8]) != prelude_crc:
            raise ValueError(f"prelude CRC mismatch at byte {at}")
        if total < 16 + headers_length or at + total > len(data):
            raise ValueError(f"truncated event-stream message at byte {at}")
        message = data[at : at + total]
        (message_crc,) = struct.unpack_from(">I", message, total - 4)
        if zlib.crc32(message[:-4]) != message_crc:
            raise ValueError(f"message CRC mismatch at byte {at}")
        headers: dict[str, Any] = {}
        pos = 12
        while pos < 12 + headers_length:
            name_length = message[pos]
            name = message[pos + 1 : pos + 1 + name_length].decode()
            value, pos = _header_value(message[pos + 1 + name_length], message, pos + 2 + name_length)
            headers[name] = value
        frames.append((headers, message[12 + headers_length : total - 4]))
        at += total
    return frames


def _corrupt_crc(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


# -- public helpers ----------------------------------------------------------------------------------------


def parse_fault(model_id: str) -> tuple[str, int]:
    """Return ``(kind, value)`` for a fault model id (or one whose last ``.`` part is), ``("", 0)`` otherwise."""
    m = _FAULT.match(model_id.rsplit(".", 1)[-1])
    if m is None:
        return "", 0
    if m["bare"]:
        return m["bare"], 0
    return m["kind"], int(m["value"])


def claude_model_name(model_id: str) -> str:
    """The Anthropic model name of a Bedrock model id, as Claude reports it in ``message.model``:
    ``us.anthropic.claude-3-7-sonnet-20250219-v1:0`` -> ``claude-3-7-sonnet-20250219``."""
    name = model_id.rsplit("/", 1)[-1]
    for prefix in _GEO_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    name = name.removeprefix("anthropic.")
    return re.sub(r"(?:-v\d+)?(?::\d+)?$", "", name) or model_id


def _pieces(text: str) -> list[str]:
    """Split text into word pieces whose concatenation is the text ("a b" -> ["a", " b"])."""
    return [p for p in _WORD_PIECES.split(text) if p]


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BedrockValidationError(f"{where} must be an object.")
    return value


def _union(value: Any, members: frozenset[str] | tuple[str, ...], where: str) -> tuple[str, Any]:
    """The single ``(member, value)`` of a Smithy union."""
    if not isinstance(value, dict) or len(value) != 1:
        raise BedrockValidationError(f"{where} must set exactly one member.")
    ((key, inner),) = value.items()
    if key not in members:
        raise BedrockValidationError(f"{where}: unknown member '{key}'.")
    return key, inner


def _cache_control(point: Any, where: str) -> dict[str, Any]:
    point = _obj(point, f"{where}.cachePoint")
    if point.get("type") != "default":
        raise BedrockValidationError(f"{where}.cachePoint.type must be 'default'.")
    ttl = point.get("ttl")
    if ttl is not None and ttl not in ("5m", "1h"):
        raise BedrockValidationError(f"{where}.cachePoint.ttl must be one of [5m, 1h].")
    return {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}


def _mark_previous(items: list[dict[str, Any]], point: Any, where: str) -> None:
    control = _cache_control(point, where)
    if not items:
        raise BedrockValidationError(f"{where}: a cachePoint must follow the content it caches.")
    items[-1]["cache_control"] = control


def _tool_result_content(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        raise BedrockValidationError(f"{where}.toolResult.content must be a list.")
    out: list[dict[str, Any]] = []
    for k, item in enumerate(content):
        kind, value = _union(item, ("json", "text", "image", "document", "video", "searchResult"), f"{where}.{k}")
        if kind == "text":
            out.append({"type": "text", "text": str(value)})
        elif kind == "json":
            out.append({"type": "text", "text": json.dumps(value, ensure_ascii=False)})
        else:
            out.append({"type": "text", "text": f"[{kind}]"})
    return out


def _content_block(block: Any, where: str) -> dict[str, Any] | None:
    """One Converse content block as an Anthropic block (``None`` for a cachePoint, handled by the caller)."""
    kind, value = _union(block, _CONTENT_BLOCK_MEMBERS, where)
    if kind == "cachePoint":
        return None
    if kind == "text":
        if not isinstance(value, str) or not value.strip():
            raise BedrockValidationError(
                f"The text field in the ContentBlock object at {where} is blank. Add text to the text field, "
                "and try again."
            )
        return {"type": "text", "text": value}
    if kind == "image":
        image = _obj(value, f"{where}.image")
        if image.get("format") not in ("png", "jpeg", "gif", "webp"):
            raise BedrockValidationError(f"{where}.image.format must be one of [png, jpeg, gif, webp].")
        source_kind, data = _union(image.get("source"), ("bytes", "s3Location"), f"{where}.image.source")
        media_type = f"image/{image['format']}"
        source = {"type": "base64", "media_type": media_type, "data": data if source_kind == "bytes" else ""}
        return {"type": "image", "source": source}
    if kind == "toolUse":
        use = _obj(value, f"{where}.toolUse")
        if not isinstance(use.get("toolUseId"), str) or not isinstance(use.get("name"), str):
            raise BedrockValidationError(f"{where}.toolUse requires toolUseId and name.")
        return {"type": "tool_use", "id": use["toolUseId"], "name": use["name"], "input": use.get("input", {})}
    if kind == "toolResult":
        result = _obj(value, f"{where}.toolResult")
        if not isinstance(result.get("toolUseId"), str):
            raise BedrockValidationError(f"{where}.toolResult.toolUseId is required.")
        out = {
            "type": "tool_result",
            "tool_use_id": result["toolUseId"],
            "content": _tool_result_content(result.get("content"), where),
        }
        if result.get("status") == "error":
            out["is_error"] = True
        return out
    if kind == "reasoningContent":
        reasoning_kind, reasoning = _union(value, ("reasoningText", "redactedContent"), f"{where}.reasoningContent")
        if reasoning_kind == "redactedContent":
            return {"type": "redacted_thinking", "data": str(reasoning)}
        text_block = _obj(reasoning, f"{where}.reasoningContent.reasoningText")
        if not isinstance(text_block.get("text"), str):
            raise BedrockValidationError(f"{where}.reasoningContent.reasoningText.text is required.")
        return {"type": "thinking", "thinking": text_block["text"], "signature": str(text_block.get("signature", ""))}
    if kind == "document":
        document = _obj(value, f"{where}.document")
        return {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": ""}} | (
            {"title": document["name"]} if isinstance(document.get("name"), str) else {}
        )
    return {"type": "text", "text": f"[{kind}]"}  # video, audio, guardContent, citationsContent, ...


def _uses_tools(messages: list[Any]) -> bool:
    for message in messages:
        for block in message.get("content") or []:
            if isinstance(block, dict) and ("toolUse" in block or "toolResult" in block):
                return True
    return False


def converse_to_messages(body: Any, model_id: str) -> dict[str, Any]:
    """Check a Converse request body and translate it to the Anthropic Messages body the fake plans from.

    ``cachePoint`` blocks become ``cache_control`` on the preceding block, ``reasoningContent`` becomes
    ``thinking`` / ``redacted_thinking``, ``additionalModelRequestFields.thinking`` (or ``reasoning_config``)
    becomes ``thinking``. Raises :class:`BedrockValidationError` for what Bedrock itself would refuse.
    """
    body = _obj(body, "The request body")
    for key in body:
        if key not in CONVERSE_FIELDS:
            raise BedrockValidationError(f"Unknown field in the request body: {key}.")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise BedrockValidationError("messages must be a list.")
    if not raw_messages or not isinstance(raw_messages[0], dict) or raw_messages[0].get("role") != "user":
        raise BedrockValidationError(
            "A conversation must start with a user message. Try again with a conversation that starts with a user "
            "message."
        )
    tool_config = body.get("toolConfig")
    if tool_config is None and _uses_tools(raw_messages):
        raise BedrockValidationError(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    messages: list[dict[str, Any]] = []
    previous_role = None
    for i, raw in enumerate(raw_messages):
        where = f"messages.{i}"
        message = _obj(raw, where)
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise BedrockValidationError(f"{where}.role must be one of [user, assistant].")
        if role == previous_role:
            raise BedrockValidationError(
                "A conversation must alternate between user and assistant roles. Make sure the conversation "
                "alternates between user and assistant roles and try again."
            )
        previous_role = role
        content = message.get("content")
        if not isinstance(content, list):
            raise BedrockValidationError(f"{where}.content must be a list.")
        blocks: list[dict[str, Any]] = []
        for j, raw_block in enumerate(content):
            block = _content_block(raw_block, f"{where}.content.{j}")
            if block is None:
                _mark_previous(blocks, raw_block["cachePoint"], f"{where}.content.{j}")
            else:
                blocks.append(block)
        messages.append({"role": role, "content": blocks})

    payload: dict[str, Any] = {"model": claude_model_name(model_id), "messages": messages}
    system = body.get("system")
    if system is not None:
        if not isinstance(system, list):
            raise BedrockValidationError("system must be a list.")
        system_blocks: list[dict[str, Any]] = []
        for j, item in enumerate(system):
            kind, value = _union(item, ("text", "guardContent", "cachePoint"), f"system.{j}")
            if kind == "cachePoint":
                _mark_previous(system_blocks, value, f"system.{j}")
            elif kind == "text":
                if not isinstance(value, str) or not value:
                    raise BedrockValidationError(f"system.{j}.text must be a non-empty string.")
                system_blocks.append({"type": "text", "text": value})
            else:
                system_blocks.append({"type": "text", "text": "[guardContent]"})
        if system_blocks:
            payload["system"] = system_blocks

    inference = _obj(body.get("inferenceConfig", {}), "inferenceConfig")
    max_tokens = inference.get("maxTokens", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BedrockValidationError("inferenceConfig.maxTokens must be an integer >= 1.")
    payload["max_tokens"] = max_tokens
    for name, field in (("temperature", "temperature"), ("topP", "top_p")):
        if name in inference:
            value = inference[name]
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise BedrockValidationError(f"inferenceConfig.{name} must be a number between 0 and 1.")
            payload[field] = value
    if "stopSequences" in inference:
        stops = inference["stopSequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise BedrockValidationError("inferenceConfig.stopSequences must be a list of non-empty strings.")
        payload["stop_sequences"] = stops

    if tool_config is not None:
        tool_config = _obj(tool_config, "toolConfig")
        raw_tools = tool_config.get("tools")
        if not isinstance(raw_tools, list) or not raw_tools:
            raise BedrockValidationError("toolConfig.tools must be a non-empty list.")
        tools: list[dict[str, Any]] = []
        for j, item in enumerate(raw_tools):
            kind, value = _union(item, ("toolSpec", "systemTool", "cachePoint"), f"toolConfig.tools.{j}")
            if kind == "cachePoint":
                _mark_previous(tools, value, f"toolConfig.tools.{j}")
                continue
            spec = _obj(value, f"toolConfig.tools.{j}.{kind}")
            if not isinstance(spec.get("name"), str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", spec["name"]):
                raise BedrockValidationError(f"toolConfig.tools.{j}.{kind}.name must match [a-zA-Z0-9_-]{{1,64}}.")
            tool: dict[str, Any] = {"name": spec["name"], "input_schema": {"type": "object"}}
            if kind == "toolSpec":
                schema_kind, schema = _union(spec.get("inputSchema"), ("json",), f"toolConfig.tools.{j}.inputSchema")
                tool["input_schema"] = _obj(schema, f"toolConfig.tools.{j}.toolSpec.inputSchema.{schema_kind}")
                if isinstance(spec.get("description"), str):
                    tool["description"] = spec["description"]
            tools.append(tool)
        if tools:
            payload["tools"] = tools
        if "toolChoice" in tool_config:
            kind, value = _union(tool_config["toolChoice"], ("auto", "any", "tool"), "toolConfig.toolChoice")
            choice: dict[str, Any] = {"type": kind}
            if kind == "tool":
                choice["name"] = _obj(value, "toolConfig.toolChoice.tool").get("name")
            payload["tool_choice"] = choice

    extra = _obj(body.get("additionalModelRequestFields", {}), "additionalModelRequestFields")
    thinking = extra.get("thinking", extra.get("reasoning_config"))
    if thinking is not None:
        payload["thinking"] = thinking
    if "top_k" in extra:
        payload["top_k"] = extra["top_k"]
    return payload


def converse_input_tokens(body: Any, model_id: str = "anthropic.claude-3-7-sonnet-20250219-v1:0") -> int:
    """What ``inputTokens + cacheReadInputTokens + cacheWriteInputTokens`` adds up to for a Converse body."""
    return count_input_tokens(converse_to_messages(body, model_id))


def converse_reply_text(body: Any) -> str:
    """The text block the fake answers a Converse body with (before ``maxTokens`` / ``stopSequences`` cuts)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    anthropic_messages: list[dict[str, Any]] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        blocks: list[dict[str, Any]] = []
        for block in message.get("content") or []:
            with contextlib.suppress(BedrockValidationError, KeyError, TypeError):
                converted = _content_block(block, "content")
                if converted is not None:
                    blocks.append(converted)
        anthropic_messages.append({"role": message.get("role"), "content": blocks})
    source = last_user_text(anthropic_messages)
    return f"echo: {source}" if source else "echo:"


# -- responses ---------------------------------------------------------------------------------------------


def _request_id() -> str:
    return str(uuid.uuid4())


def _error(status: int, name: str, message: str, extra: dict[str, Any] | None = None) -> web.Response:
    """A Bedrock (rest-json) error: ``{"message": ...}`` with ``x-amzn-ErrorType: <name>``."""
    return web.Response(
        status=status,
        body=_dumps({"message": message, **(extra or {})}),
        content_type="application/json",
        headers={"x-amzn-RequestId": _request_id(), "x-amzn-ErrorType": name},
    )


def _invalid(message: str) -> web.Response:
    return _error(400, "ValidationException", message)


def _status_fault(status: int, model_id: str) -> web.Response:
    if status in _STATUS_EXCEPTION:
        name, message = _STATUS_EXCEPTION[status]
    else:
        name = "InternalServerException" if status >= 500 else "ValidationException"
        message = f"Injected fault: HTTP {status}."
    extra = {"originalStatusCode": 500, "resourceName": model_id} if name == "ModelErrorException" else None
    return _error(status, name, message, extra)


def _converse_content(plan: _Plan) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in plan.content:
        kind = block["type"]
        if kind == "thinking":
            reasoning = {"text": block["thinking"], "signature": block["signature"]}
            out.append({"reasoningContent": {"reasoningText": reasoning}})
        elif kind == "text":
            out.append({"text": block["text"]})
        elif kind == "tool_use":
            out.append({"toolUse": {"toolUseId": TOOL_USE_ID, "name": block["name"], "input": block["input"]}})
    return out


def _converse_usage(plan: _Plan) -> dict[str, Any]:
    # Our reading of the Bedrock docs (the wire-formats reference marks it UNVERIFIED): like Anthropic's
    # input_tokens, inputTokens excludes the cache reads and writes, which are reported separately; totalTokens
    # is everything (input + cache read + cache write + output).
    read, write = plan.cache_read_input_tokens, plan.cache_creation_input_tokens
    usage: dict[str, Any] = {
        "inputTokens": plan.input_tokens,
        "outputTokens": plan.output_tokens,
        "totalTokens": plan.input_tokens + read + write + plan.output_tokens,
        "cacheReadInputTokens": read,
        "cacheWriteInputTokens": write,
    }
    if write:
        usage["cacheDetails"] = [{"ttl": "1h" if plan.cache_creation_1h else "5m", "inputTokens": write}]
    return usage


def _converse_stream_events(plan: _Plan, latency_ms: int) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    for index, block in enumerate(_converse_content(plan)):
        deltas: list[dict[str, Any]] = []
        if "reasoningContent" in block:
            reasoning = block["reasoningContent"]["reasoningText"]
            deltas = [{"reasoningContent": {"text": p}} for p in _pieces(reasoning["text"])]
            deltas.append({"reasoningContent": {"signature": reasoning["signature"]}})
        elif "text" in block:
            deltas = [{"text": p} for p in _pieces(block["text"])]
        else:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            events.append(("contentBlockStart", {"start": start, "contentBlockIndex": index}))
            fragments = _ARG_PIECES.findall(json.dumps(use["input"]))
            deltas = [{"toolUse": {"input": f}} for f in fragments]
        events.extend(("contentBlockDelta", {"delta": d, "contentBlockIndex": index}) for d in deltas)
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
    events.append(("messageStop", {"stopReason": plan.stop_reason}))
    events.append(("metadata", {"usage": _converse_usage(plan), "metrics": {"latencyMs": latency_ms}}))
    return events


def _anthropic_events(plan: _Plan, model_name: str, message_id: str) -> list[dict[str, Any]]:
    """The Anthropic stream events of a reply (the Anthropic fake's, minus ``ping``), as JSON objects."""
    events: list[dict[str, Any]] = []
    for sse in _sse_events(plan, model_name):
        event = json.loads(sse.split(b"\ndata: ", 1)[1])
        if event["type"] == "ping":
            continue
        if event["type"] == "message_start":
            event["message"]["id"] = message_id
        events.append(event)
    return events


def _new_message_id() -> str:
    return "msg_bdrk_01" + uuid.uuid4().hex[:22]


def _parse_amz_date(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


class _ReceivedRequestSigV4(SigV4Auth):  # type: ignore[misc]  # botocore ships no type hints
    """botocore's SigV4 over exactly the headers the client listed in ``SignedHeaders`` (botocore's own
    selection drops a few names, e.g. ``user-agent``, which a server must still honour when a client signs them)."""

    def __init__(self, credentials: Credentials, region: str, signed: list[str]) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                headers[name] = value
        return headers


@dataclass
class _Auth:
    """The parsed ``Authorization`` header."""

    access_key: str
    date: str
    region: str
    service: str
    signed: list[str]
    signature: str


class FakeBedrock(FakeServer):
    """Fake Bedrock Runtime upstream on 127.0.0.1 (see the module docstring for routes and faults).

    ``url`` is the endpoint URL (``endpoint_url`` for boto3). Usage::

        with FakeBedrock() as fake:
            client = boto3.client(
                "bedrock-runtime", region_name=fake.region, endpoint_url=fake.url,
                aws_access_key_id=fake.access_key, aws_secret_access_key=fake.secret_key,
            )
            client.converse(modelId="us.anthropic.claude-3-7-sonnet-20250219-v1:0", messages=[...])
    """

    def __init__(
        self,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        region: str = DEFAULT_REGION,
        *,
        session_token: str | None = None,
        api_key: str | None = None,
        padding: bool = True,
    ) -> None:
        super().__init__()
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.session_token = session_token
        self.api_key = api_key
        self.padding = padding
        self._engine = FakeAnthropic(api_key=None)  # never started: used for its reply planner and prompt cache

    def clear_cache(self) -> None:
        """Forget every cached prompt prefix: the next request with a cache point writes the cache again.

        (:meth:`clear` forgets only the recorded requests and keeps the prompt cache.)
        """
        self._engine.clear_cache()

    # -- request handling ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request[_STARTED] = time.monotonic()  # latencyMs counts from arrival, before the body is read
        return await super()._handle(request)

    @staticmethod
    def _recorded_path(request: web.Request) -> str:
        """The *raw* path, percent-encoding as sent (not aiohttp's decoded ``request.path``)."""
        return request.raw_path.split("?", 1)[0]

    async def _dispatch(self, request: web.Request, recorded: RecordedRequest, *, bad_json: bool) -> web.StreamResponse:
        raw_path, payload = recorded.path, recorded.json
        route = _ROUTE.match(raw_path)
        if route is None or request.method != "POST":
            return _error(404, "UnknownOperationException", "Unknown operation: " + f"{request.method} {raw_path}")
        denied = self._authenticate(request, recorded.body)
        if denied is not None:
            return denied
        model_id = unquote(route["model"])
        operation = route["op"]
        stream = operation.endswith("stream")

        fault, value = parse_fault(model_id)
        if fault == "status":
            return _status_fault(value, model_id)
        if fault == "notready":
            return _error(429, "ModelNotReadyException", "Model is not ready to serve inference requests.")
        if fault == "slow":
            await asyncio.sleep(value / 1000)
        elif fault == "drop":
            return self._abort(request)
        elif fault == "streamerror" and not stream:
            return _status_fault(429, model_id)

        if operation == "count-tokens":
            return self._count_tokens(payload, model_id)
        if bad_json or not isinstance(payload, dict):
            if operation.startswith("invoke"):
                return _invalid("Malformed input request, please reformat your input and try again.")
            return _invalid("The request body must be a JSON object.")
        try:
            if operation.startswith("converse"):
                anthropic_payload = converse_to_messages(payload, model_id)
            else:
                anthropic_payload = self._invoke_payload(payload, model_id)
            try:
                messages, thinking_on = _validate(anthropic_payload, count_tokens=False)
            except _BadRequest as exc:
                prefix = _MODEL_ERRORS if operation.startswith("converse") else ""
                raise BedrockValidationError(prefix + str(exc)) from None
        except BedrockValidationError as exc:
            return _invalid(str(exc))
        plan = self._engine._plan(anthropic_payload, model_id, messages, thinking_on)
        latency = max(1, int((time.monotonic() - request[_STARTED]) * 1000))

        if operation == "converse":
            reply = {
                "output": {"message": {"role": "assistant", "content": _converse_content(plan)}},
                "stopReason": plan.stop_reason,
                "usage": _converse_usage(plan),
                "metrics": {"latencyMs": latency},
            }
            return await self._json(request, reply, fault, {})
        model_name = claude_model_name(model_id)
        message_id = _new_message_id()
        if operation == "invoke":
            headers = {
                "X-Amzn-Bedrock-Input-Token-Count": str(plan.input_tokens),
                "X-Amzn-Bedrock-Output-Token-Count": str(plan.output_tokens),
                "X-Amzn-Bedrock-Invocation-Latency": str(latency),
                "X-Amzn-Bedrock-Cache-Read-Input-Token-Count": str(plan.cache_read_input_tokens),
                "X-Amzn-Bedrock-Cache-Write-Input-Token-Count": str(plan.cache_creation_input_tokens),
            }
            return await self._json(request, plan.message(model_name, message_id), fault, headers)
        if operation == "converse-stream":
            frames = [
                self._event(name, data, i) for i, (name, data) in enumerate(_converse_stream_events(plan, latency))
            ]
            return await self._stream(request, frames, fault, value, {})
        events = _anthropic_events(plan, model_name, message_id)
        events[-1]["amazon-bedrock-invocationMetrics"] = {  # field set UNVERIFIED (see the wire-formats reference)
            "inputTokenCount": plan.input_tokens,
            "outputTokenCount": plan.output_tokens,
            "invocationLatency": latency,
            "firstByteLatency": latency,
        }
        frames = [
            self._event("chunk", {"bytes": base64.b64encode(_dumps(event)).decode()}, i)
            for i, event in enumerate(events)
        ]
        return await self._stream(request, frames, fault, value, {"X-Amzn-Bedrock-Content-Type": "application/json"})

    def _count_tokens(self, payload: Any, model_id: str) -> web.Response:
        """CountTokens: ``{"input": {"converse": {...}} | {"invokeModel": {"body": base64}}}`` → ``inputTokens``."""
        given = payload.get("input") if isinstance(payload, dict) else None
        try:
            if isinstance(given, dict) and isinstance(given.get("converse"), dict):
                anthropic_payload = converse_to_messages(given["converse"], model_id)
            elif isinstance(given, dict) and isinstance(given.get("invokeModel"), dict):
                body = json.loads(base64.b64decode(given["invokeModel"].get("body", "")))
                anthropic_payload = self._invoke_payload(body, model_id)
            else:
                return _invalid("input: exactly one of converse or invokeModel is required")
        except (BedrockValidationError, ValueError) as exc:
            return _invalid(str(exc))
        return web.json_response({"inputTokens": count_input_tokens(anthropic_payload)})

    @staticmethod
    def _invoke_payload(payload: dict[str, Any], model_id: str) -> dict[str, Any]:
        """Check a Claude InvokeModel body and turn it into an Anthropic Messages body (``model`` added)."""
        for key in payload:
            if key not in _INVOKE_FIELDS:
                raise BedrockValidationError(
                    f"Malformed input request: #: extraneous key [{key}] is not permitted, please reformat your input "
                    "and try again."
                )
        if "anthropic_version" not in payload:
            raise BedrockValidationError(
                "Malformed input request: #: required key [anthropic_version] not found, please reformat your input "
                "and try again."
            )
        if payload["anthropic_version"] != ANTHROPIC_VERSION:
            raise BedrockValidationError(
                f"Malformed input request: #/anthropic_version: {payload['anthropic_version']!r} is not a supported "
                f"version (expected {ANTHROPIC_VERSION!r}), please reformat your input and try again."
            )
        beta = payload.get("anthropic_beta")
        if beta is not None and (not isinstance(beta, list) or not all(isinstance(b, str) for b in beta)):
            raise BedrockValidationError(
                "Malformed input request: #/anthropic_beta: expected type: JSONArray of strings, please reformat your "
                "input and try again."
            )
        body = {k: v for k, v in payload.items() if k not in ("anthropic_version", "anthropic_beta")}
        return {"model": claude_model_name(model_id), **body}

    def _event(self, event_type: str, payload: dict[str, Any], index: int) -> bytes:
        if self.padding:
            payload = {**payload, "p": _PADDING[: 1 + (index * 7) % len(_PADDING)]}
        return encode_event(event_type, payload)

    async def _json(
        self, request: web.Request, reply: dict[str, Any], fault: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        data = _dumps(reply)
        all_headers = {"x-amzn-RequestId": _request_id(), **headers}
        if fault == "dropmidstream":
            return await self._send_half_then_abort(request, data, all_headers)
        return web.Response(status=200, body=data, content_type="application/json", headers=all_headers)

    async def _stream(
        self, request: web.Request, frames: list[bytes], fault: str, value: int, headers: dict[str, str]
    ) -> web.StreamResponse:
        if fault == "streamerror":
            frames = [frames[0], encode_exception("throttlingException", _STATUS_EXCEPTION[429][1])]
        elif fault == "badcrc":
            frames = [frames[0], _corrupt_crc(frames[1]), *frames[2:]]
        resp = web.StreamResponse(status=200, headers={"x-amzn-RequestId": _request_id(), **headers})
        resp.content_type = EVENT_STREAM_CONTENT_TYPE
        await resp.prepare(request)
        for i, frame in enumerate(frames):
            if fault == "dropmidstream" and i == 2:
                await asyncio.sleep(0.05)  # let the two frames leave before the connection is torn down
                return self._abort(request)
            if fault == "slowstream" and i > 0:
                await asyncio.sleep(value / 1000)
            await resp.write(frame)
        await resp.write_eof()
        return resp

    # -- authentication --------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request, body: bytes) -> web.Response | None:
        """None when the request is correctly SigV4-signed (or carries the API key), else the 403/400 error."""
        header = request.headers.get("Authorization")
        if header is None:
            return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        if header[:7].lower() == "bearer ":
            if self.api_key is not None and hmac.compare_digest(header[7:].strip(), self.api_key):
                return None
            return _error(403, "UnrecognizedClientException", "Invalid API Key format: Must be a valid API key.")
        auth = self._parse_authorization(header)
        if isinstance(auth, web.Response):
            return auth
        if auth.access_key != self.access_key:
            return _error(403, "UnrecognizedClientException", _BAD_TOKEN)
        token = request.headers.get("X-Amz-Security-Token")
        if self.session_token is None:
            token_ok = token is None
        else:
            token_ok = token is not None and hmac.compare_digest(token, self.session_token)
        if not token_ok:
            return _error(403, "UnrecognizedClientException", _BAD_TOKEN)
        if auth.service != SERVICE:
            return _error(
                403, "InvalidSignatureException", f"Credential should be scoped to correct service: '{SERVICE}'. "
            )
        if auth.region != self.region:
            return _error(403, "InvalidSignatureException", "Credential should be scoped to a valid region. ")
        if "host" not in auth.signed:
            return _error(
                403,
                "InvalidSignatureException",
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            )
        amz_date = request.headers.get("X-Amz-Date")
        if amz_date is None and "Date" in request.headers:
            with contextlib.suppress(TypeError, ValueError):
                amz_date = email.utils.parsedate_to_datetime(request.headers["Date"]).strftime("%Y%m%dT%H%M%SZ")
        when = _parse_amz_date(amz_date) if amz_date else None
        if amz_date is None or when is None:
            return _error(
                400,
                "IncompleteSignatureException",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            )
        now = dt.datetime.now(dt.UTC)
        stamp = "%Y%m%dT%H%M%SZ"
        if when < now - MAX_CLOCK_SKEW:
            earliest = (now - MAX_CLOCK_SKEW).strftime(stamp)
            return _error(
                403,
                "InvalidSignatureException",
                f"Signature expired: {amz_date} is now earlier than {earliest} ({now.strftime(stamp)} - 5 min.)",
            )
        if when > now + MAX_CLOCK_SKEW:
            latest = (now + MAX_CLOCK_SKEW).strftime(stamp)
            return _error(
                403,
                "InvalidSignatureException",
                f"Signature not yet current: {amz_date} is still later than {latest} ({now.strftime(stamp)} + 5 min.)",
            )
        if auth.date != amz_date[:8]:
            return _error(
                403,
                "InvalidSignatureException",
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{auth.date}' != '{amz_date[:8]}', from '{amz_date}'.",
            )
        declared_hash = request.headers.get("X-Amz-Content-SHA256")
        if declared_hash not in (None, "UNSIGNED-PAYLOAD") and declared_hash != hashlib.sha256(body).hexdigest():
            return _error(
                400,
                "InvalidSignatureException",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )

        # Recompute the signature with botocore from what was received: method, path as sent, query, the signed
        # headers (values as received), the body, the fake's credentials and the request's own timestamp.
        headers: dict[str, str] = {}
        for name in auth.signed:
            values = request.headers.getall(name, [])
            if values:
                headers[name] = ",".join(values)
        aws_request = AWSRequest(
            method=request.method,
            url=f"http://{request.headers.get('Host', request.host)}{request.raw_path}",
            headers=headers,
            data=body,
        )
        aws_request.context["timestamp"] = amz_date
        credentials = Credentials(self.access_key, self.secret_key, self.session_token)
        signer = _ReceivedRequestSigV4(credentials, auth.region, auth.signed)
        canonical = signer.canonical_request(aws_request)
        string_to_sign = signer.string_to_sign(aws_request, canonical)
        expected = signer.signature(string_to_sign, aws_request)
        if not hmac.compare_digest(expected, auth.signature.lower()):
            message = (
                f"{_SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n'{canonical}'\n\n"
                f"The String-to-Sign should have been\n'{string_to_sign}'\n"
            )
            return _error(403, "InvalidSignatureException", message)
        return None

    @staticmethod
    def _parse_authorization(header: str) -> _Auth | web.Response:
        m = _AUTH.match(header.strip())
        if m is None:
            return _error(
                400,
                "IncompleteSignatureException",
                f"Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters "
                f"(AWS4-HMAC-SHA256). Authorization={header.split(' ', 1)[0]}",
            )
        parts = m["credential"].split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            return _error(
                400,
                "IncompleteSignatureException",
                f"Credential should be scoped to a valid region, not '{m['credential']}'. "
                "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term.",
            )
        return _Auth(
            access_key=parts[0],
            date=parts[1],
            region=parts[2],
            service=parts[3],
            signed=m["signed"].lower().split(";"),
            signature=m["signature"],
        )
