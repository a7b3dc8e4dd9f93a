"""The database schema as an append-only list of numbered migrations, and the code that applies them.

Rules: never edit or reorder a migration that has shipped; add a new one at the end. Each migration holds
the statements for both backends (identical text where the dialects allow; JSON is TEXT in SQLite and JSONB
in PostgreSQL, timestamps ISO-8601 UTC TEXT in SQLite and TIMESTAMPTZ in PostgreSQL).

``lockgate_schema`` holds one row per applied migration; the schema version is the highest. ``upgrade``
applies the missing ones, each in its own transaction that also records it, and refuses (touching nothing)
a database whose version is newer than :data:`LATEST_VERSION`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from lockgate.storage.base import SchemaTooNew

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Dialect", "Migration", "SchemaConnection", "upgrade"]

Dialect = Literal["sqlite", "postgres"]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgres


class SchemaConnection(Protocol):
    """What ``upgrade`` needs from a backend."""

    dialect: Dialect

    async def schema_version(self) -> int:
        """The highest applied version; 0 for a database lockgate has never touched."""

    async def apply(self, version: int, statements: Sequence[str]) -> bool:
        """In one transaction, under the database's write lock: if ``version`` is not applied yet, run
        ``statements`` and record it; return whether it ran (another process may have been first)."""


# --- 1: virtual keys -----------------------------------------------------------------------------------

_KEYS_INDEXES = (
    "CREATE INDEX keys_by_created ON keys (created_at, token_hash)",
    "CREATE INDEX keys_by_user ON keys (user_id, created_at, token_hash)",
    "CREATE INDEX keys_by_team ON keys (team_id, created_at, token_hash)",
)

_V1_SQLITE = (
    """CREATE TABLE lockgate_schema (
    version INTEGER NOT NULL PRIMARY KEY,
    applied_at TEXT NOT NULL
)""",
    """CREATE TABLE keys (
    token_hash TEXT NOT NULL PRIMARY KEY,
    key_name TEXT NOT NULL,
    key_alias TEXT UNIQUE,
    user_id TEXT,
    team_id TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    tpm_limit BIGINT,
    rpm_limit BIGINT,
    max_parallel_requests BIGINT,
    metadata TEXT NOT NULL DEFAULT '{}',
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    expires TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
    *_KEYS_INDEXES,
)

_V1_POSTGRES = (
    """CREATE TABLE lockgate_schema (
    version INTEGER NOT NULL PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
)""",
    """CREATE TABLE keys (
    token_hash TEXT NOT NULL PRIMARY KEY,
    key_name TEXT NOT NULL,
    key_alias TEXT UNIQUE,
    user_id TEXT,
    team_id TEXT,
    models JSONB NOT NULL DEFAULT '[]',
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    tpm_limit BIGINT,
    rpm_limit BIGINT,
    max_parallel_requests BIGINT,
    metadata JSONB NOT NULL DEFAULT '{}',
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    expires TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
    *_KEYS_INDEXES,
)

# --- 2: organizations, teams, team members, users ---------------------------------------------------------
# Keys carry team_id / user_id without a foreign key: deleting a team or user leaves its keys to the API.
# A team's organization_id must name an organization (deleting one that still has teams is refused);
# memberships go with their team or user.


_V2_INDEXES = (
    "CREATE INDEX organizations_by_created ON organizations (created_at, organization_id)",
    "CREATE INDEX teams_by_created ON teams (created_at, team_id)",
    "CREATE INDEX teams_by_organization ON teams (organization_id, created_at, team_id)",
    "CREATE INDEX users_by_created ON users (created_at, user_id)",
    "CREATE INDEX team_members_by_team ON team_members (team_id, created_at, user_id)",
    "CREATE INDEX team_members_by_user ON team_members (user_id, team_id)",
)

_V2_SQLITE = (
    """CREATE TABLE organizations (
    organization_id TEXT NOT NULL PRIMARY KEY,
    organization_alias TEXT UNIQUE,
    models TEXT NOT NULL DEFAULT '[]',
    max_budget DOUBLE PRECISION,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
    """CREATE TABLE teams (
    team_id TEXT NOT NULL PRIMARY KEY,
    team_alias TEXT UNIQUE,
    organization_id TEXT CONSTRAINT teams_organization_fk REFERENCES organizations (organization_id),
    models TEXT NOT NULL DEFAULT '[]',
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    tpm_limit BIGINT,
    rpm_limit BIGINT,
    max_parallel_requests BIGINT,
    metadata TEXT NOT NULL DEFAULT '{}',
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
    """CREATE TABLE users (
    user_id TEXT NOT NULL PRIMARY KEY,
    user_alias TEXT,
    user_email TEXT UNIQUE,
    user_role TEXT NOT NULL DEFAULT 'internal_user'
        CHECK (user_role IN ('proxy_admin', 'proxy_admin_viewer', 'internal_user', 'internal_user_viewer')),
    models TEXT NOT NULL DEFAULT '[]',
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    tpm_limit BIGINT,
    rpm_limit BIGINT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
    """CREATE TABLE team_members (
    team_id TEXT NOT NULL CONSTRAINT team_members_team_fk REFERENCES teams (team_id) ON DELETE CASCADE,
    user_id TEXT NOT NULL CONSTRAINT team_members_user_fk REFERENCES users (user_id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at TEXT NOT NULL,
    PRIMARY KEY (team_id, user_id)
)""",
    *_V2_INDEXES,
)

_V2_POSTGRES = (
    """CREATE TABLE organizations (
    organization_id TEXT NOT NULL PRIMARY KEY,
    organization_alias TEXT UNIQUE,
    models JSONB NOT NULL DEFAULT '[]',
    max_budget DOUBLE PRECISION,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
    """CREATE TABLE teams (
    team_id TEXT NOT NULL PRIMARY KEY,
    team_alias TEXT UNIQUE,
    organization_id TEXT CONSTRAINT teams_organization_fk REFERENCES organizations (organization_id),
    models JSONB NOT NULL DEFAULT '[]',
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    tpm_limit BIGINT,
    rpm_limit BIGINT,
    max_parallel_requests BIGINT,
    metadata JSONB NOT NULL DEFAULT '{}',
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
    """CREATE TABLE users (
    user_id TEXT NOT NULL PRIMARY KEY,
    user_alias TEXT,
    user_email TEXT UNIQUE,
    user_role TEXT NOT NULL DEFAULT 'internal_user'
        CHECK (user_role IN ('proxy_admin', 'proxy_admin_viewer', 'internal_user', 'internal_user_viewer')),
    models JSONB NOT NULL DEFAULT '[]',
    max_budget DOUBLE PRECISION,
    budget_duration TEXT,
    tpm_limit BIGINT,
    rpm_limit BIGINT,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
    """CREATE TABLE team_members (
    team_id TEXT NOT NULL CONSTRAINT team_members_team_fk REFERENCES teams (team_id) ON DELETE CASCADE,
    user_id TEXT NOT NULL CONSTRAINT team_members_user_fk REFERENCES users (user_id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (team_id, user_id)
)""",
    *_V2_INDEXES,
)

# --- 3: end users (the ``user`` of a request; LiteLLM's "customers") ---------------------------------------
# Not tied to users or keys: any string a request names. Columns in EndUserRecord's field order.

_V3_INDEXES = ("CREATE INDEX end_users_by_created ON end_users (created_at, user_id)",)

_V3_SQLITE = (
    """CREATE TABLE end_users (
    user_id TEXT NOT NULL PRIMARY KEY,
    alias TEXT,
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    max_budget DOUBLE PRECISION,
    default_model TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
    *_V3_INDEXES,
)

_V3_POSTGRES = (
    """CREATE TABLE end_users (
    user_id TEXT NOT NULL PRIMARY KEY,
    alias TEXT,
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    max_budget DOUBLE PRECISION,
    default_model TEXT,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    spend DOUBLE PRECISION NOT NULL DEFAULT 0
)""",
    *_V3_INDEXES,
)

# --- 4: more key and team fields; deployments added through the API --------------------------------------
# Columns appended in KeyRecord's / TeamRecord's field order; existing rows take the defaults (empty JSON, NULL).
# SQLite adds one column per statement, so both dialects do. The models table is in ModelRecord's field order.

_V4_INDEXES = ("CREATE INDEX models_by_created ON models (created_at, model_id)",)

_V4_SQLITE = (
    "ALTER TABLE keys ADD COLUMN aliases TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE keys ADD COLUMN allowed_routes TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE keys ADD COLUMN soft_budget DOUBLE PRECISION",
    "ALTER TABLE keys ADD COLUMN model_max_budget TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE keys ADD COLUMN model_rpm_limit TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE keys ADD COLUMN model_tpm_limit TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE keys ADD COLUMN organization_id TEXT",
    "ALTER TABLE keys ADD COLUMN created_by TEXT",
    "ALTER TABLE keys ADD COLUMN updated_by TEXT",
    "ALTER TABLE teams ADD COLUMN model_aliases TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE teams ADD COLUMN soft_budget DOUBLE PRECISION",
    """CREATE TABLE models (
    model_id TEXT NOT NULL PRIMARY KEY,
    model_name TEXT NOT NULL,
    litellm_params TEXT NOT NULL,
    model_info TEXT NOT NULL,
    created_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)""",
    *_V4_INDEXES,
)

_V4_POSTGRES = (
    "ALTER TABLE keys ADD COLUMN aliases JSONB NOT NULL DEFAULT '{}'",
    "ALTER TABLE keys ADD COLUMN allowed_routes JSONB NOT NULL DEFAULT '[]'",
    "ALTER TABLE keys ADD COLUMN soft_budget DOUBLE PRECISION",
    "ALTER TABLE keys ADD COLUMN model_max_budget JSONB NOT NULL DEFAULT '{}'",
    "ALTER TABLE keys ADD COLUMN model_rpm_limit JSONB NOT NULL DEFAULT '{}'",
    "ALTER TABLE keys ADD COLUMN model_tpm_limit JSONB NOT NULL DEFAULT '{}'",
    "ALTER TABLE keys ADD COLUMN organization_id TEXT",
    "ALTER TABLE keys ADD COLUMN created_by TEXT",
    "ALTER TABLE keys ADD COLUMN updated_by TEXT",
    "ALTER TABLE teams ADD COLUMN model_aliases JSONB NOT NULL DEFAULT '{}'",
    "ALTER TABLE teams ADD COLUMN soft_budget DOUBLE PRECISION",
    """CREATE TABLE models (
    model_id TEXT NOT NULL PRIMARY KEY,
    model_name TEXT NOT NULL,
    litellm_params JSONB NOT NULL,
    model_info JSONB NOT NULL,
    created_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
)""",
    *_V4_INDEXES,
)

# --- 5: spend per budget window -----------------------------------------------------------------------
# One row per (scope, window_id): the USD a budget scope ("key:<hash>", "team:<id>", ...) spent in one budget
# period, so a limiter whose counter is cold (a restart, an evicted Redis key) is seeded from here. window_id is
# the limiter's opaque name for the period; "" is lifetime spend. updated_at (when spend was last added) lets
# old windows be deleted, hence its index.

_V5_INDEXES = ("CREATE INDEX budget_spend_by_updated ON budget_spend (updated_at)",)

_V5_SQLITE = (
    """CREATE TABLE budget_spend (
    scope TEXT NOT NULL,
    window_id TEXT NOT NULL,
    spent DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (scope, window_id)
)""",
    *_V5_INDEXES,
)

_V5_POSTGRES = (
    """CREATE TABLE budget_spend (
    scope TEXT NOT NULL,
    window_id TEXT NOT NULL,
    spent DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, window_id)
)""",
    *_V5_INDEXES,
)

# --- 6: the spend ledger ---------------------------------------------------------------------------------
# One row per request (SpendLogRow's fields, in order), keyed by request_id so a replayed batch never doubles.
# messages / response stay NULL unless storing prompts is enabled. The indexes serve the report and list queries:
# a time range, alone or for one key, team, user or model group.

_V6_INDEXES = (
    "CREATE INDEX spend_logs_by_started ON spend_logs (started_at)",
    "CREATE INDEX spend_logs_by_key ON spend_logs (key_hash, started_at)",
    "CREATE INDEX spend_logs_by_team ON spend_logs (team_id, started_at)",
    "CREATE INDEX spend_logs_by_user ON spend_logs (user_id, started_at)",
    "CREATE INDEX spend_logs_by_model_group ON spend_logs (model_group, started_at)",
)

_V6_SQLITE = (
    """CREATE TABLE spend_logs (
    request_id TEXT NOT NULL PRIMARY KEY,
    started_at TEXT NOT NULL,
    key_hash TEXT,
    key_alias TEXT,
    user_id TEXT,
    team_id TEXT,
    organization_id TEXT,
    end_user TEXT,
    model TEXT,
    model_group TEXT,
    deployment_id TEXT,
    provider TEXT,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens BIGINT NOT NULL DEFAULT 0,
    cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    cost_estimated BOOLEAN NOT NULL DEFAULT FALSE,
    latency_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    ttft_ms DOUBLE PRECISION,
    status INTEGER NOT NULL,
    error_type TEXT,
    stream BOOLEAN NOT NULL DEFAULT FALSE,
    client_disconnected BOOLEAN NOT NULL DEFAULT FALSE,
    route TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    messages TEXT,
    response TEXT
)""",
    *_V6_INDEXES,
)

_V6_POSTGRES = (
    """CREATE TABLE spend_logs (
    request_id TEXT NOT NULL PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    key_hash TEXT,
    key_alias TEXT,
    user_id TEXT,
    team_id TEXT,
    organization_id TEXT,
    end_user TEXT,
    model TEXT,
    model_group TEXT,
    deployment_id TEXT,
    provider TEXT,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens BIGINT NOT NULL DEFAULT 0,
    cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    cost_estimated BOOLEAN NOT NULL DEFAULT FALSE,
    latency_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    ttft_ms DOUBLE PRECISION,
    status INTEGER NOT NULL,
    error_type TEXT,
    stream BOOLEAN NOT NULL DEFAULT FALSE,
    client_disconnected BOOLEAN NOT NULL DEFAULT FALSE,
    route TEXT NOT NULL DEFAULT '',
    metadata JSONB NOT NULL DEFAULT '{}',
    messages JSONB,
    response JSONB
)""",
    *_V6_INDEXES,
)

# --- 7: per-model limits of a team -------------------------------------------------------------------
# The key's per-model maps (migration 4), for teams: model name -> USD / requests per minute / tokens per minute.
# Columns appended in TeamRecord's field order; existing teams take the empty map.

_V7_SQLITE = (
    "ALTER TABLE teams ADD COLUMN model_max_budget TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE teams ADD COLUMN model_rpm_limit TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE teams ADD COLUMN model_tpm_limit TEXT NOT NULL DEFAULT '{}'",
)

_V7_POSTGRES = (
    "ALTER TABLE teams ADD COLUMN model_max_budget JSONB NOT NULL DEFAULT '{}'",
    "ALTER TABLE teams ADD COLUMN model_rpm_limit JSONB NOT NULL DEFAULT '{}'",
    "ALTER TABLE teams ADD COLUMN model_tpm_limit JSONB NOT NULL DEFAULT '{}'",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, _V1_SQLITE, _V1_POSTGRES),
    Migration(2, _V2_SQLITE, _V2_POSTGRES),
    Migration(3, _V3_SQLITE, _V3_POSTGRES),
    Migration(4, _V4_SQLITE, _V4_POSTGRES),
    Migration(5, _V5_SQLITE, _V5_POSTGRES),
    Migration(6, _V6_SQLITE, _V6_POSTGRES),
    Migration(7, _V7_SQLITE, _V7_POSTGRES),
)
LATEST_VERSION = len(MIGRATIONS)


async def upgrade(conn: SchemaConnection) -> list[int]:
    """Apply the migrations ``conn``'s database lacks; return the versions applied here."""
    current = await conn.schema_version()
    if current > LATEST_VERSION:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this lockgate ({LATEST_VERSION}); upgrade lockgate"
        )
    applied = []
    for migration in MIGRATIONS[current:]:
        if await conn.apply(migration.version, migration.statements(conn.dialect)):
            applied.append(migration.version)
    return applied
