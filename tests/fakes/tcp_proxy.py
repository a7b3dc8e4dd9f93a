"""A TCP forwarder on 127.0.0.1 that tests switch between working and three kinds of broken network.

:class:`TcpProxy` listens on a fixed loopback port and forwards each connection to a target (a database, say),
from an asyncio loop in a background thread, so synchronous tests drive it with plain method calls::

    forward()     pass bytes both ways (the initial state; also how every outage ends)
    refuse()      stop listening (a connect gets ECONNREFUSED) and reset every open connection (RST)
    cut()         reset every open connection; keep listening and forwarding new ones
    blackhole()   accept new connections and hold them, and stop passing bytes on open ones: nothing is answered
                  and nothing fails, as across a network partition. forward() heals it: the held bytes go on,
                  in order, and held connections reach the target then.

The port is chosen below the kernel's ephemeral range, so no outgoing connection can take it while the proxy
is not listening, and refuse() → forward() listens on the same port again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

__all__ = ["Mode", "TcpProxy"]

Mode = Literal["forward", "refuse", "blackhole"]
T = TypeVar("T")

_CHUNK = 1 << 16


class _Link:
    """One client connection and, once made, its connection to the target."""

    __slots__ = ("client", "target", "task")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.target: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        """Close both sides with a TCP reset (SO_LINGER 0), as a dead peer or a firewall would."""
        for writer in (self.client, self.target):
            if writer is not None:
                _reset(writer)
        if self.task is not None:
            self.task.cancel()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``; see the module docstring for the modes."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = _port_outside_ephemeral_range()
        self.accepted = 0  # connections accepted since start
        self._mode: Mode = "forward"
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("TcpProxy already started")
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="tcp-proxy", daemon=True)
        self._loop = loop
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and end the thread; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the switches ----------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def connections(self) -> int:
        """Connections open now (held ones included)."""
        return len(self._links)

    def forward(self) -> None:
        self._call(self._set("forward"))

    def refuse(self) -> None:
        self._call(self._set("refuse"))

    def blackhole(self) -> None:
        self._call(self._set("blackhole"))

    def cut(self) -> None:
        self._call(self._cut())

    # -- inside the loop -------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("TcpProxy not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)

    async def _set(self, mode: Mode) -> None:
        assert self._flowing is not None
        self._mode = mode
        if mode == "refuse":
            if self._server is not None:
                self._server.close()  # the listening socket goes at once; accepted connections are ours to reset
                self._server = None
            await self._cut()
        else:
            await self._listen()
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()  # held connections and bytes go on (after refuse, there are none)

    async def _cut(self) -> None:
        for link in list(self._links):
            link.reset()
        self._links.clear()
        await asyncio.sleep(0)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.accepted += 1
        link = _Link(writer)
        link.task = asyncio.current_task()
        self._links.add(link)
        try:
            await self._flowing.wait()  # a connection made during a black-hole waits here, unanswered
            try:
                target_reader, link.target = await asyncio.open_connection(*self.target)
            except OSError:
                link.reset()
                return
            await asyncio.gather(
                self._pump(reader, link.target), self._pump(target_reader, writer), return_exceptions=True
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._links.discard(link)
            for side in (writer, link.target):
                if side is not None:
                    side.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy until end of file; bytes read during a black-hole wait for forward()."""
        assert self._flowing is not None
        while data := await source.read(_CHUNK):
            await self._flowing.wait()
            sink.write(data)
            await sink.drain()
        sink.close()  # one side ended: end the other (the protocols proxied here do not half-close)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _port_outside_ephemeral_range() -> int:
    """A free loopback port below the range the kernel hands out to outgoing connections."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 49152  # IANA's dynamic range: macOS and BSD
    for _ in range(200):
        port = random.randrange(10_000, max(low, 10_001))
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")
