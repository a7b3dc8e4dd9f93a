"""The spend API's pure parts: dates, pages, who sees which rows, LiteLLM's row shape, CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from lockgate.api.spend import (
    LOG_COLUMNS,
    decide_scope,
    parse_date,
    parse_page,
    report_row,
    to_csv,
    to_litellm,
)
from lockgate.auth import Principal
from lockgate.errors import BadRequest, PermissionDenied
from lockgate.keys import new_record
from lockgate.storage import SpendLogRow, UserRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def user(user_id: str, role: str) -> UserRecord:
    return UserRecord(
        user_id=user_id, user_alias=None, user_email=None, user_role=role, models=(), max_budget=None,
        budget_duration=None, tpm_limit=None, rpm_limit=None, metadata={}, created_at=T0, updated_at=T0,
    )  # fmt: skip


def principal(role: str | None, user_id: str = "alice") -> Principal:
    key = new_record("sk-" + user_id + "-0123456789abcdef", {"user_id": user_id if role else None})
    return Principal("key", key=key, user=user(user_id, role) if role else None)


ADMIN = Principal("master")
VIEWER = principal("proxy_admin_viewer", "vera")
ALICE = principal("internal_user", "alice")
CAROL = principal("internal_user_viewer", "carol")
LONE = principal(None, "lone")  # a key without an owner


# --- dates and pages -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "end", "expected"),
    [
        ("2026-03-01", False, datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01", True, datetime(2026, 3, 2, tzinfo=UTC)),  # the end date's whole day is included
        ("2026-02-28", True, datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T12:30:00Z", False, datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:00Z", True, datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),  # a time is taken as given
        ("2026-03-01T12:30:00+02:00", False, datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:00 02:00", False, datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),  # '+' decoded as a space
        ("2026-03-01T12:30:00", False, datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),  # no zone: UTC
        ("2026-03-01 12:30", False, datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_parse_date(value: str, end: bool, expected: datetime) -> None:
    got = parse_date(value, param="start_date", end=end)
    assert got == expected and got.utcoffset() is not None


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "2026-02-30", "01/03/2026", "2026-03-01T25:00", ""])
def test_parse_date_refuses(value: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_date(value, param="end_date")
    assert refused.value.param == "end_date"


def test_parse_page() -> None:
    assert parse_page({}) == (1, 100)
    assert parse_page({"page": "3", "page_size": "50"}) == (3, 50)
    assert parse_page({"page": "0", "page_size": "0"}) == (1, 1)
    assert parse_page({"page": "-2", "page_size": "100000"}) == (1, 1000)
    with pytest.raises(BadRequest):
        parse_page({"page": "two"})
    with pytest.raises(BadRequest):
        parse_page({"page_size": "1.5"})


# --- who sees what -------------------------------------------------------------------------------------


def scope(p: Principal, team_admin: bool = False, **asked: Any) -> tuple[Any, ...]:
    values = {"key_hash": None, "user_id": None, "team_id": None, **asked}
    got = decide_scope(p, team_admin=team_admin, **values)
    return got.key_hash, got.user_id, got.team_id, got.content


def test_admins_and_viewers_see_everything_only_admins_see_prompts() -> None:
    assert scope(ADMIN) == (None, None, None, True)
    assert scope(ADMIN, key_hash="h", user_id="bob", team_id="t") == ("h", "bob", "t", True)
    assert scope(VIEWER, user_id="bob") == (None, "bob", None, False)
    assert scope(Principal("open")) == (None, None, None, True)


def test_a_user_sees_their_own_rows() -> None:
    assert scope(ALICE) == (None, "alice", None, False)
    assert scope(ALICE, user_id="alice", key_hash="h") == ("h", "alice", None, False)
    assert scope(CAROL) == (None, "carol", None, False)  # a read-only user too
    with pytest.raises(PermissionDenied):
        scope(ALICE, user_id="bob")
    # a team they do not administer: their own rows in it
    assert scope(ALICE, team_id="t-eng") == (None, "alice", "t-eng", False)


def test_a_team_admin_sees_the_teams_rows() -> None:
    assert scope(ALICE, team_admin=True, team_id="t-eng") == (None, None, "t-eng", False)
    assert scope(ALICE, team_admin=True, team_id="t-eng", user_id="bob") == (None, "bob", "t-eng", False)
    with pytest.raises(PermissionDenied):  # team_admin is about team_id: without one, others' rows stay closed
        scope(ALICE, team_admin=True, user_id="bob")


def test_a_key_without_an_owner_sees_its_own_rows() -> None:
    assert LONE.key is not None
    own = LONE.key.token_hash
    assert scope(LONE) == (own, None, None, False)
    assert scope(LONE, key_hash=own, team_id="t") == (own, None, "t", False)
    with pytest.raises(PermissionDenied):
        scope(LONE, key_hash="f" * 64)
    with pytest.raises(PermissionDenied):
        scope(Principal("key"))


# --- LiteLLM's row shape -------------------------------------------------------------------------------

ROW = SpendLogRow(
    request_id="req-1", started_at=datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))),
    key_hash="a" * 64, key_alias="alice-key", user_id="alice", team_id="t-eng", organization_id="org",
    end_user="cust", model="gpt-4o-mini", model_group="gpt", deployment_id="dep-1", provider="openai",
    prompt_tokens=10, completion_tokens=5, cache_read_tokens=2, reasoning_tokens=1, total_tokens=15, cost=0.25,
    latency_ms=1500.0, ttft_ms=250.0, status=200, stream=True, route="/v1/chat/completions",
    metadata={"tags": ["x"], "user_api_key_alias": "spoofed"}, messages=[{"role": "user", "content": "secret"}],
    response={"id": "r"},
)  # fmt: skip


def test_a_row_in_litellms_shape() -> None:
    shown = to_litellm(ROW, content=False)
    assert {k: shown[k] for k in ("request_id", "call_type", "api_key", "spend", "prompt_tokens",
                                  "completion_tokens", "total_tokens", "model", "model_group", "model_id",
                                  "custom_llm_provider", "user", "team_id", "end_user", "status", "cache_hit",
                                  "request_tags", "api_base")} == {
        "request_id": "req-1", "call_type": "acompletion", "api_key": "a" * 64, "spend": 0.25, "prompt_tokens": 10,
        "completion_tokens": 5, "total_tokens": 15, "model": "gpt-4o-mini", "model_group": "gpt",
        "model_id": "dep-1", "custom_llm_provider": "openai", "user": "alice", "team_id": "t-eng",
        "end_user": "cust", "status": "success", "cache_hit": "False", "request_tags": ["x"], "api_base": "",
    }  # fmt: skip
    assert shown["startTime"] == "2026-03-01T12:00:00+00:00"
    assert shown["completionStartTime"] == "2026-03-01T12:00:00.250000+00:00"
    assert shown["endTime"] == "2026-03-01T12:00:01.500000+00:00"
    assert shown["metadata"]["user_api_key_alias"] == "alice-key"  # the row's metadata cannot override it
    assert "messages" not in shown and "response" not in shown
    with_content = to_litellm(ROW, content=True)
    assert with_content["messages"] == ROW.messages and with_content["response"] == {"id": "r"}


def test_defaults_in_litellms_shape() -> None:
    bare = to_litellm(SpendLogRow("req-2", T0, status=502, error_type="upstream_unavailable"), content=True)
    assert bare["status"] == "failure" and bare["status_code"] == 502 and bare["api_key"] == ""
    assert bare["endTime"] == bare["startTime"] == bare["completionStartTime"]  # no latency recorded
    assert bare["messages"] == {} and bare["response"] == {} and bare["request_tags"] == []
    assert bare["call_type"] == ""


def test_report_rows_use_litellms_group_names() -> None:
    group = {"group": "t-eng", "requests": 3, "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
             "cost": 0.5}  # fmt: skip
    assert report_row("team", group) == {"team_id": "t-eng", "spend": 0.5, "requests": 3, "prompt_tokens": 1,
                                         "completion_tokens": 2, "total_tokens": 3}  # fmt: skip
    assert "customer" in report_row("customer", group) and "group_by_day" in report_row("day", group)
    assert "api_key" in report_row("api_key", group)


# --- CSV -----------------------------------------------------------------------------------------------


def test_csv_export() -> None:
    rows = [to_litellm(ROW, content=False), to_litellm(SpendLogRow("req-2", T0, model="=HYPERLINK(1)"), content=False)]
    text = to_csv(LOG_COLUMNS, rows).decode()
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == list(LOG_COLUMNS) and len(parsed) == 3
    first = dict(zip(parsed[0], parsed[1], strict=True))
    assert first["request_id"] == "req-1" and first["spend"] == "0.25" and first["stream"] == "True"
    assert first["ttft_ms"] == "250.0" and first["error_type"] == ""
    assert first["metadata"].startswith("{") and '"tags":["x"]' in first["metadata"]
    assert dict(zip(parsed[0], parsed[2], strict=True))["model"] == "'=HYPERLINK(1)"  # not run as a formula
    assert "secret" not in text  # no prompt columns unless asked for
    assert to_csv(("a", "b"), []) == b"a,b\r\n"
