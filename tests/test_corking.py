"""CorkedTransport: writes of one loop turn leave as one write, in order, and nothing is held past the turn."""

from __future__ import annotations

import asyncio
from typing import Any

from lockgate.corking import CorkedTransport


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


def corked(loop: asyncio.AbstractEventLoop) -> tuple[CorkedTransport, Recorder]:
    raw = Recorder()
    return CorkedTransport(raw, loop), raw  # type: ignore[arg-type]


def test_one_turn_one_write() -> None:
    async def main() -> None:
        transport, raw = corked(asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"")
        transport.write(b"body")
        assert raw.writes == []
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        transport.write(b"next turn")
        await asyncio.sleep(0)
        assert raw.writes[-1] == b"next turn" and len(raw.writes) == 2

    asyncio.run(main())


def test_close_flushes_first_abort_drops() -> None:
    async def main() -> None:
        transport, raw = corked(asyncio.get_running_loop())
        transport.write(b"last bytes")
        transport.close()
        assert raw.writes == [b"last bytes"] and raw.closed
        transport.write(b"after close")
        await asyncio.sleep(0)
        assert raw.writes == [b"last bytes"]  # a closing transport gets nothing more

        transport, raw = corked(asyncio.get_running_loop())
        transport.write(b"never sent")
        transport.abort()
        await asyncio.sleep(0)
        assert raw.writes == [] and raw.aborted

    asyncio.run(main())


def test_other_calls_reach_the_transport() -> None:
    async def main() -> None:
        transport, _ = corked(asyncio.get_running_loop())
        assert transport.get_extra_info("peername") == "info:peername"

    asyncio.run(main())
