"""The spend ledger end to end: every request becomes one row of /spend/logs, /global/spend/report adds them up,
each caller sees only their own, and a gateway killed with SIGKILL loses none and doubles none.

The rows are written off the request path (within a second or so), so each test waits for them.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from lockgate.keys import hash_key
from tests.support import MASTER_KEY, GatewayProcess

CONFIG = """model_list:
  - model_name: demo
    litellm_params: {model: demo/echo}
general_settings:
  user_api_key_cache_ttl: 1
"""
TODAY = datetime.now(UTC).strftime("%Y-%m-%d")


def call(
    gw: GatewayProcess, caller: str, path: str, body: dict[str, Any] | None = None, **params: str
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {caller}"}
    if body is None:
        return httpx.get(gw.url + path, headers=headers, params=params, timeout=10)
    return httpx.post(gw.url + path, headers=headers, json=body, timeout=10)


def chat(gw: GatewayProcess, key: str, *, stream: bool = False) -> str:
    """One request; its request id."""
    body: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}
    if stream:
        body["stream"] = True
    answer = call(gw, key, "/v1/chat/completions", body)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-request-id"]


def wait_rows(gw: GatewayProcess, want: int, timeout: float = 10.0, **params: str) -> list[dict[str, Any]]:
    """/spend/logs (as the master key) once it holds ``want`` rows for ``params``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = call(gw, MASTER_KEY, "/spend/logs", **params)
        assert answer.status_code == 200, answer.text
        rows = answer.json()
        if len(rows) >= want or time.monotonic() > deadline:
            return list(rows)
        time.sleep(0.1)


@dataclass
class World:
    gw: GatewayProcess
    keys: dict[str, str]  # name -> key
    hashes: dict[str, str]  # name -> its hash
    ids: dict[str, str]  # user and team names -> ids
    requests: dict[str, list[str]]  # name -> request ids of its calls


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """Users alice (admin of team t) and bob (member of t), carol (not in t); keys: alice's own, bob's team key,
    carol's, and a key without an owner. Each key makes a known number of requests."""
    with GatewayProcess(CONFIG) as gw:
        suffix = uuid.uuid4().hex[:6]
        ids = {name: f"{name}-{suffix}" for name in ("alice", "bob", "carol", "t")}
        for name in ("alice", "bob", "carol"):
            assert call(gw, MASTER_KEY, "/user/new", {"user_id": ids[name]}).status_code == 200
        members = [{"user_id": ids["alice"], "role": "admin"}, {"user_id": ids["bob"], "role": "user"}]
        assert (
            call(gw, MASTER_KEY, "/team/new", {"team_id": ids["t"], "members_with_roles": members}).status_code == 200
        )
        keys, hashes = {}, {}
        for name, body in (
            ("alice", {"user_id": ids["alice"]}), ("bob", {"user_id": ids["bob"], "team_id": ids["t"]}),
            ("carol", {"user_id": ids["carol"]}), ("lone", {}),
        ):  # fmt: skip
            made = call(gw, MASTER_KEY, "/key/generate", body)
            assert made.status_code == 200, made.text
            keys[name], hashes[name] = made.json()["key"], made.json()["token"]
        counts = {"alice": 3, "bob": 2, "carol": 1, "lone": 2}
        requests = {name: [chat(gw, keys[name], stream=n == 0) for n in range(count)] for name, count in counts.items()}
        assert len(wait_rows(gw, sum(counts.values()))) == sum(counts.values()), gw.logs()[-3000:]
        yield World(gw, keys, hashes, ids, requests)


def test_each_request_is_one_row_in_litellms_shape(world: World) -> None:
    gw = world.gw
    rows = call(gw, MASTER_KEY, "/spend/logs", api_key=world.keys["alice"]).json()
    assert sorted(r["request_id"] for r in rows) == sorted(world.requests["alice"])
    for row in rows:
        assert row["api_key"] == world.hashes["alice"] and row["user"] == world.ids["alice"]
        assert row["model_group"] == "demo" and row["status"] == "success" and row["call_type"] == "acompletion"
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
        assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
        assert row["spend"] >= 0 and row["startTime"] <= row["endTime"]
        assert row["messages"] == {} and row["response"] == {}  # prompts are not stored by default
    assert sum(r["stream"] for r in rows) == 1
    # by the key's hash, by request id, newest first, in pages
    assert [r["request_id"] for r in call(gw, MASTER_KEY, "/spend/logs", api_key=world.hashes["alice"]).json()] == [
        r["request_id"] for r in rows
    ]
    one = call(gw, MASTER_KEY, "/spend/logs", request_id=world.requests["bob"][0]).json()
    assert len(one) == 1 and one[0]["team_id"] == world.ids["t"]
    page = call(gw, MASTER_KEY, "/spend/logs", api_key=world.keys["alice"], page="2", page_size="2").json()
    assert [r["request_id"] for r in page] == [rows[2]["request_id"]]
    assert call(gw, MASTER_KEY, "/spend/logs", start_date="2000-01-01", end_date="2000-01-02").json() == []
    assert len(call(gw, MASTER_KEY, "/spend/logs", start_date=TODAY, end_date=TODAY).json()) >= 8


def test_each_caller_sees_only_their_own(world: World) -> None:
    gw, keys, ids, reqs = world.gw, world.keys, world.ids, world.requests

    def seen(who: str, **params: str) -> set[str]:
        answer = call(gw, keys[who], "/spend/logs", **params)
        assert answer.status_code == 200, answer.text
        assert all("messages" not in r and "response" not in r for r in answer.json())  # admins only
        return {r["request_id"] for r in answer.json()}

    assert seen("alice") == set(reqs["alice"])
    assert seen("carol") == set(reqs["carol"])
    assert seen("lone") == set(reqs["lone"])  # a key without an owner: its own rows
    assert seen("alice", team_id=ids["t"]) == set(reqs["bob"])  # the admin of t sees its rows
    assert seen("bob", team_id=ids["t"]) == set(reqs["bob"])  # a member: only their own in it
    assert seen("carol", team_id=ids["t"]) == set()
    assert call(gw, keys["alice"], "/spend/logs", user_id=ids["bob"]).status_code == 403
    assert call(gw, keys["lone"], "/spend/logs", api_key=keys["alice"]).status_code == 403
    assert seen("carol", api_key=keys["alice"]) == set()  # a filter only narrows
    report = call(gw, keys["carol"], "/global/spend/report", start_date=TODAY, end_date=TODAY, group_by="api_key")
    assert report.status_code == 200 and [g["api_key"] for g in report.json()] == [world.hashes["carol"]]


def test_the_report_adds_up_and_exports_csv(world: World) -> None:
    gw = world.gw

    def report(**params: str) -> list[dict[str, Any]]:
        answer = call(gw, MASTER_KEY, "/global/spend/report", start_date=TODAY, end_date=TODAY, **params)
        assert answer.status_code == 200, answer.text
        return list(answer.json())

    by_key = {g["api_key"]: g for g in report(group_by="api_key")}
    assert {name: by_key[world.hashes[name]]["requests"] for name in world.keys} == {
        "alice": 3, "bob": 2, "carol": 1, "lone": 2,
    }  # fmt: skip
    by_team = {g["team_id"]: g["requests"] for g in report()}  # LiteLLM's default: by team
    assert by_team[world.ids["t"]] == 2 and by_team[None] >= 6
    (day,) = report(group_by="day")
    assert day["group_by_day"] == TODAY and day["requests"] >= 8
    assert day["spend"] == pytest.approx(sum(g["spend"] for g in by_key.values()))
    assert day["total_tokens"] == sum(g["total_tokens"] for g in by_key.values())
    assert report(group_by="model")[0]["model"] == "demo"
    exported = call(gw, MASTER_KEY, "/global/spend/report", start_date=TODAY, end_date=TODAY, group_by="api_key",
                    format="csv")  # fmt: skip
    assert exported.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["api_key"]: int(r["requests"]) for r in parsed} == {g: v["requests"] for g, v in by_key.items()}
    logs_csv = call(gw, MASTER_KEY, "/spend/logs", api_key=world.keys["bob"], format="csv")
    assert sorted(r["request_id"] for r in csv.DictReader(io.StringIO(logs_csv.text))) == sorted(world.requests["bob"])
    for bad in ({"group_by": "nope"}, {"format": "xml"}, {"end_date": "tomorrow"}):
        assert (
            call(gw, MASTER_KEY, "/global/spend/report", **{"start_date": TODAY, "end_date": TODAY, **bad}).status_code
            == 400
        )
    assert call(gw, MASTER_KEY, "/global/spend/report", start_date=TODAY).status_code == 400


def test_a_gateway_killed_with_sigkill_loses_no_row_and_doubles_none() -> None:
    with GatewayProcess(CONFIG) as gw:
        key = call(gw, MASTER_KEY, "/key/generate", {}).json()["key"]
        sent = [chat(gw, key, stream=n % 3 == 0) for n in range(30)]
        assert gw.proc is not None
        gw.proc.kill()  # SIGKILL: no shutdown, no final flush
        gw.proc.wait()
        gw.start()  # the same directory, database and spool
        rows = wait_rows(gw, len(sent), api_key=key, page_size="1000")
        assert sorted(r["request_id"] for r in rows) == sorted(sent), gw.logs()[-3000:]
        time.sleep(1.0)  # a late replay would show up as an extra row here
        assert len(call(gw, MASTER_KEY, "/spend/logs", api_key=key, page_size="1000").json()) == len(sent)


def test_budgets_and_the_ledger_are_one_set_of_numbers_across_a_sigkill() -> None:
    """Each request's spend is written with its ledger row (one transaction, once): after a SIGKILL and a
    restart, the key's spend, its budget window's spend and the sum of its rows are the same number, and the
    budget keeps counting from it (here in SQLite with the in-process limiter, which seeds from the database)."""
    priced = CONFIG.replace("{model: demo/echo}", "{model: demo/echo}\n    model_info: {input_cost_per_token: 0.001, "
                            "output_cost_per_token: 0.002}")  # fmt: skip
    with GatewayProcess(priced) as gw:
        key = call(gw, MASTER_KEY, "/key/generate", {"max_budget": 100, "budget_duration": "1d"}).json()["key"]
        sent = [chat(gw, key, stream=n % 2 == 0) for n in range(20)]
        assert gw.proc is not None
        gw.proc.kill()  # within the ledger's interval: most rows (and their spend) are only in the spool
        gw.proc.wait()
        gw.start()
        rows = wait_rows(gw, len(sent), api_key=hash_key(key), page_size="1000")
        assert sorted(r["request_id"] for r in rows) == sorted(sent)
        total = sum(r["spend"] for r in rows)
        info = call(gw, MASTER_KEY, "/key/info", key=key).json()["info"]
        assert total > 0 and info["spend"] == pytest.approx(total, rel=1e-9, abs=1e-12)
        remaining = float(chat_headers(gw, key)["x-lockgate-key-remaining-budget"])
        # seeded with the ledger's sum: what is left is 100 - total less this request's own reservation (~$0.014)
        assert 100 - total - 0.05 < remaining < 100 - total


def chat_headers(gw: GatewayProcess, key: str) -> httpx.Headers:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}
    answer = call(gw, key, "/v1/chat/completions", body)
    assert answer.status_code == 200, answer.text
    return answer.headers


def test_disable_spend_logs_writes_no_rows() -> None:
    config = CONFIG.replace("general_settings:\n", "general_settings:\n  disable_spend_logs: true\n")
    with GatewayProcess(config) as gw:
        request_id = chat(gw, MASTER_KEY)
        time.sleep(1.2)  # two ledger intervals
        assert call(gw, MASTER_KEY, "/spend/logs", request_id=request_id).json() == []
        assert not (gw.config_path.parent / "lockgate-spool").exists()
