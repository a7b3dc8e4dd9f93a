"""Virtual keys: how they are made, hashed and shown.

A key is ``sk-`` followed by 43 URL-safe characters (256 random bits), shown once at creation. Only its
SHA-256 hash is stored and looked up; every presented token is hashed before any lookup, whatever it looks
like (a high-entropy key needs no slow hash). ``key_name`` is the display form, ``sk-...`` plus the last
four characters.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["KEY_PREFIX", "display_name", "generate_key", "hash_key"]

KEY_PREFIX = "sk-"


def generate_key(prefix: str = KEY_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def display_name(token: str) -> str:
    return f"{token[:3]}...{token[-4:]}" if len(token) > 8 else "***"
