"""The PostgreSQL backend: an asyncpg pool (1 to 10 connections), every write in a transaction.

Values travel as ``$n`` parameters only; JSON as JSONB (sent and read as text), timestamps as TIMESTAMPTZ.
Migrations run under a transaction-scoped advisory lock, so workers starting together upgrade once.
``open`` tells a database that cannot be reached now (refused, timed out, not resolved, starting up, out of
connections, the connection lost during the migrations: :class:`~lockgate.storage.base.Unreachable`) from one
that refuses (a bad user, password or database name, a TLS problem: :class:`~lockgate.storage.base.StorageError`).
Connection settings (``search_path``, ...) may ride in the URL's query string: asyncpg passes unknown
query parameters to the server as settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
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
    Unreachable,
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

__all__ = ["PostgresStore"]

# The keys statements name the columns in KeyRecord's field order (the last nine from migration 4).
_INSERT = """INSERT INTO keys (
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend, aliases,
    allowed_routes, soft_budget, model_max_budget, model_rpm_limit, model_tpm_limit, organization_id, created_by,
    updated_by
) VALUES (
    $1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15, $16, $17, $18::jsonb,
    $19::jsonb, $20, $21::jsonb, $22::jsonb, $23::jsonb, $24, $25, $26
)"""
_SELECT_ONE = """SELECT
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend, aliases,
    allowed_routes, soft_budget, model_max_budget, model_rpm_limit, model_tpm_limit, organization_id, created_by,
    updated_by
FROM keys WHERE token_hash = $1"""
_SELECT_FOR_UPDATE = """SELECT
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend, aliases,
    allowed_routes, soft_budget, model_max_budget, model_rpm_limit, model_tpm_limit, organization_id, created_by,
    updated_by
FROM keys WHERE token_hash = $1 FOR UPDATE"""
_UPDATE = """UPDATE keys SET key_name = $2, key_alias = $3, user_id = $4, team_id = $5, models = $6::jsonb,
    max_budget = $7, budget_duration = $8, tpm_limit = $9, rpm_limit = $10, max_parallel_requests = $11,
    metadata = $12::jsonb, blocked = $13, expires = $14, created_at = $15, updated_at = $16, spend = $17,
    aliases = $18::jsonb, allowed_routes = $19::jsonb, soft_budget = $20, model_max_budget = $21::jsonb,
    model_rpm_limit = $22::jsonb, model_tpm_limit = $23::jsonb, organization_id = $24, created_by = $25,
    updated_by = $26
    WHERE token_hash = $1"""
_DELETE = "DELETE FROM keys WHERE token_hash = ANY($1::text[])"
_LIST = """SELECT
    token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
    rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend, aliases,
    allowed_routes, soft_budget, model_max_budget, model_rpm_limit, model_tpm_limit, organization_id, created_by,
    updated_by
FROM keys WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR team_id = $2)
ORDER BY created_at, token_hash LIMIT $3 OFFSET $4"""
_KEY_EXISTS = "SELECT EXISTS (SELECT 1 FROM keys WHERE token_hash = $1)"
_REKEY = "UPDATE keys SET token_hash = $2, key_name = $3, updated_at = $4 WHERE token_hash = $1"
_INSERT_ORG = """INSERT INTO organizations (
    organization_id, organization_alias, models, max_budget, metadata, created_at, updated_at, spend
) VALUES ($1, $2, $3::jsonb, $4, $5::jsonb, $6, $7, $8)"""
_SELECT_ORG = """SELECT
    organization_id, organization_alias, models, max_budget, metadata, created_at, updated_at, spend
FROM organizations WHERE organization_id = $1"""
_SELECT_ORG_FOR_UPDATE = """SELECT
    organization_id, organization_alias, models, max_budget, metadata, created_at, updated_at, spend
FROM organizations WHERE organization_id = $1 FOR UPDATE"""
_UPDATE_ORG = """UPDATE organizations SET organization_alias = $2, models = $3::jsonb, max_budget = $4,
    metadata = $5::jsonb, created_at = $6, updated_at = $7, spend = $8
    WHERE organization_id = $1"""
_LIST_ORGS = """SELECT
    organization_id, organization_alias, models, max_budget, metadata, created_at, updated_at, spend
FROM organizations ORDER BY created_at, organization_id LIMIT $1 OFFSET $2"""
_ORGS_HAVE_TEAMS = "SELECT EXISTS (SELECT 1 FROM teams WHERE organization_id = ANY($1::text[]))"
_DELETE_ORGS = "DELETE FROM organizations WHERE organization_id = ANY($1::text[])"

_INSERT_TEAM = """INSERT INTO teams (
    team_id, team_alias, organization_id, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    max_parallel_requests, metadata, blocked, created_at, updated_at, spend, model_aliases, soft_budget,
    model_max_budget, model_rpm_limit, model_tpm_limit
) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15::jsonb, $16, $17::jsonb,
    $18::jsonb, $19::jsonb)"""
_SELECT_TEAM = """SELECT
    team_id, team_alias, organization_id, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    max_parallel_requests, metadata, blocked, created_at, updated_at, spend, model_aliases, soft_budget,
    model_max_budget, model_rpm_limit, model_tpm_limit
FROM teams WHERE team_id = $1"""
_SELECT_TEAM_FOR_UPDATE = """SELECT
    team_id, team_alias, organization_id, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    max_parallel_requests, metadata, blocked, created_at, updated_at, spend, model_aliases, soft_budget,
    model_max_budget, model_rpm_limit, model_tpm_limit
FROM teams WHERE team_id = $1 FOR UPDATE"""
_UPDATE_TEAM = """UPDATE teams SET team_alias = $2, organization_id = $3, models = $4::jsonb, max_budget = $5,
    budget_duration = $6, tpm_limit = $7, rpm_limit = $8, max_parallel_requests = $9, metadata = $10::jsonb,
    blocked = $11, created_at = $12, updated_at = $13, spend = $14, model_aliases = $15::jsonb, soft_budget = $16,
    model_max_budget = $17::jsonb, model_rpm_limit = $18::jsonb, model_tpm_limit = $19::jsonb
    WHERE team_id = $1"""
_LIST_TEAMS = """SELECT
    team_id, team_alias, organization_id, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    max_parallel_requests, metadata, blocked, created_at, updated_at, spend, model_aliases, soft_budget,
    model_max_budget, model_rpm_limit, model_tpm_limit
FROM teams WHERE ($1::text IS NULL OR organization_id = $1)
ORDER BY created_at, team_id LIMIT $2 OFFSET $3"""
_DELETE_TEAMS_MEMBERS = "DELETE FROM team_members WHERE team_id = ANY($1::text[])"
_DELETE_TEAMS = "DELETE FROM teams WHERE team_id = ANY($1::text[])"

_INSERT_USER = """INSERT INTO users (
    user_id, user_alias, user_email, user_role, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    metadata, created_at, updated_at, spend
) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10::jsonb, $11, $12, $13)"""
_SELECT_USER = """SELECT
    user_id, user_alias, user_email, user_role, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    metadata, created_at, updated_at, spend
FROM users WHERE user_id = $1"""
_SELECT_USER_FOR_UPDATE = """SELECT
    user_id, user_alias, user_email, user_role, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    metadata, created_at, updated_at, spend
FROM users WHERE user_id = $1 FOR UPDATE"""
_UPDATE_USER = """UPDATE users SET user_alias = $2, user_email = $3, user_role = $4, models = $5::jsonb,
    max_budget = $6, budget_duration = $7, tpm_limit = $8, rpm_limit = $9, metadata = $10::jsonb,
    created_at = $11, updated_at = $12, spend = $13
    WHERE user_id = $1"""
_LIST_USERS = """SELECT
    user_id, user_alias, user_email, user_role, models, max_budget, budget_duration, tpm_limit, rpm_limit,
    metadata, created_at, updated_at, spend
FROM users
WHERE ($1::text IS NULL OR user_id IN (SELECT m.user_id FROM team_members AS m WHERE m.team_id = $1))
ORDER BY created_at, user_id LIMIT $2 OFFSET $3"""
_DELETE_USERS_MEMBERS = "DELETE FROM team_members WHERE user_id = ANY($1::text[])"
_DELETE_USERS = "DELETE FROM users WHERE user_id = ANY($1::text[])"

_INSERT_END_USER = """INSERT INTO end_users (
    user_id, alias, blocked, max_budget, default_model, metadata, created_at, updated_at, spend
) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)"""
_SELECT_END_USER = """SELECT
    user_id, alias, blocked, max_budget, default_model, metadata, created_at, updated_at, spend
FROM end_users WHERE user_id = $1"""
_SELECT_END_USER_FOR_UPDATE = """SELECT
    user_id, alias, blocked, max_budget, default_model, metadata, created_at, updated_at, spend
FROM end_users WHERE user_id = $1 FOR UPDATE"""
_UPDATE_END_USER = """UPDATE end_users SET alias = $2, blocked = $3, max_budget = $4, default_model = $5,
    metadata = $6::jsonb, created_at = $7, updated_at = $8, spend = $9
    WHERE user_id = $1"""
_LIST_END_USERS = """SELECT
    user_id, alias, blocked, max_budget, default_model, metadata, created_at, updated_at, spend
FROM end_users ORDER BY created_at, user_id LIMIT $1 OFFSET $2"""
_DELETE_END_USERS = "DELETE FROM end_users WHERE user_id = ANY($1::text[])"
_BLOCK_END_USERS = """UPDATE end_users SET blocked = $2, updated_at = GREATEST(updated_at, $3)
    WHERE user_id = ANY($1::text[])"""

_INSERT_MODEL = """INSERT INTO models (
    model_id, model_name, litellm_params, model_info, created_by, created_at, updated_at
) VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7)"""
_SELECT_MODEL = """SELECT
    model_id, model_name, litellm_params, model_info, created_by, created_at, updated_at
FROM models WHERE model_id = $1"""
_SELECT_MODEL_FOR_UPDATE = """SELECT
    model_id, model_name, litellm_params, model_info, created_by, created_at, updated_at
FROM models WHERE model_id = $1 FOR UPDATE"""
_UPDATE_MODEL = """UPDATE models SET model_name = $2, litellm_params = $3::jsonb, model_info = $4::jsonb,
    created_by = $5, created_at = $6, updated_at = $7
    WHERE model_id = $1"""
_LIST_MODELS = """SELECT
    model_id, model_name, litellm_params, model_info, created_by, created_at, updated_at
FROM models ORDER BY created_at, model_id LIMIT $1 OFFSET $2"""
_DELETE_MODELS = "DELETE FROM models WHERE model_id = ANY($1::text[])"

# Spend. INSERT ... ON CONFLICT DO UPDATE is atomic: concurrent adds to one row queue on its lock and each sees
# the last committed value. updated_at never moves backwards.
_ADD_WINDOW_SPEND = """INSERT INTO budget_spend (scope, window_id, spent, updated_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (scope, window_id) DO UPDATE SET spent = budget_spend.spent + excluded.spent,
    updated_at = GREATEST(budget_spend.updated_at, excluded.updated_at)"""
_WINDOW_SPEND = "SELECT spent FROM budget_spend WHERE scope = $1 AND window_id = $2"
_DELETE_SPEND_BEFORE = "DELETE FROM budget_spend WHERE updated_at < $1 AND window_id <> ''"
# One fixed statement per entity kind (identifiers are never built from input); a missing row updates nothing.
_ADD_ENTITY_SPEND = {
    "key": "UPDATE keys SET spend = spend + $1 WHERE token_hash = $2",
    "user": "UPDATE users SET spend = spend + $1 WHERE user_id = $2",
    "team": "UPDATE teams SET spend = spend + $1 WHERE team_id = $2",
    "org": "UPDATE organizations SET spend = spend + $1 WHERE organization_id = $2",
    "end_user": "UPDATE end_users SET spend = spend + $1 WHERE user_id = $2",
}

# The spend ledger. One INSERT per batch: each column travels as one array ($1 ... $30, in SpendLogRow's field
# order: SPEND_LOG_FIELDS) and unnest() turns them back into rows; JSON travels as text. The list and report
# statements are assembled from the constants here: which filters are set picks fragments and their $n numbers;
# no value is ever part of the text.
_INSERT_SPEND_LOGS = """INSERT INTO spend_logs (
    request_id, started_at, key_hash, key_alias, user_id, team_id, organization_id, end_user, model, model_group,
    deployment_id, provider, prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    total_tokens, cost, cost_estimated, latency_ms, ttft_ms, status, error_type, stream, client_disconnected, route,
    metadata, messages, response
) SELECT
    r.request_id, r.started_at, r.key_hash, r.key_alias, r.user_id, r.team_id, r.organization_id, r.end_user,
    r.model, r.model_group, r.deployment_id, r.provider, r.prompt_tokens, r.completion_tokens, r.cache_read_tokens,
    r.cache_write_tokens, r.reasoning_tokens, r.total_tokens, r.cost, r.cost_estimated, r.latency_ms, r.ttft_ms,
    r.status, r.error_type, r.stream, r.client_disconnected, r.route, r.metadata::jsonb, r.messages::jsonb,
    r.response::jsonb
FROM unnest(
    $1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
    $9::text[], $10::text[], $11::text[], $12::text[], $13::int8[], $14::int8[], $15::int8[], $16::int8[],
    $17::int8[], $18::int8[], $19::float8[], $20::bool[], $21::float8[], $22::float8[], $23::int4[], $24::text[],
    $25::bool[], $26::bool[], $27::text[], $28::text[], $29::text[], $30::text[]
) AS r (
    request_id, started_at, key_hash, key_alias, user_id, team_id, organization_id, end_user, model, model_group,
    deployment_id, provider, prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    total_tokens, cost, cost_estimated, latency_ms, ttft_ms, status, error_type, stream, client_disconnected, route,
    metadata, messages, response
)
ON CONFLICT (request_id) DO NOTHING"""
_SPEND_JSON = ("metadata", "messages", "response")
_SPEND_FILTERS = {
    "start": "started_at >= ${}",
    "end": "started_at < ${}",
    "key_hash": "key_hash = ${}",
    "user_id": "user_id = ${}",
    "team_id": "team_id = ${}",
    "model_group": "model_group = ${}",
    "request_id": "request_id = ${}",
}
_LIST_SPEND_LOGS = """SELECT
    request_id, started_at, key_hash, key_alias, user_id, team_id, organization_id, end_user, model, model_group,
    deployment_id, provider, prompt_tokens, completion_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
    total_tokens, cost, cost_estimated, latency_ms, ttft_ms, status, error_type, stream, client_disconnected, route,
    metadata, messages, response
FROM spend_logs WHERE {where} ORDER BY started_at DESC, request_id DESC LIMIT {limit} OFFSET {offset}"""
_REPORT_GROUPS: dict[str, str] = {
    "day": "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "key": "key_hash", "team": "team_id",
    "user": "user_id", "end_user": "end_user", "model": "model_group", "provider": "provider",
}  # fmt: skip
_SPEND_REPORT = """SELECT {group} AS grp, COUNT(*), COALESCE(SUM(prompt_tokens), 0)::int8,
    COALESCE(SUM(completion_tokens), 0)::int8, COALESCE(SUM(total_tokens), 0)::int8, COALESCE(SUM(cost), 0)::float8
FROM spend_logs WHERE {where} GROUP BY {group} ORDER BY {order}"""
_DELETE_SPEND_LOGS_BEFORE = "DELETE FROM spend_logs WHERE started_at < $1"
_CLEAR_CONTENT = """UPDATE spend_logs SET messages = NULL, response = NULL
WHERE started_at < $1 AND ($2::timestamptz IS NULL OR started_at >= $2)
AND (messages IS NOT NULL OR response IS NOT NULL)"""


def _spend_where(filters: dict[str, object]) -> tuple[str, list[object]]:
    """The WHERE clause for the filters that are set (fragments from _SPEND_FILTERS only), and its parameters."""
    clauses: list[str] = []
    params: list[object] = []
    for name, value in filters.items():
        if value is not None:
            params.append(value)
            clauses.append(_SPEND_FILTERS[name].format(len(params)))
    return " AND ".join(clauses or ["TRUE"]), params


def _report_sql(group_by: ReportGroup, where: str) -> str:
    group = _REPORT_GROUPS[group_by]
    order = group if group_by == "day" else f"SUM(cost) DESC, {group} IS NULL, {group}"
    return _SPEND_REPORT.format(group=group, where=where, order=order)


def _spend_log_columns(rows: Sequence[SpendLogValues]) -> list[list[Any]]:
    """The rows (a repeated request_id kept the first time only) as one list per column, in SPEND_LOG_FIELDS
    order; started_at as a datetime again."""
    unique: dict[str, SpendLogValues] = {}
    for values in rows:
        unique.setdefault(values[0], values)
    columns = [list(column) for column in zip(*unique.values(), strict=True)] or [[] for _ in SPEND_LOG_FIELDS]
    columns[1] = [datetime.fromisoformat(text) for text in columns[1]]
    return columns


def _spend_log_row(values: Any) -> SpendLogRow:
    fields: dict[str, Any] = dict(zip(SPEND_LOG_FIELDS, values, strict=True))
    for name in _SPEND_JSON:
        if fields[name] is not None:
            fields[name] = orjson.loads(fields[name])
    return SpendLogRow(**fields)


_ORG_EXISTS = "SELECT EXISTS (SELECT 1 FROM organizations WHERE organization_id = $1)"
_TEAM_EXISTS = "SELECT EXISTS (SELECT 1 FROM teams WHERE team_id = $1)"
_USER_EXISTS = "SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)"
_UPSERT_MEMBER = """INSERT INTO team_members (team_id, user_id, role, created_at) VALUES ($1, $2, $3, now())
ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role"""
_DELETE_MEMBER = "DELETE FROM team_members WHERE team_id = $1 AND user_id = $2"
_SELECT_MEMBER = "SELECT team_id, user_id, role FROM team_members WHERE team_id = $1 AND user_id = $2"
_LIST_MEMBERS = """SELECT team_id, user_id, role FROM team_members WHERE team_id = $1
ORDER BY created_at, user_id LIMIT $2 OFFSET $3"""
_TEAMS_OF = """SELECT t.team_id FROM team_members AS m JOIN teams AS t ON t.team_id = m.team_id
WHERE m.user_id = $1 ORDER BY t.created_at, t.team_id"""

_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(7452011)"  # an arbitrary constant: "lockgate migrations"
_HAS_SCHEMA_TABLE = "SELECT to_regclass('lockgate_schema') IS NOT NULL"
_SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) FROM lockgate_schema"
_RECORD_VERSION = "INSERT INTO lockgate_schema (version, applied_at) VALUES ($1, now())"

_POOL_MIN, _POOL_MAX, _CONNECT_TIMEOUT = 1, 10, 10.0
# Seconds a point read (a key, team, user, organisation, end user; a budget window's spend: what a request may
# wait for) waits for an answer. asyncpg bounds no query by default: a database that stops answering without
# closing the connection (a network partition) would otherwise hold the request until it answers again.
_READ_TIMEOUT = 5.0
_CLOSE_TIMEOUT = 5.0  # seconds close() waits for connections in use before it drops them


def _to_row(key: KeyRecord) -> tuple[Any, ...]:
    """The key's values in column order (KeyRecord's field order: ``$1`` ... ``$26``), JSON as text."""
    return (
        key.token_hash, key.key_name, key.key_alias, key.user_id, key.team_id,
        json_text("models", list(key.models)), key.max_budget, key.budget_duration, key.tpm_limit, key.rpm_limit,
        key.max_parallel_requests, json_text("metadata", key.metadata), key.blocked, key.expires, key.created_at,
        key.updated_at, float(key.spend), json_text("aliases", key.aliases),
        json_text("allowed_routes", list(key.allowed_routes)),
        None if key.soft_budget is None else float(key.soft_budget),
        json_text("model_max_budget", key.model_max_budget), json_text("model_rpm_limit", key.model_rpm_limit),
        json_text("model_tpm_limit", key.model_tpm_limit), key.organization_id, key.created_by, key.updated_by,
    )  # fmt: skip


def _from_row(row: Any) -> KeyRecord:
    return KeyRecord(
        token_hash=row[0], key_name=row[1], key_alias=row[2], user_id=row[3], team_id=row[4],
        models=tuple(orjson.loads(row[5])), max_budget=row[6], budget_duration=row[7], tpm_limit=row[8],
        rpm_limit=row[9], max_parallel_requests=row[10], metadata=orjson.loads(row[11]), blocked=row[12],
        expires=row[13], created_at=row[14], updated_at=row[15], spend=row[16], aliases=orjson.loads(row[17]),
        allowed_routes=tuple(orjson.loads(row[18])), soft_budget=row[19], model_max_budget=orjson.loads(row[20]),
        model_rpm_limit=orjson.loads(row[21]), model_tpm_limit=orjson.loads(row[22]), organization_id=row[23],
        created_by=row[24], updated_by=row[25],
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
_MODEL_MAPS = ("model_max_budget", "model_rpm_limit", "model_tpm_limit")  # a team's per-model limits
_JSON_FIELDS = frozenset({"metadata", "model_aliases", "litellm_params", "model_info", *_MODEL_MAPS})  # dicts
_FLOAT_FIELDS = frozenset({"max_budget", "spend", "soft_budget"})
_FOREIGN_KEYS = {
    "teams_organization_fk": "organization_id",
    "team_members_team_fk": "team_id",
    "team_members_user_fk": "user_id",
}


def _directory_row(record: OrgRecord | TeamRecord | UserRecord | EndUserRecord | ModelRecord) -> tuple[Any, ...]:
    """The record's values in column order (the dataclass's field order), JSON as text."""
    values: list[Any] = []
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if field.name == "models":
            value = json_text("models", list(value))
        elif field.name in _JSON_FIELDS:
            value = json_text(field.name, value)
        elif field.name in _FLOAT_FIELDS and value is not None:
            value = float(value)
        values.append(value)
    return tuple(values)


def _directory_record(cls: type[_Directory], row: Any) -> _Directory:
    values: dict[str, Any] = {}
    for field, value in zip(dataclasses.fields(cls), row, strict=True):
        if field.name == "models":
            value = tuple(orjson.loads(value))
        elif field.name in _JSON_FIELDS:
            value = orjson.loads(value)
        values[field.name] = value
    return cls(**values)


def _directory_error(exc: Exception, unique: str, id_field: str) -> StorageError:
    """The error for a refused directory write: a taken ``unique`` field or id, or a missing reference."""
    constraint = getattr(exc, "constraint_name", None) or ""
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return NotFoundError(_FOREIGN_KEYS.get(constraint, "organization_id"))
    return Conflict(unique if unique in constraint else id_field)


def _transient(exc: Exception) -> bool:
    """Whether opening the database failed for a reason that may pass: the network or the server's state (not a
    refusal such as a bad password or database name, and not TLS, whose failures are configuration)."""
    if isinstance(exc, ssl.SSLError | asyncpg.ProtocolViolationError):
        return False
    return isinstance(
        exc, OSError | asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError
    )


async def _close(pool: Any) -> None:
    try:
        await asyncio.wait_for(pool.close(), _CLOSE_TIMEOUT)
    except TimeoutError:  # a connection waits on a database that does not answer (asyncpg would wait forever)
        pool.terminate()


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
            error = Unreachable if _transient(exc) else StorageError
            raise error(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from None
        try:
            async with pool.acquire() as conn:
                await upgrade(_MigrationConnection(conn))
        except BaseException as exc:
            await _close(pool)
            if isinstance(exc, Exception) and _transient(exc):
                raise Unreachable(f"lost PostgreSQL during the migrations: {type(exc).__name__}: {exc}") from None
            raise
        return cls(pool)

    async def close(self) -> None:
        await _close(self._pool)

    async def insert_key(self, key: KeyRecord) -> None:
        check_record(key)
        row = _to_row(key)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_INSERT, *row)
        except asyncpg.UniqueViolationError as exc:
            raise _conflict(exc) from None

    async def get_key(self, token_hash: str) -> KeyRecord | None:
        async with asyncio.timeout(_READ_TIMEOUT):
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

    async def rekey(self, token_hash: str, new_token_hash: str, new_key_name: str) -> KeyRecord | None:
        check_id("token_hash", token_hash)
        check_id("new_token_hash", new_token_hash)
        check_id("new_key_name", new_key_name)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_SELECT_FOR_UPDATE, token_hash)
                if row is None:
                    return None
                if await conn.fetchval(_KEY_EXISTS, new_token_hash):
                    raise Conflict("token_hash")
                old = _from_row(row)
                changed = dataclasses.replace(
                    old, token_hash=new_token_hash, key_name=new_key_name, updated_at=later(old.updated_at)
                )
                await conn.execute(_REKEY, token_hash, new_token_hash, new_key_name, changed.updated_at)
        except asyncpg.UniqueViolationError as exc:
            raise _conflict(exc) from None
        return changed

    async def _fetch_one(self, cls: type[_Directory], sql: str, record_id: str) -> _Directory | None:
        check_id(_ID_FIELDS[cls], record_id)
        async with asyncio.timeout(_READ_TIMEOUT):
            row = await self._pool.fetchrow(sql, record_id)
        return None if row is None else _directory_record(cls, row)

    async def _update(
        self, cls: type[_Directory], select: str, update: str, record_id: str, changes: dict[str, Any]
    ) -> _Directory | None:
        """Read (locking the row), change and write back one record in one transaction."""
        check_id(_ID_FIELDS[cls], record_id)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(select, record_id)
            if row is None:
                return None
            changed = apply_changes(_directory_record(cls, row), changes)
            if (
                isinstance(changed, TeamRecord)
                and changed.organization_id is not None
                and not await conn.fetchval(_ORG_EXISTS, changed.organization_id)
            ):
                raise NotFoundError("organization_id")
            await conn.execute(update, *_directory_row(changed))
        return changed

    async def _delete(self, ids: Sequence[str], name: str, statements: Sequence[str]) -> int:
        """Run each of ``statements`` over all ids in one transaction; how many rows the last one removed."""
        unique = check_ids(name, ids)
        async with self._pool.acquire() as conn, conn.transaction():
            for statement in statements:
                status: str = await conn.execute(statement, unique)
        return int(status.rsplit(" ", 1)[-1])

    # --- organizations ---------------------------------------------------------------------------

    async def insert_org(self, org: OrgRecord) -> None:
        check_record(org)
        row = _directory_row(org)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_INSERT_ORG, *row)
        except asyncpg.UniqueViolationError as exc:
            raise _directory_error(exc, "organization_alias", "organization_id") from None

    async def get_org(self, organization_id: str) -> OrgRecord | None:
        return await self._fetch_one(OrgRecord, _SELECT_ORG, organization_id)

    async def update_org(self, organization_id: str, /, **changes: Any) -> OrgRecord | None:
        try:
            return await self._update(OrgRecord, _SELECT_ORG_FOR_UPDATE, _UPDATE_ORG, organization_id, changes)
        except asyncpg.UniqueViolationError as exc:
            raise _directory_error(exc, "organization_alias", "organization_id") from None

    async def list_orgs(self, *, limit: int = 100, offset: int = 0) -> list[OrgRecord]:
        check_page(limit, offset)
        return [_directory_record(OrgRecord, row) for row in await self._pool.fetch(_LIST_ORGS, limit, offset)]

    async def delete_orgs(self, organization_ids: Sequence[str]) -> int:
        if isinstance(organization_ids, str):
            raise ValueError("organization_ids must be a sequence of ids, not one string")
        for organization_id in organization_ids:
            check_id("organization_ids", organization_id)
        in_use = Conflict("organization_id", "an organization that still has teams cannot be removed")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if await conn.fetchval(_ORGS_HAVE_TEAMS, list(organization_ids)):
                    raise in_use
                status: str = await conn.execute(_DELETE_ORGS, list(organization_ids))
        except asyncpg.ForeignKeyViolationError:
            raise in_use from None
        return int(status.rsplit(" ", 1)[-1])

    # --- teams -----------------------------------------------------------------------------------

    async def insert_team(self, team: TeamRecord, members: Sequence[TeamMember] = ()) -> None:
        check_record(team)
        row = _directory_row(team)
        for member in members:
            check_member(member)
            if member.team_id != team.team_id:
                raise ValueError("a new team's members must name its team_id")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if team.organization_id is not None and not await conn.fetchval(_ORG_EXISTS, team.organization_id):
                    raise NotFoundError("organization_id")
                await conn.execute(_INSERT_TEAM, *row)
                for member in members:
                    if not await conn.fetchval(_USER_EXISTS, member.user_id):
                        raise NotFoundError("user_id")
                    await conn.execute(_UPSERT_MEMBER, team.team_id, member.user_id, member.role)
        except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
            raise _directory_error(exc, "team_alias", "team_id") from None

    async def get_team(self, team_id: str) -> TeamRecord | None:
        return await self._fetch_one(TeamRecord, _SELECT_TEAM, team_id)

    async def update_team(self, team_id: str, /, **changes: Any) -> TeamRecord | None:
        try:
            return await self._update(TeamRecord, _SELECT_TEAM_FOR_UPDATE, _UPDATE_TEAM, team_id, changes)
        except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
            raise _directory_error(exc, "team_alias", "team_id") from None

    async def list_teams(
        self, *, organization_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[TeamRecord]:
        check_page(limit, offset)
        if organization_id is not None:
            check_id("organization_id", organization_id)
        rows = await self._pool.fetch(_LIST_TEAMS, organization_id, limit, offset)
        return [_directory_record(TeamRecord, row) for row in rows]

    async def delete_teams(self, team_ids: Sequence[str]) -> int:
        return await self._delete(team_ids, "team_ids", (_DELETE_TEAMS_MEMBERS, _DELETE_TEAMS))

    # --- members ---------------------------------------------------------------------------------

    async def add_member(self, team_id: str, user_id: str, role: str) -> TeamMember:
        member = TeamMember(team_id=team_id, user_id=user_id, role=role)
        check_member(member)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval(_TEAM_EXISTS, team_id):
                    raise NotFoundError("team_id")
                if not await conn.fetchval(_USER_EXISTS, user_id):
                    raise NotFoundError("user_id")
                await conn.execute(_UPSERT_MEMBER, team_id, user_id, role)
        except asyncpg.ForeignKeyViolationError as exc:
            raise _directory_error(exc, "", "") from None
        return member

    async def add_members(self, team_id: str, members: Sequence[TeamMember]) -> None:
        check_id("team_id", team_id)
        for member in members:
            check_member(member)
            if member.team_id != team_id:
                raise ValueError("every member must name this team_id")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval(_TEAM_EXISTS, team_id):
                    raise NotFoundError("team_id")
                for member in members:
                    if not await conn.fetchval(_USER_EXISTS, member.user_id):
                        raise NotFoundError("user_id")
                    await conn.execute(_UPSERT_MEMBER, team_id, member.user_id, member.role)
        except asyncpg.ForeignKeyViolationError as exc:
            raise _directory_error(exc, "", "") from None

    async def remove_member(self, team_id: str, user_id: str) -> bool:
        check_id("team_id", team_id)
        check_id("user_id", user_id)
        async with self._pool.acquire() as conn, conn.transaction():
            status: str = await conn.execute(_DELETE_MEMBER, team_id, user_id)
        return status != "DELETE 0"

    async def list_members(self, team_id: str, *, limit: int = 100, offset: int = 0) -> list[TeamMember]:
        check_page(limit, offset)
        check_id("team_id", team_id)
        rows = await self._pool.fetch(_LIST_MEMBERS, team_id, limit, offset)
        return [TeamMember(team_id=row[0], user_id=row[1], role=row[2]) for row in rows]

    async def teams_of(self, user_id: str) -> list[str]:
        check_id("user_id", user_id)
        return [row[0] for row in await self._pool.fetch(_TEAMS_OF, user_id)]

    async def get_member(self, team_id: str, user_id: str) -> TeamMember | None:
        check_id("team_id", team_id)
        check_id("user_id", user_id)
        row = await self._pool.fetchrow(_SELECT_MEMBER, team_id, user_id)
        return None if row is None else TeamMember(team_id=row[0], user_id=row[1], role=row[2])

    # --- users -----------------------------------------------------------------------------------

    async def insert_user(self, user: UserRecord, key: KeyRecord | None = None) -> None:
        check_record(user)
        row = _directory_row(user)
        key_row = None
        if key is not None:
            check_record(key)
            key_row = _to_row(key)
        async with self._pool.acquire() as conn, conn.transaction():  # a Conflict raised inside rolls both back
            try:
                await conn.execute(_INSERT_USER, *row)
            except asyncpg.UniqueViolationError as exc:
                raise _directory_error(exc, "user_email", "user_id") from None
            if key_row is not None:
                try:
                    await conn.execute(_INSERT, *key_row)
                except asyncpg.UniqueViolationError as exc:
                    raise _conflict(exc) from None

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self._fetch_one(UserRecord, _SELECT_USER, user_id)

    async def update_user(self, user_id: str, /, **changes: Any) -> UserRecord | None:
        try:
            return await self._update(UserRecord, _SELECT_USER_FOR_UPDATE, _UPDATE_USER, user_id, changes)
        except asyncpg.UniqueViolationError as exc:
            raise _directory_error(exc, "user_email", "user_id") from None

    async def list_users(self, *, team_id: str | None = None, limit: int = 100, offset: int = 0) -> list[UserRecord]:
        check_page(limit, offset)
        if team_id is not None:
            check_id("team_id", team_id)
        rows = await self._pool.fetch(_LIST_USERS, team_id, limit, offset)
        return [_directory_record(UserRecord, row) for row in rows]

    async def delete_users(self, user_ids: Sequence[str]) -> int:
        return await self._delete(user_ids, "user_ids", (_DELETE_USERS_MEMBERS, _DELETE_USERS))

    # --- end users -------------------------------------------------------------------------------

    async def insert_end_user(self, end_user: EndUserRecord) -> None:
        check_record(end_user)
        row = _directory_row(end_user)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_INSERT_END_USER, *row)
        except asyncpg.UniqueViolationError:
            raise Conflict("user_id") from None

    async def get_end_user(self, user_id: str) -> EndUserRecord | None:
        return await self._fetch_one(EndUserRecord, _SELECT_END_USER, user_id)

    async def update_end_user(self, user_id: str, /, **changes: Any) -> EndUserRecord | None:
        return await self._update(EndUserRecord, _SELECT_END_USER_FOR_UPDATE, _UPDATE_END_USER, user_id, changes)

    async def list_end_users(self, *, limit: int = 100, offset: int = 0) -> list[EndUserRecord]:
        check_page(limit, offset)
        return [_directory_record(EndUserRecord, row) for row in await self._pool.fetch(_LIST_END_USERS, limit, offset)]

    async def delete_end_users(self, user_ids: Sequence[str]) -> int:
        return await self._delete(user_ids, "user_ids", (_DELETE_END_USERS,))

    async def set_end_users_blocked(self, user_ids: Sequence[str], blocked: bool) -> int:
        ids = check_ids("user_ids", user_ids)
        if not isinstance(blocked, bool):
            raise ValueError("blocked must be a bool")
        async with self._pool.acquire() as conn, conn.transaction():
            status: str = await conn.execute(_BLOCK_END_USERS, ids, blocked, utc_now())
        return int(status.rsplit(" ", 1)[-1])

    # --- models ----------------------------------------------------------------------------------

    async def insert_model(self, model: ModelRecord) -> None:
        check_record(model)
        row = _directory_row(model)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_INSERT_MODEL, *row)
        except asyncpg.UniqueViolationError:
            raise Conflict("model_id") from None

    async def get_model(self, model_id: str) -> ModelRecord | None:
        return await self._fetch_one(ModelRecord, _SELECT_MODEL, model_id)

    async def list_models(self, *, limit: int = 1000, offset: int = 0) -> list[ModelRecord]:
        check_page(limit, offset)
        return [_directory_record(ModelRecord, row) for row in await self._pool.fetch(_LIST_MODELS, limit, offset)]

    async def update_model(self, model_id: str, /, **changes: Any) -> ModelRecord | None:
        return await self._update(ModelRecord, _SELECT_MODEL_FOR_UPDATE, _UPDATE_MODEL, model_id, changes)

    async def delete_models(self, model_ids: Sequence[str]) -> int:
        return await self._delete(model_ids, "model_ids", (_DELETE_MODELS,))

    # --- spend -----------------------------------------------------------------------------------

    async def add_spend(
        self, deltas: Sequence[SpendDelta], entity_spend: Sequence[tuple[str, str, float]] = ()
    ) -> None:
        # check_spend sorts both lists: every writer locks rows in the same order, so two never deadlock.
        windows, entities = check_spend(deltas, entity_spend)
        if not windows and not entities:
            return
        now = utc_now()
        async with self._pool.acquire() as conn, conn.transaction():
            await _apply_spend(conn, windows, entities, now)

    async def window_spend(self, scope: str, window_id: str) -> float:
        check_window(scope, window_id)
        async with asyncio.timeout(_READ_TIMEOUT):
            spent = await self._pool.fetchval(_WINDOW_SPEND, scope, window_id)
        return 0.0 if spent is None else float(spent)

    async def delete_spend_before(self, updated_before: datetime) -> int:
        if not isinstance(updated_before, datetime) or updated_before.utcoffset() is None:
            raise ValueError("updated_before must be a timezone-aware datetime")
        async with self._pool.acquire() as conn, conn.transaction():
            status: str = await conn.execute(_DELETE_SPEND_BEFORE, updated_before)
        return int(status.rsplit(" ", 1)[-1])

    # --- spend ledger ----------------------------------------------------------------------------

    async def insert_spend_logs(self, rows: Sequence[SpendLogRow]) -> int:
        if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
            raise ValueError("rows must be a sequence of SpendLogRow records")
        return await self.insert_spend_log_values([spend_log_values(row) for row in rows])

    async def insert_spend_log_values(
        self, rows: Sequence[SpendLogValues], charges: Mapping[str, Charge] | None = None
    ) -> int:
        charged = charges_of(rows, charges)
        columns = _spend_log_columns(rows)
        if not columns[0]:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            if not charged:
                status: str = await conn.execute(_INSERT_SPEND_LOGS, *columns)
                return int(status.rsplit(" ", 1)[-1])
            # RETURNING names exactly the rows this statement inserted: a row another instance stored first (a
            # replay racing a replay) is not among them, so its charge is never added twice
            inserted = await conn.fetch(_INSERT_SPEND_LOGS + " RETURNING request_id", *columns)
            new = {row[0] for row in inserted}
            windows, entities = merge_charges(charge for rid, charge in charged.items() if rid in new)
            await _apply_spend(conn, windows, entities, utc_now())
        return len(new)

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
        where, params = _spend_where({"start": start, "end": end, **ids, "request_id": request_id})
        sql = _LIST_SPEND_LOGS.format(where=where, limit=f"${len(params) + 1}", offset=f"${len(params) + 2}")
        return [_spend_log_row(row) for row in await self._pool.fetch(sql, *params, limit, offset)]

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
        where, params = _spend_where({"start": start, "end": end, **ids})
        rows = await self._pool.fetch(_report_sql(group_by, where), *params)
        return [
            {"group": row[0], "requests": row[1], "prompt_tokens": row[2], "completion_tokens": row[3],
             "total_tokens": row[4], "cost": row[5]}
            for row in rows
        ]  # fmt: skip

    async def delete_spend_logs_before(self, before: datetime) -> int:
        check_time("before", before)
        async with self._pool.acquire() as conn, conn.transaction():
            status: str = await conn.execute(_DELETE_SPEND_LOGS_BEFORE, before)
        return int(status.rsplit(" ", 1)[-1])

    async def clear_spend_log_content(self, before: datetime, *, after: datetime | None = None) -> int:
        check_time("before", before)
        if after is not None:
            check_time("after", after)
        async with self._pool.acquire() as conn, conn.transaction():
            status: str = await conn.execute(_CLEAR_CONTENT, before, after)
        return int(status.rsplit(" ", 1)[-1])


async def _apply_spend(
    conn: Any, windows: Sequence[tuple[str, str, float]], entities: Sequence[tuple[str, str, float]], now: datetime
) -> None:
    if windows:
        await conn.executemany(_ADD_WINDOW_SPEND, [(scope, wid, amount, now) for scope, wid, amount in windows])
    for kind, record_id, amount in entities:
        await conn.execute(_ADD_ENTITY_SPEND[kind], amount, record_id)
