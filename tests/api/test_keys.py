"""Virtual keys end to end: LiteLLM's /key/* API, keys used by the official SDK, on SQLite and Postgres."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import openai
import pytest

from tests.support import MASTER_KEY, GatewayProcess

CONFIG = """model_list:
  - model_name: demo
    litellm_params: {model: demo/echo}
  - model_name: other
    litellm_params: {model: demo/other}
general_settings:
  user_api_key_cache_ttl: 1
"""
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG) as gw:
        yield gw


def admin(gw: GatewayProcess, path: str, body: dict[str, object] | None = None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    if body is None:
        return httpx.get(gw.url + path, headers=headers, params=params)
    return httpx.post(gw.url + path, headers=headers, json=body)


def chat(gw: GatewayProcess, key: str, model: str = "demo") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)


def test_generate_use_and_info(gateway: GatewayProcess) -> None:
    created = admin(gateway, "/key/generate", {"key_alias": f"alice-{uuid.uuid4().hex[:6]}", "models": ["demo"]})
    assert created.status_code == 200, created.text
    key = created.json()["key"]
    assert key.startswith("sk-") and len(key) > 40 and created.json()["key_name"].endswith(key[-4:])
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    assert client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}]).choices
    assert [m.id for m in client.models.list()] == ["demo"]  # a key sees only what it may use
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    own = httpx.get(gateway.url + "/key/info", headers={"Authorization": f"Bearer {key}"})
    assert own.status_code == 200 and own.json()["info"]["models"] == ["demo"]
    by_admin = admin(gateway, "/key/info", key=key)
    assert by_admin.json()["key"] == created.json()["token"] and "key" not in by_admin.json()["info"]


def test_keys_cannot_administer_or_see_each_other(gateway: GatewayProcess) -> None:
    first = admin(gateway, "/key/generate", {}).json()
    second = admin(gateway, "/key/generate", {}).json()
    headers = {"Authorization": f"Bearer {first['key']}"}
    assert httpx.post(gateway.url + "/key/generate", headers=headers, json={}).status_code == 403
    other = httpx.get(gateway.url + "/key/info", headers=headers, params={"key": second["token"]})
    assert other.status_code == 403


def test_block_unblock_delete_take_effect_at_once(gateway: GatewayProcess) -> None:
    key = admin(gateway, "/key/generate", {}).json()["key"]
    assert chat(gateway, key).status_code == 200
    assert admin(gateway, "/key/block", {"key": key}).json()["blocked"] is True
    assert chat(gateway, key).status_code == 401
    admin(gateway, "/key/unblock", {"key": key})
    assert chat(gateway, key).status_code == 200
    assert admin(gateway, "/key/delete", {"keys": [key]}).json()["deleted"] == 1
    refused = chat(gateway, key)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_update_and_expiry(gateway: GatewayProcess) -> None:
    key = admin(gateway, "/key/generate", {"duration": "1s"}).json()["key"]
    assert chat(gateway, key).status_code == 200
    time.sleep(1.2)
    assert chat(gateway, key).status_code == 401
    other = admin(gateway, "/key/generate", {}).json()
    updated = admin(gateway, "/key/update", {"key": other["token"], "models": ["other"], "tpm_limit": 1000})
    assert updated.json()["models"] == ["other"] and updated.json()["tpm_limit"] == 1000
    assert chat(gateway, other["key"], "demo").status_code == 403


def test_list_and_field_allowlist(gateway: GatewayProcess) -> None:
    user = f"user-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        admin(gateway, "/key/generate", {"user_id": user})
    listed = admin(gateway, "/key/list", user_id=user, size="2").json()
    assert len(listed["keys"]) == 2 and all(k["user_id"] == user for k in listed["data"])
    unknown = admin(gateway, "/key/generate", {"api_base": "http://169.254.169.254"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "api_base"
    wrong_type = admin(gateway, "/key/generate", {"rpm_limit": "many"})
    assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"] == "rpm_limit"
    not_yet = admin(gateway, "/key/generate", {"soft_budget": 10, "tags": ["x"]})
    assert not_yet.status_code == 200 and not_yet.headers["x-lockgate-notice"].endswith("ignored: tags")
    assert not_yet.json()["soft_budget"] == 10
    duplicate = admin(gateway, "/key/generate", {"key_alias": "dup-alias"})
    again = admin(gateway, "/key/generate", {"key_alias": "dup-alias"})
    assert duplicate.status_code == 200 and again.status_code == 400


def test_the_key_is_never_stored(gateway: GatewayProcess) -> None:
    key = admin(gateway, "/key/generate", {}).json()["key"]
    database = gateway.config_path.parent / "lockgate.db"
    stored = b"".join(p.read_bytes() for p in database.parent.glob("lockgate.db*"))
    assert stored and key.encode() not in stored
    assert key not in gateway.logs()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    schema = f"lockgate_e2e_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(POSTGRES, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    try:
        asyncio.run(run(f'CREATE SCHEMA "{schema}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES} is not reachable ({exc})")
    yield f"{POSTGRES}?search_path={schema}"
    asyncio.run(run(f'DROP SCHEMA "{schema}" CASCADE'))


def test_postgres_keys_survive_restarts_and_revocation_reaches_other_instances(postgres_url: str) -> None:
    config = CONFIG + f"  database_url: {postgres_url}\n"
    with GatewayProcess(config) as first:
        key = admin(first, "/key/generate", {"models": ["demo"]}).json()["key"]
    with GatewayProcess(config) as a, GatewayProcess(config) as b:
        assert chat(a, key).status_code == 200 and chat(b, key).status_code == 200  # durable, shared
        admin(a, "/key/block", {"key": key})
        assert chat(a, key).status_code == 401  # at once on the instance that blocked it
        deadline = time.monotonic() + 5
        while chat(b, key).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert chat(b, key).status_code == 401  # within user_api_key_cache_ttl (1 s here) on the others


def test_with_redis_a_revocation_reaches_every_instance_at_once(postgres_url: str) -> None:
    """With Redis, instances tell each other a key changed: the 60 s cache lifetime is not the bound."""
    import redis as redis_client

    try:
        redis_client.Redis.from_url("redis://127.0.0.1:6379/14", socket_connect_timeout=2).ping()
    except redis_client.RedisError as exc:
        pytest.fail(f"Redis at 127.0.0.1:6379 is not reachable ({exc})")
    config = CONFIG.replace("user_api_key_cache_ttl: 1", "user_api_key_cache_ttl: 60")
    config += f"  database_url: {postgres_url}\nrouter_settings:\n  redis_url: redis://127.0.0.1:6379/14\n"
    with GatewayProcess(config) as a, GatewayProcess(config) as b:
        key = admin(a, "/key/generate", {}).json()["key"]
        assert chat(b, key).status_code == 200  # now cached on B for 60 s
        admin(a, "/key/block", {"key": key})
        deadline = time.monotonic() + 3
        while chat(b, key).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert chat(b, key).status_code == 401
        assert time.monotonic() < deadline  # well inside the cache lifetime
