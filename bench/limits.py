"""Micro-benchmark of the limiter core: admit + settle per second and their latency.

Run: ``python bench/limits.py [--url redis://127.0.0.1:6379/13] [--seconds 3] [--uvloop]``. Prints numbers,
asserts nothing.

Each request carries six limits, as a virtual key in a team would: the key's rpm, tpm, parallel and
budget, the team's rpm and budget (all generous, so every request is admitted). Measured for
:class:`LocalLimiter` and :class:`RedisLimiter` (its default 0.1 s timeout; scopes unique to the run, keys
deleted afterwards), with one client awaiting each request in turn, and with 16 concurrent clients.
Latency is one admit plus its settle, as the pipeline pays it. Each client yields to the event loop once per
request, as a server's request does (it reads and writes its socket): an admit answered from a lease never
suspends, and clients that never yield would starve the loop. For RedisLimiter the script calls sent per
request are printed too (``--lease-seconds 0``: no leases, every admit and settle asks Redis, as before them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio

from lockgate.limits import Ask, Limit, Limiter, LocalLimiter, RedisLimiter, Window


def limits(run: str) -> tuple[Limit, ...]:
    monthly = Window.parse("1mo", datetime(2026, 1, 1, tzinfo=UTC))
    key, team = f"key:bench-{run}", f"team:bench-{run}"
    return (
        Limit(key, "rpm", 1e12),
        Limit(key, "tpm", 1e15),
        Limit(key, "parallel", 1e6),
        Limit(key, "budget", 1e6, monthly),
        Limit(team, "rpm", 1e12),
        Limit(team, "budget", 1e6, monthly),
    )


async def measure(limiter: Limiter, run: str, clients: int, seconds: float) -> tuple[int, list[float], int]:
    chosen = limits(run)
    for limit in chosen:
        if limit.kind == "budget":
            await limiter.seed(limit, 0.0)
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    refused = 0

    async def client(n: int) -> None:
        nonlocal refused
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            started = time.perf_counter()
            admission = await limiter.admit(Ask(f"{n}.{i}", chosen, tokens=500, cost=0.002))
            if admission.ticket is None:
                refused += 1
                continue
            await limiter.settle(admission.ticket, tokens=480, cost=0.0019)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0)

    await asyncio.gather(*(client(n) for n in range(clients)))
    return len(latencies), latencies, refused


def row(name: str, clients: int, done: int, latencies: list[float], refused: int, seconds: float, calls: str) -> str:
    if not latencies:
        return f"{name:14} {clients:>3}   nothing admitted ({refused} refused)"
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6
    note = f"  ({refused} refused or degraded)" if refused else ""
    return f"{name:14} {clients:>3} {done / seconds:>14,.0f} {p50:>8,.0f} {p99:>8,.0f} {calls:>10}{note}"


async def main(url: str, seconds: float, lease_seconds: float) -> None:
    tag = os.urandom(4).hex()
    print(f"{'limiter':14} {'clients':>3} {'admit+settle/s':>14} {'p50 µs':>8} {'p99 µs':>8} {'calls/req':>10}")
    for clients in (1, 16):
        local = LocalLimiter()
        done, latencies, refused = await measure(local, f"{tag}-l{clients}", clients, seconds)
        print(row("LocalLimiter", clients, done, latencies, refused, seconds, "-"))
    for clients in (1, 16):
        limiter = RedisLimiter.from_url(url, lease_seconds=lease_seconds)
        done, latencies, refused = await measure(limiter, f"{tag}-r{clients}", clients, seconds)
        calls = f"{limiter.script_calls / max(1, done + refused):.4f}"
        print(row("RedisLimiter", clients, done, latencies, refused, seconds, calls))
        await limiter.close()
    cleaner = redis.asyncio.Redis.from_url(url)
    stale = [key async for key in cleaner.scan_iter(match=f"lockgate:*bench-{tag}*", count=1000)]
    if stale:
        await cleaner.delete(*stale)
    await cleaner.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (as the gateway does)")
    parser.add_argument("--lease-seconds", type=float, default=0.25, help="RedisLimiter's leases (0: none)")
    options = parser.parse_args()
    if options.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(options.url, options.seconds, options.lease_seconds))
