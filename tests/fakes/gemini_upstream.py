"""A fake Google Gemini API (AI Studio, ``v1beta``) upstream speaking the real wire format over loopback HTTP.

``FakeGemini`` runs an aiohttp.web server on 127.0.0.1 in a background thread with its own event loop (see
:class:`~tests.fakes.server.FakeServer`), so synchronous pytest tests can point a gateway at ``fake.url`` (the base
URL without ``/v1beta``).

Routes (``v1`` is accepted as well as ``v1beta``; anything else is 404 ``NOT_FOUND``):

* ``POST /v1beta/models/{model}:generateContent`` -- one ``GenerateContentResponse``.
* ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` -- ``text/event-stream``, one
  ``data: <GenerateContentResponse>\\r\\n\\r\\n`` event per chunk (CRLF like the real API) and *no* ``[DONE]``
  sentinel: the stream just ends. Without ``alt=sse`` the chunks come as one streamed JSON array, like the real API.
* ``POST /v1beta/models/{model}:countTokens`` -- ``{"totalTokens": N, "promptTokensDetails": [...]}`` for
  ``contents`` or a whole ``generateContentRequest`` (see :func:`count_tokens`).

Auth: the ``x-goog-api-key`` header must equal the key. A ``?key=`` query parameter is accepted too (the real API
does) but it is recorded like everything else, so a test can assert a gateway never puts the key in a URL (see
:meth:`FakeGemini.requests_with_key_in_url`). A wrong or missing key is 400 ``INVALID_ARGUMENT`` /
``API_KEY_INVALID`` (the real API answers a *missing* key with 403 ``PERMISSION_DENIED``; this fake uses 400 for both).

Replies are deterministic:

* text ``"echo: <last user text>"`` (see :func:`last_user_text`; a ``functionResponse`` part reads as
  ``"tool said: <compact JSON of its response>"``), or ``{"echo": "<last user text>"}`` with
  ``generationConfig.responseMimeType: application/json``; ``stopSequences`` cut it (``STOP``) and a
  ``maxOutputTokens`` smaller than its word count truncates it (``MAX_TOKENS``);
* a ``functionCall`` part ``{"name": <first declared function>, "args": {"x": 1}}`` instead of text when
  ``tools[].functionDeclarations`` are given, the last content is a user turn without ``functionResponse`` and
  ``toolConfig.functionCallingConfig.mode`` is not ``NONE`` (``ANY`` + ``allowedFunctionNames`` picks the first
  allowed name). The part carries ``"thoughtSignature": thought_signature_for(name)``; ``finishReason`` is ``STOP``;
* thinking is on when ``generationConfig.thinkingConfig`` has a non-zero ``thinkingBudget`` (``-1`` = dynamic) or a
  ``thinkingLevel``: ``usageMetadata.thoughtsTokenCount`` is then reported, and with ``includeThoughts: true`` the
  reply starts with a part ``{"text": "Let me think about: <last user text>", "thought": true}``.

The body is validated like the real API (proto3 JSON: camelCase *and* snake_case field names are accepted):
unknown fields anywhere in the known messages (400 ``Invalid JSON payload received. Unknown name "<f>"...``),
mistyped values, empty ``contents`` / ``parts``, roles other than ``user`` / ``model``, parts without exactly one
data field, function names, ``thinkingBudget`` together with ``thinkingLevel``, ``cachedContent`` together with
``systemInstruction`` / ``tools`` / ``toolConfig``, and the function-calling turn rules:

* a ``functionCall`` turn must be a ``model`` turn right after a ``user`` turn;
* a ``functionResponse`` turn must come right after a ``functionCall`` turn, with as many responses as calls and
  every response naming one of those calls;
* the first ``functionCall`` part of every ``model`` turn must carry the ``thoughtSignature`` the fake issued for it
  (missing: the real "Function call is missing a thought_signature in functionCall parts..." 400; different:
  400 "Corrupted thought signature."). Google's documented dummy signatures (:data:`SKIP_THOUGHT_SIGNATURES`) pass.
  Like the real API, only the first call of a turn (of parallel calls) is checked.

Usage: ``promptTokenCount`` is :func:`count_tokens` of the request (words; 258 per ``inlineData`` / ``fileData``
part; plus :data:`CACHED_CONTENT_TOKENS` when ``cachedContent`` is set, then also reported as
``cachedContentTokenCount``); ``candidatesTokenCount`` the words of the reply text (or of the function call);
``thoughtsTokenCount`` the words of the thought text; ``totalTokenCount`` their sum. Counts that are zero are
omitted, as proto3 JSON does. Streamed chunks carry cumulative ``usageMetadata`` on every chunk and
``finishReason`` only on the last one.

Errors use Google's shape ``{"error": {"code", "message", "status", "details"?}}``. Faults are selected by the model
name in the path, see :data:`FAULTS`. Every request is recorded in ``FakeGemini.requests`` (a list of
:class:`~tests.fakes.server.RecordedRequest`; ``query`` holds the query parameters) before it is answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .server import FakeServer, RecordedRequest

__all__ = [
    "API_KEY_INVALID_MESSAGE",
    "CACHED_CONTENT_TOKENS",
    "DEFAULT_API_KEY",
    "FAULTS",
    "FUNCTION_CALL_ARGS",
    "IMAGE_TOKENS",
    "MISSING_SIGNATURE_MESSAGE",
    "SKIP_THOUGHT_SIGNATURES",
    "FakeGemini",
    "RecordedRequest",
    "count_tokens",
    "last_user_text",
    "parse_fault",
    "thought_signature_for",
]

DEFAULT_API_KEY = "AIza-fake-gemini-canary-0042"
API_KEY_INVALID_MESSAGE = "API key not valid. Please pass a valid API key."
MISSING_SIGNATURE_MESSAGE = "Function call is missing a thought_signature in functionCall parts."
#: The ``args`` of every function call the fake makes.
FUNCTION_CALL_ARGS: dict[str, Any] = {"x": 1}
#: Tokens a ``cachedContent`` reference adds to ``promptTokenCount`` (and reports as ``cachedContentTokenCount``).
CACHED_CONTENT_TOKENS = 32
#: Tokens of one ``inlineData`` / ``fileData`` part (what the real API charges for a small image).
IMAGE_TOKENS = 258
#: Dummy signatures Google documents for function calls that did not come from Gemini; they pass validation.
SKIP_THOUGHT_SIGNATURES: frozenset[str] = frozenset(
    {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
)

#: Fault model names understood by the fake (``<n>`` is an integer).
FAULTS: tuple[str, ...] = (
    "fault-status-<code>",  # that HTTP status with Google's error body (429 RESOURCE_EXHAUSTED, 500 INTERNAL, ...)
    "fault-slow-<ms>",  # wait <ms> before responding (before headers when streaming)
    "fault-slowstream-<ms>",  # stream: headers + first chunk at once, then <ms> between later chunks
    "fault-drop",  # abort the connection without any response
    "fault-dropmidstream",  # stream: 2 chunks (fewer if short) then abort; non-stream: half a JSON body, then abort
    "fault-safety",  # 200, one candidate with finishReason SAFETY and no content (stream: that single chunk)
    "fault-blocked",  # 200, no candidates, promptFeedback.blockReason SAFETY (stream: that single chunk)
    "fault-streamerror",  # stream: one chunk then a `data: {"error": {...}}` chunk (503); non-stream: 503
    "fault-badjson",  # 200, content-type application/json, invalid body
)

_FAULT = re.compile(
    r"^fault-(?:(?P<kind>status|slow|slowstream)-(?P<value>\d+)"
    r"|(?P<bare>drop|dropmidstream|safety|blocked|streamerror|badjson))$"
)
_ROUTE = re.compile(
    r"^/(?P<version>v1beta|v1)/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent|countTokens)$"
)
_WORD_PIECES = re.compile(r"(?<=\S)(?=\s)")
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*$")
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta."
_STRUCT = "type.googleapis.com/google.protobuf.Struct"

_STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

#: The fields (camelCase) of each request message the fake validates; free-form ``Struct`` values are not checked.
_FIELDS: dict[str, frozenset[str]] = {
    "GenerateContentRequest": frozenset(
        {
            "model",
            "contents",
            "systemInstruction",
            "tools",
            "toolConfig",
            "safetySettings",
            "generationConfig",
            "cachedContent",
        }
    ),
    "CountTokensRequest": frozenset({"contents", "generateContentRequest"}),
    "Content": frozenset({"role", "parts"}),
    "Part": frozenset(
        {
            "text",
            "inlineData",
            "fileData",
            "functionCall",
            "functionResponse",
            "executableCode",
            "codeExecutionResult",
            "thought",
            "thoughtSignature",
            "videoMetadata",
            "partMetadata",
            "mediaResolution",
        }
    ),
    "Blob": frozenset({"mimeType", "data"}),
    "FileData": frozenset({"mimeType", "fileUri"}),
    "FunctionCall": frozenset({"id", "name", "args"}),
    "FunctionResponse": frozenset({"id", "name", "response", "parts", "willContinue", "scheduling"}),
    "Tool": frozenset(
        {
            "functionDeclarations",
            "googleSearchRetrieval",
            "codeExecution",
            "googleSearch",
            "computerUse",
            "urlContext",
            "fileSearch",
            "googleMaps",
        }
    ),
    "FunctionDeclaration": frozenset(
        {"name", "description", "behavior", "parameters", "parametersJsonSchema", "response", "responseJsonSchema"}
    ),
    "ToolConfig": frozenset({"functionCallingConfig", "retrievalConfig"}),
    "FunctionCallingConfig": frozenset({"mode", "allowedFunctionNames"}),
    "GenerationConfig": frozenset(
        {
            "stopSequences",
            "responseMimeType",
            "responseSchema",
            "responseJsonSchema",
            "responseModalities",
            "candidateCount",
            "maxOutputTokens",
            "temperature",
            "topP",
            "topK",
            "seed",
            "presencePenalty",
            "frequencyPenalty",
            "responseLogprobs",
            "logprobs",
            "enableEnhancedCivicAnswers",
            "speechConfig",
            "thinkingConfig",
            "imageConfig",
            "mediaResolution",
        }
    ),
    "ThinkingConfig": frozenset({"includeThoughts", "thinkingBudget", "thinkingLevel"}),
}
_PART_DATA: tuple[str, ...] = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_FUNCTION_CALLING_MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
_THINKING_LEVELS = frozenset({"THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH"})
_RESPONSE_MIME_TYPES = frozenset(
    {"text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"}
)
_SAFETY_RATINGS: list[dict[str, Any]] = [
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
]


class _BadRequest(ValueError):
    """A validation failure: answered with 400 ``INVALID_ARGUMENT``, this message and optional details."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


# -- public helpers --------------------------------------------------------------------------------------


def thought_signature_for(name: str) -> str:
    """The opaque (base64) ``thoughtSignature`` the fake puts on -- and expects back on -- a call of ``name``."""
    return base64.b64encode(b"fake-gemini-sig\x00" + hashlib.sha256(name.encode()).digest()[:24]).decode()


def parse_fault(model: str) -> tuple[str, int]:
    """Return ``(kind, value)`` for a fault model name, ``("", 0)`` for a normal model."""
    m = _FAULT.match(model)
    if m is None:
        return "", 0
    if m["bare"]:
        return m["bare"], 0
    return m["kind"], int(m["value"])


def last_user_text(contents: Any) -> str:
    """Text of the last ``user`` content (``role`` missing means ``user``): its text parts joined by spaces, where
    a ``functionResponse`` part reads as ``"tool said: <compact JSON of its response>"``. Accepts camelCase and
    snake_case part fields; ``""`` when there is no user content."""
    if not isinstance(contents, list):
        return ""
    for content in reversed(contents):
        if not isinstance(content, dict) or content.get("role", "user") not in ("user", "", None):
            continue
        parts = content.get("parts")
        texts: list[str] = []
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
            response = _field(part, "functionResponse")
            if isinstance(response, dict):
                texts.append("tool said: " + _compact(response.get("response", {})))
        return " ".join(texts)
    return ""


def count_tokens(payload: dict[str, Any]) -> int:
    """Prompt tokens of a ``GenerateContentRequest`` body (or of a ``countTokens`` body): the words of the text
    parts, function calls and responses (name + compact JSON) of ``systemInstruction`` and ``contents``,
    :data:`IMAGE_TOKENS` per ``inlineData`` / ``fileData`` part, the words of each function declaration's name and
    description, plus :data:`CACHED_CONTENT_TOKENS` with ``cachedContent``. This is ``promptTokenCount`` in a reply
    and ``totalTokens`` from ``countTokens``. Raises ``ValueError`` when the body is invalid."""
    if "generateContentRequest" in payload or "generate_content_request" in payload or set(payload) <= {"contents"}:
        text, image = _count(_validate_count(payload))
    else:
        text, image = _count(_validate_generate(payload))
    return text + image


# -- small helpers ---------------------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _field(obj: dict[str, Any], camel: str) -> Any:
    return obj[camel] if camel in obj else obj.get(_snake(camel))


def _compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _words(text: str) -> int:
    return len(text.split())


def _pieces(text: str) -> list[str]:
    """Split text into word pieces whose concatenation is the text ("a b" -> ["a", " b"])."""
    return [p for p in _WORD_PIECES.split(text) if p]


def _dumps(obj: Any, *, pretty: bool = False) -> bytes:
    if pretty:  # Google pretty-prints JSON bodies
        return json.dumps(obj, ensure_ascii=False, indent=2).encode()
    return _compact(obj).encode()


def _response_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_base64(value: str) -> bool:
    stripped = value.rstrip("=")
    return bool(_BASE64.match(stripped)) and len(stripped) % 4 != 1


# -- validation ------------------------------------------------------------------------------------------


def _violation(path: str, message: str) -> list[dict[str, Any]]:
    violation = {"field": path, "description": message} if path else {"description": message}
    return [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}]


def _unknown(name: str, path: str) -> _BadRequest:
    where = f" at '{path}'" if path else ""
    message = f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.'
    return _BadRequest(message, _violation(path, message))


def _invalid(path: str, type_name: str, value: Any) -> _BadRequest:
    message = f"Invalid value at '{path}' ({type_name}), {json.dumps(value, ensure_ascii=False)}"
    return _BadRequest(message, _violation(path, message))


def _obj(value: Any, message: str, path: str) -> dict[str, Any]:
    """Check one proto message: a JSON object with known field names; returns it with camelCase keys."""
    if not isinstance(value, dict):
        raise _invalid(path, _TYPE + message, value)
    allowed = _FIELDS[message]
    out: dict[str, Any] = {}
    for key, item in value.items():
        camel = _camel(key)
        if camel not in allowed:
            raise _unknown(key, path)
        out[camel] = item
    return out


def _list(value: Any, type_name: str, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(path, type_name, value)
    return value


def _check_type(obj: dict[str, Any], name: str, path: str, kind: str) -> None:
    """Check the scalar ``obj[name]`` (if present) is of proto type ``kind``."""
    if name not in obj or obj[name] is None:
        return
    value = obj[name]
    ok = {
        "TYPE_STRING": isinstance(value, str),
        "TYPE_BOOL": isinstance(value, bool),
        "TYPE_INT32": isinstance(value, int) and not isinstance(value, bool),
        "TYPE_FLOAT": isinstance(value, int | float) and not isinstance(value, bool),
        "TYPE_BYTES": isinstance(value, str),
    }[kind]
    field_path = _join(path, _snake(name))
    if not ok:
        raise _invalid(field_path, kind, value)
    if kind == "TYPE_BYTES" and not _is_base64(value):
        message = f"Invalid value at '{field_path}' (TYPE_BYTES), Base64 decoding failed for \"{value}\""
        raise _BadRequest(message, _violation(field_path, message))


def _required(owner: str, path: str, text: str) -> _BadRequest:
    return _BadRequest(f"* {owner}.{path}: {text}\n")


def _part(value: Any, owner: str, path: str) -> dict[str, Any]:
    part = _obj(value, "Part", path)
    data = [key for key in part if key in _PART_DATA and part[key] is not None]
    if not data:
        raise _required(owner, f"{path}.data", "required oneof field 'data' must have one initialized field")
    if len(data) > 1:
        raise _BadRequest(
            f"Invalid JSON payload received. Oneof field 'data' is already set. Cannot set '{_snake(data[1])}'"
        )
    kind = data[0]
    _check_type(part, "text", path, "TYPE_STRING")
    _check_type(part, "thought", path, "TYPE_BOOL")
    _check_type(part, "thoughtSignature", path, "TYPE_BYTES")
    sub = _join(path, _snake(kind))
    if kind == "inlineData":
        blob = part[kind] = _obj(part[kind], "Blob", sub)
        _check_type(blob, "mimeType", sub, "TYPE_STRING")
        _check_type(blob, "data", sub, "TYPE_BYTES")
    elif kind == "fileData":
        file_data = part[kind] = _obj(part[kind], "FileData", sub)
        _check_type(file_data, "mimeType", sub, "TYPE_STRING")
        _check_type(file_data, "fileUri", sub, "TYPE_STRING")
        if not file_data.get("fileUri"):
            raise _required(owner, f"{sub}.file_uri", "file_uri must not be empty.")
    elif kind in ("functionCall", "functionResponse"):
        call = part[kind] = _obj(part[kind], "FunctionCall" if kind == "functionCall" else "FunctionResponse", sub)
        _check_type(call, "id", sub, "TYPE_STRING")
        _check_type(call, "name", sub, "TYPE_STRING")
        if not call.get("name"):
            raise _required(owner, f"{sub}.name", "Name cannot be empty.")
        payload_field = "args" if kind == "functionCall" else "response"
        if call.get(payload_field) is not None and not isinstance(call[payload_field], dict):
            raise _invalid(f"{sub}.{payload_field}", _STRUCT, call[payload_field])
    elif kind != "text" and not isinstance(part[kind], dict):
        raise _invalid(sub, _TYPE + kind[:1].upper() + kind[1:], part[kind])
    return part


def _content(value: Any, owner: str, path: str, *, system: bool) -> dict[str, Any]:
    content = _obj(value, "Content", path)
    _check_type(content, "role", path, "TYPE_STRING")
    role = content.get("role") or "user"
    if not system and role not in ("user", "model"):
        raise _BadRequest("Please use a valid role: user, model.")
    parts = content.get("parts")
    if not parts:
        raise _required(owner, f"{path}.parts", "contents.parts must not be empty.")
    parts = _list(parts, _TYPE + "Part", f"{path}.parts")
    return {"role": role, "parts": [_part(p, owner, f"{path}.parts[{j}]") for j, p in enumerate(parts)]}


def _calls(content: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in content["parts"] if "functionCall" in p]


def _check_turns(contents: list[dict[str, Any]]) -> None:
    """The function-calling turn rules and the thought-signature check (see the module docstring)."""
    for i, content in enumerate(contents):
        calls = _calls(content)
        responses = [p["functionResponse"] for p in content["parts"] if "functionResponse" in p]
        if calls and (content["role"] != "model" or i == 0 or contents[i - 1]["role"] != "user"):
            raise _BadRequest(
                "Please ensure that function call turn comes immediately after a user turn or after a function "
                "response turn."
            )
        if responses:
            previous = contents[i - 1] if i > 0 else None
            call_names = [p["functionCall"]["name"] for p in _calls(previous)] if previous else []
            if content["role"] != "user" or previous is None or previous["role"] != "model" or not call_names:
                raise _BadRequest(
                    "Please ensure that function response turn comes immediately after a function call turn."
                )
            if len(responses) != len(call_names):
                raise _BadRequest(
                    "Please ensure that the number of function response parts is equal to the number of function "
                    "call parts of the function call turn."
                )
            for response in responses:
                if response["name"] not in call_names:
                    raise _BadRequest(
                        f"Function response name `{response['name']}` does not match any function call of the "
                        "preceding function call turn."
                    )
    for i, content in enumerate(contents):
        calls = _calls(content)
        if content["role"] != "model" or not calls:
            continue
        first = calls[0]
        name = first["functionCall"]["name"]
        signature = first.get("thoughtSignature")
        if not signature:
            raise _BadRequest(
                f"{MISSING_SIGNATURE_MESSAGE} This is required for tools to work correctly, and missing "
                "thought_signature may lead to degraded model performance. Additional data, function call "
                f"`default_api:{name}` , position {i + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )
        if signature not in SKIP_THOUGHT_SIGNATURES and signature != thought_signature_for(name):
            raise _BadRequest("Corrupted thought signature.")


def _contents(value: Any, owner: str, prefix: str) -> list[dict[str, Any]]:
    path = _join(prefix, "contents")
    if not value:
        raise _required(owner, path, "contents is not specified")
    items = _list(value, _TYPE + "Content", path)
    contents = [_content(c, owner, f"{path}[{i}]", system=False) for i, c in enumerate(items)]
    _check_turns(contents)
    return contents


def _tools(value: Any, owner: str, prefix: str) -> list[dict[str, Any]]:
    path = _join(prefix, "tools")
    tools: list[dict[str, Any]] = []
    for i, item in enumerate(_list(value, _TYPE + "Tool", path)):
        tool = _obj(item, "Tool", f"{path}[{i}]")
        if tool.get("functionDeclarations") is not None:
            decl_path = f"{path}[{i}].function_declarations"
            decls = _list(tool["functionDeclarations"], _TYPE + "FunctionDeclaration", decl_path)
            tool["functionDeclarations"] = []
            for j, raw_decl in enumerate(decls):
                decl = _obj(raw_decl, "FunctionDeclaration", f"{decl_path}[{j}]")
                _check_type(decl, "name", f"{decl_path}[{j}]", "TYPE_STRING")
                _check_type(decl, "description", f"{decl_path}[{j}]", "TYPE_STRING")
                name = decl.get("name") or ""
                if not name:
                    raise _required(owner, f"{decl_path}[{j}].name", "Name cannot be empty.")
                if not _FUNCTION_NAME.match(name):
                    raise _required(
                        owner,
                        f"{decl_path}[{j}].name",
                        "Invalid function name. Must start with a letter or an underscore. Must be a-z, A-Z, 0-9, "
                        "or contain underscores, dots, colons and dashes, with a maximum length of 64.",
                    )
                tool["functionDeclarations"].append(decl)
        tools.append(tool)
    return tools


def _tool_config(value: Any, prefix: str) -> dict[str, Any]:
    path = _join(prefix, "tool_config")
    config = _obj(value, "ToolConfig", path)
    if config.get("functionCallingConfig") is not None:
        fc_path = f"{path}.function_calling_config"
        fc = config["functionCallingConfig"] = _obj(config["functionCallingConfig"], "FunctionCallingConfig", fc_path)
        mode = fc.get("mode")
        if mode is not None and mode not in _FUNCTION_CALLING_MODES:
            raise _invalid(f"{fc_path}.mode", _TYPE + "FunctionCallingConfig.Mode", mode)
        names = fc.get("allowedFunctionNames")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise _invalid(f"{fc_path}.allowed_function_names", "TYPE_STRING", names)
    return config


def _generation_config(value: Any, prefix: str) -> dict[str, Any]:
    path = _join(prefix, "generation_config")
    config = _obj(value, "GenerationConfig", path)
    for name in ("maxOutputTokens", "candidateCount", "topK", "seed"):
        _check_type(config, name, path, "TYPE_INT32")
    for name in ("temperature", "topP", "presencePenalty", "frequencyPenalty"):
        _check_type(config, name, path, "TYPE_FLOAT")
    _check_type(config, "responseMimeType", path, "TYPE_STRING")
    mime = config.get("responseMimeType")
    if mime and mime not in _RESPONSE_MIME_TYPES:
        raise _required(
            "GenerateContentRequest",
            f"{path}.response_mime_type",
            "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` and "
            "`text/x.enum`.",
        )
    stops = config.get("stopSequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise _invalid(f"{path}.stop_sequences", "TYPE_STRING", stops)
    if config.get("thinkingConfig") is not None:
        tc_path = f"{path}.thinking_config"
        thinking = config["thinkingConfig"] = _obj(config["thinkingConfig"], "ThinkingConfig", tc_path)
        _check_type(thinking, "includeThoughts", tc_path, "TYPE_BOOL")
        _check_type(thinking, "thinkingBudget", tc_path, "TYPE_INT32")
        level = thinking.get("thinkingLevel")
        if level is not None and level not in _THINKING_LEVELS:
            raise _invalid(f"{tc_path}.thinking_level", _TYPE + "ThinkingConfig.ThinkingLevel", level)
        if thinking.get("thinkingBudget") is not None and level is not None:
            raise _BadRequest("You can only set only one of thinking budget and thinking level.")
    return config


def _validate_generate(payload: Any, owner: str = "GenerateContentRequest", prefix: str = "") -> dict[str, Any]:
    """Validate a ``GenerateContentRequest``; returns it normalised (camelCase keys in the checked messages)."""
    req = _obj(payload, "GenerateContentRequest", prefix)
    _check_type(req, "model", prefix, "TYPE_STRING")
    req["contents"] = _contents(req.get("contents"), owner, prefix)
    if req.get("systemInstruction") is not None:
        req["systemInstruction"] = _content(
            req["systemInstruction"], owner, _join(prefix, "system_instruction"), system=True
        )
    if req.get("tools") is not None:
        req["tools"] = _tools(req["tools"], owner, prefix)
    if req.get("toolConfig") is not None:
        req["toolConfig"] = _tool_config(req["toolConfig"], prefix)
    if req.get("generationConfig") is not None:
        req["generationConfig"] = _generation_config(req["generationConfig"], prefix)
    if req.get("safetySettings") is not None:
        _list(req["safetySettings"], _TYPE + "SafetySetting", _join(prefix, "safety_settings"))
    _check_type(req, "cachedContent", prefix, "TYPE_STRING")
    if req.get("cachedContent") and any(req.get(k) for k in ("systemInstruction", "tools", "toolConfig")):
        raise _BadRequest(
            "CachedContent can not be used with GenerateContent request setting system_instruction, tools or "
            "tool_config.\n\nProposed fix: move those values to CachedContent from GenerateContent request."
        )
    return req


def _validate_count(payload: Any) -> dict[str, Any]:
    """Validate a ``CountTokensRequest``; returns the (normalised) ``GenerateContentRequest`` to count."""
    req = _obj(payload, "CountTokensRequest", "")
    if req.get("generateContentRequest") is not None:
        return _validate_generate(req["generateContentRequest"], "CountTokensRequest", "generate_content_request")
    return {"contents": _contents(req.get("contents"), "CountTokensRequest", "")}


# -- token counting --------------------------------------------------------------------------------------


def _part_tokens(part: dict[str, Any]) -> tuple[int, int]:
    """``(text tokens, image tokens)`` of one normalised part."""
    if isinstance(part.get("text"), str):
        return _words(part["text"]), 0
    if "inlineData" in part or "fileData" in part:
        return 0, IMAGE_TOKENS
    if "functionCall" in part:
        call = part["functionCall"]
        return _words(call["name"]) + _words(_compact(call.get("args") or {})), 0
    if "functionResponse" in part:
        response = part["functionResponse"]
        return _words(response["name"]) + _words(_compact(response.get("response") or {})), 0
    return 1, 0


def _count(req: dict[str, Any]) -> tuple[int, int]:
    """``(text tokens, image tokens)`` of a normalised ``GenerateContentRequest``."""
    text = image = 0
    contents = list(req["contents"])
    if req.get("systemInstruction"):
        contents.append(req["systemInstruction"])
    for content in contents:
        for part in content["parts"]:
            t, i = _part_tokens(part)
            text += t
            image += i
    for tool in req.get("tools") or []:
        for decl in tool.get("functionDeclarations") or []:
            text += _words(decl["name"]) + _words(decl.get("description") or "")
    if req.get("cachedContent"):
        text += CACHED_CONTENT_TOKENS
    return text, image


def _prompt_details(text: int, image: int) -> list[dict[str, Any]]:
    details = [{"modality": "TEXT", "tokenCount": text}] if text else []
    if image:
        details.append({"modality": "IMAGE", "tokenCount": image})
    return details


# -- replies ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What the fake answers to one valid ``GenerateContentRequest``."""

    thought: str | None  # thought-summary text to send (includeThoughts), else None
    text: str | None  # reply text, or None for a function call
    call_name: str | None
    finish_reason: str
    prompt_text_tokens: int
    prompt_image_tokens: int
    cached_tokens: int | None
    thoughts_tokens: int  # 0 when thinking is off

    @property
    def prompt_tokens(self) -> int:
        return self.prompt_text_tokens + self.prompt_image_tokens

    @property
    def candidate_tokens(self) -> int:
        if self.call_name is not None:
            return _words(self.call_name) + _words(_compact(FUNCTION_CALL_ARGS))
        return _words(self.text or "")

    def call_part(self) -> dict[str, Any]:
        assert self.call_name is not None
        return {
            "functionCall": {"name": self.call_name, "args": dict(FUNCTION_CALL_ARGS)},
            "thoughtSignature": thought_signature_for(self.call_name),
        }

    def usage(self, candidates: int, thoughts: int) -> dict[str, Any]:
        usage: dict[str, Any] = {"promptTokenCount": self.prompt_tokens}
        if candidates:
            usage["candidatesTokenCount"] = candidates
        usage["totalTokenCount"] = self.prompt_tokens + candidates + thoughts
        if self.cached_tokens is not None:
            usage["cachedContentTokenCount"] = self.cached_tokens
        usage["promptTokensDetails"] = _prompt_details(self.prompt_text_tokens, self.prompt_image_tokens)
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage


def _plan(req: dict[str, Any]) -> _Plan:
    contents: list[dict[str, Any]] = req["contents"]
    config: dict[str, Any] = req.get("generationConfig") or {}
    thinking_config: dict[str, Any] = config.get("thinkingConfig") or {}
    budget = thinking_config.get("thinkingBudget")
    thinking = thinking_config.get("thinkingLevel") is not None or (isinstance(budget, int) and budget != 0)
    last = last_user_text(contents)
    thought_text = f"Let me think about: {last}" if last else "Let me think about: nothing"
    thought = thought_text if thinking and thinking_config.get("includeThoughts") is True else None
    text_tokens, image_tokens = _count(req)
    cached = CACHED_CONTENT_TOKENS if req.get("cachedContent") else None
    thoughts_tokens = _words(thought_text) if thinking else 0

    call_name = _call_name(req)
    if call_name is not None:
        return _Plan(thought, None, call_name, "STOP", text_tokens, image_tokens, cached, thoughts_tokens)

    if config.get("responseMimeType") == "application/json":
        text = json.dumps({"echo": last}, ensure_ascii=False)
    else:
        text = f"echo: {last}" if last else "echo:"
    finish_reason = "STOP"
    stops = [s for s in config.get("stopSequences") or [] if s and s in text]
    if stops:
        text = text[: min(text.index(s) for s in stops)]
    limit = config.get("maxOutputTokens")
    pieces = _pieces(text)
    if isinstance(limit, int) and 0 < limit < len(pieces):
        text = "".join(pieces[:limit])
        finish_reason = "MAX_TOKENS"
    return _Plan(thought, text, None, finish_reason, text_tokens, image_tokens, cached, thoughts_tokens)


def _call_name(req: dict[str, Any]) -> str | None:
    """The function the fake calls, or None when it answers with text."""
    declared = [d["name"] for tool in req.get("tools") or [] for d in tool.get("functionDeclarations") or []]
    contents: list[dict[str, Any]] = req["contents"]
    last = contents[-1]
    if not declared or last["role"] != "user" or any("functionResponse" in p for p in last["parts"]):
        return None
    calling: dict[str, Any] = (req.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = calling.get("mode")
    if mode == "NONE":
        return None
    allowed = [n for n in calling.get("allowedFunctionNames") or [] if n in declared]
    if mode in ("ANY", "VALIDATED") and allowed:
        return str(allowed[0])
    return str(declared[0])


def _candidate(parts: list[dict[str, Any]], finish_reason: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    candidate["index"] = 0
    return candidate


def _envelope(model: str, response_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "modelVersion": model, "responseId": response_id}


def _full_response(plan: _Plan, model: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if plan.thought is not None:
        parts.append({"text": plan.thought, "thought": True})
    if plan.call_name is not None:
        parts.append(plan.call_part())
    else:
        parts.append({"text": plan.text or ""})
    body = {
        "candidates": [_candidate(parts, plan.finish_reason)],
        "usageMetadata": plan.usage(plan.candidate_tokens, plan.thoughts_tokens),
    }
    return _envelope(model, _response_id(), body)


def _stream_chunks(plan: _Plan, model: str) -> list[dict[str, Any]]:
    """The ``GenerateContentResponse`` chunks of a streamed reply, in order."""
    response_id = _response_id()
    steps: list[tuple[dict[str, Any], int, int]] = []  # (part, cumulative candidate tokens, cumulative thoughts)
    thoughts = 0 if plan.thought is not None else plan.thoughts_tokens
    if plan.thought is not None:
        for piece in _pieces(plan.thought):
            thoughts += _words(piece)
            steps.append(({"text": piece, "thought": True}, 0, thoughts))
        thoughts = plan.thoughts_tokens
    if plan.call_name is not None:
        steps.append((plan.call_part(), plan.candidate_tokens, thoughts))
    else:
        candidates = 0
        for piece in _pieces(plan.text or "") or [""]:
            candidates += _words(piece)
            steps.append(({"text": piece}, candidates, thoughts))
    chunks = []
    for i, (part, candidates, thoughts_so_far) in enumerate(steps):
        finish = plan.finish_reason if i == len(steps) - 1 else None
        body = {"candidates": [_candidate([part], finish)], "usageMetadata": plan.usage(candidates, thoughts_so_far)}
        chunks.append(_envelope(model, response_id, body))
    return chunks


def _safety_response(plan: _Plan, model: str) -> dict[str, Any]:
    body = {
        "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": _SAFETY_RATINGS}],
        "usageMetadata": plan.usage(0, 0),
    }
    return _envelope(model, _response_id(), body)


def _blocked_response(plan: _Plan, model: str) -> dict[str, Any]:
    body = {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _SAFETY_RATINGS},
        "usageMetadata": plan.usage(0, 0),
    }
    return _envelope(model, _response_id(), body)


# -- HTTP helpers ----------------------------------------------------------------------------------------


def _base_headers() -> dict[str, str]:
    return {
        "server": "scaffolding on HTTPServer2",
        "vary": "Origin, X-Origin, Referer",
        "x-content-type-options": "nosniff",
        "x-frame-options": "SAMEORIGIN",
        "x-xss-protection": "0",
        "server-timing": "gfet4t7; dur=1",
    }


def _error_obj(code: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": _STATUS_NAMES.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def _json_response(status: int, obj: Any) -> web.Response:
    return web.Response(
        status=status,
        body=_dumps(obj, pretty=True),
        headers={**_base_headers(), "content-type": "application/json; charset=UTF-8"},
    )


def _error(code: int, message: str, details: list[dict[str, Any]] | None = None) -> web.Response:
    return _json_response(code, _error_obj(code, message, details))


def _key_invalid() -> web.Response:
    return _error(
        400,
        API_KEY_INVALID_MESSAGE,
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": API_KEY_INVALID_MESSAGE,
            },
        ],
    )


def _status_fault(status: int, model: str, version: str, method: str) -> web.Response:
    """The response for ``fault-status-<code>``: Google's error bodies for the common statuses."""
    if status == 429:
        return _error(
            429,
            "You exceeded your current quota, please check your plan and billing details. For more information on "
            "this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                            "quotaDimensions": {"location": "global", "model": model},
                            "quotaValue": "10",
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [
                        {
                            "description": "Learn more about Gemini API quotas",
                            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                        }
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"},
            ],
        )
    messages = {
        400: "Request contains an invalid argument.",
        401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
        "valid authentication credential.",
        403: "The caller does not have permission",
        404: f"models/{model} is not found for API version {version}, or is not supported for {method}. Call "
        "ListModels to see the list of available models and their supported methods.",
        500: "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting "
        "(upstream internal detail: backend fake-7 stack trace omitted)",
        503: "The model is overloaded. Please try again later.",
        504: "Deadline expired before operation could complete.",
    }
    return _error(status, messages.get(status, f"Injected fault: HTTP {status}."))


# -- the server ------------------------------------------------------------------------------------------


class FakeGemini(FakeServer):
    """Fake Gemini API upstream on 127.0.0.1 (see the module docstring for routes, validation and faults).

    ``url`` is the base URL without ``/v1beta``. Usage::

        with FakeGemini() as fake:
            httpx.post(f"{fake.url}/v1beta/models/gemini-2.5-flash:generateContent",
                       headers={"x-goog-api-key": fake.api_key}, json={"contents": [...]})
            assert fake.last_request.json["contents"][0]["parts"][0]["text"] == "hi"
            assert not fake.requests_with_key_in_url()
    """

    def __init__(self, api_key: str | None = DEFAULT_API_KEY) -> None:
        super().__init__()
        self.api_key = api_key

    def requests_with_key_in_url(self) -> list[RecordedRequest]:
        """The recorded requests that carried a ``key`` query parameter (an API key in the URL)."""
        with self._lock:
            return [r for r in self.requests if "key" in r.query]

    # -- request handling ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request, recorded: RecordedRequest, *, bad_json: bool) -> web.StreamResponse:
        payload = recorded.json
        route = _ROUTE.match(recorded.path)
        if route is None or request.method != "POST":
            return _error(404, "Method not found.")
        provided = request.headers.get("x-goog-api-key")
        if provided is None:
            provided = request.query.get("key")
        if self.api_key is not None and provided != self.api_key:
            return _key_invalid()
        if bad_json:
            return _error(400, "Invalid JSON payload received. Unexpected token.")
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            return _error(400, 'Invalid JSON payload received. Unknown name "": Root element must be a message.')

        model, method, version = route["model"], route["method"], route["version"]
        stream = method == "streamGenerateContent"
        fault, value = parse_fault(model)
        if fault == "status":
            return _status_fault(value, model, version, method)
        if fault == "slow":
            await asyncio.sleep(value / 1000)
        elif fault == "drop":
            return self._abort(request)
        elif fault == "badjson":
            return web.Response(
                status=200,
                body=b'{"candidates": [{"content": {"role": "model", "parts": [{"text": ',
                headers={**_base_headers(), "content-type": "application/json; charset=UTF-8"},
            )

        try:
            if method == "countTokens":
                text, image = _count(_validate_count(payload))
                return _json_response(
                    200, {"totalTokens": text + image, "promptTokensDetails": _prompt_details(text, image)}
                )
            req = _validate_generate(payload)
        except _BadRequest as exc:
            return _error(400, exc.message, exc.details)
        if fault == "streamerror" and not stream:
            return _status_fault(503, model, version, method)

        plan = _plan(req)
        if fault in ("safety", "blocked"):
            build: Callable[[_Plan, str], dict[str, Any]] = _safety_response if fault == "safety" else _blocked_response
            chunks = [build(plan, model)]
        elif stream:
            chunks = _stream_chunks(plan, model)
        else:
            chunks = [_full_response(plan, model)]
        if stream:
            return await self._stream(request, chunks, sse=request.query.get("alt") == "sse", fault=fault, value=value)
        data = _dumps(chunks[0], pretty=True)
        if fault == "dropmidstream":
            return await self._send_half_then_abort(request, data, _base_headers())
        return web.Response(
            status=200, body=data, headers={**_base_headers(), "content-type": "application/json; charset=UTF-8"}
        )

    async def _stream(
        self, request: web.Request, chunks: list[dict[str, Any]], *, sse: bool, fault: str, value: int
    ) -> web.StreamResponse:
        """Send chunks as SSE (``data: <json>\\r\\n\\r\\n``, no sentinel) or, without ``alt=sse``, as a JSON array."""
        objects: list[Any] = list(chunks)
        if fault == "streamerror":
            overloaded = _error_obj(503, "The model is overloaded. Please try again later.")
            objects = [objects[0], overloaded]
        if sse:
            events = [b"data: " + _dumps(obj) + b"\r\n\r\n" for obj in objects]
            content_type = "text/event-stream"
        else:
            events = [(b"[" if i == 0 else b",\r\n") + _dumps(obj, pretty=True) for i, obj in enumerate(objects)]
            events[-1] += b"]"
            content_type = "application/json; charset=UTF-8"
        resp = web.StreamResponse(
            status=200,
            headers={**_base_headers(), "content-type": content_type, "content-disposition": "attachment"},
        )
        await resp.prepare(request)
        cut = max(1, min(2, len(events) - 1)) if fault == "dropmidstream" else None
        for i, event in enumerate(events):
            if i == cut:
                await asyncio.sleep(0.05)  # let the chunks leave before the connection is torn down
                return self._abort(request)
            if fault == "slowstream" and i > 0:
                await asyncio.sleep(value / 1000)
            await resp.write(event)
        if cut is not None:  # a one-chunk stream: drop before the end of the body
            await asyncio.sleep(0.05)
            return self._abort(request)
        await resp.write_eof()
        return resp
