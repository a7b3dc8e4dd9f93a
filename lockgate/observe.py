"""What happened to each request, handed to sinks after the response is done.

A :class:`RequestRecord` is built once per request on the way out; sinks receive it off the response
path (the response has already been sent). :class:`JsonLinesSink` writes one JSON object per line and is
enabled by ``lockgate.request_log``; spend logs, metrics and callbacks plug in as further sinks.
Records never carry prompts, responses, keys or URLs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import IO, Any, Protocol

import orjson

__all__ = ["JsonLinesSink", "RequestRecord", "Sink"]


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    route: str
    status: int
    model_group: str | None = None
    requested_model: str | None = None
    session_id: str | None = None
    end_user: str | None = None
    """The body's ``user`` (LiteLLM's end user / customer), when given."""
    deployment_id: str | None = None
    provider: str | None = None
    stream: bool = False
    attempts: int = 0
    usage: dict[str, Any] | None = None
    error_type: str | None = None
    latency_ms: float = 0.0
    first_token_ms: float | None = None
    client_disconnected: bool = False
    cost: float | None = None
    """USD at the deployment's prices; None when it has none (or nothing was used)."""
    time: float = 0.0


class Sink(Protocol):
    def emit(self, record: RequestRecord) -> None: ...


class JsonLinesSink:
    """One JSON line per request to a stream (stderr by default)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr

    def emit(self, record: RequestRecord) -> None:
        record.time = record.time or time.time()
        self._stream.write(orjson.dumps(asdict(record)).decode() + "\n")
        self._stream.flush()
