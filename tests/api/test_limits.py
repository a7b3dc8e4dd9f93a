"""Rate limits and budgets end to end (issue 6): real gateway processes, the official SDKs as clients, the
in-process limiter on one instance, real Redis and Postgres shared by three instances.

Costs come from ``model_info`` prices on the offline demo model, whose usage is deterministic: a request
with one short message costs a few tokens at $0.01 a token.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
import redis

from lockgate.keys import hash_key
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import MASTER_KEY, GatewayProcess

REDIS_URL = "redis://127.0.0.1:6379/12"
UPSTREAM_KEY = "sk-upstream-secret-canary-7f3a9c"  # the fake_openai fixture's
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
PRICED = "model_info: {input_cost_per_token: 0.01, output_cost_per_token: 0.01, max_output_tokens: 8}"
CONFIG = f"""model_list:
  - model_name: demo
    litellm_params: {{model: demo/echo}}
    {PRICED}
  - model_name: pair
    litellm_params: {{model: demo/a, rpm: 2}}
    model_info: {{id: pair-a}}
  - model_name: pair
    litellm_params: {{model: demo/b, rpm: 2}}
    model_info: {{id: pair-b}}
general_settings:
  user_api_key_cache_ttl: 1
"""


def admin(gw: GatewayProcess, path: str, body: dict[str, object] | None = None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    if body is None:
        return httpx.get(gw.url + path, headers=headers, params=params)
    return httpx.post(gw.url + path, headers=headers, json=body)


def chat(gw: GatewayProcess, key: str, model: str = "demo", **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 8, **extra}
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)


def spend_of(gw: GatewayProcess, key: str, *, at_least: float = 0.0, timeout: float = 5.0) -> float:
    """The key's recorded spend, once the spend writer has flushed it (it writes once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        spend = float(admin(gw, "/key/info", key=key).json()["info"]["spend"])
        if spend > at_least or time.monotonic() > deadline:
            return spend
        time.sleep(0.1)


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG) as gw:
        yield gw


def test_rpm_answers_429_with_retry_after_and_headers(gateway: GatewayProcess) -> None:
    key = admin(gateway, "/key/generate", {"rpm_limit": 3}).json()["key"]
    remaining = []
    for _ in range(3):
        ok = chat(gateway, key)
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(ok.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    refused = chat(gateway, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and refused.json()["error"]["type"] == "requests"
    assert "key's limit of 3 requests per minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="demo", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_tpm_counts_real_tokens(gateway: GatewayProcess) -> None:
    key = admin(gateway, "/key/generate", {"tpm_limit": 60}).json()["key"]
    admitted = 0
    for _ in range(20):
        answer = chat(gateway, key)
        if answer.status_code != 200:
            assert answer.status_code == 429 and answer.json()["error"]["type"] == "tokens"
            break
        admitted += 1
    assert 2 <= admitted < 20  # each request holds ~15 tokens once settled, not its 8-token output reservation


def test_parallel_requests_are_limited(fake_openai: FakeOpenAI) -> None:
    config = f"""model_list:
  - model_name: slow
    litellm_params: {{model: openai/fault-slow-600, api_base: {fake_openai.url}/v1, api_key: {UPSTREAM_KEY}}}
"""
    with GatewayProcess(config) as gw:
        key = admin(gw, "/key/generate", {"max_parallel_requests": 1}).json()["key"]

        async def both() -> list[int]:
            async with httpx.AsyncClient(timeout=10) as client:
                body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
                headers = {"Authorization": f"Bearer {key}"}
                sent = [client.post(gw.url + "/v1/chat/completions", headers=headers, json=body) for _ in range(2)]
                return sorted(r.status_code for r in await asyncio.gather(*sent))

        assert asyncio.run(both()) == [200, 429]
        assert chat(gw, key, "slow").status_code == 200  # the slot came back


def test_key_budget_stops_spend_and_survives_a_restart() -> None:
    with GatewayProcess(CONFIG) as gw:
        key = admin(gw, "/key/generate", {"max_budget": 1.0}).json()["key"]
        answers = [chat(gw, key) for _ in range(12)]
        codes = [a.status_code for a in answers]
        assert 200 in codes and codes[-1] == 400, codes
        refused = answers[-1].json()["error"]
        assert refused["type"] == "budget_exceeded" and "key's budget of $1" in refused["message"]
        spent = spend_of(gw, key, at_least=0.5)
        assert 0.5 < spent <= 1.0 + 1e-9  # never more than the budget: each request's estimate covered it
        gw.stop()
        gw.start()
        assert chat(gw, key).status_code == 400  # the counter starts cold and is seeded from the database


def test_user_team_and_end_user_budgets(gateway: GatewayProcess) -> None:
    user = admin(gateway, "/user/new", {"max_budget": 0.3}).json()
    codes = [chat(gateway, user["key"]).status_code for _ in range(6)]
    assert codes[0] == 200 and codes[-1] == 400
    assert "user's budget" in chat(gateway, user["key"]).json()["error"]["message"]
    team = admin(gateway, "/team/new", {"max_budget": 0.3}).json()["team_id"]
    team_key = admin(gateway, "/key/generate", {"team_id": team}).json()["key"]
    assert [chat(gateway, team_key).status_code for _ in range(6)][-1] == 400
    assert "team's budget" in chat(gateway, team_key).json()["error"]["message"]
    customer = f"cust-{uuid.uuid4().hex[:6]}"
    assert admin(gateway, "/customer/new", {"user_id": customer, "max_budget": 0.3}).status_code == 200
    free_key = admin(gateway, "/key/generate", {}).json()["key"]
    codes = [chat(gateway, free_key, user=customer).status_code for _ in range(6)]
    assert codes[0] == 200 and codes[-1] == 400
    assert "end user's budget" in chat(gateway, free_key, user=customer).json()["error"]["message"]
    assert chat(gateway, free_key).status_code == 200  # the key itself has no budget


def test_budget_resets_on_its_boundary(gateway: GatewayProcess) -> None:
    key = admin(gateway, "/key/generate", {"max_budget": 0.3, "budget_duration": "3s"}).json()["key"]
    deadline = time.monotonic() + 10
    while chat(gateway, key).status_code == 200:
        assert time.monotonic() < deadline
    refused = chat(gateway, key).json()["error"]["message"]
    assert "resets at" in refused
    time.sleep(3.2)
    assert chat(gateway, key).status_code == 200


def test_deployment_rpm_routes_around_a_full_deployment(gateway: GatewayProcess) -> None:
    key = admin(gateway, "/key/generate", {}).json()["key"]
    served = [chat(gateway, key, "pair").headers.get("x-lockgate-deployment") for _ in range(4)]
    assert sorted(served) == ["pair-a", "pair-a", "pair-b", "pair-b"]  # type: ignore[type-var]
    refused = chat(gateway, key, "pair")
    assert refused.status_code == 429 and "deployment" in refused.json()["error"]["message"]


def test_a_stream_cut_by_the_client_is_counted(fake_openai: FakeOpenAI) -> None:
    config = f"""model_list:
  - model_name: slow
    litellm_params:
      {{model: openai/fault-slowstream-200, api_base: {fake_openai.url}/v1, api_key: {UPSTREAM_KEY}}}
    model_info: {{input_cost_per_token: 0.01, output_cost_per_token: 0.01}}
"""
    with GatewayProcess(config) as gw:
        key = admin(gw, "/key/generate", {"max_budget": 100}).json()["key"]
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
        stream = client.chat.completions.create(
            model="slow", stream=True, messages=[{"role": "user", "content": "one two three four five six"}]
        )
        first = next(iter(stream))
        assert first.choices
        stream.close()  # the client hangs up after the first chunk
        assert spend_of(gw, key) > 0  # what was produced before the cut is paid for
        record = next(r for r in gw.records() if r.get("client_disconnected"))
        assert record["usage"]["estimated"] is True and record["usage"]["completion_tokens"] >= 1


@pytest.fixture()
def shared() -> Iterator[list[GatewayProcess]]:
    redis.Redis.from_url(REDIS_URL).flushdb()
    config = CONFIG + f"router_settings:\n  redis_url: {REDIS_URL}\nlockgate:\n  instances: 3\n"
    gateways = [GatewayProcess(config, env={"DATABASE_URL": POSTGRES}) for _ in range(3)]
    for gw in gateways:
        gw.start()
    try:
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()


def burst(gateways: list[GatewayProcess], key: str, n: int, connections: int = 60) -> list[int]:
    """``n`` requests at once, spread over ``gateways``: their statuses."""
    body: dict[str, object] = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

    async def send() -> list[int]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=connections)) as client:
            headers = {"Authorization": f"Bearer {key}"}
            sent = [
                client.post(gateways[i % len(gateways)].url + "/v1/chat/completions", headers=headers, json=body)
                for i in range(n)
            ]
            return [r.status_code for r in await asyncio.gather(*sent)]

    return asyncio.run(send())


def test_limits_hold_across_three_instances(shared: list[GatewayProcess]) -> None:
    """Issue 6's figures: rpm 60 over 3 instances admits 60 of 180 (not 180); 1,000 concurrent requests against
    a $1 budget overspend by at most one request's cost per instance."""
    key = admin(shared[0], "/key/generate", {"rpm_limit": 60}).json()["key"]
    codes = burst(shared, key, 180)
    assert codes.count(200) == 60 and codes.count(429) == 120  # one limit, not one per instance

    budget_key = admin(shared[1], "/key/generate", {"max_budget": 1.0}).json()["key"]
    codes = burst(shared, budget_key, 1000, connections=1000)
    assert codes.count(200) >= 1 and codes.count(400) >= 1 and codes.count(200) + codes.count(400) == 1000
    spent = spend_of(shared[2], budget_key, at_least=0.5)
    one_request = 0.2  # ~20 tokens at $0.01
    print(f"\n$1 budget, 1,000 concurrent requests over 3 instances: {codes.count(200)} admitted, ${spent:.4f} spent")
    assert spent <= 1.0 + 3 * one_request, spent


def test_redis_killed_under_three_instances_then_restarted() -> None:
    """Redis dies under three gateways: they stay up, each enforcing its share of the rate limit (rpm 60 / 3
    instances = 20 each) and refusing requests under a budget (503); Redis back, the shared limit holds again."""
    from tests.limits.conftest import RedisServer

    server = RedisServer().start()
    config = CONFIG + f"router_settings:\n  redis_url: {server.url}\nlockgate:\n  instances: 3\n"
    gateways = [GatewayProcess(config, env={"DATABASE_URL": POSTGRES}) for _ in range(3)]
    try:
        for gw in gateways:
            gw.start()
        key = admin(gateways[0], "/key/generate", {"rpm_limit": 60}).json()["key"]
        budgeted = admin(gateways[0], "/key/generate", {"max_budget": 100.0}).json()["key"]
        assert burst(gateways, key, 30).count(200) == 30  # shared: 30 of 60 used
        server.kill()
        codes = burst(gateways, key, 90)
        # 20 each, alone; nothing failed (a slice leased before the kill may admit ~2 more per instance)
        assert 60 <= codes.count(200) <= 66 and codes.count(200) + codes.count(429) == 90, codes
        refused = chat(gateways[1], budgeted)
        assert refused.status_code == 503, refused.text  # a budget cannot be counted: closed
        assert all("limits: Redis unavailable" in gw.logs() for gw in gateways)  # a log line and a metric say so
        scraped = httpx.get(gateways[2].url + "/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"}).text
        assert "lockgate_limits_degraded 1" in scraped
        server.start()  # the same port, empty
        time.sleep(1.5)  # each instance probes Redis about once a second
        fresh = admin(gateways[0], "/key/generate", {"rpm_limit": 60}).json()["key"]
        codes = burst(gateways, fresh, 120)
        assert codes.count(200) == 60, codes  # shared again: 60, not 3 x 20 or 3 x 60
        assert chat(gateways[1], budgeted).status_code == 200
        assert all("shared limits restored" in gw.logs() for gw in gateways)
        scraped = httpx.get(gateways[2].url + "/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"}).text
        assert "lockgate_limits_degraded 0" in scraped
    finally:
        for gw in gateways:
            gw.stop()
        server.stop()


def test_spend_is_kept_for_keys_without_limits(gateway: GatewayProcess) -> None:
    user = admin(gateway, "/user/new", {}).json()
    assert chat(gateway, user["key"]).status_code == 200
    assert spend_of(gateway, user["key"]) > 0
    deadline = time.monotonic() + 5
    while admin(gateway, "/user/info", user_id=user["user_id"]).json()["user_info"]["spend"] <= 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_soft_budget_is_told_never_enforced(gateway: GatewayProcess) -> None:
    key = admin(gateway, "/key/generate", {"soft_budget": 0.2}).json()["key"]
    answers = [chat(gateway, key) for _ in range(6)]
    assert all(a.status_code == 200 for a in answers)
    told = [a.headers.get("x-lockgate-soft-budget-exceeded") for a in answers]
    assert told[0] is None and told[-1] == "key", told
    assert gateway.logs().count("soft budget crossed") == 1


def test_workers_without_redis_split_every_limit() -> None:
    with GatewayProcess(CONFIG, args=("--workers", "2")) as gw:
        key = admin(gw, "/key/generate", {"rpm_limit": 10}).json()["key"]

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                headers = {"Authorization": f"Bearer {key}"}
                body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
                sent = [client.post(gw.url + "/v1/chat/completions", headers=headers, json=body) for _ in range(40)]
                return list(await asyncio.gather(*sent))

        answers = asyncio.run(burst())
        codes = [a.status_code for a in answers]
        assert 5 <= codes.count(200) <= 10, codes  # each worker 5 of the 10: never 10 per worker
        refused = next(a for a in answers if a.status_code == 429)
        assert "limit of 10 requests per minute" in refused.json()["error"]["message"]  # as configured
        assert "each enforces 1/2" in gw.logs()


def test_every_answer_carries_its_cost(gateway: GatewayProcess) -> None:
    key = admin(gateway, "/key/generate", {"max_budget": 50}).json()["key"]
    answer = chat(gateway, key)
    usage = answer.json()["usage"]
    expected = (usage["prompt_tokens"] + usage["completion_tokens"]) * 0.01
    assert float(answer.headers["x-lockgate-response-cost"]) == pytest.approx(expected)
    assert answer.headers["x-litellm-response-cost"] == answer.headers["x-lockgate-response-cost"]
    assert answer.headers["x-litellm-key-max-budget"] == "50"
    assert 0 < float(answer.headers["x-lockgate-key-remaining-budget"]) < 50
    body = {"model": "demo", "stream": True, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    with httpx.stream(
        "POST", gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body
    ) as streamed:
        raw = b"".join(streamed.iter_bytes())
    assert b"data: [DONE]" in raw and raw.rstrip().split(b"\n")[-1].startswith(b": x-lockgate-response-cost 0.")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    chunks = list(
        client.chat.completions.create(model="demo", stream=True, messages=[{"role": "user", "content": "hi"}])
    )
    assert chunks  # the SDK reads past the trailing comment
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    with claude.messages.stream(model="demo", max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as events:
        assert events.get_final_message().usage.output_tokens > 0  # Anthropic's SDK too


def test_a_deployment_without_prices_is_said_once() -> None:
    with GatewayProcess(CONFIG) as gw:
        key = admin(gw, "/key/generate", {}).json()["key"]
        for _ in range(3):
            answer = chat(gw, key, "pair")
            assert answer.status_code == 200 and "x-lockgate-response-cost" not in answer.headers
        assert chat(gw, key).headers["x-lockgate-response-cost"]  # the priced one
        said = [line for line in gw.logs().splitlines() if "has no prices" in line]
        assert 1 <= len(said) <= 2  # once per deployment that served, however many requests it served
        assert len({line.split("deployment ")[1].split()[0] for line in said}) == len(said)
        deadline, rows = time.monotonic() + 5, []
        while len(rows) < 4 and time.monotonic() < deadline:  # the ledger writes within a second or so
            rows = admin(gw, "/spend/logs", api_key=hash_key(key)).json()
            time.sleep(0.1)
        flagged = sorted(bool(row["metadata"].get("unpriced")) for row in rows)
        assert flagged == [False, True, True, True]  # each request at the unpriced deployment says it counted $0


def test_unpriced_refuse_refuses_in_each_dialect_and_serves_the_priced() -> None:
    with GatewayProcess(CONFIG + "lockgate:\n  unpriced: refuse\n") as gw:
        said = [line for line in gw.logs().splitlines() if "has no prices" in line]
        assert len(said) == 2 and all("not served" in line for line in said)  # at start, before any request
        refused = chat(gw, MASTER_KEY, "pair")
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "model_not_priced"
        body = {"model": "pair", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        claude = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": MASTER_KEY}, json=body)
        assert claude.status_code == 403 and claude.json()["error"]["type"] == "permission_error", claude.text
        assert chat(gw, MASTER_KEY).status_code == 200  # the priced model


def test_spend_is_priced_at_the_deployment_that_answered(fake_openai: FakeOpenAI) -> None:
    base = f"{fake_openai.url}/v1"
    config = f"""model_list:
  - model_name: pair
    litellm_params: {{model: openai/fault-status-502, api_base: {base}, api_key: {UPSTREAM_KEY}, order: 1}}
    model_info: {{id: dear, input_cost_per_token: 1.0, output_cost_per_token: 1.0}}
  - model_name: pair
    litellm_params: {{model: openai/gpt-4o-mini, api_base: {base}, api_key: {UPSTREAM_KEY}, order: 2}}
    model_info: {{id: cheap, input_cost_per_token: 0.001, output_cost_per_token: 0.001}}
router_settings:
  num_retries: 1
"""
    with GatewayProcess(config) as gw:
        key = admin(gw, "/key/generate", {"max_budget": 10_000}).json()["key"]
        answer = chat(gw, key, "pair")
        assert answer.status_code == 200 and answer.headers["x-lockgate-deployment"] == "cheap"
        usage = answer.json()["usage"]
        expected = (usage["prompt_tokens"] + usage["completion_tokens"]) * 0.001
        assert spend_of(gw, key) == pytest.approx(expected)  # not at the first planned deployment's prices


def test_gateway_budget_and_default_end_user_budget_from_the_config() -> None:
    config = CONFIG.replace("general_settings:", "litellm_settings:\n  max_end_user_budget: 0.3\ngeneral_settings:")
    with GatewayProcess(config) as gw:
        key = admin(gw, "/key/generate", {}).json()["key"]
        codes = [chat(gw, key, user="walk-in").status_code for _ in range(6)]
        assert codes[0] == 200 and codes[-1] == 400  # no /customer/new record: the config's default applies
        assert "end user's budget of $0.3" in chat(gw, key, user="walk-in").json()["error"]["message"]
        assert chat(gw, key, user="another").status_code == 200  # each end user has their own
        assert chat(gw, key).status_code == 200
    config = CONFIG.replace(
        "general_settings:", "litellm_settings:\n  max_budget: 0.4\n  budget_duration: 1d\ngeneral_settings:"
    )
    with GatewayProcess(config) as gw:
        codes = [chat(gw, MASTER_KEY).status_code for _ in range(8)]
        assert codes[0] == 200 and codes[-1] == 400  # the master key too: it is the gateway's money
        refused = chat(gw, MASTER_KEY).json()["error"]["message"]
        assert "gateway's budget of $0.4" in refused and "resets at" in refused and "T00:00:00Z" in refused
