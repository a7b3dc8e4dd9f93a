"""A fake OTLP/HTTP trace receiver (an OpenTelemetry collector's ``/v1/traces``), which is also what Langfuse's
SDK (v3 and later) sends to: ``/api/public/otel/v1/traces`` with Basic auth.

Bodies are decoded as the protobuf ``ExportTraceServiceRequest`` (opentelemetry-proto), gzip-compressed or not;
:meth:`FakeOTLP.spans` flattens them: name, ids (hex), parent, kind, start/end (ns), status, attributes and the
resource's attributes, each attribute as its plain Python value. ``auth`` makes the receiver answer 401 to a
request without that Authorization header; ``delay`` makes it answer that many seconds late.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.fakes.server import FakeServer, RecordedRequest

__all__ = ["FakeOTLP"]

PATHS = ("/v1/traces", "/api/public/otel/v1/traces")


def _value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items}


class FakeOTLP(FakeServer):
    def __init__(self, *, auth: str | None = None, delay: float = 0.0) -> None:
        super().__init__()
        self.auth = auth
        self.delay = delay
        self._spans: list[dict[str, Any]] = []

    async def _dispatch(self, request: web.Request, recorded: RecordedRequest, *, bad_json: bool) -> web.StreamResponse:
        if request.method != "POST" or recorded.path not in PATHS:
            return web.Response(status=404)
        if self.auth is not None and recorded.headers.get("authorization") != self.auth:
            return web.Response(status=401)
        if self.delay:
            await asyncio.sleep(self.delay)
        body = recorded.body
        if body[:2] == b"\x1f\x8b":  # (aiohttp has usually inflated a gzip body already)
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        found = []
        for resource_spans in MessageToDict(message).get("resourceSpans", []):
            resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    found.append({
                        "name": span["name"],
                        "trace_id": _hex(span["traceId"]),
                        "span_id": _hex(span["spanId"]),
                        "parent_span_id": _hex(span.get("parentSpanId", "")),
                        "kind": span.get("kind", ""),
                        "start": int(span["startTimeUnixNano"]),
                        "end": int(span["endTimeUnixNano"]),
                        "status": span.get("status", {}).get("code", "STATUS_CODE_UNSET"),
                        "attributes": _attributes(span.get("attributes", [])),
                        "resource": resource,
                        "scope": scope_spans.get("scope", {}).get("name", ""),
                        "path": recorded.path,
                    })  # fmt: skip
        with self._lock:
            self._spans.extend(found)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")  # fmt: skip

    def spans(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._spans)


def _hex(value: str) -> str:
    """MessageToDict renders bytes as base64."""
    import base64

    return base64.b64decode(value).hex() if value else ""
