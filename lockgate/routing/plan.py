"""One request's way through the deployments: which to try first, and what to try after a failure.

A :class:`Plan` starts at the requested model group, its deployments in the router's weighted order reordered by
health (healthy, then degraded, then cooling down). After a failure, :meth:`Plan.after` decides by what failed:

    kind                          next
    bad_request (the client's)    nothing: the client gets the error
    context_window                context_window_fallbacks of the group (the request is too long for it)
    content_policy                content_policy_fallbacks of the group
    anything else                 a retry in the group (num_retries, or retry_policy / model_group_retry_policy
                                  for that kind), preferring a deployment not tried yet; then the group's
                                  fallbacks, else default_fallbacks; each fallback group with its own retries

at most ``max_fallbacks`` fallback groups in all, in the order the requested group lists them (a fallback group's
own fallbacks do not chain). A retry of the deployment that just failed waits a jittered
exponential backoff (and the upstream's ``retry-after``, if it is short; a long one sends the retry elsewhere);
a move to another deployment waits only ``retry_after`` (router_settings, default 0). A 401/403/404 is not
retried on the same deployment unless the retry_policy says so: the same request will fail the same way.
Every extra attempt draws on a :class:`RetryBudget` shared by the process, so a broken provider does not get its
load multiplied by the retries.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockgate.config import Resilience

if TYPE_CHECKING:
    from lockgate.routing.health import Health
    from lockgate.routing.router import Router, Target

__all__ = ["Failure", "Plan", "RetryBudget"]

MAX_BACKOFF = 5.0
BASE_BACKOFF = 0.25
LONGEST_WAIT = 10.0  # an upstream retry-after longer than this sends the retry to another deployment instead
SAME_DEPLOYMENT_ONLY_IF_ASKED = frozenset({"auth", "not_found"})


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with an attempt: a kind of :func:`lockgate.routing.health.failure_kind`, or
    ``bad_request`` / ``context_window`` / ``content_policy``; the upstream's retry-after in seconds if it gave
    one."""

    kind: str
    retry_after: float | None = None


class RetryBudget:
    """Retries may add at most ``ratio`` of the requests of the last ``window`` seconds, plus ``floor`` a second:
    a token bucket filled by requests, emptied by retries."""

    def __init__(
        self, ratio: float = 0.2, floor: float = 10.0, window: float = 10.0, clock: Callable[[], float] | None = None
    ) -> None:
        self._ratio = ratio
        self._floor = floor
        self._cap = max(1.0, floor * window)
        self._clock = clock or time.monotonic
        self._tokens = self._cap
        self._at = self._clock()
        self.refused = 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._cap, self._tokens + (now - self._at) * self._floor)
        self._at = now

    def request(self) -> None:
        """A request arrived: it earns ``ratio`` of a retry."""
        self._tokens = min(self._cap + self._ratio, self._tokens + self._ratio)

    def withdraw(self) -> bool:
        """A retry may be sent (and is counted), or not."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.refused += 1
        return False


class Plan:
    """The attempts of one request (see the module docstring). Not shared between requests."""

    def __init__(
        self,
        router: Router,
        model: str,
        num_retries: int,
        resilience: Resilience,
        health: Health | None = None,
        budget: RetryBudget | None = None,
        rng: random.Random | None = None,
        stream: bool = False,
        prompt_tokens: int = 0,
    ) -> None:
        self._router = router
        self._retries = num_retries
        self._policy = resilience
        self._health = health
        self._budget = budget
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._stream, self._prompt_tokens = stream, prompt_tokens
        self.group = router.resolve(model)
        self.origin = self.group  # whose fallbacks apply (a fallback group's own fallbacks do not chain)
        self._groups_seen = {self.group}
        self._fallbacks_used = 0
        self._order: list[Target] = self._ranked(router.eligible(self.group))
        self._tries = 0  # attempts in the current group
        self._tried: list[str] = []  # deployment ids tried in the current group
        self.current: Target = self._order[0]
        self.attempts = 1

    def _ranked(self, targets: Sequence[Target]) -> list[Target]:
        if len(targets) == 1:  # nothing to order (the health of a lone deployment changes nothing about it)
            return list(targets)
        ordered = self._router.order(targets, self._health, stream=self._stream, prompt_tokens=self._prompt_tokens)
        if self._health is not None:
            ordered = self._health.rank(ordered, _deployment_id)
        return ordered

    def replace(self, deployment_id: str, other: Target) -> None:
        """Serve the request from ``other`` instead of ``deployment_id`` (that one is at its own rpm/tpm)."""
        self._order = [other if t.deployment.id == deployment_id else t for t in self._order]
        if self.current.deployment.id == deployment_id:
            self.current = other

    def hedge(self) -> Target | None:
        """Another deployment of the current group for a hedged attempt (one not tried yet, the healthiest), or
        None when there is none or the retry budget is spent."""
        others = [t for t in self._order if t.deployment.id != self.current.deployment.id
                  and t.deployment.id not in self._tried]  # fmt: skip
        if not others or not self._draw():
            return None
        if self._health is not None:
            others = self._health.rank(others, _deployment_id)
        self._tried.append(others[0].deployment.id)
        self.attempts += 1
        return others[0]

    def after(self, failure: Failure) -> tuple[Target, float] | None:
        """The next attempt and the seconds to wait before it, or None: the client gets this failure."""
        if failure.kind == "bad_request":
            return None
        if failure.kind in ("context_window", "content_policy"):
            table = (
                self._policy.context_window_fallbacks
                if failure.kind == "context_window"
                else self._policy.content_policy_fallbacks
            )
            return self._fall_back(table.get(self.origin, ()))
        self._tried.append(self.current.deployment.id)
        self._tries += 1
        if self._tries <= self._retries_for(failure.kind) and self._draw():
            retry = self._retry(failure)
            if retry is not None:
                return retry
        return self._fall_back(self._router.fallbacks_of(self.origin) or self._policy.default_fallbacks)

    def _retries_for(self, kind: str) -> int:
        policy = self._policy.group_retry_policy.get(self.group, self._policy.retry_policy)
        return policy.get(kind, self._retries)

    def _explicit(self, kind: str) -> bool:
        policy = self._policy.group_retry_policy.get(self.group, self._policy.retry_policy)
        return kind in policy

    def _retry(self, failure: Failure) -> tuple[Target, float] | None:
        failed = self.current
        fresh = [t for t in self._order if t.deployment.id not in self._tried]
        others = fresh or [t for t in self._order if t.deployment.id != failed.deployment.id]
        if self._health is not None and others:
            others = self._health.rank(others, _deployment_id)
        if others:
            self.current = others[0]
            self.attempts += 1
            return self.current, self._policy.retry_after
        # only the deployment that failed is left
        if failure.kind in SAME_DEPLOYMENT_ONLY_IF_ASKED and not self._explicit(failure.kind):
            return None
        if failure.retry_after is not None and failure.retry_after > LONGEST_WAIT:
            return None
        backoff = self._rng.uniform(0, min(MAX_BACKOFF, BASE_BACKOFF * 2 ** (self._tries - 1)))
        wait = max(self._policy.retry_after, backoff, failure.retry_after or 0.0)
        self.attempts += 1
        return failed, wait

    def _fall_back(self, groups: Sequence[str]) -> tuple[Target, float] | None:
        for group in groups:
            if self._fallbacks_used >= self._policy.max_fallbacks:
                return None
            if group in self._groups_seen:
                continue
            self._groups_seen.add(group)
            targets = self._router.eligible(group, missing_ok=True)
            if not targets:
                continue
            if not self._draw():
                return None
            self._fallbacks_used += 1
            self.group = group
            self._order = self._ranked(targets)
            self._tries = 0
            self._tried = []
            self.current = self._order[0]
            self.attempts += 1
            return self.current, self._policy.retry_after
        return None

    def _draw(self) -> bool:
        return self._budget is None or self._budget.withdraw()


def _deployment_id(target: Target) -> str:
    return target.deployment.id
