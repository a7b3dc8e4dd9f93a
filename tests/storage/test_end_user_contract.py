"""End users (the ``user`` of a request; migration 3), once per backend."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from lockgate.storage import Conflict, EndUserRecord, Store, migrations
from tests.storage.conftest import Backend, Run, make_old_database
from tests.storage.test_directory_contract import make_org, make_team, make_user

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def make_end_user(n: int = 0, **fields: Any) -> EndUserRecord:
    values: dict[str, Any] = {
        "user_id": f"customer-{n}",
        "alias": None,
        "blocked": False,
        "max_budget": None,
        "default_model": None,
        "metadata": {},
        "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
    }
    values.update(fields)
    return EndUserRecord(**values)


AWARE = datetime(2026, 5, 6, 9, 0, tzinfo=timezone(timedelta(hours=-5)))
FULL = make_end_user(
    1,
    alias="Acme Corp",
    blocked=True,
    max_budget=42.5,
    default_model="gpt-4o-mini",
    metadata={"plan": "pro", "tags": ["a"], "nested": {"n": 1, "x": None}, "ünï": "çødé", "esc": "\\u0000"},
    created_at=AWARE,
    updated_at=AWARE,
    spend=1.25,
)


def test_end_user_round_trip(store: Store, run: Run[Any]) -> None:
    run(store.insert_end_user(FULL))
    got = run(store.get_end_user("customer-1"))
    assert got == FULL
    assert got is not None and got.blocked is True and got.created_at.utcoffset() == timedelta(0)
    assert got.created_at == datetime(2026, 5, 6, 14, 0, tzinfo=UTC)
    bare = make_end_user(2)
    run(store.insert_end_user(bare))
    got_bare = run(store.get_end_user("customer-2"))
    assert got_bare == bare and got_bare is not None and got_bare.spend == 0.0 and got_bare.blocked is False
    assert run(store.get_end_user("customer-404")) is None


def test_end_users_are_apart_from_users(store: Store, run: Run[Any]) -> None:
    run(store.insert_user(make_user(1, user_id="same")))
    run(store.insert_end_user(make_end_user(1, user_id="same")))  # another namespace: no conflict
    assert run(store.delete_end_users(["same"])) == 1
    assert run(store.get_user("same")) == make_user(1, user_id="same")


def test_duplicate_end_user_is_a_conflict(store: Store, run: Run[Any]) -> None:
    run(store.insert_end_user(make_end_user(1, alias="a")))
    with pytest.raises(Conflict) as info:
        run(store.insert_end_user(make_end_user(1, alias="b", blocked=True)))
    assert info.value.field == "user_id"
    assert run(store.get_end_user("customer-1")) == make_end_user(1, alias="a")
    run(store.insert_end_user(make_end_user(2, alias="a")))  # aliases are not unique


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (make_end_user(1, user_id=""), "user_id"),
        (make_end_user(1, user_id="a\x00b"), "user_id"),
        (make_end_user(1, alias=5), "alias"),
        (make_end_user(1, blocked=1), "blocked"),
        (make_end_user(1, max_budget="10"), "max_budget"),
        (make_end_user(1, default_model=["gpt-4o"]), "default_model"),
        (make_end_user(1, metadata=[]), "metadata"),
        (make_end_user(1, metadata={"k": "nul\x00"}), "metadata"),
        (make_end_user(1, created_at=datetime(2026, 1, 1)), "created_at"),
        (make_end_user(1, spend=None), "spend"),
    ],
)
def test_invalid_end_users_are_refused_before_sql(store: Store, run: Run[Any], record: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        run(store.insert_end_user(record))
    assert run(store.list_end_users()) == []


def test_bad_arguments_are_value_errors(store: Store, run: Run[Any]) -> None:
    run(store.insert_end_user(make_end_user(1)))
    with pytest.raises(ValueError, match="user_ids"):
        run(store.delete_end_users("customer-1"))
    with pytest.raises(ValueError, match="user_ids"):
        run(store.set_end_users_blocked("customer-1", True))
    with pytest.raises(ValueError, match="user_ids"):
        run(store.set_end_users_blocked(["customer-1", ""], True))
    with pytest.raises(ValueError, match="blocked"):
        run(store.set_end_users_blocked(["customer-1"], 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        run(store.list_end_users(limit=-1))
    with pytest.raises(ValueError, match="user_id"):
        run(store.get_end_user("nul\x00"))
    assert run(store.get_end_user("customer-1")) == make_end_user(1)


def test_update_end_user(store: Store, run: Run[Any]) -> None:
    run(store.insert_end_user(FULL))
    changed = run(store.update_end_user("customer-1", alias=None, blocked=False, max_budget=5, spend=2.0))
    assert changed is not None and changed.updated_at > FULL.updated_at
    expected = dataclasses.replace(
        FULL, alias=None, blocked=False, max_budget=5, spend=2.0, updated_at=changed.updated_at
    )
    assert changed == expected and run(store.get_end_user("customer-1")) == expected
    assert run(store.update_end_user("customer-404", blocked=True)) is None
    with pytest.raises(ValueError, match="unknown end user field: user_role"):
        run(store.update_end_user("customer-1", user_role="proxy_admin"))
    for field in ("user_id", "created_at", "updated_at"):
        with pytest.raises(ValueError, match=field):
            run(store.update_end_user("customer-1", **{field: "x"}))
    with pytest.raises(ValueError, match="default_model"):
        run(store.update_end_user("customer-1", default_model=3))
    assert run(store.get_end_user("customer-1")) == expected


def test_block_and_unblock_count_what_existed(store: Store, run: Run[Any]) -> None:
    for n in range(1, 5):
        run(store.insert_end_user(make_end_user(n)))
    assert run(store.set_end_users_blocked(["customer-1", "customer-3", "customer-404", "customer-1"], True)) == 2
    assert [e.blocked for e in run(store.list_end_users())] == [True, False, True, False]
    blocked = run(store.get_end_user("customer-1"))
    assert blocked is not None and blocked.updated_at > make_end_user(1).updated_at
    assert dataclasses.replace(blocked, updated_at=T0) == make_end_user(1, blocked=True, updated_at=T0)
    assert run(store.set_end_users_blocked(["customer-1", "customer-2"], True)) == 2  # already blocked counts
    assert run(store.set_end_users_blocked(["customer-1", "customer-3"], False)) == 2
    assert [e.blocked for e in run(store.list_end_users())] == [False, True, False, False]
    assert run(store.set_end_users_blocked(["customer-404"], True)) == 0
    assert run(store.set_end_users_blocked([], True)) == 0
    assert [e.blocked for e in run(store.list_end_users())] == [False, True, False, False]


def test_updated_at_never_moves_backwards_on_block(store: Store, run: Run[Any]) -> None:
    future = datetime(2100, 1, 1, tzinfo=UTC)
    run(store.insert_end_user(make_end_user(1, updated_at=future)))
    assert run(store.set_end_users_blocked(["customer-1"], True)) == 1
    assert run(store.get_end_user("customer-1")) == make_end_user(1, updated_at=future, blocked=True)


def test_delete_end_users(store: Store, run: Run[Any]) -> None:
    for n in range(1, 4):
        run(store.insert_end_user(make_end_user(n)))
    assert run(store.delete_end_users(["customer-1", "customer-3", "customer-404", "customer-1"])) == 2
    assert run(store.list_end_users()) == [make_end_user(2)]
    assert run(store.delete_end_users(["customer-1"])) == 0
    assert run(store.delete_end_users([])) == 0


def test_list_end_users_orders_and_paginates(store: Store, run: Run[Any]) -> None:
    same = T0 + timedelta(hours=1)
    records = [
        make_end_user(5),
        make_end_user(1),
        make_end_user(3),
        make_end_user(8, created_at=same),
        make_end_user(7, created_at=same),
    ]
    for record in records:
        run(store.insert_end_user(record))
    by_time = sorted(records, key=lambda e: (e.created_at, e.user_id))
    assert [e.user_id for e in by_time[-2:]] == ["customer-7", "customer-8"]  # same created_at: by id
    assert run(store.list_end_users()) == by_time
    assert run(store.list_end_users(limit=2)) == by_time[:2]
    assert run(store.list_end_users(limit=2, offset=2)) == by_time[2:4]
    assert run(store.list_end_users(offset=4)) == by_time[4:]
    assert run(store.list_end_users(offset=10)) == []
    assert run(store.list_end_users(limit=0)) == []


HOSTILE = ("'; DROP TABLE end_users; --", "' OR '1'='1", 'x" OR "1"="1', "$1", "?", ":user_id", "%s", "\\'")


def test_sql_shaped_ids_are_stored_verbatim(store: Store, run: Run[Any], backend: Backend) -> None:
    for n, text in enumerate(HOSTILE):
        record = make_end_user(n, user_id=text, alias=text, default_model=text, metadata={text: text})
        run(store.insert_end_user(record))
        assert run(store.get_end_user(text)) == record
    assert run(store.get_end_user("' OR '1'='1 ")) is None
    assert run(store.set_end_users_blocked(["' OR 1=1 --"], True)) == 0
    assert run(store.delete_end_users(["' OR 1=1 --"])) == 0
    assert run(backend.fetch("SELECT COUNT(*) FROM end_users WHERE blocked")) == [(0,)]
    assert run(store.set_end_users_blocked(list(HOSTILE), True)) == len(HOSTILE)
    assert run(store.delete_end_users(list(HOSTILE))) == len(HOSTILE)
    assert run(backend.fetch("SELECT COUNT(*) FROM end_users")) == [(0,)]


def test_concurrent_blocks_and_duplicate_inserts(store: Store, run: Run[Any]) -> None:
    for n in range(1, 4):
        run(store.insert_end_user(make_end_user(n)))
    ids = ["customer-1", "customer-2", "customer-3"]

    async def race() -> list[Any]:
        blocks = (store.set_end_users_blocked(ids, n % 2 == 0) for n in range(10))
        inserts = (store.insert_end_user(make_end_user(9)) for _ in range(4))
        return await asyncio.gather(*blocks, *inserts, return_exceptions=True)

    results = run(race())
    assert results[:10] == [3] * 10
    assert sum(isinstance(r, Conflict) for r in results[10:]) == 3
    assert len({e.blocked for e in run(store.list_end_users()) if e.user_id in ids}) == 1  # whole statements


def test_a_version_2_database_is_upgraded_keeping_its_rows(backend: Backend, run: Run[Any]) -> None:
    t1 = make_org(1).created_at.isoformat()  # make_org(1), make_team(1) and make_user(1) share this time
    make_old_database(
        backend,
        run,
        2,  # the rows as version 2 wrote them
        f"INSERT INTO organizations (organization_id, created_at, updated_at) VALUES ('org-1', '{t1}', '{t1}')",
        f"""INSERT INTO teams (team_id, organization_id, created_at, updated_at)
            VALUES ('team-1', 'org-1', '{t1}', '{t1}')""",
        f"INSERT INTO users (user_id, created_at, updated_at) VALUES ('user-1', '{t1}', '{t1}')",
        f"INSERT INTO team_members (team_id, user_id, role, created_at) VALUES ('team-1', 'user-1', 'admin', '{t1}')",
    )
    store = run(backend.open())
    try:
        versions = [(v,) for v in range(1, migrations.LATEST_VERSION + 1)]
        assert run(backend.fetch("SELECT version FROM lockgate_schema ORDER BY version")) == versions
        assert run(store.get_org("org-1")) == make_org(1)
        assert run(store.get_team("team-1")) == make_team(1, organization_id="org-1")
        assert run(store.get_user("user-1")) == make_user(1)
        assert run(store.teams_of("user-1")) == ["team-1"]
        run(store.insert_end_user(FULL))
        assert run(store.list_end_users()) == [FULL]
    finally:
        run(store.close())
