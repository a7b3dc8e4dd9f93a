"""Fixtures for the limiter tests: one event loop per test, the backends behind one harness, private Redis servers.

``backend`` is parametrised over the in-process :class:`LocalLimiter` and :class:`RedisLimiter` on the
machine's Redis (database 13, flushed before each test). An unreachable Redis fails the test: never skipped.
:class:`RedisServer` runs a private ``redis-server`` on a free port, to kill, stop and restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import redis

from lockgate.limits import Admission, Ask, Limit, Limiter, LocalLimiter, RedisLimiter
from tests.support import free_port

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

REDIS_URL = os.environ.get("LOCKGATE_TEST_LIMITS_REDIS_URL", "redis://127.0.0.1:6379/13")
T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC, a minute boundary: simulated clocks start here


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    """Run a coroutine on this test's own event loop (redis.asyncio clients bind to the loop they first use)."""
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.close()


def flush_db13() -> None:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc}); the limiter tests need it (never skipped)")


class Backend:
    """Makes limiters of one kind; Redis ones are separate instances (own client) sharing database 13."""

    def __init__(self, name: str, run: Run[Any]) -> None:
        self.name = name
        self._run = run
        self._made: list[Limiter] = []

    def make(self, **options: Any) -> Limiter:
        limiter: Limiter
        if self.name == "local":
            options.pop("timeout", None)
            limiter = LocalLimiter(**options)
        else:
            options.setdefault("timeout", 5.0)  # the contract, not degraded mode: never time out on a busy CI box
            limiter = RedisLimiter.from_url(REDIS_URL, **options)
        self._made.append(limiter)
        return limiter

    def close(self) -> None:
        for limiter in self._made:
            self._run(limiter.close())


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest, run: Run[Any]) -> Iterator[Backend]:
    if request.param == "redis":
        flush_db13()
    harness = Backend(request.param, run)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def redis_backend(run: Run[Any]) -> Iterator[Backend]:
    """The Redis backend alone, for tests of what only it does."""
    flush_db13()
    harness = Backend("redis", run)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def limiter(backend: Backend) -> Limiter:
    return backend.make()


async def admit_seeding(limiter: Limiter, ask: Ask, now: float | None = None, spent: float = 0.0) -> Admission:
    """The pipeline's dance: admit; seed cold budget windows (from the 'store': ``spent``); admit once more."""
    admission = await limiter.admit(ask, now)
    if admission.cold and admission.denied is None:
        for limit in admission.cold:
            await limiter.seed(limit, spent, now)
        admission = await limiter.admit(ask, now)
    return admission


def ask(*limits: Limit, tokens: int = 0, cost: float = 0.0, rid: str = "r") -> Ask:
    return Ask(rid, limits, tokens, cost)


class RedisServer:
    """A private redis-server on a free loopback port (no persistence), to kill, pause and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return self
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.kill()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
