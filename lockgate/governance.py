"""Limits and budgets on the request path: which limits a request is under, one admission before the
upstream is called, one settlement after it answered.

    limits_of(principal, end_user, model, deployment)  every rpm / tpm / parallel / budget limit that
                                                       applies: the key's, its per-model ones, its
                                                       user's, team's (and the team's per-model ones),
                                                       organisation's, the end user's, and the
                                                       deployment's own rpm / tpm
    Governor.admit(...)   one Limiter.admit for all of them (with Redis at most one round trip, usually
                          none: leases, see limits/redis.py; none on one instance):
                          RateLimited (429 + retry-after) or BudgetExceeded (400), naming which limit
    Governor.charge(...)  what the request adds to budget windows and owners' spend, written with its
                          ledger row (Gateway.emit), in the row's transaction
    Governor.settle(...)  one Limiter.settle with the real tokens and cost; without a ledger row the spend
                          is queued for the database (SpendWriter: one transaction a second); budgets are
                          seeded from the database when a counter is cold (a restart, a Redis flush)

Estimates reserve capacity before the answer is known: tokens ≈ request bytes / 4 plus the output
allowance (``max_tokens``, else the model's ``max_output_tokens``, else ``lockgate.default_max_output_tokens``);
cost from the same counts at the deployment's prices (``model_info``). A budget admits a request only if
its estimated cost still fits, so concurrent requests cannot overspend it by more than what one request's
real cost exceeds its estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lockgate import pricing
from lockgate.errors import BudgetExceeded, GatewayError, RateLimited, describe
from lockgate.limits import Admission, Ask, Limit, Limiter, Ticket, Window
from lockgate.storage.base import EndUserRecord, SpendDelta

if TYPE_CHECKING:
    from lockgate.auth import Principal
    from lockgate.deployment import Deployment
    from lockgate.ledger import SpoolCharge
    from lockgate.storage.base import Store

__all__ = [
    "SOFT_ONLY", "Admitted", "GatewayBudgets", "Governor", "SpendWriter", "limits_of", "period", "soft_budgets",
]  # fmt: skip

log = logging.getLogger("lockgate")

_WHO = {"key": "key", "user": "user", "team": "team", "org": "organisation", "end_user": "end user"}
_KINDS = {"rpm": "requests per minute", "tpm": "tokens per minute", "parallel": "requests in flight"}


def _window(duration: str | None, anchor: Any) -> Window | None:
    if not duration:
        return None
    try:
        return Window.parse(duration, anchor)
    except ValueError:  # stored before it was checked; a budget without a period still holds
        return None


@dataclass(frozen=True, slots=True)
class GatewayBudgets:
    """The budgets the config sets for everyone: the whole gateway's, and each end user's by default."""

    total: float | None = None  # litellm_settings.max_budget
    window: Window | None = None  # its budget_duration, counted from 1970-01-01 UTC
    end_user: float | None = None  # litellm_settings.max_end_user_budget


def limits_of(
    principal: Principal | None,
    end_user: EndUserRecord | None,
    model: str,
    deployment: Deployment | None,
    budgets: GatewayBudgets | None = None,
    end_user_id: str | None = None,
) -> tuple[Limit, ...]:
    """Every limit a request for ``model`` (on ``deployment``, the first planned) is under."""
    limits: list[Limit] = []

    def add(scope: str, kind: str, value: float | None, window: Window | None = None) -> None:
        if value is not None:
            limits.append(Limit(scope, kind, float(value), window))  # type: ignore[arg-type]

    key = principal.key if principal is not None else None
    if key is not None:
        scope = f"key:{key.token_hash}"
        add(scope, "parallel", key.max_parallel_requests)
        add(scope, "rpm", key.rpm_limit)
        add(scope, "tpm", key.tpm_limit)
        add(scope, "budget", _budget(key.max_budget, key.soft_budget), _window(key.budget_duration, key.created_at))
        model_scope = f"{scope}:model:{model}"
        add(model_scope, "rpm", key.model_rpm_limit.get(model))
        add(model_scope, "tpm", key.model_tpm_limit.get(model))
        add(model_scope, "budget", key.model_max_budget.get(model), _window(key.budget_duration, key.created_at))
    if principal is not None and principal.user is not None:
        user = principal.user
        scope = f"user:{user.user_id}"
        add(scope, "rpm", user.rpm_limit)
        add(scope, "tpm", user.tpm_limit)
        add(scope, "budget", user.max_budget, _window(user.budget_duration, user.created_at))
    if principal is not None and principal.team is not None:
        team = principal.team
        scope = f"team:{team.team_id}"
        add(scope, "parallel", team.max_parallel_requests)
        add(scope, "rpm", team.rpm_limit)
        add(scope, "tpm", team.tpm_limit)
        add(scope, "budget", _budget(team.max_budget, team.soft_budget), _window(team.budget_duration, team.created_at))
        model_scope = f"{scope}:model:{model}"  # shared by every key of the team
        add(model_scope, "rpm", team.model_rpm_limit.get(model))
        add(model_scope, "tpm", team.model_tpm_limit.get(model))
        add(model_scope, "budget", team.model_max_budget.get(model), _window(team.budget_duration, team.created_at))
    if principal is not None and principal.org is not None:
        add(f"org:{principal.org.organization_id}", "budget", principal.org.max_budget)
    default = budgets.end_user if budgets is not None else None
    if end_user is not None:
        add(
            f"end_user:{end_user.user_id}",
            "budget",
            end_user.max_budget if end_user.max_budget is not None else default,
        )
    elif end_user_id is not None:
        add(f"end_user:{end_user_id}", "budget", default)
    if budgets is not None:
        add("proxy", "budget", budgets.total, budgets.window)
    if deployment is not None:
        add(f"deployment:{deployment.id}", "rpm", deployment.rpm)
        add(f"deployment:{deployment.id}", "tpm", deployment.tpm)
    return tuple(limits)


SOFT_ONLY = 1e9
"""The budget counted for an owner with a soft budget and no hard one: its spend is tracked, never refused."""


def _budget(hard: float | None, soft: float | None) -> float | None:
    return hard if hard is not None else (SOFT_ONLY if soft is not None else None)


def soft_budgets(principal: Principal | None) -> dict[str, float]:
    """``soft_budget`` by scope: crossing one is told (a response header, a log line), never refused."""
    found: dict[str, float] = {}
    if principal is not None and principal.key is not None and principal.key.soft_budget is not None:
        found[f"key:{principal.key.token_hash}"] = principal.key.soft_budget
    if principal is not None and principal.team is not None and principal.team.soft_budget is not None:
        found[f"team:{principal.team.team_id}"] = principal.team.soft_budget
    return found


def _entities(principal: Principal | None, end_user: EndUserRecord | None) -> list[tuple[str, str]]:
    """The records whose lifetime ``spend`` a request's cost is added to."""
    found: list[tuple[str, str]] = []
    if principal is not None:
        if principal.key is not None:
            found.append(("key", principal.key.token_hash))
        if principal.user is not None:
            found.append(("user", principal.user.user_id))
        if principal.team is not None:
            found.append(("team", principal.team.team_id))
        if principal.org is not None:
            found.append(("org", principal.org.organization_id))
    if end_user is not None:
        found.append(("end_user", end_user.user_id))
    return found


def _shared(limit: Limit, share: int) -> Limit:
    """This worker's part of a limit: 1/share (at least one request or token; a budget exactly divided)."""
    if limit.limit == 0:
        return limit
    part = limit.limit / share if limit.kind == "budget" else max(1.0, math.ceil(limit.limit / share))
    return Limit(limit.scope, limit.kind, part, limit.window)


def period(limit: Limit, now: float) -> str:
    """The budget period ``now`` falls in, as the database names it: ``""`` for a budget without a
    duration (it never resets), else the window's series and the period's start (``1d@<anchor>/<start>``)."""
    if limit.window is None:
        return ""
    return f"{limit.window.id}/{limit.window.bounds_ms(now)[0]}"


def _describe(limit: Limit) -> str:
    """Whose limit this is, for a message: ``key``, ``team``, ..., ``gateway``, ``deployment`` (a per-model limit's
    model is :func:`_for_model`'s)."""
    kind = limit.scope.partition(":")[0]
    if kind == "proxy":
        return "gateway"
    return _WHO.get(kind, kind)


def _for_model(limit: Limit) -> str:
    """``" for the model <name>"`` for a per-model limit (``key:<hash>:model:<name>``, ``team:<id>:model:<name>``);
    else ``""``."""
    _, found, model = limit.scope.partition(":model:")
    return f" for the model {model[:100]}" if found else ""


@dataclass(slots=True)
class Admitted:
    """What a request was admitted with: settle it once the answer is known."""

    ticket: Ticket | None
    """None when the request is under no limit (its spend is still kept)."""
    limits: tuple[Limit, ...]
    entities: list[tuple[str, str]]
    prices: Mapping[str, Any] | pricing.PriceTable
    prompt: int | tuple[Mapping[str, Any], int]
    """The estimated prompt tokens (used when the answer carries no usage), or the (body, size) to estimate them
    from when that happens (a request under no limit does not pay for the estimate up front)."""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class SpendWriter:
    """Queues spend for the database and writes it in one transaction a second (and at shutdown)."""

    def __init__(self, store: Store, interval: float = 1.0) -> None:
        self._store = store
        self._interval = interval
        self._deltas: dict[tuple[str, str], float] = {}
        self._entities: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, limits: Iterable[Limit], entities: Iterable[tuple[str, str]], cost: float, now: float) -> None:
        if cost <= 0 or not math.isfinite(cost):
            return
        for limit in limits:
            if limit.kind == "budget":
                key = (limit.scope, period(limit, now))
                self._deltas[key] = self._deltas.get(key, 0.0) + cost
        for entity in entities:
            self._entities[entity] = self._entities.get(entity, 0.0) + cost

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        if not self._deltas and not self._entities:
            return
        deltas, entities = self._deltas, self._entities
        self._deltas, self._entities = {}, {}
        try:
            await self._store.add_spend(
                [SpendDelta(scope, window, amount) for (scope, window), amount in deltas.items()],
                [(kind, ident, amount) for (kind, ident), amount in entities.items()],
            )
        except Exception as exc:  # keep it for the next flush rather than lose it
            log.error("spend not written to the database yet (%s); retrying", describe(exc))
            for key, amount in deltas.items():
                self._deltas[key] = self._deltas.get(key, 0.0) + amount
            for entity, amount in entities.items():
                self._entities[entity] = self._entities.get(entity, 0.0) + amount

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


class Governor:
    """Admits and settles requests against a :class:`~lockgate.limits.Limiter`."""

    def __init__(
        self,
        limiter: Limiter,
        store: Store,
        *,
        default_output: int = 4096,
        share: int = 1,
        budgets: GatewayBudgets | None = None,
    ) -> None:
        self.limiter = limiter
        self._budgets = budgets
        self.store = store
        self._share = max(1, share)
        """Workers counting alone (``--workers N`` without Redis): each enforces 1/N of every limit and budget."""
        self.writer = SpendWriter(store)
        self._default_output = default_output
        self._soft_told: set[tuple[str, str]] = set()
        self.on_budget: Callable[[str, str, float, float, str], None] | None = None
        """Told (scope, level, committed USD, the level's USD, budget period) when a request is admitted at or
        past 80 % of a budget (``80%``), refused by it (``100%``), or when a soft budget is first crossed
        (``soft``): the alerts (lockgate.callbacks.alerts) dedupe them."""

    def estimate(self, raw_size: int, body: Mapping[str, Any], deployment: Deployment | None) -> tuple[int, int]:
        """(prompt tokens, output tokens) a request may use, before it is sent."""
        prompt = prompt_tokens(body, raw_size)
        output = None
        for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                output = value
                break
        if output is None and deployment is not None:
            value = deployment.model_info.get("max_output_tokens") or deployment.model_info.get("max_tokens")
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                output = value
        if output is None:
            output = self._default_output
        return prompt, output

    async def admit(
        self,
        request_id: str,
        principal: Principal | None,
        end_user: EndUserRecord | None,
        model: str,
        deployment: Deployment | None,
        raw_size: int,
        body: Mapping[str, Any],
        prices: Mapping[str, Any] | pricing.PriceTable | None = None,
        end_user_id: str | None = None,
    ) -> Admitted | None:
        """Count the request against every limit it is under, or raise. None when it is under none and nobody's
        spend is kept (the master key without an end user); without limits, only the spend is kept."""
        limits = limits_of(principal, end_user, model, deployment, self._budgets, end_user_id)
        entities = _entities(principal, end_user)
        if prices is None:
            prices = deployment.model_info if deployment is not None else {}
        if not limits:
            return Admitted(None, limits, entities, prices, (body, raw_size)) if entities else None
        prompt, output = self.estimate(raw_size, body, deployment)
        # unknown prices: the budget's spend so far counts
        cost = pricing.estimate(prices, prompt, output, pricing.kinds_of(body)) or 0.0
        counted = limits if self._share == 1 else tuple(_shared(limit, self._share) for limit in limits)
        ask = Ask(request_id, counted, prompt + output, cost)
        admission = await self.limiter.admit(ask)
        if admission.cold and admission.denied is None:  # a budget's counter is empty: seed it, ask again once
            now = time.time()
            for limit in admission.cold:
                spent = await self.store.window_spend(limit.scope, period(limit, now))
                await self.limiter.seed(limit, spent / self._share)
            admission = await self.limiter.admit(ask)
        if self._share > 1 and admission.denied is not None:  # name the limit as configured, not this worker's part
            admission.denied = limits[counted.index(admission.denied)]
        if self.on_budget is not None:
            self._tell_budgets(limits, counted, admission)
        headers = _headers(counted, admission)
        if not admission.allowed or admission.ticket is None:
            raise _refusal(admission, headers)
        for scope, soft in soft_budgets(principal).items():  # compared with this worker's part, like the limits
            self._check_soft(scope, soft / self._share, counted, admission, headers)
        return Admitted(admission.ticket, limits, entities, prices, prompt, headers)

    def _tell_budgets(self, limits: tuple[Limit, ...], counted: tuple[Limit, ...], admission: Admission) -> None:
        """80 % and 100 % of each (hard) budget, for :attr:`on_budget`."""
        assert self.on_budget is not None
        for limit, part in zip(limits, counted, strict=True):
            if limit.kind != "budget" or not 0 < limit.limit < SOFT_ONLY:
                continue
            remaining = admission.remaining.get((part.scope, "budget"))
            refused = admission.denied is limit or admission.denied is part
            if refused or remaining is not None:
                used = limit.limit if refused else (part.limit - (remaining or 0.0)) * self._share
                if refused or used >= 0.8 * limit.limit:
                    level = "100%" if refused or used >= limit.limit else "80%"
                    self.on_budget(limit.scope, level, used, limit.limit, period(limit, time.time()))

    def _check_soft(
        self,
        scope: str,
        soft: float,
        limits: tuple[Limit, ...],
        admission: Admission,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Tell (header on every such response; a warning once per period and process) when a soft budget
        is crossed: what is spent and reserved, this request included, is at or above it."""
        budget = next((lim for lim in limits if lim.scope == scope and lim.kind == "budget"), None)
        remaining = admission.remaining.get((scope, "budget"))
        if budget is None or remaining is None or budget.limit - remaining < soft:
            return
        headers.append((b"x-lockgate-soft-budget-exceeded", scope.partition(":")[0].encode()))
        seen = (scope, period(budget, time.time()))
        if seen not in self._soft_told:
            if len(self._soft_told) > 100_000:
                self._soft_told.clear()
            self._soft_told.add(seen)
            who = _describe(budget)
            log.warning("soft budget crossed: the %s %s has committed $%.4f of its soft budget $%g",
                        who, scope.partition(":")[2][:16], budget.limit - remaining, soft)  # fmt: skip
            if self.on_budget is not None:
                committed = (budget.limit - remaining) * self._share
                self.on_budget(scope, "soft", committed, soft * self._share, seen[1])

    async def settle(
        self, admitted: Admitted, usage: Mapping[str, Any] | None, *, cost: float | None = None, charged: bool = False
    ) -> float:
        """Replace the reservations with what the request used (``usage``: OpenAI-shaped; a partial one, e.g.
        the output of a stream the client cut, is completed from the estimate); returns its cost (0 when
        the deployment has no prices). ``cost``: what the answer cost at the prices of the deployment that
        served it (a retry may have moved it off the first planned one), as its ledger row says; else priced
        here. ``charged``: the spend went to the database with the ledger row (:meth:`charge`); else it is
        queued here. A request that failed before any answer settles with no usage."""
        usage = usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int) and not usage.get("estimated"):
            tokens = max(0, prompt) + max(0, completion)
            if cost is None:
                cost = pricing.cost_of(admitted.prices, usage)
        elif isinstance(completion, int):  # some output was produced, its usage never arrived
            if not isinstance(prompt, int):
                prompt = admitted.prompt if isinstance(admitted.prompt, int) else prompt_tokens(*admitted.prompt)
            tokens = prompt + max(0, completion)
            if cost is None:
                kinds = pricing.kinds_of(admitted.prompt[0]) if isinstance(admitted.prompt, tuple) else pricing.ANY_KIND
                cost = pricing.estimate(admitted.prices, prompt, max(0, completion), kinds)
        else:  # nothing came back: nothing was produced
            tokens, cost = 0, 0.0
        cost = cost or 0.0
        if admitted.ticket is not None:
            await self.limiter.settle(admitted.ticket, tokens, cost)
        if not charged:
            self.writer.add(admitted.limits, admitted.entities, cost, time.time())
        return cost

    def charge(self, admitted: Admitted, cost: float | None) -> SpoolCharge | None:
        """What a request that cost ``cost`` adds to the database's spend (its budget windows, its owners), to be
        written with its ledger row; None when nothing."""
        if not cost or cost <= 0 or not math.isfinite(cost):
            return None
        now = time.time()
        windows = tuple((limit.scope, period(limit, now), cost) for limit in admitted.limits if limit.kind == "budget")
        return windows, tuple((kind, ident, cost) for kind, ident in admitted.entities)

    async def close(self) -> None:
        await self.writer.close()
        await self.limiter.close()


_IMAGE_TOKENS = 1600  # what one image part is reckoned at before the provider counts it


def prompt_tokens(body: Mapping[str, Any], raw_size: int) -> int:
    """About four characters a token over the text a model reads: messages (OpenAI and Anthropic shapes),
    system, tools; embeddings' input. Not a tokenizer: the settlement replaces it with the real count."""
    chars, images, messages = 0, 0, 0

    def walk(content: Any) -> None:
        nonlocal chars, images
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    kind = part.get("type")
                    if kind in ("image_url", "image", "input_image", "document"):
                        images += 1
                    else:
                        walk(part.get("text") or part.get("content") or part.get("input") or "")
                else:
                    walk(part)
        elif content is not None:
            chars += len(str(content))

    found = False
    for name in ("messages", "input", "prompt"):
        value = body.get(name)
        if value is None:
            continue
        found = True
        if name == "messages" and isinstance(value, list):
            for message in value:
                messages += 1
                if isinstance(message, dict):
                    walk(message.get("content"))
                    if message.get("tool_calls"):
                        chars += len(str(message["tool_calls"]))
        else:
            walk(value)
    if not found:
        return max(1, raw_size // 4)
    walk(body.get("system"))
    if body.get("tools"):
        chars += len(str(body["tools"]))
    return max(1, chars // 4 + 4 * messages + _IMAGE_TOKENS * images)


def _headers(limits: tuple[Limit, ...], admission: Admission) -> list[tuple[bytes, bytes]]:
    """OpenAI's ``x-ratelimit-*`` headers for the tightest request and token limits."""
    headers: list[tuple[bytes, bytes]] = []
    for kind, name in (("rpm", b"requests"), ("tpm", b"tokens")):
        best: tuple[float, Limit] | None = None
        for limit in limits:
            if limit.kind != kind:
                continue
            remaining = admission.remaining.get((limit.scope, limit.kind), limit.limit)
            if best is None or remaining < best[0]:
                best = (remaining, limit)
        if best is not None:
            headers.append((b"x-ratelimit-limit-" + name, str(int(best[1].limit)).encode()))
            headers.append((b"x-ratelimit-remaining-" + name, str(max(0, int(best[0]))).encode()))
    for limit in limits:  # the key's own budget (LiteLLM's header, and what is left of it after this request)
        if limit.kind == "budget" and limit.scope.startswith("key:") and ":model:" not in limit.scope:
            if limit.limit < SOFT_ONLY:
                left = admission.remaining.get((limit.scope, "budget"))
                headers.append((b"x-litellm-key-max-budget", f"{limit.limit:g}".encode()))
                if left is not None:
                    headers.append((b"x-lockgate-key-remaining-budget", f"{left:.10g}".encode()))
            break
    return headers


def _refusal(admission: Admission, headers: list[tuple[bytes, bytes]]) -> GatewayError:
    limit = admission.denied
    if limit is None:  # pragma: no cover - a limiter refuses with a reason
        error = RateLimited("Rate limit reached.", retry_after=1.0)
        error.headers.extend(headers)
        return error
    who, model = _describe(limit), _for_model(limit)
    if limit.kind == "budget":
        when = ""
        if admission.retry_after is not None and limit.window is not None:
            resets = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + admission.retry_after))
            when = f" It resets at {resets}."
        spent = f"Budget exceeded: the {who}'s budget of ${limit.limit:g}{model} is spent.{when}"
        budget: GatewayError = BudgetExceeded(spent)
        if admission.degraded:  # fail closed, but say so: this one is worth retrying
            message = f"The {who}'s budget{model} cannot be checked right now (shared counters unreachable); try again."
            budget = GatewayError(message, status=503, code="limits_unavailable")
            budget.headers.append((b"retry-after", b"1"))
        budget.headers.extend(headers)
        return budget
    retry = admission.retry_after if admission.retry_after is not None else 1.0
    limited = f"the {who}'s limit of {limit.limit:g} {_KINDS[limit.kind]}{model}"
    message = f"Rate limit reached: {limited}. Retry in {retry:.0f}s."
    error = RateLimited(message, retry_after=retry, tokens=limit.kind == "tpm", scope=limit.scope)
    error.headers.extend(headers)
    return error
