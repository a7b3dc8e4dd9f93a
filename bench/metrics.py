"""What the Prometheus metrics cost: microseconds per emit (the event loop pays it for every request), a scrape's
render time, and requests/s through a gateway with metrics on (the default) and off, alternated, medians.

Run: ``python bench/metrics.py [--duration 4] [--rounds 5] [--micro-only] [--no-ledger]``. Uses bench/run.py's
mock upstream, wrk and core pinning (gateway on core 0, mock and wrk on the others).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run as b
from lockgate.metrics import DeploymentView, Live, Metrics
from lockgate.observe import AttemptRecord, RequestRecord


def _record(stream: bool) -> RequestRecord:
    usage = {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160,
             "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}}  # fmt: skip
    return RequestRecord(
        "0123456789abcdef01234567", "/v1/chat/completions", 200, model_group="bench", requested_model="bench",
        deployment_id="a1b2c3d4", provider="openai", stream=stream, attempts=1, usage=usage, latency_ms=1.2,
        first_token_ms=0.6 if stream else None, cost=0.0001, team_id="team-1", key_alias="bench",
        attempt_log=[AttemptRecord("a1b2c3d4", "openai", "bench", 0.1, 1.0, None, 200, "answered")],
    )  # fmt: skip


def micro(n: int = 200_000) -> None:
    for name, metrics, record in (
        ("plain answer", Metrics(), _record(False)),
        ("stream (ttft, tokens/s)", Metrics(), _record(True)),
        ("plain answer, metrics_labels [team, key]", Metrics(labels=("team", "key")), _record(False)),
    ):
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                metrics.emit(record)
            best.append((time.perf_counter() - t0) / n * 1e6)
        print(f"emit, {name}: {min(best):.2f} us (median of 5 runs {statistics.median(best):.2f} us)")
    metrics = Metrics()
    for i in range(200):  # 200 label sets of requests and histograms: 50 deployments x 4 shapes
        r = _record(i % 2 == 0)
        r.deployment_id, r.usage = f"dep-{i // 4}", {"prompt_tokens": 500 * 4 ** (i % 4), "completion_tokens": 40}
        metrics.emit(r)
    live = Live(16, [DeploymentView(f"dep-{i}", "bench", "openai", 1, "healthy") for i in range(50)])
    t0 = time.perf_counter()
    for _ in range(20):
        body = metrics.exposition(live)
    lines = body.count(b"\n")
    print(f"scrape of 200 label sets ({len(body) // 1024} KiB, {lines} lines): "
          f"{(time.perf_counter() - t0) / 20 * 1000:.1f} ms")  # fmt: skip


def ab(duration: float, rounds: int, ledger: bool) -> None:
    wrk = b.ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    try:
        fast, slow = b.free_port(), b.free_port()
        mock = [*b.pin(b.LOAD_CORES), b.PY, str(b.ROOT / "bench" / "mock_upstream.py")]
        b.spawn([*mock, "--port", str(fast)], tmp / "mock.log")
        b.spawn([*mock, "--port", str(slow), "--delay-ms", "50"], tmp / "mock-slow.log")
        b.wait_port(fast)
        b.wait_port(slow)
        urls = {}
        for name, extra in (("on", ""), ("off", "lockgate:\n  metrics: off\n")):
            (tmp / name).mkdir()
            config = tmp / name / "config.yaml"
            general = "" if ledger else "general_settings:\n  disable_spend_logs: true\n"
            config.write_text(b.gateway_config(fast, slow) + extra + general)
            port = b.free_port()
            b.start_gateway(config, port, tmp / name / "gateway.log")
            urls[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
        lua = tmp / "master.lua"
        b.write_lua(lua, b.BODY)
        for url in urls.values():  # warm-up
            b.run_wrk(wrk, url, lua, 16, 2)
        found: dict[str, list[float]] = {name: [] for name in urls}
        for _ in range(rounds):
            for name, url in urls.items():
                found[name].append(b.run_wrk(wrk, url, lua, 16, duration).rps)
        for name, values in found.items():
            print(f"metrics {name}: requests/s at 16 connections {' '.join(f'{v:.0f}' for v in values)}; "
                  f"median {statistics.median(values):.0f}")  # fmt: skip
        ratio = statistics.median(found["on"]) / statistics.median(found["off"])
        print(f"on/off: {ratio:.3f}")
    finally:
        for proc in b.PROCS:
            b.stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--micro-only", action="store_true")
    parser.add_argument("--no-ledger", action="store_true", help="both gateways without the spend ledger")
    args = parser.parse_args()
    micro()
    if not args.micro_only:
        ab(args.duration, args.rounds, ledger=not args.no_ledger)


if __name__ == "__main__":
    main()
