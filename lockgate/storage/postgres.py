"""The PostgreSQL backend: an asyncpg pool (1 to 10 connections), every write in a transaction.

Values travel as ``$n`` parameters only; JSON as JSONB (sent and read as text), timestamps as TIMESTAMPTZ.
Migrations run under a transaction-scoped advisory lock, so workers starting together upgrade once.
Connection settings (``search_path``, ...) may ride in the URL's query string: asyncpg passes unknown
query parameters to the server as settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson

from lockgate.storage.base import Conflict, KeyRecord, StorageError, apply_changes, check_record
from lockgate.storage.migrations import Dialect, upgrade

__all__ = ["PostgresStore"]

_INSERT = """INSERT INTO keys (
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend
) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15, $16, $17)"""
_SELECT_ONE = """SELECT
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend
FROM keys WHERE token_hash = $1"""
_SELECT_FOR_UPDATE = """SELECT
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend
FROM keys WHERE token_hash = $1 FOR UPDATE"""
_UPDATE = """UPDATE keys SET key_name = $2, key_alias = $3, user_id = $4, team_id = $5, models = $6::jsonb,
    max_budget = $7, budget_duration = $8, tpm_limit = $9, rpm_limit = $10, max_parallel_requests = $11,
    metadata = $12::jsonb, blocked = $13, expires = $14, created_at = $15, updated_at = $16, spend = $17
    WHERE token_hash = $1"""
_DELETE = "DELETE FROM keys WHERE token_hash = ANY($1::text[])"
_LIST = """SELECT
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend
FROM keys WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR team_id = $2)
ORDER BY created_at, token_hash LIMIT $3 OFFSET $4"""
_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(7452011)"  # an arbitrary constant: "lockgate migrations"
_HAS_SCHEMA_TABLE = "SELECT to_regclass('lockgate_schema') IS NOT NULL"
_SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) FROM lockgate_schema"
_RECORD_VERSION = "INSERT INTO lockgate_schema (version, applied_at) VALUES ($1, now())"

_POOL_MIN, _POOL_MAX, _CONNECT_TIMEOUT = 1, 10, 10.0


def _to_row(key: KeyRecord) -> tuple[Any, ...]:
    try:
        models, metadata = orjson.dumps(list(key.models)).decode(), orjson.dumps(key.metadata).decode()
    except TypeError as exc:
        raise ValueError(f"metadata is not JSON-serialisable: {exc}") from None
    return (
        key.token_hash, key.key_name, key.key_alias, key.user_id, key.team_id, models, key.max_budget,
        key.budget_duration, key.tpm_limit, key.rpm_limit, key.max_parallel_requests, metadata, key.blocked,
        key.expires, key.created_at, key.updated_at, float(key.spend),
    )  # fmt: skip


def _from_row(row: Any) -> KeyRecord:
    return KeyRecord(
        token_hash=row[0], key_name=row[1], key_alias=row[2], user_id=row[3], team_id=row[4],
        models=tuple(orjson.loads(row[5])), max_budget=row[6], budget_duration=row[7], tpm_limit=row[8],
        rpm_limit=row[9], max_parallel_requests=row[10], metadata=orjson.loads(row[11]), blocked=row[12],
        expires=row[13], created_at=row[14], updated_at=row[15], spend=row[16],
    )  # fmt: skip


def _conflict(exc: Exception) -> Conflict:
    return Conflict("key_alias" if "key_alias" in (getattr(exc, "constraint_name", None) or "") else "token_hash")


class _MigrationConnection:
    """One pooled connection seen as a :class:`~lockgate.storage.migrations.SchemaConnection`."""

    dialect: Dialect = "postgres"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def schema_version(self) -> int:
        if not await self._conn.fetchval(_HAS_SCHEMA_TABLE):
            return 0
        return int(await self._conn.fetchval(_SCHEMA_VERSION))

    async def apply(self, version: int, statements: Sequence[str]) -> bool:
        async with self._conn.transaction():
            await self._conn.execute(_MIGRATION_LOCK)
            if await self.schema_version() >= version:
                return False
            for statement in statements:
                await self._conn.execute(statement)
            await self._conn.execute(_RECORD_VERSION, version)
        return True


class PostgresStore:
    """A :class:`~lockgate.storage.base.Store` in a PostgreSQL database."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Connect to ``url`` (postgres:// or postgresql://) and bring the schema up to date."""
        try:
            pool = await asyncpg.create_pool(url, min_size=_POOL_MIN, max_size=_POOL_MAX, timeout=_CONNECT_TIMEOUT)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from None
        try:
            async with pool.acquire() as conn:
                await upgrade(_MigrationConnection(conn))
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def insert_key(self, key: KeyRecord) -> None:
        check_record(key)
        row = _to_row(key)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_INSERT, *row)
        except asyncpg.UniqueViolationError as exc:
            raise _conflict(exc) from None

    async def get_key(self, token_hash: str) -> KeyRecord | None:
        row = await self._pool.fetchrow(_SELECT_ONE, token_hash)
        return None if row is None else _from_row(row)

    async def update_key(self, token_hash: str, /, **changes: Any) -> KeyRecord | None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_SELECT_FOR_UPDATE, token_hash)
                if row is None:
                    return None
                changed = apply_changes(_from_row(row), changes)
                await conn.execute(_UPDATE, *_to_row(changed))
        except asyncpg.UniqueViolationError as exc:
            raise _conflict(exc) from None
        return changed

    async def delete_keys(self, token_hashes: Sequence[str]) -> int:
        if isinstance(token_hashes, str):
            raise ValueError("token_hashes must be a sequence of hashes, not one string")
        async with self._pool.acquire() as conn, conn.transaction():
            status: str = await conn.execute(_DELETE, list(token_hashes))
        return int(status.rsplit(" ", 1)[-1])

    async def list_keys(
        self, *, user_id: str | None = None, team_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[KeyRecord]:
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        rows = await self._pool.fetch(_LIST, user_id, team_id, limit, offset)
        return [_from_row(row) for row in rows]
