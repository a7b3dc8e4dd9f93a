"""Measure candidate HTTP stacks for lockgate's request path against a direct call to the mock upstream.

Run from the repo root with the project venv:  ``.venv/bin/python bench/stack/run.py``
Options: ``--only a,d`` (candidate letters), ``--duration 5`` (s per wrk run), ``--no-pin``,
``--json PATH`` (raw numbers).

For each candidate it starts a fresh mock upstream (bench/mock_upstream.py) and the candidate proxy
(one process/worker) and then, after functional checks and a warm-up:

* wrk (1 thread, Lua script POSTing a ~650-byte chat body with the auth header, non-streaming):
  req/s at 1, 16 and 64 connections, latency p50/p99 at 1 connection; the same against the mock
  directly (the baseline, measured in the same run);
* a "slow upstream" run: 200 connections, the mock holding each answer 100 ms (``mock_delay_ms``
  in the body), to see overhead with many requests in flight;
* proxy CPU per request (utime+stime of its process tree / requests) and peak RSS (VmHWM summed
  over the process tree);
* streaming: time to first byte and to the end of the SSE stream over ~300 sequential requests
  with an aiohttp client, direct vs proxied (the mock spaces its SSE events 1 ms apart, so a
  proxy that buffered would show TTFB ~= total); the proxied stream must equal the direct one.

CPU pinning (default): the server under test (the proxy, or the mock in direct runs) on CPU 0;
wrk, this script and, in proxied runs, the mock on CPU 1. Every loop is bounded in time and all
subprocesses are killed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MOCK = HERE.parent / "mock_upstream.py"
PY = sys.executable
AUTH = "Bearer sk-master"
CHAT = "/v1/chat/completions"
TICK = os.sysconf("SC_CLK_TCK")

CANDIDATES: dict[str, tuple[str, str]] = {
    "a": ("uvicorn+asgi+aiohttp", "a_uvicorn_aiohttp.py"),
    "b": ("uvicorn+asgi+httpx", "b_uvicorn_httpx.py"),
    "c": ("granian+asgi+aiohttp", "c_granian_aiohttp.py"),
    "d": ("protocol+httptools+aiohttp", "d_protocol_aiohttp.py"),
    "e": ("aiohttp.web+aiohttp", "e_aiohttp_web.py"),
}

# A realistic ~650-byte non-streaming chat request.
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {
            "role": "system",
            "content": "You are a concise, accurate assistant for an internal engineering help desk. "
            "Answer in plain English, cite the relevant runbook when you can, and say so when unsure.",
        },
        {
            "role": "user",
            "content": "Our nightly export job failed with 'connection reset by peer' after 40 minutes. "
            "What are the three most likely causes and what should I check first?",
        },
        {"role": "assistant", "content": "Could you tell me which database and which export tool you use?"},
        {"role": "user", "content": "Postgres 15 and pg_dump, running from a cron container on k8s."},
    ],
    "temperature": 0.2,
    "max_tokens": 256,
    "user": "bench-user-0042",
}


def body_bytes(**extra: Any) -> bytes:
    return json.dumps({**CHAT_BODY, **extra}, separators=(",", ":")).encode()


LUA_TEMPLATE = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "%(auth)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,' ..
    '"timeout":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"mean":%%.1f,"max":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


# ---------------------------------------------------------------- process management
Proc = subprocess.Popen[bytes]
PROCS: list[Proc] = []


def spawn(cmd: list[str], cpu: int | None, log: Path, env: dict[str, str] | None = None) -> Proc:
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    with open(log, "wb") as fh:
        out = subprocess.STDOUT
        p = subprocess.Popen(cmd, stdout=fh, stderr=out, env=env, cwd=ROOT, start_new_session=True)
    PROCS.append(p)
    return p


def stop(p: Proc) -> None:
    """Stop one process we started (and its own process group, e.g. granian's worker)."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
    else:  # leader gone; make sure no child of its group lingers
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
    if p in PROCS:
        PROCS.remove(p)


def stop_all() -> None:
    for p in list(PROCS):
        with contextlib.suppress(Exception):
            stop(p)


def cpu_ticks() -> tuple[int, int]:
    """(total, steal) jiffies from /proc/stat: a VM's stolen time makes numbers noisier."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f[:8]), f[7]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready_log(log: Path, needle: str, p: Proc, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in log.read_text(errors="replace"):
            return
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"not ready: {log.read_text(errors='replace')[-2000:]}")


def wait_port(port: int, p: Proc, log: Path, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if p.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"proxy did not listen on {port}: {log.read_text(errors='replace')[-2000:]}")


def tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc/*/stat."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [pid], [pid]
    while frontier:
        cur = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == cur]
        out += kids
        frontier += kids
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for q in tree(pid):
        with contextlib.suppress(OSError):
            f = Path(f"/proc/{q}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / TICK  # utime, stime
    return total


def peak_rss_mb(pid: int) -> tuple[float, int]:
    total, n = 0, 0
    for q in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{q}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
                    n += 1
    return total / 1024, n


# ---------------------------------------------------------------- measurements
@dataclass
class Wrk:
    rps: float
    p50_us: int
    p99_us: int
    errors: int
    requests: int
    cpu_us_per_req: float | None = None
    cpu_pct: float | None = None


def run_wrk(url: str, lua: Path, conns: int, duration: float, cpu: int | None, server_pid: int | None) -> Wrk:
    secs_arg = f"-d{max(1, round(duration))}s"
    cmd = ["wrk", "-t1", f"-c{conns}", secs_arg, "--timeout", "5s", "-s", str(lua), url]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    c0 = cpu_seconds(server_pid) if server_pid else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=False).stdout
    c1 = cpu_seconds(server_pid) if server_pid else 0.0
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    d = json.loads(line[8:])
    secs = d["duration_us"] / 1e6
    errs = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    w = Wrk(d["requests"] / secs, d["p50"], d["p99"], errs, d["requests"])
    if server_pid and d["requests"]:
        w.cpu_us_per_req = (c1 - c0) / d["requests"] * 1e6
        w.cpu_pct = (c1 - c0) / secs * 100
    return w


@dataclass
class Stream:
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    total_p50_ms: float
    n: int
    body_ok: bool


async def stream_probe(url: str, n: int, budget_s: float, expected: bytes | None) -> tuple[Stream, bytes]:
    body = body_bytes(stream=True, stream_options={"include_usage": True})
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}
    ttfb: list[float] = []
    total: list[float] = []
    last = b""
    ok = True
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=10)) as s:
        end = time.monotonic() + budget_s
        for i in range(n + 10):
            if time.monotonic() > end:
                break
            t0 = time.perf_counter()
            async with s.post(url, data=body, headers=headers) as r:
                first = await r.content.readany()
                t1 = time.perf_counter()
                rest = await r.read()
                t2 = time.perf_counter()
            if r.status != 200 or not r.headers.get("Content-Type", "").startswith("text/event-stream"):
                ok = False
            last = first + rest
            if expected is not None and last != expected:
                ok = False
            if i >= 10:  # first 10 are warm-up
                ttfb.append((t1 - t0) * 1000)
                total.append((t2 - t0) * 1000)
    ttfb.sort()
    return (
        Stream(
            statistics.median(ttfb),
            ttfb[min(len(ttfb) - 1, int(len(ttfb) * 0.99))],
            statistics.median(total),
            len(ttfb),
            ok and last.endswith(b"data: [DONE]\n\n"),
        ),
        last,
    )


async def functional_checks(proxy: str, direct: str) -> list[str]:
    """Return a list of problems (empty = OK)."""
    bad: list[str] = []
    good = {"Authorization": AUTH, "Content-Type": "application/json"}
    body = body_bytes()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.post(direct, data=body, headers=good) as r:
            want = await r.read()
        for hdrs, label in (({}, "no auth"), ({"Authorization": "Bearer sk-masteR"}, "wrong key")):
            async with s.post(proxy, data=body, headers=hdrs) as r:
                if r.status != 401:
                    bad.append(f"{label}: status {r.status}, want 401")
        async with s.post(proxy, data=body, headers=good) as r:
            got = await r.read()
            ctype = r.headers.get("Content-Type", "")
            if r.status != 200 or got != want or not ctype.startswith("application/json"):
                bad.append(f"chat: status {r.status} ctype {ctype} same={got == want}")
    return bad


@dataclass
class Result:
    name: str
    wrk: dict[int, Wrk] = field(default_factory=dict)
    slow: Wrk | None = None
    rss_mb: float = 0.0
    nprocs: int = 0
    stream: Stream | None = None
    error: str | None = None


def measure(label: str, url: str, pid: int, lua: Path, slow: Path, dur: float, cpu: int | None) -> Result:
    res = Result(label)
    run_wrk(url, lua, 16, 2, cpu, None)  # warm-up
    for c in (1, 16, 64):
        res.wrk[c] = run_wrk(url, lua, c, dur, cpu, pid)
    run_wrk(url, slow, 200, 2, cpu, None)  # warm-up: grow the upstream pool to 200 connections
    res.slow = run_wrk(url, slow, 200, dur, cpu, pid)
    return res


def bench_candidate(key: str, args: argparse.Namespace, tmp: Path, lua: Path, slow: Path) -> list[Result]:
    """Return [direct baseline, candidate]."""
    name, script = CANDIDATES[key]
    pin = not args.no_pin
    srv_cpu, aux_cpu = (0, 1) if pin else (None, None)
    mport, pport = free_port(), free_port()
    mlog, plog = tmp / f"mock_{key}.log", tmp / f"proxy_{key}.log"
    direct_url = f"http://127.0.0.1:{mport}{CHAT}"
    proxy_url = f"http://127.0.0.1:{pport}{CHAT}"
    mock = proxy = None
    direct = Result(f"  direct mock ({key})")
    res = Result(f"{key}. {name}")
    try:
        # direct baseline: the mock is the server under test, on the server CPU
        mock = spawn([PY, str(MOCK), "--port", str(mport), "--stream-gap-ms", "1"], srv_cpu, mlog)
        wait_ready_log(mlog, f"READY {mport}", mock)
        direct = measure(direct.name, direct_url, mock.pid, lua, slow, args.duration, aux_cpu)
        direct.rss_mb, direct.nprocs = peak_rss_mb(mock.pid)
        direct.stream, expected = asyncio.run(stream_probe(direct_url, args.stream_n, 30, None))
        # proxied: the proxy gets the server CPU, the mock moves next to wrk
        if pin:
            move = ["taskset", "-a", "-p", "-c", str(aux_cpu), str(mock.pid)]
            subprocess.run(move, capture_output=True, check=True)
        env = {**os.environ, "LOCKGATE_BENCH_UPSTREAM": direct_url, "PYTHONUNBUFFERED": "1"}
        proxy = spawn([PY, str(HERE / script), "--port", str(pport)], srv_cpu, plog, env)
        wait_port(pport, proxy, plog)
        problems = asyncio.run(functional_checks(proxy_url, direct_url))
        if problems:
            raise RuntimeError("functional check failed: " + "; ".join(problems))
        res = measure(res.name, proxy_url, proxy.pid, lua, slow, args.duration, aux_cpu)
        res.stream, _ = asyncio.run(stream_probe(proxy_url, args.stream_n, 30, expected))
        res.rss_mb, res.nprocs = peak_rss_mb(proxy.pid)
    except Exception as exc:  # keep going with the next candidate
        res.error = f"{type(exc).__name__}: {exc}"[:600]
        if proxy is not None and plog.exists():
            res.error += "\n" + plog.read_text(errors="replace")[-600:]
    finally:
        for p in (proxy, mock):
            if p is not None:
                stop(p)
    return [direct, res]


# ---------------------------------------------------------------- reporting
def fmt_table(pairs: list[list[Result]]) -> str:
    hdr = (
        "| stack | rps c1 | rps c16 | rps c64 | x direct c64 | p50 c1 µs | p99 c1 µs | +p50 µs"
        " | CPU µs/req c64 | CPU% c64 | slow c200: rps / p99 ms | RSS MB (procs) | SSE TTFB p50 ms"
        " | +TTFB ms | SSE total p50 ms | errs |"
    )
    lines = [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for direct, res in pairs:
        for r in (direct, res):
            if r.error:
                lines.append(f"| {r.name} | FAILED: {r.error.splitlines()[0]} |")
                continue
            if not r.wrk:
                continue
            w1, w16, w64 = r.wrk[1], r.wrk[16], r.wrk[64]
            is_proxy = r is res and bool(direct.wrk)
            ratio = f"{w64.rps / direct.wrk[64].rps:.2f}" if is_proxy else "1.00"
            added = f"{w1.p50_us - direct.wrk[1].p50_us:+d}" if is_proxy else "-"
            st = r.stream
            ttfb = f"{st.ttfb_p50_ms:.2f}" if st else "-"
            dttfb = "-"
            if is_proxy and st and direct.stream:
                dttfb = f"{st.ttfb_p50_ms - direct.stream.ttfb_p50_ms:+.2f}"
            total = (f"{st.total_p50_ms:.1f}" + ("" if st.body_ok else " BAD")) if st else "-"
            slow = f"{r.slow.rps:.0f} / {r.slow.p99_us / 1000:.1f}" if r.slow else "-"
            errs = sum(w.errors for w in r.wrk.values()) + (r.slow.errors if r.slow else 0)
            lines.append(
                f"| {r.name} | {w1.rps:.0f} | {w16.rps:.0f} | {w64.rps:.0f} | {ratio} | {w1.p50_us}"
                f" | {w1.p99_us} | {added} | {w64.cpu_us_per_req or 0:.0f} | {w64.cpu_pct or 0:.0f} | {slow}"
                f" | {r.rss_mb:.1f} ({r.nprocs}) | {ttfb} | {dttfb} | {total} | {errs} |"
            )
    return "\n".join(lines)


def as_json(r: Result) -> dict[str, Any]:
    return r.__dict__ | {
        "wrk": {k: v.__dict__ for k, v in r.wrk.items()},
        "slow": r.slow.__dict__ if r.slow else None,
        "stream": r.stream.__dict__ if r.stream else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description="lockgate HTTP stack benchmark")
    ap.add_argument("--only", default="abcde", help="candidate letters, e.g. 'ad' or 'a,d'")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--stream-n", type=int, default=300, help="sequential SSE requests per side")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--json", type=Path, default=None, help="write raw results as JSON here")
    args = ap.parse_args()
    keys = [k for k in args.only.replace(",", "") if k in CANDIDATES]
    if not args.no_pin:
        if (os.cpu_count() or 1) < 2:
            args.no_pin = True
        else:
            os.sched_setaffinity(0, {1})  # this script (the SSE client) lives with wrk

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    ticks0 = cpu_ticks()
    pairs: list[list[Result]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="lockgate-stack-") as td:
            tmp = Path(td)
            lua, slow_lua = tmp / "chat.lua", tmp / "slow.lua"
            lua.write_text(LUA_TEMPLATE % {"body": body_bytes().decode(), "auth": AUTH})
            slow_lua.write_text(LUA_TEMPLATE % {"body": body_bytes(mock_delay_ms=100).decode(), "auth": AUTH})
            print(
                f"chat body: {len(body_bytes())} bytes; wrk {args.duration:.0f}s per point;",
                f"pinned={not args.no_pin}",
            )
            for k in keys:
                t0 = time.monotonic()
                pair = bench_candidate(k, args, tmp, lua, slow_lua)
                pairs.append(pair)
                err = f"  ERROR {pair[1].error}" if pair[1].error else ""
                print(f"[{k}] {CANDIDATES[k][0]}: {time.monotonic() - t0:.0f}s{err}", flush=True)
    finally:
        stop_all()
    print()
    print(fmt_table(pairs))
    ticks1 = cpu_ticks()
    steal = (ticks1[1] - ticks0[1]) / max(1, ticks1[0] - ticks0[0]) * 100
    print(f"\nwall time {time.monotonic() - started:.0f}s; CPU steal during the run {steal:.1f}%")
    if args.json:
        args.json.write_text(json.dumps([[as_json(r) for r in pair] for pair in pairs], indent=1))
    return 0 if all(not pair[1].error for pair in pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
