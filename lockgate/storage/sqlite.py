"""The SQLite backend (the default): one file, one aiosqlite connection, WAL mode, foreign keys on.

aiosqlite runs the connection on its own thread; an ``asyncio.Lock`` makes each operation (every write is a
``BEGIN IMMEDIATE`` transaction) whole, so concurrent tasks never interleave inside one another's transaction.
Values travel as ``?`` / ``:name`` parameters only; JSON as TEXT, timestamps as ISO-8601 UTC TEXT with
microseconds (fixed width, so text order is time order).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from lockgate.storage.base import Conflict, KeyRecord, StorageError, apply_changes, check_record
from lockgate.storage.migrations import Dialect, upgrade

__all__ = ["SqliteStore"]

_INSERT = """INSERT INTO keys (
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_SELECT_ONE = """SELECT
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend
FROM keys WHERE token_hash = ?"""
_UPDATE = """UPDATE keys SET key_name = ?, key_alias = ?, user_id = ?, team_id = ?, models = ?, max_budget = ?,
    budget_duration = ?, tpm_limit = ?, rpm_limit = ?, max_parallel_requests = ?, metadata = ?, blocked = ?,
    expires = ?, created_at = ?, updated_at = ?, spend = ?
    WHERE token_hash = ?"""
_DELETE = "DELETE FROM keys WHERE token_hash = ?"
_LIST = """SELECT
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend
FROM keys WHERE (:user_id IS NULL OR user_id = :user_id) AND (:team_id IS NULL OR team_id = :team_id)
ORDER BY created_at, token_hash LIMIT :limit OFFSET :offset"""
_HAS_SCHEMA_TABLE = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lockgate_schema'"
_SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) FROM lockgate_schema"
_RECORD_VERSION = "INSERT INTO lockgate_schema (version, applied_at) VALUES (?, ?)"
_PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA foreign_keys = ON", "PRAGMA busy_timeout = 5000")

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime(_TIME_FORMAT)


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def _to_row(key: KeyRecord) -> tuple[Any, ...]:
    try:
        models, metadata = orjson.dumps(list(key.models)).decode(), orjson.dumps(key.metadata).decode()
    except TypeError as exc:
        raise ValueError(f"metadata is not JSON-serialisable: {exc}") from None
    return (
        key.token_hash, key.key_name, key.key_alias, key.user_id, key.team_id, models, key.max_budget,
        key.budget_duration, key.tpm_limit, key.rpm_limit, key.max_parallel_requests, metadata, key.blocked,
        _time(key.expires), _time(key.created_at), _time(key.updated_at), key.spend,
    )  # fmt: skip


def _from_row(row: Sequence[Any]) -> KeyRecord:
    created_at, updated_at = _parse_time(row[14]), _parse_time(row[15])
    assert created_at is not None and updated_at is not None
    return KeyRecord(
        token_hash=row[0], key_name=row[1], key_alias=row[2], user_id=row[3], team_id=row[4],
        models=tuple(orjson.loads(row[5])), max_budget=row[6], budget_duration=row[7], tpm_limit=row[8],
        rpm_limit=row[9], max_parallel_requests=row[10], metadata=orjson.loads(row[11]), blocked=bool(row[12]),
        expires=_parse_time(row[13]), created_at=created_at, updated_at=updated_at, spend=row[16],
    )  # fmt: skip


def _conflict(exc: sqlite3.IntegrityError) -> Conflict:
    return Conflict("key_alias" if "key_alias" in str(exc) else "token_hash")


class SqliteStore:
    """A :class:`~lockgate.storage.base.Store` in one SQLite file."""

    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite database {path}: {exc}") from exc
        store = cls(conn)
        try:
            for pragma in _PRAGMAS:
                await conn.execute(pragma)
            await upgrade(store)
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        await self._conn.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def _fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
        async with self._lock, self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    # --- migrations (SchemaConnection) -----------------------------------------------------------

    async def schema_version(self) -> int:
        async with self._lock:
            return await self._read_version()

    async def _read_version(self) -> int:
        async with self._conn.execute(_HAS_SCHEMA_TABLE) as cursor:
            if await cursor.fetchone() is None:
                return 0
        async with self._conn.execute(_SCHEMA_VERSION) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0

    async def apply(self, version: int, statements: Sequence[str]) -> bool:
        async with self._transaction() as conn:
            if await self._read_version() >= version:
                return False
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(_RECORD_VERSION, (version, _time(datetime.now(UTC))))
        return True

    # --- keys ------------------------------------------------------------------------------------

    async def insert_key(self, key: KeyRecord) -> None:
        check_record(key)
        row = _to_row(key)
        try:
            async with self._transaction() as conn:
                await conn.execute(_INSERT, row)
        except sqlite3.IntegrityError as exc:
            raise _conflict(exc) from None

    async def get_key(self, token_hash: str) -> KeyRecord | None:
        rows = await self._fetchall(_SELECT_ONE, (token_hash,))
        return _from_row(rows[0]) if rows else None

    async def update_key(self, token_hash: str, /, **changes: Any) -> KeyRecord | None:
        try:
            async with self._transaction() as conn:
                async with conn.execute(_SELECT_ONE, (token_hash,)) as cursor:
                    row = await cursor.fetchone()
                if row is None:
                    return None
                changed = apply_changes(_from_row(row), changes)
                values = _to_row(changed)
                await conn.execute(_UPDATE, (*values[1:], values[0]))
        except sqlite3.IntegrityError as exc:
            raise _conflict(exc) from None
        return changed

    async def delete_keys(self, token_hashes: Sequence[str]) -> int:
        if isinstance(token_hashes, str):
            raise ValueError("token_hashes must be a sequence of hashes, not one string")
        async with self._transaction() as conn:
            cursor = await conn.executemany(_DELETE, [(h,) for h in token_hashes])
            return max(cursor.rowcount, 0)

    async def list_keys(
        self, *, user_id: str | None = None, team_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[KeyRecord]:
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        params = {"user_id": user_id, "team_id": team_id, "limit": limit, "offset": offset}
        return [_from_row(row) for row in await self._fetchall(_LIST, params)]
