"""Shared fixtures: the fake OpenAI upstream and real gateway processes pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_upstream import FakeOpenAI


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-upstream-secret-canary-7f3a9c") as fake:
        yield fake


UPSTREAM_KEY = "sk-upstream-secret-canary-7f3a9c"
