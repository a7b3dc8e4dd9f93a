"""The SQLite backend (the default): one file, one aiosqlite connection, WAL mode, foreign keys on.

aiosqlite runs the connection on its own thread; an ``asyncio.Lock`` makes each operation (every write is a
``BEGIN IMMEDIATE`` transaction) whole, so concurrent tasks never interleave inside one another's transaction.
Values travel as ``?`` / ``:name`` parameters only; JSON as TEXT, timestamps as ISO-8601 UTC TEXT with
microseconds (fixed width, so text order is time order).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from lockgate.storage.base import (
    SPEND_LOG_FIELDS,
    Charge,
    Conflict,
    EndUserRecord,
    KeyRecord,
    ModelRecord,
    NotFoundError,
    OrgRecord,
    ReportGroup,
    SpendDelta,
    SpendLogRow,
    SpendLogValues,
    StorageError,
    TeamMember,
    TeamRecord,
    UserRecord,
    apply_changes,
    charges_of,
    check_id,
    check_ids,
    check_member,
    check_page,
    check_record,
    check_report,
    check_spend,
    check_spend_filters,
    check_spend_list,
    check_time,
    check_window,
    json_text,
    later,
    merge_charges,
    spend_log_values,
    utc_now,
)
from lockgate.storage.migrations import Dialect, upgrade

__all__ = ["SqliteStore"]

# The keys statements name the columns in KeyRecord's field order (the last nine from migration 4).
_INSERT = """INSERT INTO keys (
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend, aliases,
    allowed_routes, soft_budget, model_max_budget, model_rpm_limit, model_tpm_limit, organization_id, created_by,
    updated_by
) VALUES (
    ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
)"""
_SELECT_ONE = """SELECT
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend, aliases,
    allowed_routes, soft_budget, model_max_budget, model_rpm_limit, model_tpm_limit, organization_id, created_by,
    updated_by
FROM keys WHERE token_hash = ?"""
_UPDATE = """UPDATE keys SET key_name = ?, key_alias = ?, user_id = ?, team_id = ?, models = ?, max_budget = ?,
    budget_duration = ?, tpm_limit = ?, rpm_limit = ?, max_parallel_requests = ?, metadata = ?, blocked = ?,
    expires = ?, created_at = ?, updated_at = ?, spend = ?, aliases = ?, allowed_routes = ?, soft_budget = ?,
    model_max_budget = ?, model_rpm_limit = ?, model_tpm_limit = ?, organization_id = ?, created_by = ?,
    updated_by = ?
    WHERE token_hash = ?"""
_DELETE = "DELETE FROM keys WHERE token_hash = ?"
_LIST = """SELECT
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend, aliases,
    allowed_routes, soft_budget, model_max_budget, model_rpm_limit, model_tpm_limit, organization_id, created_by,
    updated_by
FROM keys WHERE (:user_id IS NULL OR user_id = :user_id) AND (:team_id IS NULL OR team_id = :team_id)
ORDER BY created_at, token_hash LIMIT :limit OFFSET :offset"""
_KEY_EXISTS = "SELECT 1 FROM keys WHERE token_hash = ?"
_REKEY = "UPDATE keys SET token_hash = ?, key_name = ?, updated_at = ? WHERE token_hash = ?"

_INSERT_ORG = """INSERT INTO organizations (
    organization_id, organization_alias, models, max_budget, metadata, created_at, updated_at, spend
) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
_SELECT_ORG = """SELECT
    organization_id, organization_alias, models, max_budget, metadata, created_at, updated_at, spend
FROM organizations WHERE organization_id = ?"""
_UPDATE_ORG = """UPDATE organizations SET organization_alias = ?, models = ?, max_budget = ?, metadata = ?,
    created_at = ?, updated_at = ?, spend = ?
    WHERE organization_id = ?"""
_LIST_ORGS = """SELECT
    organization_id, organization_alias, models, max_budget, metadata, created_at, updated_at, spend
FROM organizations ORDER BY created_at, organization_id LIMIT :limit OFFSET :offset"""
_ORG_HAS_TEAMS = "SELECT 1 FROM teams WHERE organization_id = ? LIMIT 1"
_DELETE_ORG = "DELETE FROM organizations WHERE organization_id = ?"

_INSERT_TEAM = """INSERT INTO teams (
    team_id, team_alias, organization_id, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    max_parallel_requests, metadata, blocked, created_at, updated_at, spend, model_aliases, soft_budget,
    model_max_budget, model_rpm_limit, model_tpm_limit
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_SELECT_TEAM = """SELECT
    team_id, team_alias, organization_id, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    max_parallel_requests, metadata, blocked, created_at, updated_at, spend, model_aliases, soft_budget,
    model_max_budget, model_rpm_limit, model_tpm_limit
FROM teams WHERE team_id = ?"""
_UPDATE_TEAM = """UPDATE teams SET team_alias = ?, organization_id = ?, models = ?, max_budget = ?,
    budget_duration = ?, tpm_limit = ?, rpm_limit = ?, max_parallel_requests = ?, metadata = ?, blocked = ?,
    created_at = ?, updated_at = ?, spend = ?, model_aliases = ?, soft_budget = ?, model_max_budget = ?,
    model_rpm_limit = ?, model_tpm_limit = ?
    WHERE team_id = ?"""
_LIST_TEAMS = """SELECT
    team_id, team_alias, organization_id, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    max_parallel_requests, metadata, blocked, created_at, updated_at, spend, model_aliases, soft_budget,
    model_max_budget, model_rpm_limit, model_tpm_limit
FROM teams WHERE (:organization_id IS NULL OR organization_id = :organization_id)
ORDER BY created_at, team_id LIMIT :limit OFFSET :offset"""
_DELETE_TEAM_MEMBERS = "DELETE FROM team_members WHERE team_id = ?"
_DELETE_TEAM = "DELETE FROM teams WHERE team_id = ?"

_INSERT_USER = """INSERT INTO users (
    user_id, user_alias, user_email, user_role, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    metadata, created_at, updated_at, spend
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_SELECT_USER = """SELECT
    user_id, user_alias, user_email, user_role, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    metadata, created_at, updated_at, spend
FROM users WHERE user_id = ?"""
_UPDATE_USER = """UPDATE users SET user_alias = ?, user_email = ?, user_role = ?, models = ?, max_budget = ?,
    budget_duration = ?, tpm_limit = ?, rpm_limit = ?, metadata = ?, created_at = ?, updated_at = ?, spend = ?
    WHERE user_id = ?"""
_LIST_USERS = """SELECT
    user_id, user_alias, user_email, user_role, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    metadata, created_at, updated_at, spend
FROM users
WHERE (:team_id IS NULL OR user_id IN (SELECT m.user_id FROM team_members AS m WHERE m.team_id = :team_id))
ORDER BY created_at, user_id LIMIT :limit OFFSET :offset"""
_DELETE_USER_MEMBERS = "DELETE FROM team_members WHERE user_id = ?"
_DELETE_USER = "DELETE FROM users WHERE user_id = ?"

_INSERT_END_USER = """INSERT INTO end_users (
    user_id, alias, blocked, max_budget, default_model, metadata, created_at, updated_at, spend
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_SELECT_END_USER = """SELECT
    user_id, alias, blocked, max_budget, default_model, metadata, created_at, updated_at, spend
FROM end_users WHERE user_id = ?"""
_UPDATE_END_USER = """UPDATE end_users SET alias = ?, blocked = ?, max_budget = ?, default_model = ?, metadata = ?,
    created_at = ?, updated_at = ?, spend = ?
    WHERE user_id = ?"""
_LIST_END_USERS = """SELECT
    user_id, alias, blocked, max_budget, default_model, metadata, created_at, updated_at, spend
FROM end_users ORDER BY created_at, user_id LIMIT :limit OFFSET :offset"""
_DELETE_END_USER = "DELETE FROM end_users WHERE user_id = ?"
# Fixed-width ISO text: MAX keeps updated_at from moving backwards.
_BLOCK_END_USER = "UPDATE end_users SET blocked = ?, updated_at = MAX(updated_at, ?) WHERE user_id = ?"

_INSERT_MODEL = """INSERT INTO models (
    model_id, model_name, litellm_params, model_info, created_by, created_at, updated_at
) VALUES (?, ?, ?, ?, ?, ?, ?)"""
_SELECT_MODEL = """SELECT
    model_id, model_name, litellm_params, model_info, created_by, created_at, updated_at
FROM models WHERE model_id = ?"""
_UPDATE_MODEL = """UPDATE models SET model_name = ?, litellm_params = ?, model_info = ?, created_by = ?,
    created_at = ?, updated_at = ?
    WHERE model_id = ?"""
_LIST_MODELS = """SELECT
    model_id, model_name, litellm_params, model_info, created_by, created_at, updated_at
FROM models ORDER BY created_at, model_id LIMIT :limit OFFSET :offset"""
_DELETE_MODEL = "DELETE FROM models WHERE model_id = ?"

# Spend. The window upsert adds atomically; updated_at never moves backwards (fixed-width ISO text, so MAX works).
_ADD_WINDOW_SPEND = """INSERT INTO budget_spend (scope, window_id, spent, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (scope, window_id) DO UPDATE SET spent = budget_spend.spent + excluded.spent,
    updated_at = MAX(budget_spend.updated_at, excluded.updated_at)"""
_WINDOW_SPEND = "SELECT spent FROM budget_spend WHERE scope = ? AND window_id = ?"
_DELETE_SPEND_BEFORE = "DELETE FROM budget_spend WHERE updated_at < ? AND window_id <> ''"
# One fixed statement per entity kind (identifiers are never built from input); a missing row updates nothing.
_ADD_ENTITY_SPEND = {
    "key": "UPDATE keys SET spend = spend + ? WHERE token_hash = ?",
    "user": "UPDATE users SET spend = spend + ? WHERE user_id = ?",
    "team": "UPDATE teams SET spend = spend + ? WHERE team_id = ?",
    "org": "UPDATE organizations SET spend = spend + ? WHERE organization_id = ?",
    "end_user": "UPDATE end_users SET spend = spend + ? WHERE user_id = ?",
}

# The spend ledger. Columns in SpendLogRow's field order (SPEND_LOG_FIELDS). The list and report statements are
# assembled from the constants here: which filters are set picks fragments; no value is ever part of the text.
_IN_CHUNK = 500  # request ids per "IN (?, ...)" (SQLite allows 32766 variables)
_STORED_REQUEST_IDS = "SELECT request_id FROM spend_logs WHERE request_id IN ({marks})"  # marks: '?' only
_INSERT_SPEND_LOG = """INSERT INTO spend_logs (
    request_id, started_at, key_hash, key_alias, user_id, team_id, organization_id, end_user, model, model_group,
    deployment_id, provider, prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    total_tokens, cost, cost_estimated, latency_ms, ttft_ms, status, error_type, stream, client_disconnected, route,
    metadata, messages, response
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (request_id) DO NOTHING"""
_SPEND_FILTERS = {
    "start": "started_at >= :start",
    "end": "started_at < :end",
    "key_hash": "key_hash = :key_hash",
    "user_id": "user_id = :user_id",
    "team_id": "team_id = :team_id",
    "model_group": "model_group = :model_group",
    "request_id": "request_id = :request_id",
}
_LIST_SPEND_LOGS = """SELECT
    request_id, started_at, key_hash, key_alias, user_id, team_id, organization_id, end_user, model, model_group,
    deployment_id, provider, prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    total_tokens, cost, cost_estimated, latency_ms, ttft_ms, status, error_type, stream, client_disconnected, route,
    metadata, messages, response
FROM spend_logs WHERE {where} ORDER BY started_at DESC, request_id DESC LIMIT :limit OFFSET :offset"""
_REPORT_GROUPS: dict[str, str] = {  # fixed-width UTC ISO text: its first ten characters are the UTC day
    "day": "substr(started_at, 1, 10)", "key": "key_hash", "team": "team_id", "user": "user_id",
    "end_user": "end_user", "model": "model_group", "provider": "provider",
}  # fmt: skip
_SPEND_REPORT = """SELECT {group} AS grp, COUNT(*), COALESCE(SUM(prompt_tokens), 0),
    COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cost), 0.0)
FROM spend_logs WHERE {where} GROUP BY {group} ORDER BY {order}"""
_DELETE_SPEND_LOGS_BEFORE = "DELETE FROM spend_logs WHERE started_at < ?"
_CLEAR_CONTENT = """UPDATE spend_logs SET messages = NULL, response = NULL
WHERE started_at < :before AND started_at >= :after AND (messages IS NOT NULL OR response IS NOT NULL)"""
_SPEND_BOOLS = frozenset({"cost_estimated", "stream", "client_disconnected"})


def _spend_where(filters: dict[str, object]) -> str:
    """The WHERE clause for the filters that are set (fragments from _SPEND_FILTERS only)."""
    return " AND ".join([_SPEND_FILTERS[name] for name, value in filters.items() if value is not None] or ["1 = 1"])


def _report_sql(group_by: ReportGroup, where: str) -> str:
    group = _REPORT_GROUPS[group_by]
    order = group if group_by == "day" else f"SUM(cost) DESC, {group} IS NULL, {group}"
    return _SPEND_REPORT.format(group=group, where=where, order=order)


def _spend_log_row(values: Sequence[Any]) -> SpendLogRow:
    fields: dict[str, Any] = dict(zip(SPEND_LOG_FIELDS, values, strict=True))
    fields["started_at"] = _parse_time(fields["started_at"])
    for name in _SPEND_BOOLS:
        fields[name] = bool(fields[name])
    for name in ("metadata", "messages", "response"):
        if fields[name] is not None:
            fields[name] = orjson.loads(fields[name])
    return SpendLogRow(**fields)


_ORG_EXISTS = "SELECT 1 FROM organizations WHERE organization_id = ?"
_TEAM_EXISTS = "SELECT 1 FROM teams WHERE team_id = ?"
_USER_EXISTS = "SELECT 1 FROM users WHERE user_id = ?"
_UPSERT_MEMBER = """INSERT INTO team_members (team_id, user_id, role, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role"""
_DELETE_MEMBER = "DELETE FROM team_members WHERE team_id = ? AND user_id = ?"
_SELECT_MEMBER = "SELECT team_id, user_id, role FROM team_members WHERE team_id = ? AND user_id = ?"
_LIST_MEMBERS = """SELECT team_id, user_id, role FROM team_members WHERE team_id = :team_id
ORDER BY created_at, user_id LIMIT :limit OFFSET :offset"""
_TEAMS_OF = """SELECT t.team_id FROM team_members AS m JOIN teams AS t ON t.team_id = m.team_id
WHERE m.user_id = ? ORDER BY t.created_at, t.team_id"""

_HAS_SCHEMA_TABLE = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lockgate_schema'"
_SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) FROM lockgate_schema"
_RECORD_VERSION = "INSERT INTO lockgate_schema (version, applied_at) VALUES (?, ?)"
# busy_timeout first: switching a new file to WAL takes a lock another process (a sibling worker) may hold.
# secure_delete: what is deleted or cleared (prompts past their retention, deleted keys) is overwritten, not
# left in free pages of the file.
_PRAGMAS = (
    "PRAGMA busy_timeout = 5000", "PRAGMA journal_mode = WAL", "PRAGMA foreign_keys = ON", "PRAGMA secure_delete = ON",
)  # fmt: skip

_PREPARE_CHUNK = 64  # ledger rows checked and converted between two turns of the event loop
_INSERT_CHUNK = 64  # ledger rows one executemany() inserts (the event loop runs in between; one transaction)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime(_TIME_FORMAT)


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def _to_row(key: KeyRecord) -> tuple[Any, ...]:
    """The key's values in column order (KeyRecord's field order), JSON as text, times as ISO text."""
    return (
        key.token_hash, key.key_name, key.key_alias, key.user_id, key.team_id,
        json_text("models", list(key.models)), key.max_budget, key.budget_duration, key.tpm_limit, key.rpm_limit,
        key.max_parallel_requests, json_text("metadata", key.metadata), key.blocked, _time(key.expires),
        _time(key.created_at), _time(key.updated_at), key.spend, json_text("aliases", key.aliases),
        json_text("allowed_routes", list(key.allowed_routes)), key.soft_budget,
        json_text("model_max_budget", key.model_max_budget), json_text("model_rpm_limit", key.model_rpm_limit),
        json_text("model_tpm_limit", key.model_tpm_limit), key.organization_id, key.created_by, key.updated_by,
    )  # fmt: skip


def _from_row(row: Sequence[Any]) -> KeyRecord:
    created_at, updated_at = _parse_time(row[14]), _parse_time(row[15])
    assert created_at is not None and updated_at is not None
    return KeyRecord(
        token_hash=row[0], key_name=row[1], key_alias=row[2], user_id=row[3], team_id=row[4],
        models=tuple(orjson.loads(row[5])), max_budget=row[6], budget_duration=row[7], tpm_limit=row[8],
        rpm_limit=row[9], max_parallel_requests=row[10], metadata=orjson.loads(row[11]), blocked=bool(row[12]),
        expires=_parse_time(row[13]), created_at=created_at, updated_at=updated_at, spend=row[16],
        aliases=orjson.loads(row[17]), allowed_routes=tuple(orjson.loads(row[18])), soft_budget=row[19],
        model_max_budget=orjson.loads(row[20]), model_rpm_limit=orjson.loads(row[21]),
        model_tpm_limit=orjson.loads(row[22]), organization_id=row[23], created_by=row[24], updated_by=row[25],
    )  # fmt: skip


# Directory records and models: one table each, whose columns are the dataclass's fields in order.
_Directory = TypeVar("_Directory", OrgRecord, TeamRecord, UserRecord, EndUserRecord, ModelRecord)
_ID_FIELDS: dict[type, str] = {
    OrgRecord: "organization_id",
    TeamRecord: "team_id",
    UserRecord: "user_id",
    EndUserRecord: "user_id",
    ModelRecord: "model_id",
}
_TIME_FIELDS = frozenset({"created_at", "updated_at"})
_MODEL_MAPS = ("model_max_budget", "model_rpm_limit", "model_tpm_limit")  # a team's per-model limits
_JSON_FIELDS = frozenset({"metadata", "model_aliases", "litellm_params", "model_info", *_MODEL_MAPS})  # dicts


def _directory_row(record: OrgRecord | TeamRecord | UserRecord | EndUserRecord | ModelRecord) -> tuple[Any, ...]:
    """The record's values in column order (the dataclass's field order), JSON as text, times as ISO text."""
    values: list[Any] = []
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if field.name == "models":
            value = json_text("models", list(value))
        elif field.name in _JSON_FIELDS:
            value = json_text(field.name, value)
        elif field.name in _TIME_FIELDS:
            value = _time(value)
        values.append(value)
    return tuple(values)


def _directory_record(cls: type[_Directory], row: Sequence[Any]) -> _Directory:
    values: dict[str, Any] = {}
    for field, value in zip(dataclasses.fields(cls), row, strict=True):
        if field.name == "models":
            value = tuple(orjson.loads(value))
        elif field.name in _JSON_FIELDS:
            value = orjson.loads(value)
        elif field.name in _TIME_FIELDS:
            value = _parse_time(value)
        elif field.name == "blocked":
            value = bool(value)
        values[field.name] = value
    return cls(**values)


def _directory_conflict(exc: sqlite3.IntegrityError, unique: str, id_field: str) -> StorageError:
    """The error for a refused directory write: a taken ``unique`` field or id, or a missing organization."""
    message = str(exc)
    if "FOREIGN KEY" in message:
        return NotFoundError("organization_id")
    return Conflict(unique if unique in message else id_field)


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

    async def rekey(self, token_hash: str, new_token_hash: str, new_key_name: str) -> KeyRecord | None:
        check_id("token_hash", token_hash)
        check_id("new_token_hash", new_token_hash)
        check_id("new_key_name", new_key_name)
        try:
            async with self._transaction() as conn:
                async with conn.execute(_SELECT_ONE, (token_hash,)) as cursor:
                    row = await cursor.fetchone()
                if row is None:
                    return None
                if await self._exists(conn, _KEY_EXISTS, new_token_hash):
                    raise Conflict("token_hash")
                old = _from_row(row)
                changed = dataclasses.replace(
                    old, token_hash=new_token_hash, key_name=new_key_name, updated_at=later(old.updated_at)
                )
                await conn.execute(_REKEY, (new_token_hash, new_key_name, _time(changed.updated_at), token_hash))
        except sqlite3.IntegrityError as exc:
            raise _conflict(exc) from None
        return changed

    async def _exists(self, conn: aiosqlite.Connection, sql: str, value: str) -> bool:
        async with conn.execute(sql, (value,)) as cursor:
            return await cursor.fetchone() is not None

    async def _fetch_one(self, cls: type[_Directory], sql: str, record_id: str) -> _Directory | None:
        check_id(_ID_FIELDS[cls], record_id)
        rows = await self._fetchall(sql, (record_id,))
        return _directory_record(cls, rows[0]) if rows else None

    async def _update(
        self, cls: type[_Directory], select: str, update: str, record_id: str, changes: dict[str, Any]
    ) -> _Directory | None:
        """Read, change and write back one record in one transaction (the id is the first column and the last
        parameter of ``update``)."""
        check_id(_ID_FIELDS[cls], record_id)
        async with self._transaction() as conn:
            async with conn.execute(select, (record_id,)) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return None
            changed = apply_changes(_directory_record(cls, row), changes)
            if (
                isinstance(changed, TeamRecord)
                and changed.organization_id is not None
                and not await self._exists(conn, _ORG_EXISTS, changed.organization_id)
            ):
                raise NotFoundError("organization_id")
            row_values: tuple[Any, ...] = _directory_row(changed)
            await conn.execute(update, (*row_values[1:], row_values[0]))
        return changed

    async def _delete(self, ids: Sequence[str], name: str, statements: Sequence[str]) -> int:
        """Run each of ``statements`` for every id in one transaction; how many rows the last one removed."""
        params = [(record_id,) for record_id in check_ids(name, ids)]
        async with self._transaction() as conn:
            for statement in statements[:-1]:
                await conn.executemany(statement, params)
            cursor = await conn.executemany(statements[-1], params)
            return max(cursor.rowcount, 0)

    # --- organizations ---------------------------------------------------------------------------

    async def insert_org(self, org: OrgRecord) -> None:
        check_record(org)
        row = _directory_row(org)
        try:
            async with self._transaction() as conn:
                await conn.execute(_INSERT_ORG, row)
        except sqlite3.IntegrityError as exc:
            raise _directory_conflict(exc, "organization_alias", "organization_id") from None

    async def get_org(self, organization_id: str) -> OrgRecord | None:
        return await self._fetch_one(OrgRecord, _SELECT_ORG, organization_id)

    async def update_org(self, organization_id: str, /, **changes: Any) -> OrgRecord | None:
        try:
            return await self._update(OrgRecord, _SELECT_ORG, _UPDATE_ORG, organization_id, changes)
        except sqlite3.IntegrityError as exc:
            raise _directory_conflict(exc, "organization_alias", "organization_id") from None

    async def list_orgs(self, *, limit: int = 100, offset: int = 0) -> list[OrgRecord]:
        check_page(limit, offset)
        rows = await self._fetchall(_LIST_ORGS, {"limit": limit, "offset": offset})
        return [_directory_record(OrgRecord, row) for row in rows]

    async def delete_orgs(self, organization_ids: Sequence[str]) -> int:
        if isinstance(organization_ids, str):
            raise ValueError("organization_ids must be a sequence of ids, not one string")
        for organization_id in organization_ids:
            check_id("organization_ids", organization_id)
        async with self._transaction() as conn:
            for organization_id in organization_ids:
                if await self._exists(conn, _ORG_HAS_TEAMS, organization_id):
                    raise Conflict("organization_id", "an organization that still has teams cannot be removed")
            cursor = await conn.executemany(_DELETE_ORG, [(o,) for o in organization_ids])
            return max(cursor.rowcount, 0)

    # --- teams -----------------------------------------------------------------------------------

    async def insert_team(self, team: TeamRecord, members: Sequence[TeamMember] = ()) -> None:
        check_record(team)
        row = _directory_row(team)
        for member in members:
            check_member(member)
            if member.team_id != team.team_id:
                raise ValueError("a new team's members must name its team_id")
        try:
            async with self._transaction() as conn:
                if team.organization_id is not None and not await self._exists(conn, _ORG_EXISTS, team.organization_id):
                    raise NotFoundError("organization_id")
                await conn.execute(_INSERT_TEAM, row)
                for member in members:
                    if not await self._exists(conn, _USER_EXISTS, member.user_id):
                        raise NotFoundError("user_id")
                    await conn.execute(_UPSERT_MEMBER, (team.team_id, member.user_id, member.role, _time(utc_now())))
        except sqlite3.IntegrityError as exc:
            raise _directory_conflict(exc, "team_alias", "team_id") from None

    async def get_team(self, team_id: str) -> TeamRecord | None:
        return await self._fetch_one(TeamRecord, _SELECT_TEAM, team_id)

    async def update_team(self, team_id: str, /, **changes: Any) -> TeamRecord | None:
        try:
            return await self._update(TeamRecord, _SELECT_TEAM, _UPDATE_TEAM, team_id, changes)
        except sqlite3.IntegrityError as exc:
            raise _directory_conflict(exc, "team_alias", "team_id") from None

    async def list_teams(
        self, *, organization_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[TeamRecord]:
        check_page(limit, offset)
        if organization_id is not None:
            check_id("organization_id", organization_id)
        params = {"organization_id": organization_id, "limit": limit, "offset": offset}
        return [_directory_record(TeamRecord, row) for row in await self._fetchall(_LIST_TEAMS, params)]

    async def delete_teams(self, team_ids: Sequence[str]) -> int:
        return await self._delete(team_ids, "team_ids", (_DELETE_TEAM_MEMBERS, _DELETE_TEAM))

    # --- members ---------------------------------------------------------------------------------

    async def add_member(self, team_id: str, user_id: str, role: str) -> TeamMember:
        member = TeamMember(team_id=team_id, user_id=user_id, role=role)
        check_member(member)
        async with self._transaction() as conn:
            if not await self._exists(conn, _TEAM_EXISTS, team_id):
                raise NotFoundError("team_id")
            if not await self._exists(conn, _USER_EXISTS, user_id):
                raise NotFoundError("user_id")
            await conn.execute(_UPSERT_MEMBER, (team_id, user_id, role, _time(utc_now())))
        return member

    async def add_members(self, team_id: str, members: Sequence[TeamMember]) -> None:
        check_id("team_id", team_id)
        for member in members:
            check_member(member)
            if member.team_id != team_id:
                raise ValueError("every member must name this team_id")
        async with self._transaction() as conn:
            if not await self._exists(conn, _TEAM_EXISTS, team_id):
                raise NotFoundError("team_id")
            for member in members:
                if not await self._exists(conn, _USER_EXISTS, member.user_id):
                    raise NotFoundError("user_id")
                await conn.execute(_UPSERT_MEMBER, (team_id, member.user_id, member.role, _time(utc_now())))

    async def remove_member(self, team_id: str, user_id: str) -> bool:
        check_id("team_id", team_id)
        check_id("user_id", user_id)
        async with self._transaction() as conn:
            cursor = await conn.execute(_DELETE_MEMBER, (team_id, user_id))
            return cursor.rowcount > 0

    async def list_members(self, team_id: str, *, limit: int = 100, offset: int = 0) -> list[TeamMember]:
        check_page(limit, offset)
        check_id("team_id", team_id)
        rows = await self._fetchall(_LIST_MEMBERS, {"team_id": team_id, "limit": limit, "offset": offset})
        return [TeamMember(team_id=row[0], user_id=row[1], role=row[2]) for row in rows]

    async def teams_of(self, user_id: str) -> list[str]:
        check_id("user_id", user_id)
        return [row[0] for row in await self._fetchall(_TEAMS_OF, (user_id,))]

    async def get_member(self, team_id: str, user_id: str) -> TeamMember | None:
        check_id("team_id", team_id)
        check_id("user_id", user_id)
        rows = await self._fetchall(_SELECT_MEMBER, (team_id, user_id))
        return TeamMember(team_id=rows[0][0], user_id=rows[0][1], role=rows[0][2]) if rows else None

    # --- users -----------------------------------------------------------------------------------

    async def insert_user(self, user: UserRecord, key: KeyRecord | None = None) -> None:
        check_record(user)
        row = _directory_row(user)
        key_row = None
        if key is not None:
            check_record(key)
            key_row = _to_row(key)
        async with self._transaction() as conn:  # a Conflict raised inside rolls both back
            try:
                await conn.execute(_INSERT_USER, row)
            except sqlite3.IntegrityError as exc:
                raise _directory_conflict(exc, "user_email", "user_id") from None
            if key_row is not None:
                try:
                    await conn.execute(_INSERT, key_row)
                except sqlite3.IntegrityError as exc:
                    raise _conflict(exc) from None

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self._fetch_one(UserRecord, _SELECT_USER, user_id)

    async def update_user(self, user_id: str, /, **changes: Any) -> UserRecord | None:
        try:
            return await self._update(UserRecord, _SELECT_USER, _UPDATE_USER, user_id, changes)
        except sqlite3.IntegrityError as exc:
            raise _directory_conflict(exc, "user_email", "user_id") from None

    async def list_users(self, *, team_id: str | None = None, limit: int = 100, offset: int = 0) -> list[UserRecord]:
        check_page(limit, offset)
        if team_id is not None:
            check_id("team_id", team_id)
        params = {"team_id": team_id, "limit": limit, "offset": offset}
        return [_directory_record(UserRecord, row) for row in await self._fetchall(_LIST_USERS, params)]

    async def delete_users(self, user_ids: Sequence[str]) -> int:
        return await self._delete(user_ids, "user_ids", (_DELETE_USER_MEMBERS, _DELETE_USER))

    # --- end users -------------------------------------------------------------------------------

    async def insert_end_user(self, end_user: EndUserRecord) -> None:
        check_record(end_user)
        row = _directory_row(end_user)
        try:
            async with self._transaction() as conn:
                await conn.execute(_INSERT_END_USER, row)
        except sqlite3.IntegrityError:
            raise Conflict("user_id") from None

    async def get_end_user(self, user_id: str) -> EndUserRecord | None:
        return await self._fetch_one(EndUserRecord, _SELECT_END_USER, user_id)

    async def update_end_user(self, user_id: str, /, **changes: Any) -> EndUserRecord | None:
        return await self._update(EndUserRecord, _SELECT_END_USER, _UPDATE_END_USER, user_id, changes)

    async def list_end_users(self, *, limit: int = 100, offset: int = 0) -> list[EndUserRecord]:
        check_page(limit, offset)
        rows = await self._fetchall(_LIST_END_USERS, {"limit": limit, "offset": offset})
        return [_directory_record(EndUserRecord, row) for row in rows]

    async def delete_end_users(self, user_ids: Sequence[str]) -> int:
        return await self._delete(user_ids, "user_ids", (_DELETE_END_USER,))

    async def set_end_users_blocked(self, user_ids: Sequence[str], blocked: bool) -> int:
        ids = check_ids("user_ids", user_ids)
        if not isinstance(blocked, bool):
            raise ValueError("blocked must be a bool")
        now = _time(utc_now())
        async with self._transaction() as conn:
            cursor = await conn.executemany(_BLOCK_END_USER, [(blocked, now, user_id) for user_id in ids])
            return max(cursor.rowcount, 0)

    # --- models ----------------------------------------------------------------------------------

    async def insert_model(self, model: ModelRecord) -> None:
        check_record(model)
        row = _directory_row(model)
        try:
            async with self._transaction() as conn:
                await conn.execute(_INSERT_MODEL, row)
        except sqlite3.IntegrityError:
            raise Conflict("model_id") from None

    async def get_model(self, model_id: str) -> ModelRecord | None:
        return await self._fetch_one(ModelRecord, _SELECT_MODEL, model_id)

    async def list_models(self, *, limit: int = 1000, offset: int = 0) -> list[ModelRecord]:
        check_page(limit, offset)
        rows = await self._fetchall(_LIST_MODELS, {"limit": limit, "offset": offset})
        return [_directory_record(ModelRecord, row) for row in rows]

    async def update_model(self, model_id: str, /, **changes: Any) -> ModelRecord | None:
        return await self._update(ModelRecord, _SELECT_MODEL, _UPDATE_MODEL, model_id, changes)

    async def delete_models(self, model_ids: Sequence[str]) -> int:
        return await self._delete(model_ids, "model_ids", (_DELETE_MODEL,))

    # --- spend -----------------------------------------------------------------------------------

    async def add_spend(
        self, deltas: Sequence[SpendDelta], entity_spend: Sequence[tuple[str, str, float]] = ()
    ) -> None:
        windows, entities = check_spend(deltas, entity_spend)
        if not windows and not entities:
            return
        now = _time(utc_now())
        async with self._transaction() as conn:
            await _apply_spend(conn, windows, entities, now)

    async def window_spend(self, scope: str, window_id: str) -> float:
        check_window(scope, window_id)
        rows = await self._fetchall(_WINDOW_SPEND, (scope, window_id))
        return float(rows[0][0]) if rows else 0.0

    async def delete_spend_before(self, updated_before: datetime) -> int:
        if not isinstance(updated_before, datetime) or updated_before.utcoffset() is None:
            raise ValueError("updated_before must be a timezone-aware datetime")
        async with self._transaction() as conn:
            cursor = await conn.execute(_DELETE_SPEND_BEFORE, (_time(updated_before),))
            return max(cursor.rowcount, 0)

    # --- spend ledger ----------------------------------------------------------------------------

    async def insert_spend_logs(self, rows: Sequence[SpendLogRow]) -> int:
        if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
            raise ValueError("rows must be a sequence of SpendLogRow records")
        values: list[SpendLogValues] = []
        for start in range(0, len(rows), _PREPARE_CHUNK):  # a chunk at a time: the event loop runs in between
            values += [spend_log_values(row) for row in rows[start : start + _PREPARE_CHUNK]]
            await asyncio.sleep(0)
        return await self.insert_spend_log_values(values)

    async def insert_spend_log_values(
        self, rows: Sequence[SpendLogValues], charges: Mapping[str, Charge] | None = None
    ) -> int:
        if not rows:
            return 0
        charged = charges_of(rows, charges)
        new = 0
        async with self._transaction() as conn:  # a repeated request_id: the first is kept, ON CONFLICT skips the rest
            stored: set[str] = set()  # BEGIN IMMEDIATE holds the write lock: nobody inserts these meanwhile
            ids = list(charged)
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                sql = _STORED_REQUEST_IDS.format(marks=",".join("?" * len(chunk)))
                async with conn.execute(sql, chunk) as cursor:
                    stored.update(row[0] for row in await cursor.fetchall())
            for start in range(0, len(rows), _INSERT_CHUNK):  # short turns of the connection's thread, one commit
                cursor = await conn.executemany(_INSERT_SPEND_LOG, rows[start : start + _INSERT_CHUNK])
                new += max(cursor.rowcount, 0)  # rowcount: the rows actually inserted
            if charged:
                windows, entities = merge_charges(charge for rid, charge in charged.items() if rid not in stored)
                await _apply_spend(conn, windows, entities, _time(utc_now()))
        return new

    async def list_spend_logs(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        key_hash: str | None = None,
        user_id: str | None = None,
        team_id: str | None = None,
        model_group: str | None = None,
        request_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[SpendLogRow]:
        ids = check_spend_list(start, end, limit, offset, key_hash=key_hash, user_id=user_id, team_id=team_id,
                               model_group=model_group, request_id=request_id)  # fmt: skip
        filters: dict[str, object] = {"start": _time(start), "end": _time(end), **ids, "request_id": request_id}
        sql = _LIST_SPEND_LOGS.format(where=_spend_where(filters))
        params = {name: value for name, value in filters.items() if value is not None}
        rows = await self._fetchall(sql, {**params, "limit": limit, "offset": offset})
        return [_spend_log_row(row) for row in rows]

    async def spend_report(
        self,
        *,
        start: datetime,
        end: datetime,
        group_by: ReportGroup,
        key_hash: str | None = None,
        team_id: str | None = None,
        user_id: str | None = None,
    ) -> list[dict[str, Any]]:
        check_report(start, end, group_by)
        ids = {"key_hash": key_hash, "team_id": team_id, "user_id": user_id}
        check_spend_filters(**ids)
        filters: dict[str, object] = {"start": _time(start), "end": _time(end), **ids}
        params = {name: value for name, value in filters.items() if value is not None}
        rows = await self._fetchall(_report_sql(group_by, _spend_where(filters)), params)
        return [
            {"group": row[0], "requests": row[1], "prompt_tokens": row[2], "completion_tokens": row[3],
             "total_tokens": row[4], "cost": float(row[5])}
            for row in rows
        ]  # fmt: skip

    async def delete_spend_logs_before(self, before: datetime) -> int:
        check_time("before", before)
        async with self._transaction() as conn:
            cursor = await conn.execute(_DELETE_SPEND_LOGS_BEFORE, (_time(before),))
            deleted = max(cursor.rowcount, 0)
        if deleted:
            await self._checkpoint()
        return deleted

    async def clear_spend_log_content(self, before: datetime, *, after: datetime | None = None) -> int:
        check_time("before", before)
        if after is not None:
            check_time("after", after)
        # fixed-width UTC text compares as time does; "" is before every time
        params = {"before": _time(before), "after": _time(after) if after is not None else ""}
        async with self._transaction() as conn:
            cursor = await conn.execute(_CLEAR_CONTENT, params)
            cleared = max(cursor.rowcount, 0)
        if cleared:
            await self._checkpoint()
        return cleared

    async def _checkpoint(self) -> None:
        """Copy the write-ahead log into the file and empty it, so the old page images (the prompts just
        cleared) do not stay in it."""
        async with self._lock:
            await self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def _apply_spend(
    conn: aiosqlite.Connection, windows: Sequence[tuple[str, str, float]], entities: Sequence[tuple[str, str, float]],
    now: str | None,
) -> None:  # fmt: skip
    if windows:
        await conn.executemany(_ADD_WINDOW_SPEND, [(scope, wid, amount, now) for scope, wid, amount in windows])
    for kind, record_id, amount in entities:
        await conn.execute(_ADD_ENTITY_SPEND[kind], (amount, record_id))
