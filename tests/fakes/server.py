"""The plumbing shared by the fake upstreams: a loopback aiohttp server that records every request.

:class:`FakeServer` runs an aiohttp.web server on 127.0.0.1 (a free port) in a background thread with its own event
loop, so synchronous pytest tests can point a gateway (or an official SDK) at ``fake.url``. Each request is read,
its body parsed as JSON when it is JSON, and recorded in ``FakeServer.requests`` as a :class:`RecordedRequest`
before the subclass's :meth:`FakeServer._dispatch` routes and answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web

__all__ = ["FakeServer", "RecordedRequest"]


@dataclass
class RecordedRequest:
    """One HTTP request as received by the fake (recorded before it is answered)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # parsed body; None when empty or not JSON (typed Any so tests can index it directly)


class FakeServer(ABC):
    """A fake upstream on 127.0.0.1: lifecycle, request recording and connection-dropping helpers.

    Subclasses implement :meth:`_dispatch` (routing, auth, faults, replies) and may override
    :meth:`_recorded_path`. ``start()`` / ``stop()`` or ``with Fake...() as fake:``; ``_lock`` guards ``requests``
    and may guard subclass state too.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind 127.0.0.1 on a free port and serve from a background thread; returns self."""
        name = type(self).__name__
        if self._thread is not None:
            raise RuntimeError(f"{name} already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        thread_name = "fake-" + name.removeprefix("Fake").lower()  # FakeOpenAI -> fake-openai
        thread = threading.Thread(target=self._run_loop, args=(loop,), name=thread_name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._serve(sock), loop).result(timeout=10)
        except BaseException:
            self.stop()
            sock.close()
            raise
        return self

    def stop(self) -> None:
        """Stop serving (in-flight handlers get at most ~1 s) and join the thread; idempotent."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without any API version prefix, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self.requests:
                raise AssertionError(f"{type(self).__name__} received no requests")
            return self.requests[-1]

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    # -- request handling ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Read and record the request, then let :meth:`_dispatch` answer it."""
        body = await request.read()
        payload: Any | None = None
        bad_json = False
        if body:
            try:
                payload = json.loads(body)
            except ValueError:
                bad_json = True
        recorded = RecordedRequest(
            method=request.method,
            path=self._recorded_path(request),
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            json=payload,
        )
        with self._lock:
            self.requests.append(recorded)
        return await self._dispatch(request, recorded, bad_json=bad_json)

    @staticmethod
    def _recorded_path(request: web.Request) -> str:
        """The path as recorded in :attr:`RecordedRequest.path`: the decoded path, without the query."""
        return request.path

    @abstractmethod
    async def _dispatch(self, request: web.Request, recorded: RecordedRequest, *, bad_json: bool) -> web.StreamResponse:
        """Route and answer a recorded request.

        ``recorded.body`` is the raw body and ``recorded.json`` its parsed value (None when the body is empty or not
        JSON); ``bad_json`` is true when the body was not empty and not valid JSON.
        """

    # -- connection faults -----------------------------------------------------------------------------

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # nothing more to send; aiohttp drops the handler quietly

    async def _send_half_then_abort(
        self, request: web.Request, data: bytes, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        """A 200 ``application/json`` response announcing ``len(data)`` bytes that sends half of them, then aborts."""
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_type = "application/json"
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        await asyncio.sleep(0.05)  # let the bytes leave before the connection is torn down
        return self._abort(request)
