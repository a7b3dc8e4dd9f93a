"""A fake OpenAI (and Azure OpenAI) upstream speaking the real wire format over loopback HTTP.

``FakeOpenAI`` runs an aiohttp.web server on 127.0.0.1 in a background thread with its own event
loop (see :class:`~tests.fakes.server.FakeServer`), so synchronous pytest tests can point a gateway (or the
official ``openai`` SDK) at ``fake.url``.

Routes (each with or without the ``/v1`` prefix):

* ``POST /v1/chat/completions`` -- deterministic ``chat.completion`` / ``chat.completion.chunk`` replies:
  the content is ``"echo: <text of the last user message>"``; a tool call when ``tools`` are given and
  the last message is from the user; ``{"echo": ...}`` JSON for ``response_format`` json modes.
* ``POST /v1/embeddings`` -- deterministic vectors (see :func:`embedding_for`), float or base64.
* ``GET /v1/models`` and ``GET /v1/models/{id}``.
* Azure: ``POST /openai/deployments/{deployment}/chat/completions|embeddings?api-version=...`` with the
  ``api-key`` header; the deployment name plays the role of the model.

Faults are selected by the request's model (or Azure deployment) name, see :data:`FAULTS`, or scripted per model
name with :meth:`FakeOpenAI.script` (the next requests for that model meet the given faults in turn, then
answer normally): ``fake.script("dep-a", "status-500", "status-500")``.
Every request is recorded in ``FakeOpenAI.requests`` (a list of :class:`~tests.fakes.server.RecordedRequest`,
also importable from here) before it is answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .server import FakeServer
from .server import RecordedRequest as RecordedRequest  # re-exported: tests import it from here

DEFAULT_API_KEY = "sk-upstream-secret"
EMBEDDING_DIMENSIONS = 8
MODELS: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini", "o3-mini", "text-embedding-3-small")
SYSTEM_FINGERPRINT = "fp_fake00001"
TOOL_CALL_ID = "call_1"
TOOL_CALL_ARGUMENTS = '{"x": 1}'
PROMPT_TOKEN_OVERHEAD = 5

#: Fault model names understood by the fake (``<n>`` is an integer).
FAULTS: tuple[str, ...] = (
    "fault-status-<code>",  # respond with that HTTP status and an OpenAI-shaped error body
    "fault-slow-<ms>",  # wait <ms> before responding (before headers when streaming)
    "fault-slowstream-<ms>",  # stream: headers + first chunk at once, then <ms> between later chunks
    "fault-drop",  # abort the connection without any response
    "fault-dropmidstream",  # 200 SSE with 2 chunks then abort (non-stream: half a JSON body, then abort)
    "fault-nousage",  # never report usage (no usage chunk even if asked; no usage key non-streamed)
    "fault-badjson",  # 200, content-type application/json, invalid body
    "fault-retry-<s>",  # 429 with retry-after: <s>
    "fault-firstbyte-<ms>",  # stream: headers at once, the first chunk after <ms>
    "fault-stall-<ms>",  # stream: two chunks, then a gap of <ms>, then the rest
    "fault-context",  # 400 context_length_exceeded
    "fault-policy",  # 400 content_filter (Azure's content management policy)
)

_AZURE_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/(?P<op>chat/completions|embeddings)$")
_FAULT = re.compile(
    r"^fault-(?:(?P<kind>status|slow|slowstream|retry|firstbyte|stall)-(?P<value>\d+)"
    r"|(?P<bare>drop|dropmidstream|nousage|badjson|context|policy))$"
)
_WORD_PIECES = re.compile(r"(?<=\S)(?=\s)")
_ARG_PIECES = re.compile(r"\w+|\s+|[^\w\s]+")
_BAD_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. "
    "If you have trouble figuring out how to fix this, please contact us through our help center at "
    "help.openai.com.)"
)
_NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if "
    "you're accessing the API from your browser and are prompted for a username and password. You can "
    "obtain an API key from https://platform.openai.com/account/api-keys."
)


@dataclass
class _ChatPlan:
    content: str | None
    tool_name: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def parse_fault(model: str) -> tuple[str, int]:
    """Return ``(kind, value)`` for a fault model name, ``("", 0)`` for a normal model."""
    m = _FAULT.match(model)
    if m is None:
        return "", 0
    if m["bare"]:
        return m["bare"], 0
    return m["kind"], int(m["value"])


def embedding_for(item: str | list[int], dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The deterministic vector the fake returns for one embeddings input.

    Values are multiples of 1/128 in [-1, 1), hence exactly representable as float32: the float and
    base64 encodings decode to identical numbers.
    """
    seed = json.dumps(item, ensure_ascii=False).encode()
    return [(b - 128) / 128 for b in hashlib.shake_256(seed).digest(dimensions)]


def mask_key(key: str) -> str:
    """Mask a key the way OpenAI echoes it in 401 messages: ``sk-upstream-secret`` -> ``sk-up****cret``."""
    if len(key) < 12:
        return "*" * len(key)
    return f"{key[:5]}****{key[-4:]}"


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a list of parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") in ("text", "input_text")
            and isinstance(part.get("text"), str)
        ]
        return " ".join(texts)
    return ""


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)


def _embedding_items(raw: Any) -> list[str | list[int]] | None:
    """The inputs of an embeddings request: a string, a token list, or a list of either; None if invalid."""
    if isinstance(raw, str) or _is_tokens(raw):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, str) or _is_tokens(x) for x in raw):
        return list(raw)
    return None


def _words(text: str) -> int:
    return len(text.split())


def _pieces(text: str) -> list[str]:
    """Split text into word pieces whose concatenation is the text ("a b" -> ["a", " b"])."""
    return [p for p in _WORD_PIECES.split(text) if p]


def _dumps(obj: Any, *, pretty: bool = False) -> bytes:
    if pretty:  # OpenAI pretty-prints non-streamed bodies
        return json.dumps(obj, ensure_ascii=False, indent=2).encode()
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _error_body(message: str, type_: str | None, param: str | None = None, code: str | None = None) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}, pretty=True)


def _base_headers() -> dict[str, str]:
    return {
        "x-request-id": f"req_{uuid.uuid4().hex}",
        "openai-processing-ms": "1",
        "openai-version": "2020-10-01",
    }


def _error(
    status: int,
    message: str,
    type_: str | None = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=_error_body(message, type_, param, code),
        content_type="application/json",
        headers={**_base_headers(), **(headers or {})},
    )


def _status_fault(status: int, model: str) -> web.Response:
    """The response for ``fault-status-<code>``: OpenAI's error shapes for the common statuses."""
    if status == 429:
        return _error(
            429,
            f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
            "Limit 3, Used 3, Requested 1. Please try again in 1s.",
            "requests",
            code="rate_limit_exceeded",
            headers={
                "retry-after": "1",
                "x-ratelimit-limit-requests": "3",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-limit-tokens": "40000",
                "x-ratelimit-remaining-tokens": "39990",
                "x-ratelimit-reset-tokens": "15ms",
            },
        )
    if status == 500:
        return _error(
            500,
            "The server had an error while processing your request. Sorry about that! "
            "(upstream internal detail: shard fake-7 stack trace omitted)",
            "server_error",
        )
    if status == 503:
        return _error(503, "The engine is currently overloaded, please try again later", "server_error")
    if status == 401:
        return _error(401, "Incorrect API key provided.", code="invalid_api_key")
    if status == 403:
        return _error(403, "You are not allowed to access this resource.", "permission_error")
    if status == 404:
        return _error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if status == 400:
        return _error(400, "Invalid request (injected fault).")
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    return _error(status, f"Injected fault: HTTP {status}.", type_)


class FakeOpenAI(FakeServer):
    """Fake OpenAI / Azure OpenAI upstream on 127.0.0.1 (see the module docstring for routes and faults).

    ``url`` is the base URL without ``/v1``. Usage::

        with FakeOpenAI() as fake:
            client = openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-upstream-secret")
            ...
            assert fake.requests[-1].json["model"] == "gpt-4o"
    """

    def __init__(self, *, api_key: str | None = DEFAULT_API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self._scripts: dict[str, list[str]] = {}

    def script(self, model: str, *faults: str) -> None:
        """The next ``len(faults)`` requests for ``model`` meet these faults (names of :data:`FAULTS` without
        ``fault-``; ``ok`` for a normal answer), in order; later ones are answered normally."""
        for fault in faults:
            if fault != "ok" and parse_fault("fault-" + fault)[0] == "":
                raise ValueError(f"unknown fault {fault!r}")
        self._scripts[model] = list(faults)

    def served(self, model: str) -> int:
        """How many requests for ``model`` arrived."""
        return sum(1 for r in self.requests if isinstance(r.json, dict) and r.json.get("model") == model)

    # -- request handling ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request, recorded: RecordedRequest, *, bad_json: bool) -> web.StreamResponse:
        path, payload = recorded.path, recorded.json
        azure = _AZURE_PATH.match(path)
        if azure is not None:
            denied = self._check_key(request.headers.get("api-key"), azure=True)
            if denied is not None:
                return denied
            if "api-version" not in request.query:
                return _error(
                    400,
                    "The api-version query parameter (?api-version=) is required for all requests.",
                    code="MissingApiVersionParameter",
                )
            if request.method != "POST":
                return _error(405, f"Invalid method for URL ({request.method} {path})")
            return await self._operation(request, azure["op"], payload, bad_json, azure["deployment"])

        route = path[3:] if path == "/v1" or path.startswith("/v1/") else path
        if route not in ("/chat/completions", "/embeddings", "/models") and not route.startswith("/models/"):
            return _error(404, f"Invalid URL ({request.method} {path})")
        auth = request.headers.get("Authorization")
        provided = auth[7:] if auth is not None and auth[:7].lower() == "bearer " else None
        denied = self._check_key(provided, azure=False)
        if denied is not None:
            return denied
        if route == "/models" or route.startswith("/models/"):
            if request.method != "GET":
                return _error(405, f"Invalid method for URL ({request.method} {path})")
            return self._models(route[len("/models/") :] if route.startswith("/models/") else None)
        if request.method != "POST":
            return _error(405, f"Invalid method for URL ({request.method} {path})")
        return await self._operation(request, route[1:], payload, bad_json, None)

    def _check_key(self, provided: str | None, *, azure: bool) -> web.Response | None:
        if self.api_key is None or provided == self.api_key:
            return None
        if not provided:
            if azure:
                return _error(
                    401,
                    "Access denied due to missing subscription key. Make sure to include subscription key "
                    "when making requests to an API.",
                    code="401",
                )
            return _error(401, _NO_KEY_MESSAGE)
        return _error(
            401,
            f"Incorrect API key provided: {mask_key(provided)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    async def _operation(
        self, request: web.Request, op: str, payload: Any, bad_json: bool, deployment: str | None
    ) -> web.StreamResponse:
        if bad_json or not isinstance(payload, dict):
            return _error(400, _BAD_JSON_MESSAGE)
        model = deployment if deployment is not None else payload.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "you must provide a model parameter")
        stream = op == "chat/completions" and payload.get("stream") is True

        fault, value = parse_fault(model)
        scripted = self._scripts.get(model)
        if scripted:
            step = scripted.pop(0)
            fault, value = ("", 0) if step == "ok" else parse_fault("fault-" + step)
        if fault == "status":
            return _status_fault(value, model)
        if fault == "slow":
            await asyncio.sleep(value / 1000)
        elif fault == "drop":
            return self._abort(request)
        elif fault == "retry":
            return _error(429, "Rate limit reached (injected fault).", "requests", code="rate_limit_exceeded",
                          headers={"retry-after": str(value)})  # fmt: skip
        elif fault == "context":
            return _error(
                400,
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 200000 "
                "tokens. Please reduce the length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        elif fault == "policy":
            return _error(
                400,
                "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
                "Please modify your prompt and retry.",
                None,
                param="prompt",
                code="content_filter",
            )
        elif fault == "badjson":
            return web.Response(
                status=200,
                body=b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0,',
                content_type="application/json",
                headers=_base_headers(),
            )

        if op == "embeddings":
            result = self._embeddings(payload, model)
        else:
            if "messages" not in payload:
                return _error(
                    400,
                    "Missing required parameter: 'messages'.",
                    param="messages",
                    code="missing_required_parameter",
                )
            messages = payload["messages"]
            if not isinstance(messages, list) or not messages:
                return _error(
                    400,
                    f"Invalid 'messages': {json.dumps(messages)} is too short.",
                    param="messages",
                    code="invalid_value",
                )
            if stream:
                return await self._chat_stream(request, payload, model, fault, value)
            result = self._chat(payload, model, with_usage=fault != "nousage")
        if isinstance(result, web.Response):
            return result
        data = _dumps(result, pretty=True)
        if fault == "dropmidstream":
            return await self._send_half_then_abort(request, data, _base_headers())
        return web.Response(status=200, body=data, content_type="application/json", headers=_base_headers())

    # -- models ----------------------------------------------------------------------------------------

    @staticmethod
    def _model_obj(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "openai"}

    def _models(self, model_id: str | None) -> web.Response:
        if model_id is not None:
            obj: dict[str, Any] = self._model_obj(model_id)
        else:
            obj = {"object": "list", "data": [self._model_obj(m) for m in MODELS]}
        return web.Response(body=_dumps(obj, pretty=True), content_type="application/json", headers=_base_headers())

    # -- embeddings ------------------------------------------------------------------------------------

    @staticmethod
    def _embeddings(payload: dict[str, Any], model: str) -> dict[str, Any] | web.Response:
        if "input" not in payload:
            return _error(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
        raw = payload["input"]
        items = _embedding_items(raw)
        if items is None:
            return _error(
                400,
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
                param="input",
            )
        dims = payload.get("dimensions")
        dimensions = dims if isinstance(dims, int) and dims > 0 else EMBEDDING_DIMENSIONS
        encoding = payload.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return _error(400, f"Invalid value for 'encoding_format': {encoding!r}.", param="encoding_format")
        data = []
        tokens = 0
        for i, item in enumerate(items):
            vector = embedding_for(item, dimensions)
            tokens += _words(item) if isinstance(item, str) else len(item)
            embedding: list[float] | str = vector
            if encoding == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    # -- chat ------------------------------------------------------------------------------------------

    @staticmethod
    def _plan(payload: dict[str, Any]) -> _ChatPlan:
        messages = [m for m in payload["messages"] if isinstance(m, dict)]
        prompt_tokens = sum(_words(_text_of(m.get("content"))) for m in messages) + PROMPT_TOKEN_OVERHEAD
        users = [m for m in messages if m.get("role") == "user"]
        last_user = _text_of(users[-1].get("content")) if users else ""

        tools = payload.get("tools")
        tool_choice = payload.get("tool_choice")
        if (
            isinstance(tools, list)
            and tools
            and messages
            and messages[-1].get("role") == "user"
            and tool_choice != "none"
        ):
            first = tools[0] if isinstance(tools[0], dict) else {}
            name = (first.get("function") or {}).get("name") or first.get("name") or "tool"
            if isinstance(tool_choice, dict):
                name = (tool_choice.get("function") or {}).get("name") or name
            return _ChatPlan(None, str(name), "tool_calls", prompt_tokens, _words(TOOL_CALL_ARGUMENTS))

        response_format = payload.get("response_format")
        json_mode = isinstance(response_format, dict) and response_format.get("type") in (
            "json_object",
            "json_schema",
        )
        if json_mode:
            content = json.dumps({"echo": last_user}, ensure_ascii=False)
        else:
            content = f"echo: {last_user}" if last_user else "echo:"
        finish_reason = "stop"
        limit = payload.get("max_completion_tokens", payload.get("max_tokens"))
        pieces = _pieces(content)
        if isinstance(limit, int) and 0 < limit < len(pieces):
            content = "".join(pieces[:limit])
            finish_reason = "length"
        return _ChatPlan(content, None, finish_reason, prompt_tokens, _words(content))

    @staticmethod
    def _usage(plan: _ChatPlan, n: int) -> dict[str, Any]:
        completion_tokens = plan.completion_tokens * n  # n choices each produced the reply
        return {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": plan.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _n(payload: dict[str, Any]) -> int:
        n = payload.get("n")
        return n if isinstance(n, int) and 1 <= n <= 8 else 1

    def _chat(self, payload: dict[str, Any], model: str, *, with_usage: bool) -> dict[str, Any]:
        plan = self._plan(payload)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": plan.content,
            "refusal": None,
            "annotations": [],
        }
        if plan.tool_name is not None:
            message["tool_calls"] = [
                {
                    "id": TOOL_CALL_ID,
                    "type": "function",
                    "function": {"name": plan.tool_name, "arguments": TOOL_CALL_ARGUMENTS},
                }
            ]
        n = self._n(payload)
        result: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": i, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
                for i in range(n)
            ],
        }
        if with_usage:
            result["usage"] = self._usage(plan, n)
        result["service_tier"] = "default"
        result["system_fingerprint"] = SYSTEM_FINGERPRINT
        return result

    def _chunks(self, payload: dict[str, Any], model: str, include_usage: bool) -> list[dict[str, Any]]:
        """All ``chat.completion.chunk`` objects of a streamed reply, in order (without ``[DONE]``)."""
        plan = self._plan(payload)
        n = self._n(payload)
        cid = f"chatcmpl-{uuid.uuid4().hex[:29]}"
        created = int(time.time())

        def chunk(deltas: list[dict[str, Any]], finish_reason: str | None = None) -> dict[str, Any]:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [
                    {"index": i, "delta": d, "logprobs": None, "finish_reason": finish_reason}
                    for i, d in enumerate(deltas)
                ],
            }
            if include_usage:
                c["usage"] = None
            return c

        out: list[dict[str, Any]] = []
        if plan.tool_name is not None:
            first = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": TOOL_CALL_ID,
                        "type": "function",
                        "function": {"name": plan.tool_name, "arguments": ""},
                    }
                ],
                "refusal": None,
            }
            out.append(chunk([first] * n))
            for frag in _ARG_PIECES.findall(TOOL_CALL_ARGUMENTS):
                out.append(chunk([{"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}] * n))
        else:
            out.append(chunk([{"role": "assistant", "content": "", "refusal": None}] * n))
            for piece in _pieces(plan.content or ""):
                out.append(chunk([{"content": piece}] * n))
        out.append(chunk([{}] * n, plan.finish_reason))
        if include_usage:
            final = chunk([])
            final["usage"] = self._usage(plan, n)
            out.append(final)
        return out

    async def _chat_stream(
        self, request: web.Request, payload: dict[str, Any], model: str, fault: str, value: int
    ) -> web.StreamResponse:
        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = [b"data: " + _dumps(c) + b"\n\n" for c in self._chunks(payload, model, include_usage)]
        if fault == "nousage" and include_usage:
            events.pop()  # the usage chunk; chunks still carry "usage": null as if it were coming
        events.append(b"data: [DONE]\n\n")

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
                await asyncio.sleep(0.05)  # let the two chunks leave before the connection is torn down
                return self._abort(request)
            if fault == "slowstream" and i > 0:
                await asyncio.sleep(value / 1000)
            if (fault == "firstbyte" and i == 0) or (fault == "stall" and i == 2):
                await asyncio.sleep(value / 1000)
            await resp.write(event)
        await resp.write_eof()
        return resp
