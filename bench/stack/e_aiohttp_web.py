"""Candidate e: aiohttp's own web server (uvloop, no access log) + one shared aiohttp ClientSession."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web
from common import (
    BAD_GATEWAY_BODY,
    CHAT_PATH,
    NOT_FOUND_BODY,
    UNAUTHORIZED_BODY,
    UPSTREAM_URL,
    auth_ok,
    port_from_argv,
)

SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


async def chat(request: web.Request) -> web.StreamResponse:
    auth = request.headers.get("Authorization")
    if not auth_ok(auth.encode() if auth is not None else None):
        return web.Response(status=401, body=UNAUTHORIZED_BODY, content_type="application/json")
    body = await request.read()
    session = request.app[SESSION]
    try:
        async with session.post(UPSTREAM_URL, data=body, headers={"Content-Type": "application/json"}) as r:
            ctype = r.headers.get("Content-Type", "application/json")
            if ctype.startswith("text/event-stream"):
                sse_headers = {"Content-Type": ctype, "Cache-Control": "no-cache"}
                resp = web.StreamResponse(status=r.status, headers=sse_headers)
                await resp.prepare(request)
                async for chunk in r.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            data = await r.read()
            return web.Response(status=r.status, body=data, headers={"Content-Type": ctype})
    except aiohttp.ClientError:
        return web.Response(status=502, body=BAD_GATEWAY_BODY, content_type="application/json")


async def not_found(request: web.Request) -> web.Response:
    return web.Response(status=404, body=NOT_FOUND_BODY, content_type="application/json")


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=60, ttl_dns_cache=300)
    app[SESSION] = aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=600)
    )
    yield
    await app[SESSION].close()


def make_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(_session_ctx)
    app.router.add_post(CHAT_PATH, chat)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=port_from_argv(),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
