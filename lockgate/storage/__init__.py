"""Durable state (virtual keys; organizations, teams, members, users; end users; deployments added through the
API; spend per budget window and per record; the spend ledger, one row per request) behind one interface.

    base.py        the records, the Key / Directory / EndUser / Model / Spend / Ledger / Store protocols, the
                   error tree
    migrations.py  the schema as append-only numbered migrations; upgrade()
    sqlite.py      the default backend: one file, zero setup
    postgres.py    PostgreSQL through an asyncpg pool
    handle.py      StoreHandle: a store the gateway starts with before its database can be opened

``open_store(url, sqlite_path=...)`` picks the backend from the URL and upgrades the schema on open (it only
ever adds); a database newer than this code raises :class:`SchemaTooNew` and is left untouched, one that cannot
be reached now :class:`Unreachable`.
"""

from __future__ import annotations

from lockgate.storage.base import (
    DEFAULT_USER_ROLE,
    REPORT_GROUPS,
    SPEND_LOG_FIELDS,
    SPEND_TABLES,
    TEAM_ROLES,
    USER_ROLES,
    Conflict,
    DirectoryStore,
    EndUserRecord,
    EndUserStore,
    KeyRecord,
    KeyStore,
    LedgerStore,
    ModelRecord,
    ModelStore,
    NotFoundError,
    OrgRecord,
    ReportGroup,
    SchemaTooNew,
    SpendDelta,
    SpendLogRow,
    SpendLogValues,
    SpendStore,
    StorageError,
    Store,
    TeamMember,
    TeamRecord,
    Unreachable,
    UserRecord,
    open_store,
    unreachable,
)

__all__ = [
    "DEFAULT_USER_ROLE",
    "REPORT_GROUPS",
    "SPEND_LOG_FIELDS",
    "SPEND_TABLES",
    "TEAM_ROLES",
    "USER_ROLES",
    "Conflict",
    "DirectoryStore",
    "EndUserRecord",
    "EndUserStore",
    "KeyRecord",
    "KeyStore",
    "LedgerStore",
    "ModelRecord",
    "ModelStore",
    "NotFoundError",
    "OrgRecord",
    "ReportGroup",
    "SchemaTooNew",
    "SpendDelta",
    "SpendLogRow",
    "SpendLogValues",
    "SpendStore",
    "StorageError",
    "Store",
    "TeamMember",
    "TeamRecord",
    "Unreachable",
    "UserRecord",
    "open_store",
    "unreachable",
]
