"""A store that may open after the gateway has started: the gateway serves while its database is unreachable and
takes the database into use once it answers.

    StoreHandle()                        given, once, at start, to all that uses the database (auth, the ledger,
                                         retention, the governor, the API handlers); none of them asks whether
                                         it is open
      before it is open                  every store call raises :class:`~lockgate.storage.base.Unreachable`
                                         at once: the API answers 503 ``store_unavailable``, auth serves what it
                                         has cached, the ledger keeps rows in its spool, as in any outage
      open(opener)                       one attempt: the store ``opener`` returns (connected and migrated) is
                                         taken into use; ``opener``'s errors are raised as they are
      keep_opening(opener, backoff)      attempts until one succeeds, :class:`Backoff` apart: Unreachable is
                                         expected (a debug line); any other error is logged once per message
      once it is open                    every store call is the opened store's own bound method, kept in the
                                         handle's instance dictionary: no extra await, lock or check per call
      close()                            closes the opened store; the handle is then not open again
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from lockgate.errors import describe
from lockgate.storage.base import Store, Unreachable

__all__ = ["NOT_OPEN", "Backoff", "StoreHandle"]

log = logging.getLogger("lockgate")

NOT_OPEN = "the database is not connected yet (lockgate keeps trying to reach it)"

# Every call of the Store protocol (its base protocols are defined beside it), but close, which the handle has.
_CALLS = frozenset(
    name
    for protocol in Store.__mro__
    if protocol.__module__ == Store.__module__
    for name, value in vars(protocol).items()
    if callable(value) and not name.startswith("_")
) - {"close"}


async def _not_open(*args: object, **kwargs: object) -> Any:
    raise Unreachable(NOT_OPEN)


class Backoff:
    """The waits between attempts: ``first`` seconds, doubling up to ``cap``, each spread by ±``jitter`` (a
    fraction) so that instances started together do not knock together."""

    def __init__(
        self, first: float = 0.5, cap: float = 8.0, jitter: float = 0.25, rand: Callable[[], float] = random.random
    ) -> None:
        self.first, self.cap, self.jitter = first, cap, jitter
        self._rand = rand
        self._base = first

    def next(self) -> float:
        """The next wait, in seconds."""
        base, self._base = self._base, min(self._base * 2, self.cap)
        return base * (1 - self.jitter + 2 * self.jitter * self._rand())


class StoreHandle:
    """A :class:`~lockgate.storage.base.Store` whose database is opened when it can be; see the module docstring."""

    def __init__(self) -> None:
        self._store: Store | None = None

    @property
    def is_open(self) -> bool:
        return self._store is not None

    def __getattr__(self, name: str) -> Any:
        """Reached only for names the instance dictionary lacks: a store call before the store is open."""
        if name in _CALLS:
            return _not_open
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    async def open(self, opener: Callable[[], Awaitable[Store]]) -> None:
        """Open the store with ``opener`` and take it into use; ``opener``'s error if it fails."""
        if self._store is not None:
            raise RuntimeError("the store is open already")
        store = await opener()
        for name in _CALLS:
            setattr(self, name, getattr(store, name))  # into the instance dictionary: found before __getattr__
        self._store = store

    async def keep_opening(
        self,
        opener: Callable[[], Awaitable[Store]],
        backoff: Backoff | None = None,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> int:
        """Wait, then :meth:`open`, until it succeeds (the caller has just tried); how many attempts it took. Runs
        until it succeeds or is cancelled."""
        backoff = backoff or Backoff()
        told: set[str] = set()
        attempts = 0
        while True:
            await sleep(backoff.next())
            attempts += 1
            try:
                await self.open(opener)
            except Unreachable as exc:
                log.debug("database: still unreachable (%s)", describe(exc))
            except Exception as exc:  # reached, but refused (a password, a newer schema): may be fixed there
                message = describe(exc)
                if message not in told:
                    told.add(message)
                    log.error("database: it answers but cannot be used (%s); lockgate keeps trying", message)
            else:
                return attempts

    async def close(self) -> None:
        store, self._store = self._store, None
        for name in _CALLS:
            self.__dict__.pop(name, None)
        if store is not None:
            await store.close()
