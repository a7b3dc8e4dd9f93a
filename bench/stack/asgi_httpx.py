"""Raw ASGI app (no framework) proxying chat completions with one shared httpx.AsyncClient (candidate b)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
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

_client: httpx.AsyncClient | None = None
_JSON_HDRS = {"Content-Type": "application/json"}


def _get_client() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=512, keepalive_expiry=60),
            timeout=httpx.Timeout(600.0),
        )
    return _client


async def _simple(send: Send, status: int, body: bytes, ctype: bytes = JSON_CT) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            _get_client()
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            if _client is not None:
                await _client.aclose()
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
    msg = await receive()
    body = msg.get("body", b"")
    if msg.get("more_body"):
        parts = [body]
        while msg.get("more_body"):
            msg = await receive()
            parts.append(msg.get("body", b""))
        body = b"".join(parts)
    client = _get_client()
    req = client.build_request("POST", UPSTREAM_URL, content=body, headers=_JSON_HDRS)
    try:
        r = await client.send(req, stream=True)
    except httpx.HTTPError:
        await _simple(send, 502, BAD_GATEWAY_BODY)
        return
    try:
        ctype = r.headers.get("content-type", "application/json").encode()
        if ctype.startswith(b"text/event-stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": r.status_code,
                    "headers": [(b"content-type", ctype), (b"cache-control", b"no-cache")],
                }
            )
            async for chunk in r.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = await r.aread()
    finally:
        await r.aclose()
    await _simple(send, r.status_code, data, ctype)
