"""Start-up while the database is unreachable: ``lockgate serve`` starts anyway, serves what needs no database, and
becomes whole on its own once the database answers. Real gateway processes on PostgreSQL, reached through a
:class:`~tests.fakes.tcp_proxy.TcpProxy` that refuses connections, and the fake OpenAI upstream.

    unreachable at start    the master key is served (config-file models), a virtual key gets 503
                            store_unavailable (OpenAI's shape, and Anthropic's on /v1/messages), the management
                            API 503, readiness 200 with "db": "Not connected", liveliness 200
    then reachable          within seconds: readiness "connected", the spooled rows of the requests served meanwhile
                            in spend_logs once each, the /model/new model stored before served, virtual keys work
    refused at start        a bad user, a missing database, a malformed URL, a newer schema, an SQLite file that
                            cannot be made: start-up still stops (uvicorn's exit 3), at once

Each test has its own schema (``search_path`` in the URL), dropped afterwards; rows are read straight from
PostgreSQL, not through the proxy. Timings are printed: ``pytest -s``. PostgreSQL unreachable is a failure.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from lockgate.storage.migrations import LATEST_VERSION
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.tcp_proxy import TcpProxy
from tests.postgres import POSTGRES, fresh_schema, proxied, sql
from tests.support import MASTER_KEY, GatewayProcess

SALT = "test-salt-key-0123456789abcdef0123"


def config(database_url: str, fake: FakeOpenAI | None = None) -> str:
    model = "{model: demo/echo}"
    if fake is not None:
        model = f"{{model: openai/gpt-4o, api_base: {fake.url}/v1, api_key: {fake.api_key}}}"
    return f"""model_list:
  - model_name: gpt-4o
    litellm_params: {model}
general_settings:
  database_url: {database_url}
  user_api_key_cache_ttl: 1
lockgate:
  model_api_base_allow: ["http://127.0.0.1:*"]
"""


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema("lockgate_start") as name:
        yield name


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with proxied() as proxy:
        yield proxy


def call(gw: GatewayProcess, path: str, body: dict[str, Any] | None = None, *, key: str = MASTER_KEY,
         header: str = "authorization") -> httpx.Response:  # fmt: skip
    headers = {header: f"Bearer {key}" if header == "authorization" else key}
    if body is None:
        return httpx.get(gw.url + path, headers=headers, timeout=30)
    return httpx.post(gw.url + path, headers=headers, json=body, timeout=30)


def chat(gw: GatewayProcess, model: str = "gpt-4o", *, key: str = MASTER_KEY, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return call(gw, "/v1/chat/completions", body, key=key)


def eventually(check: Callable[[], bool], timeout: float) -> float:
    """Poll until ``check()``; the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not within the time allowed"
        time.sleep(0.05)
    return time.monotonic() - start


def rows_of(schema: str) -> collections.Counter[str]:
    """How many rows each request id has in spend_logs."""
    rows = asyncio.run(sql("SELECT request_id FROM spend_logs", schema))
    return collections.Counter(row["request_id"] for row in rows)


def test_starts_while_the_database_is_unreachable_and_becomes_whole_when_it_answers(
    proxy: TcpProxy, schema: str, fake_openai: FakeOpenAI
) -> None:
    cfg = config(f"postgresql://postgres@{proxy.host}:{proxy.port}/test?search_path={schema}", fake_openai)
    env = {"LITELLM_SALT_KEY": SALT}
    with GatewayProcess(cfg, env=env) as first:  # the database as an earlier run left it: a key, an API model
        key = call(first, "/key/generate", {}).json()["key"]
        model = {"model_name": "db-gpt", "litellm_params": {"model": "openai/gpt-4o", "api_base": fake_openai.url +
                 "/v1", "api_key": fake_openai.api_key}}  # fmt: skip
        assert call(first, "/model/new", model).status_code == 200
        assert chat(first, "db-gpt").status_code == 200
    proxy.refuse()
    with GatewayProcess(cfg, env=env) as gw:
        assert gw.proc is not None and gw.proc.poll() is None
        # the master key and the config file's models: served; the rows wait in the spool
        served = [chat(gw, stream=n % 2 == 1) for n in range(6)]
        assert [r.status_code for r in served] == [200] * 6, served[0].text
        ids = [r.headers["x-request-id"] for r in served]
        assert served[0].json()["choices"][0]["message"]["content"] == "echo: hi"
        # a virtual key: 503 store_unavailable, in each dialect's shape
        refused = chat(gw, key=key)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "store_unavailable" and refused.json()["error"]["type"] == "api_error"
        messages = {"model": "gpt-4o", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        anthropic = call(gw, "/v1/messages", messages, key=key, header="x-api-key")
        assert anthropic.status_code == 503, anthropic.text
        assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "overloaded_error"
        assert "database" in anthropic.json()["error"]["message"]
        # the management API: 503 store_unavailable, at once
        began = time.monotonic()
        for path, body in (("/key/generate", {}), ("/key/list", None), ("/model/new", model), ("/spend/logs", None),
                           ("/team/new", {"team_alias": "t"})):  # fmt: skip
            answer = call(gw, path, body)
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "store_unavailable", answer.text
        assert time.monotonic() - began < 5.0
        assert chat(gw, "db-gpt").status_code != 200  # kept in the database: not served yet
        assert httpx.get(gw.url + "/health/liveliness").status_code == 200
        ready = httpx.get(gw.url + "/health/readiness")
        assert ready.status_code == 200 and ready.json()["db"] == "Not connected", ready.text
        assert rows_of(schema).keys().isdisjoint(ids)

        proxy.forward()
        restored = time.monotonic()
        waited = eventually(lambda: httpx.get(gw.url + "/health/readiness").json()["db"] == "connected", 15.0)
        assert chat(gw, "db-gpt").status_code == 200  # the model stored earlier, loaded on connect
        eventually(lambda: set(ids) <= set(rows_of(schema)), 10.0)
        caught_up = time.monotonic() - restored
        answered = chat(gw, key=key)  # virtual keys work again
        assert answered.status_code == 200, answered.text
        assert call(gw, "/key/generate", {}).status_code == 200
        time.sleep(1.5)  # a late replay would show as a second row
        rows = rows_of(schema)
        logs = gw.logs()
    assert {request_id: rows[request_id] for request_id in ids} == dict.fromkeys(ids, 1)
    assert max(rows.values()) == 1
    assert answered.headers["x-request-id"] in rows
    assert logs.count("database: unreachable at start") == 1 and "database: connected after" in logs
    print(
        f"\nstarted while the database was unreachable: {len(ids)} master-key requests served; the database "
        f"back: readiness 'connected' after {waited:.1f} s, every spooled row in spend_logs after {caught_up:.1f} s"
    )


def test_a_database_lost_while_serving_answers_503_not_500(proxy: TcpProxy, schema: str) -> None:
    """Lost after start-up (its connections reset, new ones refused): the management API answers 503
    store_unavailable, as before it was ever reached, not 500 Internal error; the master key is still served;
    all is back once it answers."""
    cfg = config(f"postgresql://postgres@{proxy.host}:{proxy.port}/test?search_path={schema}")
    with GatewayProcess(cfg, env={"LITELLM_SALT_KEY": SALT}) as gw:
        assert call(gw, "/key/generate", {}).status_code == 200
        proxy.refuse()
        for path, body in (("/key/generate", {}), ("/key/list", None), ("/team/new", {"team_alias": "t"}),
                           ("/spend/logs", None), ("/model/new", {"model_name": "m", "litellm_params": {
                               "model": "demo/echo"}})):  # fmt: skip
            answer = call(gw, path, body)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"]["code"] == "store_unavailable", (path, answer.text)
        assert chat(gw).status_code == 200
        proxy.forward()
        eventually(lambda: call(gw, "/key/generate", {}).status_code == 200, 15.0)
        logs = gw.logs()
    assert "Internal error" not in logs and "unhandled error" not in logs


def test_a_sqlite_database_opens_at_start_as_before() -> None:
    cfg = "model_list:\n  - model_name: demo\n    litellm_params: {model: demo/echo}\n"
    with GatewayProcess(cfg) as gw:
        assert httpx.get(gw.url + "/health/readiness").json()["db"] == "connected"
        assert call(gw, "/key/generate", {}).status_code == 200
        assert "unreachable" not in gw.logs()


def _refused(cfg: str) -> tuple[str, float]:
    gw = GatewayProcess(cfg)
    began = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="gateway exited with 3") as info:
            gw.start()
    finally:
        gw.stop()
    return str(info.value), time.monotonic() - began


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://lockgate_no_such_role:hunter2@127.0.0.1:5432/test", 'role "lockgate_no_such_role"'),
        ("postgresql://postgres@127.0.0.1:5432/lockgate_no_such_db", 'database "lockgate_no_such_db" does not exist'),
        ("postgresql://postgres@127.0.0.1:port/test", "ValueError"),
    ],
)
def test_a_database_that_refuses_still_stops_start_up_at_once(url: str, why: str) -> None:
    logs, took = _refused(config(url))
    assert why in logs and "database: unreachable" not in logs and "hunter2" not in logs
    assert took < 10.0


def test_a_newer_schema_still_stops_start_up(schema: str) -> None:
    asyncio.run(sql("CREATE TABLE lockgate_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)", schema))
    asyncio.run(sql(f"INSERT INTO lockgate_schema VALUES ({LATEST_VERSION + 1}, now())", schema))
    logs, took = _refused(config(f"{POSTGRES}?search_path={schema}"))
    assert "SchemaTooNew" in logs and "newer than this lockgate" in logs and took < 10.0


def test_an_sqlite_file_that_cannot_be_made_still_stops_start_up() -> None:
    cfg = "model_list:\n  - model_name: demo\n    litellm_params: {model: demo/echo}\nlockgate:\n"
    logs, took = _refused(cfg + "  sqlite_path: /dev/null/lockgate.db\n")
    assert "database: unreachable" not in logs and took < 10.0
