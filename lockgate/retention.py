"""How long the spend ledger keeps what it holds: a task that deletes old rows and clears old prompts.

    general_settings.maximum_spend_logs_retention_period     rows that started longer ago are deleted
                                                             (LiteLLM's key; default: kept for ever)
    lockgate.prompt_retention                                the prompts and answers (``messages``,
                                                             ``response``) of rows that started longer ago
                                                             are set to null (default 30d; ``never``: kept
                                                             as long as their row)
    general_settings.maximum_spend_logs_retention_interval   how often both run (LiteLLM's key; default 1h)

Periods are written as LiteLLM writes them: ``30s``, ``10m``, ``24h``, ``30d``, ``2w``, ``1mo`` (30 days),
``1y`` (365 days). The first pass runs a few seconds after start-up, then one every interval.

Every instance (every worker) runs the task. Both statements are idempotent (a row deleted or cleared twice is
no different), so instances running at once only repeat each other's work. After its first pass, an
instance clears prompts only in rows newer than its previous cut-off less :data:`OVERLAP` (what is older was
cleared then), so an hourly pass does not walk the whole table; rows written long after their start (a spool
replayed after a database outage) are caught by the next start's full pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from lockgate.errors import describe
from lockgate.storage.base import LedgerStore, utc_now

if TYPE_CHECKING:
    from lockgate.config import Settings

__all__ = ["DEFAULT_INTERVAL", "DEFAULT_PROMPT_RETENTION", "OVERLAP", "Retention", "parse_period"]

log = logging.getLogger("lockgate.retention")

DEFAULT_INTERVAL = 3600.0  # seconds between passes
DEFAULT_PROMPT_RETENTION = 30 * 86400.0  # seconds a stored prompt is kept
OVERLAP = 86400.0  # seconds before the previous cut-off that a later pass looks at again
START_DELAY = 5.0  # seconds after start-up before the first pass
_PERIOD = re.compile(r"\s*(\d+)\s*(s|m|h|d|w|mo|y)\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400, "y": 365 * 86400}


def parse_period(text: object) -> float:
    """A period (``30d``, ``1h``, ...) in seconds; ``ValueError`` if it is not one, or is zero."""
    match = _PERIOD.fullmatch(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError("must be a period like 30s, 10m, 24h, 30d, 2w, 1mo or 1y")
    return float(int(match.group(1)) * _UNITS[match.group(2)])


class Retention:
    """Deletes rows older than ``rows`` seconds and clears prompts older than ``prompts`` seconds (None: never),
    every ``interval`` seconds, in ``store``."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        rows: float | None,
        prompts: float | None,
        interval: float = DEFAULT_INTERVAL,
        start_delay: float = START_DELAY,
    ) -> None:
        self._store = store
        self.rows, self.prompts = rows, prompts
        self._interval, self._start_delay = interval, start_delay
        self._cleared_to: datetime | None = None  # the previous pass's cut-off for prompts
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, store: LedgerStore, settings: Settings) -> Retention:
        return cls(
            store,
            rows=settings.spend_logs_retention,
            prompts=settings.prompt_retention,
            interval=settings.spend_logs_retention_interval,
        )

    def start(self) -> None:
        """Run passes in the background (nothing to do when neither period is set)."""
        if self._task is None and (self.rows is not None or self.prompts is not None):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = self._start_delay
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            delay = self._interval
            try:
                await self.run_once()
            except Exception as exc:  # the next pass tries again
                log.warning("spend log retention: %s", describe(exc))

    async def run_once(self, now: datetime | None = None) -> tuple[int, int]:
        """One pass: (rows deleted, rows whose prompt and answer were cleared)."""
        now = now or utc_now()
        deleted = cleared = 0
        if self.rows is not None:
            deleted = await self._store.delete_spend_logs_before(now - timedelta(seconds=self.rows))
        if self.prompts is not None:
            before = now - timedelta(seconds=self.prompts)
            after = None if self._cleared_to is None else self._cleared_to - timedelta(seconds=OVERLAP)
            cleared = await self._store.clear_spend_log_content(before, after=after)
            self._cleared_to = before
        if deleted or cleared:
            log.info("spend log retention: %d row(s) deleted, %d prompt(s) cleared", deleted, cleared)
        return deleted, cleared
