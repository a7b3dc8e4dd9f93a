"""Load and validate a LiteLLM-style ``config.yaml``: the only module that reads the environment.

:func:`load_settings` reads the file with ``yaml.safe_load``, resolves ``os.environ/NAME`` references,
checks every key and returns frozen :class:`Settings`, or raises :class:`ConfigError` listing every
problem with its path (and line) in the file. Keys that LiteLLM knows but lockgate does not implement yet
become warnings ("ignored: <path>"); unknown keys get a typo suggestion. Nothing here weakens auth:
an ignored key is only ever ignored.

Environment variables read (the README's table is generated from :data:`ENVIRONMENT`):
only those in :data:`ENVIRONMENT`, plus whatever the config names with ``os.environ/NAME``.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml

from lockgate.callbacks.settings import ENVIRONMENT as CALLBACK_ENVIRONMENT
from lockgate.callbacks.settings import ObserveSettings, parse_observe
from lockgate.configkeys import (
    _GENERAL,
    _GENERAL_IGNORED,
    _GENERAL_REFUSED,
    _LITELLM,
    _LITELLM_IGNORED,
    _LOCKGATE,
    _MODEL_ENTRY,
    _MODEL_INFO,
    _MODES,
    _PARAMS_IGNORED,
    _ROUTER,
    _ROUTER_IGNORED,
    _SECRET_PARAMS,
    _STRATEGIES,
    _TOP,
    _TOP_IGNORED,
)
from lockgate.deployment import Deployment, deployment_id
from lockgate.pricing import PRICE_FIELDS, PRICE_TABLES
from lockgate.providers import registry
from lockgate.providers.base import COMMON_CONFIG_PARAMS
from lockgate.retention import DEFAULT_INTERVAL, DEFAULT_PROMPT_RETENTION, parse_period
from lockgate.secret import Secret
from lockgate.urls import Allowlist

__all__ = [
    "ENVIRONMENT",
    "ConfigError",
    "Problem",
    "Settings",
    "load_settings",
    "parse_deployment",
    "parse_settings",
]

ENV_PREFIX = "os.environ/"
_PRICE_TIER = re.compile(r"^[a-z0-9_]+_above_\d+k?_tokens$")  # prices above a prompt size (pricing.py reads them)

# Every environment variable lockgate reads on its own, with what it does. Nothing else is read implicitly.
ENVIRONMENT: dict[str, str] = {
    "LITELLM_MASTER_KEY": "Master key, when the config sets no `general_settings.master_key` (LiteLLM's name).",
    "DATABASE_URL": "Database URL, when the config sets no `general_settings.database_url` (LiteLLM's name).",
    "LITELLM_DROP_PARAMS": "`true` sets `litellm_settings.drop_params` when the config leaves it unset.",
    "REDIS_URL": "Redis URL, when the config sets no `router_settings.redis_url` / `redis_host` (LiteLLM's name).",
    "REDIS_HOST": "Redis host, when neither the config nor `REDIS_URL` names Redis (LiteLLM's name).",
    "REDIS_PORT": "Redis port with `REDIS_HOST` (default 6379).",
    "REDIS_PASSWORD": "Redis password with `REDIS_HOST`.",
    "LITELLM_SALT_KEY": "Encrypts the credentials of models added through `/model/new` (LiteLLM's name); "
    "keep it and never change it, or those models stop loading.",
    **CALLBACK_ENVIRONMENT,  # read only when a config names the callback or alerting that uses them
}
SHORT_SALT_KEY = 16


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class ConfigError(Exception):
    """The config cannot be served; ``problems`` says every reason, ``warnings`` what was ignored."""

    def __init__(self, source: str, problems: list[Problem], warnings: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        self.warnings = warnings
        lines = [f"{source}: {len(problems)} problem(s):"] + [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))


METRICS_ACCESS = ("viewer", "key", "public", "off")
"""``lockgate.metrics``: who may read ``/metrics`` (viewer: proxy admins and proxy-admin viewers), or no metrics."""
METRICS_LABELS = ("team", "user", "end_user", "key")
"""``lockgate.metrics_labels``: the owner labels requests, tokens and spend may carry."""
ROUTING_STRATEGIES = frozenset({
    "simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing", "usage-based-routing-v2",
    "cost-based-routing",
})  # fmt: skip

# LiteLLM's retry_policy / allowed_fails_policy names -> the failure kinds of lockgate.routing.health they cover
RETRY_POLICY_NAMES: dict[str, tuple[str, ...]] = {
    "AuthenticationErrorRetries": ("auth",),
    "TimeoutErrorRetries": ("timeout", "connection"),
    "RateLimitErrorRetries": ("rate_limit",),
    "ContentPolicyViolationErrorRetries": ("content_policy",),
    "InternalServerErrorRetries": ("server",),
    "BadRequestErrorRetries": ("bad_request",),
    "NotFoundErrorRetries": ("not_found",),
}
FAILS_POLICY_NAMES: dict[str, tuple[str, ...]] = {
    name.replace("Retries", "AllowedFails"): kinds for name, kinds in RETRY_POLICY_NAMES.items()
}


@dataclass(frozen=True)
class Resilience:
    """Retries, fallbacks, cooldowns and slowness (router_settings, litellm_settings and lockgate keys)."""

    retry_policy: dict[str, int] = field(default_factory=dict)
    """``retry_policy``: retries per failure kind (auth, timeout, connection, rate_limit, content_policy, server,
    bad_request, not_found), overriding num_retries for that kind."""
    group_retry_policy: dict[str, dict[str, int]] = field(default_factory=dict)
    """``model_group_retry_policy``: model group -> its own retry_policy."""
    retry_after: float = 0.0
    """``retry_after``: seconds at least between two attempts of a group (backoff and the upstream's retry-after
    can make it longer)."""
    retry_budget: float = 0.2
    """``lockgate.retry_budget``: retries may add at most this fraction of the requests of the last 10 s (plus
    10 a second): a broken provider does not get its load multiplied."""
    context_window_fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    content_policy_fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default_fallbacks: tuple[str, ...] = ()
    max_fallbacks: int = 5
    allowed_fails: int = 3
    allowed_fails_policy: dict[str, int] = field(default_factory=dict)
    cooldown_time: float = 5.0
    disable_cooldowns: bool = False
    degrade_factor: float = 3.0
    """``lockgate.degrade_factor``: a deployment whose recent latency is this many times its own normal is
    degraded (tried after the healthy ones)."""
    slo_ttft: float | None = None
    """``lockgate.slo_ttft``: seconds; a deployment whose recent time to first token is above it is degraded."""
    hedge_after: float | None = None
    """``lockgate.hedge_after``: seconds without an answer (a stream's first bytes) after which a second attempt
    goes to another deployment of the group; the first to answer wins, the other is cancelled. Off by default."""
    stream_idle_timeout: float | None = None
    """``lockgate.stream_idle_timeout``: the longest gap between two chunks of a stream (default: the total
    timeout)."""


@dataclass(frozen=True)
class Settings:
    """Everything the gateway needs, validated. Built once at start; never mutated."""

    deployments: tuple[Deployment, ...]
    master_key: Secret | None = None
    database_url: Secret | None = None
    redis_url: Secret | None = None
    sqlite_path: str = "lockgate.db"
    """The default database (keys, users, spend) when no database_url is given; relative to the config file."""
    key_cache_ttl: float = 30.0
    """Shared state across instances (thinking signatures now; limits and key invalidation later)."""
    store_prompts_in_spend_logs: bool = False
    """Keep prompts and answers (redacted) in the ledger, unless a key's or team's metadata says otherwise
    (:mod:`lockgate.prompts`)."""
    disable_spend_logs: bool = False
    """No ledger row per request (budgets and owners' spend are still kept)."""
    spend_logs_retention: float | None = None
    """``general_settings.maximum_spend_logs_retention_period`` in seconds: older ledger rows are deleted."""
    spend_logs_retention_interval: float = DEFAULT_INTERVAL
    """``general_settings.maximum_spend_logs_retention_interval`` in seconds: how often retention runs."""
    prompt_retention: float | None = DEFAULT_PROMPT_RETENTION
    """``lockgate.prompt_retention`` in seconds (None: ``never``): older rows' prompts and answers are cleared."""
    drop_params: bool = False
    num_retries: int = 0
    request_timeout: float = 600.0
    stream_timeout: float | None = None
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    resilience: Resilience = field(default_factory=Resilience)
    background_health_checks: bool = False
    """``general_settings.background_health_checks``: check every deployment every ``health_check_interval``."""
    health_check_interval: float = 300.0
    aliases: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """model_group_alias: a name clients use (``*`` wildcards allowed) → (model group, hidden from /v1/models)."""
    routing_strategy: str = "simple-shuffle"
    """One of :data:`ROUTING_STRATEGIES` (LiteLLM's names); within each ``order`` tier."""
    lowest_latency_buffer: float = 0.0
    """``routing_strategy_args.lowest_latency_buffer``: latency-based routing shares the load among deployments
    within this fraction of the fastest."""
    max_request_size_mb: float = 10.0
    shutdown_grace_seconds: float = 30.0
    connect_timeout: float = 10.0
    upstream_pool_size: int = 0
    salt_key: Secret | None = None
    """``LITELLM_SALT_KEY``: credentials of models added through the API are encrypted under a key derived
    from it (:mod:`lockgate.sealing`); without it such models may not carry credentials."""
    model_api_base_allow: tuple[str, ...] = ()
    """``lockgate.model_api_base_allow``: origins and networks an API-added model may point at beyond public
    https hosts (:class:`lockgate.urls.Allowlist`)."""
    instances: int = 1
    """``lockgate.instances``: how many gateway instances share the limits; while Redis is unreachable each
    enforces 1/instances of every rate limit on its own."""
    budgets_fail_open: bool = False
    """``lockgate.budgets_fail_open``: while Redis is unreachable, admit requests under a budget (default:
    refuse them, since their spend cannot be counted against the shared budget)."""
    default_max_output_tokens: int = 4096
    """``lockgate.default_max_output_tokens``: the output reserved against tpm limits and budgets when a
    request names no max_tokens and its model no max_output_tokens."""
    price_file: str | None = None
    """``lockgate.price_file``: a LiteLLM-format price file whose entries replace the shipped catalog's."""
    unpriced: Literal["warn", "refuse"] = "warn"
    """``lockgate.unpriced``: what a deployment without prices (in neither the catalog nor its model_info) does:
    ``warn`` serves it, logs it and marks its spend rows ``unpriced`` (its requests count $0 against budgets);
    ``refuse`` leaves it out of routing, and a model with no priced deployment answers 403."""
    max_budget: float | None = None
    """``litellm_settings.max_budget``: USD the whole gateway may spend (per ``budget_duration``, else ever)."""
    budget_duration: str | None = None
    """``litellm_settings.budget_duration``: the period of max_budget; periods are counted from 1970-01-01 UTC,
    so ``1d`` resets at midnight UTC and ``1mo`` on the 1st of each month."""
    max_end_user_budget: float | None = None
    """``litellm_settings.max_end_user_budget``: USD each end user (the body's ``user``) may spend, unless its own
    record (``/customer/new``) sets a budget."""
    metrics: Literal["viewer", "key", "public", "off"] = "viewer"
    """``lockgate.metrics``: who may read ``/metrics`` (one of :data:`METRICS_ACCESS`)."""
    metrics_labels: tuple[str, ...] = ()
    """``lockgate.metrics_labels``: owner labels (:data:`METRICS_LABELS`) on requests, tokens and spend."""
    metrics_max_series: int = 1000
    """``lockgate.metrics_max_series``: label sets per metric; more are counted as ``other``."""
    observe: ObserveSettings = field(default_factory=ObserveSettings)
    """Callbacks (litellm_settings.callbacks ...) and alerts (general_settings.alerting ...): lockgate.callbacks."""
    warnings: tuple[Problem, ...] = ()
    source: str = "<config>"


class _Checker:
    """Collects problems and warnings while the raw config is walked."""

    def __init__(self, lines: Mapping[str, int]) -> None:
        self.lines = lines
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, self.lines.get(path)))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Problem(path, message, self.lines.get(path)))

    def section(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, not {type(value).__name__}")
            return {}
        return value

    def keys(
        self,
        data: Mapping[str, Any],
        path: str,
        known: set[str],
        ignored: set[str] | frozenset[str] = frozenset(),
        refused: Mapping[str, str] | None = None,
    ) -> None:
        refused = refused or {}
        for key in data:
            sub = f"{path}.{key}" if path else str(key)
            if key in known:
                continue
            if key in refused:
                self.error(sub, f"not supported: {refused[key]}")
            elif key in ignored:
                self.warn(sub, "ignored: not implemented by lockgate yet")
            else:
                close = difflib.get_close_matches(str(key), [*known, *ignored, *refused], n=1, cutoff=0.8)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.warn(sub, f"ignored: unknown key{hint}")

    def number(self, value: Any, path: str, *, integer: bool = False, minimum: float = 0) -> Any:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            if integer:
                if number != int(number):
                    raise ValueError
                number = int(number)
        except (TypeError, ValueError, OverflowError):
            self.error(path, f"must be {'an integer' if integer else 'a number'}, not {value!r}")
            return None
        if number < minimum:
            self.error(path, f"must be at least {minimum:g}")
            return None
        return number

    def boolean(self, value: Any, path: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.error(path, f"must be true or false, not {value!r}")
        return False

    def string(self, value: Any, path: str) -> str | None:
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self.error(path, "must be a non-empty string")
        return None


def _line_map(text: str) -> dict[str, int]:
    """Map each key path (``a.b[0].c``) to its 1-based line in the YAML text."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = f"{path}.{key.value}" if path else str(key.value)
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                sub = f"{path}[{index}]"
                lines[sub] = item.start_mark.line + 1
                walk(item, sub)

    if root is not None:
        walk(root, "")
    return lines


def _resolve_env(value: Any, path: str, env: Mapping[str, str], check: _Checker) -> Any:
    """Replace every ``os.environ/NAME`` string by the variable's value; a missing one is an error."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        if name not in env:
            check.error(path, f"environment variable {name} is not set (referenced as {value})")
            return None
        return env[name]
    if isinstance(value, dict):
        return {k: _resolve_env(v, f"{path}.{k}" if path else str(k), env, check) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, f"{path}[{i}]", env, check) for i, v in enumerate(value)]
    return value


def _split_model(model: str, params: Mapping[str, Any]) -> tuple[str | None, str]:
    provider, _, rest = model.partition("/")
    override = params.get("custom_llm_provider")
    if isinstance(override, str) and override:
        return override, model if override != provider else rest
    if rest and (registry.get(provider) or provider in registry.PLANNED):
        return provider, rest
    lowered = model.lower()
    if lowered.startswith(("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-", "omni-moderation")):
        return "openai", model
    if lowered.startswith("claude"):
        return "anthropic", model
    return (provider, rest) if rest else (None, model)


def _deployment(entry: Any, index: int, check: _Checker, path: str | None = None) -> Deployment | None:
    """One ``model_list`` entry; problems are reported under ``path`` (``model_list[index]``; "" for paths
    relative to the entry)."""
    path = f"model_list[{index}]" if path is None else path

    def at(key: str) -> str:
        return f"{path}.{key}" if path else key

    if not isinstance(entry, dict):
        check.error(path, "must be a mapping with model_name and litellm_params")
        return None
    check.keys(entry, path, _MODEL_ENTRY)
    name = entry.get("model_name")
    if not isinstance(name, str) or not name:
        check.error(at("model_name"), "is required (the name clients ask for)")
        name = None
    params = check.section(entry.get("litellm_params"), at("litellm_params"))
    info = check.section(entry.get("model_info"), at("model_info"))
    ppath = at("litellm_params")
    model = params.get("model")
    if not isinstance(model, str) or not model:
        check.error(f"{ppath}.model", "is required, as provider/model (e.g. openai/gpt-4o)")
        return None
    provider_name, upstream = _split_model(model, params)
    if provider_name is None:
        check.error(f"{ppath}.model", f"cannot tell the provider of '{model}': write it as provider/model")
        return None
    provider = registry.get(provider_name)
    if provider is None:
        if provider_name in registry.PLANNED:
            check.error(f"{ppath}.model", f"the {provider_name} provider is not supported by this version yet")
        else:
            known = sorted([*registry.PROVIDERS, *registry.PLANNED])
            close = difflib.get_close_matches(provider_name, known, n=1, cutoff=0.7)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {', '.join(known)}"
            check.error(f"{ppath}.model", f"unknown provider '{provider_name}'{hint}")
        return None

    def opt(key: str, integer: bool = False) -> Any:
        value = params.get(key)
        return None if value is None else check.number(value, f"{ppath}.{key}", integer=integer)

    api_base = params.get("api_base", params.get("base_url"))
    api_key = params.get("api_key")
    body_defaults: dict[str, Any] = {}
    options: dict[str, Any] = {}
    prices: dict[str, Any] = {}  # LiteLLM's custom pricing (its docs, the Terraform provider): joins model_info
    for key, value in params.items():
        if key in COMMON_CONFIG_PARAMS:
            continue
        if key in PRICE_TABLES:
            prices[key] = value  # a mapping (search_context_cost_per_query): pricing.py reads what it can
            continue
        if key in PRICE_FIELDS or (isinstance(key, str) and _PRICE_TIER.match(key)):
            price = None if value is None else check.number(value, f"{ppath}.{key}")
            if price is not None:
                prices[key] = price
            continue
        if key in provider.config_params:
            options[key] = Secret(str(value)) if key in _SECRET_PARAMS and value is not None else value
        elif key in _PARAMS_IGNORED:
            check.warn(f"{ppath}.{key}", "ignored: not implemented by lockgate yet")
        elif key in provider.chat_fields or key in provider.extra_chat_fields:
            if key in ("model", "messages", "stream"):
                check.error(f"{ppath}.{key}", "cannot be set per deployment")
            else:
                body_defaults[key] = value
        else:
            check.warn(f"{ppath}.{key}", f"ignored: not a parameter of the {provider.name} provider")
    if "drop_params" in params:
        options["drop_params"] = check.boolean(params["drop_params"], f"{ppath}.drop_params")
    tiers = {k for k in info if isinstance(k, str) and _PRICE_TIER.match(k)}  # input_cost_per_token_above_200k_tokens
    check.keys(info, at("model_info"), _MODEL_INFO | PRICE_FIELDS | PRICE_TABLES | tiers)
    mode = info.get("mode", "chat")
    if not isinstance(mode, str) or mode not in _MODES:
        check.error(at("model_info.mode"), f"must be one of {', '.join(sorted(_MODES))}")
    weight = params.get("weight")
    deployment = Deployment(
        model_name=name or "",
        provider=provider.name,
        upstream_model=upstream,
        id=str(info["id"]) if info.get("id") else deployment_id(name or "", model, api_base, index),
        api_base=check.string(api_base, f"{ppath}.api_base") if api_base is not None else None,
        api_key=Secret(str(api_key)) if api_key else None,
        api_version=str(params["api_version"]) if params.get("api_version") else None,
        organization=str(params["organization"]) if params.get("organization") else None,
        timeout=opt("timeout"),
        stream_timeout=opt("stream_timeout"),
        rpm=opt("rpm", True),
        tpm=opt("tpm", True),
        weight=check.number(weight, f"{ppath}.weight") if weight is not None else 1.0,
        order=opt("order", True),
        max_retries=opt("max_retries", True),
        params=body_defaults,
        options=options,
        model_info={**prices, **info},
    )
    for key, message in provider.check(deployment):
        check.error(f"{ppath}.{key}", message)
    return deployment if name else None


def parse_deployment(entry: Any) -> tuple[Deployment, tuple[Problem, ...]]:
    """One deployment given outside the config file (through ``/model/new``, or loaded from the database),
    validated exactly as a ``model_list`` entry is, with problem paths relative to the entry
    (``litellm_params.api_base``). ``os.environ/NAME`` references are refused: the server's environment is
    the operator's, and an API caller could otherwise send a variable (``DATABASE_URL``...) to a URL of its
    choosing. Returns the deployment and the warnings (ignored keys); raises :class:`ConfigError`."""
    check = _Checker({})
    _refuse_env(entry, "", check)
    deployment = _deployment(entry, 0, check, path="")
    if check.problems or deployment is None:
        raise ConfigError("model", check.problems or [Problem("", "not a valid deployment")], check.warnings)
    return deployment, tuple(check.warnings)


def _refuse_env(value: Any, path: str, check: _Checker) -> None:
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        check.error(path, f"{ENV_PREFIX}NAME references are not accepted here: give the value itself")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_env(item, f"{path}.{key}" if path else str(key), check)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_env(item, f"{path}[{index}]", check)


def _allowlist(value: Any, check: _Checker) -> tuple[str, ...]:
    """``lockgate.model_api_base_allow``: origins (``http://127.0.0.1:*``) and networks (``10.0.0.0/8``)."""
    path = "lockgate.model_api_base_allow"
    if value is None:
        return ()
    if not isinstance(value, list):
        check.error(path, "must be a list of origins (http://host:port, port * = any) or networks (10.0.0.0/8)")
        return ()
    entries: list[str] = []
    for index, entry in enumerate(value):
        try:
            Allowlist.parse([entry])
        except ValueError as exc:
            check.error(f"{path}[{index}]", str(exc))
            continue
        entries.append(entry)
    return tuple(entries)


def _salt_key(env: Mapping[str, str], check: _Checker) -> Secret | None:
    value = env.get("LITELLM_SALT_KEY")
    if not value:
        return None
    if len(value) < SHORT_SALT_KEY:
        check.warn(
            "LITELLM_SALT_KEY (environment)",
            f"shorter than {SHORT_SALT_KEY} characters: use a long random value (e.g. openssl rand -hex 32)",
        )
    return Secret(value)


def _fallbacks(value: Any, path: str, names: set[str], check: _Checker) -> dict[str, tuple[str, ...]]:
    """LiteLLM's ``fallbacks: [{group: [fallback, ...]}, ...]``."""
    result: dict[str, tuple[str, ...]] = {}
    if value is None:
        return result
    if not isinstance(value, list):
        check.error(path, "must be a list of {model_group: [fallback groups]}")
        return result
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            check.error(f"{path}[{i}]", "must be a mapping {model_group: [fallback groups]}")
            continue
        for group, targets in item.items():
            if isinstance(targets, str):
                targets = [targets]
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                check.error(f"{path}[{i}].{group}", "must be a list of model group names")
                continue
            for target in (str(group), *targets):
                if not any(fnmatch.fnmatchcase(target, name) for name in names):
                    check.error(f"{path}[{i}].{group}", f"'{target}' is not a model_name in model_list")
            result[str(group)] = tuple(targets)
    return result


def _aliases(value: Any, path: str, names: set[str], check: _Checker) -> dict[str, tuple[str, bool]]:
    """LiteLLM's ``model_group_alias: {alias: group}`` or ``{alias: {model: group, hidden: true}}``."""
    result: dict[str, tuple[str, bool]] = {}
    if value is None:
        return result
    if not isinstance(value, dict):
        check.error(path, "must be a mapping of alias to model group")
        return result
    for alias, target in value.items():
        hidden = False
        if isinstance(target, dict):
            hidden = bool(target.get("hidden", False))
            target = target.get("model")
        if not isinstance(target, str) or not target:
            check.error(f"{path}.{alias}", "must name a model group (or be {model: ..., hidden: true})")
            continue
        if not any(fnmatch.fnmatchcase(target, name) for name in names):
            check.error(f"{path}.{alias}", f"'{target}' is not a model_name in model_list")
            continue
        result[str(alias)] = (target, hidden)
    return result


def parse_settings(raw: Any, env: Mapping[str, str], *, source: str = "<config>", text: str = "") -> Settings:
    """Validate an already-parsed config document. Raises :class:`ConfigError`."""
    check = _Checker(_line_map(text) if text else {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        check.error("", "the config must be a YAML mapping")
        raise ConfigError(source, check.problems, check.warnings)
    check.keys(raw, "", _TOP, _TOP_IGNORED)

    # environment_variables are exported before anything else resolves (as LiteLLM does).
    exported = check.section(raw.get("environment_variables"), "environment_variables")
    overlay = dict(env)
    for key, value in exported.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            overlay[str(key)] = str(value)
        else:
            check.error(f"environment_variables.{key}", "must be a string")
    env = overlay

    def used(name: str, known: set[str]) -> dict[str, Any]:
        """A section with references resolved in the keys lockgate reads (an ignored key may name an unset one)."""
        section = check.section(raw.get(name), name)
        return {k: _resolve_env(v, f"{name}.{k}", env, check) if k in known else v for k, v in section.items()}

    general = used("general_settings", _GENERAL)
    litellm = used("litellm_settings", _LITELLM)
    router = used("router_settings", _ROUTER)
    native = used("lockgate", _LOCKGATE)
    check.keys(general, "general_settings", _GENERAL, _GENERAL_IGNORED, _GENERAL_REFUSED)
    check.keys(litellm, "litellm_settings", _LITELLM, _LITELLM_IGNORED)
    check.keys(router, "router_settings", _ROUTER, _ROUTER_IGNORED)
    check.keys(native, "lockgate", _LOCKGATE)

    models = raw.get("model_list")
    deployments: list[Deployment] = []
    if models is None:
        check.warn("model_list", "no models configured: the gateway will answer 404 for every model")
    elif not isinstance(models, list):
        check.error("model_list", "must be a list of models")
    else:
        for index, entry in enumerate(models):
            resolved = _resolve_env(entry, f"model_list[{index}]", env, check)
            deployment = _deployment(resolved, index, check)
            if deployment is not None:
                deployments.append(deployment)
    _check_ids(deployments, check)

    master = general.get("master_key", env.get("LITELLM_MASTER_KEY"))
    database = general.get("database_url", env.get("DATABASE_URL"))
    drop = litellm.get("drop_params", env.get("LITELLM_DROP_PARAMS", False))
    strategy = router.get("routing_strategy", "simple-shuffle")
    if not isinstance(strategy, str) or strategy not in _STRATEGIES:
        check.error("router_settings.routing_strategy", f"must be one of {', '.join(sorted(_STRATEGIES))}")
        strategy = "simple-shuffle"
    elif strategy not in ROUTING_STRATEGIES:
        check.warn(
            "router_settings.routing_strategy",
            f"ignored: '{strategy}' is not implemented yet; using simple-shuffle",
        )
        strategy = "simple-shuffle"
    strategy_args = router.get("routing_strategy_args") or {}
    if not isinstance(strategy_args, dict):
        check.error("router_settings.routing_strategy_args", "must be a mapping")
        strategy_args = {}
    buffer = strategy_args.get("lowest_latency_buffer")
    buffer = (
        0.0 if buffer is None else check.number(buffer, "router_settings.routing_strategy_args.lowest_latency_buffer")
    )

    def num(section: Mapping[str, Any], key: str, path: str, default: Any, integer: bool = False) -> Any:
        if section.get(key) is None:
            return default
        value = check.number(section[key], f"{path}.{key}", integer=integer)
        return default if value is None else value

    names = (
        {e["model_name"] for e in models if isinstance(e, dict) and isinstance(e.get("model_name"), str)}
        if isinstance(models, list)
        else set()
    )
    aliases = _aliases(litellm.get("model_group_alias"), "litellm_settings.model_group_alias", names, check)
    aliases.update(_aliases(router.get("model_group_alias"), "router_settings.model_group_alias", names, check))
    fallbacks = _fallbacks(litellm.get("fallbacks"), "litellm_settings.fallbacks", names, check)
    fallbacks.update(_fallbacks(router.get("fallbacks"), "router_settings.fallbacks", names, check))
    resilience = _resilience(router, litellm, native, names, check)
    redis_url = _redis_url(router, env, check)
    sqlite = native.get("sqlite_path", "lockgate.db")
    if not isinstance(sqlite, str) or not sqlite:
        check.error("lockgate.sqlite_path", "must be a file path")
        sqlite = "lockgate.db"
    base = Path(source).parent if source and source != "<config>" else Path.cwd()
    price_file = _price_file(native.get("price_file"), base, check)
    settings = Settings(
        price_file=price_file,
        max_budget=num(litellm, "max_budget", "litellm_settings", None),
        budget_duration=_budget_duration(litellm.get("budget_duration"), check),
        max_end_user_budget=num(litellm, "max_end_user_budget", "litellm_settings", None),
        sqlite_path=str(base / sqlite),
        key_cache_ttl=num(general, "user_api_key_cache_ttl", "general_settings", 30.0),
        redis_url=redis_url,
        deployments=tuple(deployments),
        master_key=Secret(str(master)) if master else None,
        database_url=Secret(str(database)) if database else None,
        store_prompts_in_spend_logs=check.boolean(
            general.get("store_prompts_in_spend_logs", False), "general_settings.store_prompts_in_spend_logs"
        ),
        disable_spend_logs=check.boolean(
            general.get("disable_spend_logs", False), "general_settings.disable_spend_logs"
        ),
        spend_logs_retention=_period(general, "maximum_spend_logs_retention_period", "general_settings", None, check),
        spend_logs_retention_interval=_period(
            general, "maximum_spend_logs_retention_interval", "general_settings", DEFAULT_INTERVAL, check
        ),
        prompt_retention=_period(native, "prompt_retention", "lockgate", DEFAULT_PROMPT_RETENTION, check),
        drop_params=check.boolean(
            drop, "litellm_settings.drop_params" if "drop_params" in litellm else "LITELLM_DROP_PARAMS (environment)"
        ),
        num_retries=num(
            router,
            "num_retries",
            "router_settings",
            num(litellm, "num_retries", "litellm_settings", 0, True),
            True,
        ),
        request_timeout=num(
            router, "timeout", "router_settings", num(litellm, "request_timeout", "litellm_settings", 600.0)
        ),
        stream_timeout=num(router, "stream_timeout", "router_settings", None),
        fallbacks=fallbacks,
        resilience=resilience,
        background_health_checks=check.boolean(
            general.get("background_health_checks", False), "general_settings.background_health_checks"
        ),
        health_check_interval=num(general, "health_check_interval", "general_settings", 300.0),
        aliases=aliases,
        routing_strategy=strategy,
        lowest_latency_buffer=float(buffer or 0.0),
        max_request_size_mb=num(
            native,
            "max_request_size_mb",
            "lockgate",
            num(general, "max_request_size_mb", "general_settings", 10.0),
        ),
        shutdown_grace_seconds=num(native, "shutdown_grace_seconds", "lockgate", 30.0),
        connect_timeout=num(native, "connect_timeout", "lockgate", 10.0),
        upstream_pool_size=num(native, "upstream_pool_size", "lockgate", 0, True),
        salt_key=_salt_key(env, check),
        model_api_base_allow=_allowlist(native.get("model_api_base_allow"), check),
        instances=max(1, num(native, "instances", "lockgate", 1, True)),
        budgets_fail_open=check.boolean(native.get("budgets_fail_open", False), "lockgate.budgets_fail_open"),
        default_max_output_tokens=num(native, "default_max_output_tokens", "lockgate", 4096, True),
        unpriced=_choice(native.get("unpriced", "warn"), ("warn", "refuse"), "lockgate.unpriced", check),
        metrics=_metrics_access(native.get("metrics"), litellm.get("require_auth_for_metrics_endpoint"), check),
        metrics_labels=_metrics_labels(native.get("metrics_labels"), check),
        metrics_max_series=max(1, num(native, "metrics_max_series", "lockgate", 1000, True)),
        observe=parse_observe(raw, general, litellm, native, env, check, lambda v, p: _resolve_env(v, p, env, check)),
        warnings=tuple(check.warnings),
        source=source,
    )
    if check.problems:
        raise ConfigError(source, check.problems, check.warnings)
    return settings


def _resilience(
    router: Mapping[str, Any], litellm: Mapping[str, Any], native: Mapping[str, Any], names: set[str], check: _Checker
) -> Resilience:
    """router_settings (else litellm_settings) retry, fallback and cooldown keys, and lockgate's own."""

    def either(key: str) -> tuple[Any, str]:
        if router.get(key) is not None:
            return router[key], f"router_settings.{key}"
        return litellm.get(key), f"litellm_settings.{key}"

    def number(key: str, default: Any, *, integer: bool = False, section: str = "") -> Any:
        value, path = (native.get(key), f"lockgate.{key}") if section == "lockgate" else either(key)
        if value is None:
            return default
        checked = check.number(value, path, integer=integer)
        return default if checked is None else checked

    def fallbacks(key: str) -> dict[str, tuple[str, ...]]:
        found = _fallbacks(litellm.get(key), f"litellm_settings.{key}", names, check)
        found.update(_fallbacks(router.get(key), f"router_settings.{key}", names, check))
        return found

    default_fallbacks: tuple[str, ...] = ()
    value, path = either("default_fallbacks")
    if value is not None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            check.error(path, "must be a list of model group names")
        else:
            for name in value:
                if not any(fnmatch.fnmatchcase(name, group) for group in names):
                    check.error(path, f"'{name}' is not a model_name in model_list")
            default_fallbacks = tuple(value)
    group_policies: dict[str, dict[str, int]] = {}
    value, path = either("model_group_retry_policy")
    if isinstance(value, dict):
        for group, policy in value.items():
            group_policies[str(group)] = _policy(policy, f"{path}.{group}", RETRY_POLICY_NAMES, check)
    elif value is not None:
        check.error(path, "must be a mapping of model group to a retry_policy")
    disable, disable_path = either("disable_cooldowns")
    return Resilience(
        retry_policy=_policy(either("retry_policy")[0], either("retry_policy")[1], RETRY_POLICY_NAMES, check),
        group_retry_policy=group_policies,
        retry_after=number("retry_after", 0.0),
        retry_budget=number("retry_budget", 0.2, section="lockgate"),
        context_window_fallbacks=fallbacks("context_window_fallbacks"),
        content_policy_fallbacks=fallbacks("content_policy_fallbacks"),
        default_fallbacks=default_fallbacks,
        max_fallbacks=number("max_fallbacks", 5, integer=True),
        allowed_fails=number("allowed_fails", 3, integer=True),
        allowed_fails_policy=_policy(
            either("allowed_fails_policy")[0], either("allowed_fails_policy")[1], FAILS_POLICY_NAMES, check
        ),
        cooldown_time=number("cooldown_time", 5.0),
        disable_cooldowns=check.boolean(disable or False, disable_path),
        degrade_factor=max(1.1, number("degrade_factor", 3.0, section="lockgate")),
        slo_ttft=number("slo_ttft", None, section="lockgate"),
        hedge_after=number("hedge_after", None, section="lockgate"),
        stream_idle_timeout=number("stream_idle_timeout", None, section="lockgate"),
    )


def _policy(value: Any, path: str, known: Mapping[str, tuple[str, ...]], check: _Checker) -> dict[str, int]:
    """LiteLLM's ``{RateLimitErrorRetries: 3, ...}`` as failure kind -> count."""
    result: dict[str, int] = {}
    if value is None:
        return result
    if not isinstance(value, dict):
        check.error(path, f"must be a mapping with keys among {', '.join(known)}")
        return result
    for name, count in value.items():
        if name not in known:
            check.error(f"{path}.{name}", f"unknown; known: {', '.join(known)}")
            continue
        number = check.number(count, f"{path}.{name}", integer=True)
        if number is not None:
            for kind in known[name]:
                result[kind] = int(number)
    return result


def _metrics_access(value: Any, litellm_auth: Any, check: _Checker) -> Any:
    """``lockgate.metrics`` (YAML's ``off`` / ``false``: no metrics; ``true``: the default); LiteLLM's
    ``require_auth_for_metrics_endpoint`` never opens /metrics: its ``true`` (any key) is less strict than the
    default (a viewer key), and its ``false`` is said to change nothing."""
    if litellm_auth is not None and value is None:
        path = "litellm_settings.require_auth_for_metrics_endpoint"
        if not check.boolean(litellm_auth, path):
            check.warn(path, "false: /metrics still needs a proxy admin or viewer key (lockgate.metrics: public)")
    if isinstance(value, bool):
        value = "viewer" if value else "off"
    return _choice("viewer" if value is None else value, METRICS_ACCESS, "lockgate.metrics", check)


def _metrics_labels(value: Any, check: _Checker) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(v in METRICS_LABELS for v in value):
        check.error("lockgate.metrics_labels", f"must be a list of {', '.join(METRICS_LABELS)}")
        return ()
    return tuple(dict.fromkeys(value))


def _choice(value: Any, choices: tuple[str, ...], path: str, check: _Checker) -> Any:
    if value not in choices:
        check.error(path, f"must be one of {', '.join(choices)}")
        return choices[0]
    return value


def _period(section: Mapping[str, Any], key: str, path: str, default: float | None, check: _Checker) -> Any:
    """A retention period (``30d``) in seconds; ``never`` for None where that is allowed (prompt_retention)."""
    value = section.get(key)
    if value is None:
        return default
    if value == "never" and key == "prompt_retention":
        return None
    try:
        return parse_period(value)
    except ValueError as exc:
        check.error(f"{path}.{key}", str(exc))
        return default


def _budget_duration(value: Any, check: _Checker) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"\s*\d+\s*(s|m|h|d|w|mo)\s*", value) or value.strip()[0] == "0":
        check.error("litellm_settings.budget_duration", "must be like 30s, 10m, 1h, 1d, 1w or 1mo")
        return None
    return value.strip()


def _price_file(value: Any, base: Path, check: _Checker) -> str | None:
    """``lockgate.price_file``: prices in LiteLLM's model_prices_and_context_window.json format, checked now so
    a bad file stops the start with the model and field named."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        check.error("lockgate.price_file", "must be a file path")
        return None
    path = base / value
    from lockgate.catalog import CatalogError, load_catalog

    try:
        load_catalog(path)
    except (CatalogError, OSError) as exc:
        check.error("lockgate.price_file", str(exc)[:300])
        return None
    return str(path)


def _redis_url(router: Mapping[str, Any], env: Mapping[str, str], check: _Checker) -> Secret | None:
    """LiteLLM's ``redis_url`` or ``redis_host``/``redis_port``/``redis_password``/``redis_db``, else the
    same names in the environment."""
    url = router.get("redis_url") or (None if router.get("redis_host") else env.get("REDIS_URL"))
    if url:
        if not str(url).startswith(("redis://", "rediss://", "unix://")):
            check.error("router_settings.redis_url", "must be a redis://, rediss:// or unix:// URL")
            return None
        return Secret(str(url))
    host = router.get("redis_host") or env.get("REDIS_HOST")
    if not host:
        return None
    port = router.get("redis_port") or env.get("REDIS_PORT") or 6379
    password = router.get("redis_password") or (None if router.get("redis_host") else env.get("REDIS_PASSWORD"))
    db = router.get("redis_db") or 0
    if check.number(port, "router_settings.redis_port", integer=True) is None:
        return None
    auth = f":{quote(str(password), safe='')}@" if password else ""
    return Secret(f"redis://{auth}{host}:{int(port)}/{int(db)}")


def _check_ids(deployments: list[Deployment], check: _Checker) -> None:
    seen: dict[str, str] = {}
    for d in deployments:
        if d.id in seen:
            check.error("model_list", f"model_info.id '{d.id}' is used by more than one deployment")
        seen[d.id] = d.model_name


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read, resolve and validate a config file. ``env`` defaults to the process environment."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [Problem("", f"cannot read the file: {exc.strerror}")], []) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(source, [Problem("", f"invalid YAML: {reason}", line)], []) from exc
    return parse_settings(raw, os.environ if env is None else env, source=source, text=text)
