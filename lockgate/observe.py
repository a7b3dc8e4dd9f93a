"""What happened to each request, handed to sinks after the response is done.

A :class:`RequestRecord` is built once per request on the way out; sinks receive it off the response
path (the response has already been sent). :class:`JsonLinesSink` writes one JSON object per line and is
enabled by ``lockgate.request_log``; spend logs, metrics and callbacks plug in as further sinks.
Records never carry prompts, responses, keys or URLs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal, Protocol

import orjson

__all__ = ["AttemptRecord", "JsonLinesSink", "Modality", "RequestRecord", "Sink"]

Modality = Literal["text", "image", "document", "audio"]


@dataclass(slots=True)
class AttemptRecord:
    """One upstream attempt of a request (retries, fallbacks and hedges each add one)."""

    deployment_id: str
    provider: str
    model_group: str
    started_ms: float
    """After the request's start."""
    duration_ms: float = 0.0
    ttft_ms: float | None = None
    """To the first body bytes of a stream."""
    status: int = 0
    """The upstream's HTTP status (0: none came: a timeout, a dropped connection, a cancellation)."""
    outcome: Literal["answered", "failed", "cancelled", "pending"] = "pending"
    error_kind: str | None = None
    """What a failure was (routing/plan.py's kinds: server, rate_limit, timeout, context_window, ...)."""


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
    team_id: str | None = None
    user_id: str | None = None
    """The key's owner."""
    key_alias: str | None = None
    """The key's alias, else its display name (``sk-...abcd``); ``master_key`` for the master key."""
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
    modality: Modality = "text"
    """What the input holds beyond text (the heaviest of: document, image, audio)."""
    denied: str | None = None
    """The kind of limit that refused the request (key, team, user, org, end_user, deployment, proxy, ...)."""
    attempt_log: list[AttemptRecord] = field(default_factory=list)


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
