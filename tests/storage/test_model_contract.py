"""Deployments added through the API (the ModelStore), and the upgrade to migration 4, once per backend."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from lockgate.storage import Conflict, KeyRecord, Store, migrations
from lockgate.storage.base import ModelRecord
from tests.storage.conftest import Backend, Run, make_old_database
from tests.storage.test_directory_contract import make_org, make_team

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def make_model(n: int = 0, **fields: Any) -> ModelRecord:
    values: dict[str, Any] = {
        "model_id": f"model-{n}",
        "model_name": f"group-{n}",
        "litellm_params": {"model": f"openai/gpt-{n}"},
        "model_info": {},
        "created_by": None,
        "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
    }
    values.update(fields)
    return ModelRecord(**values)


AWARE = datetime(2026, 5, 6, 9, 0, tzinfo=timezone(timedelta(hours=-5)))  # read back as the same instant, UTC
PARAMS = {
    "model": "azure/gpt-4o",
    "api_key": "enc:v1:c2VjcmV0LWJ1dC1lbmNyeXB0ZWQ=",  # the API layer encrypts credentials before the store
    "api_base": "https://example.openai.azure.com",
    "temperature": 0.1,
    "max_tokens": 4096,
    "stream": True,
    "stop": None,
    "extra_body": {"nested": {"deep": [1, {"x": None, "y": [2.5, "z"]}], "empty": {}}, "list": []},
    "big": 2**53 + 1,
    "ünï": "çødé",
    "esc": "\\u0000",  # a backslash and 'u0000', not a NUL
}
INFO = {"id": "model-1", "mode": "chat", "tags": ["prod", "eu"], "base_model": "gpt-4o", "cost": {"in": 2.5e-06}}
FULL = make_model(
    1,
    model_name="gpt-4o",
    litellm_params=PARAMS,
    model_info=INFO,
    created_by="user-7",
    created_at=AWARE,
    updated_at=AWARE,
)


# --- round trips -------------------------------------------------------------------------------------


def test_model_round_trip(store: Store, run: Run[Any]) -> None:
    run(store.insert_model(FULL))
    got = run(store.get_model("model-1"))
    assert got == FULL
    assert got is not None and got.created_at.utcoffset() == timedelta(0)
    assert got.created_at == datetime(2026, 5, 6, 14, 0, tzinfo=UTC)
    assert got.litellm_params["extra_body"]["nested"]["deep"][1] == {"x": None, "y": [2.5, "z"]}
    assert got.litellm_params["big"] == 2**53 + 1 and type(got.litellm_params["big"]) is int
    assert got.litellm_params["stream"] is True and got.litellm_params["esc"] == "\\u0000"
    bare = make_model(2)
    run(store.insert_model(bare))
    assert run(store.get_model("model-2")) == bare
    assert run(store.get_model("model-404")) is None


def test_duplicate_model_id_is_a_conflict(store: Store, run: Run[Any]) -> None:
    run(store.insert_model(make_model(1)))
    with pytest.raises(Conflict) as info:
        run(store.insert_model(make_model(1, model_name="other", litellm_params={"model": "x"})))
    assert info.value.field == "model_id"
    assert run(store.list_models()) == [make_model(1)]
    run(store.insert_model(make_model(2, model_name="group-1")))  # names are not unique: a group of deployments
    assert [m.model_name for m in run(store.list_models())] == ["group-1", "group-1"]


# --- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (make_model(1, model_id=""), "model_id"),
        (make_model(1, model_id="a\x00b"), "model_id"),
        (make_model(1, model_id=5), "model_id"),
        (make_model(1, model_name=""), "model_name"),
        (make_model(1, model_name=None), "model_name"),
        (make_model(1, litellm_params=[]), "litellm_params"),
        (make_model(1, litellm_params=None), "litellm_params"),
        (make_model(1, litellm_params={"k": "nul\x00"}), "litellm_params"),
        (make_model(1, litellm_params={"k": object()}), "litellm_params"),
        (make_model(1, model_info="{}"), "model_info"),
        (make_model(1, model_info={"nested": {"k": {1, 2}}}), "model_info"),
        (make_model(1, created_by=5), "created_by"),
        (make_model(1, created_at=datetime(2026, 1, 1)), "created_at"),
        (make_model(1, updated_at=None), "updated_at"),
    ],
)
def test_invalid_models_are_refused_before_sql(store: Store, run: Run[Any], record: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        run(store.insert_model(record))
    assert run(store.list_models()) == []


def test_bad_arguments_are_value_errors(store: Store, run: Run[Any]) -> None:
    run(store.insert_model(make_model(1)))
    with pytest.raises(ValueError, match="model_ids"):
        run(store.delete_models("model-1"))
    with pytest.raises(ValueError, match="model_ids"):
        run(store.delete_models(["model-1", ""]))
    with pytest.raises(ValueError, match="negative"):
        run(store.list_models(limit=-1))
    with pytest.raises(ValueError, match="negative"):
        run(store.list_models(offset=-1))
    with pytest.raises(ValueError, match="model_id"):
        run(store.get_model("nul\x00"))
    with pytest.raises(ValueError, match="model_id"):
        run(store.update_model("", model_name="x"))
    assert run(store.list_models()) == [make_model(1)]


# --- update ------------------------------------------------------------------------------------------


def test_update_changes_only_the_named_fields(store: Store, run: Run[Any]) -> None:
    run(store.insert_model(FULL))
    run(store.insert_model(make_model(2)))
    new_params = {**PARAMS, "api_base": "https://other.example", "extra_body": {"a": {"b": {"c": [None]}}}}
    changed = run(store.update_model("model-1", model_name="gpt-4o-eu", litellm_params=new_params))
    assert changed is not None and changed.updated_at > FULL.updated_at
    expected = dataclasses.replace(
        FULL, model_name="gpt-4o-eu", litellm_params=new_params, updated_at=changed.updated_at
    )
    assert changed == expected and run(store.get_model("model-1")) == expected
    changed = run(store.update_model("model-1", model_info={}, created_by=None))
    assert changed is not None
    assert (changed.model_info, changed.created_by) == ({}, None)
    assert run(store.get_model("model-1")) == changed
    assert run(store.get_model("model-2")) == make_model(2)  # nothing else moved


def test_update_missing_unknown_immutable_and_invalid(store: Store, run: Run[Any]) -> None:
    run(store.insert_model(FULL))
    assert run(store.update_model("model-404", model_name="x")) is None
    with pytest.raises(ValueError, match="unknown model field: colour"):
        run(store.update_model("model-1", colour="red"))
    for field in ("model_id", "created_at", "updated_at"):
        with pytest.raises(ValueError, match=field):
            run(store.update_model("model-1", **{field: "x"}))
    for field, value in (
        ("model_name", ""),
        ("litellm_params", ["model", "x"]),
        ("litellm_params", {"k": "nul\x00"}),
        ("model_info", None),
        ("created_by", 1),
    ):
        with pytest.raises(ValueError, match=field):
            run(store.update_model("model-1", **{field: value}))
    assert run(store.get_model("model-1")) == FULL


# --- delete and list ---------------------------------------------------------------------------------


def test_delete_models_counts_what_existed(store: Store, run: Run[Any]) -> None:
    for n in range(1, 5):
        run(store.insert_model(make_model(n)))
    assert run(store.delete_models(["model-1", "model-3", "model-404", "model-1"])) == 2
    assert run(store.list_models()) == [make_model(2), make_model(4)]
    assert run(store.delete_models(["model-1"])) == 0
    assert run(store.delete_models([])) == 0
    assert run(store.delete_models(("model-2", "model-4"))) == 2
    assert run(store.list_models()) == []


def test_list_models_orders_and_paginates(store: Store, run: Run[Any]) -> None:
    same = T0 + timedelta(hours=1)
    records = [
        make_model(5),
        make_model(1),
        make_model(3),
        make_model(8, created_at=same),
        make_model(7, created_at=same),
        make_model(2, created_at=AWARE),
    ]
    for record in records:
        run(store.insert_model(record))
    by_time = sorted(records, key=lambda m: (m.created_at, m.model_id))
    assert [m.model_id for m in by_time] == ["model-1", "model-3", "model-5", "model-7", "model-8", "model-2"]
    assert run(store.list_models()) == by_time
    assert run(store.list_models(limit=2)) == by_time[:2]
    assert run(store.list_models(limit=2, offset=2)) == by_time[2:4]
    assert run(store.list_models(offset=4)) == by_time[4:]
    assert run(store.list_models(offset=10)) == []
    assert run(store.list_models(limit=0)) == []


def test_list_models_default_limit_is_1000(store: Store, run: Run[Any], backend: Backend) -> None:
    many = [make_model(n) for n in range(1005)]

    async def insert_all() -> None:
        for record in many:
            await store.insert_model(record)

    run(insert_all())
    assert run(store.list_models()) == many[:1000]
    assert run(store.list_models(offset=1000)) == many[1000:]
    assert run(backend.fetch("SELECT COUNT(*) FROM models")) == [(1005,)]


# --- hostile values, concurrency ---------------------------------------------------------------------

HOSTILE = ("'; DROP TABLE models; --", "' OR '1'='1", 'x" OR "1"="1', "$1", "?", ":model_id", "%s", "\\'")


def test_sql_shaped_values_are_stored_verbatim(store: Store, run: Run[Any], backend: Backend) -> None:
    for n, text in enumerate(HOSTILE):
        record = make_model(
            n, model_id=text, model_name=text, litellm_params={text: text}, model_info={"n": [text]}, created_by=text
        )
        run(store.insert_model(record))
        assert run(store.get_model(text)) == record
        updated = run(store.update_model(text, model_name=text + "!"))
        assert updated is not None and updated.model_name == text + "!"
    assert run(store.get_model("' OR '1'='1 ")) is None
    assert run(store.delete_models(["' OR 1=1 --"])) == 0
    assert run(backend.fetch("SELECT COUNT(*) FROM models")) == [(len(HOSTILE),)]
    assert run(store.delete_models(list(HOSTILE))) == len(HOSTILE)
    assert run(backend.fetch("SELECT COUNT(*) FROM models")) == [(0,)]


def test_concurrent_duplicate_inserts_and_updates(store: Store, run: Run[Any]) -> None:
    run(store.insert_model(make_model(1)))

    async def race() -> list[Any]:
        inserts = (store.insert_model(make_model(9, model_name=f"try-{n}")) for n in range(5))
        updates = (store.update_model("model-1", model_info={"n": n}) for n in range(10))
        return await asyncio.gather(*inserts, *updates, return_exceptions=True)

    results = run(race())
    assert results[:5].count(None) == 1
    assert sum(isinstance(r, Conflict) and r.field == "model_id" for r in results[:5]) == 4
    assert all(isinstance(r, ModelRecord) for r in results[5:])
    final = run(store.get_model("model-1"))
    assert final is not None and final.model_info["n"] in range(10)


# --- migration 4 -------------------------------------------------------------------------------------

T1 = T0.isoformat()
V3_ROWS = (  # as version 3 wrote them: a key with most fields set, an organization and a team of it
    f"""INSERT INTO keys (
        token_hash, key_name, key_alias, user_id, team_id, models, max_budget, budget_duration, tpm_limit,
        rpm_limit, max_parallel_requests, metadata, blocked, expires, created_at, updated_at, spend
    ) VALUES (
        '{"c" * 64}', 'sk-...cccc', 'legacy', 'user-1', 'team-1', '["gpt-4o"]', 5.5, '30d', 1000, 60, 4,
        '{{"owner": "ops"}}', TRUE, NULL, '{T1}', '{T1}', 1.25
    )""",
    f"INSERT INTO organizations (organization_id, created_at, updated_at) VALUES ('org-1', '{T1}', '{T1}')",
    f"""INSERT INTO teams (
        team_id, team_alias, organization_id, models, max_budget, metadata, blocked, created_at, updated_at, spend
    ) VALUES ('team-1', 'red', 'org-1', '["gpt-4o"]', 100, '{{"k": 1}}', FALSE, '{T1}', '{T1}', 2.5)""",
)
LEGACY_KEY = KeyRecord(
    token_hash="c" * 64, key_name="sk-...cccc", key_alias="legacy", user_id="user-1", team_id="team-1",
    models=("gpt-4o",), max_budget=5.5, budget_duration="30d", tpm_limit=1000, rpm_limit=60,
    max_parallel_requests=4, metadata={"owner": "ops"}, blocked=True, expires=None, created_at=T0, updated_at=T0,
    spend=1.25,
)  # fmt: skip


def test_a_version_3_database_is_upgraded_with_defaults(backend: Backend, run: Run[Any]) -> None:
    make_old_database(backend, run, 3, *V3_ROWS)
    upgraded = run(backend.open())
    try:
        versions = [(v,) for v in range(1, migrations.LATEST_VERSION + 1)]
        assert run(backend.fetch("SELECT version FROM lockgate_schema ORDER BY version")) == versions
        key = run(upgraded.get_key("c" * 64))
        assert key == LEGACY_KEY  # every new field at its default
        assert key is not None and (key.aliases, key.allowed_routes, key.model_rpm_limit) == ({}, (), {})
        team = run(upgraded.get_team("team-1"))
        expected_team = make_team(
            0, team_id="team-1", team_alias="red", organization_id="org-1", models=("gpt-4o",), max_budget=100.0,
            metadata={"k": 1}, created_at=T0, updated_at=T0, spend=2.5,
        )  # fmt: skip
        assert team == expected_team and team is not None and team.model_aliases == {} and team.soft_budget is None
        assert run(upgraded.get_org("org-1")) == make_org(0, organization_id="org-1", created_at=T0, updated_at=T0)
        # The new columns are writable on the old rows, and the new table is there.
        changed = run(upgraded.update_key("c" * 64, aliases={"a": "gpt-4o"}, allowed_routes=("/x",), soft_budget=1))
        assert run(upgraded.get_key("c" * 64)) == changed
        assert run(upgraded.update_team("team-1", model_aliases={"b": "gpt-4o"})) == run(upgraded.get_team("team-1"))
        assert run(upgraded.list_models()) == []
        run(upgraded.insert_model(FULL))
        assert run(upgraded.list_models()) == [FULL]
    finally:
        run(upgraded.close())
