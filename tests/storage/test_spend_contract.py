"""Spend (the SpendStore; migration 5): per budget window and per record, once per backend."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lockgate.storage import SPEND_TABLES, SpendDelta, Store, migrations
from tests.storage.conftest import Backend, Run, make_old_database
from tests.storage.test_directory_contract import make_key, make_org, make_team, make_user
from tests.storage.test_end_user_contract import make_end_user

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
KEY = make_key(1)  # token_hash "0...01"
TH = KEY.token_hash


def _entities(store: Store, run: Run[Any]) -> None:
    """One record of every kind add_spend can charge: key 1, user-1, team-1 (of org-1), org-1, customer-1."""
    run(store.insert_org(make_org(1)))
    run(store.insert_team(make_team(1, organization_id="org-1")))
    run(store.insert_user(make_user(1), KEY))
    run(store.insert_end_user(make_end_user(1)))


def _spends(store: Store, run: Run[Any]) -> dict[str, float]:
    key, user, team = run(store.get_key(TH)), run(store.get_user("user-1")), run(store.get_team("team-1"))
    org, end_user = run(store.get_org("org-1")), run(store.get_end_user("customer-1"))
    assert key and user and team and org and end_user
    return {"key": key.spend, "user": user.spend, "team": team.spend, "org": org.spend, "end_user": end_user.spend}


ALL = [("key", TH), ("user", "user-1"), ("team", "team-1"), ("org", "org-1"), ("end_user", "customer-1")]


# --- windows ---------------------------------------------------------------------------------------


def test_window_spend_adds_up_per_scope_and_window(store: Store, run: Run[Any]) -> None:
    assert run(store.window_spend("key:abc", "1h@1732406400")) == 0.0
    run(store.add_spend([SpendDelta("key:abc", "1h@1732406400", 0.25), SpendDelta("team:t", "", 1.5)]))
    run(store.add_spend([SpendDelta("key:abc", "1h@1732406400", 0.5)], []))
    run(store.add_spend([SpendDelta("key:abc", "1h@1732410000", 2)]))  # an int amount is a number too
    assert run(store.window_spend("key:abc", "1h@1732406400")) == 0.75
    assert run(store.window_spend("key:abc", "1h@1732410000")) == 2.0
    assert run(store.window_spend("team:t", "")) == 1.5  # lifetime
    assert run(store.window_spend("team:t", "1h@1732406400")) == 0.0
    assert run(store.window_spend("key:abc", "")) == 0.0
    assert run(store.window_spend("key:abc:model:gpt-4o", "1h@1732406400")) == 0.0
    assert type(run(store.window_spend("key:abc", "1h@1732410000"))) is float


def test_deltas_for_one_row_are_summed_in_one_call(store: Store, run: Run[Any], backend: Backend) -> None:
    scope = "key:abc:model:gpt-4o"
    run(store.add_spend([SpendDelta(scope, "w", 0.125), SpendDelta("user:u", "w", 1), SpendDelta(scope, "w", 0.25)]))
    assert run(store.window_spend(scope, "w")) == 0.375
    assert run(backend.fetch("SELECT COUNT(*) FROM budget_spend")) == [(2,)]


def test_zero_amounts_and_empty_calls(store: Store, run: Run[Any], backend: Backend) -> None:
    run(store.add_spend([], []))
    run(store.add_spend(()))
    assert run(backend.fetch("SELECT COUNT(*) FROM budget_spend")) == [(0,)]
    run(store.add_spend([SpendDelta("key:z", "w", 0.0)]))
    assert run(store.window_spend("key:z", "w")) == 0.0


def test_sql_shaped_scopes_and_windows_are_stored_verbatim(store: Store, run: Run[Any], backend: Backend) -> None:
    scope, window = "key:'); DROP TABLE keys; --", "1d@0' OR '1'='1"
    run(store.add_spend([SpendDelta(scope, window, 1.0), SpendDelta("ünï:çødé", "%_\\", 2.0)]))
    assert run(store.window_spend(scope, window)) == 1.0
    assert run(store.window_spend("ünï:çødé", "%_\\")) == 2.0
    assert run(store.window_spend("ünï:çødé", "%")) == 0.0  # no pattern matching
    assert run(backend.fetch("SELECT COUNT(*) FROM keys")) == [(0,)]


def test_updated_at_is_when_spend_was_last_added(store: Store, run: Run[Any], backend: Backend) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    run(store.add_spend([SpendDelta("key:a", "w", 1.0)]))
    # Set back, then add again: it moves to now.
    run(backend.execute("UPDATE budget_spend SET updated_at = '2020-01-01T00:00:00.000000+00:00'"))
    run(store.add_spend([SpendDelta("key:a", "w", 1.0)]))
    assert run(store.delete_spend_before(before)) == 0
    # Set ahead (a writer whose clock runs fast): a later add never moves it backwards.
    run(backend.execute("UPDATE budget_spend SET updated_at = '2999-01-01T00:00:00.000000+00:00'"))
    run(store.add_spend([SpendDelta("key:a", "w", 1.0)]))
    assert run(store.delete_spend_before(datetime(2998, 1, 1, tzinfo=UTC))) == 0
    assert run(store.window_spend("key:a", "w")) == 3.0
    assert run(store.delete_spend_before(datetime(3000, 1, 1, tzinfo=UTC))) == 1
    assert run(store.window_spend("key:a", "w")) == 0.0


def test_delete_spend_before_keeps_lifetime_and_recent_rows(store: Store, run: Run[Any], backend: Backend) -> None:
    run(
        store.add_spend(
            [SpendDelta("key:a", "old", 1.0), SpendDelta("key:a", "", 2.0), SpendDelta("key:a", "new", 3.0)]
        )
    )
    old = "2020-01-01T00:00:00.000000+00:00"
    run(backend.execute(f"UPDATE budget_spend SET updated_at = '{old}' WHERE window_id IN ('old', '')"))
    assert run(store.delete_spend_before(datetime(2021, 1, 1, tzinfo=UTC))) == 1
    assert run(store.window_spend("key:a", "old")) == 0.0
    assert run(store.window_spend("key:a", "")) == 2.0  # lifetime spend is not a window that ends
    assert run(store.window_spend("key:a", "new")) == 3.0
    assert run(store.delete_spend_before(datetime(2019, 1, 1, tzinfo=UTC))) == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        run(store.delete_spend_before(datetime(2021, 1, 1)))  # naive on purpose
    with pytest.raises(ValueError, match="timezone-aware"):
        run(store.delete_spend_before("2021-01-01"))  # type: ignore[arg-type]


def test_window_spend_refuses_bad_arguments(store: Store, run: Run[Any]) -> None:
    for scope, window in (("", "w"), (None, "w"), ("key:a", None), ("key:\x00", "w"), ("key:a", "w\x00"), ("k", 1)):
        with pytest.raises(ValueError):
            run(store.window_spend(scope, window))  # type: ignore[arg-type]


# --- records' spend --------------------------------------------------------------------------------


def test_entity_spend_columns_move(store: Store, run: Run[Any]) -> None:
    _entities(store, run)
    key_before, team_before = run(store.get_key(TH)), run(store.get_team("team-1"))
    assert key_before is not None and team_before is not None
    run(store.add_spend([SpendDelta(f"key:{TH}", "", 0.5)], [(kind, ident, 0.5) for kind, ident in ALL]))
    run(store.add_spend([], [("key", TH, 0.25), ("team", "team-1", 1), ("key", TH, 0.125)]))  # repeats summed
    assert _spends(store, run) == {"key": 0.875, "user": 0.5, "team": 1.5, "org": 0.5, "end_user": 0.5}
    assert run(store.window_spend(f"key:{TH}", "")) == 0.5
    # Spend is not an edit: updated_at stays, and every other field.
    assert run(store.get_key(TH)) == dataclasses.replace(key_before, spend=0.875)
    assert run(store.get_team("team-1")) == dataclasses.replace(team_before, spend=1.5)


def test_spend_adds_to_a_spend_set_by_an_update(store: Store, run: Run[Any]) -> None:
    _entities(store, run)
    run(store.update_key(TH, spend=10.0))
    run(store.add_spend([], [("key", TH, 0.5)]))
    changed = run(store.update_key(TH, key_alias="renamed"))  # a later edit keeps the added spend
    assert changed is not None and changed.spend == 10.5
    key = run(store.get_key(TH))
    assert key is not None and key.spend == 10.5 and key.key_alias == "renamed"


def test_missing_records_are_skipped(store: Store, run: Run[Any], backend: Backend) -> None:
    _entities(store, run)
    run(
        store.add_spend(
            [SpendDelta("key:gone", "w", 1.0)],
            [("key", "f" * 64, 1.0), ("user", "ghost", 1.0), ("team", "team-404", 1.0), ("org", "org-9", 1.0),
             ("end_user", "nobody", 1.0), ("user", "user-1", 0.25)],
        )
    )  # fmt: skip
    assert run(store.window_spend("key:gone", "w")) == 1.0  # the rest of the call was written
    assert _spends(store, run) == {"key": 0.0, "user": 0.25, "team": 0.0, "org": 0.0, "end_user": 0.0}
    assert run(store.get_key("f" * 64)) is None and run(store.get_user("ghost")) is None
    for table in ("keys", "users", "teams", "organizations", "end_users"):
        assert run(backend.fetch(f"SELECT COUNT(*) FROM {table}")) == [(1,)]  # nothing was created


def test_every_spend_table_kind_is_covered() -> None:
    assert {kind for kind, _ in ALL} == SPEND_TABLES


# --- refusals --------------------------------------------------------------------------------------

GOOD = SpendDelta("key:a", "w", 1.0)
BAD_CALLS: list[tuple[Any, Any]] = [
    ([GOOD, SpendDelta("key:a", "w", -0.01)], []),
    ([GOOD, SpendDelta("key:a", "w", math.nan)], []),
    ([GOOD, SpendDelta("key:a", "w", math.inf)], []),
    ([GOOD, SpendDelta("key:a", "w", True)], []),
    ([GOOD, SpendDelta("key:a", "w", "0.5")], []),  # type: ignore[arg-type]
    ([GOOD, SpendDelta("key:a", "w", None)], []),  # type: ignore[arg-type]
    ([GOOD, SpendDelta("key:a", "w", 10**400)], []),
    ([GOOD, SpendDelta("key:a", "w", 1e308), SpendDelta("key:a", "w", 1e308)], []),  # the sum overflows
    ([GOOD, SpendDelta("", "w", 1.0)], []),
    ([GOOD, SpendDelta("key:\x00", "w", 1.0)], []),
    ([GOOD, SpendDelta("key:a", "w\x00", 1.0)], []),
    ([GOOD, SpendDelta("key:a", None, 1.0)], []),  # type: ignore[arg-type]
    ([GOOD, ("key:a", "w", 1.0)], []),  # not a SpendDelta
    ("key:a", []),  # one string, not a sequence
    ([GOOD], [("key", TH, 1.0), ("keys", TH, 1.0)]),  # unknown kind
    ([GOOD], [("key", TH, 1.0), ("users; DROP TABLE keys", TH, 1.0)]),
    ([GOOD], [("key", TH, 1.0), ("user", "", 1.0)]),
    ([GOOD], [("key", TH, 1.0), ("user", None, 1.0)]),
    ([GOOD], [("key", TH, 1.0), ("user", "user-1", -1.0)]),
    ([GOOD], [("key", TH, 1.0), ("user", "user-1", math.nan)]),
    ([GOOD], [("key", TH, 1.0), ("user", "user-1")]),  # not a triple
    ([GOOD], [("key", TH, 1.0), ["user", "user-1", 1.0]]),  # a list, not a tuple
    ([GOOD], "key"),
]


@pytest.mark.parametrize(("deltas", "entities"), BAD_CALLS)
def test_invalid_calls_write_nothing(store: Store, run: Run[Any], backend: Backend, deltas: Any, entities: Any) -> None:
    _entities(store, run)
    with pytest.raises(ValueError):
        run(store.add_spend(deltas, entities))
    assert run(backend.fetch("SELECT COUNT(*) FROM budget_spend")) == [(0,)]
    assert _spends(store, run) == dict.fromkeys(("key", "user", "team", "org", "end_user"), 0.0)


# --- concurrency -----------------------------------------------------------------------------------


def test_concurrent_adds_sum_exactly(store: Store, run: Run[Any], backend: Backend) -> None:
    """50 concurrent calls of 0.01 on one scope and one key, half through a second store (another worker)."""
    _entities(store, run)
    other = run(backend.open())
    try:

        async def race() -> list[Any]:
            calls = (
                (store if n % 2 else other).add_spend(
                    [SpendDelta("key:hot", "w", 0.01), SpendDelta("key:hot", "", 0.01)], [("key", TH, 0.01)]
                )
                for n in range(50)
            )
            return await asyncio.gather(*calls, return_exceptions=True)

        assert run(race()) == [None] * 50
    finally:
        run(other.close())
    assert run(store.window_spend("key:hot", "w")) == pytest.approx(0.50, abs=1e-9)
    assert run(store.window_spend("key:hot", "")) == pytest.approx(0.50, abs=1e-9)
    assert _spends(store, run)["key"] == pytest.approx(0.50, abs=1e-9)
    assert run(backend.fetch("SELECT COUNT(*) FROM budget_spend")) == [(2,)]


def test_concurrent_adds_and_edits_lose_nothing(store: Store, run: Run[Any]) -> None:
    """An edit reads and writes back the whole record: spend added meanwhile must survive it."""
    _entities(store, run)

    async def race() -> list[Any]:
        adds = (store.add_spend([], [("key", TH, 0.01), ("team", "team-1", 0.01)]) for _ in range(20))
        edits = (store.update_key(TH, metadata={"n": n}) for n in range(10))
        team_edits = (store.update_team("team-1", metadata={"n": n}) for n in range(10))
        return await asyncio.gather(*adds, *edits, *team_edits, return_exceptions=True)

    results = run(race())
    assert not [r for r in results if isinstance(r, BaseException)]
    spends = _spends(store, run)
    assert spends["key"] == pytest.approx(0.20, abs=1e-9) and spends["team"] == pytest.approx(0.20, abs=1e-9)


def test_opposite_orders_do_not_deadlock(store: Store, run: Run[Any]) -> None:
    """Calls naming the same rows in opposite orders (rows are written in one sorted order)."""
    _entities(store, run)
    forward = ([SpendDelta("a", "w", 0.01), SpendDelta("b", "w", 0.01)], [("key", TH, 0.01), ("user", "user-1", 0.01)])
    backward = ([SpendDelta("b", "w", 0.01), SpendDelta("a", "w", 0.01)], [("user", "user-1", 0.01), ("key", TH, 0.01)])

    async def race() -> list[Any]:
        return await asyncio.gather(
            *(store.add_spend(*(forward if n % 2 else backward)) for n in range(40)), return_exceptions=True
        )

    assert run(race()) == [None] * 40
    assert run(store.window_spend("a", "w")) == pytest.approx(0.40)
    assert run(store.window_spend("b", "w")) == pytest.approx(0.40)
    assert _spends(store, run)["user"] == pytest.approx(0.40)


# --- migration 5 -----------------------------------------------------------------------------------

T1 = T0.isoformat()
V4_ROWS = (  # as version 4 left them: a key, a user, an organization with a team, an end user, all with spend
    f"""INSERT INTO keys (token_hash, key_name, user_id, created_at, updated_at, spend, soft_budget)
        VALUES ('{"c" * 64}', 'sk-...cccc', 'user-1', '{T1}', '{T1}', 1.25, 5)""",
    f"INSERT INTO users (user_id, created_at, updated_at, spend) VALUES ('user-1', '{T1}', '{T1}', 2.5)",
    f"INSERT INTO organizations (organization_id, created_at, updated_at) VALUES ('org-1', '{T1}', '{T1}')",
    f"""INSERT INTO teams (team_id, organization_id, created_at, updated_at, spend)
        VALUES ('team-1', 'org-1', '{T1}', '{T1}', 3)""",
    f"INSERT INTO end_users (user_id, created_at, updated_at) VALUES ('customer-1', '{T1}', '{T1}')",
)


def test_a_version_4_database_is_upgraded_to_5(backend: Backend, run: Run[Any]) -> None:
    make_old_database(backend, run, 4, *V4_ROWS)
    upgraded = run(backend.open())
    try:
        versions = run(backend.fetch("SELECT version FROM lockgate_schema ORDER BY version"))
        assert versions == [(v,) for v in range(1, migrations.LATEST_VERSION + 1)] and (5,) in versions
        assert run(backend.fetch("SELECT COUNT(*) FROM budget_spend")) == [(0,)]
        key = run(upgraded.get_key("c" * 64))
        assert key is not None and key.spend == 1.25 and key.soft_budget == 5
        run(
            upgraded.add_spend(
                [SpendDelta("key:" + "c" * 64, "", 0.75)],
                [("key", "c" * 64, 0.75), ("user", "user-1", 0.5), ("team", "team-1", 1), ("org", "org-1", 2),
                 ("end_user", "customer-1", 0.125)],
            )
        )  # fmt: skip
        key, user, team = (
            run(upgraded.get_key("c" * 64)),
            run(upgraded.get_user("user-1")),
            run(upgraded.get_team("team-1")),
        )
        org, end_user = run(upgraded.get_org("org-1")), run(upgraded.get_end_user("customer-1"))
        assert key is not None and key.spend == 2.0 and user is not None and user.spend == 3.0
        assert team is not None and team.spend == 4.0 and org is not None and org.spend == 2.0
        assert end_user is not None and end_user.spend == 0.125
        assert run(upgraded.window_spend("key:" + "c" * 64, "")) == 0.75
    finally:
        run(upgraded.close())
    reopened = run(backend.open())  # opening again applies nothing and keeps the spend
    try:
        assert run(reopened.window_spend("key:" + "c" * 64, "")) == 0.75
    finally:
        run(reopened.close())
