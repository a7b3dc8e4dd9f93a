"""The one seam through which the gateway talks to upstreams over HTTP: a lean pooled HTTP/1.1 client.

:class:`HttpClient` keeps idle keep-alive connections per upstream (scheme, host, port) and sends one
request at a time on each. :meth:`HttpClient.send` returns an :class:`UpstreamResponse` once the status
line and headers have arrived; the body is read whole or as chunks as they arrive.

Why not a general client: on the gateway's path the upstream client was most of the CPU per request
(aiohttp ~140 µs, httpx ~2 ms, measured in ``bench/stack``). This one does only what an LLM upstream
needs: HTTP/1.1 over TCP or TLS (certificates verified), Content-Length / chunked / close-delimited
bodies parsed by llhttp (``httptools``), no redirects, no cookies, no proxies, no decompression (we never
ask for compression). Limits: response headers 64 KiB, a whole-read body 64 MiB; streamed bodies are
flow-controlled. Errors leave as :mod:`lockgate.errors` types whose messages name no URL or credential.

Timeouts: ``connect`` for a new connection; then one timer per exchange: ``total`` for a non-streamed
exchange (headers and body), ``first_byte`` until a stream's first body bytes, then ``idle`` between chunks.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httptools

from lockgate.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable

__all__ = ["HttpClient", "StaticResponse", "Timeouts", "UpstreamRequest", "UpstreamResponse"]

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
STREAM_HIGH_WATER = 1024 * 1024
IDLE_KEEP_SECONDS = 4.0  # below uvicorn's 5 s keep-alive, the server in front of most self-hosted models
MAX_IDLE_PER_HOST = 256


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: Mapping[str, str]
    body: bytes
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Built once per deployment. ``first_byte`` bounds the wait for a stream's first body bytes (its first
    token); ``idle`` each later wait; ``total`` a whole non-streamed exchange; ``connect`` a new connection."""

    total: float
    first_byte: float
    idle: float
    connect: float = 10.0


class UpstreamResponse(Protocol):
    """What a provider hands back: status and headers now, the body on demand."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class StaticResponse:
    """An in-process response (the demo provider's): same interface, no network."""

    __slots__ = ("_body", "_chunks", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        *,
        chunks: AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self._body = body
        self._chunks = chunks
        self.headers = headers or {}

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            yield self._body
            return
        async for chunk in self._chunks:
            yield chunk

    def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Target:
    key: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    head: bytes
    """``METHOD target HTTP/1.1\\r\\nHost: ...\\r\\n`` ready to send."""


class _Connection(asyncio.Protocol):
    """One upstream connection; carries one exchange at a time."""

    def __init__(self, client: HttpClient, key: tuple[str, str, int]) -> None:
        self._client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._header_bytes = 0
        self._length: int | None = None
        self._chunked = False
        self.headers_done = False
        self._keep_alive = False
        self._interim = False
        self.done = False
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._streaming = False
        self._error: GatewayError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle = 0.0
        self._got_body = False
        self._last_body = 0.0

    # -- protocol callbacks ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and not self.done:
            if self.headers_done and self._length is None and not self._chunked:
                self.on_message_complete()  # a body delimited by the connection's close
            else:
                self._fail(UpstreamUnavailable("the upstream closed the connection before the response was complete"))
        self._client._forget(self)

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.done or self._error is not None:  # unsolicited bytes end this connection
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(UpstreamUnavailable("the upstream sent a malformed HTTP response"))
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._fail(UpstreamUnavailable("the upstream sent too many header bytes"))
            self.abort()
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text
        if key == "content-length" and text.isdigit():
            self._length = int(text)
        elif key == "transfer-encoding" and "chunked" in text.lower():
            self._chunked = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # an interim response (100, 103): the real one follows
            self._interim = True
            self.headers = {}
            self._header_bytes = 0
            return
        self.headers_done = True
        self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once the message completes
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._streaming:
            self._last_body = self._loop.time()
            if not self._got_body:  # the first token: from now on the idle timeout applies
                self._got_body = True
                self._arm(self._idle)
            if self._buffered > STREAM_HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
        elif self._buffered > MAX_BODY_BYTES:
            self._fail(UpstreamUnavailable("the upstream response is too large"))
            self.abort()
            return
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.done:
            return
        self.done = True
        self._disarm()
        self._wake()

    # -- exchange ----------------------------------------------------------------------------------
    def start(self, payload: bytes, streaming: bool, timeouts: Timeouts) -> None:
        self.busy = True
        self._streaming = streaming
        self._idle = timeouts.idle
        self._arm(timeouts.first_byte if streaming else timeouts.total)
        assert self.transport is not None
        self.transport.write(payload)

    async def wait_headers(self) -> None:
        while not self.headers_done:
            await self._wait()

    async def read_all(self) -> bytes:
        try:
            while not self.done:
                await self._wait()
        except asyncio.CancelledError:  # the caller gave up (its client left): the upstream is told at once
            self.abort()
            raise
        body = b"".join(self._body)
        self._release()
        return body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        released = False
        try:
            while True:
                if self._body:  # everything that has arrived, at once (llhttp hands over each HTTP chunk)
                    chunk = self._body.popleft() if len(self._body) == 1 else b"".join(self._body)
                    self._body.clear()
                    self._buffered = 0
                    if self._paused and self.transport is not None:
                        self._paused = False
                        self.transport.resume_reading()
                    yield chunk
                elif self.done:
                    released = True
                    self._release()
                    return
                else:
                    await self._wait()
        finally:
            if not released:  # the reader stopped early: the rest of the body is unread, the connection unusable
                self.abort()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: GatewayError) -> None:
        if self._error is None:
            self._error = error
        self._disarm()
        self._wake()

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(seconds, self._on_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self.done:
            return
        if self._got_body:  # the idle timer is re-armed lazily, not on every chunk
            remaining = self._last_body + self._idle - self._loop.time()
            if remaining > 0:
                self._timer = self._loop.call_later(remaining, self._on_timeout)
                return
        message = "the upstream stream stalled" if self.headers_done else "the upstream did not answer in time"
        self._fail(UpstreamTimeout(message))
        self.abort()

    def _release(self) -> None:
        keep = self.done and self._error is None and not self.closed and self._keep_alive
        self.busy = False
        if keep:
            self._reset()
            self._client._give_back(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.abort()


class _Response:
    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def read(self) -> bytes:
        return await self._conn.read_all()

    def chunks(self) -> AsyncIterator[bytes]:
        return self._conn.iter_chunks()

    def close(self) -> None:
        if self._conn.busy:  # not handed back to the pool: whatever is left of this exchange is dropped
            self._conn.abort()
            self._conn._fail(UpstreamUnavailable("the response was closed by the gateway"))


class HttpClient:
    """Pooled HTTP/1.1 client. Create inside the running event loop; :meth:`close` at shutdown."""

    def __init__(self, *, pool_size: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._targets: dict[tuple[str, str], _Target] = {}
        self._limits: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._pool_size = pool_size
        self._ssl = ssl_context
        self._loop = asyncio.get_running_loop()

    def _target(self, method: str, url: str) -> _Target:
        found = self._targets.get((method, url))
        if found is not None:
            return found
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamUnavailable("the upstream URL is not a valid http(s) URL")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        host_header = f"[{host}]" if ":" in host else host
        if parts.port:
            host_header += f":{parts.port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")
        target = _Target((parts.scheme, host, port), host, port, tls, head)
        if len(self._targets) > 4096:
            self._targets.clear()
        self._targets[(method, url)] = target
        return target

    async def send(self, request: UpstreamRequest, *, stream: bool, timeouts: Timeouts) -> UpstreamResponse:
        target = self._target(request.method, request.url)
        payload = _serialise(target.head, request.headers, request.body)
        limit = self._limit(target.key)
        if limit is not None:
            await limit.acquire()
        try:
            # Never replayed here once written: the upstream may have acted on it (and billed). Idle connections
            # are dropped before upstreams usually close them (IDLE_KEEP_SECONDS), and the router decides retries.
            conn = await self._acquire(target, timeouts)
            conn.start(payload, stream, timeouts)
            try:
                await conn.wait_headers()
            except asyncio.CancelledError:  # the caller gave up: close the exchange rather than pool it half-done
                conn.abort()
                raise
            return _Response(conn)
        finally:
            if limit is not None:
                limit.release()

    def _limit(self, key: tuple[str, str, int]) -> asyncio.Semaphore | None:
        if not self._pool_size:
            return None
        limit = self._limits.get(key)
        if limit is None:
            limit = self._limits[key] = asyncio.Semaphore(self._pool_size)
        return limit

    async def _acquire(self, target: _Target, timeouts: Timeouts) -> _Connection:
        idle = self._idle.get(target.key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_KEEP_SECONDS:
                return conn
            conn.abort()
        context: ssl.SSLContext | None = None
        if target.tls:
            if self._ssl is None:  # the system trust store; certificates and host names verified
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(timeouts.connect):
                _, conn = await self._loop.create_connection(
                    lambda: _Connection(self, target.key),
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout("could not connect to the upstream in time") from exc
        except ssl.SSLError as exc:
            raise UpstreamUnavailable(f"TLS with the upstream failed ({exc.reason or 'handshake'})") from exc
        except OSError as exc:
            raise UpstreamUnavailable("could not connect to the upstream") from exc
        self._all.add(conn)
        return conn

    def _give_back(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= MAX_IDLE_PER_HOST:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)

    async def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
        self._all.clear()


_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _serialise(head: bytes, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = []
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamUnavailable("refusing to send a header containing a line break")
        if name.lower() in _FRAMING_HEADERS:  # the client sets these itself, exactly once
            continue
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    return head + "".join(lines).encode("latin-1") + body
