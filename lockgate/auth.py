"""Who is calling: the key a request presents, checked against the master key or the virtual keys.

A request presents its key in ``Authorization: Bearer``, ``x-api-key`` (Anthropic's header),
``x-litellm-api-key`` (Cline's) or ``api-key`` (Azure clients). :meth:`Authenticator.authenticate`
returns a :class:`Principal` or raises; there is no default principal. Virtual keys are looked up by the
hash of the presented token (the key itself is never stored) and cached in memory for
``general_settings.user_api_key_cache_ttl`` seconds (default 30), so the steady state costs no database
round trip; a blocked or deleted key stops working on this instance at once and on others within that
time. Unknown tokens are cached briefly too, so a flood of bad keys does not reach the database.
Without a master key the gateway is open (and serves only loopback unless told otherwise): virtual keys,
like LiteLLM's, need a master key to be made.

A principal's role is ``proxy_admin`` for the master key, else its key's owner's ``user_role`` (None for a
key without a known owner). :meth:`Principal.require` checks a route's :data:`Permission`,
:meth:`Principal.check_route` the key's ``allowed_routes``, :meth:`Principal.check_model` its model lists
(names, wildcards, access groups); per-record scoping (own keys, teams one administers) lives with the
handlers in ``api/keys.py`` and ``api/directory.py``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from lockgate.errors import AuthenticationFailed, PermissionDenied, StoreUnavailable, describe
from lockgate.keys import hash_key
from lockgate.secret import Secret
from lockgate.storage.base import EndUserRecord, KeyRecord, OrgRecord, Store, TeamRecord, UserRecord

__all__ = [
    "ALL_PROXY_MODELS", "ALL_TEAM_MODELS", "KEY_HEADERS", "KEY_TYPES", "ROUTE_GROUPS", "Authenticator", "Permission",
    "Principal", "RouteKind", "model_allowed", "presented_key",
]  # fmt: skip

KEY_HEADERS = ("authorization", "x-api-key", "x-litellm-api-key", "api-key")
log = logging.getLogger("lockgate")
NEGATIVE_TTL = 5.0
MAX_CACHED = 100_000
T = TypeVar("T")
STALE_RETRY = 5.0  # after a failed lookup the database is not asked again for this long (cached entries serve)
STALE_WAIT = 0.5  # how long a lookup of an entry past its lifetime waits on the database before the old one serves
UNAVAILABLE = "This key cannot be checked now: the gateway's database is unreachable. Retry shortly."


Permission = Literal["public", "key", "member", "viewer", "admin"]
"""Who may call a route: ``public`` anyone; ``key`` any valid key; ``member`` a key whose owner is a known user
(or an admin: the handler then scopes what it shows or changes to the caller's own keys and teams); ``viewer``
proxy admins and proxy-admin viewers; ``admin`` proxy admins only."""
RouteKind = Literal["llm", "info", "management", "health"]
"""What a route does, for a key's ``allowed_routes`` groups."""

ROUTE_GROUPS: dict[str, frozenset[str]] = {
    "llm_api_routes": frozenset({"llm"}),
    "openai_routes": frozenset({"llm"}),
    "info_routes": frozenset({"info"}),
    "management_routes": frozenset({"management", "info"}),
}
"""Named groups a key's ``allowed_routes`` may hold (LiteLLM's names), and the route kinds each admits."""
KEY_TYPES: dict[str, tuple[str, ...]] = {
    "default": (),
    "llm_api": ("llm_api_routes",),
    "management": ("management_routes",),
    "read_only": ("info_routes",),
}
"""LiteLLM's ``key_type`` of ``/key/generate``, as the ``allowed_routes`` it stands for."""
ALL_PROXY_MODELS = "all-proxy-models"
ALL_TEAM_MODELS = "all-team-models"


def model_allowed(model: str, allowed: tuple[str, ...], groups: Mapping[str, frozenset[str]]) -> bool:
    """Whether a list of model names, wildcards (``anthropic/*``) and access groups admits ``model``; an empty
    list admits everything."""
    if not allowed:
        return True
    for entry in allowed:
        if entry in (ALL_PROXY_MODELS, ALL_TEAM_MODELS) or model == entry or fnmatch.fnmatchcase(model, entry):
            return True
        members = groups.get(entry)
        if members is not None and model in members:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str
    """``master`` (the master key), ``key`` (a virtual key), or ``open`` (no master key: loopback-only)."""
    key: KeyRecord | None = None
    team: TeamRecord | None = None
    user: UserRecord | None = None
    """The key's owner, when the key names a user that exists."""
    org: OrgRecord | None = None
    """The organisation of the key's team (else the key's own organization_id), when it exists."""

    @property
    def role(self) -> str | None:
        """``proxy_admin`` for the master key (and an open gateway); else the owner's ``user_role``; None for a
        key without a known owner (it may call models and ask about itself, nothing more)."""
        if self.kind in ("master", "open"):
            return "proxy_admin"
        return self.user.user_role if self.user is not None else None

    @property
    def is_admin(self) -> bool:
        return self.role == "proxy_admin"

    @property
    def sees_all(self) -> bool:
        """Proxy admins and proxy-admin viewers may read every record."""
        return self.role in ("proxy_admin", "proxy_admin_viewer")

    @property
    def read_only(self) -> bool:
        return self.role in ("proxy_admin_viewer", "internal_user_viewer")

    @property
    def user_id(self) -> str | None:
        return self.user.user_id if self.user is not None else None

    @property
    def identity(self) -> str:
        """Who did it, for ``created_by`` / ``updated_by``: the owner's user_id, else ``master_key``."""
        if self.user is not None:
            return self.user.user_id
        if self.kind in ("master", "open"):
            return "master_key"
        return f"key:{self.key.token_hash[:12]}" if self.key is not None else "unknown"

    def require(self, permission: Permission, *, write: bool) -> None:
        """Raise :class:`PermissionDenied` unless this principal may call a route with this permission."""
        role = self.role
        if permission == "admin":
            allowed = role == "proxy_admin"
        elif permission == "viewer":
            allowed = role == "proxy_admin" or (role == "proxy_admin_viewer" and not write)
        elif permission == "member":
            allowed = role is not None and not (write and self.read_only)
        else:
            allowed = True
        if not allowed:
            if write and self.read_only:
                raise PermissionDenied(f"The role {role} may only read.")
            raise PermissionDenied(
                "This route needs an admin key." if permission == "admin" else "This key may not call this route."
            )

    def check_route(self, path: str, kind: RouteKind) -> None:
        """Raise :class:`PermissionDenied` if the key's ``allowed_routes`` do not admit this route."""
        allowed = self.key.allowed_routes if self.key is not None else ()
        if not allowed:
            return
        for entry in allowed:
            kinds = ROUTE_GROUPS.get(entry)
            if (kinds is not None and kind in kinds) or entry == path or fnmatch.fnmatchcase(path, entry):
                return
        raise PermissionDenied(f"This key may not call {path[:200]}.")

    def resolve_alias(self, model: str) -> str:
        """The model a key's (or else its team's) ``aliases`` map a requested name to."""
        if self.key is not None and model in self.key.aliases:
            return self.key.aliases[model]
        if self.team is not None and model in self.team.model_aliases:
            return self.team.model_aliases[model]
        return model

    def aliases(self) -> dict[str, str]:
        """Every alias this caller may ask for (the key's win over the team's)."""
        found = dict(self.team.model_aliases) if self.team is not None else {}
        if self.key is not None:
            found.update(self.key.aliases)
        return found

    def check_model(self, model: str, groups: Mapping[str, frozenset[str]] | None = None) -> None:
        """Raise :class:`PermissionDenied` unless the key's list, its team's list (for a key without a team: its
        owner's) and its organisation's all allow ``model``; lists may name access groups (``groups``: name ->
        model groups)."""
        groups = groups or {}
        for owner, allowed in self._model_lists():
            if not model_allowed(model, allowed, groups):
                raise PermissionDenied(f"This {owner} may not use the model '{model[:200]}'.", param="model")

    def may_use(self, model: str, groups: Mapping[str, frozenset[str]] | None = None) -> bool:
        try:
            self.check_model(model, groups)
        except PermissionDenied:
            return False
        return True

    def _model_lists(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        lists = []
        if self.key is not None:
            lists.append(("key", self.key.models))
        if self.team is not None:
            lists.append(("team", self.team.models))
        elif self.user is not None:
            lists.append(("user", self.user.models))
        if self.org is not None:
            lists.append(("organization", self.org.models))
        return tuple(lists)


_Found = tuple[KeyRecord | None, TeamRecord | None, UserRecord | None, OrgRecord | None]
MASTER = Principal("master")
OPEN = Principal("open")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents, from the first auth header that carries one."""
    value = headers.get("authorization")
    if value is not None:
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for name in KEY_HEADERS[1:]:
        value = headers.get(name)
        if value:
            value = value.strip()
            return value[7:].strip() if value.lower().startswith("bearer ") else value
    return None


class Authenticator:
    def __init__(self, master_key: Secret | None, store: Store | None = None, *, cache_ttl: float = 30.0) -> None:
        self._master = master_key
        self._store = store
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, _Found]] = {}
        self._down_since: float | None = None  # the database stopped answering lookups (said once)
        self._down_until = 0.0
        self._end_users: dict[str, tuple[float, EndUserRecord | None]] = {}

    @property
    def enforced(self) -> bool:
        return self._master is not None

    def attach(self, store: Store) -> None:
        self._store = store

    async def check_end_user(self, user_id: str) -> EndUserRecord | None:
        """Refuse a request on behalf of a blocked end user (the body's ``user``); cached like keys. Returns
        the end user's record, if there is one (for its budget)."""
        if self._store is None:
            return None
        now = time.monotonic()
        cached = self._end_users.get(user_id)
        if cached is not None and cached[0] > now:
            record = cached[1]
        else:
            down = now < self._down_until  # as for keys: what was known holds while the database is away
            if down and cached is not None:
                return self._allowed(cached[1])
            try:
                record = await self._fresh(self._store.get_end_user(user_id), bounded=cached is not None or down)
            except Exception as exc:
                self._stale(exc)
                if cached is None:
                    raise StoreUnavailable(UNAVAILABLE) from None
                return self._allowed(cached[1])
            if len(self._end_users) >= MAX_CACHED:
                self._end_users.clear()
            self._end_users[user_id] = (now + self._ttl, record)
        return self._allowed(record)

    @staticmethod
    def _allowed(record: EndUserRecord | None) -> EndUserRecord | None:
        if record is not None and record.blocked:
            raise PermissionDenied("This end user is blocked.", param="user")
        return record

    def _stale(self, exc: Exception) -> None:
        """A lookup failed: the database is taken to be away for STALE_RETRY seconds (said once per outage)."""
        now = time.monotonic()
        self._down_until = now + STALE_RETRY
        if self._down_since is None:
            self._down_since = now
            log.warning("auth: the database is unreachable (%s); keys and end users seen before are served from "
                        "this instance's cache until it answers again", describe(exc))  # fmt: skip

    def forget(self, which: str) -> None:
        """Drop a key (by hash) from this instance's cache after it changed; ``end:<id>`` an end user; ``*``
        everything (a team or user changed)."""
        if which == "*":
            self._cache.clear()
            self._end_users.clear()
        elif which.startswith("end:"):
            self._end_users.pop(which[4:], None)
        else:
            self._cache.pop(which, None)

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if self._master is None:  # no master key: an open gateway (loopback only, unless told otherwise)
            return OPEN
        key = presented_key(headers)
        if key is None:
            raise AuthenticationFailed(
                "No API key provided. Send it as 'Authorization: Bearer <key>' or in the 'x-api-key' header."
            )
        if self._master.matches(key):
            return MASTER
        record, team, user, org = await self._lookup(hash_key(key))
        if record is None:
            raise AuthenticationFailed("Invalid API key.")
        if record.blocked:
            raise AuthenticationFailed("This API key is blocked.")
        if record.expires is not None and record.expires <= datetime.now(UTC):
            raise AuthenticationFailed("This API key has expired.")
        if team is not None and team.blocked:
            raise AuthenticationFailed("This API key's team is blocked.")
        return Principal("key", record, team, user, org)

    async def _lookup(self, token_hash: str) -> _Found:
        now = time.monotonic()
        cached = self._cache.get(token_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        if self._store is None:
            return None, None, None, None
        down = now < self._down_until  # the database failed moments ago
        if down and cached is not None:  # do not wait on it again yet
            return cached[1]
        try:
            return await self._fresh(self._fetch(token_hash, now), bounded=cached is not None or down)
        except Exception as exc:  # the database is unreachable: what this instance knew still holds
            self._stale(exc)
            if cached is None:
                raise StoreUnavailable(UNAVAILABLE) from None
            return cached[1]

    async def _fetch(self, token_hash: str, now: float) -> _Found:
        """The key, its team, user and organisation from the database, cached."""
        assert self._store is not None
        record = await self._store.get_key(token_hash)
        team = user = org = None
        if record is not None:
            team = await self._store.get_team(record.team_id) if record.team_id else None
            user = await self._store.get_user(record.user_id) if record.user_id else None
            org_id = team.organization_id if team is not None else record.organization_id
            org = await self._store.get_org(org_id) if org_id else None
        if self._down_since is not None:
            log.info("auth: the database answers again (after %.1f s)", time.monotonic() - self._down_since)
            self._down_since = None
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        found = (record, team, user, org)
        self._cache[token_hash] = (now + (self._ttl if record is not None else NEGATIVE_TTL), found)
        return found

    async def _fresh(self, lookup: Awaitable[T], *, bounded: bool) -> T:
        """``lookup``'s answer; ``bounded`` (an older answer to fall back on, or the database failed moments
        ago), waited for STALE_WAIT seconds at most: the lookup goes on in the background and caches what it
        finds; it is not cancelled, since a database driver may take long to cancel a query on a connection that
        does not answer."""
        if not bounded:
            return await lookup
        task = asyncio.ensure_future(lookup)
        done, _ = await asyncio.wait({task}, timeout=STALE_WAIT)
        if not done:
            task.add_done_callback(_consume)
            raise TimeoutError("the database did not answer the lookup in time")
        return task.result()


def _consume(task: asyncio.Future[Any]) -> None:
    """A background lookup's outcome, read so that asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()
