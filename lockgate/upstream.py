"""The one seam through which the gateway talks to upstreams over HTTP.

:class:`HttpClient` owns a single pooled ``aiohttp`` session for the life of the app (one keep-alive pool
per upstream host). :meth:`HttpClient.send` returns an :class:`UpstreamResponse` once the status line and
headers have arrived; the body is read whole or as chunks. Foreign exceptions are translated here, at the
boundary, into :mod:`lockgate.errors` types whose messages name no URL and no credential.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from lockgate.errors import UpstreamTimeout, UpstreamUnavailable

__all__ = ["HttpClient", "StaticResponse", "Timeouts", "UpstreamRequest", "UpstreamResponse"]


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: Mapping[str, str]
    body: bytes
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Built once per deployment. ``first_byte`` bounds the wait for the response headers;
    ``idle`` bounds each wait for more body; ``total`` bounds a non-streamed exchange."""

    total: float
    first_byte: float
    idle: float
    connect: float = 10.0

    def for_exchange(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.total, sock_connect=self.connect)

    def for_stream(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect, sock_read=self.idle)


class UpstreamResponse(Protocol):
    """What a provider hands back: status and headers now, the body on demand."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream did not finish its response in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable("the upstream connection failed while reading the response") from exc
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream stream stalled") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable("the upstream connection broke during the stream") from exc
        finally:
            self._resp.release()

    def close(self) -> None:
        self._resp.close()


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


class HttpClient:
    """A pooled HTTP/1.1 client; create inside the running event loop, close at shutdown."""

    def __init__(self, *, pool_size: int = 0, keepalive_seconds: float = 60.0) -> None:
        connector = aiohttp.TCPConnector(
            limit=pool_size,
            keepalive_timeout=keepalive_seconds,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "lockgate"},
            trust_env=False,  # proxies and netrc come from config, never implicitly from the environment
        )

    async def send(self, request: UpstreamRequest, *, stream: bool, timeouts: Timeouts) -> UpstreamResponse:
        timeout = timeouts.for_stream() if stream else timeouts.for_exchange()
        try:
            if stream:
                async with asyncio.timeout(timeouts.first_byte):
                    resp = await self._request(request, timeout)
            else:
                resp = await self._request(request, timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable("could not reach the upstream") from exc
        return _AiohttpResponse(resp)

    async def _request(self, request: UpstreamRequest, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        return await self._session.request(
            request.method,
            request.url,
            data=request.body,
            headers=request.headers,
            timeout=timeout,
            allow_redirects=False,  # a redirect could point a credentialed request anywhere
        )

    async def close(self) -> None:
        await self._session.close()
