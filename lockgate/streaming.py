"""OpenAI-dialect SSE relay: forwards events as they arrive and captures the usage on the way.

The gateway asks upstreams for ``stream_options.include_usage`` even when the client did not, so that
every stream is accounted for. :class:`UsageTap` splits the byte stream into events, keeps the usage
it sees, and drops the final usage-only chunk (``"choices":[]``) when the client did not ask for it.
Events are never re-serialised; an event is held only until its terminating blank line arrives.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["UsageTap", "error_event"]

_USAGE = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')
_EMPTY_CHOICES = (b'"choices":[]', b'"choices": []')


class UsageTap:
    """Feed it upstream bytes; it returns the bytes to send on and remembers ``usage``."""

    __slots__ = ("_pending", "_strip", "done", "events", "usage")

    def __init__(self, *, strip_usage_chunk: bool) -> None:
        self._pending = b""
        self._strip = strip_usage_chunk
        self.usage: dict[str, Any] | None = None
        self.events = 0
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:  # after joining: a CRLF may be split across two reads
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = data
            return b""
        complete, self._pending = data[: end + 2], data[end + 2 :]
        if _USAGE not in complete:
            self.events += complete.count(b"\n\n")
            if b"[DONE]" in complete:
                self.done = True
            return complete
        kept = [event for event in complete.split(b"\n\n")[:-1] if self._keep(event)]
        return b"".join(event + b"\n\n" for event in kept)

    def _keep(self, event: bytes) -> bool:
        self.events += 1
        if b"[DONE]" in event:
            self.done = True
            return True
        if _USAGE not in event or any(n in event for n in _NULL_USAGE):
            return True
        payload = _data_of(event)
        if payload is None:
            return True
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            choices = payload.get("choices")
            if self._strip and not choices and any(c in event for c in _EMPTY_CHOICES):
                return False
        return True

    def flush(self) -> bytes:
        """What is left when the upstream closes (an unterminated last event)."""
        rest, self._pending = self._pending, b""
        return rest


def _data_of(event: bytes) -> dict[str, Any] | None:
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    try:
        value = orjson.loads(b"\n".join(lines))
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def error_event(body: bytes) -> bytes:
    """A terminal SSE event carrying an OpenAI error object (the SDKs raise on it)."""
    return b"data: " + body + b"\n\n"
