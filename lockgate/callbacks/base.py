"""The plug-in seam for callbacks: what a callback is given, the two methods it implements, how it is registered.

    Event              one finished request: its RequestRecord, whether it failed, who sent it, and its prompt
                       and answer (redacted) only when message logging is on for it (see lockgate.callbacks)
    Callback           ``name``, ``async send(events)``, ``async close()``: the whole interface; optional
                       ``max_batch`` / ``linger`` say how the dispatcher batches events for it
    ThreadedCallback   for blocking SDKs: ``send_blocking(events)`` runs on the callback's own thread
    register(name, factory)
                       built-ins register here exactly as plug-ins do; a config names registered callbacks only

Plug-ins are registered in code, never named by a module path in the config (security.md: no import-by-string
reachable from config): a deployment that wants its own sink runs lockgate from a small launcher::

    from lockgate import callbacks, cli

    class Audit:
        name = "audit"
        async def send(self, events): ...   # ship them somewhere
        async def close(self): ...

    callbacks.register("audit", lambda settings, options: Audit())
    cli.main()

and lists ``audit`` in ``litellm_settings.callbacks`` (its ``callback_settings.audit`` mapping is ``options``).
Installed-package entry points are deliberately not scanned: which code runs stays decided by the code that
starts the gateway, not by a string in a file an operator (or an API that edits config) can change.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lockgate.observe import RequestRecord

if TYPE_CHECKING:
    from lockgate.callbacks.settings import ObserveSettings

__all__ = ["Callback", "Event", "Factory", "Plugin", "ThreadedCallback", "register", "registered", "unregister"]


@dataclass(frozen=True, slots=True)
class Event:
    """One finished request, as every callback sees it. Nothing in it is a secret: no key, no URL."""

    record: RequestRecord
    failed: bool
    """The request failed (an error status, or an error after the answer started)."""
    owner: Mapping[str, str] = field(default_factory=dict)
    """Who sent it, beyond the record's ``team_id`` / ``user_id`` / ``key_alias``: ``key_hash`` (the key's
    SHA-256, as the ledger stores it) and ``org_id``, when known."""
    models: Mapping[str, str] = field(default_factory=dict)
    """Deployment id -> the model its upstream was asked for, for the deployments the attempts went to."""
    messages: Any = None
    """The prompt, redacted and cut as the ledger stores it; None unless message logging is on for this request."""
    response: Any = None
    """The answer, likewise."""


class Callback(Protocol):
    """A sink for finished requests. The dispatcher calls :meth:`send` off the request path, one batch at a time
    (never two at once for one callback); a slow or failing ``send`` costs that callback its queued events, never
    a request. ``send`` should bound its own time (its HTTP timeouts)."""

    name: str
    # optional: ``max_batch`` (events per send, default 100), ``linger`` (seconds to wait for a fuller batch,
    # default 0: send what there is at once)

    async def send(self, events: Sequence[Event]) -> None: ...

    async def close(self) -> None: ...


class ThreadedCallback:
    """Base for callbacks over blocking SDKs: :meth:`send_blocking` and :meth:`close_blocking` run on this
    callback's own thread (never the event loop's, never another callback's)."""

    name = "threaded"

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lockgate-callback-{self.name}")
        self._lock = threading.Lock()

    def send_blocking(self, events: Sequence[Event]) -> None:
        raise NotImplementedError

    def close_blocking(self) -> None:
        return None

    async def send(self, events: Sequence[Event]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self.send_blocking, events)

    async def close(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self.close_blocking)
        finally:
            self._thread.shutdown(wait=False)


Factory = Callable[["ObserveSettings", Mapping[str, Any]], Callback]
"""Builds a callback from the parsed settings and its own ``callback_settings.<name>`` mapping."""


@dataclass(frozen=True, slots=True)
class Plugin:
    name: str
    factory: Factory
    requires: tuple[str, ...] = ()
    """Modules that must be importable (checked when the config is loaded, so a missing extra stops the start)."""
    extra: str = ""
    """The pip extra that installs them (``lockgate[otel]``)."""


_REGISTRY: dict[str, Plugin] = {}


def register(name: str, factory: Factory, *, requires: tuple[str, ...] = (), extra: str = "") -> None:
    """Make ``name`` usable in ``callbacks`` / ``success_callback`` / ``failure_callback``."""
    if not name or "." in name or "/" in name:
        raise ValueError("a callback name is a plain word (no dots or slashes)")
    _REGISTRY[name] = Plugin(name, factory, requires, extra)


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered(name: str) -> Plugin | None:
    import lockgate.callbacks.builtins  # noqa: F401  (the built-ins register themselves on import)

    return _REGISTRY.get(name)
