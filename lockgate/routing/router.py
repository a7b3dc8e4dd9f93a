"""Resolve a requested model to its model group and plan the attempts across its deployments.

A plan is the ordered list of :class:`Target` to try: the group's deployments in weighted-random order
within ``order`` tiers (LiteLLM's ``simple-shuffle``), repeated for ``num_retries`` extra attempts, then
each configured fallback group's own plan. The pipeline walks it until an attempt succeeds before the
first byte reaches the client.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lockgate import pricing
from lockgate.config import Settings
from lockgate.deployment import Deployment
from lockgate.errors import ModelNotFound, PermissionDenied
from lockgate.providers import registry
from lockgate.providers.base import Provider
from lockgate.routing.plan import Failure, Plan, RetryBudget
from lockgate.upstream import Timeouts

if TYPE_CHECKING:
    from lockgate.catalog import Catalog
    from lockgate.routing.health import Health

__all__ = ["Router", "Target", "price_hint"]


@dataclass(frozen=True, slots=True)
class Target:
    """One deployment ready to call: its provider and timeouts are resolved once, at start."""

    deployment: Deployment
    provider: Provider
    timeouts: Timeouts
    drop_params: bool
    prices: Mapping[str, Any] = field(default_factory=dict)
    """The catalog's prices for its model, overridden by its ``model_info`` (what pricing.py reads)."""
    priced: bool = False
    """It has an input or an output price: its requests have a cost."""
    table: pricing.PriceTable = field(default_factory=lambda: pricing.price_table({}))
    """``prices`` read once (:func:`~lockgate.pricing.price_table`): what a request's cost is computed from."""

    @property
    def group(self) -> str:
        return self.deployment.model_name


@dataclass(frozen=True, slots=True)
class _Wildcard:
    pattern: re.Pattern[str]
    targets: tuple[Target, ...]


def _target(deployment: Deployment, settings: Settings, catalog: Catalog | None = None) -> Target:
    provider = registry.get(deployment.provider)
    if provider is None:  # config validation already refused it
        raise ValueError(f"no provider {deployment.provider}")
    total = deployment.timeout or settings.request_timeout
    first_byte = deployment.stream_timeout or settings.stream_timeout or total
    idle = settings.resilience.stream_idle_timeout or total
    timeouts = Timeouts(total=total, first_byte=first_byte, idle=idle, connect=settings.connect_timeout)
    drop = deployment.options.get("drop_params", settings.drop_params)
    prices = _prices(deployment, catalog)
    table = pricing.price_table(prices)
    return Target(deployment, provider, timeouts, bool(drop), prices, _priced(table), table)


def _prices(deployment: Deployment, catalog: Catalog | None) -> Mapping[str, Any]:
    """The catalog's entry for the deployment (looked up by its ``model_info.base_model`` when set, and for Bedrock
    its ``aws_region_name``: :meth:`Catalog.find`) under its ``model_info``, which wins field by field."""
    info = deployment.model_info
    if catalog is None:
        return info
    base_model, region = info.get("base_model"), deployment.options.get("aws_region_name")
    listed = catalog.prices_for(
        deployment.provider,
        deployment.upstream_model,
        base_model=base_model if isinstance(base_model, str) else None,
        region=region if isinstance(region, str) else None,
    )
    return {**listed, **info} if listed else info


def price_hint(deployment: Deployment) -> str:
    """What to give a deployment that has no prices, for the warning that says so."""
    prices = "input_cost_per_token / output_cost_per_token in its model_info"
    if deployment.model_info.get("base_model"):
        return f"the catalog has no entry for its base_model; give it {prices}"
    model = deployment.upstream_model
    if deployment.provider == "bedrock" and "arn:" in model and "foundation-model/" not in model:
        return f"a Bedrock ARN does not name the model it runs: give model_info.base_model (its model id), or {prices}"
    if deployment.provider == "azure":
        return f"an Azure deployment is named by you, not by its model: give model_info.base_model, or {prices}"
    return f"give it {prices} (or model_info.base_model naming a catalog model)"


def _priced(table: pricing.PriceTable) -> bool:
    return pricing.rates_for(table, 0) is not None


class Router:
    """Built from settings (and the deployments added through the API, which join the config's groups of the
    same name); answers which targets serve a model name. Never changed once built: the gateway builds a new
    one when the deployments change, and a request keeps the one it started with."""

    def __init__(
        self,
        settings: Settings,
        rng: random.Random | None = None,
        *,
        db_deployments: tuple[Deployment, ...] = (),
        catalog: Catalog | None = None,
    ) -> None:
        self._rng = rng or random.Random()  # noqa: S311 - load balancing, not security
        self._retries = settings.num_retries
        self._resilience = settings.resilience
        self._strategy = settings.routing_strategy
        self._latency_buffer = settings.lowest_latency_buffer
        self._catalog = catalog
        self._refuse_unpriced = settings.unpriced == "refuse"
        self._specialised: dict[tuple[str, str], Target] = {}  # (deployment id, wildcard part) -> target
        self._fallbacks = settings.fallbacks
        self._groups: dict[str, tuple[Target, ...]] = {}
        self.db_ids = frozenset(d.id for d in db_deployments)
        """The ids of the deployments that came from the database (``/model/new``)."""
        wildcards: dict[str, list[Target]] = {}
        for deployment in (*settings.deployments, *db_deployments):
            target = _target(deployment, settings, catalog)
            if "*" in deployment.model_name:
                wildcards.setdefault(deployment.model_name, []).append(target)
            else:
                self._groups[deployment.model_name] = (*self._groups.get(deployment.model_name, ()), target)
        self._aliases = {a: t for a, (t, _) in settings.aliases.items() if "*" not in a}
        self._alias_patterns = [
            (re.compile("^" + ".*".join(map(re.escape, a.split("*"))) + "$", re.DOTALL), t)
            for a, (t, _) in sorted(settings.aliases.items(), key=lambda item: -len(item[0].replace("*", "")))
            if "*" in a
        ]
        self._shown_aliases = [a for a, (_, hidden) in settings.aliases.items() if not hidden and "*" not in a]
        # Most specific first: the longest literal part wins (``openai/*`` before ``*``).
        self._wildcards = [
            _Wildcard(re.compile("^" + "(.*)".join(map(re.escape, name.split("*"))) + "$", re.DOTALL), tuple(t))
            for name, t in sorted(wildcards.items(), key=lambda item: -len(item[0].replace("*", "")))
        ]

    def names(self) -> list[str]:
        """Model names a client may ask for (wildcard groups are shown as their pattern)."""
        return [*self._groups, *self._shown_aliases, *(w.targets[0].group for w in self._wildcards)]

    def targets(self) -> list[Target]:
        return [t for group in self._groups.values() for t in group] + [t for w in self._wildcards for t in w.targets]

    def resolve(self, model: str) -> str:
        """The model group a requested name lands on: itself, or the group its alias names."""
        if model in self._groups:
            return model
        alias = self._aliases.get(model)
        if alias is not None:
            return alias
        for pattern, target in self._alias_patterns:
            if pattern.match(model):
                return target
        return model

    def group(self, model: str) -> tuple[Target, ...]:
        """The targets serving ``model`` (or the group it is an alias of); raises :class:`ModelNotFound`."""
        found = self._groups.get(model)
        if found is not None:
            return found
        resolved = self.resolve(model)
        if resolved != model:
            return self.group(resolved)
        for wildcard in self._wildcards:
            match = wildcard.pattern.match(model)
            if match is not None:
                part = match.group(1) if match.groups() else ""
                return tuple(self._specialise(t, part) for t in wildcard.targets)
        raise ModelNotFound(
            f"The model '{model[:200]}' does not exist on this gateway. GET /v1/models lists the models you can "
            "use; to accept this name, give a model_list entry this model_name, or map it to a model group with "
            "router_settings.model_group_alias (wildcards such as 'claude-*' or '*haiku*' work).",
            param="model",
        )

    def _specialise(self, target: Target, part: str) -> Target:
        """A wildcard deployment for one requested model: that model upstream, at that model's prices."""
        known = self._specialised.get((target.deployment.id, part))
        if known is not None:
            return known
        deployment = replace(target.deployment, upstream_model=target.deployment.upstream_model.replace("*", part))
        prices = _prices(deployment, self._catalog)
        table = pricing.price_table(prices)
        specialised = replace(target, deployment=deployment, prices=prices, priced=_priced(table), table=table)
        if len(self._specialised) >= 4096:  # names are chosen by clients: bounded
            self._specialised.clear()
        self._specialised[(target.deployment.id, part)] = specialised
        return specialised

    def _order(
        self, targets: tuple[Target, ...], health: Health | None = None, stream: bool = False, prompt_tokens: int = 0
    ) -> list[Target]:
        if len(targets) == 1:
            return list(targets)
        tiers: dict[int, list[Target]] = {}
        for t in targets:
            tiers.setdefault(t.deployment.order if t.deployment.order is not None else 1 << 30, []).append(t)
        ordered: list[Target] = []
        for tier in sorted(tiers):
            pool = tiers[tier]
            if health is None or self._strategy == "simple-shuffle" or len(pool) == 1:
                while pool:  # weighted sampling without replacement
                    weights = [max(_weight(t), 1e-9) for t in pool]
                    pick = self._rng.choices(range(len(pool)), weights)[0]
                    ordered.append(pool.pop(pick))
            else:
                ordered.extend(self._by_strategy(pool, health, stream, prompt_tokens))
        return ordered

    def _by_strategy(self, pool: list[Target], health: Health, stream: bool, prompt_tokens: int) -> list[Target]:
        """One ``order`` tier sorted by the routing strategy (ties in random order)."""
        self._rng.shuffle(pool)
        if self._strategy == "least-busy":
            return sorted(pool, key=lambda t: health.inflight(t.deployment.id))
        if self._strategy == "cost-based-routing":
            return sorted(pool, key=_price)
        if self._strategy.startswith("usage-based-routing"):
            return sorted(pool, key=lambda t: _load(t, health))
        # latency-based-routing: the fastest for requests like this one; one never measured is tried first (so it
        # gets measured); those within lowest_latency_buffer of the fastest share the load at random
        measured = [(health.latency(t.deployment.id, stream=stream, prompt_tokens=prompt_tokens), t) for t in pool]
        unknown = [t for seconds, t in measured if seconds is None]
        known = sorted(((seconds, t) for seconds, t in measured if seconds is not None), key=lambda pair: pair[0])
        if known and self._latency_buffer > 0:
            best = known[0][0]
            close = [t for seconds, t in known if seconds <= best * (1 + self._latency_buffer)]
            self._rng.shuffle(close)
            return [*unknown, *close, *(t for seconds, t in known if seconds > best * (1 + self._latency_buffer))]
        return [*unknown, *(t for _, t in known)]

    def eligible(self, name: str, *, missing_ok: bool = False) -> tuple[Target, ...]:
        """The targets of group ``name`` that may serve (with ``lockgate.unpriced: refuse``, the priced ones).
        Raises :class:`ModelNotFound` / :class:`PermissionDenied` (model_not_priced), or, ``missing_ok``, gives
        ()."""
        try:
            targets = self.group(name)
        except ModelNotFound:
            if missing_ok:
                return ()
            raise
        if self._refuse_unpriced:
            targets = tuple(t for t in targets if t.priced)
            if not targets and not missing_ok:
                raise PermissionDenied(
                    f"The model '{name[:200]}' has no price on this gateway, and lockgate.unpriced is 'refuse'. An "
                    "administrator can give it input_cost_per_token / output_cost_per_token in its model_info.",
                    param="model",
                    code="model_not_priced",
                )
        return targets

    def order(
        self, targets: Sequence[Target], health: Health | None = None, *, stream: bool = False, prompt_tokens: int = 0
    ) -> list[Target]:
        """``targets`` in the order to try them: ``order`` tiers first, then within a tier the routing strategy
        (simple-shuffle: weighted random; the others need ``health``'s measurements)."""
        return self._order(tuple(targets), health, stream, prompt_tokens)

    def fallbacks_of(self, group: str) -> tuple[str, ...]:
        return self._fallbacks.get(group, ())

    def start(
        self, model: str, num_retries: int | None = None, *, health: Health | None = None,
        budget: RetryBudget | None = None, stream: bool = False, prompt_tokens: int = 0,
    ) -> Plan:  # fmt: skip
        """The plan of one request for ``model`` (see :mod:`lockgate.routing.plan`); ``stream`` and
        ``prompt_tokens`` describe the request for latency-based routing."""
        retries = self._retries if num_retries is None else num_retries
        return Plan(self, model, retries, self._resilience, health, budget, self._rng, stream, prompt_tokens)

    def plan(self, model: str, num_retries: int | None = None) -> Iterator[Target]:
        """Every target a request would try if each attempt failed with a server error: the group with its
        retries, then each fallback group's (for /health and tests)."""
        plan = self.start(model, num_retries)
        yield plan.current
        while (step := plan.after(Failure("server"))) is not None:
            yield step[0]


def _price(target: Target) -> float:
    """What a token costs at the deployment (input and output prices added; unpriced last)."""
    rates = pricing.rates_for(target.table, 0)
    return math.inf if rates is None else rates.input + rates.output


def _load(target: Target, health: Health) -> float:
    """How much of its rpm / tpm the deployment used in the last minute (its raw token count without limits)."""
    requests, tokens = health.usage(target.deployment.id)
    d = target.deployment
    if d.rpm or d.tpm:
        return max(requests / d.rpm if d.rpm else 0.0, tokens / d.tpm if d.tpm else 0.0)
    return float(tokens)


def _weight(target: Target) -> float:
    d = target.deployment
    if d.weight != 1.0:
        return d.weight
    return float(d.rpm or d.tpm or 1)
