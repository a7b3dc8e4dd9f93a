"""The spend ledger: rows reach the store, survive a database outage and a crash, and are written exactly once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from lockgate.ledger import SpendLedger
from lockgate.storage import SpendLogRow, SpendLogValues, StorageError, Store, open_store
from lockgate.storage.base import Charge

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def row(n: int, **fields: Any) -> SpendLogRow:
    values: dict[str, Any] = {"key_hash": "k", "cost": 0.001, **fields}
    return SpendLogRow(f"req-{n:06d}", T0 + timedelta(microseconds=n), **values)


class Flaky:
    """A store that refuses every write while ``down`` (as a database that is unreachable would)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False
        self.attempts = 0
        self.hang = False

    async def insert_spend_logs(self, rows: Sequence[SpendLogRow]) -> int:
        self.attempts += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise StorageError("cannot connect to PostgreSQL: ConnectionRefusedError")
        return await self.store.insert_spend_logs(rows)

    async def insert_spend_log_values(
        self, rows: Sequence[SpendLogValues], charges: Mapping[str, Charge] | None = None
    ) -> int:
        self.attempts += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise StorageError("cannot connect to PostgreSQL: ConnectionRefusedError")
        return await self.store.insert_spend_log_values(rows, charges)


async def _stored(store: Store) -> list[str]:
    return sorted(r.request_id for r in await store.list_spend_logs(limit=1_000_000))


def with_store(tmp_path: Path, work: Callable[[Store], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await open_store(None, sqlite_path=tmp_path / "lockgate.db")
        try:
            await work(store)
        finally:
            await store.close()

    asyncio.run(main())


def _spool_files(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.iterdir()) if spool.exists() else []


# --- the normal path --------------------------------------------------------------------------------


def test_rows_reach_the_store_in_the_background(tmp_path: Path) -> None:
    spool = tmp_path / "spool"

    async def work(store: Store) -> None:
        ledger = SpendLedger(store, spool, interval=0.02, batch=7)
        await ledger.start()
        for n in range(100):
            ledger.record(row(n))
            if n % 10 == 0:
                await asyncio.sleep(0.005)
        deadline = time.monotonic() + 5
        while len(await _stored(store)) < 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert await _stored(store) == [f"req-{n:06d}" for n in range(100)]
        await ledger.close()
        assert ledger.stats["written"] == 100 and ledger.stats["duplicates"] == 0 and ledger.stats["in_memory"] == 0
        assert _spool_files(spool) == []  # nothing left behind
        assert (await store.list_spend_logs(request_id="req-000042"))[0] == row(42)

    with_store(tmp_path, work)


def test_rows_recorded_before_start_are_kept(tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        ledger = SpendLedger(store, tmp_path / "spool", interval=3600)
        ledger.record(row(1))  # the gateway may answer a request before the ledger has started
        await ledger.start()
        ledger.record(row(2))
        await ledger.close()
        assert await _stored(store) == ["req-000001", "req-000002"]

    with_store(tmp_path, work)


def test_the_spool_is_one_json_line_per_row_until_written(tmp_path: Path) -> None:
    spool = tmp_path / "spool"

    async def work(store: Store) -> None:
        ledger = SpendLedger(store, spool, interval=3600)
        await ledger.start()
        ledger.record(row(1))
        ledger.record(row(2, messages=[{"role": "user", "content": "ünï"}]))
        (name,) = _spool_files(spool)
        assert oct((spool / name).stat().st_mode & 0o777) == "0o600" and oct(spool.stat().st_mode & 0o777) == "0o700"
        lines = (spool / name).read_bytes().splitlines()
        assert [orjson.loads(line)[0] for line in lines] == ["req-000001", "req-000002"]
        await ledger.flush()
        assert await _stored(store) == ["req-000001", "req-000002"]
        assert not (spool / name).exists()
        await ledger.close()

    with_store(tmp_path, work)


def test_record_costs_microseconds(tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        ledger = SpendLedger(store, tmp_path / "spool", interval=3600)
        await ledger.start()
        rows = [row(n, metadata={"tags": ["a", "b"]}, model_group="gpt", user_id="u") for n in range(20_000)]
        began = time.perf_counter()
        for r in rows:
            ledger.record(r)
        per_row = (time.perf_counter() - began) / len(rows)
        assert per_row < 100e-6, f"record() took {per_row * 1e6:.1f} µs per row"
        await ledger.flush()
        assert len(await _stored(store)) == 20_000
        await ledger.close()

    with_store(tmp_path, work)


def test_a_row_the_database_would_refuse_is_repaired_not_lost(tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        ledger = SpendLedger(store, tmp_path / "spool", interval=3600)
        await ledger.start()
        ledger.record(row(1, metadata={"odd": {1, 2}}))  # not JSON: record() must not raise
        ledger.record(row(2, cost=float("nan"), prompt_tokens=-3))
        ledger.record(SpendLogRow("req-naive", datetime(2026, 3, 1, 12, 0), cost=0.5))
        ledger.record(row(3))
        await ledger.flush()
        got = {r.request_id: r for r in await store.list_spend_logs()}
        assert sorted(got) == ["req-000001", "req-000002", "req-000003", "req-naive"]
        assert got["req-000001"].metadata == {"lockgate_repaired": ["metadata"]}
        assert got["req-000002"].cost == 0.0 and got["req-000002"].prompt_tokens == 0
        assert got["req-000002"].metadata["lockgate_repaired"] == ["prompt_tokens", "cost"]
        assert got["req-naive"].started_at == T0 and got["req-naive"].cost == 0.5  # naive taken as UTC
        assert got["req-000003"] == row(3)
        assert ledger.stats["repaired"] == 3
        await ledger.close()

    with_store(tmp_path, work)


# --- the database down ------------------------------------------------------------------------------


def test_an_outage_loses_nothing_and_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = tmp_path / "spool"
    caplog.set_level(logging.INFO, logger="lockgate.ledger")

    async def work(store: Store) -> None:
        flaky = Flaky(store)
        ledger = SpendLedger(flaky, spool, interval=0.01, batch=50)
        await ledger.start()
        flaky.down = True
        for n in range(300):
            ledger.record(row(n))
            if n % 50 == 0:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert await _stored(store) == []
        # retried with backoff, not every 10 ms
        assert flaky.attempts < 20, flaky.attempts
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "did not take" in r.message]
        assert len(warnings) == 1 and "ConnectionRefusedError" in warnings[0].message
        flaky.down = False
        await ledger.flush()
        assert await _stored(store) == [f"req-{n:06d}" for n in range(300)]
        assert any(r.levelno == logging.INFO and "again" in r.message for r in caplog.records)
        await ledger.close()
        assert ledger.stats["written"] + ledger.stats["duplicates"] >= 300 and ledger.stats["dropped"] == 0

    with_store(tmp_path, work)


def test_memory_is_bounded_and_the_spool_holds_the_rest(tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        flaky = Flaky(store)
        flaky.down = True
        ledger = SpendLedger(flaky, tmp_path / "spool", interval=3600, batch=4, max_memory=10)
        await ledger.start()
        for n in range(25):
            ledger.record(row(n))
        await ledger.flush()  # fails: the first rows are sealed into a file that waits
        for n in range(25, 60):
            ledger.record(row(n))
            assert ledger.stats["in_memory"] <= 10
        await ledger.flush()
        assert ledger.stats["in_memory"] <= 10
        flaky.down = False
        await ledger.flush()
        assert await _stored(store) == [f"req-{n:06d}" for n in range(60)]
        assert ledger.stats["in_memory"] == 0 and ledger.stats["spool_files"] == 1  # the fresh active file
        await ledger.close()

    with_store(tmp_path, work)


def test_close_with_the_database_down_leaves_the_spool_for_the_next_start(tmp_path: Path) -> None:
    spool = tmp_path / "spool"

    async def work(store: Store) -> None:
        flaky = Flaky(store)
        flaky.down = True
        first = SpendLedger(flaky, spool, interval=3600, close_timeout=0.5)
        await first.start()
        for n in range(10):
            first.record(row(n))
        await first.close()
        assert len(_spool_files(spool)) == 1 and await _stored(store) == []
        second = SpendLedger(store, spool, interval=3600)
        await second.start()  # replays what the first left
        assert await _stored(store) == [f"req-{n:06d}" for n in range(10)]
        assert second.stats["written"] == 10
        await second.close()
        assert _spool_files(spool) == []

    with_store(tmp_path, work)


def test_close_is_bounded_when_the_database_hangs(tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        flaky = Flaky(store)
        ledger = SpendLedger(flaky, tmp_path / "spool", interval=0.01, close_timeout=0.3)
        await ledger.start()
        flaky.hang = True
        ledger.record(row(1))
        await asyncio.sleep(0.05)
        began = time.monotonic()
        await ledger.close()
        assert time.monotonic() - began < 1.5
        assert len(_spool_files(tmp_path / "spool")) == 1  # the row waits in the spool

    with_store(tmp_path, work)


def test_a_failing_spool_write_keeps_the_row_in_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def work(store: Store) -> None:
        ledger = SpendLedger(store, tmp_path / "spool", interval=3600)
        await ledger.start()
        ledger.record(row(1))
        active = ledger._active
        assert active is not None
        full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC, as on a full disk
        try:
            os.dup2(full, active.fd)
            for n in range(2, 6):
                ledger.record(row(n))  # never raises
            await ledger.flush()
        finally:
            os.close(full)
        assert await _stored(store) == [f"req-{n:06d}" for n in range(1, 6)]
        assert sum("cannot write the spool" in r.message for r in caplog.records) == 1
        await ledger.close()

    with_store(tmp_path, work)


# --- crashes ----------------------------------------------------------------------------------------

CRASH = """
import asyncio, os, signal, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from lockgate.ledger import SpendLedger
from lockgate.storage import SpendLogRow, open_store

spool, db, count, how = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class KilledAfterCommit:
    def __init__(self, store):
        self.store = store

    async def insert_spend_log_values(self, rows, charges=None):
        await self.store.insert_spend_log_values(rows, charges)
        os.kill(os.getpid(), signal.SIGKILL)  # committed, but the spool file is still there


async def main():
    store = await open_store(None, sqlite_path=db)
    ledger = SpendLedger(KilledAfterCommit(store) if how == "after-commit" else store, spool, interval=3600, batch=500)
    await ledger.start()
    for n in range(count):
        ledger.record(SpendLogRow(f"req-{n:06d}", T0 + timedelta(microseconds=n), cost=0.001),
                      ((("key:k", "", 0.001),), ()))
    if how == "after-commit":
        await ledger.flush()
    if how == "exit":
        os._exit(0)
    os.kill(os.getpid(), signal.SIGKILL)


asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["sigkill", "exit", "after-commit"])
def test_a_crash_loses_nothing_and_doubles_nothing(tmp_path: Path, how: str) -> None:
    spool, db, count = tmp_path / "spool", tmp_path / "lockgate.db", 1234
    done = subprocess.run([sys.executable, "-c", CRASH, str(spool), str(db), str(count), how], timeout=60, check=False)
    assert done.returncode == (0 if how == "exit" else -signal.SIGKILL)
    assert len(_spool_files(spool)) == (2 if how == "after-commit" else 1)  # after a flush, a new (empty) file

    async def work(store: Store) -> None:
        before = len(await _stored(store))
        assert before == (500 if how == "after-commit" else 0)  # the first batch was committed before the kill
        ledger = SpendLedger(store, spool, interval=3600)
        await ledger.start()
        assert await _stored(store) == [f"req-{n:06d}" for n in range(count)]
        assert ledger.stats["written"] == count - before and ledger.stats["duplicates"] == before
        assert await store.window_spend("key:k", "") == pytest.approx(count * 0.001, abs=1e-9)  # charged once
        await ledger.close()
        assert _spool_files(spool) == []
        again = SpendLedger(store, spool, interval=3600)  # a second restart finds nothing to replay
        await again.start()
        await again.close()
        assert len(await _stored(store)) == count and again.stats["written"] == 0

    with_store(tmp_path, work)


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [orjson.dumps(row(n)) for n in range(3)]
    body = lines[0] + b"\n" + b'{"request_id": "garbled' + b"\n" + lines[1] + b"\n\n" + lines[2] + b"\n"
    (spool / "spend-99999-deadbeef-0.jsonl").write_bytes(body + orjson.dumps(row(3))[:40])  # cut mid-line

    async def work(store: Store) -> None:
        ledger = SpendLedger(store, spool, interval=3600)
        await ledger.start()
        assert await _stored(store) == ["req-000000", "req-000001", "req-000002"]
        assert ledger.stats["torn"] == 2
        assert any("2 torn line(s)" in r.message for r in caplog.records if r.levelno == logging.WARNING)
        await ledger.close()
        assert _spool_files(spool) == []

    with_store(tmp_path, work)


def test_two_ledgers_in_one_directory_never_take_each_others_files(tmp_path: Path) -> None:
    spool = tmp_path / "spool"

    async def work(store: Store) -> None:
        down = Flaky(store)
        down.down = True
        first = SpendLedger(down, spool, interval=3600)
        await first.start()
        for n in range(20):
            first.record(row(n))
        await first.flush()  # fails: a sealed file and an active one, both locked by the first ledger
        first.record(row(20))
        held = _spool_files(spool)
        assert len(held) == 2
        second = SpendLedger(store, spool, interval=3600)
        await second.start()
        second.record(row(100))
        await second.flush()
        assert await _stored(store) == ["req-000100"]  # nothing of the first's was taken
        assert set(held) <= set(_spool_files(spool))
        down.down = False
        await first.flush()
        assert len(await _stored(store)) == 22 and first.stats["duplicates"] == 0
        await first.close()
        await second.close()
        assert _spool_files(spool) == []

    with_store(tmp_path, work)


def test_a_live_process_file_is_not_taken_but_a_dead_ones_is(tmp_path: Path) -> None:
    """Another process holds a spool file (as a live worker does): it is left alone until that process dies."""
    spool = tmp_path / "spool"
    spool.mkdir()
    path = spool / "spend-4242-cafef00d-0.jsonl"
    path.write_bytes(orjson.dumps(row(7)) + b"\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"

        async def work(store: Store) -> None:
            ledger = SpendLedger(store, spool, interval=3600)
            await ledger.start()
            assert await _stored(store) == [] and path.exists()
            holder.kill()
            holder.wait()
            ledger._next_scan = 0.0  # the next pass looks for orphans (every 30 s otherwise)
            await ledger.flush()
            assert await _stored(store) == ["req-000007"] and not path.exists()
            await ledger.close()

        with_store(tmp_path, work)
    finally:
        holder.kill()
        holder.wait()


def test_ledger_values_builds_the_checked_values_once(tmp_path: Path) -> None:
    import gc

    from lockgate.ledger import ledger_row, ledger_values
    from lockgate.observe import RequestRecord
    from lockgate.storage.base import spend_log_values

    record = RequestRecord("req-1", "/v1/chat/completions", 200, model_group="g", latency_ms=2.5, cost=0.01,
                           usage={"prompt_tokens": 3, "completion_tokens": 4}, session_id="s")  # fmt: skip
    values = ledger_values(record, None)
    assert isinstance(values, tuple)
    expected = spend_log_values(ledger_row(record, None))
    assert values[0] == expected[0] and values[2:] == expected[2:]  # started_at: a moment later
    gc.collect()
    assert not gc.is_tracked(values)  # atomic values only: the collector skips it
    bad = RequestRecord("req-2", "/v1/chat/completions", 200, end_user="a\x00b")
    assert isinstance(ledger_values(bad, None), SpendLogRow)  # checked (and repaired) by record()

    async def work(store: Store) -> None:
        ledger = SpendLedger(store, tmp_path / "spool", interval=3600)
        await ledger.start()
        ledger.record(values)
        ledger.record(ledger_values(bad, None))
        await ledger.close()
        assert await _stored(store) == ["req-1", "req-2"]
        (repaired,) = await store.list_spend_logs(request_id="req-2")
        assert repaired.end_user is None and repaired.metadata["lockgate_repaired"] == ["end_user"]
        assert ledger.stats["repaired"] == 1

    with_store(tmp_path, work)


def test_a_sibling_workers_half_made_spool_file_is_left_alone(tmp_path: Path) -> None:
    """A worker creates its spool file under a temporary name and locks it a moment later; a sibling starting in
    that moment must not take the name for a crash's leftover (it did, and the first worker failed to start).
    Only an old one is cleared."""
    spool = tmp_path / "spool"
    spool.mkdir()
    fresh, old = spool / ".spend-123-abc-0.new", spool / ".spend-456-def-0.new"
    fresh.write_bytes(b"")
    old.write_bytes(b"")
    os.utime(old, (time.time() - 3600, time.time() - 3600))

    async def work(store: Store) -> None:
        ledger = SpendLedger(store, spool, interval=3600)
        await ledger.start()
        await ledger.close()

    with_store(tmp_path, work)
    assert fresh.exists() and not old.exists()
