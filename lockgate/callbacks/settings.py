"""The callback and alerting settings, read from the config (and the environment :mod:`lockgate.config` hands
over: this module never reads ``os.environ`` itself).

LiteLLM's keys, as LiteLLM users write them::

    litellm_settings:
      callbacks: [otel, langfuse, generic_api]   # success and failure events
      success_callback: [langfuse]                # success events only
      failure_callback: [webhook]                 # failure events only
      turn_off_message_logging: true              # never send prompts/answers to callbacks
    callback_settings:                            # per-callback settings (and named webhooks, auto-enabled)
      audit_hook: {callback_type: generic_api, endpoint: https://..., headers: {...}, event_types: [...],
                   log_format: json_array | ndjson | single, batch_size: 100, flush_interval: 5}
      otel: {message_logging: false}
    general_settings:
      alerting: [slack]
      alert_types: [budget_alerts, cooldown_deployment, llm_too_slow]
      alert_to_webhook_url: {budget_alerts: https://hooks.slack.com/..., ...}
      alerting_threshold: 300                     # seconds: a slower request is "too slow"
    lockgate:
      alert_period: 3600                          # seconds between two alerts about one subject
      callback_queue_size: 10000                  # events each callback may have waiting before they are dropped

A name that looks like code (``my_module.handler``) is refused: lockgate never imports what a config names.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

from lockgate.secret import Secret

__all__ = [
    "ALERT_TYPES", "ENVIRONMENT", "AlertSettings", "CallbackSpec", "LangfuseSettings", "ObserveSettings",
    "OtelSettings", "WebhookSettings", "parse_observe",
]  # fmt: skip

ENVIRONMENT: dict[str, str] = {
    "OTEL_EXPORTER": "`otel` callback: `otlp_http` (OTLP/HTTP protobuf) or `console` (default without an endpoint).",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "`otel` callback: `http/protobuf` (= `otlp_http`); wins over `OTEL_EXPORTER`.",
    "OTEL_ENDPOINT": "`otel` callback: the collector's URL (`http://host:4318`; `/v1/traces` is added when missing).",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "`otel` callback: as `OTEL_ENDPOINT`, which it wins over.",
    "OTEL_HEADERS": "`otel` callback: headers sent with every export, `name=value,name2=value2` (values URL-encoded).",
    "OTEL_EXPORTER_OTLP_HEADERS": "`otel` callback: as `OTEL_HEADERS`, which it wins over.",
    "OTEL_SERVICE_NAME": "`otel` callback: the traces' `service.name` (default `lockgate`).",
    "LANGFUSE_PUBLIC_KEY": "`langfuse` callback: the project's public key (required).",
    "LANGFUSE_SECRET_KEY": "`langfuse` callback: the project's secret key (required).",
    "LANGFUSE_HOST": "`langfuse` callback: the Langfuse server (default `https://cloud.langfuse.com`).",
    "GENERIC_LOGGER_ENDPOINT": "`generic_api` / `webhook` callback without `callback_settings`: where records are "
    "POSTed.",
    "GENERIC_LOGGER_HEADERS": "`generic_api` / `webhook` callback: headers, `name=value,name2=value2`.",
    "SLACK_WEBHOOK_URL": "Alerts (`general_settings.alerting: [slack]`): the Slack-compatible incoming webhook, for "
    "alert types without their own `alert_to_webhook_url`.",
}

ALERT_TYPES = ("budget_alerts", "cooldown_deployment", "llm_too_slow")
"""The alert types lockgate sends (LiteLLM's names)."""
_LITELLM_ALERT_TYPES = frozenset({
    "llm_exceptions", "llm_requests_hanging", "db_exceptions", "daily_reports", "spend_reports", "fallback_reports",
    "new_model_added", "outage_alerts", "region_outage_alerts", "failed_tracking_spend",
})  # fmt: skip
# LiteLLM callbacks that lockgate does not implement: a warning, never an error (logging is not a control).
_LITELLM_CALLBACKS = frozenset({
    "prometheus", "datadog", "datadog_llm_observability", "datadog_metrics", "langsmith", "braintrust", "arize",
    "arize_phoenix", "opik", "mlflow", "weave_otel", "gcs_bucket", "gcs_pubsub", "s3", "s3_v2", "azure_storage",
    "aws_sqs", "azure_sentinel", "logfire", "lago", "openmeter", "posthog", "newrelic", "cloudzero", "vantage",
    "focus", "pagerduty", "email", "sentry", "lunary", "helicone", "supabase", "athina", "traceloop", "dynamodb",
    "literalai", "galileo", "humanloop", "levo", "agentops", "langtrace", "greenscale", "resend_email",
    "sendgrid_email", "smtp_email", "custom_callback_api",
})  # fmt: skip
_WEBHOOK_TYPES = ("generic_api", "webhook")
_LANGFUSE_NAMES = ("langfuse", "langfuse_otel")
_EVENT_TYPES = {"llm_api_success": "success", "llm_api_failure": "failure"}


class Checker(Protocol):
    """What :mod:`lockgate.config` collects problems with."""

    def error(self, path: str, message: str) -> None: ...

    def warn(self, path: str, message: str) -> None: ...

    def number(self, value: Any, path: str, *, integer: bool = False, minimum: float = 0) -> Any: ...

    def boolean(self, value: Any, path: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class OtelSettings:
    exporter: Literal["otlp_http", "console"] = "console"
    endpoint: str | None = None
    """The traces URL (``.../v1/traces``)."""
    headers: tuple[tuple[str, Secret], ...] = ()
    service_name: str = "lockgate"


@dataclass(frozen=True, slots=True)
class LangfuseSettings:
    public_key: str
    secret_key: Secret
    host: str = "https://cloud.langfuse.com"


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    url: Secret
    """The whole URL is kept secret: webhook URLs often carry their token (Slack's do)."""
    headers: tuple[tuple[str, Secret], ...] = ()
    log_format: Literal["json_array", "ndjson", "single"] = "json_array"
    batch_size: int = 100
    flush_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class AlertSettings:
    types: frozenset[str]
    webhooks: Mapping[str, tuple[Secret, ...]]
    """Alert type -> the webhooks it goes to."""
    threshold: float = 300.0
    """``alerting_threshold``: seconds after which a request is too slow (LiteLLM's default, 5 minutes)."""
    period: float = 3600.0
    """``lockgate.alert_period``: at most one alert per subject (a deployment, a budget level) per this many s."""


@dataclass(frozen=True, slots=True)
class CallbackSpec:
    """One configured callback: which registered kind it is, which events it gets."""

    name: str
    kind: str
    success: bool = True
    failure: bool = True
    message_logging: bool = True
    """``callback_settings.<name>.message_logging: false`` keeps prompts from this callback."""
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ObserveSettings:
    callbacks: tuple[CallbackSpec, ...] = ()
    otel: OtelSettings | None = None
    langfuse: LangfuseSettings | None = None
    webhooks: Mapping[str, WebhookSettings] = field(default_factory=dict)
    message_logging: bool = True
    """Not ``turn_off_message_logging``. Even so, a request's prompt goes to callbacks only when it is stored
    (:mod:`lockgate.prompts`: ``store_prompts_in_spend_logs``, per key or team)."""
    queue_size: int = 10_000
    alerts: AlertSettings | None = None


Resolve = Callable[[Any, str], Any]


def parse_observe(
    top: Mapping[str, Any],
    general: Mapping[str, Any],
    litellm: Mapping[str, Any],
    native: Mapping[str, Any],
    env: Mapping[str, str],
    check: Checker,
    resolve: Resolve,
) -> ObserveSettings:
    """The callback and alert settings of a config (see the module docstring); problems go to ``check``."""
    raw_options = top.get("callback_settings") or {}
    if not isinstance(raw_options, dict):
        check.error("callback_settings", "must be a mapping of callback name to its settings")
        raw_options = {}
    wanted: dict[str, tuple[bool, bool]] = {}
    for key, success, failure in (
        ("callbacks", True, True), ("success_callback", True, False), ("failure_callback", False, True),
    ):  # fmt: skip
        names = litellm.get(key)
        if names is None:
            continue
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
            check.error(f"litellm_settings.{key}", "must be a list of callback names")
            continue
        for name in names:
            had = wanted.get(name, (False, False))
            wanted[name] = (had[0] or success, had[1] or failure)
    for name, options in raw_options.items():  # named webhooks are enabled by being defined (as in LiteLLM)
        if isinstance(options, dict) and options.get("callback_type") in _WEBHOOK_TYPES and name not in wanted:
            events = _event_types(options.get("event_types"), f"callback_settings.{name}.event_types", check)
            wanted[str(name)] = ("success" in events, "failure" in events)

    for name in raw_options:
        if name not in wanted:
            check.warn(f"callback_settings.{name}", "ignored: the callback is not in litellm_settings.callbacks, "
                                                    "success_callback or failure_callback")  # fmt: skip
    message_logging = not check.boolean(
        litellm.get("turn_off_message_logging", False), "litellm_settings.turn_off_message_logging"
    )
    specs: list[CallbackSpec] = []
    otel = langfuse = None
    webhooks: dict[str, WebhookSettings] = {}
    for name, (success, failure) in wanted.items():
        path = f"callback_settings.{name}"
        options = raw_options.get(name) if name in raw_options else {}
        options = resolve(options, path) if options else {}
        if not isinstance(options, dict):
            check.error(path, "must be a mapping")
            continue
        kind = _kind(name, options, check)
        if kind is None:
            continue
        if kind == "otel":
            otel = _otel(env, check)
        elif kind == "langfuse":
            langfuse = _langfuse(env, check)
            if langfuse is None:
                continue
        elif kind == "webhook":
            hook = _webhook(name, options, env, check)
            if hook is None:
                continue
            webhooks[name] = hook
        logging = options.get("message_logging", True)
        specs.append(CallbackSpec(name, kind, success, failure, check.boolean(logging, f"{path}.message_logging"),
                                  options))  # fmt: skip
    queue = native.get("callback_queue_size")
    queue_size = 10_000 if queue is None else check.number(queue, "lockgate.callback_queue_size", integer=True,
                                                          minimum=1)  # fmt: skip
    return ObserveSettings(
        callbacks=tuple(specs),
        otel=otel,
        langfuse=langfuse,
        webhooks=webhooks,
        message_logging=message_logging,
        queue_size=int(queue_size or 10_000),
        alerts=_alerts(general, native, env, check),
    )


def _kind(name: str, options: Mapping[str, Any], check: Checker) -> str | None:
    """The registered callback kind ``name`` stands for; None (and a problem) when there is none."""
    from lockgate.callbacks.base import registered

    path = f"litellm_settings.callbacks: {name}"
    if "." in name or "/" in name or ":" in name:
        check.error(path, "not supported: lockgate never loads code named in a config (register a plug-in in "
                          "code: lockgate.callbacks.register)")  # fmt: skip
        return None
    callback_type = options.get("callback_type")
    if callback_type in _WEBHOOK_TYPES or name in _WEBHOOK_TYPES:
        kind = "webhook"
    elif name in _LANGFUSE_NAMES:
        kind = "langfuse"
    elif callback_type is not None:
        check.error(f"callback_settings.{name}.callback_type", f"must be one of {', '.join(_WEBHOOK_TYPES)}")
        return None
    else:
        kind = name
    plugin = registered(kind)
    if plugin is None:
        if name == "prometheus":  # served at /metrics whatever the callbacks say (lockgate.metrics)
            return None
        if name in _LITELLM_CALLBACKS:
            check.warn(path, "ignored: this callback is not implemented by lockgate yet")
        else:
            check.warn(path, "ignored: unknown callback (lockgate has otel, langfuse, generic_api, webhook and "
                             "the plug-ins registered in code)")  # fmt: skip
        return None
    missing = [module for module in plugin.requires if importlib.util.find_spec(module) is None]
    if missing:
        check.error(path, f"needs {', '.join(missing)}: pip install 'lockgate[{plugin.extra or kind}]'")
        return None
    return kind


def _event_types(value: Any, path: str, check: Checker) -> set[str]:
    if value is None:
        return {"success", "failure"}
    if not isinstance(value, list) or not all(v in _EVENT_TYPES for v in value):
        check.error(path, f"must be a list of {', '.join(_EVENT_TYPES)}")
        return {"success", "failure"}
    return {_EVENT_TYPES[v] for v in value}


def _headers(value: Any, path: str, check: Checker) -> tuple[tuple[str, Secret], ...]:
    """Headers as a mapping, or as ``name=value,name2=value2`` (values URL-encoded, as OTEL_HEADERS has them)."""
    if value is None or value == "":
        return ()
    pairs: list[tuple[str, str]] = []
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        for part in value.split(","):
            name, sep, item = part.partition("=")
            if not sep or not name.strip():
                check.error(path, "must be name=value pairs separated by commas")
                return ()
            pairs.append((unquote(name.strip()), unquote(item.strip())))
    else:
        check.error(path, "must be a mapping of header name to value")
        return ()
    for name, item in pairs:
        if not name.replace("-", "").replace("_", "").isalnum() or any(c in item for c in "\r\n\0"):
            check.error(path, "header names are letters, digits and '-'; values have no line breaks")
            return ()
    return tuple((name, Secret(item)) for name, item in pairs)


def webhook_url(value: Any, path: str, check: Checker) -> Secret | None:
    """An http(s) URL with a host; the error never repeats the URL (it may hold a token)."""
    if not isinstance(value, str) or not value:
        check.error(path, "must be an http:// or https:// URL")
        return None
    message = "must be an http:// or https:// URL with a host, without spaces or line breaks"
    try:
        parts = urlsplit(value)
        host, _port = parts.hostname, parts.port
    except ValueError:
        check.error(path, message)
        return None
    if parts.scheme not in ("http", "https") or not host or any(c in value for c in " \t\r\n\0\\"):
        check.error(path, message)
        return None
    return Secret(value)


def _otel(env: Mapping[str, str], check: Checker) -> OtelSettings:
    exporter = env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or env.get("OTEL_EXPORTER") or ""
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_ENDPOINT")
    where = "OTEL_EXPORTER_OTLP_PROTOCOL / OTEL_EXPORTER (environment)"
    if exporter in ("otlp_http", "http/protobuf", "otlp") or (not exporter and endpoint):
        kind: Literal["otlp_http", "console"] = "otlp_http"
    elif exporter in ("console", ""):
        kind = "console"
    else:
        check.error(where, f"'{exporter[:40]}' is not supported: otlp_http (OTLP over HTTP, protobuf) or console")
        kind = "console"
    url = None
    if kind == "otlp_http":
        checked = webhook_url(endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_ENDPOINT (environment)", check)
        if checked is not None:
            url = checked.reveal().rstrip("/")
            url = url if url.endswith("/v1/traces") else url + "/v1/traces"
    headers = env.get("OTEL_EXPORTER_OTLP_HEADERS") or env.get("OTEL_HEADERS")
    return OtelSettings(
        exporter=kind,
        endpoint=url,
        headers=_headers(headers, "OTEL_EXPORTER_OTLP_HEADERS / OTEL_HEADERS (environment)", check),
        service_name=env.get("OTEL_SERVICE_NAME") or "lockgate",
    )


def _langfuse(env: Mapping[str, str], check: Checker) -> LangfuseSettings | None:
    public, secret = env.get("LANGFUSE_PUBLIC_KEY"), env.get("LANGFUSE_SECRET_KEY")
    if not public or not secret:
        check.error("LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY (environment)", "the langfuse callback needs both")
        return None
    host = webhook_url(env.get("LANGFUSE_HOST") or "https://cloud.langfuse.com", "LANGFUSE_HOST (environment)", check)
    if host is None:
        return None
    return LangfuseSettings(public, Secret(secret), host.reveal().rstrip("/"))


def _webhook(name: str, options: Mapping[str, Any], env: Mapping[str, str], check: Checker) -> WebhookSettings | None:
    path = f"callback_settings.{name}"
    if "endpoint" in options:
        url = webhook_url(options.get("endpoint"), f"{path}.endpoint", check)
        headers = _headers(options.get("headers"), f"{path}.headers", check)
    else:
        where = "GENERIC_LOGGER_ENDPOINT (environment)"
        if not env.get("GENERIC_LOGGER_ENDPOINT"):
            check.error(f"litellm_settings.callbacks: {name}",
                        f"needs {path}.endpoint or the GENERIC_LOGGER_ENDPOINT environment variable")  # fmt: skip
            return None
        url = webhook_url(env["GENERIC_LOGGER_ENDPOINT"], where, check)
        headers = _headers(env.get("GENERIC_LOGGER_HEADERS"), "GENERIC_LOGGER_HEADERS (environment)", check)
    log_format = options.get("log_format", "json_array")
    if log_format not in ("json_array", "ndjson", "single"):
        check.error(f"{path}.log_format", "must be json_array, ndjson or single")
        log_format = "json_array"
    batch = options.get("batch_size")
    interval = options.get("flush_interval")
    batch_size = 100 if batch is None else check.number(batch, f"{path}.batch_size", integer=True, minimum=1)
    flush = 5.0 if interval is None else check.number(interval, f"{path}.flush_interval")
    if url is None:
        return None
    return WebhookSettings(url, headers, log_format, int(batch_size or 100), float(5.0 if flush is None else flush))


def _alerts(
    general: Mapping[str, Any], native: Mapping[str, Any], env: Mapping[str, str], check: Checker
) -> AlertSettings | None:
    channels = general.get("alerting")
    if channels is None:
        return None
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        check.error("general_settings.alerting", "must be a list, e.g. [slack]")
        return None
    for channel in channels:
        if channel != "slack":
            check.warn("general_settings.alerting", f"ignored: '{channel[:40]}' alerts are not implemented (slack is)")
    if "slack" not in channels:
        return None
    types = set(ALERT_TYPES)
    listed = general.get("alert_types")
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
            check.error("general_settings.alert_types", f"must be a list among {', '.join(ALERT_TYPES)}")
            listed = []
        types = set()
        for kind in listed:
            if kind in ALERT_TYPES:
                types.add(kind)
            elif kind in _LITELLM_ALERT_TYPES:
                check.warn("general_settings.alert_types", f"ignored: '{kind}' alerts are not implemented yet")
            else:
                check.error("general_settings.alert_types", f"unknown alert type '{kind[:40]}'")
    routes: dict[str, tuple[Secret, ...]] = {}
    mapping = general.get("alert_to_webhook_url") or {}
    if not isinstance(mapping, dict):
        check.error("general_settings.alert_to_webhook_url", "must map alert types to webhook URLs")
        mapping = {}
    for kind, urls in mapping.items():
        path = f"general_settings.alert_to_webhook_url.{kind}"
        if kind not in ALERT_TYPES:
            if kind not in _LITELLM_ALERT_TYPES:
                check.error(path, f"unknown alert type; lockgate sends {', '.join(ALERT_TYPES)}")
            continue
        found = [webhook_url(url, path, check) for url in (urls if isinstance(urls, list) else [urls])]
        routes[kind] = tuple(url for url in found if url is not None)
    default = env.get("SLACK_WEBHOOK_URL")
    fallback = webhook_url(default, "SLACK_WEBHOOK_URL (environment)", check) if default else None
    for kind in sorted(types):
        if not routes.get(kind):
            if fallback is None:
                check.error("general_settings.alerting",
                            f"{kind} alerts need SLACK_WEBHOOK_URL or alert_to_webhook_url.{kind}")  # fmt: skip
                continue
            routes[kind] = (fallback,)
    threshold = general.get("alerting_threshold")
    period = native.get("alert_period")
    return AlertSettings(
        types=frozenset(types),
        webhooks={kind: routes[kind] for kind in types if kind in routes},
        threshold=300.0 if threshold is None else float(check.number(threshold, "general_settings.alerting_threshold")
                                                         or 300.0),
        period=3600.0 if period is None else float(check.number(period, "lockgate.alert_period") or 3600.0),
    )  # fmt: skip
