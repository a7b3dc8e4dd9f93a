"""The OpenTelemetry callback (``callbacks: [otel]``): one trace per request, exported over OTLP/HTTP.

    <operation> <model group>        SERVER span, the whole request (start and end from the record)
    ├── <operation> <upstream model> CLIENT span, attempt 1 (a retry, a fallback, a hedge: one span each)
    └── <operation> <upstream model> CLIENT span, attempt 2 ...

Attributes follow the OpenTelemetry GenAI semantic conventions (checked against opentelemetry-semantic-conventions
0.66b2): ``gen_ai.operation.name`` (chat, embeddings), ``gen_ai.provider.name`` (and the deprecated
``gen_ai.system``, for consumers that still read it), ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens`` / ``output_tokens`` / ``cache_read.input_tokens`` / ``reasoning.output_tokens``,
``gen_ai.response.time_to_first_chunk``, ``gen_ai.conversation.id`` (the session), ``error.type``; plus
``http.route``, ``http.response.status_code``, ``user.id`` (the body's ``user``) and ``lockgate.*`` (request id,
deployment, cost, outcome). The prompt and answer (``gen_ai.input.messages`` / ``gen_ai.output.messages``, as JSON
in the client's dialect) only when message logging is on for the request.

The SDK runs on this callback's own thread: spans are built with explicit times once the request is over, gathered
per batch by a collecting processor and exported in one OTLP request (the exporter's own retries and timeout
apply). The tracer provider is this callback's alone, never the process-global one.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from lockgate.callbacks.base import Event, ThreadedCallback
from lockgate.callbacks.settings import ObserveSettings, OtelSettings
from lockgate.observe import AttemptRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Tracer

__all__ = ["OtelCallback", "Spans", "operation_of", "provider_name"]

# lockgate provider -> gen_ai.provider.name's well-known value (others pass as they are: deepseek, groq, ...)
_PROVIDERS = {
    "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai", "mistral": "mistral_ai", "xai": "x_ai",
}  # fmt: skip


def provider_name(provider: str | None) -> str:
    return _PROVIDERS.get(provider or "", provider or "unknown")


def operation_of(route: str) -> str:
    return "embeddings" if route.endswith("/embeddings") else "chat"


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    if not usage:
        return {}
    found: dict[str, Any] = {}
    for name, key in (
        ("prompt_tokens", "gen_ai.usage.input_tokens"),
        ("completion_tokens", "gen_ai.usage.output_tokens"),
    ):
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            found[key] = value
    details = usage.get("prompt_tokens_details") or {}
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        found["gen_ai.usage.cache_read.input_tokens"] = details["cached_tokens"]
    details = usage.get("completion_tokens_details") or {}
    if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
        found["gen_ai.usage.reasoning.output_tokens"] = details["reasoning_tokens"]
    return found


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class Spans:
    """Builds one request's spans on a tracer. ``langfuse`` adds the attributes Langfuse reads (observation
    types, usage and cost details) and keeps usage off the request span (Langfuse sums its generations)."""

    def __init__(self, tracer: Tracer, *, langfuse: bool = False) -> None:
        self._tracer = tracer
        self._langfuse = langfuse

    def build(self, event: Event) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        record = event.record
        end = _ns(record.time)
        start = end - _ns(record.latency_ms / 1000)
        operation = operation_of(record.route)
        group = record.model_group or record.requested_model or "unknown"
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": record.requested_model or group,
            "http.route": record.route,
            "http.response.status_code": record.status,
            "lockgate.request_id": record.request_id,
            "lockgate.model_group": group,
            "lockgate.stream": record.stream,
            "lockgate.attempts": record.attempts,
            "lockgate.modality": record.modality,
        }
        if record.provider:
            attributes["gen_ai.provider.name"] = attributes["gen_ai.system"] = provider_name(record.provider)
        answered = event.models.get(record.deployment_id or "") if record.deployment_id else None
        if answered:
            attributes["gen_ai.response.model"] = answered
        if not self._langfuse:
            attributes.update(_usage(record.usage))
        if record.cost is not None:
            attributes["lockgate.cost_usd"] = record.cost
        if record.first_token_ms is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = record.first_token_ms / 1000
        for key, value in (("user.id", record.end_user), ("gen_ai.conversation.id", record.session_id),
                           ("session.id", record.session_id), ("error.type", record.error_type),
                           ("lockgate.denied", record.denied)):  # fmt: skip
            if value:
                attributes[key] = value
        if record.client_disconnected:
            attributes["lockgate.client_disconnected"] = True
        for key, value in event.owner.items():
            attributes[f"lockgate.{key}"] = value
        if event.messages is not None:
            attributes["gen_ai.input.messages"] = _json(event.messages)
            if event.response is not None:
                attributes["gen_ai.output.messages"] = _json(event.response)
        if self._langfuse:
            attributes["langfuse.observation.type"] = "span"
            attributes["langfuse.trace.name"] = f"{operation} {group}"
            attributes["langfuse.trace.metadata"] = _json({"request_id": record.request_id, **event.owner})
            if event.messages is not None:
                attributes["langfuse.observation.input"] = attributes["gen_ai.input.messages"]
                if event.response is not None:
                    attributes["langfuse.observation.output"] = attributes["gen_ai.output.messages"]
        root = self._tracer.start_span(f"{operation} {group}", kind=SpanKind.SERVER, start_time=start,
                                       attributes=attributes)  # fmt: skip
        if event.failed:
            root.set_status(Status(StatusCode.ERROR, record.error_type or f"HTTP {record.status}"))
        parent = trace.set_span_in_context(root)
        last = _answering(record.attempt_log, record.deployment_id)
        for attempt in record.attempt_log:
            begin = start + _ns(attempt.started_ms / 1000)
            span = self._tracer.start_span(
                f"{operation} {event.models.get(attempt.deployment_id) or attempt.model_group}",
                context=parent,
                kind=SpanKind.CLIENT,
                start_time=begin,
                attributes=self._attempt(event, attempt, operation, attempt is last),
            )
            if attempt.outcome == "failed":
                span.set_status(Status(StatusCode.ERROR, attempt.error_kind or f"HTTP {attempt.status}"))
            span.end(end_time=min(end, begin + _ns(attempt.duration_ms / 1000)))
        root.end(end_time=end)

    def _attempt(self, event: Event, attempt: AttemptRecord, operation: str, answered: bool) -> dict[str, Any]:
        record = event.record
        model = event.models.get(attempt.deployment_id) or attempt.model_group
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider_name(attempt.provider),
            "gen_ai.system": provider_name(attempt.provider),
            "gen_ai.request.model": model,
            "lockgate.deployment_id": attempt.deployment_id,
            "lockgate.model_group": attempt.model_group,
            "lockgate.attempt.outcome": attempt.outcome,
        }
        if attempt.status:
            attributes["http.response.status_code"] = attempt.status
        if attempt.ttft_ms is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = attempt.ttft_ms / 1000
        if attempt.outcome == "failed":
            attributes["error.type"] = attempt.error_kind or "error"
        if answered:
            attributes["gen_ai.response.model"] = model
            attributes.update(_usage(record.usage))
        if self._langfuse:
            attributes["langfuse.observation.type"] = "generation"
            attributes["langfuse.observation.model.name"] = model
            if attempt.outcome == "failed":
                attributes["langfuse.observation.level"] = "ERROR"
                attributes["langfuse.observation.status_message"] = attempt.error_kind or f"HTTP {attempt.status}"
            if answered:
                usage = _usage(record.usage)
                details = {
                    "input": usage.get("gen_ai.usage.input_tokens"),
                    "output": usage.get("gen_ai.usage.output_tokens"),
                }
                attributes["langfuse.observation.usage_details"] = _json(
                    {k: v for k, v in details.items() if v is not None}
                )
                if record.cost is not None:
                    attributes["langfuse.observation.cost_details"] = _json({"total": record.cost})
                if event.messages is not None:
                    attributes["langfuse.observation.input"] = _json(event.messages)
                    if event.response is not None:
                        attributes["langfuse.observation.output"] = _json(event.response)
        return attributes


def _answering(attempts: Sequence[AttemptRecord], deployment_id: str | None) -> AttemptRecord | None:
    for attempt in reversed(attempts):
        if attempt.outcome == "answered" and attempt.deployment_id == deployment_id:
            return attempt
    return None


class OtelCallback(ThreadedCallback):
    """Exports each batch of requests as one OTLP/HTTP request (or prints the spans, ``console``)."""

    name = "otel"
    max_batch = 64
    linger = 1.0

    def __init__(self, settings: OtelSettings) -> None:
        super().__init__()
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

        class Collect(SpanProcessor):
            """Keeps ended spans for the batch's single export."""

            def __init__(self) -> None:
                self.spans: list[ReadableSpan] = []

            def on_end(self, span: ReadableSpan) -> None:
                self.spans.append(span)

        self._collect = Collect()
        self._provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
        self._provider.add_span_processor(self._collect)
        self._spans = Spans(self._provider.get_tracer("lockgate"))
        self._exporter: SpanExporter
        if settings.exporter == "otlp_http" and settings.endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            headers = {name: value.reveal() for name, value in settings.headers}
            self._exporter = OTLPSpanExporter(endpoint=settings.endpoint, headers=headers, timeout=10)
        else:
            self._exporter = ConsoleSpanExporter(
                out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n"
            )

    def send_blocking(self, events: Sequence[Event]) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        for event in events:
            self._spans.build(event)
        spans, self._collect.spans = self._collect.spans, []
        if spans and self._exporter.export(spans) is not SpanExportResult.SUCCESS:
            raise RuntimeError(f"the OTLP collector did not take {len(spans)} spans")

    def close_blocking(self) -> None:
        self._exporter.shutdown()
        self._provider.shutdown()


def build(settings: ObserveSettings, options: Mapping[str, Any]) -> OtelCallback:
    return OtelCallback(settings.otel or OtelSettings())
