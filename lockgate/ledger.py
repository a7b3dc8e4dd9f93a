"""The spend ledger: one :class:`~lockgate.storage.base.SpendLogRow` per request, written to the database off the
request path, kept across a crash, never written twice.

    record(row)          on the request path, after the response: the row checked and converted once into the
                         values the INSERT takes (:data:`~lockgate.storage.base.SpendLogValues`, a tuple of atomic
                         values), appended as one JSON array line to this process's spool file (one write() system
                         call, no fsync) and kept in memory
    every ``interval``   fsync the spool files; seal the active file and open a new one; insert the sealed file's
                         rows, ``batch`` at a time (``insert_spend_log_values``: ON CONFLICT DO NOTHING); delete it
    start()              adopt the spool files that dead processes left (a crash, kill -9) and write them first
    close()              a last flush, bounded in time; what the database did not take stays in the spool

Why nothing is lost: a row is in a spool file from record() on, and a file is deleted only after the database has
committed every row in it. A crash at any point leaves the file and the next start replays it; rows committed
already are skipped by request_id, so a replay never doubles. Each process ``flock()``s its files for as long as
they exist, so a live worker's file is never taken, and the kernel drops a dead process's locks.

While the database is down rows wait in memory and in the spool (retried with backoff up to
:data:`MAX_BACKOFF` s); past ``max_memory`` rows the active file alone holds them and is read back when its turn
comes. What a crash can lose: the row whose write() was under way (a torn last line, skipped with a warning), and
on a power failure (not a process crash) what was written since the last fsync, at most ``interval`` seconds.

Spool files, in the spool directory (one directory may serve many processes, ``--workers N``: each worker makes
its own ledger after the fork; the directory must be on a local file system, where ``flock()`` is reliable)::

    spend-<pid>-<token>-<n>.jsonl     one per process and rotation, one JSON array per line (the values, in
                                      SPEND_LOG_FIELDS order, then the request's charge if it has one: what it
                                      adds to budget windows and owners' spend, written with the row and only if
                                      the row is new; a JSON object per line, as older versions wrote, is read too)
    .spend-<pid>-<token>-<n>.new      being created (locked, then renamed into place); never replayed
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from lockgate.errors import describe
from lockgate.storage.base import (
    SPEND_LOG_FIELDS,
    Charge,
    LedgerStore,
    SpendDelta,
    SpendLogRow,
    SpendLogValues,
    spend_log_fast_values,
    spend_log_faults,
    spend_log_values,
    utc_now,
)

SpoolCharge = tuple[tuple[tuple[str, str, float], ...], tuple[tuple[str, str, float], ...]]
"""A request's charge as the ledger keeps it (atomic values only): ``((scope, window_id, USD), ...)`` budget window
deltas and ``((kind, id, USD), ...)`` owner spend; in the spool, the last element of the row's JSON array."""

if TYPE_CHECKING:
    from lockgate.auth import Principal
    from lockgate.observe import RequestRecord

__all__ = ["MAX_BACKOFF", "SpendLedger", "ledger_row", "ledger_values"]

log = logging.getLogger("lockgate.ledger")

MAX_BACKOFF = 5.0  # seconds between retries while the database refuses rows
ORPHAN_SCAN = 30.0  # seconds between looks for the files of workers that died
INSERT_TIMEOUT = 30.0  # seconds one batch may take before it counts as failed (and is retried)
_READ_SIZE = 1 << 20
_DEFAULTS = {f.name: f for f in dataclasses.fields(SpendLogRow)}


class _Segment:
    """One spool file this process holds (locked): the active one, a sealed one, or one adopted from a dead
    process. Its rows are in ``rows`` (from ``done`` on, not yet written) or, when ``rows`` is None, only in the
    file (from byte ``offset`` on)."""

    __slots__ = ("count", "dirty", "done", "fd", "offset", "path", "rows", "torn")

    def __init__(self, path: Path, fd: int, rows: list[SpendLogValues] | None) -> None:
        self.path, self.fd, self.rows = path, fd, rows
        self.count = self.done = self.offset = self.torn = 0  # count: rows this process appended
        self.dirty = False


class SpendLedger:
    """Writes spend rows to a :class:`~lockgate.storage.base.LedgerStore` through a spool in ``spool_path``."""

    def __init__(
        self,
        store: LedgerStore,
        spool_path: Path,
        *,
        interval: float = 0.5,
        batch: int = 500,
        max_memory: int = 100_000,
        close_timeout: float = 5.0,
    ) -> None:
        self._store = store
        self._dir = spool_path
        self._interval, self._batch, self._max_memory = interval, max(1, batch), max_memory
        self._close_timeout = close_timeout
        self._prefix = f"spend-{os.getpid()}-{secrets.token_hex(4)}-"
        self._seq = 0
        self._active: _Segment | None = None
        self._pending: collections.deque[_Segment] = collections.deque()  # sealed or adopted, oldest first
        self._unspooled: list[SpendLogValues] = []  # rows no spool file holds (none open, or its write failed)
        self._in_memory = 0
        self._dir_dirty = False
        self._lock = asyncio.Lock()  # one pass at a time: the background task's, flush()'s or close()'s
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failing_since: float | None = None
        self._delay = interval
        self._retry_at = 0.0
        self._next_scan = 0.0
        self._spool_failing = False
        self._counts = dict.fromkeys(("recorded", "written", "duplicates", "torn", "repaired", "dropped"), 0)

    # --- the request path ------------------------------------------------------------------------

    def record(self, row: SpendLogRow | SpendLogValues, charge: SpoolCharge | None = None) -> None:
        """Keep ``row`` (in memory and in the spool file) for the next write. Never raises. A tuple is taken as
        :func:`~lockgate.storage.base.spend_log_values` (or :func:`ledger_values`) made it: checked already; a
        :class:`SpendLogRow` is checked here, and a field the database would refuse is repaired. ``charge``: what
        the request adds to budget windows and owners' spend, written in the row's transaction if the row is
        new (:meth:`~lockgate.storage.base.LedgerStore.insert_spend_log_values`), so that the ledger and the
        budgets are one set of numbers and a crash loses neither."""
        try:
            self._counts["recorded"] += 1
            if self._closed:
                self._drop(1, "the ledger is closed")
                return
            values = row if isinstance(row, tuple) else self._values(row)
            if values is None:
                return
            if charge is not None and (charge[0] or charge[1]):
                values = (*values, charge)  # the charge rides at the end of the row, in memory and in the spool
            line = _line(values)
            active = self._active
            if active is None or line is None or not self._append(active, line):
                self._keep_unspooled([values])
                return
            self._remember(active, values)
        except Exception as exc:  # a ledger problem must never fail a request that has been answered
            log.error("spend ledger: a row was not recorded: %s", describe(exc))

    def _append(self, seg: _Segment, line: bytes) -> bool:
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(seg.fd, view) :]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.write(seg.fd, b"\n")  # end a torn fragment, so the next line starts clean
            if not self._spool_failing:
                log.error("spend ledger: cannot write the spool (%s); rows are kept in memory", describe(exc))
            self._spool_failing = True
            return False
        seg.dirty = True
        self._spool_failing = False
        return True

    def _values(self, row: SpendLogRow) -> SpendLogValues | None:
        """``row`` checked and converted; repaired first if the database would refuse it; None if dropped."""
        try:
            return spend_log_values(row)
        except ValueError:
            repaired = self._repair([row])
            return spend_log_values(repaired[0]) if repaired else None

    def _remember(self, seg: _Segment, row: SpendLogValues) -> None:
        if seg.rows is not None:
            if self._in_memory >= self._max_memory:  # the file alone holds this segment's rows from now on
                self._in_memory -= len(seg.rows)
                seg.rows = None
            else:
                seg.rows.append(row)
                self._in_memory += 1
        seg.count += 1

    def _keep_unspooled(self, rows: list[SpendLogValues]) -> None:
        room = max(0, self._max_memory - self._in_memory)
        self._unspooled += rows[:room]
        self._in_memory += len(rows[:room])
        if len(rows) > room:
            self._drop(len(rows) - room, "neither the spool nor memory could take them")

    def _drop(self, count: int, why: str) -> None:
        self._counts["dropped"] += count
        log.error("spend ledger: %d spend row(s) lost: %s", count, why)

    # --- start, the background task, close ------------------------------------------------------

    async def start(self) -> None:
        """Open this process's spool file, adopt what dead processes left, try once (for a few seconds at most)
        to write it, then keep writing every ``interval``. ``OSError`` if the spool directory is unusable."""
        if self._task is not None:
            return
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._active is None:
            self._open_active()
        self._adopt_orphans()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._close_timeout):
                await self.flush()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            if self._stop.is_set():
                return
            try:
                async with self._lock:
                    await self._pass(force=False)
            except Exception as exc:  # the task must outlive any one failure
                log.error("spend ledger: %s", describe(exc))

    async def flush(self) -> None:
        """Write everything recorded so far now, whatever the backoff (if the database takes it)."""
        async with self._lock:
            await self._pass(force=True)
            if self._failing_since is None and self._active is not None and self._active.count:
                await self._pass(force=True)  # the first wrote what was sealed before; this seals the rest

    async def close(self) -> None:
        """Stop the task and write what is left, for ``close_timeout`` seconds at most; rows the database did not
        take stay in the spool for the next start."""
        if self._closed:
            return
        self._stop.set()
        if self._task is not None:
            _, running = await asyncio.wait({self._task}, timeout=self._close_timeout)
            for task in running:
                task.cancel()
                # not awaited outright: a pass stuck on a database that does not answer ends only when asyncpg has
                # cancelled its query, which it waits for without a bound
                await asyncio.wait({task}, timeout=self._close_timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._close_timeout), self._lock:
                self._spool_unspooled()  # rows only memory held: into the spool, in case the database is down
                self._closed = True
                if self._active is not None and self._active.count:
                    self._pending.append(self._active)
                    self._active = None
                await self._pass(force=True)
        self._closed = True
        if self._active is not None:
            if self._active.count == 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._active.path)
                os.close(self._active.fd)
            else:  # the final pass was cut short before it could seal it
                self._pending.append(self._active)
            self._active = None
        if self._pending:
            log.warning("spend ledger: spend rows left in %d spool file(s) in %s; the next start writes them",
                        len(self._pending), self._dir)  # fmt: skip
        for seg in self._pending:
            os.close(seg.fd)  # the file stays; its lock goes
        self._pending.clear()
        if self._unspooled:
            self._drop(len(self._unspooled), "the database was unreachable at shutdown and no spool held them")

    # --- one pass -----------------------------------------------------------------------------------

    async def _pass(self, *, force: bool) -> None:
        """fsync, rotate, write: the work of one interval."""
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + ORPHAN_SCAN
            self._adopt_orphans()
        if self._active is None and not self._closed:
            with contextlib.suppress(OSError):  # logged by _open_active; rows wait in memory meanwhile
                self._open_active()
        if not self._closed:
            self._spool_unspooled()
        if not self._pending and self._active is not None and self._active.count and not self._closed:
            self._pending.append(self._active)  # sealed: no more writes; a new file takes new rows
            self._active = None
            with contextlib.suppress(OSError):
                self._open_active()
        await self._sync()
        if force or now >= self._retry_at:
            await self._write_pending()

    def _spool_unspooled(self) -> None:
        """Rows kept only in memory (no file was open, or a write failed) go into the active file."""
        active = self._active
        if not self._unspooled or active is None:
            return
        rows, keep = self._unspooled, []
        self._in_memory -= len(rows)
        for n, row in enumerate(rows):
            line = _line(row)
            if line is None:
                keep.append(row)  # text JSON cannot hold (a lone surrogate): memory only
            elif self._append(active, line):
                self._remember(active, row)
            else:
                keep += rows[n:]
                break
        self._unspooled = keep
        self._in_memory += len(keep)

    async def _sync(self) -> None:
        segments = [seg for seg in (self._active, *self._pending) if seg is not None and seg.dirty]
        directory = self._dir if self._dir_dirty else None
        if not segments and directory is None:
            return
        for seg in segments:
            seg.dirty = False
        self._dir_dirty = False
        try:
            await asyncio.to_thread(_fsync, [seg.fd for seg in segments], directory)
        except OSError as exc:
            log.warning("spend ledger: fsync of the spool failed: %s", describe(exc))
            for seg in segments:
                seg.dirty = True
            self._dir_dirty = self._dir_dirty or directory is not None

    async def _write_pending(self) -> None:
        try:
            while self._unspooled:
                chunk = self._unspooled[: self._batch]
                await self._insert(chunk)
                del self._unspooled[: len(chunk)]
                self._in_memory -= len(chunk)
            while self._pending:
                seg = self._pending[0]
                await self._write_segment(seg)
                self._pending.popleft()
                self._discard(seg)
        except Exception as exc:
            self._failed(exc)
        else:
            self._recovered()

    async def _write_segment(self, seg: _Segment) -> None:
        while True:
            if seg.rows is not None:
                chunk = seg.rows[seg.done : seg.done + self._batch]
                if not chunk:
                    return
                await self._insert(chunk)
                seg.done += len(chunk)
            else:
                rows, offset, torn = _read_rows(seg.fd, seg.offset, self._batch)
                if offset == seg.offset:
                    return
                chunk = []
                for row, charge in rows:
                    values = self._values(row)
                    if values is not None:
                        chunk.append(values if charge is None else (*values, charge))
                if chunk:
                    await self._insert(chunk)
                seg.offset, seg.torn = offset, seg.torn + torn

    async def _insert(self, kept: Sequence[SpendLogValues]) -> None:
        rows, charges = _split(kept)
        async with asyncio.timeout(INSERT_TIMEOUT):
            refused = 0
            try:
                new = await self._store.insert_spend_log_values(rows, charges)
            except ValueError:  # checked rows, but text the database cannot encode: the others one at a time
                new = 0
                for values in rows:
                    try:
                        new += await self._store.insert_spend_log_values([values], charges)
                    except ValueError as exc:
                        refused += 1
                        self._drop(1, f"the database refused it ({describe(exc)})")
        self._counts["written"] += new
        self._counts["duplicates"] += len(rows) - refused - new

    def _repair(self, rows: Sequence[SpendLogRow]) -> list[SpendLogRow]:
        """The rows with each field the database would refuse set to its default (and named in
        ``metadata["lockgate_repaired"]``); a row without a usable request_id is dropped."""
        out = []
        for row in rows:
            faults = spend_log_faults(row)
            if not faults:
                out.append(row)
                continue
            if "request_id" in faults:
                self._drop(1, "a spend row without a usable request_id")
                continue
            changes: dict[str, Any] = {name: _default(name) for name in faults if name != "started_at"}
            if "started_at" in faults:
                started = row.started_at
                naive = isinstance(started, datetime) and started.utcoffset() is None
                changes["started_at"] = started.replace(tzinfo=UTC) if naive else utc_now()
            changes["metadata"] = {**changes.get("metadata", row.metadata), "lockgate_repaired": faults}
            out.append(dataclasses.replace(row, **changes))
            self._counts["repaired"] += 1
            log.warning("spend ledger: row %s had invalid %s; written with defaults", row.request_id[:100], faults)
        return out

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            self._delay = self._interval
            log.warning("spend ledger: the database did not take the spend rows (%s); they wait in %s and are "
                        "retried", describe(exc), self._dir)  # fmt: skip
        else:
            self._delay = min(self._delay * 2, MAX_BACKOFF)
        self._retry_at = now + self._delay

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("spend ledger: the database takes spend rows again (after %.1f s)",
                     time.monotonic() - self._failing_since)  # fmt: skip
            self._failing_since = None
        self._retry_at = 0.0

    # --- files --------------------------------------------------------------------------------------

    def _open_active(self) -> None:
        """A new, locked spool file for new rows: created under a temporary name, locked, then renamed, so that no
        other process can ever see it unlocked."""
        name = f"{self._prefix}{self._seq}"
        self._seq += 1
        path, temporary = self._dir / f"{name}.jsonl", self._dir / f".{name}.new"
        try:
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if not self._spool_failing:
                log.error("spend ledger: cannot create a spool file in %s: %s", self._dir, describe(exc))
            self._spool_failing = True
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._dir_dirty = True
        self._active = _Segment(path, fd, [] if self._in_memory < self._max_memory else None)

    def _adopt_orphans(self) -> None:
        """Take (lock) every spool file no live process holds: they are replayed before this process's own."""
        try:
            names = sorted(os.listdir(self._dir))
        except OSError:
            return
        adopted = 0
        for name in names:
            if name.startswith(self._prefix) or name.startswith("." + self._prefix):
                continue
            if name.startswith("spend-") and name.endswith(".jsonl"):
                seg = _lock_orphan(self._dir / name)
                if seg is not None:
                    self._pending.append(seg)
                    adopted += 1
            elif name.startswith(".spend-") and name.endswith(".new") and _stale(self._dir / name):
                # a creation a crash interrupted (empty). A live process holds such a name for microseconds,
                # between creating and locking it: a fresh one may be a sibling worker's, starting now.
                stale = _lock_orphan(self._dir / name)
                if stale is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(stale.path)
                    os.close(stale.fd)
        if adopted:
            log.info("spend ledger: replaying %d spool file(s) left by stopped processes", adopted)

    def _discard(self, seg: _Segment) -> None:
        """A segment all of whose rows are in the database: delete its file (while still holding its lock)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(seg.path)
        os.close(seg.fd)
        if seg.rows is not None:
            self._in_memory -= len(seg.rows)
        if seg.torn:
            self._counts["torn"] += seg.torn
            log.warning("spend ledger: %d torn line(s) skipped in %s (a write cut short by a crash)",
                        seg.torn, seg.path.name)  # fmt: skip

    @property
    def stats(self) -> dict[str, int]:
        """Counts since start: recorded, written (new rows), duplicates (skipped by request_id), torn (lines
        skipped), repaired, dropped; and now: in_memory rows, spool_files held."""
        files = len(self._pending) + (self._active is not None)
        return {**self._counts, "in_memory": self._in_memory, "spool_files": files}


def _line(values: SpendLogValues) -> bytes | None:
    """The values as one JSON array line; None if they hold text JSON cannot (a lone surrogate)."""
    try:
        return orjson.dumps(values, option=orjson.OPT_APPEND_NEWLINE)
    except (orjson.JSONEncodeError, TypeError):
        return None


def _split(kept: Sequence[SpendLogValues]) -> tuple[list[SpendLogValues], dict[str, Charge]]:
    """Rows as kept (values, and a charge at the end of some) -> the rows and their charges by request_id."""
    width = len(SPEND_LOG_FIELDS)
    if all(len(values) == width for values in kept):
        return list(kept), {}
    rows: list[SpendLogValues] = []
    charges: dict[str, Charge] = {}
    for values in kept:
        if len(values) > width:
            charge = _charge(values[width])
            if charge is not None:
                charges[values[0]] = charge
            values = values[:width]
        rows.append(values)
    return rows, charges


def _charge(spooled: Any) -> Charge | None:
    """A charge as the spool holds it (``[[scope, window, amount]...], [[kind, id, amount]...]``, tuples in
    memory) for the store; None if malformed (the row is still written)."""
    try:
        windows, owners = spooled
        return (
            tuple(SpendDelta(str(scope), str(window), float(amount)) for scope, window, amount in windows),
            tuple((str(kind), str(ident), float(amount)) for kind, ident, amount in owners),
        )
    except (TypeError, ValueError):
        log.error("spend ledger: a spend row's charge was malformed; the row is written without it")
        return None


def _parse(line: bytes) -> tuple[SpendLogRow, Any] | None:
    """A spool line as a row again (checked when it is converted), and its charge if it has one: an array of
    values (and a charge), or an object with the fields by name (older versions); None if it is neither (torn)."""
    try:
        data = orjson.loads(line)
        charge = None
        if isinstance(data, list):
            if len(data) == len(SPEND_LOG_FIELDS) + 1:
                charge = data.pop()
            fields = dict(zip(SPEND_LOG_FIELDS, data, strict=True))
            for name in ("metadata", "messages", "response"):
                if isinstance(fields[name], str):
                    fields[name] = orjson.loads(fields[name])
        else:
            fields = {name: data[name] for name in SPEND_LOG_FIELDS if name in data}
        fields["started_at"] = datetime.fromisoformat(fields["started_at"])
        return SpendLogRow(**fields), charge
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _read_rows(fd: int, offset: int, limit: int) -> tuple[list[tuple[SpendLogRow, Any]], int, int]:
    """Up to ``limit`` rows from the file from byte ``offset`` on: (rows, the offset after them, lines skipped as
    torn). A last line without its newline is torn (the file is sealed: nothing more will be appended)."""
    rows: list[tuple[SpendLogRow, Any]] = []
    torn = 0
    buffer = b""
    while len(rows) < limit:
        start = 0
        chunk = os.pread(fd, _READ_SIZE, offset + len(buffer))
        if not chunk:
            if buffer.strip():
                torn += 1
            return rows, offset + len(buffer), torn
        buffer += chunk
        while len(rows) < limit and (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start:end]
            start = end + 1
            if line.strip():
                row = _parse(line)
                if row is None:
                    torn += 1
                else:
                    rows.append(row)
        offset += start
        buffer = buffer[start:]
    return rows, offset, torn


def _lock_orphan(path: Path) -> _Segment | None:
    """``path`` opened and locked, if no live process holds it and it is still in place; else None."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:  # replayed and deleted since we opened it
            raise FileNotFoundError(path)
    except OSError:
        os.close(fd)
        return None
    return _Segment(path, fd, None)


STALE_AFTER = 60.0  # seconds before a half-made spool file (".new") is taken for a crash's leftover


def _stale(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER
    except OSError:
        return False


def _fsync(fds: list[int], directory: Path | None) -> None:
    for fd in fds:
        os.fsync(fd)
    if directory is not None:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _default(name: str) -> Any:
    field = _DEFAULTS[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def ledger_values(
    record: RequestRecord, principal: Principal | None, content: tuple[Any, Any] | None = None
) -> SpendLogValues | SpendLogRow:
    """:func:`ledger_row`'s row, built straight into the values the INSERT takes (no :class:`SpendLogRow` made) when
    every field is of the common, valid kinds and there is no ``content`` (the prompt and answer, when they are
    stored: :mod:`lockgate.prompts`); otherwise the row itself, for :meth:`SpendLedger.record` to check and
    repair."""
    if content is not None:
        return ledger_row(record, principal, content)
    usage = record.usage or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    if principal is not None:
        key, team, org = principal.key, principal.team, principal.org
        user_id = principal.user_id or (key.user_id if key is not None else None)
    else:
        key = team = org = user_id = None
    has_prompt_details, has_completion_details = isinstance(prompt_details, dict), isinstance(completion_details, dict)
    values = spend_log_fast_values((
        record.request_id,
        datetime.now(UTC) - timedelta(milliseconds=record.latency_ms),
        key.token_hash if key is not None else None,
        key.key_alias if key is not None else None,
        user_id,
        team.team_id if team is not None else (key.team_id if key is not None else None),
        org.organization_id if org is not None else None,
        record.end_user,
        record.requested_model,
        record.model_group,
        record.deployment_id,
        record.provider,
        prompt,
        completion,
        _count(prompt_details.get("cached_tokens") if has_prompt_details else 0),
        _count(prompt_details.get("cache_write_tokens") if has_prompt_details else 0),
        _count(completion_details.get("reasoning_tokens") if has_completion_details else 0),
        _count(usage.get("total_tokens")) or prompt + completion,
        record.cost or 0.0,
        bool(usage.get("estimated")),
        record.latency_ms,
        record.first_token_ms,
        record.status,
        record.error_type,
        record.stream,
        record.client_disconnected,
        record.route,
        _metadata(record),
        None,
        None,
    ))  # fmt: skip
    return values if values is not None else ledger_row(record, principal)


def _metadata(record: RequestRecord) -> dict[str, Any]:
    """The row's metadata: the session, and ``unpriced`` when the request used tokens at a deployment without
    prices (it counted $0: lockgate.unpriced)."""
    metadata: dict[str, Any] = {"session_id": record.session_id} if record.session_id else {}
    if record.cost is None and record.usage:
        metadata["unpriced"] = True
    return metadata


def ledger_row(
    record: RequestRecord, principal: Principal | None, content: tuple[Any, Any] | None = None
) -> SpendLogRow:
    """A finished request's row: who (the key's hash and alias, its user, team, organisation; the end user),
    what (model, group, deployment, provider), what it used and cost, how it ended; and ``content``, the
    (messages, response) to store, if any."""
    messages, response = content if content is not None else (None, None)
    usage = record.usage or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    key = principal.key if principal is not None else None
    team = principal.team if principal is not None else None
    org = principal.org if principal is not None else None
    return SpendLogRow(
        request_id=record.request_id,
        started_at=datetime.now(UTC) - timedelta(milliseconds=record.latency_ms),
        key_hash=key.token_hash if key is not None else None,
        key_alias=key.key_alias if key is not None else None,
        user_id=(principal.user_id if principal is not None else None) or (key.user_id if key is not None else None),
        team_id=team.team_id if team is not None else (key.team_id if key is not None else None),
        organization_id=org.organization_id if org is not None else None,
        end_user=record.end_user,
        model=record.requested_model,
        model_group=record.model_group,
        deployment_id=record.deployment_id,
        provider=record.provider,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cache_read_tokens=_count(prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else 0),
        cache_write_tokens=_count(prompt_details.get("cache_write_tokens") if isinstance(prompt_details, dict) else 0),
        reasoning_tokens=_count(
            completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else 0
        ),
        total_tokens=_count(usage.get("total_tokens")) or prompt + completion,
        cost=record.cost or 0.0,
        cost_estimated=bool(usage.get("estimated")),
        latency_ms=record.latency_ms,
        ttft_ms=record.first_token_ms,
        status=record.status,
        error_type=record.error_type,
        stream=record.stream,
        client_disconnected=record.client_disconnected,
        route=record.route,
        metadata=_metadata(record),
        messages=messages,
        response=response,
    )
