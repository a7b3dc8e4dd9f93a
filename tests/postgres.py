"""PostgreSQL beside a gateway under test: a schema of its own per test (``search_path`` in the gateway's URL),
read and written straight, not through the gateway; and a TCP proxy in front of it, to take it away. PostgreSQL
unreachable is a failure, never a skip."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.fakes.tcp_proxy import TcpProxy

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


async def sql(query: str, schema: str | None = None, *args: object) -> list[Any]:
    """Run one statement in ``schema`` (else the default search path); its rows."""
    settings = {"search_path": schema} if schema else None
    connection = await asyncpg.connect(POSTGRES, timeout=5, server_settings=settings)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


@contextlib.contextmanager
def fresh_schema(prefix: str) -> Iterator[str]:
    """A new, empty schema named ``<prefix>_<random>``, dropped with everything in it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"  # a test-side identifier from a uuid
    try:
        asyncio.run(sql(f'CREATE SCHEMA "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES} is not reachable ({exc})")
    try:
        yield name
    finally:
        asyncio.run(sql(f'DROP SCHEMA "{name}" CASCADE'))


@contextlib.contextmanager
def proxied() -> Iterator[TcpProxy]:
    """A TCP proxy in front of the local PostgreSQL (forwarding until told otherwise)."""
    with TcpProxy("127.0.0.1", 5432) as proxy:
        yield proxy
