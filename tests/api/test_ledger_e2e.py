"""The spend ledger end to end under failure (issue 7): a real gateway process on PostgreSQL, reached through a
:class:`~tests.fakes.tcp_proxy.TcpProxy` the tests switch off, and clients sending requests all the while.

    kill -9 during load     16 clients, streamed and not; SIGKILL mid-load; a restart on the same spool and
                            database: every request a client received whole has exactly one row
    database outage         the proxy refuses (every connection reset, new ones refused) or black-holes (every
                            byte held, nothing answered) for LOCKGATE_OUTAGE_SECONDS (15 by default): requests
                            with a cached key keep being answered; one with a key not cached fails within
                            seconds; once the database is back every row arrives, once, and the key's spend
                            matches its rows
    a restart during it     a gateway stopped during an outage starts again at once (the master key is served,
                            its rows spooled too; a key it has not seen gets 503); once the database is back it
                            replays its spool and the earlier process's, each row once, with the spend it carries

Each test has its own schema (``search_path`` in the database URL), dropped afterwards; rows are read straight
from PostgreSQL, not through the proxy. The numbers (requests served, rows, latencies) are printed: ``pytest -s``.
PostgreSQL unreachable is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.tcp_proxy import TcpProxy
from tests.postgres import fresh_schema, proxied, sql
from tests.support import MASTER_KEY, GatewayProcess

OUTAGE_SECONDS = float(os.environ.get("LOCKGATE_OUTAGE_SECONDS", "15"))
PRICED = "model_info: {input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}"


def config(proxy: TcpProxy, schema: str, *, upstream: FakeOpenAI | None = None) -> str:
    """The demo model, priced (so that keys have spend), and with ``upstream`` a slow one;
    the database through ``proxy``; keys cached for 10 minutes, so a key used once is not looked up again."""
    slow = ""
    if upstream is not None:  # a stream of a few chunks 40 ms apart, for a kill to land in
        params = f"model: openai/fault-slowstream-40, api_base: {upstream.url}/v1, api_key: {UPSTREAM_KEY}"
        slow = f"  - model_name: slow\n    litellm_params: {{{params}}}\n"
    return f"""model_list:
  - model_name: demo
    litellm_params: {{model: demo/echo}}
    {PRICED}
{slow}general_settings:
  database_url: postgresql://postgres@{proxy.host}:{proxy.port}/test?search_path={schema}
  user_api_key_cache_ttl: 1
"""


# --- the database, read beside the gateway --------------------------------------------------------------------


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema("lockgate_ledger") as name:
        yield name


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with proxied() as proxy:
        yield proxy


def rows_of(schema: str) -> dict[str, list[bool]]:
    """Each request id in spend_logs: its rows' ``stream`` flags (one flag per row)."""
    rows: dict[str, list[bool]] = collections.defaultdict(list)
    for row in asyncio.run(sql("SELECT request_id, stream FROM spend_logs", schema)):
        rows[row["request_id"]].append(row["stream"])
    return rows


def wait_rows(schema: str, wanted: set[str], timeout: float = 30.0) -> dict[str, list[bool]]:
    """The rows once every wanted request id has one (or the timeout passed), then once more a second later,
    so that a late replay would show as a second row or an extra one."""
    deadline = time.monotonic() + timeout
    while not wanted <= set(rows_of(schema)) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    return rows_of(schema)


def check_rows(rows: dict[str, list[bool]], served: list[Outcome]) -> set[str]:
    """Every request served whole has exactly one row, with its stream flag; no id has two rows. Returns the
    ids of the rows beyond the served requests."""
    by_id = {o.request_id: o for o in served if o.request_id}
    missing = set(by_id) - set(rows)
    doubled = {request_id for request_id, flags in rows.items() if len(flags) > 1}
    wrong = {request_id for request_id, o in by_id.items() if request_id in rows and rows[request_id] != [o.stream]}
    assert not missing, f"{len(missing)} served request(s) without a row: {sorted(missing)[:5]}"
    assert not doubled, f"{len(doubled)} request id(s) with more than one row: {sorted(doubled)[:5]}"
    assert not wrong, f"{len(wrong)} row(s) with the wrong stream flag: {sorted(wrong)[:5]}"
    return set(rows) - set(by_id)


def key_spend(schema: str, key_hash: str) -> tuple[float, float]:
    """(the key's spend, the sum of its rows' cost)."""
    spend = asyncio.run(sql("SELECT spend FROM keys WHERE token_hash = $1", schema, key_hash))
    cost = asyncio.run(sql("SELECT coalesce(sum(cost), 0) AS c FROM spend_logs WHERE key_hash = $1", schema, key_hash))
    return float(spend[0]["spend"]), float(cost[0]["c"])


# --- clients ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as its client saw it."""

    phase: str
    stream: bool
    latency: float  # seconds, until the whole body was read (or the request failed)
    status: int | None  # None: no response at all
    request_id: str | None  # from the response headers
    complete: bool  # 200 and the whole answer: a JSON body with a message, or a stream through data: [DONE]
    error: str | None = None


class Load:
    """``clients`` clients sending chat requests as fast as they are answered, from a background thread, until
    :meth:`stop`, every third streamed; the first ``slow`` of them send slow streams only (model ``slow``). Each
    outcome is labelled with :attr:`phase` as it was when the request was sent."""

    def __init__(self, url: str, key: str, *, clients: int = 16, slow: int = 0, timeout: float = 60.0) -> None:
        self.url, self.key, self.clients, self.slow, self.timeout = url, key, clients, slow, timeout
        self.phase = "before"
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        self._thread.join(self.timeout + 10)
        assert not self._thread.is_alive(), "a client is still waiting for an answer"
        return self.outcomes

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout, limits=limits) as client:
            await asyncio.gather(*(self._client(client, n) for n in range(self.clients)))

    async def _client(self, client: httpx.AsyncClient, n: int) -> None:
        sent = n
        while not self._stop.is_set():
            slow = n < self.slow
            outcome = await chat(client, self.key, stream=slow or sent % 3 == 0, slow=slow, phase=self.phase)
            self.outcomes.append(outcome)
            sent += 1
            if outcome.status is None:
                await asyncio.sleep(0.05)  # the gateway is gone: do not spin


async def chat(client: httpx.AsyncClient, key: str, *, stream: bool, slow: bool = False, phase: str = "") -> Outcome:
    messages = [{"role": "user", "content": "count the rows please"}]
    body: dict[str, Any] = {"model": "slow" if slow else "demo", "messages": messages}
    if stream:
        body["stream"] = True
    headers = {"Authorization": f"Bearer {key}"}
    started = time.perf_counter()
    status = request_id = None
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as answer:
            status, request_id = answer.status_code, answer.headers.get("x-request-id")
            raw = await answer.aread()
    except httpx.HTTPError as exc:
        return Outcome(phase, stream, time.perf_counter() - started, status, request_id, False, type(exc).__name__)
    complete = status == 200 and _whole(raw, stream)
    return Outcome(phase, stream, time.perf_counter() - started, status, request_id, complete)


def _whole(raw: bytes, stream: bool) -> bool:
    if stream:
        return b"\ndata: [DONE]\n" in raw or raw.startswith(b"data: [DONE]\n")
    try:
        return bool(json.loads(raw)["choices"][0]["message"]["content"])
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def one_chat(gw: GatewayProcess, key: str, *, stream: bool = False) -> Outcome:
    async def run() -> Outcome:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
            return await chat(client, key, stream=stream)

    return asyncio.run(run())


def new_key(gw: GatewayProcess) -> tuple[str, str]:
    """A virtual key (made while the database is up) and its hash."""
    answer = httpx.post(gw.url + "/key/generate", headers=gw.headers(), json={}, timeout=10)
    assert answer.status_code == 200, answer.text
    info = httpx.get(gw.url + "/key/info", headers=gw.headers(), params={"key": answer.json()["key"]}, timeout=10)
    return answer.json()["key"], info.json()["key"]


def latencies(outcomes: list[Outcome], phase: str) -> str:
    times = sorted(o.latency * 1000 for o in outcomes if o.phase == phase and o.complete)
    if not times:
        return f"{phase}: none"
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    p50 = statistics.median(times)
    return f"{phase}: {len(times)} requests, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {times[-1]:.1f} ms"


# --- the tests -------------------------------------------------------------------------------------------------


def test_kill_9_during_load_loses_no_served_row_and_doubles_none(
    proxy: TcpProxy, schema: str, fake_openai: FakeOpenAI
) -> None:
    with GatewayProcess(config(proxy, schema, upstream=fake_openai)) as gw:
        assert gw.proc is not None
        load = Load(gw.url, MASTER_KEY, clients=16, slow=4).start()
        time.sleep(2.5)
        gw.proc.kill()  # SIGKILL: no drain, no last flush; what the database has not taken is in the spool
        gw.proc.wait()
        outcomes = load.stop()
        spool = gw.config_path.parent / "lockgate-spool"
        spooled = sum(p.read_bytes().count(b"\n") for p in spool.glob("spend-*.jsonl"))
        served = [o for o in outcomes if o.complete]
        cut = {o.request_id for o in outcomes if not o.complete and o.request_id}
        gw.start()  # the same port, spool directory and database
        rows = wait_rows(schema, {o.request_id for o in served if o.request_id})
    extra = check_rows(rows, served)
    print(
        f"\nkill -9 during load: {len(outcomes)} requests sent, {len(served)} served whole "
        f"({sum(o.stream for o in served)} streamed), {len(cut)} cut after their headers, "
        f"{len(outcomes) - len(served) - len(cut)} without an answer; {spooled} rows in the spool at the kill; "
        f"{sum(map(len, rows.values()))} rows after the restart: {len(extra)} beyond the served requests "
        f"({len(extra & cut)} of the cut ones)"
    )
    assert len(served) > 300 and len(cut) > 0, "too little load, or no request in flight at the kill"


class Probe:
    """One request sent from a background thread, so that a stalled one does not stall the test."""

    def __init__(self, gw: GatewayProcess, key: str, timeout: float) -> None:
        self.outcome: Outcome | None = None

        async def run() -> None:
            async with httpx.AsyncClient(base_url=gw.url, timeout=timeout) as client:
                self.outcome = await chat(client, key, stream=False, phase="probe")

        self._thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
        self._thread.start()

    def result(self) -> Outcome:
        self._thread.join()
        assert self.outcome is not None
        return self.outcome


@pytest.mark.parametrize("kind", ["refuse", "blackhole"])
def test_requests_flow_through_a_database_outage_and_every_row_arrives(proxy: TcpProxy, schema: str, kind: str) -> None:
    with GatewayProcess(config(proxy, schema)) as gw:
        key, key_hash = new_key(gw)
        uncached, _ = new_key(gw)  # never used before the outage: its lookup needs the database
        warm = one_chat(gw, key)  # cached from now on; past its 1 s lifetime the outage serves it from the cache
        load = Load(gw.url, key, clients=8).start()
        time.sleep(1.5)
        load.phase = "outage"
        proxy.refuse() if kind == "refuse" else proxy.blackhole()
        time.sleep(1.0)
        probe = Probe(gw, uncached, timeout=OUTAGE_SECONDS + 30)
        time.sleep(OUTAGE_SECONDS - 1.0)
        proxy.forward()
        load.phase = "after"
        restored = time.monotonic()
        time.sleep(1.5)
        outcomes = load.stop()
        probed, after = probe.result(), one_chat(gw, uncached)
        served = [o for o in (warm, *outcomes, probed, after) if o.complete]
        rows = wait_rows(schema, {o.request_id for o in served if o.request_id})
        caught_up = time.monotonic() - restored
        spend, cost = key_spend(schema, key_hash)
        logs = gw.logs()
    extra = check_rows(rows, served)
    failed = [o for o in outcomes if not o.complete]
    print(
        f"\ndatabase outage ({kind}, {OUTAGE_SECONDS:g} s): {len(outcomes)} requests, {len(failed)} failed; "
        f"{sum(map(len, rows.values()))} rows for {len(served)} requests served ({len(extra)} beyond them), all "
        f"in the database {caught_up:.1f} s after the restore\n  "
        + "\n  ".join(latencies(outcomes, phase) for phase in ("before", "outage", "after"))
        + f"\n  a key not cached: {probed.status} in {probed.latency:.2f} s during the outage, {after.status} "
        f"after it\n  the key's spend ${spend:.6f}, its rows' cost ${cost:.6f}"
    )
    assert warm.complete and not failed, collections.Counter((o.phase, o.status, o.error) for o in failed)
    assert sum(o.phase == "outage" for o in served) > 100
    assert not extra
    assert spend == pytest.approx(cost, rel=1e-9)  # the outage's spend was kept (with the rows) and written once
    # A request that needs the database fails, and soon (503: retry later): it does not wait for the database.
    assert probed.status == 503 and probed.latency < 8.0, (probed, logs[-3000:])
    assert "the database is unreachable" in logs and "the database answers again" in logs
    assert after.complete


def test_a_gateway_restarted_during_an_outage_serves_then_replays_once_the_database_is_back(
    proxy: TcpProxy, schema: str
) -> None:
    with GatewayProcess(config(proxy, schema)) as gw:
        key, key_hash = new_key(gw)
        served = [one_chat(gw, key, stream=n % 2 == 0) for n in range(20)]
        proxy.refuse()
        served += [one_chat(gw, key, stream=n % 2 == 0) for n in range(20)]
        assert all(o.complete for o in served)
        began = time.monotonic()
        assert gw.stop() == 0  # SIGTERM: the last flush fails; the rows stay in the spool
        stopped_in = time.monotonic() - began
        spool = gw.config_path.parent / "lockgate-spool"
        spooled = sum(p.read_bytes().count(b"\n") for p in spool.glob("spend-*.jsonl"))
        began = time.monotonic()
        gw.start()  # the database is unreachable: it starts anyway and keeps trying in the background
        started_in = time.monotonic() - began
        meanwhile = [one_chat(gw, MASTER_KEY, stream=n % 2 == 0) for n in range(10)]
        unseen = one_chat(gw, key)  # this process has not seen the key: the database alone knows it
        assert all(o.complete for o in meanwhile) and unseen.status == 503
        assert sum(p.read_bytes().count(b"\n") for p in spool.glob("spend-*.jsonl")) >= spooled  # kept
        proxy.forward()
        served += meanwhile
        rows = wait_rows(schema, {o.request_id for o in served if o.request_id})
        spend, cost = key_spend(schema, key_hash)
    extra = check_rows(rows, served)
    print(
        f"\nrestart during an outage: stopped in {stopped_in:.1f} s with {spooled} rows in the spool; started "
        f"again during the outage in {started_in:.1f} s and served {len(meanwhile)} master-key requests; then "
        f"{sum(map(len, rows.values()))} rows for {len(served)} requests; the key's spend ${spend:.6f}, its rows' "
        f"cost ${cost:.6f}"
    )
    assert spooled >= 20 and not extra
    assert spend == pytest.approx(cost, rel=1e-9)  # the key's spend waited in the spool with its rows
