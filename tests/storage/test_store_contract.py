"""The contract every storage backend keeps: each test runs once per backend (see conftest.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from lockgate.storage import Conflict, KeyRecord, SchemaTooNew, Store
from lockgate.storage.migrations import LATEST_VERSION
from tests.storage.conftest import Backend, Run

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def make_key(n: int = 0, **fields: Any) -> KeyRecord:
    values: dict[str, Any] = {
        "token_hash": hashlib.sha256(f"sk-test-key-{n}".encode()).hexdigest(),
        "key_name": f"sk-...{n:04d}",
        "key_alias": None,
        "user_id": None,
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
    }
    values.update(fields)
    return KeyRecord(**values)


FULL = make_key(
    1,
    key_alias="ci-bot",
    user_id="u-1",
    team_id="t-1",
    models=("gpt-4o", "anthropic/*"),
    max_budget=12.5,
    budget_duration="30d",
    tpm_limit=100_000,
    rpm_limit=600,
    max_parallel_requests=8,
    metadata={"owner": "ops", "tags": ["a", "b"], "nested": {"n": 1, "x": None, "f": 1.5}, "ünï": "çødé"},
    blocked=True,
    expires=datetime(2027, 6, 30, 12, 0, tzinfo=timezone(timedelta(hours=2))),  # stored and read back as UTC
    spend=3.25,
    aliases={"gpt-4": "gpt-4o", "fast": "anthropic/claude-haiku", "ünï": "çødé"},
    allowed_routes=("/chat/completions", "/v1/*", "llm_api_routes"),
    soft_budget=10,  # an int is a number too
    model_max_budget={"gpt-4o": 5.5, "mini": 0},
    model_rpm_limit={"gpt-4o": 60, "mini": 0},
    model_tpm_limit={"gpt-4o": 100_000},
    organization_id="org-1",
    created_by="master_key",
    updated_by="u-1",
)


# --- round trips -------------------------------------------------------------------------------------


def test_insert_then_get_returns_every_field(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(FULL))
    got = run(store.get_key(FULL.token_hash))
    assert got == FULL
    assert got is not None
    for stamp in (got.expires, got.created_at, got.updated_at):
        assert stamp is not None and stamp.utcoffset() == timedelta(0)
    assert got.expires == datetime(2027, 6, 30, 10, 0, tzinfo=UTC)
    assert isinstance(got.models, tuple) and isinstance(got.blocked, bool)


def test_none_values_and_defaults_round_trip(store: Store, run: Run[Any]) -> None:
    key = make_key(2)
    run(store.insert_key(key))
    got = run(store.get_key(key.token_hash))
    assert got == key
    assert got is not None and got.models == () and got.metadata == {} and got.spend == 0.0
    assert (got.aliases, got.allowed_routes, got.soft_budget) == ({}, (), None)
    assert (got.model_max_budget, got.model_rpm_limit, got.model_tpm_limit) == ({}, {}, {})
    assert (got.organization_id, got.created_by, got.updated_by) == (None, None, None)


def test_new_fields_round_trip_with_their_types(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(FULL))
    got = run(store.get_key(FULL.token_hash))
    assert got is not None
    assert isinstance(got.allowed_routes, tuple) and got.allowed_routes == FULL.allowed_routes
    assert got.aliases == FULL.aliases and got.model_max_budget == {"gpt-4o": 5.5, "mini": 0}
    assert all(type(v) is int for v in (*got.model_rpm_limit.values(), *got.model_tpm_limit.values()))
    assert got.soft_budget == 10.0
    assert run(store.list_keys(user_id="u-1")) == [got]


def test_get_missing_is_none(store: Store, run: Run[Any]) -> None:
    assert run(store.get_key("0" * 64)) is None


def test_duplicate_hash_is_a_conflict(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(make_key(1)))
    with pytest.raises(Conflict) as info:
        run(store.insert_key(make_key(1, key_name="sk-...other")))
    assert info.value.field == "token_hash"


def test_duplicate_alias_is_a_conflict(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(make_key(1, key_alias="shared")))
    with pytest.raises(Conflict) as info:
        run(store.insert_key(make_key(2, key_alias="shared")))
    assert info.value.field == "key_alias"
    assert run(store.get_key(make_key(2).token_hash)) is None  # nothing half-written


def test_many_keys_without_alias_do_not_conflict(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(make_key(1)))
    run(store.insert_key(make_key(2)))
    assert len(run(store.list_keys())) == 2


def test_invalid_values_are_refused_before_sql(store: Store, run: Run[Any]) -> None:
    with pytest.raises(ValueError, match="created_at"):
        run(store.insert_key(make_key(1, created_at=datetime(2026, 1, 1))))  # naive
    with pytest.raises(ValueError, match="tpm_limit"):
        run(store.insert_key(make_key(1, tpm_limit="100")))
    with pytest.raises(ValueError, match="models"):
        run(store.insert_key(make_key(1, models=["gpt-4o"])))
    assert run(store.list_keys()) == []


BAD_NEW_VALUES = [
    ("aliases", {"a": 1}),
    ("aliases", {"a": ""}),
    ("aliases", {"a": None}),
    ("aliases", {1: "a"}),
    ("aliases", {"a": "nul\x00"}),
    ("aliases", [("a", "b")]),
    ("allowed_routes", "/chat/completions"),
    ("allowed_routes", ("/a", 1)),
    ("soft_budget", "10"),
    ("soft_budget", True),
    ("model_max_budget", {"m": -1}),
    ("model_max_budget", {"m": "1"}),
    ("model_max_budget", {"m": None}),
    ("model_rpm_limit", {"m": -1}),
    ("model_rpm_limit", {"m": 1.5}),
    ("model_rpm_limit", {"m": True}),
    ("model_tpm_limit", {"m": "10"}),
    ("model_tpm_limit", {None: 10}),
    ("model_tpm_limit", None),
    ("organization_id", 5),
    ("created_by", b"u-1"),
    ("updated_by", "nul\x00"),
    ("metadata", {"k": "nul\x00"}),  # JSONB cannot hold it: refused by both backends alike
]


@pytest.mark.parametrize(("field", "value"), BAD_NEW_VALUES)
def test_invalid_new_fields_are_refused_on_insert_and_update(
    store: Store, run: Run[Any], field: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=field):
        run(store.insert_key(make_key(2, **{field: value})))
    assert run(store.get_key(make_key(2).token_hash)) is None
    run(store.insert_key(FULL))
    with pytest.raises(ValueError, match=field):
        run(store.update_key(FULL.token_hash, **{field: value}))
    assert run(store.get_key(FULL.token_hash)) == FULL


# --- update ------------------------------------------------------------------------------------------


def test_update_changes_only_the_named_fields(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(FULL))
    updated = run(store.update_key(FULL.token_hash, blocked=False, tpm_limit=None, models=["gpt-4o-mini"]))
    assert updated is not None
    assert (updated.blocked, updated.tpm_limit, updated.models) == (False, None, ("gpt-4o-mini",))
    assert updated.updated_at > FULL.updated_at
    expected = dataclasses.replace(
        FULL, blocked=False, tpm_limit=None, models=("gpt-4o-mini",), updated_at=updated.updated_at
    )
    assert updated == expected
    assert run(store.get_key(FULL.token_hash)) == expected


NEW_FIELD_CHANGES = [
    ("aliases", {"other": "gpt-4o-mini"}, {"other": "gpt-4o-mini"}),
    ("aliases", {}, {}),
    ("allowed_routes", ["/embeddings"], ("/embeddings",)),  # a list is taken, like models
    ("allowed_routes", (), ()),
    ("soft_budget", 2.5, 2.5),
    ("soft_budget", None, None),
    ("model_max_budget", {"gpt-4o": 1, "x": 0.25}, {"gpt-4o": 1, "x": 0.25}),
    ("model_max_budget", {}, {}),
    ("model_rpm_limit", {"x": 7}, {"x": 7}),
    ("model_tpm_limit", {"x": 0, "y": 10**12}, {"x": 0, "y": 10**12}),
    ("organization_id", "org-2", "org-2"),
    ("organization_id", None, None),
    ("created_by", None, None),
    ("updated_by", "admin-7", "admin-7"),
]


@pytest.mark.parametrize(("field", "value", "stored"), NEW_FIELD_CHANGES)
def test_update_each_new_field(store: Store, run: Run[Any], field: str, value: Any, stored: Any) -> None:
    run(store.insert_key(FULL))
    run(store.insert_key(make_key(2)))
    updated = run(store.update_key(FULL.token_hash, **{field: value}))
    assert updated is not None and getattr(updated, field) == stored
    expected = dataclasses.replace(FULL, **{field: stored}, updated_at=updated.updated_at)
    assert updated == expected and updated.updated_at > FULL.updated_at
    assert run(store.get_key(FULL.token_hash)) == expected
    assert run(store.get_key(make_key(2).token_hash)) == make_key(2)  # nothing else moved


def test_update_missing_key_is_none(store: Store, run: Run[Any]) -> None:
    assert run(store.update_key("0" * 64, blocked=True)) is None


def test_update_unknown_or_immutable_field_is_a_value_error(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(FULL))
    with pytest.raises(ValueError, match="unknown key field: colour"):
        run(store.update_key(FULL.token_hash, colour="red"))
    for field in ("token_hash", "created_at", "updated_at"):
        with pytest.raises(ValueError, match=field):
            run(store.update_key(FULL.token_hash, **{field: "x"}))
    assert run(store.get_key(FULL.token_hash)) == FULL


def test_update_to_a_taken_alias_is_a_conflict(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(make_key(1, key_alias="one")))
    run(store.insert_key(make_key(2, key_alias="two")))
    with pytest.raises(Conflict) as info:
        run(store.update_key(make_key(2).token_hash, key_alias="one"))
    assert info.value.field == "key_alias"
    assert run(store.get_key(make_key(2).token_hash)) == make_key(2, key_alias="two")


# --- delete and list ---------------------------------------------------------------------------------


def test_delete_several_in_one_call(store: Store, run: Run[Any]) -> None:
    for n in range(4):
        run(store.insert_key(make_key(n)))
    hashes = [make_key(0).token_hash, make_key(2).token_hash, "f" * 64]
    assert run(store.delete_keys(hashes)) == 2
    assert [k.token_hash for k in run(store.list_keys())] == [make_key(1).token_hash, make_key(3).token_hash]
    assert run(store.delete_keys([])) == 0


def test_list_filters_paginates_and_orders(store: Store, run: Run[Any]) -> None:
    same_time = T0 + timedelta(hours=1)
    keys = [
        make_key(5, user_id="alice", team_id="red"),
        make_key(1, user_id="bob", team_id="red"),
        make_key(3, user_id="alice", team_id="blue"),
        make_key(7, user_id="alice", created_at=same_time),
        make_key(8, user_id="alice", created_at=same_time),
    ]
    for key in reversed(keys):
        run(store.insert_key(key))

    def hashes(records: list[KeyRecord]) -> list[str]:
        return [r.token_hash for r in records]

    by_time = sorted(keys, key=lambda k: (k.created_at, k.token_hash))
    assert hashes(run(store.list_keys())) == hashes(by_time)
    alice = [k for k in by_time if k.user_id == "alice"]
    assert hashes(run(store.list_keys(user_id="alice"))) == hashes(alice)
    assert hashes(run(store.list_keys(team_id="red"))) == hashes([k for k in by_time if k.team_id == "red"])
    assert hashes(run(store.list_keys(user_id="alice", team_id="red"))) == [make_key(5).token_hash]
    assert hashes(run(store.list_keys(user_id="alice", limit=2))) == hashes(alice[:2])
    assert hashes(run(store.list_keys(user_id="alice", limit=2, offset=2))) == hashes(alice[2:4])
    assert run(store.list_keys(offset=10)) == []
    assert run(store.list_keys(user_id="nobody")) == []
    assert run(store.list_keys(limit=1)) == [by_time[0]]


# --- rekey -------------------------------------------------------------------------------------------

NEW_HASH = hashlib.sha256(b"sk-regenerated").hexdigest()


def test_rekey_keeps_every_other_field(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(FULL))
    run(store.insert_key(make_key(2)))
    rekeyed = run(store.rekey(FULL.token_hash, NEW_HASH, "sk-...gen1"))
    assert rekeyed is not None and rekeyed.updated_at > FULL.updated_at
    assert rekeyed == dataclasses.replace(
        FULL, token_hash=NEW_HASH, key_name="sk-...gen1", updated_at=rekeyed.updated_at
    )
    assert rekeyed.updated_at.utcoffset() == timedelta(0)
    assert run(store.get_key(NEW_HASH)) == rekeyed
    assert run(store.get_key(FULL.token_hash)) is None  # the old key no longer resolves
    assert run(store.list_keys(user_id="u-1")) == [rekeyed]
    assert run(store.list_keys()) == [rekeyed, make_key(2)]  # created_at kept: order kept
    # The alias moved with the key: it is still taken, and the old hash is free again.
    with pytest.raises(Conflict) as info:
        run(store.insert_key(make_key(3, key_alias="ci-bot")))
    assert info.value.field == "key_alias"
    run(store.insert_key(make_key(4, token_hash=FULL.token_hash)))
    assert run(store.rekey(NEW_HASH, hashlib.sha256(b"again").hexdigest(), "sk-...agn2")) is not None


def test_rekey_missing_is_none(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(make_key(1)))
    assert run(store.rekey("0" * 64, NEW_HASH, "sk-...gen1")) is None
    assert run(store.rekey("0" * 64, make_key(1).token_hash, "sk-...gen1")) is None  # missing beats taken
    assert run(store.get_key(NEW_HASH)) is None
    assert run(store.list_keys()) == [make_key(1)]


def test_rekey_to_a_taken_hash_is_a_conflict(store: Store, run: Run[Any]) -> None:
    one, two = make_key(1), make_key(2, key_alias="two")
    run(store.insert_key(one))
    run(store.insert_key(two))
    for taken in (two.token_hash, one.token_hash):
        with pytest.raises(Conflict) as info:
            run(store.rekey(one.token_hash, taken, "sk-...gen1"))
        assert info.value.field == "token_hash"
    assert run(store.list_keys()) == [one, two]


def test_rekey_refuses_bad_arguments_before_sql(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(make_key(1)))
    for args, field in (
        (("", NEW_HASH, "sk-...gen1"), "token_hash"),
        ((make_key(1).token_hash, "", "sk-...gen1"), "new_token_hash"),
        ((make_key(1).token_hash, "a\x00b", "sk-...gen1"), "new_token_hash"),
        ((make_key(1).token_hash, NEW_HASH, ""), "new_key_name"),
        ((make_key(1).token_hash, NEW_HASH, None), "new_key_name"),
    ):
        with pytest.raises(ValueError, match=field):
            run(store.rekey(*args))
    assert run(store.list_keys()) == [make_key(1)]


def test_concurrent_rekeys_of_one_key(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(FULL))
    targets = [hashlib.sha256(f"new-{n}".encode()).hexdigest() for n in range(6)]

    async def race() -> list[Any]:
        return await asyncio.gather(*(store.rekey(FULL.token_hash, t, f"sk-...{n:04d}") for n, t in enumerate(targets)))

    results = run(race())
    winners = [r for r in results if r is not None]
    assert len(winners) == 1  # the others found the old hash gone
    assert run(store.list_keys()) == winners
    assert run(store.get_key(FULL.token_hash)) is None


# --- hostile values, concurrency, what is stored -----------------------------------------------------

HOSTILE = ("'; DROP TABLE keys; --", "' OR '1'='1", 'x" OR "1"="1', "$1", "?", ":user_id", "%s", "\\'")


def test_sql_shaped_values_are_stored_verbatim(store: Store, run: Run[Any], backend: Backend) -> None:
    for n, text in enumerate(HOSTILE):
        key = make_key(
            n, key_alias=text, user_id=text, team_id=text, key_name=text, metadata={text: text},
            aliases={text: text}, allowed_routes=(text,), model_rpm_limit={text: n}, organization_id=text,
            created_by=text, updated_by=text,
        )  # fmt: skip
        run(store.insert_key(key))
        assert run(store.get_key(key.token_hash)) == key
        assert run(store.list_keys(user_id=text)) == [key]
        assert run(store.update_key(key.token_hash, budget_duration=text)) is not None
    assert run(store.list_keys(user_id="' OR '1'='1")) == [run(store.get_key(make_key(1).token_hash))]
    assert run(store.get_key("' OR '1'='1")) is None
    assert run(store.delete_keys(["' OR '1'='1"])) == 0
    assert len(run(store.list_keys())) == len(HOSTILE)
    assert run(backend.fetch("SELECT COUNT(*) FROM keys")) == [(len(HOSTILE),)]


def test_concurrent_inserts_all_land(store: Store, run: Run[Any]) -> None:
    keys = [make_key(n, key_alias=f"alias-{n}") for n in range(20)]

    async def insert_all() -> None:
        await asyncio.gather(*(store.insert_key(k) for k in keys))

    run(insert_all())
    assert run(store.list_keys(limit=100)) == keys


def test_concurrent_updates_and_duplicates(store: Store, run: Run[Any]) -> None:
    run(store.insert_key(make_key(1)))

    async def race() -> list[Any]:
        inserts = (store.insert_key(make_key(2, key_alias="same")) for _ in range(5))
        updates = (store.update_key(make_key(1).token_hash, rpm_limit=n) for n in range(10))
        return await asyncio.gather(*inserts, *updates, return_exceptions=True)

    results = run(race())
    assert sum(isinstance(r, Conflict) for r in results[:5]) == 4
    assert all(isinstance(r, KeyRecord) for r in results[5:])
    final = run(store.get_key(make_key(1).token_hash))
    assert final is not None and final.rpm_limit in range(10)


def test_the_key_itself_is_never_stored(store: Store, run: Run[Any], backend: Backend) -> None:
    secret = "sk-lockgate-canary-3f9a1c7e5b2d4680"
    key = make_key(
        0,
        token_hash=hashlib.sha256(secret.encode()).hexdigest(),
        key_name=f"sk-...{secret[-4:]}",
        key_alias="canary",
    )
    run(store.insert_key(key))
    assert run(store.get_key(key.token_hash)) == key
    run(store.close())
    stored = run(backend.dump())
    assert key.token_hash.encode() in stored  # the dump does hold the data...
    assert secret.encode() not in stored  # ...and never the key
    assert secret[3:-4].encode() not in stored


# --- schema ------------------------------------------------------------------------------------------


def test_schema_version_is_recorded(store: Store, run: Run[Any], backend: Backend) -> None:
    rows = run(backend.fetch("SELECT version FROM lockgate_schema ORDER BY version"))
    assert rows == [(v,) for v in range(1, LATEST_VERSION + 1)]


def test_reopening_applies_nothing_new(store: Store, run: Run[Any], backend: Backend) -> None:
    run(store.insert_key(FULL))
    before = run(backend.fetch("SELECT version, applied_at FROM lockgate_schema ORDER BY version"))
    run(store.close())
    again = run(backend.open())
    try:
        assert run(again.get_key(FULL.token_hash)) == FULL
    finally:
        run(again.close())
    assert run(backend.fetch("SELECT version, applied_at FROM lockgate_schema ORDER BY version")) == before


def test_a_newer_schema_is_refused_and_left_alone(store: Store, run: Run[Any], backend: Backend) -> None:
    run(store.insert_key(FULL))
    run(store.close())
    newer = LATEST_VERSION + 1
    bump = f"INSERT INTO lockgate_schema SELECT {newer}, applied_at FROM lockgate_schema WHERE version = 1"
    run(backend.execute(bump))
    before = run(backend.fetch("SELECT version, applied_at FROM lockgate_schema ORDER BY version"))
    tables_before = run(backend.fetch("SELECT COUNT(*) FROM keys"))
    with pytest.raises(SchemaTooNew) as info:
        run(backend.open())
    assert str(info.value) == (
        f"database schema version {newer} is newer than this lockgate ({LATEST_VERSION}); upgrade lockgate"
    )
    assert run(backend.fetch("SELECT version, applied_at FROM lockgate_schema ORDER BY version")) == before
    assert run(backend.fetch("SELECT COUNT(*) FROM keys")) == tables_before
