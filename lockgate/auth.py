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
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from lockgate.errors import AuthenticationFailed, PermissionDenied
from lockgate.keys import hash_key
from lockgate.secret import Secret
from lockgate.storage.base import EndUserRecord, KeyRecord, Store, TeamRecord

__all__ = ["KEY_HEADERS", "Authenticator", "Principal", "presented_key"]

KEY_HEADERS = ("authorization", "x-api-key", "x-litellm-api-key", "api-key")
NEGATIVE_TTL = 5.0
MAX_CACHED = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str
    """``master`` (the master key), ``key`` (a virtual key), or ``open`` (no master key: loopback-only)."""
    key: KeyRecord | None = None
    team: TeamRecord | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind in ("master", "open")

    def check_model(self, model: str) -> None:
        """Raise :class:`PermissionDenied` unless both the key's and its team's model lists allow ``model``."""
        for owner, allowed in (
            ("key", self.key.models if self.key else ()),
            ("team", self.team.models if self.team else ()),
        ):
            if allowed and not any(model == a or fnmatch.fnmatchcase(model, a) for a in allowed):
                raise PermissionDenied(f"This {owner} may not use the model '{model[:200]}'.", param="model")


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
        self._cache: dict[str, tuple[float, KeyRecord | None, TeamRecord | None]] = {}
        self._end_users: dict[str, tuple[float, EndUserRecord | None]] = {}

    @property
    def enforced(self) -> bool:
        return self._master is not None

    def attach(self, store: Store) -> None:
        self._store = store

    async def check_end_user(self, user_id: str) -> None:
        """Refuse a request on behalf of a blocked end user (the body's ``user``); cached like keys."""
        if self._store is None:
            return
        now = time.monotonic()
        cached = self._end_users.get(user_id)
        if cached is not None and cached[0] > now:
            record = cached[1]
        else:
            record = await self._store.get_end_user(user_id)
            if len(self._end_users) >= MAX_CACHED:
                self._end_users.clear()
            self._end_users[user_id] = (now + self._ttl, record)
        if record is not None and record.blocked:
            raise PermissionDenied("This end user is blocked.", param="user")

    def forget(self, which: str) -> None:
        """Drop a key (by hash) from this instance's cache after it changed; ``end:<id>`` an end user; ``*``
        everything (a team changed)."""
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
        record, team = await self._lookup(hash_key(key))
        if record is None:
            raise AuthenticationFailed("Invalid API key.")
        if record.blocked:
            raise AuthenticationFailed("This API key is blocked.")
        if record.expires is not None and record.expires <= datetime.now(UTC):
            raise AuthenticationFailed("This API key has expired.")
        if team is not None and team.blocked:
            raise AuthenticationFailed("This API key's team is blocked.")
        return Principal("key", record, team)

    async def _lookup(self, token_hash: str) -> tuple[KeyRecord | None, TeamRecord | None]:
        now = time.monotonic()
        cached = self._cache.get(token_hash)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        if self._store is None:
            return None, None
        record = await self._store.get_key(token_hash)
        team = await self._store.get_team(record.team_id) if record is not None and record.team_id else None
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[token_hash] = (now + (self._ttl if record is not None else NEGATIVE_TTL), record, team)
        return record, team
