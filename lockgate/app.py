"""The ASGI application: ``Gateway(settings)`` holds all state; there is no module-level state.

Every request takes the same path::

    route lookup (unknown path: 404, before auth) → method check (405) → authenticate (401)
      → handler (api/*) → errors rendered in the route's dialect, never a traceback

Each route declares who may call it (``public``, ``key``, ``member``, ``viewer`` or ``admin``: see
:data:`lockgate.auth.Permission`) and what kind of route it is (for a key's ``allowed_routes``); a route
without a declaration cannot be added. Handlers of ``member`` routes scope what they show or change to the
caller's own keys and teams. Lifespan start-up opens the pooled upstream client; shutdown closes it after the server
has drained in-flight requests.

Start-up opens the database (and migrates it). One that cannot be reached (refused, timed out) does not stop it:
the gateway warns once and serves what needs no database (the master key, the config file's models; spend rows
wait in the ledger's spool) while a :class:`~lockgate.storage.handle.StoreHandle` answers every store call with
:class:`~lockgate.storage.base.Unreachable` (503 ``store_unavailable`` in the route's dialect, virtual keys
included), and keeps trying in the background (0.5 s doubling to 8 s, jittered); once it opens, start-up's
database work follows (models added through the API, retention, the spend writer, the spool's backlog) and
``/health/readiness`` says ``"db": "connected"``. A database that refuses (a bad URL, user or password) or is
newer than this code still stops start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from lockgate import prompts
from lockgate.api import anthropic, bedrock, customers, directory, health, keys, metrics, models, openai, spend
from lockgate.asgi import Receive, Request, Scope, Send
from lockgate.auth import Authenticator, Permission, Principal, RouteKind
from lockgate.callbacks import Dispatcher, owner_of
from lockgate.callbacks.alerts import Alerter
from lockgate.catalog import load_catalog
from lockgate.config import Settings
from lockgate.dbmodels import DbModels
from lockgate.dialects.thinking import ThinkingMemory
from lockgate.errors import (
    GatewayError,
    HeadersTooLarge,
    InternalError,
    MethodNotAllowed,
    NotFound,
    StoreUnavailable,
    describe,
)
from lockgate.governance import GatewayBudgets, Governor
from lockgate.invalidation import KeyInvalidation
from lockgate.ledger import SpendLedger, ledger_values
from lockgate.limits.base import Limiter, Window
from lockgate.limits.local import LocalLimiter
from lockgate.metrics import Metrics
from lockgate.observe import RequestRecord, Sink
from lockgate.redact import Redactor
from lockgate.retention import Retention
from lockgate.routing.health import Health, HealthPolicy
from lockgate.routing.plan import RetryBudget
from lockgate.routing.router import Router, price_hint
from lockgate.storage.base import Store, Unreachable, open_store, unreachable
from lockgate.storage.handle import StoreHandle
from lockgate.upstream import HttpClient

__all__ = ["Gateway", "Route"]

log = logging.getLogger("lockgate")

MAX_HEADERS = 100
LIMITS_REDIS_TIMEOUT = 0.25  # seconds a limit check waits for Redis before this instance counts alone for a second
NO_DATABASE = "The gateway's database is unreachable and this request needs it. Retry shortly."

Handler = Callable[["Gateway", Request], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    methods: dict[str, Handler]
    permission: Permission
    dialect: Literal["openai", "anthropic", "bedrock"] = "openai"
    kind: RouteKind = "management"


def _routes() -> dict[str, Route]:
    routes: dict[str, Route] = {}

    def add(paths: tuple[str, ...], route: Route) -> None:
        for path in paths:
            routes[path] = route

    add(("/v1/chat/completions", "/chat/completions"), Route({"POST": openai.chat_completions}, "key", kind="llm"))
    add(("/v1/embeddings", "/embeddings"), Route({"POST": openai.embeddings}, "key", kind="llm"))
    add(("/v1/messages",), Route({"POST": anthropic.messages}, "key", "anthropic", kind="llm"))
    add(("/v1/messages/count_tokens",), Route({"POST": anthropic.count_tokens}, "key", "anthropic", kind="llm"))
    add(("/v1/models", "/models"), Route({"GET": openai.list_models}, "key", kind="llm"))
    add(("/v1/model/info", "/model/info"), Route({"GET": openai.model_info}, "key", kind="info"))
    add(("/v2/model/info",), Route({"GET": openai.model_info_v2}, "key", kind="info"))
    add(("/model/new",), Route({"POST": models.model_new}, "admin"))
    add(("/model/update",), Route({"POST": models.model_update}, "admin"))
    add(("/model/delete",), Route({"POST": models.model_delete}, "admin"))
    add(("/key/info",), Route({"GET": keys.info}, "key", kind="info"))
    managed: tuple[tuple[str, str, Handler, Permission], ...] = (
        ("/key/generate", "POST", keys.generate, "member"), ("/key/list", "GET", keys.list_keys, "member"),
        ("/key/update", "POST", keys.update, "member"), ("/key/delete", "POST", keys.delete, "member"),
        ("/key/block", "POST", keys.block, "member"), ("/key/unblock", "POST", keys.unblock, "member"),
        ("/key/regenerate", "POST", keys.regenerate, "member"),
        ("/user/new", "POST", directory.user_new, "admin"), ("/user/info", "GET", directory.user_info, "member"),
        ("/user/update", "POST", directory.user_update, "admin"),
        ("/user/list", "GET", directory.user_list, "viewer"),
        ("/user/delete", "POST", directory.user_delete, "admin"), ("/team/new", "POST", directory.team_new, "admin"),
        ("/team/info", "GET", directory.team_info, "member"),
        ("/team/update", "POST", directory.team_update, "admin"),
        ("/team/list", "GET", directory.team_list, "member"), ("/team/delete", "POST", directory.team_delete, "admin"),
        ("/team/member_add", "POST", directory.member_add, "member"),
        ("/team/member_delete", "POST", directory.member_delete, "member"),
        ("/team/member_update", "POST", directory.member_update, "member"),
        ("/team/block", "POST", directory.team_block, "admin"),
        ("/team/unblock", "POST", directory.team_unblock, "admin"),
        ("/organization/new", "POST", directory.org_new, "admin"),
        ("/organization/info", "GET", directory.org_info, "viewer"),
        ("/organization/list", "GET", directory.org_list, "viewer"),
        ("/organization/update", "POST", directory.org_update, "admin"),
        ("/organization/delete", "POST", directory.org_delete, "admin"),
    )  # fmt: skip
    for path, method, handler, permission in managed:
        add((path,), Route({method: handler}, permission, kind="info" if method == "GET" else "management"))
    for name, method, handler in (
        ("new", "POST", customers.new), ("info", "GET", customers.info), ("update", "POST", customers.update),
        ("list", "GET", customers.list_end_users), ("delete", "POST", customers.delete),
        ("block", "POST", customers.block), ("unblock", "POST", customers.unblock),
    ):  # fmt: skip
        route = Route({method: handler}, "viewer" if method == "GET" else "admin",
                      kind="info" if method == "GET" else "management")  # fmt: skip
        add((f"/customer/{name}", f"/end_user/{name}"), route)
    add(("/spend/logs",), Route({"GET": spend.logs}, "key", kind="info"))  # scoped per caller by the handler
    add(("/global/spend/report",), Route({"GET": spend.report}, "key", kind="info"))
    add(("/health/liveliness", "/health/liveness"), Route({"GET": health.liveliness}, "public", kind="health"))
    add(("/health/readiness",), Route({"GET": health.readiness}, "public", kind="health"))
    add(("/health",), Route({"GET": health.health}, "admin", kind="health"))
    add(("/metrics",), Route({"GET": metrics.metrics}, "viewer", kind="info"))  # lockgate.metrics may change it
    return routes


class Gateway:
    """The ASGI app. Build one per process from validated :class:`Settings`."""

    def __init__(self, settings: Settings, *, sinks: tuple[Sink, ...] = (), workers: int = 1) -> None:
        self.settings = settings
        self.workers = workers  # processes serving this port (``--workers``), each with its own Gateway
        # the prices shipped with lockgate (and lockgate.price_file's); a deployment's model_info overrides them
        self.catalog = load_catalog(Path(settings.price_file) if settings.price_file else None)
        self.router = Router(settings, catalog=self.catalog)
        resilience = settings.resilience
        self.health = Health(HealthPolicy(
            allowed_fails=resilience.allowed_fails, cooldown_time=resilience.cooldown_time,
            fails_by_kind=resilience.allowed_fails_policy, disable_cooldowns=resilience.disable_cooldowns,
            degrade_factor=resilience.degrade_factor, slo_ttft=resilience.slo_ttft,
        ))  # fmt: skip
        """How each deployment is doing (cooldowns, slowness): orders every request's attempts."""
        self.health.track_usage = settings.routing_strategy.startswith("usage-based")
        self.retry_budget = RetryBudget(ratio=resilience.retry_budget)
        self.health_checks: health.HealthChecks | None = None
        if settings.background_health_checks:
            self.health_checks = health.HealthChecks(self, settings.health_check_interval)
        self.unpriced: set[str] = set()  # deployments already reported as having no prices
        self._redactor: tuple[Router, Redactor] | None = None
        self._retention: Retention | None = None
        self._report_unpriced(self.router)
        self.auth = Authenticator(settings.master_key, cache_ttl=settings.key_cache_ttl)
        self.routes = _routes()
        self._bedrock = Route({"POST": bedrock.passthrough}, "key", "bedrock", kind="llm")
        self._regenerate = Route({"POST": keys.regenerate}, "member")
        self._model_update = Route({"PATCH": models.model_update, "POST": models.model_update}, "admin")
        self.body_limit = int(settings.max_request_size_mb * 1024 * 1024)
        self.metrics: Metrics | None = None
        if settings.metrics == "off":
            del self.routes["/metrics"]
        else:
            self.metrics = Metrics(settings.metrics_labels, settings.metrics_max_series)
            sinks = (*sinks, self.metrics)
            self.health.cooldown_listeners.append(self.metrics.cooled)
            if settings.metrics != "viewer":
                access: Permission = "public" if settings.metrics == "public" else "key"
                self.routes["/metrics"] = Route({"GET": metrics.metrics}, access, kind="info")
        self.in_flight = 0
        """HTTP requests being served now (lockgate_in_flight_requests)."""
        self.callbacks: Dispatcher | None = None
        """The configured callbacks (otel, langfuse, webhooks, plug-ins), started with the server."""
        self.alerts: Alerter | None = None
        self.sinks = sinks
        self.started_at = int(time.time())
        self.draining = False
        self.thinking = ThinkingMemory()
        self.invalidation: KeyInvalidation | None = None
        self._http: HttpClient | None = None
        self._store: StoreHandle | None = None
        self._opening: asyncio.Task[None] | None = None  # opens the database, when start-up could not
        self.database_connected = False
        """The database is open and start-up's work with it done (``/health/readiness``'s ``db``)."""
        self._groups: dict[str, frozenset[str]] = {}
        self._governor: Governor | None = None
        self._ledger: SpendLedger | None = None
        self._groups_of: Router | None = None
        self.db_models = DbModels(settings)
        self._models_task: asyncio.Task[None] | None = None

    @property
    def access_groups(self) -> dict[str, frozenset[str]]:
        """``model_info.access_groups`` of the current deployments: group name -> the model names in it."""
        router = self.router
        if self._groups_of is not router:
            groups: dict[str, set[str]] = {}
            for target in router.targets():
                for group in target.deployment.model_info.get("access_groups") or ():
                    groups.setdefault(str(group), set()).add(target.deployment.model_name)
            self._groups = {name: frozenset(models) for name, models in groups.items()}
            self._groups_of = router
        return self._groups

    @property
    def limits_degraded(self) -> bool:
        """The shared limit counters (Redis) are unreachable: each instance counts its share alone."""
        limiter = self._governor.limiter if self._governor is not None else None
        return bool(getattr(limiter, "degraded", False))

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            raise RuntimeError("the gateway is not started (ASGI lifespan start-up has not run)")
        return self._http

    @property
    def store(self) -> Store:
        """The database: until it is open, every call raises :class:`~lockgate.storage.base.Unreachable`."""
        if self._store is None:
            raise RuntimeError("the gateway is not started (ASGI lifespan start-up has not run)")
        return self._store

    async def startup(self) -> None:
        if self._http is None:
            self._http = HttpClient(pool_size=self.settings.upstream_pool_size)
        opened = False
        if self._store is None:
            self._store = StoreHandle()
            self.auth.attach(self._store)
            opened = await self._open_store()
        if self._ledger is None and not self.settings.disable_spend_logs:
            spool = Path(self.settings.sqlite_path).parent / "lockgate-spool"
            self._ledger = SpendLedger(self.store, spool)  # rows wait in the spool until the database takes them
            await self._ledger.start()
        if self._retention is None:
            self._retention = Retention.from_settings(self.store, self.settings)  # started with the database
        if self.health_checks is not None:
            self.health_checks.start()
        if self.settings.redis_url is not None and not self.thinking.shared:
            import redis.asyncio

            url = self.settings.redis_url.reveal()
            client = redis.asyncio.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.5)
            self.thinking = ThinkingMemory(redis=client)
            # the subscriber blocks on its connection between messages: it gets one without a read timeout
            listener = redis.asyncio.from_url(url, socket_connect_timeout=0.5)
            self.invalidation = KeyInvalidation(listener, self.auth.forget, self.db_models.wake, self.health.cool)
            self.invalidation.start()
            self.health.cooldown_listeners.append(self.invalidation.publish_cooldown)
        if self._governor is None:
            share = self.workers if self.settings.redis_url is None else 1
            if share > 1:
                log.warning(
                    "limits: %d workers without Redis: each enforces 1/%d of every limit and budget", share, share
                )
            default_output = self.settings.default_max_output_tokens
            self._governor = Governor(
                self._limiter(), self.store, default_output=default_output, share=share, budgets=self._budgets()
            )
        self._start_callbacks()
        if opened:
            await self._with_database()

    async def _open_store(self) -> bool:
        """Open the database: True. One that cannot be reached is said once and opened in the background
        (False); any other failure (a bad URL, user or password, a newer schema) stops start-up."""
        assert self._store is not None
        try:
            await self._store.open(self._open_database)
        except Unreachable as exc:
            log.warning("database: unreachable at start (%s). Serving without it: the master key and the config "
                        "file's models work, virtual keys and the management API answer 503 store_unavailable, "
                        "spend rows wait in the spool. Trying again in the background.", describe(exc))  # fmt: skip
            self._opening = asyncio.get_running_loop().create_task(self._open_later())
            return False
        return True

    async def _open_database(self) -> Store:
        url = self.settings.database_url.reveal() if self.settings.database_url else None
        return await open_store(url, sqlite_path=Path(self.settings.sqlite_path))

    async def _open_later(self) -> None:
        """Try until the database opens, then do what start-up does with it, and write the spool's backlog."""
        assert self._store is not None
        began = time.monotonic()
        attempts = await self._store.keep_opening(self._open_database)
        try:
            await self._with_database()
        except Exception as exc:  # keep_fresh loads them again within key_cache_ttl
            log.warning("database: the models added through the API did not load (%s); retrying", describe(exc))
        log.info("database: connected after %.1f s (%d more attempt(s)); virtual keys, the management API and the "
                 "models added through the API are served", time.monotonic() - began, attempts)  # fmt: skip
        if self._ledger is not None:
            try:
                await self._ledger.flush()  # now, not at the ledger's next retry
            except Exception as exc:  # its own task writes them later
                log.warning("spend ledger: the spool's backlog was not written yet (%s)", describe(exc))

    async def _with_database(self) -> None:
        """Start-up's work that needs the database open: retention, the spend writer, the models added through
        the API (loaded now and kept fresh)."""
        if self._retention is not None:
            self._retention.start()
        if self._governor is not None:
            self._governor.writer.start()
        if self._models_task is None:  # instances without Redis converge within this period
            reload = self.db_models.keep_fresh(self.reload_models, self.settings.key_cache_ttl)
            self._models_task = asyncio.get_running_loop().create_task(reload)
        try:
            await self.reload_models()
        finally:
            self.database_connected = True

    def _start_callbacks(self) -> None:
        """Callbacks and alerts (lockgate.callbacks), once the governor whose budgets the alerts watch exists."""
        observe = self.settings.observe
        if self.callbacks is None and observe.callbacks:
            self.callbacks = Dispatcher.from_settings(observe)
            if self.callbacks is not None:
                self.callbacks.start()
        if self.alerts is None and observe.alerts is not None:
            self.alerts = Alerter(observe.alerts)
            self.alerts.start()
            self.alerts.watch(self.health)
            self.governor.on_budget = self.alerts.budget

    def _budgets(self) -> GatewayBudgets:
        """The config's gateway-wide budget (its periods counted from 1970-01-01 UTC) and end users' default."""
        duration = self.settings.budget_duration
        window = Window.parse(duration, datetime(1970, 1, 1, tzinfo=UTC)) if duration else None
        return GatewayBudgets(self.settings.max_budget, window, self.settings.max_end_user_budget)

    def _limiter(self) -> Limiter:
        """Shared counters in Redis when it is configured; this process's own otherwise."""
        if self.settings.redis_url is None:
            return LocalLimiter()
        from lockgate.limits.redis import RedisLimiter  # loads the Redis client only when Redis is configured

        return RedisLimiter.from_url(
            self.settings.redis_url.reveal(),
            fallback_share=self.settings.instances,
            budgets_fail_open=self.settings.budgets_fail_open,
            timeout=LIMITS_REDIS_TIMEOUT,
        )

    @property
    def governor(self) -> Governor:
        if self._governor is None:
            raise RuntimeError("the gateway is not started (ASGI lifespan start-up has not run)")
        return self._governor

    async def shutdown(self) -> None:
        if self.health_checks is not None:
            await self.health_checks.close()
        self.draining = True
        if self._opening is not None:
            self._opening.cancel()
            await asyncio.wait({self._opening}, timeout=5.0)  # an open under way: its pool closes, bounded
            self._opening = None
        if self._models_task is not None:
            self._models_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._models_task
            self._models_task = None
        if self._governor is not None:  # after the drain: what in-flight requests spent is written
            await self._governor.close()
            self._governor = None
        if self.callbacks is not None:  # after the drain: every finished request is queued; send what is left
            await self.callbacks.close()
            self.callbacks = None
        if self.alerts is not None:
            await self.alerts.close()
            self.alerts = None
        await self.thinking.close()
        if self.invalidation is not None:
            await self.invalidation.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._retention is not None:
            await self._retention.close()
            self._retention = None
        if self._ledger is not None:  # after the drain: every answered request has its row
            await self._ledger.close()
            self._ledger = None
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def reload_models(self) -> None:
        """Serve the database's models (``/model/new``) beside the config file's: a new router when they
        changed; requests under way keep the router they started with."""
        async with self.db_models.lock:
            found = await self.db_models.load(self.store)
            if found is not None:
                self.router = Router(self.settings, db_deployments=found, catalog=self.catalog)
                self._report_unpriced(self.router)

    def _report_unpriced(self, router: Router) -> None:
        """One warning per deployment without prices, when it is first served (a wildcard deployment is priced
        per model it serves: its requests report it, see pipeline._cost)."""
        for target in router.targets():
            deployment = target.deployment
            if target.priced or "*" in deployment.model_name or deployment.id in self.unpriced:
                continue
            self.unpriced.add(deployment.id)
            if self.settings.unpriced == "refuse":
                log.warning("deployment %s of %s (%s) has no prices: not served (lockgate.unpriced: refuse)",
                            deployment.id, deployment.model_name[:100], deployment.litellm_model[:100])  # fmt: skip
            else:
                log.warning("deployment %s of %s (%s) has no prices: its requests count $0 against budgets and "
                            "spend; %s", deployment.id, deployment.model_name[:100], deployment.litellm_model[:100],
                            price_hint(deployment))  # fmt: skip

    async def models_changed(self) -> None:
        """After ``/model/new|update|delete``: serve the change here at once, and tell the other instances."""
        await self.reload_models()
        if self.invalidation is not None:
            await self.invalidation.publish_models()

    async def team_changed(self, team_id: str) -> None:
        """A team's settings reach its keys: every instance drops its cached keys."""
        await self.key_changed("*")

    async def key_changed(self, token_hash: str) -> None:
        """Drop a changed key from this instance's cache, and tell the others."""
        self.auth.forget(token_hash)
        if self.invalidation is not None:
            await self.invalidation.publish(token_hash)

    def stores_prompts(self, principal: Principal | None) -> bool:
        """Whether a request by ``principal`` has its prompt and answer kept in the ledger (lockgate.prompts)."""
        return self._ledger is not None and prompts.wanted(self.settings.store_prompts_in_spend_logs, principal)

    @property
    def redactor(self) -> Redactor:
        """What stored prompts are redacted with: the rules, and the secrets of the settings and deployments."""
        if self._redactor is None or self._redactor[0] is not self.router:
            self._redactor = (self.router, prompts.redactor(self.settings, self.router))
        return self._redactor[1]

    def emit(self, record: RequestRecord, req: Request, *, ledger: bool = True) -> None:
        """A request is done: its row in the spend ledger (with its prompt and answer, redacted, when they are
        stored), then the record to the sinks."""
        record.latency_ms = (time.perf_counter() - req.started) * 1000
        principal = req.principal
        if principal is not None and record.key_alias is None:  # who, for the request log and metrics_labels
            key, team = principal.key, principal.team
            record.user_id = principal.user_id or (key.user_id if key is not None else None)
            record.team_id = team.team_id if team is not None else (key.team_id if key is not None else None)
            record.key_alias = (key.key_alias or key.key_name) if key is not None else principal.identity
        for attempt in record.attempt_log:  # the one that answered ends with the request
            if attempt.outcome == "pending":
                attempt.duration_ms = max(0.0, record.latency_ms - attempt.started_ms)
                attempt.outcome, attempt.error_kind = (
                    ("failed", "connection") if record.error_type else ("answered", None)
                )
        content = None
        if self._ledger is not None and ledger:
            content = req.capture.stored(self.redactor, record.status) if req.capture is not None else None
            charge = None
            if req.admitted is not None and self._governor is not None:
                charge, req.charged = self._governor.charge(req.admitted, record.cost), True
            self._ledger.record(ledger_values(record, req.principal, content), charge)
        for sink in self.sinks:
            try:
                sink.emit(record)
            except Exception as exc:  # a broken sink must never fail a request that has been answered
                log.error("request sink %s failed: %s", type(sink).__name__, describe(exc))
        if self.callbacks is not None or self.alerts is not None:
            self._notify(record, req, content)

    def _notify(self, record: RequestRecord, req: Request, content: tuple[object, object] | None) -> None:
        """Queue the record for the callbacks and the alerts (lockgate.callbacks): no I/O here."""
        try:
            if self.callbacks is not None:
                self.callbacks.emit(record, owner=owner_of(req.principal), router=self.router, content=content)
            if self.alerts is not None:
                self.alerts.request(record)
        except Exception as exc:  # as with sinks: never the answered request's problem
            log.error("callbacks: a record was not queued: %s", describe(exc))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http_request(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = Request(scope, receive, send)
        route = self.routes.get(req.path)
        if route is None and req.path.startswith(bedrock.PREFIX):
            route = self._bedrock
        elif route is None and req.path.startswith("/key/") and req.path.endswith("/regenerate"):
            route = self._regenerate  # /key/{key}/regenerate: the key named in the path
        elif route is None and models.path_model_id(req.path) is not None:
            route = self._model_update  # /model/{id}/update
        self.in_flight += 1
        try:
            if len(scope["headers"]) > MAX_HEADERS:
                raise HeadersTooLarge(f"More than {MAX_HEADERS} request headers.")
            if route is None:
                raise NotFound(f"Unknown route {req.method} {req.path[:200]}.")
            handler = route.methods.get(req.method)
            if handler is None:
                allowed = ", ".join(route.methods).encode()
                error = MethodNotAllowed(f"Method {req.method} is not allowed on {req.path}.")
                error.headers.append((b"allow", allowed))
                raise error
            if route.permission != "public":
                req.principal = await self.auth.authenticate(req.headers)
                req.principal.check_route(req.path, route.kind)
                req.principal.require(route.permission, write=req.method != "GET")
            await handler(self, req)
        except GatewayError as error:
            await self._send_error(req, route, error)
        except Exception as exc:
            if unreachable(exc):  # not open yet, or lost under a request: what needs it waits for it
                log.warning("database unreachable on %s (request %s): %s", req.path[:200], req.request_id,
                            describe(exc))  # fmt: skip
                await self._send_error(req, route, StoreUnavailable(NO_DATABASE))
            else:
                log.error("unhandled error on %s (request %s): %s", req.path[:200], req.request_id, describe(exc))
                await self._send_error(req, route, InternalError(f"Internal error (request id {req.request_id})."))
        finally:
            self.in_flight -= 1

    async def _send_error(self, req: Request, route: Route | None, error: GatewayError) -> None:
        dialect = route.dialect if route is not None else "openai"
        headers = list(error.headers)
        if dialect == "bedrock":
            body, kind = error.bedrock_body()
            headers.append((b"x-amzn-errortype", kind))
        else:
            body = error.anthropic_body() if dialect == "anthropic" else error.openai_body()
        status = 503 if error.status == 529 and dialect != "anthropic" else error.status  # 529 is Anthropic's own
        try:
            await req.respond(status, body, headers=headers)
        except RuntimeError:  # the response had already started; nothing more can be said
            log.warning("error after the response started on request %s: %s", req.request_id, error.message)
