"""The contract of :mod:`lockgate.upstream`'s :class:`HttpClient`, proved against real servers on 127.0.0.1.

Any implementation of the seam must pass this file (it was written against the aiohttp client and proves its
asyncio Protocol + httptools replacement). Most
servers here are raw ``asyncio.start_server`` handlers that write exact bytes, so framing edge cases are precise;
each counts the connections it accepted and records the requests it parsed. Every test runs under both the
stdlib event loop and uvloop (the gateway's production loop), and every wait is bounded.

Every error must be one of :mod:`lockgate.errors`' types and its message must not name the URL, the host:port or
any header value that was sent (:func:`assert_clean`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import inspect
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lockgate.errors import UpstreamTimeout, UpstreamUnavailable
from lockgate.upstream import HttpClient, Timeouts, UpstreamRequest, UpstreamResponse

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-contract-canary-5b1e0d7a93"
SENT_HEADERS = {
    "Authorization": f"Bearer {SECRET}",
    "X-Api-Key": SECRET,
    "Content-Type": "application/json",
    "anthropic-version": "2023-06-01",
}
PATH = "/v1/x?api-version=1"
TEST_LIMIT = 5.0  # seconds, for one whole test body (each takes well under 1 s)
T = Timeouts(total=5.0, first_byte=5.0, idle=5.0, connect=2.0)  # generous: only the timeout tests use tight ones
SLACK = 0.5  # how late a timeout may fire

Run = Callable[[Coroutine[Any, Any, None]], None]


# ---------------------------------------------------------------------------------------------------- harness


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    return factories


LOOPS = _loop_factories()


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    """``run(main())``: run one test body on a fresh event loop, bounded by ``TEST_LIMIT``."""
    factory = LOOPS[request.param]

    def _run(coro: Coroutine[Any, Any, None]) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(TEST_LIMIT):
                await coro

        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(bounded())

    return _run


@dataclass
class Received:
    """One request as the server parsed it off the wire."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        found = self.values(name)
        assert len(found) <= 1, f"header {name!r} sent {len(found)} times"
        return found[0] if found else None


async def read_request(reader: asyncio.StreamReader) -> Received | None:
    """Parse one HTTP/1.1 request (Content-Length or chunked body); ``None`` on a clean EOF before it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        assert sep and name == name.strip(), f"malformed request header line {line!r}"
        headers.append((name, value.strip()))
    req = Received(method, target, version, headers, b"")
    encoding = req.header("transfer-encoding")
    length = req.header("content-length")
    if encoding is not None:
        assert length is None, "both Content-Length and Transfer-Encoding sent"
        assert encoding.lower() == "chunked"
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            parts.append(await reader.readexactly(size))
            assert await reader.readexactly(2) == b"\r\n"
        req.body = b"".join(parts)
    elif length is not None:
        req.body = await reader.readexactly(int(length))
    return req


class Conn:
    """One accepted connection, handed to a server handler."""

    def __init__(self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.index = index  # 0 for the first connection the server accepted

    async def request(self) -> Received | None:
        req = await read_request(self.reader)
        if req is not None:
            self.server.requests.append(req)
        return req

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def linger(self, seconds: float) -> None:
        """Keep the connection open without answering; record a violation if the client sends anything."""
        try:
            async with asyncio.timeout(seconds):
                extra = await self.reader.read(1)
        except TimeoutError:
            return
        if extra:
            self.server.violations.append("the client sent on a connection the server had finished with")


Handler = Callable[[Conn], Awaitable[None]]


class RawServer:
    """``asyncio.start_server`` on 127.0.0.1 with a handler per connection; counts connections and requests."""

    def __init__(self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[Received] = []
        self.violations: list[str] = []
        self.errors: list[str] = []  # bugs in a handler, not client behaviour
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    def url(self, path: str = PATH) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.ssl_context, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        for _ in range(3):  # let transports finish closing before the loop goes away
            await asyncio.sleep(0)
        if exc_info[0] is None:
            assert not self.errors, f"server handler failed: {self.errors}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(Conn(self, reader, writer, index))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self.errors.append(repr(exc))
        finally:
            self._tasks.discard(task)
            writer.close()


def response(
    status: int = 200,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    reason: str = "OK",
    *,
    length: bool = True,
) -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


def chunk(data: bytes, ext: str = "", *, upper: bool = False) -> bytes:
    size = f"{len(data):X}" if upper else f"{len(data):x}"
    return f"{size}{ext}\r\n".encode() + data + b"\r\n"


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def keepalive(respond: Callable[[Received], bytes]) -> Handler:
    """A handler answering every request on the connection with ``respond(request)``."""

    async def handler(conn: Conn) -> None:
        while (req := await conn.request()) is not None:
            await conn.send(respond(req))

    return handler


def ok(body: bytes = b"ok") -> Handler:
    return keepalive(lambda _req: response(200, body, [("Content-Type", "text/plain")]))


@asynccontextmanager
async def http_client(**kwargs: Any) -> AsyncIterator[HttpClient]:
    client = HttpClient(**kwargs)
    try:
        yield client
    finally:
        await client.close()


def request(url: str, body: bytes = b'{"model":"m"}', method: str = "POST") -> UpstreamRequest:
    return UpstreamRequest(url=url, headers=dict(SENT_HEADERS), body=body, method=method)


async def collect(resp: UpstreamResponse) -> bytes:
    return b"".join([c async for c in resp.chunks()])


async def fetch(client: HttpClient, url: str, *, stream: bool = False, timeouts: Timeouts = T) -> tuple[int, bytes]:
    resp = await client.send(request(url), stream=stream, timeouts=timeouts)
    body = await (collect(resp) if stream else resp.read())
    return resp.status, body


def assert_clean(exc: BaseException, port: int) -> None:
    """The error names no URL, no host:port and no header value that was sent."""
    texts = {str(exc), str(getattr(exc, "message", ""))}
    needles = ["127.0.0.1", "localhost", "http://", "https://", "/v1/x", "api-version", str(port)]
    needles += [v for v in SENT_HEADERS.values() if len(v) > 8] + [SECRET, "Bearer"]
    for text in texts:
        for needle in needles:
            assert needle not in text, f"error message leaks {needle!r}: {text!r}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------- 1. Content-Length, the request


def test_content_length_response_and_the_exact_request(run: Run) -> None:
    body = b'{"model":"gpt","messages":[{"role":"user","content":"h\xc3\xa9"}]}'
    payload = b'{"id":"r1","object":"chat.completion"}'

    async def main() -> None:
        handler = keepalive(
            lambda req: response(
                200 if req.method == "POST" else 201,
                payload,
                [("Content-Type", "application/json"), ("X-REQUEST-ID", "abc-123"), ("openai-processing-ms", "7")],
            )
        )
        async with RawServer(handler) as server, http_client() as client:
            resp = await client.send(request(server.url(), body), stream=False, timeouts=T)
            assert resp.status == 200
            # Lookups by lower-case name find headers whatever case the server used.
            assert resp.headers["content-type"] == "application/json"
            assert resp.headers.get("x-request-id") == "abc-123"
            assert resp.headers.get("openai-processing-ms") == "7"
            assert "content-length" in resp.headers
            assert resp.headers.get("x-absent") is None
            assert await resp.read() == payload

            got = server.requests[0]
            assert (got.method, got.target, got.version) == ("POST", PATH, "HTTP/1.1")
            assert got.body == body
            assert got.header("host") == f"127.0.0.1:{server.port}"
            assert got.header("content-length") == str(len(body))
            assert got.header("transfer-encoding") is None
            for name, value in SENT_HEADERS.items():
                assert got.header(name) == value, name

            # Another method on the same server, without a body.
            resp = await client.send(request(server.url("/v1/models"), b"", "GET"), stream=False, timeouts=T)
            assert resp.status == 201
            assert await resp.read() == payload
            got = server.requests[1]
            assert (got.method, got.target, got.body) == ("GET", "/v1/models", b"")
            assert got.header("transfer-encoding") is None
            assert got.header("content-length") in (None, "0")

    run(main())


def test_an_error_status_on_a_streamed_request_is_read_whole(run: Run) -> None:
    error = b'{"error":{"message":"slow down","type":"rate_limit_error"}}'

    async def main() -> None:
        handler = keepalive(lambda _req: response(429, error, [("Retry-After", "3")], "Too Many Requests"))
        async with RawServer(handler) as server, http_client() as client:
            resp = await client.send(request(server.url()), stream=True, timeouts=T)
            assert resp.status == 429
            assert resp.headers["retry-after"] == "3"
            assert await resp.read() == error

    run(main())


# ---------------------------------------------------------------------------------------------- 2. chunked

CHUNK_PARTS = [b"data: 1\n\n", b"data: 22\n\n", b"x" * 300, b"tail"]
CHUNKED_RESPONSE = (
    STREAM_HEAD
    + chunk(CHUNK_PARTS[0], ";foo=bar")
    + chunk(CHUNK_PARTS[1], ';name="quoted value"')
    + chunk(CHUNK_PARTS[2], upper=True)
    + chunk(CHUNK_PARTS[3])
    + b"0\r\nX-Trailer: t\r\nX-Other-Trailer: u\r\n\r\n"
)


@pytest.mark.parametrize("mode", ["read", "chunks"])
def test_chunked_response_with_extensions_and_trailers(run: Run, mode: str) -> None:
    async def main() -> None:
        async with RawServer(keepalive(lambda _req: CHUNKED_RESPONSE)) as server, http_client() as client:
            for _ in range(2):  # the trailers are consumed: the connection is clean for the next response
                status, body = await fetch(client, server.url(), stream=mode == "chunks")
                assert status == 200
                assert body == b"".join(CHUNK_PARTS)
            assert server.connections == 1

    run(main())


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_chunks_arrive_incrementally(run: Run, framing: str) -> None:
    first, second = b"data: first\n\n", b"data: second\n\n"
    sent_second: list[float] = []

    async def handler(conn: Conn) -> None:
        await conn.request()
        if framing == "chunked":
            await conn.send(STREAM_HEAD + chunk(first))
        else:
            await conn.send(response(200, first, [("Content-Length", str(len(first + second)))], length=False))
        await asyncio.sleep(0.2)
        sent_second.append(time.monotonic())
        await conn.send(chunk(second) + LAST_CHUNK if framing == "chunked" else second)
        await conn.linger(1.0)

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            resp = await client.send(request(server.url()), stream=True, timeouts=T)
            got: list[tuple[float, bytes]] = [(time.monotonic(), c) async for c in resp.chunks()]
            assert b"".join(c for _, c in got) == first + second
            assert sent_second
            early = b"".join(c for t, c in got if t < sent_second[0])
            assert early == first, "the first chunk was held back until the second arrived"

    run(main())


# ----------------------------------------------------------------------------------- 3. close-delimited body


@pytest.mark.parametrize("mode", ["read", "chunks"])
def test_body_delimited_by_connection_close(run: Run, mode: str) -> None:
    body = bytes(range(256)) * 400  # 100 KiB, several socket reads

    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(response(200, b"", [("Content-Type", "application/octet-stream")], length=False))
        await conn.send(body[:1000])
        await asyncio.sleep(0.05)
        await conn.send(body[1000:])
        # returning closes the connection: that is the end of the body

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            assert await fetch(client, server.url(), stream=mode == "chunks") == (200, body)
            assert await fetch(client, server.url(), stream=mode == "chunks") == (200, body)
            assert server.connections == 2

    run(main())


# ---------------------------------------------------------------------------------------- 4. no-body statuses


@pytest.mark.parametrize("stream", [False, True], ids=["read", "chunks"])
@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 204 No Content\r\n\r\n", b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n'],
    ids=["204", "304"],
)
def test_no_body_statuses(run: Run, head: bytes, stream: bool) -> None:
    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            if len(conn.server.requests) == 1:
                await conn.send(head)  # no Content-Length, no close: the status alone says there is no body
            else:
                await conn.send(response(200, b"after"))

    async def main() -> None:
        timeouts = Timeouts(total=2.0, first_byte=2.0, idle=2.0, connect=2.0)
        async with RawServer(handler) as server, http_client() as client:
            status, body = await fetch(client, server.url(), stream=stream, timeouts=timeouts)
            assert status == int(head[9:12])
            assert body == b""
            assert await fetch(client, server.url(), stream=stream, timeouts=timeouts) == (200, b"after")
            assert server.connections == 1

    run(main())


@pytest.mark.parametrize("stream", [False, True], ids=["read", "chunks"])
@pytest.mark.parametrize(
    "interim",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"],
    ids=["100", "103"],
)
def test_interim_responses_are_skipped(run: Run, interim: bytes, stream: bool) -> None:
    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.send(interim)
            await asyncio.sleep(0.02)
            await conn.send(response(200, b"final", [("X-Final", "yes")]))

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client, asyncio.timeout(2.0):
            for _ in range(2):
                resp = await client.send(request(server.url()), stream=stream, timeouts=T)
                assert resp.status == 200
                assert resp.headers["x-final"] == "yes"
                assert await (collect(resp) if stream else resp.read()) == b"final"
            assert server.connections == 1

    run(main())


# ---------------------------------------------------------------------------------------------- 5. keep-alive


def test_sequential_requests_reuse_one_connection(run: Run) -> None:
    async def main() -> None:
        async with RawServer(keepalive(lambda req: response(200, req.target.encode()))) as server:
            async with http_client() as client:
                for i in range(20):
                    stream = i % 2 == 1  # a response read whole or consumed as chunks both free the connection
                    assert await fetch(client, server.url(f"/n/{i}"), stream=stream) == (200, f"/n/{i}".encode())
            assert server.connections == 1
            assert len(server.requests) == 20

    run(main())


def test_concurrent_requests(run: Run) -> None:
    async def handler(conn: Conn) -> None:
        while (req := await conn.request()) is not None:
            await asyncio.sleep(0.02)
            await conn.send(response(200, req.target.encode()))

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            results = await asyncio.gather(
                *(fetch(client, server.url(f"/c/{i}"), stream=i % 2 == 0) for i in range(20))
            )
            assert results == [(200, f"/c/{i}".encode()) for i in range(20)]
            assert 1 <= server.connections <= 20
            assert len(server.requests) == 20

    run(main())


# ------------------------------------------------------------------------------------ 6. Connection: close


def test_connection_close_from_the_server_is_honoured(run: Run) -> None:
    async def handler(conn: Conn) -> None:
        req = await conn.request()
        assert req is not None
        await conn.send(response(200, req.target.encode(), [("Connection", "close")]))
        await conn.linger(0.3)  # stays open a moment: a client ignoring "close" would send here

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            assert await fetch(client, server.url("/a")) == (200, b"/a")
            assert await fetch(client, server.url("/b"), stream=True) == (200, b"/b")
            assert await fetch(client, server.url("/c")) == (200, b"/c")
            assert server.connections == 3
            assert not server.violations

    run(main())


# ------------------------------------------------------------------------------ 7. stale pooled connections


def test_a_stale_pooled_connection_is_replaced(run: Run) -> None:
    async def handler(conn: Conn) -> None:
        req = await conn.request()
        assert req is not None
        await conn.send(response(200, req.target.encode()))  # keep-alive by default...
        await asyncio.sleep(0.05)  # ...but the server drops the idle connection

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            assert await fetch(client, server.url("/a")) == (200, b"/a")
            await asyncio.sleep(0.15)
            assert await fetch(client, server.url("/b")) == (200, b"/b")
            await asyncio.sleep(0.15)
            assert await fetch(client, server.url("/c"), stream=True) == (200, b"/c")
            assert server.connections == 3
            assert [r.target for r in server.requests] == ["/a", "/b", "/c"]

    run(main())


def test_a_request_the_server_received_is_not_replayed(run: Run) -> None:
    """On a reused connection the server reads the whole POST, then hangs up: it may have acted on it."""

    async def handler(conn: Conn) -> None:
        while (req := await conn.request()) is not None:
            if len(conn.server.requests) == 2:
                return  # took the request, closes without answering
            await conn.send(response(200, req.target.encode()))

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            assert await fetch(client, server.url("/first")) == (200, b"/first")
            with pytest.raises(UpstreamUnavailable) as info:
                await fetch(client, server.url())
            assert_clean(info.value, server.port)
            await asyncio.sleep(0.1)
            assert len(server.requests) == 2, "a POST the server had fully received was sent again"

    run(main())


# -------------------------------------------------------------------------------------------------- 8. errors


def test_connection_refused(run: Run) -> None:
    port = free_port()

    async def main() -> None:
        async with http_client() as client:
            for stream in (False, True):
                started = time.monotonic()
                with pytest.raises(UpstreamUnavailable) as info:
                    await client.send(request(f"http://127.0.0.1:{port}{PATH}"), stream=stream, timeouts=T)
                assert time.monotonic() - started < 2.0
                assert_clean(info.value, port)

    run(main())


@pytest.mark.parametrize("when", ["on-accept", "after-request"])
def test_server_closes_without_a_response(run: Run, when: str) -> None:
    async def handler(conn: Conn) -> None:
        if when == "after-request":
            await conn.request()

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            for stream in (False, True):
                with pytest.raises(UpstreamUnavailable) as info:
                    await client.send(request(server.url()), stream=stream, timeouts=T)
                assert_clean(info.value, server.port)
            if when == "after-request":
                await asyncio.sleep(0.1)
                assert len(server.requests) == 2, "a fresh connection's failed POST was retried"

    run(main())


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["bad-status", "bad-status-reason", "not-http", "bad-length", "two-lengths", "bad-chunk-size"],
)
def test_malformed_responses(run: Run, reply: bytes) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply)
        await conn.linger(2.0)  # no help from a close: the client must reject the bytes themselves

    async def main() -> None:
        timeouts = Timeouts(total=3.0, first_byte=3.0, idle=3.0, connect=2.0)
        async with RawServer(handler) as server, http_client() as client:
            for stream in (False, True):
                with pytest.raises(UpstreamUnavailable) as info:
                    resp = await client.send(request(server.url()), stream=stream, timeouts=timeouts)
                    await (collect(resp) if stream else resp.read())  # bad framing may only show in the body
                assert_clean(info.value, server.port)

    run(main())


@pytest.mark.parametrize("stream", [False, True], ids=["read", "chunks"])
@pytest.mark.parametrize(
    "reply",
    [
        response(200, b"0123456789", [("Content-Length", "100")], length=False),
        STREAM_HEAD + chunk(b"data: 1\n\n") + b"20\r\nonly part of",
        STREAM_HEAD + chunk(b"data: 1\n\n"),
    ],
    ids=["content-length", "mid-chunk", "no-last-chunk"],
)
def test_a_truncated_body_fails_in_the_body(run: Run, reply: bytes, stream: bool) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply)  # then close

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            resp = await client.send(request(server.url()), stream=stream, timeouts=T)
            assert resp.status == 200
            with pytest.raises(UpstreamUnavailable) as info:
                await (collect(resp) if stream else resp.read())
            assert_clean(info.value, server.port)

    run(main())


# ------------------------------------------------------------------------------------------------ 9. timeouts


def silent(*, head: bytes = b"") -> Handler:
    """Read the request, optionally send ``head``, then say nothing more (until the test ends)."""

    async def handler(conn: Conn) -> None:
        await conn.request()
        if head:
            await conn.send(head)
        await asyncio.sleep(TEST_LIMIT)

    return handler


@pytest.mark.parametrize("stream", [True, False], ids=["stream-first_byte", "exchange-total"])
def test_no_answer_times_out(run: Run, stream: bool) -> None:
    limit = 0.3
    timeouts = (
        Timeouts(total=30.0, first_byte=limit, idle=30.0, connect=2.0)
        if stream
        else Timeouts(total=limit, first_byte=30.0, idle=30.0, connect=2.0)
    )

    async def main() -> None:
        async with RawServer(silent()) as server, http_client() as client:
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout) as info:
                await client.send(request(server.url()), stream=stream, timeouts=timeouts)
            elapsed = time.monotonic() - started
            assert limit - 0.05 <= elapsed <= limit + SLACK, elapsed
            assert_clean(info.value, server.port)

    run(main())


def test_total_bounds_the_body_of_an_exchange(run: Run) -> None:
    limit = 0.4

    async def main() -> None:
        head = response(200, b"01", [("Content-Length", "10")], length=False)
        async with RawServer(silent(head=head)) as server, http_client() as client:
            timeouts = Timeouts(total=limit, first_byte=30.0, idle=30.0, connect=2.0)
            started = time.monotonic()
            resp = await client.send(request(server.url()), stream=False, timeouts=timeouts)
            assert resp.status == 200
            with pytest.raises(UpstreamTimeout) as info:
                await resp.read()
            elapsed = time.monotonic() - started
            assert limit - 0.05 <= elapsed <= limit + SLACK, elapsed
            assert_clean(info.value, server.port)

    run(main())


def test_a_stalled_stream_times_out_after_idle(run: Run) -> None:
    idle = 0.3

    async def main() -> None:
        async with RawServer(silent(head=STREAM_HEAD + chunk(b"data: 1\n\n"))) as server, http_client() as client:
            timeouts = Timeouts(total=30.0, first_byte=30.0, idle=idle, connect=2.0)
            resp = await client.send(request(server.url()), stream=True, timeouts=timeouts)
            assert resp.status == 200
            got: list[bytes] = []
            with pytest.raises(UpstreamTimeout) as info:
                async for c in resp.chunks():
                    got.append(c)
                    last = time.monotonic()
            elapsed = time.monotonic() - last
            assert b"".join(got) == b"data: 1\n\n"
            assert idle - 0.05 <= elapsed <= idle + SLACK, elapsed
            assert_clean(info.value, server.port)

    run(main())


def test_a_steady_stream_is_bounded_by_idle_not_total(run: Run) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(STREAM_HEAD)
        for i in range(4):
            await asyncio.sleep(0.12)
            await conn.send(chunk(f"data: {i}\n\n".encode()))
        await conn.send(LAST_CHUNK)
        await conn.linger(1.0)

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            timeouts = Timeouts(total=0.25, first_byte=1.0, idle=0.4, connect=2.0)  # the stream lasts ~0.5 s
            status, body = await fetch(client, server.url(), stream=True, timeouts=timeouts)
            assert status == 200
            assert body == b"".join(f"data: {i}\n\n".encode() for i in range(4))

    run(main())


# -------------------------------------------------------------------------------------- 10. close mid-stream


@pytest.mark.parametrize("closer", ["same-task", "other-task"])
def test_close_mid_stream_ends_iteration_and_drops_the_connection(run: Run, closer: str) -> None:
    """The gateway closes a stream from its body loop, or from a watcher task when the client hangs up."""
    closed = asyncio.Event()

    async def handler(conn: Conn) -> None:
        req = await conn.request()
        assert req is not None
        if conn.index > 0:
            await conn.send(response(200, b"fresh"))
            await conn.linger(2.0)
            return
        await conn.send(STREAM_HEAD + chunk(b"data: one\n\n"))
        await closed.wait()
        await asyncio.sleep(0.05)
        await conn.send(chunk(b"data: late\n\n"))  # must never reach the closed response
        await asyncio.sleep(TEST_LIMIT)

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            resp = await client.send(request(server.url()), stream=True, timeouts=T)  # idle: 5 s
            got: list[bytes] = []

            async def watcher() -> None:
                while not got:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)  # the consumer is now waiting for more
                resp.close()
                closed.set()

            async def consume() -> None:
                with contextlib.suppress(UpstreamUnavailable):  # ending quietly or with this error are both fine
                    async for c in resp.chunks():
                        got.append(c)
                        if closer == "same-task":
                            resp.close()
                            closed.set()
                            await asyncio.sleep(0.2)  # "late" would be buffered by now on a live connection

            started = time.monotonic()
            async with asyncio.timeout(2.0):
                await asyncio.gather(consume(), watcher() if closer == "other-task" else asyncio.sleep(0))
            assert time.monotonic() - started < 1.5, "close() did not wake the consumer"
            assert b"".join(got) == b"data: one\n\n"
            resp.close()  # idempotent

            assert await fetch(client, server.url()) == (200, b"fresh")
            assert server.connections == 2

    run(main())


def test_a_cancelled_wait_then_close_leaves_the_client_usable(run: Run) -> None:
    """The gateway's first-token gate: ``anext(chunks)`` under ``asyncio.timeout``, then ``close()``."""

    async def handler(conn: Conn) -> None:
        req = await conn.request()
        assert req is not None
        if conn.index == 0:
            await conn.send(STREAM_HEAD)
            await asyncio.sleep(TEST_LIMIT)
        await conn.send(response(200, b"fresh"))
        await conn.linger(2.0)

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            resp = await client.send(request(server.url()), stream=True, timeouts=T)
            chunks = resp.chunks()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await anext(chunks, b"")
            resp.close()
            assert await fetch(client, server.url()) == (200, b"fresh")
            assert server.connections == 2

    run(main())


@pytest.mark.parametrize("when", ["headers", "body"])
def test_a_cancelled_caller_hangs_up_on_the_upstream(run: Run, when: str) -> None:
    """The client left (the gateway cancels the request's task): the upstream sees its connection closed at once,
    not when it finishes answering."""
    hung_up = asyncio.Event()

    async def handler(conn: Conn) -> None:
        req = await conn.request()
        assert req is not None
        if when == "body":
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        with contextlib.suppress(Exception):
            await conn.linger(TEST_LIMIT)  # returns when the client hangs up
        hung_up.set()

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:

            async def call() -> None:
                resp = await client.send(request(server.url()), stream=False, timeouts=T)
                await resp.read()

            task = asyncio.ensure_future(call())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with asyncio.timeout(1.0):
                await hung_up.wait()

    run(main())


@pytest.mark.parametrize("taken", ["nothing", "first-chunk"])
def test_a_closed_response_does_not_strand_its_connection(run: Run, taken: str) -> None:
    """Closed after its whole body arrived (the gateway's in-band-error path): reused, or closed, never leaked."""
    body = b'data: {"error":{"message":"bad"}}\n\n'
    hung_up = asyncio.Event()

    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.send(STREAM_HEAD + chunk(body) + LAST_CHUNK)
        if conn.index == 0:
            hung_up.set()

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            resp = await client.send(request(server.url()), stream=True, timeouts=T)
            chunks = resp.chunks()
            if taken == "first-chunk":
                assert await anext(chunks) == body
            await asyncio.sleep(0.1)  # the whole body has arrived by now
            resp.close()
            assert await fetch(client, server.url(), stream=True) == (200, body)
            if server.connections > 1:  # not reused: then the client must have hung up on it
                async with asyncio.timeout(1.0):
                    await hung_up.wait()
            del chunks

    run(main())


# ------------------------------------------------------------------------------------------------------ 11. TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "c.pem", folder / "k.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)),
            *("-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def _server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_tls_refuses_an_untrusted_certificate_by_default(run: Run, tls_files: tuple[Path, Path]) -> None:
    async def main() -> None:
        async with RawServer(ok(), ssl_context=_server_tls(*tls_files)) as server, http_client() as client:
            with pytest.raises(UpstreamUnavailable) as info:
                await fetch(client, server.url())
            assert_clean(info.value, server.port)
            assert not server.requests

    run(main())


def test_tls_with_a_trusting_ssl_context(run: Run, tls_files: tuple[Path, Path]) -> None:
    if "ssl_context" not in inspect.signature(HttpClient).parameters:
        pytest.skip("HttpClient takes no ssl_context")
    cert, key = tls_files
    trusting = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        handler = keepalive(lambda req: response(200, req.body[::-1]))
        server = RawServer(handler, ssl_context=_server_tls(cert, key))
        async with server, http_client(ssl_context=trusting) as client:
            for stream in (False, True, False):
                resp = await client.send(request(server.url(), b"abc"), stream=stream, timeouts=T)
                assert resp.status == 200
                assert await (collect(resp) if stream else resp.read()) == b"cba"
            assert server.requests[0].header("host") == f"127.0.0.1:{server.port}"
            assert server.connections == 1

    run(main())


# ------------------------------------------------------------------------------------------------ 12. large


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_large_bodies_round_trip(run: Run, framing: str) -> None:
    size = 5 * 1024 * 1024
    data = os.urandom(size)

    async def handler(conn: Conn) -> None:
        while (req := await conn.request()) is not None:
            digest = hashlib.sha256(req.body).hexdigest()
            back = req.body[::-1]
            if framing == "content-length":
                await conn.send(response(200, back, [("X-Sha256", digest)]))
                continue
            await conn.send(response(200, b"", [("X-Sha256", digest), ("Transfer-Encoding", "chunked")], length=False))
            for i in range(0, len(back), 65536):
                await conn.send(chunk(back[i : i + 65536]))
            await conn.send(LAST_CHUNK)

    async def main() -> None:
        async with RawServer(handler) as server, http_client() as client:
            for stream in (False, True):
                resp = await client.send(request(server.url(), data), stream=stream, timeouts=T)
                assert resp.status == 200
                assert resp.headers["x-sha256"] == hashlib.sha256(data).hexdigest()
                body = await (collect(resp) if stream else resp.read())
                assert len(body) == size
                assert body == data[::-1]
            assert server.connections == 1

    run(main())


# ---------------------------------------------------------------------------------------------- 13. headers


def _headers_reply(count: int, size: int) -> bytes:
    return response(200, b"ok", [(f"X-Pad-{i}", "v" * size) for i in range(count)])


def test_moderate_response_headers_are_accepted(run: Run) -> None:
    async def main() -> None:
        reply = _headers_reply(10, 2000)  # ~20 KiB of headers
        async with RawServer(keepalive(lambda _req: reply)) as server, http_client() as client:
            resp = await client.send(request(server.url()), stream=False, timeouts=T)
            assert resp.status == 200
            assert resp.headers["x-pad-9"] == "v" * 2000
            assert await resp.read() == b"ok"

    run(main())


def _rejects_headers(run: Run, reply: Callable[[Conn], Awaitable[None]]) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await reply(conn)
        await conn.linger(3.0)

    async def main() -> None:
        timeouts = Timeouts(total=3.0, first_byte=3.0, idle=3.0, connect=2.0)
        async with RawServer(handler) as server, http_client() as client:
            for stream in (False, True):
                started = time.monotonic()
                with pytest.raises(UpstreamUnavailable) as info:
                    await client.send(request(server.url()), stream=stream, timeouts=timeouts)
                assert time.monotonic() - started < 2.0
                assert_clean(info.value, server.port)

    run(main())


def test_response_headers_over_64_kib_in_total_are_rejected(run: Run) -> None:
    reply = _headers_reply(80, 1000)  # ~80 KiB in lines that are each unremarkable

    async def send(conn: Conn) -> None:
        await conn.send(reply)

    _rejects_headers(run, send)


def test_one_huge_response_header_is_rejected(run: Run) -> None:
    async def send(conn: Conn) -> None:
        await conn.send(_headers_reply(1, 70_000))

    _rejects_headers(run, send)


def test_an_endless_header_section_is_rejected(run: Run) -> None:
    async def send(conn: Conn) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\n")
        for i in range(4096):  # up to 4 MiB, never ending the header section
            try:
                await conn.send(f"X-Pad-{i}: {'v' * 1000}\r\n".encode())
            except (ConnectionError, RuntimeError):  # the client gave up: good
                return

    _rejects_headers(run, send)


# -------------------------------------------------------------------------------------------- 14. redirects


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_returned_not_followed(run: Run, status: int) -> None:
    async def main() -> None:
        async with RawServer(ok(b"followed")) as server:
            target = server.url("/elsewhere")

            async with (
                RawServer(
                    keepalive(lambda _req: response(status, b"", [("Location", target)], "Redirect"))
                ) as redirecting,
                http_client() as client,
            ):
                resp = await client.send(request(redirecting.url()), stream=False, timeouts=T)
                assert resp.status == status
                assert resp.headers["location"] == target
                assert await resp.read() == b""
                assert len(redirecting.requests) == 1
            assert server.connections == 0

    run(main())
