"""Prometheus metrics: requests are counted into plain dicts as they end; the text format is written from them
when ``/metrics`` is scraped.

::

    Gateway.emit(record) → Metrics.emit        a few dict updates on the event loop (~1.5 µs: bench/metrics.py)
    Health cooldown      → Metrics.cooled      one dict update
    GET /metrics         → exposition          the tables, and what is live now (requests in flight, each
                                               deployment's attempts under way and its state)

Label sets are bounded: each table takes at most ``lockgate.metrics_max_series`` of them; past that, a record's
labels all become ``other`` (one series) and ``lockgate_metrics_overflow_total`` counts it. Keys, users, teams and
end users are labels only when ``lockgate.metrics_labels`` names them (requests, tokens and spend; never the
histograms). Counters are this process's own (``--workers N``: see the README).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lockgate.config import METRICS_LABELS
from lockgate.observe import RequestRecord

__all__ = [
    "CONTENT_TYPE", "INPUT_SIZES", "LATENCY_BUCKETS", "OUTPUT_SIZES", "OWNER_LABELS", "TPS_BUCKETS",
    "TTFT_BUCKETS", "DeploymentView", "Live", "Metrics", "input_size", "output_size",
]  # fmt: skip

log = logging.getLogger("lockgate")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus reads (metric and label names here are plain ASCII; label values
may be any UTF-8)."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 300.0)
"""Seconds, whole request (the client's view: retries and fallbacks included)."""
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
"""Seconds from the request's arrival to the first bytes of its stream."""
TPS_BUCKETS = (5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0, 2000.0)
"""Output tokens per second of a stream after its first bytes."""
INPUT_SIZES = ("0-1k", "1k-4k", "4k-16k", "16k-64k", "64k+")
"""Prompt tokens (1k = 1,024), the histograms' ``input_size``."""
OUTPUT_SIZES = ("0-256", "256-1k", "1k-4k", "4k+")
"""Output tokens, the histograms' ``output_size``."""
OWNER_LABELS = METRICS_LABELS
"""What ``lockgate.metrics_labels`` may add to requests, tokens and spend."""
TOKEN_KINDS = ("input", "output", "cached_read", "cache_write", "reasoning")
DEPLOYMENT_STATES = {"healthy": 0, "degraded": 1, "cooldown": 2}
OTHER = "other"
_LE = {bounds: [*(repr(b) for b in bounds), "+Inf"] for bounds in (LATENCY_BUCKETS, TTFT_BUCKETS, TPS_BUCKETS)}
SHAPE = ("model_group", "deployment", "provider", "input_size", "output_size", "modality")
WHERE = ("model_group", "deployment", "provider")


def input_size(tokens: int) -> str:
    if tokens < 1024:
        return "0-1k"
    if tokens < 4096:
        return "1k-4k"
    if tokens < 16384:
        return "4k-16k"
    return "16k-64k" if tokens < 65536 else "64k+"


def output_size(tokens: int) -> str:
    if tokens < 256:
        return "0-256"
    if tokens < 1024:
        return "256-1k"
    return "1k-4k" if tokens < 4096 else "4k+"


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


class _Shape:
    """The three histograms of one label set: counts per bucket (not cumulative; the last is +Inf) and sums."""

    __slots__ = ("latency", "latency_sum", "tps", "tps_sum", "ttft", "ttft_sum")

    def __init__(self) -> None:
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self.tps = [0] * (len(TPS_BUCKETS) + 1)
        self.latency_sum = self.ttft_sum = self.tps_sum = 0.0


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """A deployment as the router and its health see it at scrape time."""

    id: str
    model_group: str
    provider: str
    in_flight: int
    state: str
    """healthy, degraded or cooldown (:meth:`lockgate.routing.health.Health.status`)."""


@dataclass(frozen=True, slots=True)
class Live:
    """What is read from the gateway when ``/metrics`` is scraped rather than counted per request."""

    in_flight: int = 0
    deployments: Sequence[DeploymentView] = ()
    limits_degraded: bool = False
    """Redis (the shared limit counters) is unreachable: rate limits per instance, budgets refused or open."""


@dataclass(slots=True)
class Metrics:
    """The request sink that counts (see the module docstring); :meth:`exposition` renders it."""

    labels: tuple[str, ...] = ()
    """Owner labels (:data:`OWNER_LABELS`) for requests, tokens and spend."""
    max_series: int = 1000
    """Label sets per table; more go to ``other``."""
    requests: dict[tuple[Any, ...], int] = field(default_factory=dict)
    usage: dict[tuple[str, ...], list[float]] = field(default_factory=dict)
    """(model_group, deployment, provider, *owners) -> the :data:`TOKEN_KINDS` counts, then spend in USD."""
    shapes: dict[tuple[str, ...], _Shape] = field(default_factory=dict)
    attempts: dict[tuple[str, ...], int] = field(default_factory=dict)
    retries: dict[tuple[str, str], int] = field(default_factory=dict)
    fallbacks: dict[tuple[str, str], int] = field(default_factory=dict)
    hedges: dict[str, int] = field(default_factory=dict)
    rejections: dict[tuple[str, str], int] = field(default_factory=dict)
    cooldowns: dict[str, int] = field(default_factory=dict)
    unpriced: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """Requests with usage and no cost (their deployment has no prices): counted $0 against budgets."""
    overflow: dict[str, int] = field(default_factory=dict)

    def emit(self, record: RequestRecord) -> None:
        group, deployment, provider = record.model_group or "", record.deployment_id or "", record.provider or ""
        owners = self._owners(record) if self.labels else ()
        key: tuple[Any, ...] = (group, deployment, provider, record.status, record.error_type or "", *owners)
        requests = self.requests
        if key not in requests:
            key = self._room(requests, key, "requests")
        requests[key] = requests.get(key, 0) + 1
        if record.denied is not None:
            self._add(self.rejections, (group, record.denied), "limit_rejections")
        if record.attempt_log:
            self._attempts(record)
        usage = record.usage
        if not usage:
            return
        where = (group, deployment, provider, *owners)
        totals = self.usage.get(where)
        if totals is None:
            where = self._room(self.usage, where, "tokens")
            totals = self.usage.get(where)
            if totals is None:
                totals = self.usage[where] = [0.0] * 6
        prompt, output = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        totals[0] += prompt
        totals[1] += output
        details = usage.get("prompt_tokens_details")
        if type(details) is dict:
            totals[2] += _count(details.get("cached_tokens"))
            totals[3] += _count(details.get("cache_write_tokens"))
        details = usage.get("completion_tokens_details")
        if type(details) is dict:
            totals[4] += _count(details.get("reasoning_tokens"))
        if record.cost:
            totals[5] += record.cost
        elif record.cost is None:
            self._add(self.unpriced, (group, deployment, provider), "unpriced_requests")
        if record.status < 400 and record.error_type is None and not record.client_disconnected:
            self._observe(record, group, deployment, provider, prompt, output)

    def _observe(self, record: RequestRecord, group: str, deployment: str, provider: str, prompt: int,
                 output: int) -> None:  # fmt: skip
        """An answered request's latency, time to first token and output rate."""
        key = (group, deployment, provider, input_size(prompt), output_size(output), record.modality)
        shape = self.shapes.get(key)
        if shape is None:
            key = self._room(self.shapes, key, "histograms")
            shape = self.shapes.get(key)
            if shape is None:
                shape = self.shapes[key] = _Shape()
        seconds = record.latency_ms / 1000
        shape.latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        shape.latency_sum += seconds
        if record.first_token_ms is not None:
            first = record.first_token_ms / 1000
            shape.ttft[bisect_left(TTFT_BUCKETS, first)] += 1
            shape.ttft_sum += first
            decode = seconds - first
            if output >= 2 and decode > 0:
                rate = output / decode
                shape.tps[bisect_left(TPS_BUCKETS, rate)] += 1
                shape.tps_sum += rate

    def _attempts(self, record: RequestRecord) -> None:
        """Each attempt by outcome; after the first, a change of model group is a fallback, an attempt that
        began before the one before it ended a hedge, any other a retry."""
        before = None
        for attempt in record.attempt_log:
            group = attempt.model_group
            key = (group, attempt.deployment_id, attempt.provider, attempt.outcome, attempt.error_kind or "")
            self._add(self.attempts, key, "attempts")
            if before is not None:
                if group != before.model_group:
                    self._add(self.fallbacks, (before.model_group, group), "fallbacks")
                elif before.outcome == "cancelled" or attempt.started_ms < before.started_ms + before.duration_ms:
                    self._add(self.hedges, group, "hedges")
                else:
                    self._add(self.retries, (group, before.error_kind or ""), "retries")
            before = attempt

    def _owners(self, record: RequestRecord) -> tuple[str, ...]:
        values = {"team": record.team_id, "user": record.user_id, "end_user": record.end_user,
                  "key": record.key_alias}  # fmt: skip
        return tuple((values[name] or "")[:64] for name in self.labels)

    def _add(self, table: dict[Any, int], key: Any, name: str) -> None:
        if key not in table:
            key = self._room(table, key, name)
        table[key] = table.get(key, 0) + 1

    def _room(self, table: dict[Any, Any], key: Any, name: str) -> Any:
        """``key`` while the table has room for another label set, else the overflow's (counted)."""
        if len(table) < self.max_series:
            return key
        if name not in self.overflow:
            log.warning("metrics: more than %d label sets of %s; further ones are counted as 'other' "
                        "(lockgate.metrics_max_series)", self.max_series, name)  # fmt: skip
        self.overflow[name] = self.overflow.get(name, 0) + 1
        return (OTHER,) * len(key) if isinstance(key, tuple) else OTHER

    def cooled(self, deployment_id: str, seconds: float) -> None:
        """A Health cooldown listener: this instance cooled a deployment down."""
        self._add(self.cooldowns, deployment_id, "cooldowns")

    def exposition(self, live: Live) -> bytes:
        """The Prometheus text format of everything counted, and of ``live``."""
        return exposition(self, live)


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _number(value: float) -> str:
    return str(value) if type(value) is int or not value.is_integer() else str(int(value))


class _Text:
    """The classic text format (version 0.0.4), written straight from the tables: prometheus_client's own
    families and writer took 70 ms of the event loop for 200 label sets (bench/metrics.py), this takes a few."""

    def __init__(self) -> None:
        self.out: list[str] = []

    def _head(self, name: str, kind: str) -> None:
        self.out.append(f"# HELP {name} {HELP[name]}\n# TYPE {name} {kind}\n")

    @staticmethod
    def _labels(names: Sequence[str], values: Sequence[Any]) -> str:
        return ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True))

    def series(self, name: str, names: Sequence[str], rows: Iterable[tuple[Sequence[Any], float]],
               kind: str = "counter") -> None:  # fmt: skip
        """A counter (``name`` ends in ``_total``) or a gauge, one line per label set."""
        self._head(name, kind)
        out = self.out
        for values, value in rows:
            labels = self._labels(names, values)
            out.append(f"{name}{{{labels}}} {_number(value)}\n" if labels else f"{name} {_number(value)}\n")

    def histogram(self, name: str, names: Sequence[str], les: Sequence[str],
                  rows: Iterable[tuple[Sequence[Any], list[int], float]]) -> None:  # fmt: skip
        """``rows``: label values, counts per bucket (not cumulative, +Inf last), sum."""
        self._head(name, "histogram")
        out = self.out
        for values, counts, total in rows:
            labels = self._labels(names, values)
            cumulative = 0
            for le, count in zip(les, counts, strict=True):
                cumulative += count
                out.append(f'{name}_bucket{{{labels},le="{le}"}} {cumulative}\n')
            out.append(f"{name}_sum{{{labels}}} {_number(total)}\n{name}_count{{{labels}}} {cumulative}\n")

    def bytes(self) -> bytes:
        return "".join(self.out).encode()


HELP = {
    "lockgate_requests_total": "Requests that reached a model group, by how they ended (status 200 with an "
    "error_type: a stream that broke after its first bytes).",
    "lockgate_tokens_total": "Tokens by kind: input (every prompt token, cached ones included), output, cached_read, "
    "cache_write, reasoning (part of output).",
    "lockgate_spend_usd_total": "Spend in USD at the deployments' prices.",
    "lockgate_request_latency_seconds": "Whole requests (answered ones), from arrival to the last byte.",
    "lockgate_time_to_first_token_seconds": "Streams: from arrival to the first bytes sent to the client.",
    "lockgate_output_tokens_per_second": "Streams of 2 or more output tokens: output tokens per second after the "
    "first bytes.",
    "lockgate_deployment_attempts_total": "Upstream attempts by outcome (answered, failed, cancelled) and error_kind "
    "(server, rate_limit, timeout, ...).",
    "lockgate_retries_total": "Attempts after a failed one in the same model group (error_kind: what the one before "
    "failed with).",
    "lockgate_fallbacks_total": "Attempts that moved to another model group.",
    "lockgate_hedges_total": "Second attempts sent while the first had not answered (lockgate.hedge_after).",
    "lockgate_limit_rejections_total": "Requests refused by a rate limit or budget (limit: whose: key, team, user, "
    "org, end_user, deployment, proxy, ...).",
    "lockgate_unpriced_requests_total": "Requests that used tokens on a deployment without prices (neither the "
    "catalog nor its model_info has them): counted as $0 against budgets and spend.",
    "lockgate_in_flight_requests": "HTTP requests this process is serving now.",
    "lockgate_limits_degraded": "1 while Redis is unreachable: each instance enforces its share of the rate limits.",
    "lockgate_deployment_in_flight": "Upstream attempts under way (a stream until its last byte).",
    "lockgate_deployment_state": "0 healthy, 1 degraded (slower than its normal), 2 cooling down after failures.",
    "lockgate_deployment_cooldowns_total": "Cooldowns this process started.",
    "lockgate_metrics_overflow_total": "Records counted as 'other' because a metric had lockgate.metrics_max_series "
    "label sets.",
}


def exposition(m: Metrics, live: Live) -> bytes:
    text, owners, usage, shapes = _Text(), m.labels, m.usage.items(), m.shapes.items()
    tokens = (((*key, kind), n) for key, totals in usage for kind, n in zip(TOKEN_KINDS, totals, strict=False)
              if n or kind in ("input", "output"))  # fmt: skip
    text.series("lockgate_requests_total", (*WHERE, "status", "error_type", *owners), m.requests.items())
    text.series("lockgate_tokens_total", (*WHERE, *owners, "kind"), tokens)
    text.series("lockgate_spend_usd_total", (*WHERE, *owners), ((key, totals[5]) for key, totals in usage))
    text.histogram("lockgate_request_latency_seconds", SHAPE, _LE[LATENCY_BUCKETS],
                   ((k, s.latency, s.latency_sum) for k, s in shapes))  # fmt: skip
    text.histogram("lockgate_time_to_first_token_seconds", SHAPE, _LE[TTFT_BUCKETS],
                   ((k, s.ttft, s.ttft_sum) for k, s in shapes if any(s.ttft)))  # fmt: skip
    text.histogram("lockgate_output_tokens_per_second", SHAPE, _LE[TPS_BUCKETS],
                   ((k, s.tps, s.tps_sum) for k, s in shapes if any(s.tps)))  # fmt: skip
    text.series("lockgate_deployment_attempts_total", (*WHERE, "outcome", "error_kind"), m.attempts.items())
    text.series("lockgate_retries_total", ("model_group", "error_kind"), m.retries.items())
    text.series("lockgate_fallbacks_total", ("model_group", "fallback_group"), m.fallbacks.items())
    text.series("lockgate_hedges_total", ("model_group",), (((g,), n) for g, n in m.hedges.items()))
    text.series("lockgate_limit_rejections_total", ("model_group", "limit"), m.rejections.items())
    text.series("lockgate_unpriced_requests_total", WHERE, m.unpriced.items())
    text.series("lockgate_in_flight_requests", (), [((), live.in_flight)], "gauge")
    text.series("lockgate_limits_degraded", (), [((), int(live.limits_degraded))], "gauge")
    views = [((d.model_group, d.id, d.provider), d) for d in live.deployments]
    text.series("lockgate_deployment_in_flight", WHERE, ((where, d.in_flight) for where, d in views), "gauge")
    states = ((where, DEPLOYMENT_STATES.get(d.state, 0)) for where, d in views)
    text.series("lockgate_deployment_state", WHERE, states, "gauge")
    seen = {d.id for d in live.deployments}  # below: cooldowns of deployments removed since (or the overflow's)
    gone = [(("", deployment_id, ""), n) for deployment_id, n in m.cooldowns.items() if deployment_id not in seen]
    cooldowns = [*((where, m.cooldowns.get(d.id, 0)) for where, d in views), *gone]
    text.series("lockgate_deployment_cooldowns_total", WHERE, cooldowns)
    text.series("lockgate_metrics_overflow_total", ("metric",), (((n,), c) for n, c in m.overflow.items()))
    return text.bytes()
