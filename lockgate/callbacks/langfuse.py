"""The Langfuse callback (``success_callback: [langfuse]``; ``langfuse_otel`` is the same), through Langfuse's own
Python SDK.

Langfuse's SDK (v3 and later; 5.x here) is built on OpenTelemetry: a ``Langfuse`` client attaches its span
processor (Basic auth with the project's keys, gzip, batching, its ingestion headers) to a tracer provider and
exports OTLP/HTTP to ``<LANGFUSE_HOST>/api/public/otel/v1/traces``. Its public observation API has no start time
(langfuse-python #1377; the request is over when a callback sees it), so the spans are built with explicit start
and end times by :class:`lockgate.callbacks.otel.Spans` on the provider this callback hands the SDK, with the
attributes Langfuse reads: the request as a ``span`` observation (its trace named ``<operation> <model group>``,
``user.id`` = the body's ``user``, ``session.id``), each attempt as a ``generation`` with its model, usage and
cost details, a failed one at level ERROR. After each batch the client is flushed on this callback's thread, so
the dispatcher's queue (and its drop count) stands for everything not yet sent.

The provider is the callback's own (never the process-global one), so nothing else in the process is exported to
Langfuse. The SDK reads some ``LANGFUSE_*`` variables of its own for what is not passed here (sampling,
environment, release, timeouts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lockgate.callbacks.base import Event, ThreadedCallback
from lockgate.callbacks.otel import Spans
from lockgate.callbacks.settings import LangfuseSettings, ObserveSettings

__all__ = ["LangfuseCallback"]


class LangfuseCallback(ThreadedCallback):
    name = "langfuse"
    max_batch = 64
    linger = 1.0

    def __init__(self, settings: LangfuseSettings) -> None:
        super().__init__()
        from langfuse import Langfuse
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        self._provider = TracerProvider(resource=Resource.create({"service.name": "lockgate"}))
        self._client = Langfuse(
            public_key=settings.public_key,
            secret_key=settings.secret_key.reveal(),
            base_url=settings.host,
            tracer_provider=self._provider,
            timeout=10,
        )
        self._spans = Spans(self._provider.get_tracer("lockgate"), langfuse=True)

    def send_blocking(self, events: Sequence[Event]) -> None:
        for event in events:
            self._spans.build(event)
        self._client.flush()

    def close_blocking(self) -> None:
        self._client.shutdown()
        self._provider.shutdown()


def build(settings: ObserveSettings, options: Mapping[str, Any]) -> LangfuseCallback:
    if settings.langfuse is None:
        raise ValueError("the langfuse callback has no settings")
    return LangfuseCallback(settings.langfuse)
