"""The spend ledger (the LedgerStore; migration 6): one row per request, idempotent by request_id, once per backend."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from lockgate.storage import SPEND_LOG_FIELDS, SpendDelta, SpendLogRow, Store, migrations
from lockgate.storage.base import spend_log_values
from tests.storage.conftest import Backend, Run, make_old_database
from tests.storage.test_directory_contract import make_key, make_org, make_user

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
KEY = make_key(1)
TH = KEY.token_hash


def make_row(n: int, **fields: Any) -> SpendLogRow:
    values: dict[str, Any] = {"request_id": f"req-{n:04d}", "started_at": T0 + timedelta(seconds=n)}
    values.update(fields)
    return SpendLogRow(**values)


FULL = SpendLogRow(
    request_id="chatcmpl-ünï-1",
    started_at=datetime(2026, 3, 2, 1, 30, 0, 654321, tzinfo=timezone(timedelta(hours=5))),  # 2026-03-01 UTC
    key_hash="a" * 64,
    key_alias="alice's key",
    user_id="user-1",
    team_id="team-1",
    organization_id="org-1",
    end_user="customer-1",
    model="gpt-4o-mini",
    model_group="gpt",
    deployment_id="dep-1",
    provider="openai",
    prompt_tokens=1200,
    completion_tokens=345,
    cache_read_tokens=1000,
    cache_write_tokens=7,
    reasoning_tokens=100,
    total_tokens=1545,
    cost=0.0123456789,
    cost_estimated=True,
    latency_ms=812.5,
    ttft_ms=95.25,
    status=499,
    error_type="client_disconnected",
    stream=True,
    client_disconnected=True,
    route="/v1/chat/completions",
    metadata={"tags": ["a", "b"], "nested": {"x": 1.5, "y": None}, "ünï": "çødé"},
    messages=[{"role": "user", "content": "hi 🌍"}],
    response={"choices": [{"message": {"role": "assistant", "content": "hello"}}]},
)


def _count(backend: Backend, run: Run[Any]) -> int:
    return int(run(backend.fetch("SELECT COUNT(*) FROM spend_logs"))[0][0])


# --- writing and reading -----------------------------------------------------------------------------


def test_every_field_round_trips(store: Store, run: Run[Any]) -> None:
    bare = make_row(1)  # every optional field at its default
    assert run(store.insert_spend_logs([FULL, bare])) == 2
    got = run(store.list_spend_logs(request_id=FULL.request_id))
    assert got == [FULL]
    assert got[0].started_at.utcoffset() is not None and type(got[0].cost) is float
    assert run(store.list_spend_logs(request_id=bare.request_id)) == [bare]
    stored = run(store.list_spend_logs(request_id=bare.request_id))[0]
    assert stored.messages is None and stored.response is None and stored.metadata == {} and stored.ttft_ms is None
    # JSON null inside a document is not SQL NULL
    run(store.insert_spend_logs([make_row(2, messages=[None], response={"x": None})]))
    assert run(store.list_spend_logs(request_id="req-0002"))[0].messages == [None]


def test_columns_are_the_records_fields_in_order(backend: Backend, store: Store, run: Run[Any]) -> None:
    if backend.name == "sqlite":
        columns = [row[1] for row in run(backend.fetch("PRAGMA table_info(spend_logs)"))]
    else:
        columns = [
            row[0]
            for row in run(
                backend.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'spend_logs' "
                    "AND table_schema = current_schema() ORDER BY ordinal_position"
                )
            )
        ]
    assert tuple(columns) == SPEND_LOG_FIELDS


def test_insert_is_idempotent_by_request_id(store: Store, run: Run[Any], backend: Backend) -> None:
    assert run(store.insert_spend_logs([])) == 0
    first = make_row(1, cost=1.0)
    assert run(store.insert_spend_logs([first, make_row(1, cost=9.0), make_row(2)])) == 2  # repeated in one batch
    assert run(store.insert_spend_logs([first, make_row(2)])) == 0  # a replayed batch
    assert run(store.insert_spend_logs([make_row(2), make_row(3), make_row(3), make_row(4)])) == 2  # mixed
    assert _count(backend, run) == 4
    # the first write wins: a replay never changes a stored row
    assert run(store.list_spend_logs(request_id="req-0001")) == [first]


def test_insert_spend_log_values_is_insert_spend_logs_for_checked_rows(
    store: Store, run: Run[Any], backend: Backend
) -> None:
    """The ledger's fast path: rows checked and converted once (spend_log_values), written as insert_spend_logs
    would write them, idempotent the same way; many rows (more than one executemany chunk) in one call."""
    assert run(store.insert_spend_log_values([])) == 0
    rows = [
        FULL,
        make_row(1, cost=1, latency_ms=2, ttft_ms=3),
        *(make_row(n, metadata={"n": n}) for n in range(2, 200)),
    ]
    values = [spend_log_values(row) for row in rows]
    assert spend_log_values(make_row(1, cost=1.0)) == spend_log_values(make_row(1, cost=1))  # floats as floats
    assert run(store.insert_spend_log_values([*values, spend_log_values(make_row(1, cost=9.0))])) == 200
    assert run(store.insert_spend_log_values(values[:50])) == 0  # a replayed batch
    assert _count(backend, run) == 200
    assert run(store.list_spend_logs(request_id=FULL.request_id)) == [FULL]
    stored = run(store.list_spend_logs(request_id="req-0001"))[0]
    assert stored == make_row(1, cost=1.0, latency_ms=2.0, ttft_ms=3.0) and type(stored.cost) is float
    assert run(store.list_spend_logs(request_id="req-0150"))[0] == make_row(150, metadata={"n": 150})


def test_concurrent_replays_write_each_row_once(store: Store, run: Run[Any], backend: Backend) -> None:
    """Overlapping batches from two stores at once (two workers replaying the same spool): each row once."""
    other = run(backend.open())
    try:

        async def race() -> list[Any]:
            batches = [[make_row(n) for n in range(start, start + 30)] for start in (0, 10, 20, 0, 15)]
            calls = [(store if i % 2 else other).insert_spend_logs(batch) for i, batch in enumerate(batches)]
            return await asyncio.gather(*calls, return_exceptions=True)

        results = run(race())
    finally:
        run(other.close())
    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == 50 and _count(backend, run) == 50


def test_sql_shaped_values_are_stored_verbatim(store: Store, run: Run[Any], backend: Backend) -> None:
    evil = "x'); DROP TABLE spend_logs; --"
    run(store.insert_spend_logs([make_row(1, request_id=evil, key_hash=evil, team_id="%", model_group="_")]))
    assert [r.request_id for r in run(store.list_spend_logs(key_hash=evil))] == [evil]
    assert run(store.list_spend_logs(team_id="%%")) == [] and run(store.list_spend_logs(model_group="%")) == []
    assert len(run(store.list_spend_logs(team_id="%"))) == 1  # no pattern matching
    assert _count(backend, run) == 1


# --- listing -----------------------------------------------------------------------------------------


def _varied(store: Store, run: Run[Any]) -> list[SpendLogRow]:
    rows = [
        make_row(n, key_hash=f"key-{n % 3}", user_id=f"user-{n % 2}", team_id=None if n % 4 == 0 else f"team-{n % 4}",
                 model_group="gpt" if n < 6 else "claude")
        for n in range(12)
    ]  # fmt: skip
    assert run(store.insert_spend_logs(rows)) == 12
    return rows


def test_list_filters(store: Store, run: Run[Any]) -> None:
    rows = _varied(store, run)

    def ids(**filters: Any) -> list[str]:
        return [r.request_id for r in run(store.list_spend_logs(**filters))]

    def expect(keep: Any) -> list[str]:
        return [r.request_id for r in reversed(rows) if keep(r)]

    assert ids() == expect(lambda r: True)
    assert ids(key_hash="key-1") == expect(lambda r: r.key_hash == "key-1")
    assert ids(user_id="user-0") == expect(lambda r: r.user_id == "user-0")
    assert ids(team_id="team-2") == expect(lambda r: r.team_id == "team-2")
    assert ids(model_group="claude") == expect(lambda r: r.model_group == "claude")
    assert ids(request_id="req-0007") == ["req-0007"] and ids(request_id="nope") == []
    assert ids(key_hash="key-0", user_id="user-1", model_group="claude") == expect(
        lambda r: r.key_hash == "key-0" and r.user_id == "user-1" and r.model_group == "claude"
    )
    # [start, end): start included, end excluded; bounds in any time zone
    start, end = T0 + timedelta(seconds=3), T0 + timedelta(seconds=7)
    assert ids(start=start, end=end) == ["req-0006", "req-0005", "req-0004", "req-0003"]
    plus_two = timezone(timedelta(hours=2))
    assert ids(start=start.astimezone(plus_two), end=end.astimezone(plus_two)) == ids(start=start, end=end)
    assert ids(start=T0 + timedelta(seconds=10)) == ["req-0011", "req-0010"]
    assert ids(end=T0 + timedelta(seconds=1)) == ["req-0000"]
    assert ids(start=end, end=start) == []


def test_list_pages_newest_first(store: Store, run: Run[Any]) -> None:
    same_time = [make_row(n, started_at=T0) for n in (7, 3, 9)]  # ties: request_id descending
    run(store.insert_spend_logs([*same_time, *(make_row(n) for n in range(10, 30))]))
    pages = [run(store.list_spend_logs(limit=10, offset=offset)) for offset in (0, 10, 20)]
    assert [len(p) for p in pages] == [10, 10, 3]
    got = [r.request_id for page in pages for r in page]
    assert got == [f"req-{n:04d}" for n in range(29, 9, -1)] + ["req-0009", "req-0007", "req-0003"]
    assert run(store.list_spend_logs(limit=0)) == []
    assert run(store.list_spend_logs(limit=5, offset=100)) == []


# --- reports -----------------------------------------------------------------------------------------

DAY1, DAY2 = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
START, END = DAY1, datetime(2026, 3, 3, tzinfo=UTC)
PLUS_FIVE = timezone(timedelta(hours=5))
REPORT_ROWS = [
    SpendLogRow("r1", DAY1 + timedelta(hours=1), key_hash="A", team_id="T1", user_id="U1", end_user="C1",
                model_group="gpt", provider="openai", prompt_tokens=10, completion_tokens=5, total_tokens=15, cost=0.5),
    SpendLogRow("r2", DAY2 + timedelta(hours=23, minutes=59), key_hash="A", team_id="T1", user_id="U1",
                model_group="gpt", provider="openai", prompt_tokens=20, completion_tokens=10, total_tokens=30,
                cost=1.25),
    # 01:00 on 2 March at +05:00 is 20:00 on 1 March in UTC: days are UTC days
    SpendLogRow("r3", datetime(2026, 3, 2, 1, 0, tzinfo=PLUS_FIVE), key_hash="B", team_id="T2", user_id="U2",
                end_user="C1", model_group="claude", provider="anthropic", prompt_tokens=100, completion_tokens=50,
                total_tokens=150, cost=2.0),
    SpendLogRow("r4", DAY2, key_hash="C", model_group="claude", provider="anthropic", prompt_tokens=1,
                completion_tokens=1, total_tokens=2, cost=0.25),
    SpendLogRow("r5", END, key_hash="A", team_id="T1", user_id="U1", model_group="gpt", provider="openai",
                prompt_tokens=1000, total_tokens=1000, cost=100.0),  # at the end: excluded
    SpendLogRow("r6", START - timedelta(microseconds=1), key_hash="A", team_id="T1", user_id="U1",
                model_group="gpt", provider="openai", prompt_tokens=1000, total_tokens=1000, cost=100.0),  # before
]  # fmt: skip


def _group(group: Any, requests: int, prompt: int, completion: int, total: int, cost: float) -> dict[str, Any]:
    return {"group": group, "requests": requests, "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": total, "cost": cost}  # fmt: skip


R1_R2 = (2, 30, 15, 45, 1.75)
R3_R4 = (2, 101, 51, 152, 2.25)
EXPECTED: dict[str, list[dict[str, Any]]] = {  # worked out by hand from REPORT_ROWS
    "day": [_group("2026-03-01", 2, 110, 55, 165, 2.5), _group("2026-03-02", 2, 21, 11, 32, 1.5)],
    "key": [_group("B", 1, 100, 50, 150, 2.0), _group("A", *R1_R2), _group("C", 1, 1, 1, 2, 0.25)],
    "team": [_group("T2", 1, 100, 50, 150, 2.0), _group("T1", *R1_R2), _group(None, 1, 1, 1, 2, 0.25)],
    "user": [_group("U2", 1, 100, 50, 150, 2.0), _group("U1", *R1_R2), _group(None, 1, 1, 1, 2, 0.25)],
    "end_user": [_group("C1", 2, 110, 55, 165, 2.5), _group(None, 2, 21, 11, 32, 1.5)],
    "model": [_group("claude", *R3_R4), _group("gpt", *R1_R2)],
    "provider": [_group("anthropic", *R3_R4), _group("openai", *R1_R2)],
}


@pytest.mark.parametrize("group_by", sorted(EXPECTED))
def test_report_groups(store: Store, run: Run[Any], group_by: Any) -> None:
    run(store.insert_spend_logs(REPORT_ROWS))
    got = run(store.spend_report(start=START, end=END, group_by=group_by))
    assert got == EXPECTED[group_by]
    for row in got:
        assert type(row["requests"]) is int and type(row["total_tokens"]) is int and type(row["cost"]) is float


def test_report_filters_and_ties(store: Store, run: Run[Any]) -> None:
    run(store.insert_spend_logs(REPORT_ROWS))
    report = store.spend_report
    assert run(report(start=START, end=END, group_by="day", key_hash="A")) == [
        _group("2026-03-01", 1, 10, 5, 15, 0.5),
        _group("2026-03-02", 1, 20, 10, 30, 1.25),
    ]
    assert run(report(start=START, end=END, group_by="model", team_id="T1")) == [_group("gpt", *R1_R2)]
    assert run(report(start=START, end=END, group_by="provider", user_id="U2")) == [
        _group("anthropic", 1, 100, 50, 150, 2.0)
    ]
    assert run(report(start=START, end=END, group_by="key", team_id="T1", user_id="U2")) == []
    assert run(report(start=DAY2, end=END, group_by="key", key_hash="A")) == [_group("A", 1, 20, 10, 30, 1.25)]
    assert run(report(start=END, end=START, group_by="day")) == []
    # equal cost: by value, None last
    at = DAY2 + timedelta(hours=1)
    run(store.insert_spend_logs([make_row(n, started_at=at, team_id=team, cost=1.0) for n, team in
                                 ((1, "t-b"), (2, None), (3, "t-a"))]))  # fmt: skip
    got = run(report(start=at, end=at + timedelta(seconds=1), group_by="team"))
    assert [g["group"] for g in got] == ["t-a", "t-b", None]


def test_report_on_an_empty_ledger(store: Store, run: Run[Any]) -> None:
    for group_by in EXPECTED:
        assert run(store.spend_report(start=START, end=END, group_by=group_by)) == []  # type: ignore[arg-type]


# --- retention ---------------------------------------------------------------------------------------


def test_delete_spend_logs_before(store: Store, run: Run[Any]) -> None:
    run(store.insert_spend_logs([make_row(n) for n in range(10)]))
    assert run(store.delete_spend_logs_before(T0 + timedelta(seconds=4))) == 4  # strictly before
    assert [r.request_id for r in run(store.list_spend_logs())][-1] == "req-0004"
    assert run(store.delete_spend_logs_before(T0)) == 0
    assert run(store.delete_spend_logs_before((T0 + timedelta(days=1)).astimezone(PLUS_FIVE))) == 6
    assert run(store.list_spend_logs()) == []
    # a deleted request_id may be written again (retention is not a tombstone)
    assert run(store.insert_spend_logs([make_row(1)])) == 1


def test_clear_spend_log_content(store: Store, run: Run[Any], backend: Backend) -> None:
    canary = "prompt-canary-7f3a9c"
    content = {"messages": [{"role": "user", "content": canary * 200}], "response": {"content": canary}}
    rows = [make_row(n, cost=0.5, **(content if n % 2 == 0 else {})) for n in range(10)]
    rows.append(make_row(10, messages=[canary]))  # a prompt without an answer
    run(store.insert_spend_logs(rows))
    before = T0 + timedelta(seconds=6)
    assert run(store.clear_spend_log_content(before)) == 3  # req-0000, -0002, -0004: strictly before, with content
    assert run(store.clear_spend_log_content(before)) == 0  # idempotent: nothing is left to clear
    by_id = {r.request_id: r for r in run(store.list_spend_logs())}
    assert len(by_id) == 11  # no row is deleted
    for n in range(10):
        row = by_id[f"req-{n:04d}"]
        assert (row.messages is None) == (row.response is None) == (n < 6 or n % 2 == 1), n
        assert row.cost == 0.5 and row.started_at == T0 + timedelta(seconds=n)  # the rest of the row stays
    assert by_id["req-0006"].messages == content["messages"] and by_id["req-0010"].messages == [canary]
    # a window: only rows at or after ``after``
    later = T0 + timedelta(seconds=20)
    assert run(store.clear_spend_log_content(later, after=T0 + timedelta(seconds=8))) == 2  # req-0008, req-0010
    assert run(store.list_spend_logs(request_id="req-0006"))[0].messages == content["messages"]
    assert run(store.clear_spend_log_content(later.astimezone(PLUS_FIVE))) == 1  # req-0006
    assert all(r.messages is None and r.response is None for r in run(store.list_spend_logs()))
    if backend.name == "sqlite":  # secure_delete and a checkpoint: the cleared text is gone from the files too
        assert canary.encode() not in run(backend.dump())


# --- refusals ----------------------------------------------------------------------------------------

BAD_ROWS: list[dict[str, Any]] = [
    {"prompt_tokens": -1},
    {"total_tokens": 2**63},
    {"completion_tokens": True},
    {"reasoning_tokens": 1.0},
    {"cache_read_tokens": None},
    {"cost": math.nan},
    {"cost": math.inf},
    {"cost": -0.01},
    {"cost": 10**400},
    {"cost": "0.5"},
    {"latency_ms": math.nan},
    {"ttft_ms": -1.0},
    {"started_at": datetime(2026, 3, 1, 12, 0)},  # naive
    {"started_at": "2026-03-01T12:00:00Z"},
    {"request_id": ""},
    {"request_id": None},
    {"request_id": "a\x00b"},
    {"key_hash": 5},
    {"team_id": "t\x00"},
    {"status": 1000},
    {"status": -1},
    {"status": "200"},
    {"stream": 1},
    {"cost_estimated": None},
    {"route": None},
    {"metadata": None},
    {"metadata": ["not", "a", "dict"]},
    {"metadata": {"bad": {1, 2}}},  # not JSON
    {"messages": [{"content": object()}]},
    {"response": {"text": "nul \x00"}},
]


@pytest.mark.parametrize("fields", BAD_ROWS, ids=lambda fields: next(iter(fields)))
def test_invalid_rows_write_nothing(store: Store, run: Run[Any], backend: Backend, fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(fields))):
        run(store.insert_spend_logs([make_row(1), make_row(2, **fields)]))
    assert _count(backend, run) == 0


def test_invalid_arguments(store: Store, run: Run[Any]) -> None:
    naive = datetime(2026, 3, 1)
    for call in (
        lambda: store.insert_spend_logs("req-1"),  # type: ignore[arg-type]
        lambda: store.insert_spend_logs([dataclasses.asdict(make_row(1))]),  # type: ignore[list-item]
        lambda: store.list_spend_logs(start=naive),
        lambda: store.list_spend_logs(end=naive),
        lambda: store.list_spend_logs(key_hash=""),
        lambda: store.list_spend_logs(user_id=5),  # type: ignore[arg-type]
        lambda: store.list_spend_logs(limit=-1),
        lambda: store.list_spend_logs(offset=-1),
        lambda: store.spend_report(start=naive, end=END, group_by="day"),
        lambda: store.spend_report(start=START, end="2026-03-03", group_by="day"),  # type: ignore[arg-type]
        lambda: store.spend_report(start=START, end=END, group_by="key_hash"),  # type: ignore[arg-type]
        lambda: store.spend_report(start=START, end=END, group_by="day; DROP TABLE spend_logs"),  # type: ignore[arg-type]
        lambda: store.spend_report(start=START, end=END, group_by="team", team_id=""),
        lambda: store.delete_spend_logs_before(naive),
        lambda: store.delete_spend_logs_before("2026-03-01"),  # type: ignore[arg-type]
        lambda: store.clear_spend_log_content(naive),
        lambda: store.clear_spend_log_content(END, after=naive),
        lambda: store.clear_spend_log_content("2026-03-01"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError):
            run(call())


# --- migration 6 -------------------------------------------------------------------------------------

T1 = T0.isoformat()
V5_ROWS = (  # as version 5 left them: a key with spend, and a budget window
    f"""INSERT INTO keys (token_hash, key_name, user_id, created_at, updated_at, spend)
        VALUES ('{"d" * 64}', 'sk-...dddd', 'user-1', '{T1}', '{T1}', 1.5)""",
    f"INSERT INTO budget_spend (scope, window_id, spent, updated_at) VALUES ('key:abc', '', 2.5, '{T1}')",
)


def test_a_version_5_database_is_upgraded_to_6(backend: Backend, run: Run[Any]) -> None:
    make_old_database(backend, run, 5, *V5_ROWS)
    upgraded = run(backend.open())
    try:
        versions = run(backend.fetch("SELECT version FROM lockgate_schema ORDER BY version"))
        assert versions == [(v,) for v in range(1, migrations.LATEST_VERSION + 1)] and (6,) in versions
        assert _count(backend, run) == 0
        key = run(upgraded.get_key("d" * 64))
        assert key is not None and key.spend == 1.5
        assert run(upgraded.window_spend("key:abc", "")) == 2.5
        assert run(upgraded.insert_spend_logs([FULL])) == 1
        run(upgraded.add_spend([SpendDelta("key:abc", "", 0.5)]))
        assert run(upgraded.window_spend("key:abc", "")) == 3.0
    finally:
        run(upgraded.close())
    reopened = run(backend.open())  # opening again applies nothing and keeps the rows
    try:
        assert run(reopened.list_spend_logs()) == [FULL]
    finally:
        run(reopened.close())


# --- charges: the spend a row adds, in the row's transaction ------------------------------------------


def _charge(amount: float) -> Any:
    return ((SpendDelta("key:" + TH, "1d@0", amount),), (("key", TH, amount),))


def test_a_new_rows_charge_is_added_once(store: Store, run: Run[Any], backend: Backend) -> None:
    """The budget and owner spend of a request are written with its row: a replayed row (a crash's spool, read
    again) charges nothing, nor does a row repeated in one batch; a charge for a row not in the batch is ignored."""
    run(store.insert_org(make_org(1)))
    run(store.insert_user(make_user(1), KEY))
    rows = [spend_log_values(make_row(n, cost=0.25)) for n in range(3)]
    charges = {"req-0000": _charge(0.25), "req-0001": _charge(0.25), "req-9999": _charge(100.0)}
    assert run(store.insert_spend_log_values([*rows, rows[0]], charges)) == 3
    assert run(store.window_spend("key:" + TH, "1d@0")) == 0.5
    assert run(store.insert_spend_log_values(rows, charges)) == 0  # replayed: no new row, no new charge
    rows.append(spend_log_values(make_row(3)))
    assert run(store.insert_spend_log_values(rows, {**charges, "req-0003": _charge(1.0)})) == 1
    assert run(store.window_spend("key:" + TH, "1d@0")) == 1.5
    key = run(store.get_key(TH))
    assert key is not None and key.spend == 1.5


def test_a_bad_charge_writes_nothing(store: Store, run: Run[Any], backend: Backend) -> None:
    bad = ((SpendDelta("key:x", "1d@0", -1.0),), ())
    with pytest.raises(ValueError):
        run(store.insert_spend_log_values([spend_log_values(make_row(1))], {"req-0001": bad}))
    assert _count(backend, run) == 0


def test_concurrent_replays_charge_each_row_once(store: Store, run: Run[Any], backend: Backend) -> None:
    """Two instances replaying overlapping spools at once: each row stored once, and charged once."""
    run(store.insert_org(make_org(1)))
    run(store.insert_user(make_user(1), KEY))
    other = run(backend.open())
    try:

        async def race() -> list[Any]:
            batches = [list(range(start, start + 30)) for start in (0, 10, 20, 0, 15)]
            calls = [
                (store if i % 2 else other).insert_spend_log_values(
                    [spend_log_values(make_row(n)) for n in batch], {f"req-{n:04d}": _charge(0.5) for n in batch}
                )
                for i, batch in enumerate(batches)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

        results = run(race())
    finally:
        run(other.close())
    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == 50 and run(store.window_spend("key:" + TH, "1d@0")) == 25.0
