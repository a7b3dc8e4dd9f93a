"""StoreHandle and Backoff: a store the gateway starts with before its database opens, and the waits between
attempts to open it."""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lockgate.storage import KeyRecord, SchemaTooNew, StorageError, Store, Unreachable, open_store
from lockgate.storage.handle import _CALLS, NOT_OPEN, Backoff, StoreHandle
from tests.storage.conftest import Run


def key(token_hash: str = "a" * 64) -> KeyRecord:
    now = datetime.now(UTC)
    return KeyRecord(
        token_hash=token_hash, key_name="sk-...abcd", key_alias=None, user_id=None, team_id=None, models=(),
        max_budget=None, budget_duration=None, tpm_limit=None, rpm_limit=None, max_parallel_requests=None,
        metadata={}, blocked=False, expires=None, created_at=now, updated_at=now,
    )  # fmt: skip


def sqlite(path: Path) -> Callable[[], Awaitable[Store]]:
    return lambda: open_store(None, sqlite_path=path)


# --- Backoff ---------------------------------------------------------------------------------------------------


def test_backoff_doubles_from_half_a_second_to_its_cap() -> None:
    backoff = Backoff(rand=lambda: 0.5)  # the middle of the jitter: the base itself
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_jitter_spreads_each_wait_by_a_quarter() -> None:
    low, high = Backoff(rand=lambda: 0.0), Backoff(rand=lambda: 0.999999)
    assert [low.next() for _ in range(5)] == [0.375, 0.75, 1.5, 3.0, 6.0]
    assert [round(high.next(), 3) for _ in range(6)] == [0.625, 1.25, 2.5, 5.0, 10.0, 10.0]
    waits = [Backoff().next() for _ in range(200)]  # instances started together do not retry together
    assert min(waits) >= 0.375 and max(waits) <= 0.625 and len(set(waits)) > 100


# --- before it is open -----------------------------------------------------------------------------------------


def test_every_store_call_before_open_raises_unreachable(run: Run[Any]) -> None:
    handle = StoreHandle()
    typed: Store = handle  # the handle is a Store to everything that is given it
    assert not handle.is_open
    assert {"get_key", "insert_key", "insert_spend_log_values", "add_spend", "list_models"} <= _CALLS
    for name in sorted(_CALLS):
        with pytest.raises(Unreachable, match="not connected yet"):
            run(getattr(typed, name)("any", "arguments", at="all"))
    assert issubclass(Unreachable, StorageError) and NOT_OPEN in str(Unreachable(NOT_OPEN))
    with pytest.raises(AttributeError):
        handle.no_such_call  # noqa: B018 - only the Store's calls are answered
    run(handle.close())  # nothing to close


def test_the_store_protocol_calls_are_all_covered() -> None:
    declared = {name for name in dir(Store) if not name.startswith("_") and callable(getattr(Store, name))}
    assert declared - {"close"} == _CALLS


# --- open ------------------------------------------------------------------------------------------------------


def test_once_open_each_call_is_the_stores_own_bound_method(tmp_path: Path, run: Run[Any]) -> None:
    handle = StoreHandle()
    run(handle.open(sqlite(tmp_path / "db.sqlite")))
    assert handle.is_open
    inner = handle._store
    assert inner is not None
    for name in _CALLS:  # found in the instance dictionary: no wrapper, no check, no extra await per call
        method = vars(handle)[name]
        assert method.__self__ is inner and method.__func__ is getattr(type(inner), name)
    run(handle.insert_key(key()))
    found = run(handle.get_key("a" * 64))
    assert found is not None and found.key_name == "sk-...abcd"
    with pytest.raises(RuntimeError, match="open already"):
        run(handle.open(sqlite(tmp_path / "other.sqlite")))
    run(handle.close())
    assert not handle.is_open and not set(vars(handle)) & _CALLS
    with pytest.raises(Unreachable):  # closed: not open again, never the closed store
        run(handle.get_key("a" * 64))


def test_an_opener_that_fails_leaves_the_handle_not_open(run: Run[Any]) -> None:
    async def refused() -> Store:
        raise SchemaTooNew("database schema version 99 is newer than this lockgate")

    handle = StoreHandle()
    with pytest.raises(SchemaTooNew):
        run(handle.open(refused))
    assert not handle.is_open
    with pytest.raises(Unreachable):
        run(handle.list_keys())


# --- keep_opening ----------------------------------------------------------------------------------------------


class Opener:
    """Fails with each of ``failures`` in turn, then opens SQLite at ``path``."""

    def __init__(self, path: Path, *failures: Exception) -> None:
        self.path, self.failures, self.calls = path, list(failures), 0

    async def __call__(self) -> Store:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return await open_store(None, sqlite_path=self.path)


def test_keep_opening_waits_the_backoff_between_attempts(
    tmp_path: Path, run: Run[Any], caplog: pytest.LogCaptureFixture
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    unreachable = Unreachable("cannot connect to PostgreSQL: ConnectionRefusedError")
    opener = Opener(tmp_path / "db.sqlite", unreachable, unreachable, unreachable)
    handle = StoreHandle()
    with caplog.at_level(logging.DEBUG, logger="lockgate"):
        attempts = run(handle.keep_opening(opener, Backoff(rand=lambda: 0.5), sleep=sleep))
    assert attempts == 4 and opener.calls == 4 and handle.is_open
    assert slept == [0.5, 1.0, 2.0, 4.0]  # the caller tried just before: the first attempt waits too
    assert all(r.levelno == logging.DEBUG for r in caplog.records)  # expected while it is down: no noise
    run(handle.close())


def test_keep_opening_says_once_what_refuses_it_and_keeps_trying(
    tmp_path: Path, run: Run[Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def sleep(seconds: float) -> None:
        return None

    too_new = SchemaTooNew("database schema version 99 is newer than this lockgate (12); upgrade lockgate")
    refused = StorageError("cannot connect to PostgreSQL: InvalidPasswordError: password authentication failed")
    opener = Opener(tmp_path / "db.sqlite", too_new, too_new, too_new, refused, refused)
    handle = StoreHandle()
    with caplog.at_level(logging.INFO, logger="lockgate"):
        assert run(handle.keep_opening(opener, sleep=sleep)) == 6
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "newer than this lockgate" in errors[0] and "password" in errors[1]
    run(handle.close())


def test_keep_opening_stops_when_cancelled(run: Run[Any]) -> None:
    async def never() -> Store:
        raise Unreachable("cannot connect to PostgreSQL: TimeoutError")

    async def go() -> None:
        handle = StoreHandle()
        task = asyncio.ensure_future(handle.keep_opening(never, Backoff(first=0.01, cap=0.02)))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not handle.is_open

    run(go())


def test_unreachable_tells_a_lost_database_from_other_errors() -> None:
    """What the HTTP layer answers 503 store_unavailable (not 500): the database's own connection failures."""
    import asyncpg  # type: ignore[import-untyped]

    from lockgate.storage.base import Unreachable, unreachable

    def raised_in(module: str, exc: BaseException) -> BaseException:
        """``exc`` as raised by code of ``module`` (its traceback's frame has that ``__name__``)."""
        fail = types.FunctionType(_raise_it.__code__, {"__name__": module, "_TO_RAISE": exc})
        try:
            fail()
        except BaseException as caught:
            return caught
        raise AssertionError("not raised")

    assert unreachable(Unreachable("not open yet"))
    assert unreachable(asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"))
    assert unreachable(asyncpg.CannotConnectNowError("the database system is starting up"))
    assert unreachable(raised_in("lockgate.storage.postgres", ConnectionResetError("reset by peer")))
    assert unreachable(raised_in("asyncpg.connect_utils", TimeoutError()))
    assert not unreachable(raised_in("lockgate.upstream", ConnectionRefusedError("an upstream, not the database")))
    assert not unreachable(ConnectionRefusedError("no traceback: raised nowhere known"))
    assert not unreachable(asyncpg.UniqueViolationError("a constraint"))
    assert not unreachable(ValueError("a bug"))


_TO_RAISE: BaseException = Exception()


def _raise_it() -> None:
    raise _TO_RAISE  # looked up in the globals it is called with (raised_in above)
