"""Virtual keys: how they are made, hashed and shown.

A key is ``sk-`` followed by 43 URL-safe characters (256 random bits), shown once at creation. Only its
SHA-256 hash is stored and looked up; every presented token is hashed before any lookup, whatever it looks
like (a high-entropy key needs no slow hash). ``key_name`` is the display form, ``sk-...`` plus the last
four characters.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from lockgate.errors import BadRequest
from lockgate.storage.base import KEY_FIELDS, KeyRecord

__all__ = ["KEY_PREFIX", "display_name", "generate_key", "hash_key", "new_record", "parse_duration"]

# Every KeyRecord field a caller may set (the rest are the hash, display name, times and spend).
_SETTABLE_FIELDS = frozenset(KEY_FIELDS) - {"token_hash", "key_name", "expires", "created_at", "updated_at", "spend"}

_DURATION = re.compile(r"^(\d+)(s|m|h|d|w|mo)$")

KEY_PREFIX = "sk-"


def generate_key(prefix: str = KEY_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def display_name(token: str) -> str:
    return f"{token[:3]}...{token[-4:]}" if len(token) > 8 else "***"


def new_record(token: str, fields: dict[str, Any], expires: datetime | None = None) -> KeyRecord:
    """The stored form of a new key: its hash and display name, and the given (already checked) fields; a field
    not given takes the record's default (no limit, no models list = all)."""
    now = datetime.now(UTC)
    given = {name: fields[name] for name in _SETTABLE_FIELDS if name in fields}
    for name in ("models", "allowed_routes"):
        if name in given:
            given[name] = tuple(given[name])
    return KeyRecord(
        token_hash=hash_key(token),
        key_name=display_name(token),
        key_alias=given.pop("key_alias", None),
        user_id=given.pop("user_id", None),
        team_id=given.pop("team_id", None),
        models=given.pop("models", ()),
        max_budget=given.pop("max_budget", None),
        budget_duration=given.pop("budget_duration", None),
        tpm_limit=given.pop("tpm_limit", None),
        rpm_limit=given.pop("rpm_limit", None),
        max_parallel_requests=given.pop("max_parallel_requests", None),
        metadata=given.pop("metadata", {}),
        blocked=given.pop("blocked", False),
        expires=expires,
        created_at=now,
        updated_at=now,
        **given,
    )


def parse_duration(text: str, start: datetime) -> datetime:
    """``30s``, ``10m``, ``1h``, ``7d``, ``2w``, ``1mo`` (calendar months) after ``start``."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise BadRequest(f"duration '{text[:40]}' is not like 30s, 10m, 1h, 7d, 2w or 1mo.", param="duration")
    count, unit = int(match.group(1)), match.group(2)
    if unit == "mo":
        month = start.month - 1 + count
        year, month = start.year + month // 12, month % 12 + 1
        return start.replace(year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1]))
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    return start + timedelta(seconds=count * seconds)
