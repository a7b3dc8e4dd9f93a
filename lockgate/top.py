"""``lockgate top``: a running gateway's ``/metrics``, one line per model group, redrawn every interval.

Each table compares two scrapes ``interval`` seconds apart: requests per second, the error rate and the
latency percentiles are those of the requests that ended between them (percentiles interpolated within the
histogram buckets, as Prometheus's ``histogram_quantile`` does); the total and in-flight columns are as of the
second scrape. Plain text, no curses: a live table is redrawn after a clear-screen escape.
"""

from __future__ import annotations

import math
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Snapshot", "TopError", "fetch", "parse", "quantile", "run", "table"]

CLEAR = "\x1b[H\x1b[2J"
Buckets = dict[float, float]
"""Upper bound (``le``) -> cumulative count."""


class TopError(Exception):
    """The gateway could not be read (unreachable, refused the key, not lockgate)."""


@dataclass
class Snapshot:
    """One scrape, summed per model group."""

    at: float
    requests: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    errors: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    latency: dict[str, Buckets] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    ttft: dict[str, Buckets] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    in_flight: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    total_in_flight: float = 0.0


def fetch(url: str, key: str | None, timeout: float = 5.0) -> str:
    if not url.startswith(("http://", "https://")):
        raise TopError(f"{url} is not an http:// or https:// URL")
    request = urllib.request.Request(url.rstrip("/") + "/metrics")  # noqa: S310 - http(s) only, checked above
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - as above
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:300]
        raise TopError(f"{url} answered {error.code} to /metrics: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TopError(f"cannot reach {url}: {reason}") from None


def parse(text: str, at: float | None = None) -> Snapshot:
    snap = Snapshot(time.monotonic() if at is None else at)
    histograms = {"lockgate_request_latency_seconds_bucket": snap.latency,
                  "lockgate_time_to_first_token_seconds_bucket": snap.ttft}  # fmt: skip
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            group = sample.labels.get("model_group", "")
            if sample.name == "lockgate_requests_total":
                snap.requests[group] += sample.value
                if sample.labels.get("error_type"):
                    snap.errors[group] += sample.value
            elif sample.name in histograms:
                histograms[sample.name][group][float(sample.labels["le"])] += sample.value
            elif sample.name == "lockgate_deployment_in_flight":
                snap.in_flight[group] += sample.value
            elif sample.name == "lockgate_in_flight_requests":
                snap.total_in_flight = sample.value
    return snap


def quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of a histogram's cumulative buckets, linear within a bucket; None when it is empty."""
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in sorted(buckets):
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the open-ended bucket: its lower bound is all that is known
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _delta(after: Buckets, before: Buckets | None) -> Buckets:
    before = before or {}
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def table(before: Snapshot, after: Snapshot, url: str) -> str:
    window = max(after.at - before.at, 1e-9)
    head = (f"lockgate top  {url}  {time.strftime('%H:%M:%S')}  window {window:.1f}s  "
            f"in flight {after.total_in_flight:.0f}")  # fmt: skip
    columns = ("MODEL GROUP", "REQ/S", "TOTAL", "ERR%", "P50", "P95", "TTFT P50", "TTFT P95", "IN FLIGHT")
    lines = [head, "", "{:<28} {:>8} {:>8} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9}".format(*columns)]
    rows = []
    for group in set(after.requests) | set(after.in_flight):
        done = after.requests.get(group, 0.0) - before.requests.get(group, 0.0)
        errors = after.errors.get(group, 0.0) - before.errors.get(group, 0.0)
        latency = _delta(after.latency.get(group, {}), before.latency.get(group))
        ttft = _delta(after.ttft.get(group, {}), before.ttft.get(group))
        rows.append((done / window, group, [
            f"{group[:28]:<28}", f"{done / window:>8.1f}", f"{after.requests.get(group, 0.0):>8.0f}",
            f"{(f'{100 * errors / done:.1f}%' if done else '-'):>6}",
            f"{_duration(quantile(0.5, latency)):>8}", f"{_duration(quantile(0.95, latency)):>8}",
            f"{_duration(quantile(0.5, ttft)):>9}", f"{_duration(quantile(0.95, ttft)):>9}",
            f"{after.in_flight.get(group, 0.0):>9.0f}",
        ]))  # fmt: skip
    for _, _, cells in sorted(rows, key=lambda row: (-row[0], row[1])):
        lines.append(" ".join(cells))
    if not rows:
        lines.append("(no model groups yet)")
    return "\n".join(lines) + "\n"


def run(url: str, key: str | None, *, interval: float = 1.0, once: bool = False, out: IO[str] | None = None) -> int:
    """Print tables until interrupted (``once``: one, after two scrapes); the exit status."""
    out = out or sys.stdout
    try:
        before = parse(fetch(url, key))
        while True:
            time.sleep(interval)
            after = parse(fetch(url, key))
            text = table(before, after, url)
            out.write(text if once else CLEAR + text)
            out.flush()
            if once:
                return 0
            before = after
    except TopError as error:
        print(f"lockgate top: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
