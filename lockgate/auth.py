"""Who is calling: the key a request presents, checked against the master key.

A request presents its key in ``Authorization: Bearer``, ``x-api-key`` (Anthropic's header),
``x-litellm-api-key`` (Cline's) or ``api-key`` (Azure clients). :meth:`Authenticator.authenticate`
returns a :class:`Principal` or raises :class:`AuthenticationFailed`; there is no default principal.
Virtual keys (hashed, stored) arrive with the storage layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lockgate.errors import AuthenticationFailed
from lockgate.secret import Secret

__all__ = ["KEY_HEADERS", "Authenticator", "Principal"]

KEY_HEADERS = ("authorization", "x-api-key", "x-litellm-api-key", "api-key")


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str
    """``master`` (the master key), or ``open`` (no master key configured: loopback-only gateway)."""

    @property
    def is_admin(self) -> bool:
        return self.kind in ("master", "open")


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
    def __init__(self, master_key: Secret | None) -> None:
        self._master = master_key

    @property
    def enforced(self) -> bool:
        return self._master is not None

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if self._master is None:
            return OPEN
        key = presented_key(headers)
        if key is None:
            raise AuthenticationFailed(
                "No API key provided. Send it as 'Authorization: Bearer <key>' or in the 'x-api-key' header."
            )
        if self._master.matches(key):
            return MASTER
        raise AuthenticationFailed("Invalid API key.")
