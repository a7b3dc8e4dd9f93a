"""The generic webhook callback (LiteLLM's ``generic_api``; ``webhook`` in lockgate's words): request records as
JSON, POSTed in batches to a URL the config names, with retries.

Body, by ``log_format``::

    json_array (default)  [record, record, ...]             one POST per batch
    ndjson                record\\nrecord\\n...             one POST per batch, application/x-ndjson
    single                record                            one POST per record

Each record is the request log's (:class:`lockgate.observe.RequestRecord`) plus ``event`` (``success`` /
``failure``), who sent it (the record's ``team_id``, ``user_id``, ``key_alias``; ``key_hash``, ``org_id``) and,
only when message logging is on for the request, ``messages`` and ``response`` (redacted). No key, no URL.

A batch is retried on a connection failure, a timeout, 429 or 5xx (three tries, 0.5 s then 1 s apart), then
given up (counted by the dispatcher). Logs name the webhook's host only: its URL and headers may hold a token.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from lockgate.callbacks.base import Event
from lockgate.callbacks.settings import ObserveSettings, WebhookSettings
from lockgate.errors import GatewayError
from lockgate.secret import Secret
from lockgate.upstream import HttpClient, Timeouts, UpstreamRequest

__all__ = ["WebhookCallback", "WebhookFailed", "post", "record_payload"]

TIMEOUTS = Timeouts(total=10.0, first_byte=10.0, idle=10.0, connect=5.0)
TRIES = 3
BACKOFF = 0.5


class WebhookFailed(Exception):
    """A POST that did not succeed; the message names the host and the status, never the URL."""


def host_of(url: Secret) -> str:
    return urlsplit(url.reveal()).hostname or "?"


async def post(client: HttpClient, url: Secret, headers: Mapping[str, str], body: bytes, *, tries: int = TRIES) -> None:
    """POST ``body``, retrying what may succeed later; raises :class:`WebhookFailed`."""
    reason = ""
    for attempt in range(tries):
        if attempt:
            await asyncio.sleep(BACKOFF * 2 ** (attempt - 1))
        try:
            response = await client.send(UpstreamRequest(url.reveal(), headers, body), stream=False, timeouts=TIMEOUTS)
            try:
                await response.read()
            finally:
                response.close()
        except GatewayError as exc:  # connection refused, timeout: messages without the URL
            reason = exc.message
            continue
        if response.status < 300:
            return
        reason = f"HTTP {response.status}"
        if response.status != 429 and response.status < 500:
            break  # the webhook refuses this body: trying again will not help
    raise WebhookFailed(f"webhook at {host_of(url)}: {reason}")


def record_payload(event: Event) -> dict[str, Any]:
    """One record as a webhook receives it."""
    payload = dataclasses.asdict(event.record)
    payload["event"] = "failure" if event.failed else "success"
    payload.update(event.owner)
    if event.messages is not None:
        payload["messages"] = event.messages
        payload["response"] = event.response
    return payload


class WebhookCallback:
    """POSTs records to one URL (see the module docstring)."""

    def __init__(self, name: str, settings: WebhookSettings) -> None:
        self.name = name
        self._settings = settings
        self.max_batch = 1 if settings.log_format == "single" else settings.batch_size
        self.linger = 0.0 if settings.log_format == "single" else settings.flush_interval
        self._client: HttpClient | None = None

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "User-Agent": "lockgate"}
        headers.update((name, value.reveal()) for name, value in self._settings.headers)
        return headers

    async def send(self, events: Sequence[Event]) -> None:
        if self._client is None:
            self._client = HttpClient()
        records = [record_payload(event) for event in events]
        if self._settings.log_format == "ndjson":
            body = b"".join(orjson.dumps(record) + b"\n" for record in records)
            await post(self._client, self._settings.url, self._headers("application/x-ndjson"), body)
        elif self._settings.log_format == "single":
            for record in records:
                await post(self._client, self._settings.url, self._headers("application/json"), orjson.dumps(record))
        else:
            await post(self._client, self._settings.url, self._headers("application/json"), orjson.dumps(records))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def build(settings: ObserveSettings, options: Mapping[str, Any]) -> WebhookCallback:
    name = str(options["name"])
    return WebhookCallback(name, settings.webhooks[name])
