"""The directory half of the store contract (organizations, teams, members, users), once per backend."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from lockgate.storage import (
    Conflict,
    KeyRecord,
    NotFoundError,
    OrgRecord,
    Store,
    TeamMember,
    TeamRecord,
    UserRecord,
    migrations,
)
from tests.storage.conftest import Backend, Run, make_old_database

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def make_org(n: int = 0, **fields: Any) -> OrgRecord:
    values: dict[str, Any] = {
        "organization_id": f"org-{n}",
        "organization_alias": None,
        "models": (),
        "max_budget": None,
        "metadata": {},
        "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
    }
    values.update(fields)
    return OrgRecord(**values)


def make_team(n: int = 0, **fields: Any) -> TeamRecord:
    values: dict[str, Any] = {
        "team_id": f"team-{n}",
        "team_alias": None,
        "organization_id": None,
        "models": (),
        "max_budget": None,
        "budget_duration": None,
        "tpm_limit": None,
        "rpm_limit": None,
        "max_parallel_requests": None,
        "metadata": {},
        "blocked": False,
        "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
    }
    values.update(fields)
    return TeamRecord(**values)


def make_user(n: int = 0, **fields: Any) -> UserRecord:
    values: dict[str, Any] = {
        "user_id": f"user-{n}",
        "user_alias": None,
        "user_email": None,
        "user_role": "internal_user",
        "models": (),
        "max_budget": None,
        "budget_duration": None,
        "tpm_limit": None,
        "rpm_limit": None,
        "metadata": {},
        "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
    }
    values.update(fields)
    return UserRecord(**values)


AWARE = datetime(2026, 5, 6, 9, 0, tzinfo=timezone(timedelta(hours=-5)))  # read back as the same instant, UTC
META = {"owner": "ops", "tags": ["a", "b"], "nested": {"n": 1, "x": None, "f": 1.5}, "ünï": "çødé", "esc": "\\u0000"}
FULL_ORG = make_org(
    1, organization_alias="acme", models=("gpt-4o", "anthropic/*"), max_budget=1000.0, metadata=META, spend=12.5
)
FULL_TEAM = make_team(
    1,
    team_alias="platform",
    organization_id="org-1",
    models=("gpt-4o",),
    max_budget=250.5,
    budget_duration="30d",
    tpm_limit=100_000,
    rpm_limit=600,
    max_parallel_requests=8,
    metadata=META,
    blocked=True,
    created_at=AWARE,
    updated_at=AWARE,
    spend=3.25,
    model_aliases={"gpt-4": "gpt-4o", "ünï": "çødé"},
    soft_budget=200,
)
FULL_USER = make_user(
    1,
    user_alias="Ada",
    user_email="ada@example.com",
    user_role="proxy_admin",
    models=("gpt-4o-mini",),
    max_budget=10.0,
    budget_duration="1d",
    tpm_limit=1000,
    rpm_limit=60,
    metadata=META,
    spend=0.5,
)


def _utc(stamp: datetime) -> None:
    assert stamp.utcoffset() == timedelta(0)


# --- round trips -------------------------------------------------------------------------------------


def test_org_round_trip(store: Store, run: Run[Any]) -> None:
    run(store.insert_org(FULL_ORG))
    got = run(store.get_org("org-1"))
    assert got == FULL_ORG
    assert got is not None and isinstance(got.models, tuple)
    _utc(got.created_at)
    bare = make_org(2)
    run(store.insert_org(bare))
    assert run(store.get_org("org-2")) == bare
    assert run(store.get_org("org-404")) is None


def test_team_round_trip(store: Store, run: Run[Any]) -> None:
    run(store.insert_org(FULL_ORG))
    run(store.insert_team(FULL_TEAM))
    got = run(store.get_team("team-1"))
    assert got == FULL_TEAM
    assert got is not None and got.blocked is True and isinstance(got.models, tuple)
    _utc(got.created_at)
    assert got.created_at == datetime(2026, 5, 6, 14, 0, tzinfo=UTC)
    bare = make_team(2)
    run(store.insert_team(bare))
    got_bare = run(store.get_team("team-2"))
    assert got_bare == bare and got_bare is not None and got_bare.spend == 0.0 and got_bare.blocked is False
    assert got_bare.model_aliases == {} and got_bare.soft_budget is None
    assert run(store.get_team("team-404")) is None
    assert run(store.list_teams()) == [got_bare, got]  # FULL_TEAM was created later (AWARE)


def test_user_round_trip(store: Store, run: Run[Any]) -> None:
    run(store.insert_user(FULL_USER))
    assert run(store.get_user("user-1")) == FULL_USER
    bare = make_user(2)
    run(store.insert_user(bare))
    assert run(store.get_user("user-2")) == bare
    assert run(store.get_user("user-404")) is None


def test_every_user_role_round_trips(store: Store, run: Run[Any]) -> None:
    roles = ("proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer")
    for n, role in enumerate(roles):
        run(store.insert_user(make_user(n, user_role=role)))
    assert [u.user_role for u in run(store.list_users())] == list(roles)


# --- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (make_org(1, organization_id=""), "organization_id"),
        (make_org(1, organization_alias=5), "organization_alias"),
        (make_org(1, models=["gpt-4o"]), "models"),
        (make_org(1, max_budget="10"), "max_budget"),
        (make_org(1, metadata=[]), "metadata"),
        (make_org(1, created_at=datetime(2026, 1, 1)), "created_at"),
        (make_team(1, tpm_limit=True), "tpm_limit"),
        (make_team(1, blocked=1), "blocked"),
        (make_team(1, team_id="a\x00b"), "team_id"),
        (make_team(1, spend=None), "spend"),
        (make_team(1, model_aliases={"a": 1}), "model_aliases"),
        (make_team(1, model_aliases={"a": ""}), "model_aliases"),
        (make_team(1, model_aliases=[]), "model_aliases"),
        (make_team(1, soft_budget="10"), "soft_budget"),
        (make_user(1, user_role="root"), "user_role"),
        (make_user(1, user_email=b"a@b"), "user_email"),
        (make_user(1, metadata={"k": "nul\x00"}), "metadata"),
        (make_user(1, metadata={"k": object()}), "metadata"),
    ],
)
def test_invalid_records_are_refused_before_sql(store: Store, run: Run[Any], record: Any, field: str) -> None:
    insert = {OrgRecord: store.insert_org, TeamRecord: store.insert_team, UserRecord: store.insert_user}
    with pytest.raises(ValueError, match=field):
        run(insert[type(record)](record))
    assert run(store.list_orgs()) == [] and run(store.list_teams()) == [] and run(store.list_users()) == []


def test_bad_arguments_are_value_errors(store: Store, run: Run[Any]) -> None:
    run(store.insert_team(make_team(1)))
    run(store.insert_user(make_user(1)))
    with pytest.raises(ValueError, match="role"):
        run(store.add_member("team-1", "user-1", "owner"))
    with pytest.raises(ValueError, match="team_id"):
        run(store.add_member("", "user-1", "user"))
    with pytest.raises(ValueError, match="team_ids"):
        run(store.delete_teams("team-1"))
    with pytest.raises(ValueError, match="user_ids"):
        run(store.delete_users("user-1"))
    with pytest.raises(ValueError, match="organization_ids"):
        run(store.delete_orgs("org-1"))
    with pytest.raises(ValueError, match="negative"):
        run(store.list_teams(limit=-1))
    with pytest.raises(ValueError, match="negative"):
        run(store.list_users(offset=-1))
    with pytest.raises(ValueError, match="team_id"):
        run(store.get_team("nul\x00"))
    assert run(store.list_members("team-1")) == []


# --- conflicts ---------------------------------------------------------------------------------------


def test_org_conflicts(store: Store, run: Run[Any]) -> None:
    run(store.insert_org(make_org(1, organization_alias="acme")))
    with pytest.raises(Conflict) as info:
        run(store.insert_org(make_org(1)))
    assert info.value.field == "organization_id"
    with pytest.raises(Conflict) as info:
        run(store.insert_org(make_org(2, organization_alias="acme")))
    assert info.value.field == "organization_alias"
    assert run(store.get_org("org-2")) is None
    run(store.insert_org(make_org(3)))
    run(store.insert_org(make_org(4)))  # many without alias
    with pytest.raises(Conflict) as info:
        run(store.update_org("org-3", organization_alias="acme"))
    assert info.value.field == "organization_alias"
    assert run(store.get_org("org-3")) == make_org(3)


def test_team_conflicts(store: Store, run: Run[Any]) -> None:
    run(store.insert_team(make_team(1, team_alias="red")))
    with pytest.raises(Conflict) as info:
        run(store.insert_team(make_team(1)))
    assert info.value.field == "team_id"
    with pytest.raises(Conflict) as info:
        run(store.insert_team(make_team(2, team_alias="red")))
    assert info.value.field == "team_alias"
    run(store.insert_team(make_team(3)))
    run(store.insert_team(make_team(4)))
    with pytest.raises(Conflict) as info:
        run(store.update_team("team-3", team_alias="red"))
    assert info.value.field == "team_alias"
    assert run(store.get_team("team-3")) == make_team(3)


def test_user_conflicts(store: Store, run: Run[Any]) -> None:
    run(store.insert_user(make_user(1, user_email="a@example.com")))
    with pytest.raises(Conflict) as info:
        run(store.insert_user(make_user(1)))
    assert info.value.field == "user_id"
    with pytest.raises(Conflict) as info:
        run(store.insert_user(make_user(2, user_email="a@example.com")))
    assert info.value.field == "user_email"
    run(store.insert_user(make_user(3)))
    run(store.insert_user(make_user(4)))  # many without email
    run(store.insert_user(make_user(5, user_alias="same")))
    run(store.insert_user(make_user(6, user_alias="same")))  # aliases of users are not unique
    with pytest.raises(Conflict) as info:
        run(store.update_user("user-3", user_email="a@example.com"))
    assert info.value.field == "user_email"
    assert run(store.get_user("user-3")) == make_user(3)


# --- update ------------------------------------------------------------------------------------------


def test_updates_change_only_the_named_fields(store: Store, run: Run[Any]) -> None:
    run(store.insert_org(FULL_ORG))
    run(store.insert_org(make_org(2)))
    run(store.insert_team(FULL_TEAM))
    run(store.insert_user(FULL_USER))

    org = run(store.update_org("org-1", organization_alias=None, models=["x/*"], metadata={}))
    assert org is not None and org.updated_at > FULL_ORG.updated_at
    assert org == dataclasses.replace(
        FULL_ORG, organization_alias=None, models=("x/*",), metadata={}, updated_at=org.updated_at
    )
    assert run(store.get_org("org-1")) == org

    team = run(store.update_team("team-1", blocked=False, organization_id="org-2", tpm_limit=None))
    assert team is not None and team.updated_at > FULL_TEAM.updated_at
    expected_team = dataclasses.replace(
        FULL_TEAM, blocked=False, organization_id="org-2", tpm_limit=None, updated_at=team.updated_at
    )
    assert team == expected_team and run(store.get_team("team-1")) == expected_team

    user = run(store.update_user("user-1", user_role="internal_user_viewer", spend=7.0, user_email=None))
    assert user is not None
    expected_user = dataclasses.replace(
        FULL_USER, user_role="internal_user_viewer", spend=7.0, user_email=None, updated_at=user.updated_at
    )
    assert user == expected_user and run(store.get_user("user-1")) == expected_user


def test_team_model_aliases_and_soft_budget_update(store: Store, run: Run[Any]) -> None:
    run(store.insert_org(FULL_ORG))
    run(store.insert_team(FULL_TEAM))
    team = run(store.update_team("team-1", model_aliases={"fast": "gpt-4o-mini"}, soft_budget=12.5))
    assert team is not None
    expected = dataclasses.replace(
        FULL_TEAM, model_aliases={"fast": "gpt-4o-mini"}, soft_budget=12.5, updated_at=team.updated_at
    )
    assert team == expected and run(store.get_team("team-1")) == expected
    team = run(store.update_team("team-1", model_aliases={}, soft_budget=None))
    assert team is not None and (team.model_aliases, team.soft_budget) == ({}, None)
    assert run(store.get_team("team-1")) == team
    for bad in ({"model_aliases": {"x": 3}}, {"model_aliases": None}, {"soft_budget": "1"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            run(store.update_team("team-1", **bad))
    assert run(store.get_team("team-1")) == team


def test_update_missing_is_none(store: Store, run: Run[Any]) -> None:
    assert run(store.update_org("org-404", max_budget=1.0)) is None
    assert run(store.update_team("team-404", blocked=True)) is None
    assert run(store.update_user("user-404", user_alias="x")) is None


def test_update_refuses_unknown_immutable_and_invalid(store: Store, run: Run[Any]) -> None:
    run(store.insert_org(make_org(1)))
    run(store.insert_team(make_team(1)))
    run(store.insert_user(make_user(1)))
    with pytest.raises(ValueError, match="unknown organization field: colour"):
        run(store.update_org("org-1", colour="red"))
    with pytest.raises(ValueError, match="unknown team field: key_alias"):
        run(store.update_team("team-1", key_alias="x"))
    with pytest.raises(ValueError, match="unknown user field: blocked"):
        run(store.update_user("user-1", blocked=True))
    for field in ("organization_id", "created_at", "updated_at"):
        with pytest.raises(ValueError, match=field):
            run(store.update_org("org-1", **{field: "x"}))
    for field in ("team_id", "created_at"):
        with pytest.raises(ValueError, match=field):
            run(store.update_team("team-1", **{field: "x"}))
    with pytest.raises(ValueError, match="user_id"):
        run(store.update_user("user-1", user_id="x"))
    with pytest.raises(ValueError, match="user_role"):
        run(store.update_user("user-1", user_role="god"))
    with pytest.raises(ValueError, match="rpm_limit"):
        run(store.update_team("team-1", rpm_limit="10"))
    assert run(store.get_org("org-1")) == make_org(1)
    assert run(store.get_team("team-1")) == make_team(1)
    assert run(store.get_user("user-1")) == make_user(1)


# --- organizations and teams -------------------------------------------------------------------------


def test_a_team_needs_an_existing_org(store: Store, run: Run[Any]) -> None:
    with pytest.raises(NotFoundError) as info:
        run(store.insert_team(make_team(1, organization_id="org-404")))
    assert info.value.field == "organization_id"
    assert run(store.get_team("team-1")) is None
    run(store.insert_org(make_org(1)))
    run(store.insert_team(make_team(1, organization_id="org-1")))
    with pytest.raises(NotFoundError) as info:
        run(store.update_team("team-1", organization_id="org-404"))
    assert info.value.field == "organization_id"
    assert run(store.get_team("team-1")) == make_team(1, organization_id="org-1")
    updated = run(store.update_team("team-1", organization_id=None))
    assert updated is not None and updated.organization_id is None


def test_an_org_with_teams_is_not_deleted(store: Store, run: Run[Any]) -> None:
    run(store.insert_org(make_org(1)))
    run(store.insert_org(make_org(2)))
    run(store.insert_team(make_team(1, organization_id="org-1")))
    with pytest.raises(Conflict) as info:
        run(store.delete_orgs(["org-2", "org-1"]))
    assert info.value.field == "organization_id"
    assert [o.organization_id for o in run(store.list_orgs())] == ["org-1", "org-2"]  # nothing deleted
    assert run(store.delete_teams(["team-1"])) == 1
    assert run(store.delete_orgs(["org-1", "org-2", "org-404"])) == 2
    assert run(store.list_orgs()) == []
    assert run(store.delete_orgs([])) == 0


def test_list_orgs_orders_and_paginates(store: Store, run: Run[Any]) -> None:
    same = T0 + timedelta(hours=1)
    orgs = [make_org(5), make_org(1), make_org(3), make_org(8, created_at=same), make_org(7, created_at=same)]
    for org in orgs:
        run(store.insert_org(org))
    by_time = sorted(orgs, key=lambda o: (o.created_at, o.organization_id))
    assert run(store.list_orgs()) == by_time
    assert run(store.list_orgs(limit=2)) == by_time[:2]
    assert run(store.list_orgs(limit=2, offset=2)) == by_time[2:4]
    assert run(store.list_orgs(offset=10)) == []
    assert run(store.list_orgs(limit=0)) == []


def test_list_teams_filters_orders_and_paginates(store: Store, run: Run[Any]) -> None:
    run(store.insert_org(make_org(1)))
    run(store.insert_org(make_org(2)))
    same = T0 + timedelta(hours=1)
    teams = [
        make_team(5, organization_id="org-1"),
        make_team(1, organization_id="org-2"),
        make_team(3, organization_id="org-1"),
        make_team(8, organization_id="org-1", created_at=same),
        make_team(7, organization_id="org-1", created_at=same),
        make_team(2),
    ]
    for team in teams:
        run(store.insert_team(team))
    by_time = sorted(teams, key=lambda t: (t.created_at, t.team_id))
    org1 = [t for t in by_time if t.organization_id == "org-1"]
    assert run(store.list_teams()) == by_time
    assert run(store.list_teams(organization_id="org-1")) == org1
    assert run(store.list_teams(organization_id="org-2")) == [make_team(1, organization_id="org-2")]
    assert run(store.list_teams(organization_id="org-1", limit=2, offset=1)) == org1[1:3]
    assert run(store.list_teams(organization_id="org-404")) == []
    assert [t.team_id for t in org1[-2:]] == ["team-7", "team-8"]  # same created_at: by id


# --- members -----------------------------------------------------------------------------------------


def _directory(store: Store, run: Run[Any]) -> None:
    for n in range(1, 4):
        run(store.insert_team(make_team(n)))
    for n in range(1, 5):
        run(store.insert_user(make_user(n)))


def test_add_member_upserts_the_role(store: Store, run: Run[Any]) -> None:
    _directory(store, run)
    assert run(store.add_member("team-1", "user-2", "user")) == TeamMember("team-1", "user-2", "user")
    run(store.add_member("team-1", "user-1", "admin"))
    assert run(store.list_members("team-1")) == [
        TeamMember("team-1", "user-2", "user"),
        TeamMember("team-1", "user-1", "admin"),
    ]
    assert run(store.add_member("team-1", "user-2", "admin")) == TeamMember("team-1", "user-2", "admin")
    assert run(store.add_member("team-1", "user-2", "admin")) == TeamMember("team-1", "user-2", "admin")
    members = run(store.list_members("team-1"))
    assert [(m.user_id, m.role) for m in members] == [("user-2", "admin"), ("user-1", "admin")]  # order kept
    assert run(store.list_members("team-2")) == []
    assert run(store.list_members("team-404")) == []


def test_list_members_paginates(store: Store, run: Run[Any]) -> None:
    _directory(store, run)
    for n in (3, 1, 4, 2):
        run(store.add_member("team-1", f"user-{n}", "user"))
    ids = [m.user_id for m in run(store.list_members("team-1"))]
    assert ids == ["user-3", "user-1", "user-4", "user-2"]  # in the order they were added
    assert [m.user_id for m in run(store.list_members("team-1", limit=2))] == ids[:2]
    assert [m.user_id for m in run(store.list_members("team-1", limit=2, offset=2))] == ids[2:]
    assert run(store.list_members("team-1", offset=4)) == []


def test_remove_member(store: Store, run: Run[Any]) -> None:
    _directory(store, run)
    run(store.add_member("team-1", "user-1", "user"))
    run(store.add_member("team-1", "user-2", "admin"))
    assert run(store.remove_member("team-1", "user-1")) is True
    assert run(store.remove_member("team-1", "user-1")) is False
    assert run(store.remove_member("team-404", "user-2")) is False
    assert run(store.list_members("team-1")) == [TeamMember("team-1", "user-2", "admin")]
    assert run(store.get_user("user-1")) == make_user(1)  # only the membership went


def test_add_member_needs_the_team_and_the_user(store: Store, run: Run[Any]) -> None:
    _directory(store, run)
    with pytest.raises(NotFoundError) as info:
        run(store.add_member("team-404", "user-1", "user"))
    assert info.value.field == "team_id"
    with pytest.raises(NotFoundError) as info:
        run(store.add_member("team-1", "user-404", "user"))
    assert info.value.field == "user_id"
    with pytest.raises(NotFoundError) as info:
        run(store.add_member("team-404", "user-404", "user"))
    assert info.value.field == "team_id"
    assert run(store.list_members("team-1")) == []


def test_get_member(store: Store, run: Run[Any]) -> None:
    _directory(store, run)
    assert run(store.get_member("team-1", "user-1")) is None
    run(store.add_member("team-1", "user-1", "user"))
    run(store.add_member("team-2", "user-2", "admin"))
    assert run(store.get_member("team-1", "user-1")) == TeamMember("team-1", "user-1", "user")
    assert run(store.get_member("team-2", "user-2")) == TeamMember("team-2", "user-2", "admin")
    assert run(store.get_member("team-1", "user-2")) is None  # a member of another team
    assert run(store.get_member("team-2", "user-1")) is None
    assert run(store.get_member("team-404", "user-404")) is None
    run(store.add_member("team-1", "user-1", "admin"))
    assert run(store.get_member("team-1", "user-1")) == TeamMember("team-1", "user-1", "admin")
    run(store.remove_member("team-1", "user-1"))
    assert run(store.get_member("team-1", "user-1")) is None
    run(store.delete_users(["user-2"]))
    assert run(store.get_member("team-2", "user-2")) is None
    for args, field in ((("", "user-1"), "team_id"), (("team-1", "nul\x00"), "user_id")):
        with pytest.raises(ValueError, match=field):
            run(store.get_member(*args))


def test_teams_of_and_list_users_by_team(store: Store, run: Run[Any]) -> None:
    _directory(store, run)
    run(store.add_member("team-3", "user-1", "user"))
    run(store.add_member("team-1", "user-1", "admin"))
    run(store.add_member("team-1", "user-3", "user"))
    run(store.add_member("team-2", "user-3", "user"))
    assert run(store.teams_of("user-1")) == ["team-1", "team-3"]  # by the team's created_at
    assert run(store.teams_of("user-3")) == ["team-1", "team-2"]
    assert run(store.teams_of("user-2")) == []
    assert run(store.teams_of("user-404")) == []
    assert run(store.list_users(team_id="team-1")) == [make_user(1), make_user(3)]
    assert run(store.list_users(team_id="team-1", limit=1, offset=1)) == [make_user(3)]
    assert run(store.list_users(team_id="team-404")) == []
    assert run(store.list_users()) == [make_user(n) for n in range(1, 5)]
    assert run(store.list_users(limit=2, offset=1)) == [make_user(2), make_user(3)]


def test_deleting_a_team_removes_its_memberships_and_keeps_keys(store: Store, run: Run[Any], backend: Backend) -> None:
    _directory(store, run)
    run(store.add_member("team-1", "user-1", "admin"))
    run(store.add_member("team-1", "user-2", "user"))
    run(store.add_member("team-2", "user-1", "user"))
    key = KeyRecord(
        token_hash="a" * 64, key_name="sk-...aaaa", key_alias=None, user_id="user-1", team_id="team-1", models=(),
        max_budget=None, budget_duration=None, tpm_limit=None, rpm_limit=None, max_parallel_requests=None,
        metadata={}, blocked=False, expires=None, created_at=T0, updated_at=T0,
    )  # fmt: skip
    run(store.insert_key(key))
    assert run(store.delete_teams(["team-1", "team-404"])) == 1
    assert run(store.get_team("team-1")) is None
    assert run(store.list_members("team-1")) == []
    assert run(store.teams_of("user-1")) == ["team-2"]
    assert run(store.teams_of("user-2")) == []
    assert run(backend.fetch("SELECT COUNT(*) FROM team_members WHERE team_id = 'team-1'")) == [(0,)]
    assert run(store.get_key(key.token_hash)) == key  # keys keep their team_id: the API decides
    assert run(store.get_user("user-1")) == make_user(1)
    assert run(store.delete_teams([])) == 0


def test_deleting_a_user_removes_its_memberships(store: Store, run: Run[Any], backend: Backend) -> None:
    _directory(store, run)
    run(store.add_member("team-1", "user-1", "admin"))
    run(store.add_member("team-2", "user-1", "user"))
    run(store.add_member("team-2", "user-2", "user"))
    assert run(store.delete_users(["user-1", "user-404"])) == 1
    assert run(store.get_user("user-1")) is None
    assert run(store.list_members("team-1")) == []
    assert run(store.list_members("team-2")) == [TeamMember("team-2", "user-2", "user")]
    assert run(backend.fetch("SELECT COUNT(*) FROM team_members")) == [(1,)]
    assert run(store.delete_users([])) == 0


# --- a user with its first key ----------------------------------------------------------------------


def make_key(n: int = 0, **fields: Any) -> KeyRecord:
    values: dict[str, Any] = {
        "token_hash": f"{n:064x}",
        "key_name": f"sk-...{n:04d}",
        "key_alias": None,
        "user_id": f"user-{n}",
        "team_id": None,
        "models": (),
        "max_budget": None,
        "budget_duration": None,
        "tpm_limit": None,
        "rpm_limit": None,
        "max_parallel_requests": None,
        "metadata": {},
        "blocked": False,
        "expires": None,
        "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
        "created_by": "master_key",
    }
    values.update(fields)
    return KeyRecord(**values)


def test_insert_user_with_its_first_key(store: Store, run: Run[Any]) -> None:
    key = make_key(1, key_alias="ada-first", aliases={"gpt-4": "gpt-4o"}, allowed_routes=("/chat/completions",))
    run(store.insert_user(FULL_USER, key))
    assert run(store.get_user("user-1")) == FULL_USER
    assert run(store.get_key(key.token_hash)) == key
    assert run(store.list_keys(user_id="user-1")) == [key]
    run(store.insert_user(make_user(2), None))  # no key: as before
    assert run(store.list_users()) == [FULL_USER, make_user(2)]
    assert run(store.list_keys()) == [key]


def _nothing_written(store: Store, run: Run[Any], user_id: str, token_hash: str) -> None:
    assert run(store.get_user(user_id)) is None
    assert run(store.get_key(token_hash)) is None


def test_insert_user_with_key_writes_neither_on_a_user_conflict(store: Store, run: Run[Any]) -> None:
    run(store.insert_user(make_user(1, user_email="ada@example.com")))
    with pytest.raises(Conflict) as info:
        run(store.insert_user(make_user(2, user_email="ada@example.com"), make_key(2)))
    assert info.value.field == "user_email"
    _nothing_written(store, run, "user-2", make_key(2).token_hash)
    with pytest.raises(Conflict) as info:
        run(store.insert_user(make_user(1), make_key(3)))
    assert info.value.field == "user_id"
    assert run(store.get_key(make_key(3).token_hash)) is None
    assert run(store.list_keys()) == [] and run(store.list_users()) == [make_user(1, user_email="ada@example.com")]


def test_insert_user_with_key_writes_neither_on_a_key_conflict(store: Store, run: Run[Any]) -> None:
    taken = make_key(9, key_alias="taken")
    run(store.insert_key(taken))
    with pytest.raises(Conflict) as info:
        run(store.insert_user(make_user(2), make_key(2, key_alias="taken")))
    assert info.value.field == "key_alias"
    _nothing_written(store, run, "user-2", make_key(2).token_hash)
    with pytest.raises(Conflict) as info:
        run(store.insert_user(make_user(3), make_key(9, key_alias="fresh")))
    assert info.value.field == "token_hash"
    assert run(store.get_user("user-3")) is None
    assert run(store.list_keys()) == [taken] and run(store.list_users()) == []
    run(store.insert_user(make_user(2), make_key(2, key_alias="fresh")))  # the failures left nothing behind
    assert run(store.get_key(make_key(2).token_hash)) == make_key(2, key_alias="fresh")


def test_insert_user_with_an_invalid_key_is_refused_before_sql(store: Store, run: Run[Any]) -> None:
    for key, field in (
        (make_key(2, aliases={"a": 1}), "aliases"),
        (make_key(2, model_rpm_limit={"m": -1}), "model_rpm_limit"),
        (make_key(2, token_hash=""), "token_hash"),
    ):
        with pytest.raises(ValueError, match=field):
            run(store.insert_user(make_user(2), key))
    _nothing_written(store, run, "user-2", make_key(2).token_hash)


def test_concurrent_user_inserts_sharing_a_key_alias(store: Store, run: Run[Any]) -> None:
    async def race() -> list[Any]:
        return await asyncio.gather(
            *(store.insert_user(make_user(n), make_key(n, key_alias="same")) for n in range(1, 7)),
            return_exceptions=True,
        )

    results = run(race())
    assert results.count(None) == 1
    conflicts = [r for r in results if r is not None]
    assert len(conflicts) == 5 and all(isinstance(r, Conflict) and r.field == "key_alias" for r in conflicts)
    users, keys = run(store.list_users()), run(store.list_keys())
    assert len(users) == 1 and len(keys) == 1 and keys[0].user_id == users[0].user_id


# --- hostile values, concurrency, migration ----------------------------------------------------------

HOSTILE = ("'; DROP TABLE teams; --", "' OR '1'='1", 'x" OR "1"="1', "$1", "?", ":team_id", "%s", "\\'")


def test_sql_shaped_ids_are_stored_verbatim(store: Store, run: Run[Any], backend: Backend) -> None:
    for n, text in enumerate(HOSTILE):
        org = make_org(n, organization_id=text, organization_alias=text, metadata={text: text})
        team = make_team(n, team_id=text, team_alias=text, organization_id=text, budget_duration=text)
        user = make_user(n, user_id=text, user_email=text, user_alias=text, models=(text,))
        team = dataclasses.replace(team, model_aliases={text: text})
        run(store.insert_org(org))
        run(store.insert_team(team))
        run(store.insert_user(user))
        assert run(store.get_org(text)) == org
        assert run(store.get_team(text)) == team
        assert run(store.get_user(text)) == user
        assert run(store.list_teams(organization_id=text)) == [team]
        assert run(store.add_member(text, text, "admin")) == TeamMember(text, text, "admin")
        assert run(store.list_members(text)) == [TeamMember(text, text, "admin")]
        assert run(store.teams_of(text)) == [text]
        assert run(store.get_member(text, text)) == TeamMember(text, text, "admin")
        assert run(store.list_users(team_id=text)) == [user]
        updated = run(store.update_team(text, team_alias=text + "!"))
        assert updated is not None and updated.team_alias == text + "!"
    assert run(store.get_team("' OR '1'='1 ")) is None
    assert run(store.teams_of("' OR 1=1 --")) == []
    assert run(store.remove_member("' OR '1'='1", "x' OR '1'='1")) is False
    assert run(store.delete_users(["' OR 1=1 --"])) == 0
    assert run(backend.fetch("SELECT COUNT(*) FROM teams")) == [(len(HOSTILE),)]
    assert run(backend.fetch("SELECT COUNT(*) FROM team_members")) == [(len(HOSTILE),)]
    assert run(store.remove_member(HOSTILE[0], HOSTILE[0])) is True
    assert run(store.delete_teams(list(HOSTILE))) == len(HOSTILE)
    assert run(store.delete_orgs(list(HOSTILE))) == len(HOSTILE)
    assert run(store.delete_users(list(HOSTILE))) == len(HOSTILE)
    assert run(backend.fetch("SELECT COUNT(*) FROM team_members")) == [(0,)]


def test_concurrent_member_upserts_and_team_inserts(store: Store, run: Run[Any]) -> None:
    _directory(store, run)

    async def race() -> list[Any]:
        upserts = (store.add_member("team-1", "user-1", "admin" if n % 2 else "user") for n in range(10))
        inserts = (store.insert_team(make_team(10, team_alias="dup")) for _ in range(4))
        return await asyncio.gather(*upserts, *inserts, return_exceptions=True)

    results = run(race())
    assert all(isinstance(r, TeamMember) for r in results[:10])
    assert sum(isinstance(r, Conflict) for r in results[10:]) == 3
    members = run(store.list_members("team-1"))
    assert len(members) == 1 and members[0].role in ("admin", "user")


def test_a_version_1_database_is_upgraded_keeping_its_keys(backend: Backend, run: Run[Any]) -> None:
    key = KeyRecord(
        token_hash="b" * 64, key_name="sk-...bbbb", key_alias="old", user_id=None, team_id=None, models=(),
        max_budget=None, budget_duration=None, tpm_limit=None, rpm_limit=None, max_parallel_requests=None,
        metadata={}, blocked=False, expires=None, created_at=T0, updated_at=T0,
    )  # fmt: skip
    row = f"""INSERT INTO keys (token_hash, key_name, key_alias, created_at, updated_at)
        VALUES ('{"b" * 64}', 'sk-...bbbb', 'old', '{T0.isoformat()}', '{T0.isoformat()}')"""  # as version 1 wrote it
    make_old_database(backend, run, 1, row)
    store = run(backend.open())
    try:
        versions = [(v,) for v in range(1, migrations.LATEST_VERSION + 1)]
        assert run(backend.fetch("SELECT version FROM lockgate_schema ORDER BY version")) == versions
        assert run(store.get_key(key.token_hash)) == key
        run(store.insert_org(make_org(1)))
        assert run(store.list_orgs()) == [make_org(1)]
    finally:
        run(store.close())


def test_insert_team_with_its_first_members(store: Store, run: Run[Any]) -> None:
    run(store.insert_user(make_user(1)))
    run(store.insert_user(make_user(2)))
    members = [TeamMember("team-1", "user-1", "admin"), TeamMember("team-1", "user-2", "user")]
    run(store.insert_team(make_team(1), members))
    assert run(store.list_members("team-1")) == members
    # a member naming no user: neither the team nor any member is written
    with pytest.raises(NotFoundError) as missing:
        run(
            store.insert_team(
                make_team(2), [TeamMember("team-2", "user-1", "user"), TeamMember("team-2", "nobody", "user")]
            )
        )
    assert missing.value.field == "user_id"
    assert run(store.get_team("team-2")) is None and run(store.teams_of("user-1")) == ["team-1"]
    with pytest.raises(ValueError, match="team_id"):  # members of some other team
        run(store.insert_team(make_team(3), [TeamMember("team-1", "user-1", "user")]))
    with pytest.raises(ValueError, match="role"):
        run(store.insert_team(make_team(3), [TeamMember("team-3", "user-1", "owner")]))
    assert run(store.get_team("team-3")) is None


def test_add_members_is_all_or_nothing(store: Store, run: Run[Any]) -> None:
    _directory(store, run)
    run(store.add_members("team-1", [TeamMember("team-1", "user-1", "admin"), TeamMember("team-1", "user-2", "user")]))
    assert [(m.user_id, m.role) for m in run(store.list_members("team-1"))] == [("user-1", "admin"), ("user-2", "user")]
    with pytest.raises(NotFoundError) as missing:
        run(
            store.add_members("team-2", [TeamMember("team-2", "user-3", "user"), TeamMember("team-2", "ghost", "user")])
        )
    assert missing.value.field == "user_id" and run(store.list_members("team-2")) == []
    with pytest.raises(NotFoundError) as no_team:
        run(store.add_members("team-404", [TeamMember("team-404", "user-1", "user")]))
    assert no_team.value.field == "team_id"
    with pytest.raises(ValueError, match="team_id"):
        run(store.add_members("team-2", [TeamMember("team-1", "user-1", "user")]))
