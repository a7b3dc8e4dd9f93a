"""Callbacks and alerts: what happened to each request, sent elsewhere, off the request path.

    config (litellm_settings.callbacks / success_callback / failure_callback, callback_settings,
            general_settings.alerting ...)  → lockgate.callbacks.settings.parse_observe → Settings.observe
    Gateway.startup                          → Dispatcher.from_settings (each callback built by its registered
                                               factory: otel, langfuse, webhook/generic_api, plug-ins) and Alerter
    Gateway.emit(record)                     → Dispatcher.emit: one Event per request into each callback's bounded
                                               queue (dispatch.py); Alerter.request (too slow, degraded)
    Health.cooldown_listeners, Governor.on_budget → Alerter.cooldown / Alerter.budget
    Gateway.shutdown                         → each queue sent (bounded in time), each callback closed

Prompts and answers reach a callback only when message logging is on for the request: its prompt is stored
(``store_prompts_in_spend_logs``, per key or team: :mod:`lockgate.prompts`), ``turn_off_message_logging`` is not
set, and the callback's ``callback_settings.<name>.message_logging`` is not false. They are the redacted, cut copy
the ledger keeps. Nothing else a callback receives is secret (see :class:`Event`).
"""

from __future__ import annotations

from lockgate.callbacks.base import Callback, Event, Plugin, ThreadedCallback, register, registered, unregister
from lockgate.callbacks.dispatch import Dispatcher, owner_of

__all__ = [
    "Callback", "Dispatcher", "Event", "Plugin", "ThreadedCallback", "owner_of", "register", "registered",
    "unregister",
]  # fmt: skip
