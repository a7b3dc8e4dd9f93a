"""open_store's URL handling, the migration list's shape, and the rule that no SQL is built from values."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest

import lockgate.storage
from lockgate.storage import StorageError, Unreachable, open_store
from lockgate.storage.migrations import LATEST_VERSION, MIGRATIONS
from lockgate.storage.postgres import PostgresStore
from lockgate.storage.sqlite import SqliteStore
from tests.storage.conftest import PostgresBackend

STORAGE_DIR = Path(lockgate.storage.__file__).parent
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|VALUES|SET|DROP|CREATE|ALTER|FROM|INTO)\b", re.I)


@pytest.mark.parametrize(
    "url",
    ["mysql://root:hunter2-secret@db/lockgate", "hunter2-secret", "sqlite://hunter2-secret", "sqlite:///", ""],
)
def test_unknown_urls_are_refused_without_repeating_them(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="database URL must be") as info:
        asyncio.run(open_store(url, sqlite_path=tmp_path / "x.db"))
    assert "hunter2" not in str(info.value)


def test_none_opens_sqlite_at_the_default_path(tmp_path: Path) -> None:
    async def go() -> None:
        store = await open_store(None, sqlite_path=tmp_path / "sub" / "default.db")
        assert isinstance(store, SqliteStore)
        await store.close()

    asyncio.run(go())
    assert (tmp_path / "sub" / "default.db").exists()


def test_sqlite_url_takes_its_path(tmp_path: Path) -> None:
    target = tmp_path / "from-url.db"

    async def go() -> None:
        store = await open_store(f"sqlite:///{target}", sqlite_path=tmp_path / "unused.db")
        assert isinstance(store, SqliteStore)
        await store.close()

    asyncio.run(go())
    assert target.exists() and not (tmp_path / "unused.db").exists()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_schemes_open_postgres(scheme: str, backend_postgres: PostgresBackend) -> None:
    url = backend_postgres.url.replace("postgresql", scheme, 1)

    async def go() -> None:
        store = await open_store(url, sqlite_path=Path("/unused.db"))
        assert isinstance(store, PostgresStore)
        await store.close()

    asyncio.run(go())


def test_unreachable_postgres_is_a_storage_error_without_the_password() -> None:
    with pytest.raises(Unreachable, match="cannot connect to PostgreSQL") as info:  # a StorageError that may pass
        asyncio.run(open_store("postgresql://u:hunter2-secret@127.0.0.1:1/db", sqlite_path=Path("/unused.db")))
    assert "hunter2" not in str(info.value) and isinstance(info.value, StorageError)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://lockgate_no_such_role:hunter2-secret@127.0.0.1:5432/test", 'role "lockgate_no_such_role"'),
        ("postgresql://postgres:hunter2-secret@127.0.0.1:5432/lockgate_no_such_db", 'database "lockgate_no_such_db"'),
        ("postgresql://postgres:hunter2-secret@127.0.0.1:5432/test?sslmode=verify-full", "certificate"),
    ],
)
def test_a_postgres_that_refuses_is_not_unreachable(url: str, why: str) -> None:
    """Reached but refused (a user, a database name, TLS): trying again will not help, so start-up stops."""
    with pytest.raises(StorageError, match="cannot connect to PostgreSQL") as info:
        asyncio.run(open_store(url, sqlite_path=Path("/unused.db")))
    assert not isinstance(info.value, Unreachable)
    assert why in str(info.value) and "hunter2" not in str(info.value)


def test_a_malformed_postgres_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid literal") as info:
        asyncio.run(open_store("postgresql://u:hunter2-secret@127.0.0.1:port/db", sqlite_path=Path("/unused.db")))
    assert "hunter2" not in str(info.value)


def test_the_sql_check_catches_built_sql() -> None:
    bad = [
        'f"SELECT * FROM keys WHERE user_id = {user}"',
        "\"DELETE FROM keys WHERE token_hash = '%s'\" % token",
        '"UPDATE keys SET blocked = {}".format(value)',
        '"SELECT * FROM keys WHERE key_alias = \'" + alias + "\'"',
    ]
    for source in bad:
        assert _built_sql(ast.parse(source)), source
    assert _built_sql(ast.parse('_SELECT = "SELECT " + _COLUMNS + " FROM keys"')) == []


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    for migration in MIGRATIONS:
        assert migration.sqlite and migration.postgres


def _strings_in(node: ast.AST) -> str:
    return " ".join(n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str))


def _built_sql(tree: ast.AST) -> list[int]:
    """Lines where SQL-looking text is formatted with something that is not a literal."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) for v in node.values):
            text = _strings_in(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            text = _strings_in(node.func.value)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
            sides = (node.left, node.right)
            if all(isinstance(s, ast.Constant) or _is_module_constant(s) for s in sides):
                continue
            text = _strings_in(node)
        else:
            continue
        if SQL_WORDS.search(text) and not text.startswith(("a key with", "cannot ", "database ")):
            lines.append(node.lineno)
    return lines


def _is_module_constant(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp):
        return _is_module_constant(node.left) and _is_module_constant(node.right)
    return isinstance(node, ast.Constant) or (isinstance(node, ast.Name) and node.id.lstrip("_").isupper())


@pytest.mark.parametrize("module", sorted(p.name for p in STORAGE_DIR.glob("*.py")))
def test_no_sql_is_built_from_values(module: str) -> None:
    source = (STORAGE_DIR / module).read_text()
    assert _built_sql(ast.parse(source)) == [], f"{module}: SQL built by formatting; use parameters"
    assert "executescript" not in source
