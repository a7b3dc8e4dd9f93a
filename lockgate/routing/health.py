"""How each deployment is doing, as this instance sees it: failing (cooldown), slow (degraded), or healthy.

The router asks :meth:`Health.rank` to order a group's deployments; the pipeline reports each attempt's outcome
with :meth:`Health.failed` / :meth:`Health.succeeded`.

Failures (LiteLLM's ``allowed_fails`` / ``cooldown_time`` / ``allowed_fails_policy``): an upstream failure that
says something about the deployment (429, 401/403, 404, 408, 5xx, a timeout, a dropped connection; not the
client's 400s) counts against the deployment; more than ``allowed_fails`` of a kind within a minute puts it in
cooldown for ``cooldown_time`` seconds (or the upstream's ``retry-after``, when longer). Each success takes back
one failure of each kind, so sporadic errors on a busy deployment (1 % of 1,000 requests a minute) never cool it
down, while a deployment failing most of its requests is cooled down within ``allowed_fails`` + 1 of them.
A cooled-down deployment is not tried while another of its group is
available. When the cooldown ends it is *half-open*: one request at a time is let through (another after
:data:`PROBE_TIMEOUT` if it never reports); a success closes it, a failure cools it down again, for twice as
long each time (up to :data:`MAX_COOLDOWN`). A success of a request sent before the cooldown began does not end
it. A deployment is never left out for good, and when every deployment of a group is cooling down, they are
still tried, the one whose cooldown ends first first.

Slowness: a provider that degrades without failing (first tokens take seconds, tokens trickle) is found by
comparing each deployment with its own recent normal. Latency depends on the request, so samples are kept
per *shape*: time to first token of streams by input size, whole latency of non-streamed answers by input and
output size, and output tokens per second of streams. For each shape two moving averages are kept, a fast one
(the last few requests) and a slow one (the normal); once a shape has ``min_samples``, the deployment is
*degraded* while its fast average is more than ``degrade_factor`` times its normal (or above ``slo_ttft``,
when configured), and recovers when it comes back under 0.8 of that. The normal stops learning while degraded
(a slow spell does not become the new normal) for at most :data:`MAX_FROZEN` seconds (a provider that stays
slower is accepted as it is). Degraded deployments are tried after the healthy ones; so that a recovery is
seen, one request in :data:`PROBE_EVERY` goes to a degraded deployment first.

State is per process (each instance measures what it sees) and belongs to its event loop (not thread-safe);
nothing here is a secret (deployment ids only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, get_args

__all__ = ["FAILURE_KINDS", "Health", "HealthPolicy", "failure_kind"]

FailureKind = Literal["rate_limit", "auth", "not_found", "timeout", "server", "connection", "content_policy"]
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)
# LiteLLM's allowed_fails_policy names -> the kinds they set
POLICY_NAMES: dict[str, tuple[FailureKind, ...]] = {
    "RateLimitErrorAllowedFails": ("rate_limit",),
    "AuthenticationErrorAllowedFails": ("auth",),
    "TimeoutErrorAllowedFails": ("timeout", "connection"),
    "InternalServerErrorAllowedFails": ("server",),
    "ContentPolicyViolationErrorAllowedFails": ("content_policy",),
    "BadRequestErrorAllowedFails": (),  # a client's bad request says nothing about the deployment: never counted
}
WINDOW = 60.0  # failures count within this many seconds (LiteLLM: allowed_fails per minute)
MAX_COOLDOWN = 300.0
MAX_FROZEN = 600.0
PROBE_EVERY = 20
PROBE_TIMEOUT = 60.0
FAST, SLOW = 0.25, 0.02  # EWMA weights: ~the last 4 requests, ~the last 50
T = TypeVar("T")


def failure_kind(status: int | None, *, timeout: bool = False, connection: bool = False) -> FailureKind | None:
    """What an upstream failure says about the deployment; None when it says nothing (a client error)."""
    if timeout:
        return "timeout"
    if connection or status is None:
        return "connection"
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server"
    return None


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    allowed_fails: int = 3
    """Failures of one kind within a minute that are tolerated; one more starts a cooldown."""
    cooldown_time: float = 5.0
    fails_by_kind: dict[str, int] = field(default_factory=dict)
    """allowed_fails per failure kind (from allowed_fails_policy), overriding ``allowed_fails``."""
    disable_cooldowns: bool = False
    degrade_factor: float = 3.0
    slo_ttft: float | None = None
    """Seconds: a deployment whose recent time to first token is above this is degraded, whatever its normal."""
    min_samples: int = 20

    def allowed(self, kind: str) -> int:
        return self.fails_by_kind.get(kind, self.allowed_fails)


def _size_bucket(tokens: int) -> int:
    """0: < 1k tokens, 1: < 4k, 2: < 16k, 3: < 64k, 4: more."""
    if tokens < 1024:
        return 0
    return min(4, (max(0, math.floor(math.log2(tokens))) - 10) // 2 + 1)


@dataclass(slots=True)
class _Average:
    """A shape's fast and slow moving averages (seconds, or seconds per token for rates)."""

    fast: float = 0.0
    slow: float = 0.0
    samples: int = 0

    def add(self, value: float, learn: bool) -> None:
        if self.samples == 0:
            self.fast = self.slow = value
        else:
            self.fast += FAST * (value - self.fast)
            if learn:
                self.slow += SLOW * (value - self.slow)
        self.samples += 1


@dataclass(slots=True)
class _State:
    failures: dict[str, list[float]] = field(default_factory=dict)
    cooling_until: float = 0.0
    cooldowns: int = 0  # in a row, without a success between
    probing: float | None = None  # half-open: when the trial request was let through
    shapes: dict[tuple[str, int, int], _Average] = field(default_factory=dict)
    degraded_since: float | None = None
    degraded_why: str = ""
    picks: int = 0
    inflight: int = 0  # attempts under way (least-busy)
    minute: list[int] = field(default_factory=lambda: [0] * 60)  # tokens per second of the last minute
    requests: list[int] = field(default_factory=lambda: [0] * 60)  # requests per second of the last minute
    stamps: list[int] = field(default_factory=lambda: [0] * 60)  # the second each slot holds


class Health:
    """Per-deployment health, shared by the requests of one process."""

    def __init__(self, policy: HealthPolicy | None = None, clock: Callable[[], float] | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self._clock = clock or time.monotonic
        self._states: dict[str, _State] = {}
        self.track_usage = False
        """Count requests and tokens per deployment per second (usage-based routing reads them)."""
        self.cooldown_listeners: list[Callable[[str, float], None]] = []
        """Each told (deployment id, seconds) when a cooldown starts here: the gateway tells its other instances,
        the metrics count it."""

    def _state(self, deployment_id: str) -> _State:
        state = self._states.get(deployment_id)
        if state is None:
            if len(self._states) >= 100_000:  # deployments come from config and admins: bounded anyway
                self._states.clear()
            state = self._states[deployment_id] = _State()
        return state

    # --- reports -----------------------------------------------------------------------------------------

    def failed(self, deployment_id: str, kind: str | None, retry_after: float | None = None) -> bool:
        """An attempt at the deployment failed (``kind`` None: for a reason that says nothing about it); True
        when this started a cooldown."""
        if self.policy.disable_cooldowns:
            return False
        state = self._states.get(deployment_id) if kind is None else self._state(deployment_id)
        if state is None:
            return False
        trial, state.probing = state.probing is not None, None
        if kind is None:
            return False
        now = self._clock()
        if trial:  # the half-open trial failed: cool down again, longer
            return self._cool(deployment_id, state, now, retry_after)
        recent = [t for t in state.failures.get(kind, ()) if t > now - WINDOW]
        recent.append(now)
        state.failures[kind] = recent
        if len(recent) > self.policy.allowed(kind):
            return self._cool(deployment_id, state, now, retry_after)
        return False

    def _cool(self, deployment_id: str, state: _State, now: float, retry_after: float | None) -> bool:
        state.cooldowns += 1
        seconds = min(MAX_COOLDOWN, self.policy.cooldown_time * 2 ** (state.cooldowns - 1))
        if retry_after is not None and math.isfinite(retry_after):
            seconds = max(seconds, min(retry_after, MAX_COOLDOWN))
        state.cooling_until = now + seconds
        state.failures.clear()
        for listener in self.cooldown_listeners:
            listener(deployment_id, seconds)
        return True

    def cool(self, deployment_id: str, seconds: float) -> None:
        """Another instance cooled the deployment down: so does this one (then a half-open trial, as here)."""
        if self.policy.disable_cooldowns or not (0 < seconds <= MAX_COOLDOWN):
            return
        state = self._state(deployment_id)
        state.cooling_until = max(state.cooling_until, self._clock() + seconds)
        state.cooldowns = max(state.cooldowns, 1)
        state.probing = None

    def succeeded(
        self,
        deployment_id: str,
        *,
        latency: float,
        ttft: float | None = None,
        prompt_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """An attempt answered: ``latency`` seconds in all, its first token after ``ttft`` (streams)."""
        state = self._state(deployment_id)
        now = self._clock()
        if state.cooling_until <= now:  # (an answer to a request sent before a cooldown does not end it)
            state.probing = None
            state.cooldowns = 0
            for kind, times in list(state.failures.items()):
                if len(times) <= 1:
                    del state.failures[kind]
                else:
                    del times[0]
        learn = state.degraded_since is None or now - state.degraded_since > MAX_FROZEN
        size = _size_bucket(prompt_tokens)
        if ttft is not None:
            state.shapes.setdefault(("ttft", size, 0), _Average()).add(ttft, learn)
            decode = latency - ttft
            if output_tokens >= 16 and decode > 0:  # seconds per output token (lower is better)
                state.shapes.setdefault(("per_token", 0, 0), _Average()).add(decode / output_tokens, learn)
        else:
            out = _size_bucket(output_tokens * 4)  # 0: < 256 tokens, 1: < 1k, ...
            state.shapes.setdefault(("latency", size, out), _Average()).add(latency, learn)
        self._judge(state, now)

    def passed(self, deployment_id: str) -> None:
        """A health check of the deployment passed: its cooldown (if any) ends; no latency is learnt from it."""
        state = self._states.get(deployment_id)
        if state is not None:
            state.cooling_until, state.cooldowns, state.probing = 0.0, 0, None
            state.failures.clear()

    def _judge(self, state: _State, now: float) -> None:
        policy = self.policy
        worst, why = 0.0, ""
        for (name, _, _), avg in state.shapes.items():
            if name == "ttft" and policy.slo_ttft is not None and avg.samples >= 3 and avg.fast > policy.slo_ttft:
                ratio = math.inf
                reason = f"time to first token {avg.fast:.2f} s above the SLO {policy.slo_ttft:g} s"
            elif avg.samples >= policy.min_samples and avg.slow > 0:
                ratio = avg.fast / (policy.degrade_factor * avg.slow)
                reason = f"{name} {avg.fast:.3g} s, {avg.fast / avg.slow:.1f}x its normal {avg.slow:.3g} s"
            else:
                continue
            if ratio > worst:
                worst, why = ratio, reason
        if state.degraded_since is None:
            if worst > 1.0:
                state.degraded_since, state.degraded_why = now, why
        elif worst < 0.8:
            state.degraded_since, state.degraded_why = None, ""

    # --- load (for the routing strategies) ---------------------------------------------------------------

    def begin(self, deployment_id: str) -> None:
        """An attempt at the deployment starts (least-busy counts them; usage-based counts the request)."""
        state = self._state(deployment_id)
        state.inflight += 1
        if self.track_usage:
            self._count(state, 1, 0)

    def end(self, deployment_id: str, tokens: int = 0) -> None:
        """The attempt is over, having used ``tokens`` (usage-based counts them)."""
        state = self._states.get(deployment_id)
        if state is not None:
            state.inflight = max(0, state.inflight - 1)
            if tokens > 0 and self.track_usage:
                self._count(state, 0, tokens)

    def _count(self, state: _State, requests: int, tokens: int) -> None:
        second = int(self._clock())
        slot = second % 60
        if state.stamps[slot] != second:
            state.stamps[slot], state.requests[slot], state.minute[slot] = second, 0, 0
        state.requests[slot] += requests
        state.minute[slot] += tokens

    def inflight(self, deployment_id: str) -> int:
        state = self._states.get(deployment_id)
        return 0 if state is None else state.inflight

    def usage(self, deployment_id: str) -> tuple[int, int]:
        """(requests, tokens) the deployment served in the last 60 s, as this instance saw them."""
        state = self._states.get(deployment_id)
        if state is None:
            return 0, 0
        since = int(self._clock()) - 59
        live = [i for i in range(60) if state.stamps[i] >= since]
        return sum(state.requests[i] for i in live), sum(state.minute[i] for i in live)

    def latency(self, deployment_id: str, *, stream: bool, prompt_tokens: int) -> float | None:
        """The recent time to first token (streams) or whole latency (else, short answers) of requests of this
        size at the deployment; None before it has served one."""
        state = self._states.get(deployment_id)
        if state is None:
            return None
        size = _size_bucket(prompt_tokens)
        avg = state.shapes.get(("ttft", size, 0) if stream else ("latency", size, 0))
        return None if avg is None else avg.fast

    # --- questions ---------------------------------------------------------------------------------------

    def status(self, deployment_id: str) -> tuple[str, str]:
        """("healthy" | "degraded" | "cooldown", why) for /health and logs."""
        state = self._states.get(deployment_id)
        if state is None:
            return "healthy", ""
        left = state.cooling_until - self._clock()
        if left > 0:
            return "cooldown", f"failing: cooled down for {left:.1f} s more"
        if state.degraded_since is not None:
            return "degraded", state.degraded_why
        return "healthy", ""

    def rank(self, items: Sequence[T], deployment_id: Callable[[T], str]) -> list[T]:
        """``items`` (already in the router's order) reordered: healthy first, then degraded, then cooling down
        (soonest back first); a half-open deployment takes one trial request at a time. Nothing is dropped."""
        if not self._states:
            return list(items)
        now = self._clock()
        healthy: list[T] = []
        degraded: list[T] = []
        cooling: list[tuple[float, int, T]] = []
        for index, item in enumerate(items):
            state = self._states.get(deployment_id(item))
            if state is None:
                healthy.append(item)
            elif state.cooling_until > now:
                cooling.append((state.cooling_until, index, item))
            elif state.cooldowns > 0:  # half-open: one trial at a time
                if state.probing is not None and now - state.probing < PROBE_TIMEOUT:
                    cooling.append((now, index, item))
                else:
                    state.probing = now
                    healthy.append(item)
            elif state.degraded_since is not None:
                state.picks += 1
                if state.picks % PROBE_EVERY == 0:  # now and then, to see it recover
                    healthy.insert(0, item)
                else:
                    degraded.append(item)
            else:
                healthy.append(item)
        cooling.sort(key=lambda entry: (entry[0], entry[1]))
        return [*healthy, *degraded, *(item for _, _, item in cooling)]
