"""The built-in callbacks, registered through the same seam as plug-ins (:func:`lockgate.callbacks.register`).
Each factory imports its module (and its SDK) only when a config names it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lockgate.callbacks.base import Callback, register
from lockgate.callbacks.settings import ObserveSettings

__all__: list[str] = []

_OTEL = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")


def _otel(settings: ObserveSettings, options: Mapping[str, Any]) -> Callback:
    from lockgate.callbacks import otel

    return otel.build(settings, options)


def _langfuse(settings: ObserveSettings, options: Mapping[str, Any]) -> Callback:
    from lockgate.callbacks import langfuse

    return langfuse.build(settings, options)


def _webhook(settings: ObserveSettings, options: Mapping[str, Any]) -> Callback:
    from lockgate.callbacks import webhook

    return webhook.build(settings, options)


register("otel", _otel, requires=_OTEL, extra="otel")
register("langfuse", _langfuse, requires=("langfuse", *_OTEL), extra="langfuse")
register("webhook", _webhook)
