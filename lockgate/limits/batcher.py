"""Batcher: the script calls made during one event-loop turn go to Redis as one command, one round trip.

Several calls become one run of :data:`~lockgate.limits.scripts.BATCH` (Redis runs the whole batch atomically);
one call is its own EVALSHA. Commands are packed by hand: redis-py's packing cost more CPU than everything else a
governed request did. A ``then`` given with a call turns its reply into its result before any caller of the
batch resumes, so what one reply changes in this process (a lease granted) is seen by every caller of the batch;
``lost`` gets the result (or the exception) of a call whose caller stopped waiting (was cancelled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError, RedisError, ResponseError

from lockgate.limits.scripts import BATCH, BATCH_SCRIPT, Script

__all__ = ["Batcher", "Call"]

Call = tuple[Script, list[str], list[str]]  # a script, its keys, its arguments
Then = Callable[[Any], Any]
Lost = Callable[[Any], None]


class Batcher:
    """Sends the script calls made during one event-loop turn to Redis as one pipeline: one write and one
    round trip for all of them. A caller that stops waiting does not stop the call."""

    def __init__(self, client: redis.asyncio.Redis, timeout: float | None = None) -> None:
        self._client = client
        self._timeout = timeout  # one timer for the whole batch: its callers need none of their own
        self._queue: list[tuple[Call, Then | None, Lost | None, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.calls = 0  # script calls sent (a batch of n counts n)
        self.round_trips = 0

    def call(
        self, script: Script, keys: list[str], args: list[str], then: Then | None = None, lost: Lost | None = None
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:  # the sender starts on the loop's next turn, with every call made until then
            task = loop.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        self._queue.append(((script, keys, args), then, lost, future))
        return future

    async def _send(self) -> None:
        batch, self._queue = self._queue, []
        self.calls += len(batch)
        try:
            async with asyncio.timeout(self._timeout):
                results = await self._pipeline([call for call, _, _, _ in batch], load=False)
                missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
                if missing:  # a restarted or flushed server: EVAL loads the script
                    again = await self._pipeline([batch[i][0] for i in missing], load=True)
                    for i, result in zip(missing, again, strict=True):
                        results[i] = result
        except Exception as exc:
            for _, _, lost, future in batch:
                if not future.done():
                    future.set_exception(exc)
                elif lost is not None:
                    lost(exc)
            return
        except BaseException as exc:  # cancelled (close): so are its callers
            for _, _, lost, future in batch:
                if not future.cancel() and lost is not None:
                    lost(exc)
            raise
        outcomes: list[tuple[bool, Any]] = []
        for (_, then, _, _), result in zip(batch, results, strict=True):
            if isinstance(result, Exception) or then is None:
                outcomes.append((isinstance(result, Exception), result))
                continue
            try:
                outcomes.append((False, then(result)))
            except Exception as exc:  # pragma: no cover - a bug in a then: its caller sees it
                outcomes.append((True, exc))
        for (_, _, lost, future), (failed, outcome) in zip(batch, outcomes, strict=True):
            if future.done():
                if lost is not None:
                    lost(outcome)
            elif failed:
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def ping(self) -> None:
        """One PING on a pooled connection (bounded by the timeout): raises unless Redis answers."""
        async with asyncio.timeout(self._timeout):
            reply = await self._roundtrip(b"*1\r\n$4\r\nPING\r\n")
        if isinstance(reply, Exception):
            raise reply

    async def _pipeline(self, calls: list[Call], *, load: bool) -> list[Any]:
        """The calls as one script run (BATCH) when there are several, else the one call's own script. A
        NOSCRIPT reply is the result of the call(s) it stands for: the caller retries them with EVAL."""
        self.round_trips += 1
        if len(calls) == 1:
            script, keys, args = calls[0]
            return [await self._roundtrip(_pack(b"EVAL" if load else b"EVALSHA", script.text if load else script.sha,
                                                keys, args))]  # fmt: skip
        header = "".join(f"{script.code} {len(keys)} {len(args)} " for script, keys, args in calls)
        all_keys = [key for _, keys, _ in calls for key in keys]
        all_args = [header, *(arg for _, _, args in calls for arg in args)]
        data = _pack(b"EVAL" if load else b"EVALSHA", BATCH if load else BATCH_SCRIPT.sha, all_keys, all_args)
        reply = await self._roundtrip(data)
        if isinstance(reply, Exception):
            return [reply] * len(calls)
        return list(reply)

    async def _roundtrip(self, data: bytes) -> Any:
        """One packed command on one pooled connection: its reply, or the error reply as an exception object."""
        pool = self._client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            if await _stale(conn):  # its server closed it (a restart) since its last use: not an outage
                await conn.disconnect()
                await conn.connect()
            await conn.send_packed_command(data, check_health=False)
            try:
                return await conn.read_response()
            except ResponseError as exc:
                return exc
        except BaseException:
            await conn.disconnect()  # the reply may still be on its way: never reuse the connection
            raise
        finally:
            await pool.release(conn)

    async def close(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)


async def _stale(conn: Any) -> bool:
    """Whether a pooled connection cannot carry a command: the server closed it (it was killed or restarted:
    end of file), or bytes no command asked for wait on it. redis-py's pool checks this when it hands a
    connection out, but not with maintenance notifications on (its default, "auto", with RESP3): without
    this, every connection a restarted server's predecessor left in the pool failed its next call once, and
    each such failure put the limiter in degraded mode (counting alone) for a second."""
    check = getattr(conn, "can_read", None) or conn.can_read_destructive  # redis-py >= 8; before
    try:
        return bool(await check())
    except (RedisError, OSError):
        return True


def _pack(command: bytes, script: str, keys: list[str], args: list[str]) -> bytes:
    """One Redis command in RESP: ``command script numkeys key... arg...``."""
    parts = [script.encode(), str(len(keys)).encode(), *(k.encode() for k in keys), *(a.encode() for a in args)]
    out = [b"*%d\r\n$%d\r\n%s\r\n" % (len(parts) + 1, len(command), command)]
    out.extend(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
    return b"".join(out)
