"""Tests of the TCP proxy itself, in front of a small echo server."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from .tcp_proxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the proxy resets connections: that is what it is for
            while data := self.request.recv(4096):
                self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with TcpProxy("127.0.0.1", server.server_address[1]) as proxy:
            yield proxy
    finally:
        server.shutdown()
        server.server_close()


def connect(proxy: TcpProxy, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=timeout)


def echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def test_forwards_both_ways(proxy: TcpProxy) -> None:
    with connect(proxy) as a, connect(proxy) as b:
        assert echo(a, b"hello") == b"hello"
        assert echo(b, b"x" * 100_000) == b"x" * 100_000
        assert proxy.connections == 2 and proxy.mode == "forward"


def test_refuse_resets_open_connections_and_refuses_new_ones_until_forward(proxy: TcpProxy) -> None:
    with connect(proxy) as open_one:
        assert echo(open_one, b"before") == b"before"
        proxy.refuse()
        with pytest.raises(ConnectionResetError):
            open_one.recv(10)
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    proxy.forward()
    with connect(proxy) as again:  # the same port again
        assert echo(again, b"back") == b"back"


def test_cut_resets_open_connections_and_keeps_listening(proxy: TcpProxy) -> None:
    with connect(proxy) as open_one:
        assert echo(open_one, b"one") == b"one"
        proxy.cut()
        with pytest.raises(ConnectionResetError):
            open_one.recv(10)
    with connect(proxy) as fresh:
        assert echo(fresh, b"three") == b"three"


def test_blackhole_holds_bytes_and_new_connections_until_forward(proxy: TcpProxy) -> None:
    with connect(proxy, timeout=0.3) as open_one:
        assert echo(open_one, b"first") == b"first"
        proxy.blackhole()
        open_one.sendall(b"held")
        with pytest.raises(TimeoutError):
            open_one.recv(10)
        held_new = connect(proxy, timeout=0.3)  # accepted: the handshake is the kernel's
        held_new.sendall(b"new")
        with pytest.raises(TimeoutError):
            held_new.recv(10)
        proxy.forward()
        open_one.settimeout(2)
        held_new.settimeout(2)
        assert open_one.recv(10) == b"held"  # the partition healed: nothing was lost
        assert held_new.recv(10) == b"new"
        held_new.close()
