"""Candidate d: bare asyncio Protocol + httptools server (uvloop) + one shared aiohttp ClientSession.

Requests on one connection are answered strictly in order (pipelining-safe); a streamed upstream
response is re-chunked to the client as each piece arrives, with write flow control.
"""

from __future__ import annotations

import asyncio
import signal
from collections import deque
from typing import cast

import aiohttp
import httptools
import uvloop
from common import (
    BAD_GATEWAY_BODY,
    CHAT_PATH,
    JSON_CT,
    NOT_FOUND_BODY,
    UNAUTHORIZED_BODY,
    UPSTREAM_URL,
    auth_ok,
    port_from_argv,
)

_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 502: b"Bad Gateway"}
_CHAT_PATH = CHAT_PATH.encode()
_JSON_HDRS = {"Content-Type": "application/json"}


def _head(status: int, ctype: bytes, keep_alive: bool, length: int | None) -> bytes:
    framing = b"content-length: %d" % length if length is not None else b"transfer-encoding: chunked"
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n%s\r\nconnection: %s\r\n\r\n" % (
        status,
        _REASONS.get(status, b"Unknown"),
        ctype,
        framing,
        b"keep-alive" if keep_alive else b"close",
    )


class Request:
    __slots__ = ("auth", "body", "keep_alive", "method", "url")

    def __init__(self) -> None:
        self.url = b""
        self.auth: bytes | None = None
        self.body: list[bytes] = []
        self.method = b""
        self.keep_alive = True


class ProxyProtocol(asyncio.Protocol):
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.cur = Request()
        self.pending: deque[Request] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()

    # transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.can_write.set()
        if self.worker is not None:
            self.worker.cancel()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_head(400, JSON_CT, False, 0))
                self.transport.close()

    # parser callbacks
    def on_message_begin(self) -> None:
        self.cur = Request()

    def on_url(self, url: bytes) -> None:
        self.cur.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 13 and name.lower() == b"authorization":
            self.cur.auth = value

    def on_body(self, body: bytes) -> None:
        self.cur.body.append(body)

    def on_message_complete(self) -> None:
        self.cur.method = self.parser.get_method()
        self.cur.keep_alive = bool(self.parser.should_keep_alive())
        self.pending.append(self.cur)
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())

    # request handling, one at a time per connection
    async def _work(self) -> None:
        try:
            while self.pending and self.transport is not None:
                req = self.pending.popleft()
                await self._handle(req)
                if not req.keep_alive and self.transport is not None:
                    self.transport.close()
        finally:
            self.worker = None

    def _reply(self, status: int, body: bytes, ctype: bytes, keep_alive: bool) -> None:
        if self.transport is not None:
            self.transport.write(_head(status, ctype, keep_alive, len(body)) + body)

    async def _handle(self, req: Request) -> None:
        if req.method != b"POST" or req.url.split(b"?", 1)[0] != _CHAT_PATH:
            self._reply(404, NOT_FOUND_BODY, JSON_CT, req.keep_alive)
            return
        if not auth_ok(req.auth):
            self._reply(401, UNAUTHORIZED_BODY, JSON_CT, req.keep_alive)
            return
        body = b"".join(req.body)
        try:
            async with self.session.post(UPSTREAM_URL, data=body, headers=_JSON_HDRS) as r:
                ctype = r.headers.get("Content-Type", "application/json").encode()
                if not ctype.startswith(b"text/event-stream"):
                    data = await r.read()
                    self._reply(r.status, data, ctype, req.keep_alive)
                    return
                t = self.transport
                if t is None:
                    return
                t.write(_head(r.status, ctype, req.keep_alive, None))
                async for chunk in r.content.iter_any():
                    if self.transport is None:
                        return
                    t.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await self.can_write.wait()
                t.write(b"0\r\n\r\n")
        except aiohttp.ClientError:
            self._reply(502, BAD_GATEWAY_BODY, JSON_CT, False)
            req.keep_alive = False


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=60, ttl_dns_cache=300)
    session = aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=600)
    )
    server = await loop.create_server(lambda: ProxyProtocol(session), "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    await session.close()


if __name__ == "__main__":
    uvloop.run(serve(port_from_argv()))
