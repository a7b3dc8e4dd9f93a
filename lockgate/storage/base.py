"""The storage seam: the record types, the store interface every backend implements, its errors, and
``open_store``, which picks the backend from a URL.

Error tree::

    StorageError            anything the database refused or could not do
    ├── Conflict            a unique field (token_hash, key_alias) is taken; ``.field`` names it
    └── SchemaTooNew        the database was upgraded by a newer lockgate; nothing was touched

Backends (``sqlite.py``, ``postgres.py``) prove themselves by passing ``tests/storage/test_store_contract.py``.
Values that are not of the declared types are refused with ``ValueError`` before any SQL runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "IMMUTABLE_FIELDS",
    "KEY_FIELDS",
    "Conflict",
    "KeyRecord",
    "KeyStore",
    "SchemaTooNew",
    "StorageError",
    "Store",
    "apply_changes",
    "check_record",
    "open_store",
    "utc_now",
]


class StorageError(Exception):
    """The database refused or could not do what was asked."""


class Conflict(StorageError):
    """A unique field is already taken by another record."""

    def __init__(self, field: str) -> None:
        super().__init__(f"a key with this {field} already exists")
        self.field = field


class SchemaTooNew(StorageError):
    """The database's schema version is newer than this code knows; the database was left untouched."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One virtual key as stored. The key itself is never stored, only its hash."""

    token_hash: str  # hex sha256 of the presented key
    key_name: str  # display form: "sk-...abcd" (prefix + last 4)
    key_alias: str | None
    user_id: str | None
    team_id: str | None
    models: tuple[str, ...]  # allowed model names / wildcards; empty = all
    max_budget: float | None
    budget_duration: str | None
    tpm_limit: int | None
    rpm_limit: int | None
    max_parallel_requests: int | None
    metadata: dict[str, Any]  # JSON
    blocked: bool
    expires: datetime | None  # UTC
    created_at: datetime  # UTC
    updated_at: datetime  # UTC
    spend: float = 0.0


KEY_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(KeyRecord))
IMMUTABLE_FIELDS = frozenset({"token_hash", "created_at", "updated_at"})


class KeyStore(Protocol):
    """Virtual keys, addressed by the hash of the key."""

    async def insert_key(self, key: KeyRecord) -> None:
        """Store a new key; :class:`Conflict` if its token_hash or key_alias exists."""

    async def get_key(self, token_hash: str) -> KeyRecord | None:
        """The key with this hash, or None."""

    async def update_key(self, token_hash: str, /, **changes: Any) -> KeyRecord | None:
        """Change some fields (``ValueError`` for unknown or immutable ones), set updated_at; None if missing."""

    async def delete_keys(self, token_hashes: Sequence[str]) -> int:
        """Delete these keys in one transaction; how many existed."""

    async def list_keys(
        self, *, user_id: str | None = None, team_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[KeyRecord]:
        """Keys matching the filters, ordered by created_at then token_hash."""


class Store(KeyStore, Protocol):
    """Everything lockgate keeps in its database."""

    async def close(self) -> None:
        """Release the connection(s)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


_OPTIONAL_STR = ("key_alias", "user_id", "team_id", "budget_duration")
_OPTIONAL_INT = ("tpm_limit", "rpm_limit", "max_parallel_requests")


def _check_time(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def check_record(key: KeyRecord) -> None:
    """Refuse a record whose values are not of the declared types (``ValueError`` naming the field)."""
    for name in ("token_hash", "key_name"):
        if not isinstance(getattr(key, name), str) or not getattr(key, name):
            raise ValueError(f"{name} must be a non-empty string")
    for name in _OPTIONAL_STR:
        if getattr(key, name) is not None and not isinstance(getattr(key, name), str):
            raise ValueError(f"{name} must be a string or None")
    for name in ("token_hash", "key_name", *_OPTIONAL_STR):
        if "\x00" in (getattr(key, name) or ""):
            raise ValueError(f"{name} must not contain NUL characters")
    for name in _OPTIONAL_INT:
        value = getattr(key, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer or None")
    if key.max_budget is not None and (isinstance(key.max_budget, bool) or not isinstance(key.max_budget, int | float)):
        raise ValueError("max_budget must be a number or None")
    if isinstance(key.spend, bool) or not isinstance(key.spend, int | float):
        raise ValueError("spend must be a number")
    if not isinstance(key.models, tuple) or not all(isinstance(m, str) for m in key.models):
        raise ValueError("models must be a tuple of strings")
    if not isinstance(key.metadata, dict):
        raise ValueError("metadata must be a dict")
    if not isinstance(key.blocked, bool):
        raise ValueError("blocked must be a bool")
    _check_time("expires", key.expires, optional=True)
    _check_time("created_at", key.created_at, optional=False)
    _check_time("updated_at", key.updated_at, optional=False)


def apply_changes(key: KeyRecord, changes: dict[str, Any]) -> KeyRecord:
    """``key`` with ``changes`` applied and updated_at moved forward; ``ValueError`` for a field it may not set."""
    for name in changes:
        if name in IMMUTABLE_FIELDS:
            raise ValueError(f"{name} cannot be changed")
        if name not in KEY_FIELDS:
            raise ValueError(f"unknown key field: {name}")
    if isinstance(changes.get("models"), list):
        changes = {**changes, "models": tuple(changes["models"])}
    updated_at = max(utc_now(), key.updated_at + timedelta(microseconds=1))
    changed = dataclasses.replace(key, **changes, updated_at=updated_at)
    check_record(changed)
    return changed


_URL_HELP = "database URL must be sqlite:///relative/path, sqlite:////absolute/path, postgres:// or postgresql://"


async def open_store(url: str | None, *, sqlite_path: Path) -> Store:
    """The store at ``url``, its schema brought up to date: None → SQLite at ``sqlite_path``; ``sqlite:///path``
    → SQLite there (SQLAlchemy's convention: three slashes then a relative path, four for an absolute one);
    ``postgres://`` or ``postgresql://`` → PostgreSQL. Anything else is a ``ValueError`` that does not repeat
    the URL (it may hold a password)."""
    # The backends import this module, so they are imported here, when a store is opened; asyncpg is then
    # loaded only when PostgreSQL is configured.
    if url is None or url.startswith("sqlite:///"):
        from lockgate.storage.sqlite import SqliteStore

        if url is None:
            return await SqliteStore.open(sqlite_path)
        path = url.removeprefix("sqlite:///")
        if not path or "?" in path:
            raise ValueError(_URL_HELP)
        return await SqliteStore.open(Path(path))
    if url.startswith(("postgres://", "postgresql://")):
        from lockgate.storage.postgres import PostgresStore

        return await PostgresStore.open(url)
    raise ValueError(_URL_HELP)
