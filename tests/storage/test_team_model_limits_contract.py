"""A team's per-model limits (``model_max_budget`` / ``model_rpm_limit`` / ``model_tpm_limit``; migration 7), and the
upgrade of a version 6 database, once per backend."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lockgate.storage import Store, migrations
from tests.storage.conftest import Backend, Run, make_old_database
from tests.storage.test_directory_contract import FULL_ORG, FULL_TEAM, T0, make_team
from tests.storage.test_store_contract import make_key

LIMITS: dict[str, Any] = {
    "model_max_budget": {"gpt-4o": 5.5, "mini": 0, "ünï": 2**40},
    "model_rpm_limit": {"gpt-4o": 60, "mini": 0},
    "model_tpm_limit": {"gpt-4o": 100_000, "anthropic/claude-sonnet-4": 2**53 + 1},
}
LIMITED = dataclasses.replace(FULL_TEAM, **LIMITS)


def test_team_model_limits_round_trip(store: Store, run: Run[Any]) -> None:
    run(store.insert_org(FULL_ORG))
    run(store.insert_team(LIMITED))
    got = run(store.get_team("team-1"))
    assert got == LIMITED
    assert got is not None and got.model_max_budget == {"gpt-4o": 5.5, "mini": 0, "ünï": 2**40}
    assert all(type(v) is int for v in (*got.model_rpm_limit.values(), *got.model_tpm_limit.values()))
    assert got.model_tpm_limit["anthropic/claude-sonnet-4"] == 2**53 + 1  # not through a float
    assert run(store.list_teams()) == [LIMITED]
    bare = make_team(2)
    run(store.insert_team(bare))
    got_bare = run(store.get_team("team-2"))
    assert got_bare == bare and got_bare is not None
    assert (got_bare.model_max_budget, got_bare.model_rpm_limit, got_bare.model_tpm_limit) == ({}, {}, {})


def test_team_model_limits_update_alone(store: Store, run: Run[Any]) -> None:
    run(store.insert_org(FULL_ORG))
    run(store.insert_team(FULL_TEAM))
    team = run(store.update_team("team-1", model_rpm_limit={"demo": 2}, model_max_budget={"demo": 0.25}))
    assert team is not None
    expected = dataclasses.replace(
        FULL_TEAM, model_rpm_limit={"demo": 2}, model_max_budget={"demo": 0.25}, updated_at=team.updated_at
    )
    assert team == expected and run(store.get_team("team-1")) == expected
    team = run(store.update_team("team-1", model_tpm_limit={"demo": 10}, model_rpm_limit={}))
    assert team is not None and (team.model_rpm_limit, team.model_tpm_limit) == ({}, {"demo": 10})
    assert team.model_max_budget == {"demo": 0.25}  # not named, kept
    assert run(store.get_team("team-1")) == team


BAD = [
    ("model_max_budget", {"m": -1}),
    ("model_max_budget", {"m": "1"}),
    ("model_max_budget", {"m": None}),
    ("model_max_budget", {"m": True}),
    ("model_max_budget", {"m": float("inf")}),
    ("model_max_budget", {"m": float("nan")}),
    ("model_max_budget", {"": 1}),
    ("model_max_budget", {1: 1}),
    ("model_max_budget", [("m", 1)]),
    ("model_rpm_limit", {"m": -1}),
    ("model_rpm_limit", {"m": 1.5}),
    ("model_rpm_limit", {"m": True}),
    ("model_rpm_limit", {"": 1}),
    ("model_rpm_limit", {"nul\x00": 1}),
    ("model_tpm_limit", {"m": "10"}),
    ("model_tpm_limit", {"m": None}),
    ("model_tpm_limit", None),
]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_invalid_team_model_limits_are_refused_before_sql(store: Store, run: Run[Any], field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        run(store.insert_team(make_team(1, **{field: value})))
    assert run(store.list_teams()) == []
    run(store.insert_team(make_team(2)))
    with pytest.raises(ValueError, match=field):
        run(store.update_team("team-2", **{field: value}))
    assert run(store.get_team("team-2")) == make_team(2)


def test_the_key_maps_name_their_models_too(store: Store, run: Run[Any]) -> None:
    """The key's maps are checked as the team's: an empty model name is refused."""
    with pytest.raises(ValueError, match="model_rpm_limit"):
        run(store.insert_key(make_key(1, model_rpm_limit={"": 1})))


# --- migration 7 -------------------------------------------------------------------------------------

T1 = T0.isoformat()
V6_ROWS = (  # as version 6 left them: a team with limits (and model aliases), and a budget window of it
    f"""INSERT INTO teams (
        team_id, team_alias, models, max_budget, budget_duration, rpm_limit, metadata, blocked, created_at,
        updated_at, spend, model_aliases, soft_budget
    ) VALUES ('team-1', 'red', '["demo"]', 10, '30d', 60, '{{"k": 1}}', FALSE, '{T1}', '{T1}', 2.5,
        '{{"fast": "demo"}}', 8)""",
    f"INSERT INTO budget_spend (scope, window_id, spent, updated_at) VALUES ('team:team-1', '', 1.5, '{T1}')",
)


def test_a_version_6_database_is_upgraded_to_7(backend: Backend, run: Run[Any]) -> None:
    make_old_database(backend, run, 6, *V6_ROWS)
    upgraded = run(backend.open())
    try:
        versions = run(backend.fetch("SELECT version FROM lockgate_schema ORDER BY version"))
        assert versions == [(v,) for v in range(1, migrations.LATEST_VERSION + 1)] and (7,) in versions
        team = run(upgraded.get_team("team-1"))
        expected = make_team(
            0, team_id="team-1", team_alias="red", models=("demo",), max_budget=10.0, budget_duration="30d",
            rpm_limit=60, metadata={"k": 1}, created_at=T0, updated_at=T0, spend=2.5,
            model_aliases={"fast": "demo"}, soft_budget=8.0,
        )  # fmt: skip
        assert team == expected  # every new field at its default, the old ones kept
        assert team is not None and (team.model_max_budget, team.model_rpm_limit, team.model_tpm_limit) == ({}, {}, {})
        assert run(upgraded.window_spend("team:team-1", "")) == 1.5
        # The new columns are writable on the old row.
        changed = run(upgraded.update_team("team-1", **LIMITS))
        assert changed is not None and run(upgraded.get_team("team-1")) == changed
        assert changed == dataclasses.replace(expected, **LIMITS, updated_at=changed.updated_at)
    finally:
        run(upgraded.close())
    reopened = run(backend.open())  # opening again applies nothing and keeps the values
    try:
        team = run(reopened.get_team("team-1"))
        assert team is not None and team.model_rpm_limit == LIMITS["model_rpm_limit"]
    finally:
        run(reopened.close())
