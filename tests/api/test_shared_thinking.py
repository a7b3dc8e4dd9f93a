"""Thinking signatures shared through the machine's real Redis: a conversation moves between instances.

The Cline CLI sends earlier reasoning back without its signature. Instance A returned the signed thinking;
the follow-up lands on instance B, which restores the signature from Redis (the fake Anthropic verifies
it). An instance without Redis cannot, and says it dropped thinking. Redis must be reachable: this test
fails, never skips, when it is not.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.support import MASTER_KEY, GatewayProcess

REDIS_URL = "redis://127.0.0.1:6379/15"
KEY = "sk-ant-shared-thinking-canary"


@pytest.fixture(scope="module")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc}); start it (the README says what `make test` needs)")
    return REDIS_URL


def config(fake: FakeAnthropic, redis_url: str | None) -> str:
    text = (
        f"model_list:\n  - model_name: claude\n    litellm_params:\n      model: anthropic/claude-sonnet-4-5\n"
        f"      api_base: {fake.url}\n      api_key: {KEY}\n"
    )
    return text + (f"router_settings:\n  redis_url: {redis_url}\n" if redis_url else "")


@pytest.fixture(scope="module")
def instances(redis_url: str) -> Iterator[tuple[GatewayProcess, GatewayProcess, GatewayProcess]]:
    with (
        FakeAnthropic(api_key=KEY) as fake,
        GatewayProcess(config(fake, redis_url)) as a,
        GatewayProcess(config(fake, redis_url)) as b,
        GatewayProcess(config(fake, None)) as alone,
    ):
        yield a, b, alone


TOOLS: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
THINKING = {"thinking": {"type": "enabled", "budget_tokens": 1024}}


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=10)


def follow_up(gw: GatewayProcess, prompt: str, message: Any) -> Any:
    call = message.tool_calls[0]
    reasoning = (message.model_extra or {})["reasoning_content"]
    return client(gw).chat.completions.with_raw_response.create(
        model="claude",
        messages=[
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()], "reasoning_content": reasoning},
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ],
        tools=TOOLS,
        extra_body=THINKING,
        max_tokens=2048,
    )


def test_another_instance_restores_the_signature(instances: tuple[GatewayProcess, ...]) -> None:
    a, b, alone = instances
    prompt = f"think across instances {uuid.uuid4().hex[:8]}"
    first = client(a).chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": prompt}],
        tools=TOOLS,
        extra_body=THINKING,
        max_tokens=2048,
    )
    message = first.choices[0].message
    response = follow_up(b, prompt, message)
    assert response.parse().choices[0].finish_reason == "stop"
    assert "x-lockgate-notice" not in response.headers  # B restored the signed block from Redis

    without_redis = follow_up(alone, prompt, message)
    assert "thinking dropped" in without_redis.headers["x-lockgate-notice"]
