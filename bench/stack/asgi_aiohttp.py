"""Raw ASGI app (no framework) proxying chat completions with one shared aiohttp ClientSession.

Used by candidates a (uvicorn) and c (granian).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
from common import (
    BAD_GATEWAY_BODY,
    CHAT_PATH,
    JSON_CT,
    NOT_FOUND_BODY,
    UNAUTHORIZED_BODY,
    UPSTREAM_URL,
    auth_ok,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_session: aiohttp.ClientSession | None = None
_JSON_HDRS = {"Content-Type": "application/json"}


def _get_session() -> aiohttp.ClientSession:
    global _session
    if _session is None or _session.closed:
        connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=60, ttl_dns_cache=300)
        _session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=600)
        )
    return _session


async def _simple(send: Send, status: int, body: bytes, ctype: bytes = JSON_CT) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            _get_session()
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] != CHAT_PATH or scope["method"] != "POST":
        await _simple(send, 404, NOT_FOUND_BODY)
        return
    auth = None
    for k, v in scope["headers"]:
        if k == b"authorization":
            auth = v
            break
    if not auth_ok(auth):
        await _simple(send, 401, UNAUTHORIZED_BODY)
        return
    # read the full request body
    msg = await receive()
    body = msg.get("body", b"")
    if msg.get("more_body"):
        parts = [body]
        while msg.get("more_body"):
            msg = await receive()
            parts.append(msg.get("body", b""))
        body = b"".join(parts)
    try:
        async with _get_session().post(UPSTREAM_URL, data=body, headers=_JSON_HDRS) as r:
            ctype = r.headers.get("Content-Type", "application/json").encode()
            if ctype.startswith(b"text/event-stream"):
                await send(
                    {
                        "type": "http.response.start",
                        "status": r.status,
                        "headers": [(b"content-type", ctype), (b"cache-control", b"no-cache")],
                    }
                )
                async for chunk in r.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            data = await r.read()
            status = r.status
    except aiohttp.ClientError:
        await _simple(send, 502, BAD_GATEWAY_BODY)
        return
    await _simple(send, status, data, ctype)
