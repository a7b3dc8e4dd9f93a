"""The callback dispatcher, the plug-in seam, the callback and alert settings, and the alerter, in process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from lockgate import callbacks
from lockgate.callbacks import Dispatcher, Event
from lockgate.callbacks.alerts import Alerter
from lockgate.callbacks.settings import AlertSettings, CallbackSpec, ObserveSettings
from lockgate.config import ConfigError, parse_settings
from lockgate.observe import RequestRecord
from lockgate.secret import Secret
from tests.fakes.webhook import FakeWebhook


class Sink:
    """A callback that keeps what it is sent; ``delay`` makes each send slow, ``broken`` makes it raise."""

    name = "sink"
    max_batch = 10

    def __init__(self, delay: float = 0.0, broken: bool = False) -> None:
        self.delay, self.broken = delay, broken
        self.events: list[Event] = []
        self.closed = False

    async def send(self, events: Sequence[Event]) -> None:
        await asyncio.sleep(self.delay)
        if self.broken:
            raise RuntimeError("the sink is down")
        self.events.extend(events)

    async def close(self) -> None:
        self.closed = True


def record(status: int = 200, request_id: str = "r1") -> RequestRecord:
    return RequestRecord(request_id, "/v1/chat/completions", status, model_group="chat", latency_ms=5.0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_slow_callback_never_slows_emit_and_a_full_queue_drops_counted(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> tuple[float, dict[str, dict[str, int]], Sink]:
        slow = Sink(delay=0.5)
        dispatcher = Dispatcher([(slow, CallbackSpec("slow", "sink"))], queue_size=50)
        dispatcher.start()
        started = time.perf_counter()
        for i in range(200):
            dispatcher.emit(record(request_id=f"r{i}"))
        spent = time.perf_counter() - started
        stats = dispatcher.stats()
        await dispatcher.close(timeout=0.2)  # the slow sink cannot finish: close is bounded anyway
        return spent, stats, slow

    spent, stats, slow = run(go())
    print(f"\n200 emits with a 0.5 s/batch callback: {spent * 1e6 / 200:.1f} µs each")
    assert spent < 0.05
    assert stats["slow"]["dropped"] == 150 and stats["slow"]["queued"] == 50
    assert slow.closed
    assert sum("slow is behind" in r.message for r in caplog.records) == 1  # logged once, not per drop


def test_success_and_failure_are_routed_as_litellm_does() -> None:
    async def go() -> tuple[Sink, Sink, Sink]:
        both, ok, bad = Sink(), Sink(), Sink()
        specs = [CallbackSpec("both", "sink"), CallbackSpec("ok", "sink", failure=False),
                 CallbackSpec("bad", "sink", success=False)]  # fmt: skip
        dispatcher = Dispatcher(list(zip([both, ok, bad], specs, strict=True)))
        dispatcher.start()
        dispatcher.emit(record(200, "fine"))
        dispatcher.emit(record(500, "broken"))
        failed_late = record(200, "cut")
        failed_late.error_type = "UpstreamTimeout"  # an error after the answer had begun
        dispatcher.emit(failed_late)
        await dispatcher.close()
        return both, ok, bad

    both, ok, bad = run(go())
    assert [e.record.request_id for e in both.events] == ["fine", "broken", "cut"]
    assert [e.record.request_id for e in ok.events] == ["fine"]
    assert [(e.record.request_id, e.failed) for e in bad.events] == [("broken", True), ("cut", True)]


def test_a_failing_callback_costs_only_its_own_events() -> None:
    async def go() -> tuple[dict[str, dict[str, int]], Sink]:
        broken, fine = Sink(broken=True), Sink()
        dispatcher = Dispatcher([(broken, CallbackSpec("broken", "sink")), (fine, CallbackSpec("fine", "sink"))])
        dispatcher.start()
        for i in range(5):
            dispatcher.emit(record(request_id=f"r{i}"))
        await asyncio.sleep(0.05)
        stats = dispatcher.stats()
        await dispatcher.close()
        return stats, fine

    stats, fine = run(go())
    assert stats["broken"]["failed"] == 5 and stats["broken"]["sent"] == 0
    assert stats["fine"]["sent"] == 5 and len(fine.events) == 5


def test_prompts_reach_only_callbacks_with_message_logging_on() -> None:
    async def go(message_logging: bool) -> tuple[Sink, Sink]:
        on, off = Sink(), Sink()
        specs = [CallbackSpec("on", "sink"), CallbackSpec("off", "sink", message_logging=False)]
        dispatcher = Dispatcher(list(zip([on, off], specs, strict=True)), message_logging=message_logging)
        dispatcher.start()
        dispatcher.emit(record(), content=([{"role": "user", "content": "hi"}], {"content": "hello"}))
        dispatcher.emit(record(request_id="r2"))  # not stored: no content
        await dispatcher.close()
        return on, off

    on, off = run(go(True))
    assert on.events[0].messages == [{"role": "user", "content": "hi"}] and on.events[0].response == {
        "content": "hello"
    }
    assert on.events[1].messages is None
    assert all(e.messages is None and e.response is None for e in off.events)
    on, off = run(go(False))  # turn_off_message_logging
    assert all(e.messages is None for e in on.events + off.events)


def test_plug_ins_register_in_code_and_the_config_names_them() -> None:
    made: list[Mapping[str, Any]] = []

    def factory(settings: ObserveSettings, options: Mapping[str, Any]) -> Sink:
        made.append(options)
        return Sink()

    callbacks.register("audit", factory)
    try:
        settings = parse_settings({"litellm_settings": {"failure_callback": ["audit"]},
                                   "callback_settings": {"audit": {"level": "all"}}}, {})  # fmt: skip
        (spec,) = settings.observe.callbacks
        assert (spec.name, spec.kind, spec.success, spec.failure) == ("audit", "audit", False, True)
        assert Dispatcher.from_settings(settings.observe) is not None
        assert made == [{"level": "all", "name": "audit"}]
    finally:
        callbacks.unregister("audit")
    with pytest.raises(ValueError):
        callbacks.register("my_module.Handler", factory)


def problems(raw: dict[str, Any], env: Mapping[str, str] | None = None) -> list[str]:
    try:
        parse_settings(raw, env or {})
    except ConfigError as error:
        return [str(p) for p in error.problems]
    return []


def test_a_callback_named_as_code_is_refused_and_unknown_ones_are_warned() -> None:
    assert "never loads code" in problems({"litellm_settings": {"callbacks": ["custom_callbacks.proxy_handler"]}})[0]
    settings = parse_settings({"litellm_settings": {"success_callback": ["datadog", "nonesuch"]}}, {})
    assert settings.observe.callbacks == ()
    warned = [str(w) for w in settings.warnings]
    assert any("datadog" in w and "not implemented" in w for w in warned)
    assert any("nonesuch" in w and "unknown callback" in w for w in warned)


def test_callback_settings_are_checked_and_urls_never_repeated() -> None:
    secret_url = "ftp://hooks.example.com/T0/B0/secret-token-123"
    found = problems({"callback_settings": {"hook": {"callback_type": "generic_api", "endpoint": secret_url}}})
    assert found and "http://" in found[0] and "secret-token-123" not in " ".join(found)
    assert "LANGFUSE_PUBLIC_KEY" in problems({"litellm_settings": {"success_callback": ["langfuse"]}})[0]
    assert "GENERIC_LOGGER_ENDPOINT" in problems({"litellm_settings": {"callbacks": ["generic_api"]}})[0]
    assert "not supported" in problems({"litellm_settings": {"callbacks": ["otel"]}}, {"OTEL_EXPORTER": "otlp_grpc"})[0]
    settings = parse_settings(
        {"litellm_settings": {"callbacks": ["otel", "generic_api"], "turn_off_message_logging": True}},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/", "OTEL_HEADERS": "Authorization=Bearer%20abc,x-a=1",
         "GENERIC_LOGGER_ENDPOINT": "https://logs.example.com/in", "GENERIC_LOGGER_HEADERS": "x-token=t0k"},
    )  # fmt: skip
    observe = settings.observe
    assert observe.otel is not None and observe.otel.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert [(n, v.reveal()) for n, v in observe.otel.headers] == [("Authorization", "Bearer abc"), ("x-a", "1")]
    assert observe.webhooks["generic_api"].url.reveal() == "https://logs.example.com/in"
    assert observe.message_logging is False
    assert "t0k" not in repr(settings) and "Bearer abc" not in repr(settings)


def test_alerting_needs_a_webhook_and_knows_litellm_alert_types() -> None:
    assert "SLACK_WEBHOOK_URL" in problems({"general_settings": {"alerting": ["slack"]}})[0]
    settings = parse_settings(
        {"general_settings": {"alerting": ["slack", "email"], "alert_types": ["budget_alerts", "daily_reports"],
                              "alert_to_webhook_url": {"budget_alerts": ["https://a.example/1", "https://b.example/2"]},
                              "alerting_threshold": 30},
         "lockgate": {"alert_period": 60}},
        {},
    )  # fmt: skip
    alerts = settings.observe.alerts
    assert alerts is not None and alerts.types == {"budget_alerts"} and alerts.threshold == 30 and alerts.period == 60
    assert [u.reveal() for u in alerts.webhooks["budget_alerts"]] == ["https://a.example/1", "https://b.example/2"]
    warned = " ".join(str(w) for w in settings.warnings)
    assert "email" in warned and "daily_reports" in warned


def test_alerts_are_deduplicated_per_subject_and_period() -> None:
    now = [1000.0]
    with FakeWebhook() as slack:

        async def go() -> None:
            settings = AlertSettings(frozenset({"cooldown_deployment", "budget_alerts", "llm_too_slow"}),
                                     {k: (Secret(slack.url + "/hook"),) for k in
                                      ("cooldown_deployment", "budget_alerts", "llm_too_slow")},
                                     threshold=1.0, period=60.0)  # fmt: skip
            alerter = Alerter(settings, clock=lambda: now[0])
            alerter.start()
            for _ in range(3):
                alerter.cooldown("dep-a", 5)
            alerter.cooldown("dep-b", 5)
            now[0] += 61
            alerter.cooldown("dep-a", 10)  # a new period
            for _ in range(3):
                alerter.budget("key:0123456789abcdef", "80%", 0.85, 1.0, "1d@0/0")
            alerter.budget("key:0123456789abcdef", "100%", 1.0, 1.0, "1d@0/0")
            alerter.budget("key:0123456789abcdef", "80%", 0.85, 1.0, "1d@0/86400000")  # the next budget period
            slow = record()
            slow.latency_ms, slow.deployment_id = 2500.0, "dep-a"
            alerter.request(slow)
            alerter.request(slow)
            await alerter.close(timeout=5)

        asyncio.run(go())
        texts = slack.texts()
    assert sum("`dep-a` entered cooldown" in t for t in texts) == 2
    assert sum("`dep-b` entered cooldown" in t for t in texts) == 1
    assert sum("80% of its budget" in t for t in texts) == 2
    assert sum("reached its budget" in t for t in texts) == 1
    assert sum("Slow request: 2.5 s" in t for t in texts) == 1
    assert all("0123456789abcdef" not in t for t in texts)  # a key is named by the start of its hash only
