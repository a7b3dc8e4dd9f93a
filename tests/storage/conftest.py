"""Fixtures for the storage contract suite: one event loop per test, and each backend behind a small harness.

``backend`` is parametrised over SQLite (a file in tmp_path) and PostgreSQL (the machine's server, a fresh
schema per test, dropped afterwards). An unreachable PostgreSQL fails the test: it is never skipped.
Each harness also gives raw access (run SQL beside the store, dump what is stored) for the tests that
look under the interface; ``make_old_database`` builds a database as an older lockgate left it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Callable, Coroutine, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
import pytest

from lockgate.storage import Store, migrations, open_store

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

POSTGRES_URL = os.environ.get("LOCKGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class Backend(Protocol):
    name: str

    async def open(self) -> Store: ...
    async def execute(self, sql: str) -> None: ...
    async def fetch(self, sql: str) -> list[tuple[Any, ...]]: ...
    async def dump(self) -> bytes: ...


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def open(self) -> Store:
        return await open_store(None, sqlite_path=self.path)

    async def execute(self, sql: str) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.execute(sql)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as conn:
            return [tuple(row) for row in conn.execute(sql)]

    async def dump(self) -> bytes:
        """Every byte of the database file and its WAL / shared-memory companions."""
        return b"".join(p.read_bytes() for p in sorted(self.path.parent.glob(self.path.name + "*")))


class PostgresBackend:
    name = "postgres"

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.url = f"{POSTGRES_URL}?search_path={schema}"

    async def open(self) -> Store:
        return await open_store(self.url, sqlite_path=Path("/nonexistent/unused.db"))

    async def _connect(self) -> Any:
        return await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": self.schema})

    async def execute(self, sql: str) -> None:
        conn = await self._connect()
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        conn = await self._connect()
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def dump(self) -> bytes:
        """The keys table as COPY writes it (every column, as text)."""
        conn = await self._connect()
        try:
            out = BytesIO()
            await conn.copy_from_table("keys", schema_name=self.schema, output=out)
            return out.getvalue()
        finally:
            await conn.close()


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    """Run a coroutine to completion on this test's own event loop (stores are bound to the loop they open on)."""
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.close()


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, run: Run[Any]) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield SqliteBackend(tmp_path / "lockgate.db")
    else:
        yield from _postgres_backend(run)


def _postgres_backend(run: Run[Any]) -> Iterator[PostgresBackend]:
    schema = f"lockgate_test_{uuid.uuid4().hex}"  # test-side identifier from a uuid, never a value under test
    try:
        run(_admin(f'CREATE SCHEMA "{schema}"'))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        pytest.fail(f"PostgreSQL unreachable at {POSTGRES_URL}: {exc!r} (the contract suite needs it; never skipped)")
    try:
        yield PostgresBackend(schema)
    finally:
        run(_admin(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def backend_postgres(run: Run[Any]) -> Iterator[PostgresBackend]:
    """A fresh PostgreSQL schema alone, for tests outside the parametrised contract."""
    yield from _postgres_backend(run)


@pytest.fixture
def store(backend: Backend, run: Run[Any]) -> Iterator[Store]:
    opened = run(backend.open())
    try:
        yield opened
    finally:
        run(opened.close())


def make_old_database(backend: Backend, run: Run[Any], version: int, *rows: str) -> None:
    """Create ``backend``'s database at schema ``version`` (only the first ``version`` migrations), then run
    ``rows``: raw INSERT statements, since today's store writes columns an older schema lacks. Timestamps in
    them are ISO-8601 UTC text with microseconds, which both backends read as the same instant."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:version])
        patch.setattr(migrations, "LATEST_VERSION", version)
        old = run(backend.open())
        run(old.close())
    for sql in rows:
        run(backend.execute(sql))
    versions = run(backend.fetch("SELECT version FROM lockgate_schema ORDER BY version"))
    assert versions == [(v,) for v in range(1, version + 1)]
