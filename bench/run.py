"""Benchmark: lockgate against a direct call to the same fast mock upstream, in the same run.

Run: ``make bench`` (or ``python bench/run.py [--duration 5] [--rate 2000] [--json out.json]``).

Measures, each for the direct path (client -> mock) and the gateway path (client -> lockgate -> mock):
requests/s at 1, 16 and 64 connections (wrk, master-key auth), p50/p99 latency at 1 connection (also with
everything on one core, where no cross-core wake-up is paid: see ``colocated``), time to
first token and completed streams/s at 1 and 16 concurrent streams, an open-loop run at a fixed arrival
rate against a 50 ms upstream (p50/p99 and requests not finished), the gateway's peak RSS and its cold
start (process start to first answered chat completion). Prints one table with absolute numbers, the
added latency and the gateway/direct ratio.

On a machine with two or more cores the gateway is pinned to core 0 and the mock and load generators to
the others, so that they do not fight for the gateway's core. wrk is installed from Debian if missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
KEY = "sk-bench-master-key-0123456789abcdef"
GOVERNED_REDIS = "redis://127.0.0.1:6379/11"
# Limits a governed key is under: high enough never to refuse during the bench, so every request pays for
# checking and counting all of them (rpm, tpm, parallel, budget) and for settling its cost.
GOVERNED_LIMITS = {"rpm_limit": 10**9, "tpm_limit": 10**12, "max_parallel_requests": 10**6, "max_budget": 10**6}
BODY = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."},
        {"role": "user", "content": "What is the capital of France? " + "Please answer in one sentence. " * 12},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
}
CORES = os.cpu_count() or 1
PROCS: list[subprocess.Popen[bytes]] = []


def pin(core: str) -> list[str]:
    return ["taskset", "-c", core] if CORES >= 2 and shutil.which("taskset") else []


GATEWAY_CORE = "0"
LOAD_CORES = f"1-{CORES - 1}" if CORES >= 2 else "0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    PROCS.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.01)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing Debian's package", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is needed: apt-get install wrk")
    return found


# --- wrk -----------------------------------------------------------------------------------------------


@dataclass
class Wrk:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def run_wrk(wrk: str, url: str, lua: Path, conns: int, duration: float) -> Wrk:
    threads = 1 if conns < 4 else 2
    cmd = [
        *pin(LOAD_CORES),
        wrk,
        f"-t{threads}",
        f"-c{conns}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    errors = sum(int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|timeout|connect|read|write):?\s+(\d+)", out))
    return Wrk(rps, _ms(p50.group(1)) if p50 else float("nan"), _ms(p99.group(1)) if p99 else float("nan"), errors)


def write_lua(path: Path, body: dict[str, Any], key: str = KEY) -> None:
    payload = json.dumps(body).replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{payload}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )


def virtual_key(port: int, **limits: Any) -> str:
    """A virtual key made through /key/generate, allowed the bench models (and under ``limits``)."""
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/key/generate",
        data=json.dumps({"models": ["bench", "bench-slow"], "key_alias": f"bench-{port}", **limits}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # loopback
        return str(json.loads(response.read())["key"])


# --- asyncio clients (streams, open loop): run in a child process pinned to the load cores ------------

CLIENT = r"""
import asyncio, json, sys, time
import aiohttp
try:
    import uvloop; uvloop.install()
except ImportError:
    pass

async def streams(url, body, key, conc, duration):
    ttft, done, failed = [], 0, 0
    conn = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
    payload = json.dumps(body).encode()
    async with aiohttp.ClientSession(connector=conn) as s:
        stop = time.perf_counter() + duration
        async def worker():
            nonlocal done, failed
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    async with s.post(url, data=payload, headers=headers) as r:
                        first = None
                        async for chunk in r.content.iter_any():
                            if first is None:
                                first = time.perf_counter()
                        if r.status == 200 and first is not None:
                            ttft.append((first - t0) * 1000); done += 1
                        else:
                            failed += 1
                except Exception:
                    failed += 1
        await asyncio.gather(*(worker() for _ in range(conc)))
    return {"ttft": ttft, "done": done, "failed": failed}

async def open_loop(url, body, key, rate, duration, timeout):
    lat, ok, failed = [], 0, 0
    conn = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
    payload = json.dumps(body).encode()
    tmo = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=conn, timeout=tmo) as s:
        async def one():
            nonlocal ok, failed
            t0 = time.perf_counter()
            try:
                async with s.post(url, data=payload, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        lat.append((time.perf_counter() - t0) * 1000); ok += 1
                    else:
                        failed += 1
            except Exception:
                failed += 1
        tasks = []
        total = int(rate * duration)
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        lag = (time.perf_counter() - start) - duration
        await asyncio.gather(*tasks)
    return {"lat": lat, "ok": ok, "failed": failed, "sent": total, "schedule_lag_s": lag}

def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

mode, args = sys.argv[1], json.loads(sys.argv[2])
fn = streams if mode == "streams" else open_loop
result = asyncio.run(fn(**args))
for name in ("ttft", "lat"):
    if name in result:
        values = result.pop(name)
        result[name + "_p50"], result[name + "_p99"] = pct(values, 0.5), pct(values, 0.99)
print(json.dumps(result))
"""


def run_client(mode: str, **args: Any) -> dict[str, Any]:
    cmd = [*pin(LOAD_CORES), PY, "-c", CLIENT, mode, json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- the run -------------------------------------------------------------------------------------------


@dataclass
class Side:
    wrk: dict[int, Wrk] = field(default_factory=dict)
    streams: dict[int, dict[str, float]] = field(default_factory=dict)
    open_loop: dict[str, float] = field(default_factory=dict)
    same_core: dict[str, float] = field(default_factory=dict)
    virtual_key: dict[int, Wrk] = field(default_factory=dict)
    governed: dict[int, Wrk] = field(default_factory=dict)


@contextlib.contextmanager
def colocated(pid: int | None) -> Any:
    """Move the gateway onto the load core for single-connection latency: no cross-core wake-ups
    (on a VM, waking an idle core costs tens of microseconds per hop, which swamps the gateway's own work)."""
    if pid is None or CORES < 2:
        yield
        return
    before = os.sched_getaffinity(pid)
    os.sched_setaffinity(pid, {int(LOAD_CORES.split("-")[0])})
    try:
        yield
    finally:
        os.sched_setaffinity(pid, before)


def gateway_config(fast: int, slow: int, governed: bool = False) -> str:
    """The bench models; ``governed``: priced, with limits shared through Redis (db 11) and spend in SQLite."""
    prices = "    model_info: {input_cost_per_token: 1.5e-07, output_cost_per_token: 6.0e-07}\n" if governed else ""
    config = (
        "model_list:\n"
        f"  - model_name: bench\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{fast}/v1\n      api_key: sk-upstream-bench\n{prices}"
        f"  - model_name: bench-slow\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{slow}/v1\n      api_key: sk-upstream-bench\n{prices}"
    )
    if governed:
        config += f"router_settings:\n  redis_url: {GOVERNED_REDIS}\n"
    return config


def start_gateway(config: Path, port: int, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Start lockgate; return it and its cold start (spawn to first answered chat completion), seconds."""
    import urllib.request

    env = {**os.environ, "LITELLM_MASTER_KEY": KEY}
    cmd = [*pin(GATEWAY_CORE), PY, "-m", "lockgate.cli", "serve", "--config", str(config), "--port", str(port)]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(BODY).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    proc = spawn(cmd, log, env)
    deadline = t0 + 20
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status == 200:
                    return proc, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.002)
    raise RuntimeError("gateway did not answer in 20 s:\n" + log.read_text())


def measure(url: str, slow_url: str, lua: Path, wrk: str, args: argparse.Namespace, pid: int | None) -> Side:
    side = Side()
    run_wrk(wrk, url, lua, 16, 2)  # warm up pools and caches
    with colocated(pid):
        one = run_wrk(wrk, url, lua, 1, args.duration)
        stream = run_client("streams", url=url, body={**BODY, "stream": True}, key=KEY, conc=1, duration=args.duration)
    side.same_core = {"p50_ms": one.p50_ms, "p99_ms": one.p99_ms, "ttft_p50_ms": stream["ttft_p50"]}
    for conns in (1, 16, 64):
        side.wrk[conns] = run_wrk(wrk, url, lua, conns, args.duration)
    stream_body = {**BODY, "stream": True}
    for conc in (1, 16):
        result = run_client("streams", url=url, body=stream_body, key=KEY, conc=conc, duration=args.duration)
        side.streams[conc] = {
            "ttft_p50_ms": result["ttft_p50"],
            "ttft_p99_ms": result["ttft_p99"],
            "streams_per_s": result["done"] / args.duration,
            "failed": result["failed"],
        }
    body = {**BODY, "model": "bench-slow"}
    result = run_client(
        "open_loop", url=slow_url, body=body, key=KEY, rate=args.rate, duration=args.open_duration, timeout=10
    )
    side.open_loop = {
        "sent": result["sent"],
        "ok": result["ok"],
        "not_finished": result["sent"] - result["ok"],
        "p50_ms": result["lat_p50"],
        "p99_ms": result["lat_p99"],
        "schedule_lag_s": result["schedule_lag_s"],
    }
    return side


def table(direct: Side, gateway: Side, rss: float, cold: float, args: argparse.Namespace) -> str:
    rows = [f"{'metric':44} {'direct':>11} {'lockgate':>11} {'added / ratio':>16}"]

    def row(name: str, d: float, g: float, kind: str) -> None:
        extra = f"{g / d:.2f}x" if kind == "ratio" and d else f"+{g - d:.3f} ms"
        rows.append(f"{name:44} {d:11.3f} {g:11.3f} {extra:>16}")

    for conns in (1, 16, 64):
        row(f"requests/s, {conns} connection(s)", direct.wrk[conns].rps, gateway.wrk[conns].rps, "ratio")
    row("latency p50, 1 connection (ms)", direct.wrk[1].p50_ms, gateway.wrk[1].p50_ms, "added")
    row("latency p99, 1 connection (ms)", direct.wrk[1].p99_ms, gateway.wrk[1].p99_ms, "added")
    row("latency p50, 16 connections (ms)", direct.wrk[16].p50_ms, gateway.wrk[16].p50_ms, "added")
    if gateway.virtual_key:
        vk = gateway.virtual_key
        row("virtual key: requests/s, 16 connections", direct.wrk[16].rps, vk[16].rps, "ratio")
        row("virtual key: latency p50, 1 connection (ms)", direct.wrk[1].p50_ms, vk[1].p50_ms, "added")
    if gateway.governed:
        gv = gateway.governed
        row("governed: requests/s, 16 connections", direct.wrk[16].rps, gv[16].rps, "ratio")
        row("governed: latency p50, 1 connection (ms)", direct.wrk[1].p50_ms, gv[1].p50_ms, "added")
        bare = gateway.virtual_key.get(16) or gateway.wrk[16]
        rows.append(f"{'governed / bare virtual key, 16 connections':44} {'':11} {gv[16].rps / bare.rps:11.2f}x")
    d1, g1 = direct.same_core, gateway.same_core
    row("same core: latency p50, 1 connection (ms)", d1["p50_ms"], g1["p50_ms"], "added")
    row("same core: latency p99, 1 connection (ms)", d1["p99_ms"], g1["p99_ms"], "added")
    row("same core: first token p50, 1 stream (ms)", d1["ttft_p50_ms"], g1["ttft_p50_ms"], "added")
    for conc in (1, 16):
        d, g = direct.streams[conc], gateway.streams[conc]
        row(f"time to first token p50, {conc} stream(s) (ms)", d["ttft_p50_ms"], g["ttft_p50_ms"], "added")
        row(f"time to first token p99, {conc} stream(s) (ms)", d["ttft_p99_ms"], g["ttft_p99_ms"], "added")
        row(f"complete streams/s, {conc} stream(s)", d["streams_per_s"], g["streams_per_s"], "ratio")
    d, g = direct.open_loop, gateway.open_loop
    row(f"open loop {args.rate}/s, 50 ms upstream: p50 (ms)", d["p50_ms"], g["p50_ms"], "added")
    row(f"open loop {args.rate}/s, 50 ms upstream: p99 (ms)", d["p99_ms"], g["p99_ms"], "added")
    rows.append(f"{'open loop: requests not finished':44} {d['not_finished']:11d} {g['not_finished']:11d}")
    rows.append(f"{'open loop: sent':44} {d['sent']:11d} {g['sent']:11d}")
    errors = [sum(w.errors for w in s.wrk.values()) for s in (direct, gateway)]
    rows.append(f"{'wrk errors (non-2xx, timeouts, socket)':44} {errors[0]:11d} {errors[1]:11d}")
    rows.append(f"{'lockgate peak RSS (MB)':44} {'':11} {rss:11.1f}")
    rows.append(f"{'lockgate cold start to first answer (s)':44} {'':11} {cold:11.3f}")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description="lockgate vs direct, same mock, same run")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk/stream measurement")
    parser.add_argument("--rate", type=int, default=2000, help="open-loop arrival rate (requests/s)")
    parser.add_argument("--open-duration", type=float, default=10.0, help="seconds of open-loop load")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-bench-"))
    try:
        fast, slow, port = free_port(), free_port(), free_port()
        mock = [*pin(LOAD_CORES), PY, str(ROOT / "bench" / "mock_upstream.py")]
        spawn([*mock, "--port", str(fast)], tmp / "mock.log")
        spawn([*mock, "--port", str(slow), "--delay-ms", "50"], tmp / "mock-slow.log")
        wait_port(fast)
        wait_port(slow)
        config = tmp / "config.yaml"
        config.write_text(gateway_config(fast, slow))
        gateway, cold = start_gateway(config, port, tmp / "gateway.log")
        lua = tmp / "chat.lua"
        write_lua(lua, BODY)
        print(f"cores: {CORES}; gateway on core {GATEWAY_CORE}, mock and load on {LOAD_CORES}", file=sys.stderr)
        print("measuring direct...", file=sys.stderr)
        direct = measure(f"http://127.0.0.1:{fast}/v1/chat/completions",
                         f"http://127.0.0.1:{slow}/v1/chat/completions", lua, wrk, args, None)  # fmt: skip
        print("measuring lockgate...", file=sys.stderr)
        gw_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        through = measure(gw_url, gw_url, lua, wrk, args, gateway.pid)
        print("measuring lockgate with a virtual key...", file=sys.stderr)
        key_lua = tmp / "chat-virtual-key.lua"
        write_lua(key_lua, BODY, virtual_key(port))
        through.virtual_key = {c: run_wrk(wrk, gw_url, key_lua, c, args.duration) for c in (1, 16)}
        rss = peak_rss_mb(gateway.pid)
        print("measuring lockgate governed (key limits + budget, Redis)...", file=sys.stderr)
        stop(gateway)
        import redis

        redis.Redis.from_url(GOVERNED_REDIS).flushdb()
        governed_config, governed_port = tmp / "governed.yaml", free_port()
        governed_config.write_text(gateway_config(fast, slow, governed=True))
        start_gateway(governed_config, governed_port, tmp / "governed.log")
        governed_lua = tmp / "chat-governed.lua"
        write_lua(governed_lua, BODY, virtual_key(governed_port, **GOVERNED_LIMITS))
        governed_url = f"http://127.0.0.1:{governed_port}/v1/chat/completions"
        run_wrk(wrk, governed_url, governed_lua, 16, 2)  # warm up
        through.governed = {c: run_wrk(wrk, governed_url, governed_lua, c, args.duration) for c in (1, 16)}
        print(table(direct, through, rss, cold, args))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            payload = {"direct": asdict(direct), "lockgate": asdict(through), "rss_mb": rss, "cold_start_s": cold}
            args.json.write_text(json.dumps(payload, indent=2, default=str))
        return 0
    finally:
        for proc in PROCS:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
