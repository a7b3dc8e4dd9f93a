"""The storage seam: the record types, the store interface every backend implements, its errors, and
``open_store``, which picks the backend from a URL.

Records: :class:`KeyRecord` (virtual keys), the directory of :class:`OrgRecord` > :class:`TeamRecord`
(with :class:`TeamMember` rows) > :class:`UserRecord`, :class:`EndUserRecord` (the ``user`` of a request),
and :class:`ModelRecord` (deployments added through the API). Spend: :class:`SpendDelta` (USD added to one
budget scope's window; see :class:`SpendStore`) and :class:`SpendLogRow` (one request in the spend ledger; see
:class:`LedgerStore`).

Error tree::

    StorageError            anything the database refused or could not do
    ├── Conflict            a unique field (an id, key_alias, team_alias, organization_alias, user_email) is
    │                       taken, or an organization that still has teams was to be deleted; ``.field`` names it
    ├── NotFoundError       a reference names nothing: a team's organization_id, add_member's team_id or
    │                       user_id; ``.field`` names it
    ├── SchemaTooNew        the database was upgraded by a newer lockgate; nothing was touched
    └── Unreachable         the database cannot be reached now (refused, timed out, not accepting connections
                            yet; or, through a :class:`~lockgate.storage.handle.StoreHandle`, not opened yet):
                            trying again later may succeed

Backends (``sqlite.py``, ``postgres.py``) prove themselves by passing ``tests/storage/test_store_contract.py``.
Values that are not of the declared types are refused with ``ValueError`` before any SQL runs.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, get_args

import orjson

__all__ = [
    "DEFAULT_USER_ROLE",
    "IMMUTABLE_FIELDS",
    "KEY_FIELDS",
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
    "apply_changes",
    "check_id",
    "check_ids",
    "check_member",
    "check_page",
    "check_record",
    "check_report",
    "check_spend",
    "check_spend_filters",
    "check_time",
    "check_window",
    "json_text",
    "later",
    "open_store",
    "spend_log_fast_values",
    "spend_log_faults",
    "spend_log_values",
    "unreachable",
    "utc_now",
]


class StorageError(Exception):
    """The database refused or could not do what was asked."""


class Conflict(StorageError):
    """A unique field is already taken by another record (or, for ``delete_orgs``, the organization is in use)."""

    def __init__(self, field: str, message: str | None = None) -> None:
        super().__init__(message or f"a record with this {field} already exists")
        self.field = field


class NotFoundError(StorageError):
    """A reference names a record that does not exist (a team's organization_id, a member's team or user)."""

    def __init__(self, field: str) -> None:
        super().__init__(f"no record has this {field}")
        self.field = field


class SchemaTooNew(StorageError):
    """The database's schema version is newer than this code knows; the database was left untouched."""


class Unreachable(StorageError):
    """The database cannot be reached now (the connection was refused or timed out, the server is not accepting
    connections yet) or has not been opened yet: unlike the other errors, trying again later may succeed."""


_STORAGE_MODULES = ("lockgate.storage", "asyncpg")


def unreachable(exc: BaseException) -> bool:
    """Whether a store call failed because the database could not be reached or was lost under it (refused, reset,
    timed out, closed by the server): :class:`Unreachable`, asyncpg's connection errors, or an ``OSError`` raised
    in the storage code or asyncpg (one raised elsewhere, by an upstream call say, is not the database's). Not a
    refusal (bad SQL, a constraint, a password) nor a bug: those stay what they are."""
    if isinstance(exc, Unreachable):
        return True
    asyncpg = sys.modules.get("asyncpg")  # loaded only when PostgreSQL is configured
    kinds = (getattr(asyncpg, "PostgresConnectionError", None), getattr(asyncpg, "CannotConnectNowError", None))
    if any(isinstance(exc, kind) for kind in kinds if isinstance(kind, type)):
        return True
    if not isinstance(exc, OSError):  # TimeoutError and ConnectionError are OSErrors
        return False
    frame = exc.__traceback__
    while frame is not None:
        if str(frame.tb_frame.f_globals.get("__name__", "")).startswith(_STORAGE_MODULES):
            return True
        frame = frame.tb_next
    return False


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
    # Added by migration 4 (columns appended in this order):
    aliases: dict[str, str] = dataclasses.field(default_factory=dict)  # JSON: requested name -> model group
    allowed_routes: tuple[str, ...] = ()  # route paths / fnmatch patterns / route groups; empty = all
    soft_budget: float | None = None  # alerting threshold, never a block
    model_max_budget: dict[str, float] = dataclasses.field(default_factory=dict)  # JSON: model -> USD
    model_rpm_limit: dict[str, int] = dataclasses.field(default_factory=dict)  # JSON: model -> requests/min
    model_tpm_limit: dict[str, int] = dataclasses.field(default_factory=dict)  # JSON: model -> tokens/min
    organization_id: str | None = None
    created_by: str | None = None  # who made it: a user_id, or "master_key"
    updated_by: str | None = None


KEY_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(KeyRecord))
IMMUTABLE_FIELDS = frozenset({"token_hash", "created_at", "updated_at"})

USER_ROLES = frozenset({"proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"})
DEFAULT_USER_ROLE = "internal_user"  # also the column's default; the API fills it in when a caller omits it
TEAM_ROLES = frozenset({"admin", "user"})


@dataclass(frozen=True, slots=True)
class OrgRecord:
    """An organization: the top of the directory; teams may belong to one."""

    organization_id: str
    organization_alias: str | None  # unique when set
    models: tuple[str, ...]  # empty = all
    max_budget: float | None
    metadata: dict[str, Any]  # JSON
    created_at: datetime  # UTC
    updated_at: datetime  # UTC
    spend: float = 0.0


@dataclass(frozen=True, slots=True)
class TeamRecord:
    """A team; its organization_id, when set, names an existing organization."""

    team_id: str
    team_alias: str | None  # unique when set
    organization_id: str | None
    models: tuple[str, ...]  # empty = all
    max_budget: float | None
    budget_duration: str | None
    tpm_limit: int | None
    rpm_limit: int | None
    max_parallel_requests: int | None
    metadata: dict[str, Any]  # JSON
    blocked: bool
    created_at: datetime  # UTC
    updated_at: datetime  # UTC
    spend: float = 0.0
    # Added by migration 4 (columns appended in this order):
    model_aliases: dict[str, str] = dataclasses.field(default_factory=dict)  # JSON: requested name -> group
    soft_budget: float | None = None
    # Added by migration 7, as the key's (a team-wide limit per model; the budget in the team's budget_duration):
    model_max_budget: dict[str, float] = dataclasses.field(default_factory=dict)  # JSON: model -> USD
    model_rpm_limit: dict[str, int] = dataclasses.field(default_factory=dict)  # JSON: model -> requests/min
    model_tpm_limit: dict[str, int] = dataclasses.field(default_factory=dict)  # JSON: model -> tokens/min


@dataclass(frozen=True, slots=True)
class TeamMember:
    """One user's membership of one team; role is ``"admin"`` or ``"user"``."""

    team_id: str
    user_id: str
    role: str


@dataclass(frozen=True, slots=True)
class UserRecord:
    """An internal user (a person or service that owns keys), not an end user of a request."""

    user_id: str
    user_alias: str | None
    user_email: str | None  # unique when set
    user_role: str  # one of USER_ROLES; DEFAULT_USER_ROLE unless told otherwise
    models: tuple[str, ...]  # empty = all
    max_budget: float | None
    budget_duration: str | None
    tpm_limit: int | None
    rpm_limit: int | None
    metadata: dict[str, Any]  # JSON
    created_at: datetime  # UTC
    updated_at: datetime  # UTC
    spend: float = 0.0


@dataclass(frozen=True, slots=True)
class EndUserRecord:
    """An end user ("customer"): whoever a request's ``user`` field names; may be blocked or given a budget."""

    user_id: str
    alias: str | None
    blocked: bool
    max_budget: float | None
    default_model: str | None
    metadata: dict[str, Any]  # JSON
    created_at: datetime  # UTC
    updated_at: datetime  # UTC
    spend: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A deployment added through the API (``/model/new``), served beside those of the config file.

    ``litellm_params`` is stored as given, except that the API layer has already replaced every credential
    by its encrypted form: the store never sees a provider key in clear."""

    model_id: str
    model_name: str
    litellm_params: dict[str, Any]  # JSON
    model_info: dict[str, Any]  # JSON
    created_by: str | None
    created_at: datetime  # UTC
    updated_at: datetime  # UTC


@dataclass(frozen=True, slots=True)
class SpendDelta:
    """USD to add to one budget scope's spend in one window.

    ``scope`` names what the budget belongs to: ``"key:<hash>"``, ``"user:<id>"``, ``"team:<id>"``, ``"org:<id>"``,
    ``"end_user:<id>"``, ``"key:<hash>:model:<name>"``, ``"team:<id>:model:<name>"``; the store treats it as an
    opaque non-empty string.
    ``window_id`` names one budget period (opaque, chosen by the limiter, e.g. ``"1h@1732406400"``); ``""`` is
    lifetime spend, for a budget with no budget_duration."""

    scope: str
    window_id: str
    amount: float  # USD, finite, >= 0


@dataclass(frozen=True, slots=True)
class SpendLogRow:
    """One request in the spend ledger (``spend_logs``, migration 6): who sent it, what it asked for and where it
    went, what it used and cost, how it ended. ``request_id`` is the key: a row written twice is kept once.

    Every field but the first two has a default, so a writer names only what it knows. Counts are integers >= 0;
    ``cost`` / ``latency_ms`` / ``ttft_ms`` finite numbers >= 0. ``messages`` and ``response`` hold prompts and
    completions only when storing them is enabled (None otherwise), and only proxy admins are shown them."""

    request_id: str
    started_at: datetime  # aware; stored as UTC
    key_hash: str | None = None
    key_alias: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    organization_id: str | None = None
    end_user: str | None = None
    model: str | None = None  # as requested
    model_group: str | None = None  # the group it was routed in
    deployment_id: str | None = None
    provider: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0  # USD
    cost_estimated: bool = False  # the usage was estimated (the upstream reported none)
    latency_ms: float = 0.0
    ttft_ms: float | None = None  # to the first token of a stream
    status: int = 200  # the HTTP status the client got (0..999)
    error_type: str | None = None
    stream: bool = False
    client_disconnected: bool = False
    route: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)  # JSON
    messages: Any = None  # JSON, or None
    response: Any = None  # JSON, or None


SPEND_LOG_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SpendLogRow))

Charge = tuple[tuple[SpendDelta, ...], tuple[tuple[str, str, float], ...]]
"""What one ledger row's request adds to spend, applied with the row (``insert_spend_log_values``): budget window
deltas and ``(kind, id, amount)`` owner spend, as :meth:`SpendStore.add_spend` takes them."""

SpendLogValues = tuple[Any, ...]
"""A :class:`SpendLogRow` checked and converted by :func:`spend_log_values` into what the INSERT takes: its fields
in ``SPEND_LOG_FIELDS`` order, ``started_at`` as UTC ISO text (``2026-03-01T12:00:00.000000+00:00``), ``cost`` /
``latency_ms`` / ``ttft_ms`` as floats, ``metadata`` / ``messages`` / ``response`` as JSON text (None for no
messages / response). Only atomic values: the garbage collector stops tracking such a tuple."""

ReportGroup = Literal["day", "key", "team", "user", "end_user", "model", "provider"]
"""What ``spend_report`` groups by: the UTC day ('YYYY-MM-DD'), key_hash, team_id, user_id, end_user,
model_group or provider."""
REPORT_GROUPS: frozenset[str] = frozenset(get_args(ReportGroup))

# What add_spend's entity_spend may name: each kind is one table's ``spend`` column, addressed by its id.
SPEND_TABLES = frozenset({"key", "user", "team", "org", "end_user"})


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

    async def rekey(self, token_hash: str, new_token_hash: str, new_key_name: str) -> KeyRecord | None:
        """In one transaction, give the key a new hash and display name, keeping every other field (updated_at
        moves); None if ``token_hash`` is missing, :class:`Conflict` (``token_hash``) if the new hash is taken."""


class DirectoryStore(Protocol):
    """Organizations, teams (with their members) and users. Every list is ordered by created_at then id (members:
    by when they were added, then user_id) and takes ``limit`` / ``offset``; every write is one transaction."""

    async def insert_org(self, org: OrgRecord) -> None:
        """Store a new organization; :class:`Conflict` if its organization_id or organization_alias exists."""

    async def get_org(self, organization_id: str) -> OrgRecord | None:
        """The organization with this id, or None."""

    async def update_org(self, organization_id: str, /, **changes: Any) -> OrgRecord | None:
        """Change some fields (``ValueError`` for unknown or immutable ones), set updated_at; None if missing."""

    async def list_orgs(self, *, limit: int = 100, offset: int = 0) -> list[OrgRecord]:
        """Organizations, ordered by created_at then organization_id."""

    async def delete_orgs(self, organization_ids: Sequence[str]) -> int:
        """Delete these organizations; how many existed. :class:`Conflict` (field ``organization_id``, nothing
        deleted) if a team still belongs to one of them."""

    async def insert_team(self, team: TeamRecord, members: Sequence[TeamMember] = ()) -> None:
        """Store a new team, and its first members, in one transaction; :class:`Conflict` if its team_id or
        team_alias exists, :class:`NotFoundError` (``organization_id`` / ``user_id``) if it names an
        organization or a member user that does not exist; nothing is written then."""

    async def get_team(self, team_id: str) -> TeamRecord | None:
        """The team with this id, or None."""

    async def update_team(self, team_id: str, /, **changes: Any) -> TeamRecord | None:
        """Like ``update_org``; a new organization_id must exist (:class:`NotFoundError`)."""

    async def list_teams(
        self, *, organization_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[TeamRecord]:
        """Teams (of this organization, if given), ordered by created_at then team_id."""

    async def delete_teams(self, team_ids: Sequence[str]) -> int:
        """Delete these teams and their memberships; how many teams existed. Keys keep their team_id."""

    async def add_member(self, team_id: str, user_id: str, role: str) -> TeamMember:
        """Make the user a member of the team with this role (changing the role if it already is one);
        :class:`NotFoundError` naming ``team_id`` or ``user_id`` if either does not exist."""

    async def add_members(self, team_id: str, members: Sequence[TeamMember]) -> None:
        """``add_member`` for several users in one transaction: all of them or none (:class:`NotFoundError`
        naming ``team_id`` or ``user_id``); each member must name ``team_id`` (``ValueError``)."""

    async def remove_member(self, team_id: str, user_id: str) -> bool:
        """End this membership; whether it existed."""

    async def list_members(self, team_id: str, *, limit: int = 100, offset: int = 0) -> list[TeamMember]:
        """The team's members, in the order they were added (then user_id)."""

    async def teams_of(self, user_id: str) -> list[str]:
        """The ids of the teams this user is a member of, ordered by the teams' created_at then team_id."""

    async def get_member(self, team_id: str, user_id: str) -> TeamMember | None:
        """This user's membership of this team, or None."""

    async def insert_user(self, user: UserRecord, key: KeyRecord | None = None) -> None:
        """Store a new user, and with it (in the same transaction) its first key if given; :class:`Conflict`
        if the user's user_id or user_email, or the key's token_hash or key_alias, exists (nothing written)."""

    async def get_user(self, user_id: str) -> UserRecord | None:
        """The user with this id, or None."""

    async def update_user(self, user_id: str, /, **changes: Any) -> UserRecord | None:
        """Like ``update_org``."""

    async def list_users(self, *, team_id: str | None = None, limit: int = 100, offset: int = 0) -> list[UserRecord]:
        """Users (members of this team, if given), ordered by created_at then user_id."""

    async def delete_users(self, user_ids: Sequence[str]) -> int:
        """Delete these users and their memberships; how many existed. Keys keep their user_id."""


class ModelStore(Protocol):
    """Deployments added through the API, addressed by model_id; listed by created_at then model_id."""

    async def insert_model(self, model: ModelRecord) -> None:
        """Store a new deployment; :class:`Conflict` (``model_id``) if one with this id exists."""

    async def get_model(self, model_id: str) -> ModelRecord | None:
        """The deployment with this id, or None."""

    async def list_models(self, *, limit: int = 1000, offset: int = 0) -> list[ModelRecord]:
        """Deployments, ordered by created_at then model_id."""

    async def update_model(self, model_id: str, /, **changes: Any) -> ModelRecord | None:
        """Change some fields (``ValueError`` for unknown or immutable ones), set updated_at; None if missing."""

    async def delete_models(self, model_ids: Sequence[str]) -> int:
        """Delete these deployments in one transaction; how many existed."""


class EndUserStore(Protocol):
    """End users, addressed by user_id; lists are ordered by created_at then user_id; every write is one
    transaction."""

    async def insert_end_user(self, end_user: EndUserRecord) -> None:
        """Store a new end user; :class:`Conflict` (``user_id``) if one with this user_id exists."""

    async def get_end_user(self, user_id: str) -> EndUserRecord | None:
        """The end user with this id, or None."""

    async def update_end_user(self, user_id: str, /, **changes: Any) -> EndUserRecord | None:
        """Change some fields (``ValueError`` for unknown or immutable ones), set updated_at; None if missing."""

    async def list_end_users(self, *, limit: int = 100, offset: int = 0) -> list[EndUserRecord]:
        """End users, ordered by created_at then user_id."""

    async def delete_end_users(self, user_ids: Sequence[str]) -> int:
        """Delete these end users; how many existed."""

    async def set_end_users_blocked(self, user_ids: Sequence[str], blocked: bool) -> int:
        """Set ``blocked`` (and move updated_at) on these end users in one statement; how many existed."""


class SpendStore(Protocol):
    """Spend that outlives a restart: per budget window (``budget_spend``, what a cold limiter is seeded from) and
    the running ``spend`` column of each key, user, team, organization and end user."""

    async def add_spend(
        self, deltas: Sequence[SpendDelta], entity_spend: Sequence[tuple[str, str, float]] = ()
    ) -> None:
        """In one transaction: add each delta to its (scope, window_id) row, creating it at 0 first (deltas naming
        the same row in one call are summed first), and each ``(kind, id, amount)`` of ``entity_spend`` to that
        record's ``spend`` (kind one of :data:`SPEND_TABLES`; a record that does not exist is skipped, since a key may
        be deleted while its request runs). Every amount must be a finite number >= 0; anything invalid is a
        ``ValueError`` before any SQL runs. Entities' updated_at is not moved: spend is not an edit."""

    async def window_spend(self, scope: str, window_id: str) -> float:
        """The USD recorded for this scope and window; 0.0 if none."""

    async def delete_spend_before(self, updated_before: datetime) -> int:
        """Delete the window rows last added to before ``updated_before`` (an aware datetime); how many. Lifetime
        rows (window_id ``""``) are kept: they are not windows that end."""


class LedgerStore(Protocol):
    """The spend ledger: one :class:`SpendLogRow` per request, written in batches by ``lockgate.ledger``, read by
    the spend API. Times are aware datetimes (``ValueError`` otherwise); ranges are ``start <= started_at < end``."""

    async def insert_spend_logs(self, rows: Sequence[SpendLogRow]) -> int:
        """Insert the rows in one transaction, skipping any whose request_id is already stored (or repeats one
        earlier in ``rows``): a replayed batch never doubles. How many were new. Any invalid row is a
        ``ValueError`` before any SQL runs (nothing is written)."""

    async def insert_spend_log_values(
        self, rows: Sequence[SpendLogValues], charges: Mapping[str, Charge] | None = None
    ) -> int:
        """:meth:`insert_spend_logs` for rows that :func:`spend_log_values` has checked and converted already (they
        are not checked again): one transaction, a request_id already stored (or repeated) skipped, how many were
        new. In the same transaction, each new row's ``charges[request_id]`` is added as :meth:`add_spend` adds
        (a row stored already charges nothing, so a replay never charges twice, even from two instances)."""

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
        """The rows matching every given filter, newest first (then request_id, descending)."""

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
        """Totals per group of the rows in ``[start, end)`` matching the filters: ``{"group": value (None for
        rows without one), "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost"}``. Days
        ascend; other groups come by cost, highest first, then by value (None last)."""

    async def delete_spend_logs_before(self, before: datetime) -> int:
        """Delete the rows that started before ``before`` (retention); how many."""

    async def clear_spend_log_content(self, before: datetime, *, after: datetime | None = None) -> int:
        """Set ``messages`` and ``response`` to NULL in the rows that started before ``before`` (and, if given,
        at or after ``after``) and hold either (prompt retention); how many. Idempotent: a second call finds
        nothing left to clear."""


class Store(KeyStore, DirectoryStore, EndUserStore, ModelStore, SpendStore, LedgerStore, Protocol):
    """Everything lockgate keeps in its database."""

    async def close(self) -> None:
        """Release the connection(s)."""


def later(previous: datetime) -> datetime:
    """A new updated_at: now, but always after ``previous``."""
    return max(utc_now(), previous + timedelta(microseconds=1))


def utc_now() -> datetime:
    return datetime.now(UTC)


# How each record's fields are checked: "id" a non-empty string, "str?" a string or None, "int?" an integer or
# None, "num?" a number or None, "num" a number, "models" a tuple of strings, "json" a dict, "bool" a bool,
# "time" an aware datetime, "time?" the same or None, "user_role" one of USER_ROLES; "aliases" a dict of names to
# non-empty strings, "num_map" / "int_map" a dict of model names (non-empty) to finite non-negative numbers /
# integers.
_FIELD_KINDS: dict[type, dict[str, str]] = {
    KeyRecord: {
        "token_hash": "id", "key_name": "id", "key_alias": "str?", "user_id": "str?", "team_id": "str?",
        "budget_duration": "str?", "tpm_limit": "int?", "rpm_limit": "int?", "max_parallel_requests": "int?",
        "max_budget": "num?", "spend": "num", "models": "models", "metadata": "json", "blocked": "bool",
        "expires": "time?", "created_at": "time", "updated_at": "time", "aliases": "aliases",
        "allowed_routes": "models", "soft_budget": "num?", "model_max_budget": "num_map",
        "model_rpm_limit": "int_map", "model_tpm_limit": "int_map", "organization_id": "str?",
        "created_by": "str?", "updated_by": "str?",
    },
    OrgRecord: {
        "organization_id": "id", "organization_alias": "str?", "max_budget": "num?", "spend": "num",
        "models": "models", "metadata": "json", "created_at": "time", "updated_at": "time",
    },
    TeamRecord: {
        "team_id": "id", "team_alias": "str?", "organization_id": "str?", "budget_duration": "str?",
        "tpm_limit": "int?", "rpm_limit": "int?", "max_parallel_requests": "int?", "max_budget": "num?",
        "spend": "num", "models": "models", "metadata": "json", "blocked": "bool", "created_at": "time",
        "updated_at": "time", "model_aliases": "aliases", "soft_budget": "num?", "model_max_budget": "num_map",
        "model_rpm_limit": "int_map", "model_tpm_limit": "int_map",
    },
    UserRecord: {
        "user_id": "id", "user_alias": "str?", "user_email": "str?", "user_role": "user_role",
        "budget_duration": "str?", "tpm_limit": "int?", "rpm_limit": "int?", "max_budget": "num?",
        "spend": "num", "models": "models", "metadata": "json", "created_at": "time", "updated_at": "time",
    },
    EndUserRecord: {
        "user_id": "id", "alias": "str?", "blocked": "bool", "max_budget": "num?", "default_model": "str?",
        "metadata": "json", "created_at": "time", "updated_at": "time", "spend": "num",
    },
    ModelRecord: {
        "model_id": "id", "model_name": "id", "litellm_params": "json", "model_info": "json",
        "created_by": "str?", "created_at": "time", "updated_at": "time",
    },
}  # fmt: skip
# The ledger's kinds besides those above: "str" a string (may be empty), "count" an integer in [0, 2**63),
# "amount" / "amount?" a finite number >= 0 (or None), "status" an integer in [0, 999], "any?" any JSON value
# or None (what JSON can hold is checked when it is written out).
_SPEND_LOG_KINDS: dict[str, str] = {
    "request_id": "id", "started_at": "time", "key_hash": "str?", "key_alias": "str?", "user_id": "str?",
    "team_id": "str?", "organization_id": "str?", "end_user": "str?", "model": "str?", "model_group": "str?",
    "deployment_id": "str?", "provider": "str?", "prompt_tokens": "count", "completion_tokens": "count",
    "cache_read_tokens": "count", "cache_write_tokens": "count", "reasoning_tokens": "count",
    "total_tokens": "count", "cost": "amount", "cost_estimated": "bool", "latency_ms": "amount",
    "ttft_ms": "amount?", "status": "status", "error_type": "str?", "stream": "bool",
    "client_disconnected": "bool", "route": "str", "metadata": "json", "messages": "any?", "response": "any?",
}  # fmt: skip
assert tuple(_SPEND_LOG_KINDS) == SPEND_LOG_FIELDS
_MAX_COUNT = 2**63  # BIGINT

# What update_* calls each record, and its id field (which, with the timestamps, cannot be changed).
_RECORD_NAMES: dict[type, tuple[str, str]] = {
    KeyRecord: ("key", "token_hash"),
    OrgRecord: ("organization", "organization_id"),
    TeamRecord: ("team", "team_id"),
    UserRecord: ("user", "user_id"),
    EndUserRecord: ("end user", "user_id"),
    ModelRecord: ("model", "model_id"),
}

Record = TypeVar("Record", KeyRecord, OrgRecord, TeamRecord, UserRecord, EndUserRecord, ModelRecord)


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _check_value(name: str, kind: str, value: object) -> None:
    if kind == "id":
        check_id(name, value)
    elif kind == "str?":
        if value is not None:
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string or None")
            if "\x00" in value:
                raise ValueError(f"{name} must not contain NUL characters")
    elif kind == "int?":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer or None")
    elif kind == "num?":
        if value is not None and not _is_number(value):
            raise ValueError(f"{name} must be a number or None")
    elif kind == "num":
        if not _is_number(value):
            raise ValueError(f"{name} must be a number")
    elif kind == "models":
        if not isinstance(value, tuple) or not all(isinstance(m, str) and "\x00" not in m for m in value):
            raise ValueError(f"{name} must be a tuple of strings")
    elif kind in ("aliases", "num_map", "int_map"):
        if not isinstance(value, dict) or not all(isinstance(k, str) and "\x00" not in k for k in value):
            raise ValueError(f"{name} must be a dict with string keys")
        if kind != "aliases" and "" in value:
            raise ValueError(f"{name} must name each model (a non-empty string)")
        for item in value.values():
            if kind == "aliases" and not (isinstance(item, str) and item and "\x00" not in item):
                raise ValueError(f"{name} must map names to non-empty strings")
            if kind == "num_map" and not (_is_number(item) and _finite(item) and item >= 0):
                raise ValueError(f"{name} must map names to non-negative numbers")
            if kind == "int_map" and not (isinstance(item, int) and not isinstance(item, bool) and item >= 0):
                raise ValueError(f"{name} must map names to non-negative integers")
    elif kind == "json":
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a dict")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool")
    elif kind in ("time", "time?"):
        if value is None and kind == "time?":
            return
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ValueError(f"{name} must be a timezone-aware datetime")
    elif kind == "user_role":
        if value not in USER_ROLES:
            raise ValueError(f"{name} must be one of {', '.join(sorted(USER_ROLES))}")
    elif kind == "str":
        if not isinstance(value, str) or "\x00" in value:
            raise ValueError(f"{name} must be a string without NUL characters")
    elif kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_COUNT:
            raise ValueError(f"{name} must be an integer >= 0")
    elif kind in ("amount", "amount?"):
        if value is None and kind == "amount?":
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0")
    elif kind == "status":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 999:
            raise ValueError(f"{name} must be an integer between 0 and 999")
    elif kind == "any?":
        return
    else:  # pragma: no cover - a typo in _FIELD_KINDS
        raise AssertionError(kind)


def check_id(name: str, value: object) -> None:
    """Refuse an id that is not a non-empty string without NUL characters (``ValueError`` naming it)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL characters")


def check_ids(name: str, values: Sequence[str]) -> list[str]:
    """``values`` as a list without repeats, each checked like :func:`check_id`; ``ValueError`` (naming ``name``)
    for one string given where a sequence of ids belongs."""
    if isinstance(values, str):
        raise ValueError(f"{name} must be a sequence of ids, not one string")
    for value in values:
        check_id(name, value)
    return list(dict.fromkeys(values))


def check_page(limit: int, offset: int) -> None:
    """Refuse a negative (or non-integer) limit or offset."""
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")


def check_record(record: KeyRecord | OrgRecord | TeamRecord | UserRecord | EndUserRecord | ModelRecord) -> None:
    """Refuse a record whose values are not of the declared types (``ValueError`` naming the field)."""
    for name, kind in _FIELD_KINDS[type(record)].items():
        _check_value(name, kind, getattr(record, name))


def check_member(member: TeamMember) -> None:
    """Refuse a membership with a bad id or a role other than ``admin`` / ``user``."""
    check_id("team_id", member.team_id)
    check_id("user_id", member.user_id)
    if member.role not in TEAM_ROLES:
        raise ValueError("role must be admin or user")


def check_window(scope: object, window_id: object) -> None:
    """Refuse a scope that is not a non-empty string, or a window_id that is not a string (``""`` is lifetime);
    neither may hold NUL characters."""
    check_id("scope", scope)
    if not isinstance(window_id, str):
        raise ValueError("window_id must be a string")
    if "\x00" in window_id:
        raise ValueError("window_id must not contain NUL characters")


def _check_amount(value: object) -> float:
    """``value`` as a float, if it is a finite number >= 0 (bools are not numbers here); else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a spend amount must be a finite number >= 0")
    try:
        amount = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError("a spend amount must be a finite number >= 0") from None
    if not math.isfinite(amount) or amount < 0:
        raise ValueError("a spend amount must be a finite number >= 0")
    return amount


def charges_of(rows: Sequence[SpendLogValues], charges: Mapping[str, Charge] | None) -> dict[str, Charge]:
    """The charges of ``rows`` (by request_id), each checked as :meth:`SpendStore.add_spend` checks its
    arguments (``ValueError`` before any SQL runs); charges of request ids not among the rows are ignored."""
    if not charges:
        return {}
    ids = {values[0] for values in rows}
    found = {request_id: charge for request_id, charge in charges.items() if request_id in ids}
    merge_charges(found.values())  # every charge checked, in one pass
    return found


def merge_charges(charges: Iterable[Charge]) -> tuple[list[tuple[str, str, float]], list[tuple[str, str, float]]]:
    """Several rows' charges as one :meth:`SpendStore.add_spend` (summed, sorted: one lock order)."""
    deltas: list[SpendDelta] = []
    entities: list[tuple[str, str, float]] = []
    for window_deltas, owner_spend in charges:
        deltas.extend(window_deltas)
        entities.extend(owner_spend)
    return check_spend(deltas, entities)


def check_spend(
    deltas: Sequence[SpendDelta], entity_spend: Sequence[tuple[str, str, float]]
) -> tuple[list[tuple[str, str, float]], list[tuple[str, str, float]]]:
    """``add_spend``'s arguments checked (``ValueError`` naming what is wrong) and merged: ``(scope, window_id,
    amount)`` rows and ``(kind, id, amount)`` rows, repeats summed, each list sorted, so that concurrent writers
    take their row locks in one order."""
    if isinstance(deltas, str | bytes) or isinstance(entity_spend, str | bytes):
        raise ValueError("deltas and entity_spend must be sequences")
    windows: dict[tuple[str, str], float] = {}
    for delta in deltas:
        if not isinstance(delta, SpendDelta):
            raise ValueError("deltas must hold SpendDelta records")
        check_window(delta.scope, delta.window_id)
        key = (delta.scope, delta.window_id)
        windows[key] = windows.get(key, 0.0) + _check_amount(delta.amount)
    entities: dict[tuple[str, str], float] = {}
    for item in entity_spend:
        if not isinstance(item, tuple) or len(item) != 3:
            raise ValueError("entity_spend must hold (kind, id, amount) tuples")
        kind, record_id, amount = item
        if kind not in SPEND_TABLES:
            raise ValueError(f"entity kind must be one of {', '.join(sorted(SPEND_TABLES))}")
        check_id("entity id", record_id)
        key = (kind, record_id)
        entities[key] = entities.get(key, 0.0) + _check_amount(amount)
    if not all(math.isfinite(v) for v in (*windows.values(), *entities.values())):
        raise ValueError("a spend amount must be a finite number >= 0")  # the sum of finite amounts overflowed
    return (
        [(scope, window_id, amount) for (scope, window_id), amount in sorted(windows.items())],
        [(kind, record_id, amount) for (kind, record_id), amount in sorted(entities.items())],
    )


def check_time(name: str, value: object) -> datetime:
    """``value`` if it is a timezone-aware datetime; ``ValueError`` naming it otherwise."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value


def _spend_log_json(row: SpendLogRow) -> tuple[str, str | None, str | None]:
    return (
        json_text("metadata", row.metadata),
        None if row.messages is None else json_text("messages", row.messages),
        None if row.response is None else json_text("response", row.response),
    )


_ROW_VALUES = operator.attrgetter(*SPEND_LOG_FIELDS)


def spend_log_values(row: SpendLogRow) -> SpendLogValues:
    """``row`` checked (``ValueError`` naming the first bad field, as ``insert_spend_logs`` would refuse it) and
    converted into :data:`SpendLogValues`."""
    if not isinstance(row, SpendLogRow):
        raise ValueError("rows must be SpendLogRow records")
    fields: tuple[Any, ...] = _ROW_VALUES(row)
    values = spend_log_fast_values(fields)
    if values is not None:
        return values
    for name, kind in _SPEND_LOG_KINDS.items():
        _check_value(name, kind, getattr(row, name))
    metadata, messages, response = _spend_log_json(row)
    started_at = row.started_at.astimezone(UTC).isoformat(timespec="microseconds")
    cost, latency, ttft = float(row.cost), float(row.latency_ms), None if row.ttft_ms is None else float(row.ttft_ms)
    return (row.request_id, started_at, *fields[2:18], cost, row.cost_estimated, latency, ttft, *fields[22:27],
            metadata, messages, response)  # fmt: skip


_STR_FIELDS = (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 23)  # "str?" fields, by position in SPEND_LOG_FIELDS
_COUNT_FIELDS = (12, 13, 14, 15, 16, 17)
assert [SPEND_LOG_FIELDS[n] for n in _STR_FIELDS] == [n for n, k in _SPEND_LOG_KINDS.items() if k == "str?"]
assert [SPEND_LOG_FIELDS[n] for n in _COUNT_FIELDS] == [n for n, k in _SPEND_LOG_KINDS.items() if k == "count"]


def spend_log_fast_values(fields: tuple[Any, ...]) -> SpendLogValues | None:
    """A row's fields (in ``SPEND_LOG_FIELDS`` order) as :data:`SpendLogValues` if they are of the common, valid
    kinds (plain str, int, float, bool, dict, None; ``messages`` and ``response`` None); else None, and the caller
    checks them field by field. Never accepts what :func:`spend_log_values` would refuse."""
    if len(fields) != len(SPEND_LOG_FIELDS):
        return None
    request_id, started_at = fields[0], fields[1]
    if type(request_id) is not str or not request_id or "\x00" in request_id:
        return None
    if type(started_at) is not datetime or started_at.tzinfo is not UTC:
        return None
    for n in _STR_FIELDS:
        value = fields[n]
        if value is not None and (type(value) is not str or "\x00" in value):
            return None
    for n in _COUNT_FIELDS:
        value = fields[n]
        if type(value) is not int or not 0 <= value < _MAX_COUNT:
            return None
    cost, estimated, latency, ttft, status, _, stream, disconnected, route, metadata, messages, response = fields[18:]
    for value in (cost, latency) if ttft is None else (cost, latency, ttft):
        if type(value) is not float or not 0.0 <= value < math.inf:  # NaN fails too
            return None
    if type(estimated) is not bool or type(stream) is not bool or type(disconnected) is not bool:
        return None
    if type(status) is not int or not 0 <= status <= 999 or type(route) is not str or "\x00" in route:
        return None
    if type(metadata) is not dict or messages is not None or response is not None:
        return None
    if metadata:
        try:
            text = json_text("metadata", metadata)
        except ValueError:
            return None
    else:
        text = "{}"
    return (request_id, started_at.isoformat(timespec="microseconds"), *fields[2:27], text, None, None)


def spend_log_faults(row: SpendLogRow) -> list[str]:
    """The names of the row's fields that ``insert_spend_logs`` would refuse (none for a good row)."""
    faults = []
    for name, kind in _SPEND_LOG_KINDS.items():
        try:
            _check_value(name, kind, getattr(row, name))
            if name in ("metadata", "messages", "response") and getattr(row, name) is not None:
                json_text(name, getattr(row, name))
        except ValueError:
            faults.append(name)
    return faults


def check_spend_filters(**filters: object) -> None:
    """Refuse a filter (key_hash, user_id, ...) that is neither None nor a non-empty string (``ValueError``)."""
    for name, value in filters.items():
        if value is not None:
            check_id(name, value)


def check_spend_list(
    start: object, end: object, limit: int, offset: int, *, request_id: str | None, **ids: str | None
) -> dict[str, str | None]:
    """``list_spend_logs``' arguments checked (``ValueError``); the id filters (key_hash, user_id, team_id,
    model_group), for the backend's WHERE."""
    check_page(limit, offset)
    for name, bound in (("start", start), ("end", end)):
        if bound is not None:
            check_time(name, bound)
    check_spend_filters(**ids, request_id=request_id)
    return ids


def check_report(start: object, end: object, group_by: object) -> None:
    """Refuse ``spend_report``'s range if either end is not an aware datetime, or a group_by it does not know."""
    check_time("start", start)
    check_time("end", end)
    if not isinstance(group_by, str) or group_by not in REPORT_GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(sorted(REPORT_GROUPS))}")


def json_text(name: str, value: object) -> str:
    """``value`` as JSON text; ``ValueError`` naming the field if it cannot be (or holds a NUL character, which
    PostgreSQL's JSONB refuses)."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError as exc:
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from None
    if "\\u0000" in text and _holds_nul(value):
        raise ValueError(f"{name} must not contain NUL characters")
    return text


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


def apply_changes(record: Record, changes: dict[str, Any]) -> Record:
    """``record`` with ``changes`` applied and updated_at moved forward; ``ValueError`` for a field it may not set."""
    what, id_field = _RECORD_NAMES[type(record)]
    fields = _FIELD_KINDS[type(record)]
    for name in changes:
        if name in (id_field, "created_at", "updated_at"):
            raise ValueError(f"{name} cannot be changed")
        if name not in fields:
            raise ValueError(f"unknown {what} field: {name}")
    for name in ("models", "allowed_routes"):
        if isinstance(changes.get(name), list):
            changes = {**changes, name: tuple(changes[name])}
    changed = dataclasses.replace(record, **changes, updated_at=later(record.updated_at))
    check_record(changed)
    return changed


_URL_HELP = "database URL must be sqlite:///relative/path, sqlite:////absolute/path, postgres:// or postgresql://"


async def open_store(url: str | None, *, sqlite_path: Path) -> Store:
    """The store at ``url``, its schema brought up to date: None → SQLite at ``sqlite_path``; ``sqlite:///path``
    → SQLite there (SQLAlchemy's convention: three slashes then a relative path, four for an absolute one);
    ``postgres://`` or ``postgresql://`` → PostgreSQL. Anything else is a ``ValueError`` that does not repeat
    the URL (it may hold a password). A database that cannot be reached raises :class:`Unreachable`; one that
    refuses (a bad user or password, no such database) or is too new, another :class:`StorageError`."""
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
