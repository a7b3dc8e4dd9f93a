"""Prompts and answers in the spend ledger (``messages`` / ``response``): off unless asked for, redacted, capped.

Whether a request's prompt and answer are stored: the most specific setting that says true or false wins::

    the key's   metadata.store_prompts_in_spend_logs        (/key/generate, /key/update; proxy admins only)
    its team's  metadata.store_prompts_in_spend_logs        (/team/new, /team/update: proxy admins only)
    general_settings.store_prompts_in_spend_logs            (default false)

So a team set to false keeps its prompts out of the ledger when the gateway stores everyone else's, and a key
set to true is stored whatever its team says (both decisions are a proxy admin's). Nobody else may set, change
or remove the flag: a key owner or team admin who replaces a key's metadata gets the flag carried over
(:func:`keep_flag`), and one who tries to change it is refused. Nothing is stored while
``disable_spend_logs`` is set.

What is stored, in the client's dialect for the prompt and in one shape for the answer::

    messages   chat: the body's ``messages``; Anthropic: its ``system`` as a first system message, then
               ``messages``; embeddings: the ``input``
    response   {"content", "reasoning", "tool_calls": [{"id", "name", "arguments"}], "finish_reason"} (the
               keys that have a value), from the answer or from the stream as it went by; None for
               embeddings and for requests that failed

Every string in each (keys too) is redacted (:mod:`lockgate.redact`), and each is cut to about
:data:`MAX_CHARS` characters of text: a cut string ends in ``…[truncated: ...]``, a cut list in a
``[truncated: N more items]`` item, an answer cut while it streamed has ``"truncated": true``; base64 payloads
(images) are replaced by a note of their size. Text is redacted over a margin past the cut, so a cut never
leaves half a secret behind. This happens when the request ends (after the answer has been sent, when there
is one), before the row reaches the spool file on disk.

Who sees them: proxy admins only (``/spend/logs``, :mod:`lockgate.api.spend`). How long they are kept:
:mod:`lockgate.retention`. What storage costs a request when it is off: :func:`wanted` (three attribute
reads); nothing is copied, no stream is parsed.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import orjson

from lockgate.dialects.anthropic_stream import sse_events
from lockgate.errors import BadRequest, PermissionDenied, describe
from lockgate.redact import Redactor

if TYPE_CHECKING:
    from lockgate.auth import Principal
    from lockgate.config import Settings
    from lockgate.routing.router import Router

__all__ = [
    "FLAG", "MARGIN", "MAX_CHARS", "PromptCapture", "StreamCapture", "check_flag", "clip", "keep_flag", "redactor",
    "request_messages", "response_of", "wanted",
]  # fmt: skip

log = logging.getLogger("lockgate.prompts")

FLAG = "store_prompts_in_spend_logs"
MAX_CHARS = 64 * 1024  # characters of text kept of a prompt, and of an answer
MARGIN = 4096  # characters past the cut that are redacted too, so that a secret across the cut is found whole
_BLOB = re.compile(r"(?:data:[\w/+.-]{1,100}+;base64,)?[A-Za-z0-9+/=_-]++")
_BLOB_MIN = 1024


# --- who asked for it ----------------------------------------------------------------------------------------


def wanted(default: bool, principal: Principal | None) -> bool:
    """Whether a request by ``principal`` has its prompt and answer stored (see the module's docstring)."""
    if principal is not None:
        key = principal.key
        if key is not None and key.metadata:
            flag = key.metadata.get(FLAG)
            if flag is not None:
                return flag is True
        team = principal.team
        if team is not None and team.metadata:
            flag = team.metadata.get(FLAG)
            if flag is not None:
                return flag is True
    return default


def check_flag(metadata: Any) -> None:
    """Refuse a ``metadata`` whose flag is there but is not true, false or null (400)."""
    if isinstance(metadata, dict) and metadata.get(FLAG) not in (None, True, False):
        raise BadRequest(f"'metadata.{FLAG}' must be true or false.", param="metadata")


def keep_flag(metadata: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """For a caller who is not a proxy admin: the ``metadata`` it sends, with the flag as the key has it now
    (``current``; None for a new key). :class:`PermissionDenied` if it names another value."""
    before = (current or {}).get(FLAG)
    if FLAG in metadata and metadata[FLAG] != before:
        raise PermissionDenied(f"Only a proxy admin may set '{FLAG}'.", param="metadata")
    if before is None:
        return metadata
    return {**metadata, FLAG: before}


# --- what is kept --------------------------------------------------------------------------------------------


def request_messages(body: dict[str, Any], dialect: str, kind: str) -> Any:
    """The part of a request body that is the prompt (references into ``body``, not copies)."""
    if kind == "embeddings":
        return body.get("input")
    messages = body.get("messages")
    if dialect == "anthropic" and body.get("system"):
        return [{"role": "system", "content": body["system"]}, *(messages if isinstance(messages, list) else [])]
    return messages


class _Answer:
    """An answer as it is put together: text, reasoning, tool calls (by index) and the finish reason, up to
    ``MAX_CHARS + MARGIN`` characters; what comes after is not kept."""

    __slots__ = ("calls", "finish", "reasoning", "size", "text", "truncated")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.size = 0
        self.truncated = False

    def room(self, more: int) -> bool:
        if self.size + more > MAX_CHARS + MARGIN:
            self.truncated = True
            return False
        self.size += more
        return True

    def add(self, parts: list[str], value: Any) -> None:
        if isinstance(value, str) and value and self.room(len(value)):
            parts.append(value)

    def call(self, index: Any, ident: Any = None, name: Any = None, arguments: Any = None) -> None:
        entry = self.calls.setdefault(index if isinstance(index, int) else 0, {"id": None, "name": None, "args": []})
        if isinstance(ident, str) and ident:
            entry["id"] = ident
        if isinstance(name, str) and name:
            entry["name"] = name
        self.add(entry["args"], arguments)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.text:
            out["content"] = "".join(self.text)
        if self.reasoning:
            out["reasoning"] = "".join(self.reasoning)
        if self.calls:
            out["tool_calls"] = [
                {"id": c["id"], "name": c["name"], "arguments": "".join(c["args"])}
                for _, c in sorted(self.calls.items())
            ]
        if self.finish is not None:
            out["finish_reason"] = self.finish
        if self.truncated:
            out["truncated"] = True
        return out

    # the two dialects' answers, whole or one stream event at a time

    def chat_message(self, choice: dict[str, Any]) -> None:
        message = choice.get("message") or choice.get("delta") or {}
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, list):  # content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            self.add(self.text, content)
            self.add(self.reasoning, message.get("reasoning_content"))
            for n, call in enumerate(message.get("tool_calls") or ()):
                if isinstance(call, dict):
                    function = call["function"] if isinstance(call.get("function"), dict) else {}
                    self.call(call.get("index", n), call.get("id"), function.get("name"), function.get("arguments"))
        if isinstance(choice.get("finish_reason"), str):
            self.finish = choice["finish_reason"]

    def chat_event(self, payload: dict[str, Any]) -> None:
        for choice in payload.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self.chat_message(choice)

    def block(self, index: Any, block: dict[str, Any]) -> None:
        kind = block.get("type")
        if kind == "text":
            self.add(self.text, block.get("text"))
        elif kind == "thinking":
            self.add(self.reasoning, block.get("thinking"))
        elif kind in ("tool_use", "server_tool_use"):
            tool_input = block.get("input")
            arguments = orjson.dumps(tool_input).decode() if tool_input else None
            self.call(index, block.get("id"), block.get("name"), arguments)

    def messages_event(self, payload: dict[str, Any]) -> None:
        kind, index = payload.get("type"), payload.get("index")
        if kind == "content_block_start" and isinstance(payload.get("content_block"), dict):
            self.block(index, payload["content_block"])
        elif kind == "content_block_delta" and isinstance(payload.get("delta"), dict):
            delta = payload["delta"]
            if delta.get("type") == "text_delta":
                self.add(self.text, delta.get("text"))
            elif delta.get("type") == "thinking_delta":
                self.add(self.reasoning, delta.get("thinking"))
            elif delta.get("type") == "input_json_delta":
                self.call(index, arguments=delta.get("partial_json"))
        elif kind == "message_delta" and isinstance(payload.get("delta"), dict):
            stop = payload["delta"].get("stop_reason")
            self.finish = stop if isinstance(stop, str) else self.finish


def response_of(data: Any) -> dict[str, Any] | None:
    """A whole answer (an OpenAI chat completion or an Anthropic message) in the stored shape; None for
    anything else (embeddings)."""
    if not isinstance(data, dict):
        return None
    answer = _Answer()
    if isinstance(data.get("choices"), list):
        choices = [c for c in data["choices"] if isinstance(c, dict)]
        if choices:
            answer.chat_message(choices[0])
    elif isinstance(data.get("content"), list):
        for n, block in enumerate(data["content"]):
            if isinstance(block, dict):
                answer.block(n, block)
        if isinstance(data.get("stop_reason"), str):
            answer.finish = data["stop_reason"]
    else:
        return None
    return answer.result()


class StreamCapture:
    """A stream stage that passes every byte on unchanged and puts the answer together from the events (the
    client's dialect: ``openai`` chunks or ``anthropic`` events). Once the answer is full it stops looking."""

    __slots__ = ("_anthropic", "_pending", "answer")

    def __init__(self, dialect: str) -> None:
        self._anthropic = dialect == "anthropic"
        self._pending = b""
        self.answer = _Answer()

    def feed(self, chunk: bytes) -> bytes:
        if self.answer.truncated:
            return chunk
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(b"\n\n")
        self._pending = events.pop()
        for event in events:
            self._read(event)
        return chunk

    def _read(self, event: bytes) -> None:
        if event.startswith(b"data: ") and b"\n" not in event:  # the usual OpenAI chunk: one data line
            payload = event[6:]
        else:
            _, payload = sse_events(event)
        if not payload or payload == b"[DONE]":
            return
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(value, dict):
            if self._anthropic:
                self.answer.messages_event(value)
            else:
                self.answer.chat_event(value)

    def flush(self) -> bytes:
        if self._pending.strip() and not self.answer.truncated:
            self._read(self._pending)
        self._pending = b""
        return b""


class PromptCapture:
    """One request's prompt, and its answer once there is one (whole, or from a :class:`StreamCapture`)."""

    __slots__ = ("messages", "response", "stream")

    def __init__(self, body: dict[str, Any], dialect: str, kind: str) -> None:
        self.messages = request_messages(body, dialect, kind)
        self.response: dict[str, Any] | None = None
        self.stream: StreamCapture | None = None

    def take_response(self, data: Any) -> None:
        self.response = response_of(data)

    def stream_stage(self, dialect: str) -> StreamCapture:
        self.stream = StreamCapture(dialect)
        return self.stream

    def stored(self, redactor: Redactor, status: int) -> tuple[Any, Any] | None:
        """(messages, response) as the ledger stores them: cut, redacted; no response for a failed request.
        None (and an error logged) if that fails: the row is then written without them."""
        try:
            response = self.response
            if self.stream is not None:
                self.stream.flush()
                response = self.stream.answer.result()
            if status >= 400:
                response = None
            return clip(self.messages, redactor), (None if response is None else clip(response, redactor))
        except Exception as exc:  # the request has been answered: its row must be written all the same
            log.error("prompt storage: a prompt was not stored: %s", describe(exc))
            return None


# --- cutting and redacting -------------------------------------------------------------------------------------


class _Clip:
    __slots__ = ("left", "redactor")

    def __init__(self, redactor: Redactor, limit: int) -> None:
        self.redactor, self.left = redactor, limit

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            out: list[Any] = []
            for n, item in enumerate(value):
                if self.left <= 0:
                    out.append(f"[truncated: {len(value) - n} more items]")
                    break
                out.append(self.value(item))
            return out
        if isinstance(value, dict):
            kept: dict[str, Any] = {}
            for n, (key, item) in enumerate(value.items()):
                if self.left <= 0:
                    kept["truncated"] = f"{len(value) - n} more fields"
                    break
                name = self.text(str(key))  # before the value (an assignment evaluates its right side first)
                kept[name] = self.value(item)
            return kept
        self.left -= 8
        return value

    def text(self, text: str) -> str:
        if len(text) >= _BLOB_MIN and _BLOB.fullmatch(text):
            text = f"[omitted: {len(text)} characters of base64 data]"
        if "\x00" in text:  # PostgreSQL's JSONB refuses NUL characters
            text = text.replace("\x00", "\ufffd")
        window = text[: max(self.left, 0) + MARGIN]
        redacted = self.redactor.redact(window)
        if len(window) == len(text) and len(redacted) <= self.left:
            self.left -= len(redacted) + 2
            return redacted
        keep, self.left = max(self.left, 0), 0
        return redacted[:keep] + f"…[truncated: {len(text)} characters in all]"


def clip(value: Any, redactor: Redactor, limit: int = MAX_CHARS) -> Any:
    """``value`` (JSON) with at most about ``limit`` characters of text, every string (and key) redacted."""
    return _Clip(redactor, limit).value(value)


def redactor(settings: Settings, router: Router) -> Redactor:
    """A redactor that also scrubs the gateway's own secrets: its master key, salt key and database and Redis
    URLs, and every credential of the router's deployments."""
    known = [s.reveal() for s in (settings.master_key, settings.salt_key, settings.database_url, settings.redis_url)
             if s is not None]  # fmt: skip
    for target in router.targets():
        known += target.deployment.secrets()
    return Redactor(known)
