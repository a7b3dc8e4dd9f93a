"""A team's per-model limits (issue 6): ``model_rpm_limit`` / ``model_tpm_limit`` / ``model_max_budget`` set through
``/team/new`` and ``/team/update``, shown by ``/team/info``, shared by every key of the team, and an old database
upgraded under a real gateway process."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_limits import PRICED, admin, chat
from tests.storage.conftest import SqliteBackend, make_old_database
from tests.support import GatewayProcess

CONFIG = f"""model_list:
  - model_name: demo
    litellm_params: {{model: demo/echo}}
    {PRICED}
  - model_name: other
    litellm_params: {{model: demo/other}}
    {PRICED}
general_settings:
  user_api_key_cache_ttl: 1
"""


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG) as gw:
        yield gw


def team_keys(gw: GatewayProcess, team: dict[str, object], n: int) -> list[str]:
    made = admin(gw, "/team/new", team)
    assert made.status_code == 200, made.text
    return [admin(gw, "/key/generate", {"team_id": made.json()["team_id"]}).json()["key"] for _ in range(n)]


def team_spend(gw: GatewayProcess, team_id: str, timeout: float = 5.0) -> float:
    """The team's recorded spend, once it is written (the spend is written about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        spend = float(admin(gw, "/team/info", team_id=team_id).json()["team_info"]["spend"])
        if spend > 0 or time.monotonic() > deadline:
            return spend
        time.sleep(0.1)


def test_a_team_model_rpm_limit_is_shared_by_the_team_s_keys(gateway: GatewayProcess) -> None:
    first, second = team_keys(gateway, {"model_rpm_limit": {"demo": 2}}, 2)
    assert chat(gateway, first).status_code == 200
    assert chat(gateway, second).status_code == 200
    for key in (first, second):  # a third request within the minute, from either key
        refused = chat(gateway, key)
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert "the team's limit of 2 requests per minute for the model demo" in error["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert [chat(gateway, key, "other").status_code for key in (first, second, first)] == [200, 200, 200]
    stranger = admin(gateway, "/key/generate", {}).json()["key"]  # another team's limit is not this key's
    assert chat(gateway, stranger).status_code == 200


def test_a_team_model_tpm_limit_counts_tokens(gateway: GatewayProcess) -> None:
    (key,) = team_keys(gateway, {"model_tpm_limit": {"other": 40}}, 1)
    codes = [chat(gateway, key, "other") for _ in range(10)]
    refused = next(a for a in codes if a.status_code != 200)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
    assert "team's limit of 40 tokens per minute for the model other" in refused.json()["error"]["message"]
    assert chat(gateway, key, "demo").status_code == 200


def test_a_team_model_budget_refuses_once_spent_and_survives_a_restart() -> None:
    with GatewayProcess(CONFIG) as gw:
        team = admin(gw, "/team/new", {"budget_duration": "1d", "model_max_budget": {"demo": 0.3}}).json()
        key = admin(gw, "/key/generate", {"team_id": team["team_id"]}).json()["key"]
        codes = [chat(gw, key).status_code for _ in range(8)]
        assert codes[0] == 200 and codes[-1] == 400, codes
        refused = chat(gw, key).json()["error"]
        assert refused["type"] == "budget_exceeded"
        assert "the team's budget of $0.3 for the model demo is spent" in refused["message"]
        assert "resets at" in refused["message"]  # the team's budget_duration is the window
        assert chat(gw, key, "other").status_code == 200  # another model of the team is not under it
        assert team_spend(gw, team["team_id"]) > 0  # the team's own spend is kept too
        gw.stop()  # the spend writer flushes at shutdown
        gw.start()
        assert chat(gw, key).status_code == 400  # the cold counter is seeded from the team's model window


def test_team_info_shows_the_fields_and_update_changes_them(gateway: GatewayProcess) -> None:
    limits = {"model_max_budget": {"demo": 2.5}, "model_rpm_limit": {"demo": 60}, "model_tpm_limit": {"other": 1000}}
    made = admin(gateway, "/team/new", {"team_alias": f"per-model-{uuid.uuid4().hex[:8]}", **limits})
    assert made.status_code == 200 and "x-lockgate-notice" not in made.headers
    team_id = made.json()["team_id"]
    assert {name: made.json()[name] for name in limits} == limits
    info = admin(gateway, "/team/info", team_id=team_id).json()["team_info"]
    assert {name: info[name] for name in limits} == limits
    updated = admin(gateway, "/team/update", {"team_id": team_id, "model_rpm_limit": {"demo": 1}})
    assert updated.status_code == 200 and updated.json()["model_rpm_limit"] == {"demo": 1}
    info = admin(gateway, "/team/info", team_id=team_id).json()["team_info"]
    assert info["model_rpm_limit"] == {"demo": 1} and info["model_max_budget"] == {"demo": 2.5}  # the rest kept
    listed = [t for t in admin(gateway, "/team/list", page_size="1000").json() if t["team_id"] == team_id]
    assert listed[0]["model_tpm_limit"] == {"other": 1000}


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("model_rpm_limit", {"demo": -1}, "non-negative integers"),
        ("model_rpm_limit", {"demo": 1.5}, "non-negative integers"),
        ("model_tpm_limit", {"demo": "10"}, "non-negative integers"),
        ("model_tpm_limit", {"": 10}, "name each model"),
        ("model_max_budget", {"demo": -0.5}, "non-negative numbers"),
        ("model_max_budget", {"demo": {"budget_limit": 1, "time_period": "1d"}}, "objects are not supported"),
        ("model_max_budget", [1], "wrong type"),
    ],
)
def test_bad_team_model_limits_are_refused(gateway: GatewayProcess, field: str, value: Any, says: str) -> None:
    made = admin(gateway, "/team/new", {field: value})
    assert made.status_code == 400 and says in made.json()["error"]["message"], made.text
    assert made.json()["error"]["param"] == field
    team_id = admin(gateway, "/team/new", {}).json()["team_id"]
    changed = admin(gateway, "/team/update", {"team_id": team_id, field: value})
    assert changed.status_code == 400 and says in changed.json()["error"]["message"]


def test_only_admins_set_a_team_s_model_limits(gateway: GatewayProcess) -> None:
    team_id = admin(gateway, "/team/new", {}).json()["team_id"]
    user = admin(gateway, "/user/new", {"user_id": f"u-{uuid.uuid4().hex[:8]}"}).json()
    admin(gateway, "/team/member_add", {"team_id": team_id, "member": {"user_id": user["user_id"], "role": "admin"}})
    headers = {"Authorization": f"Bearer {user['key']}"}
    body = {"team_id": team_id, "model_rpm_limit": {"demo": 1000}}
    assert httpx.post(gateway.url + "/team/update", headers=headers, json=body).status_code == 403
    info = admin(gateway, "/team/info", team_id=team_id).json()["team_info"]
    assert info["model_rpm_limit"] == {}


# --- an old database -------------------------------------------------------------------------------------

T0 = "2026-01-02T03:04:05.123456+00:00"
V6_TEAM = f"""INSERT INTO teams (team_id, team_alias, models, metadata, blocked, created_at, updated_at, spend,
    model_aliases) VALUES ('old-team', 'old', '[]', '{{}}', FALSE, '{T0}', '{T0}', 1.5, '{{"fast": "demo"}}')"""


def _version_6_database(path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        make_old_database(SqliteBackend(path), loop.run_until_complete, 6, V6_TEAM)
    finally:
        loop.close()


def test_a_version_6_database_is_upgraded_by_the_gateway() -> None:
    gw = GatewayProcess(CONFIG)
    database = gw.config_path.parent / "lockgate.db"  # lockgate.sqlite_path's default, beside the config
    _version_6_database(database)
    with gw:
        info = admin(gw, "/team/info", team_id="old-team").json()["team_info"]
        assert info["team_alias"] == "old" and info["spend"] == 1.5 and info["model_aliases"] == {"fast": "demo"}
        assert (info["model_max_budget"], info["model_rpm_limit"], info["model_tpm_limit"]) == ({}, {}, {})
        key = admin(gw, "/key/generate", {"team_id": "old-team"}).json()["key"]
        assert admin(gw, "/team/update", {"team_id": "old-team", "model_rpm_limit": {"demo": 1}}).status_code == 200
        assert chat(gw, key).status_code == 200
        refused = chat(gw, key)
        assert refused.status_code == 429 and "for the model demo" in refused.json()["error"]["message"]
        with sqlite3.connect(database) as conn:
            assert max(v for (v,) in conn.execute("SELECT version FROM lockgate_schema")) == 7
