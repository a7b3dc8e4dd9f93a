"""Durable state (virtual keys, and later users, teams, spend) behind one narrow interface.

    base.py        KeyRecord, the KeyStore / Store protocols, the error tree
    migrations.py  the schema as append-only numbered migrations; upgrade()
    sqlite.py      the default backend: one file, zero setup
    postgres.py    PostgreSQL through an asyncpg pool

``open_store(url, sqlite_path=...)`` picks the backend from the URL and upgrades the schema on open (it only
ever adds); a database newer than this code raises :class:`SchemaTooNew` and is left untouched.
"""

from __future__ import annotations

from lockgate.storage.base import Conflict, KeyRecord, KeyStore, SchemaTooNew, StorageError, Store, open_store

__all__ = ["Conflict", "KeyRecord", "KeyStore", "SchemaTooNew", "StorageError", "Store", "open_store"]
