"""LiteLLM's /model/new, /model/update, /model/delete end to end: real gateway processes, the official SDK, a
fake OpenAI upstream; models kept in SQLite or PostgreSQL (credentials sealed), shared across instances."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import MASTER_KEY, GatewayProcess

SALT = "test-salt-key-0123456789abcdef0123"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/13"


def config(database: str = "", *, allow: bool = True, extra: str = "") -> str:
    text = (
        "model_list:\n"
        "  - model_name: demo\n    litellm_params: {model: demo/echo}\n    model_info: {id: config-demo}\n"
        "general_settings:\n  user_api_key_cache_ttl: 1\n"
    )
    if database.startswith("postgres"):
        text += f"  database_url: {database}\n"
    lockgate = [f"  sqlite_path: {database}"] if database and not database.startswith("postgres") else []
    if allow:
        lockgate.append('  model_api_base_allow: ["http://127.0.0.1:*"]')
    return text + ("lockgate:\n" + "\n".join(lockgate) + "\n" if lockgate else "") + extra


def salted(**env: str) -> dict[str, str]:
    return {"LITELLM_SALT_KEY": SALT, **env}


def admin(gw: GatewayProcess, path: str, body: dict[str, Any] | None = None, key: str = MASTER_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if body is None:
        return httpx.get(gw.url + path, headers=headers)
    return httpx.post(gw.url + path, headers=headers, json=body)


def fake_model(fake: FakeOpenAI, name: str, **extra: Any) -> dict[str, Any]:
    params = {"model": "openai/gpt-4o", "api_base": fake.url + "/v1", "api_key": fake.api_key}
    return {"model_name": name, "litellm_params": params, **extra}


def chat(gw: GatewayProcess, model: str, key: str = MASTER_KEY) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll until ``check()``; the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not within the time allowed"
        time.sleep(0.05)
    return time.monotonic() - start


def stored_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    database = tmp_path_factory.mktemp("models") / "gateway.db"
    with GatewayProcess(config(str(database)), env=salted()) as gw:
        gw.database = database  # type: ignore[attr-defined]
        yield gw


def test_add_then_chat_through_the_sdk_and_no_credential_anywhere(
    gateway: GatewayProcess, fake_openai: FakeOpenAI
) -> None:
    created = admin(gateway, "/model/new", fake_model(fake_openai, "db-gpt"))
    assert created.status_code == 200, created.text
    shown = created.json()
    assert shown["model_name"] == "db-gpt" and shown["model_info"]["db_model"] is True
    assert shown["litellm_params"] == {"model": "openai/gpt-4o", "api_base": fake_openai.url + "/v1"}
    model_id = shown["model_info"]["id"]
    assert uuid.UUID(model_id)  # generated when not chosen

    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    reply = client.chat.completions.create(model="db-gpt", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "echo: hi"  # the fake checked the (opened) upstream key
    assert "db-gpt" in [m.id for m in client.models.list()]

    info = admin(gateway, "/model/info")
    listed = {m["model_info"]["id"]: m for m in info.json()["data"]}
    assert listed[model_id]["model_info"]["db_model"] is True
    assert listed["config-demo"]["model_info"]["db_model"] is False
    assert "api_key" not in listed[model_id]["litellm_params"]
    for text in (created.text, info.text, gateway.logs()):
        assert UPSTREAM_KEY not in text
    stored = stored_bytes(gateway.database)  # type: ignore[attr-defined]
    assert b"lockgate_encrypted" in stored and UPSTREAM_KEY.encode() not in stored


def test_a_chosen_id_then_delete(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    body = fake_model(fake_openai, "db-chosen", model_info={"id": "chosen-1", "max_input_tokens": 1000})
    created = admin(gateway, "/model/new", body)
    assert created.status_code == 200 and created.json()["model_info"]["id"] == "chosen-1"
    assert created.json()["model_info"]["max_input_tokens"] == 1000
    assert chat(gateway, "db-chosen").status_code == 200
    again = admin(gateway, "/model/new", body)
    assert again.status_code == 400 and again.json()["error"]["code"] == "conflict"
    deleted = admin(gateway, "/model/delete", {"id": "chosen-1"})
    assert deleted.status_code == 200, deleted.text
    gone = chat(gateway, "db-chosen")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    assert admin(gateway, "/model/delete", {"id": "chosen-1"}).status_code == 404


def test_a_model_joins_the_config_group_of_its_name(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    created = admin(gateway, "/model/new", fake_model(fake_openai, "demo", model_info={"id": "demo-upstream"}))
    assert created.status_code == 200, created.text
    try:
        served = {chat(gateway, "demo").headers["x-lockgate-deployment"] for _ in range(30)}
        assert served == {"config-demo", "demo-upstream"}
    finally:
        admin(gateway, "/model/delete", {"id": "demo-upstream"})


def test_update_moves_the_model_and_asks_for_its_credentials_again(
    gateway: GatewayProcess, fake_openai: FakeOpenAI
) -> None:
    with FakeOpenAI(api_key="sk-second-upstream-key-5e6f7a") as second:
        created = admin(gateway, "/model/new", fake_model(fake_openai, "db-moving"))
        model_id = created.json()["model_info"]["id"]
        moved = {"model_info": {"id": model_id}, "litellm_params": {"api_base": second.url + "/v1"}}
        refused = admin(gateway, "/model/update", moved)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "litellm_params.api_key"
        assert chat(gateway, "db-moving").status_code == 200 and not second.requests  # nothing changed

        moved["litellm_params"]["api_key"] = second.api_key
        updated = admin(gateway, "/model/update", moved)
        assert updated.status_code == 200, updated.text
        assert updated.json()["litellm_params"]["api_base"] == second.url + "/v1"
        assert chat(gateway, "db-moving").status_code == 200 and len(second.requests) == 1

        # a change that does not move it keeps the stored key; LiteLLM's other spellings of the id work
        renamed = admin(gateway, "/model/update", {"model_id": model_id, "model_name": "db-moved"})
        assert renamed.status_code == 200, renamed.text
        assert chat(gateway, "db-moved").status_code == 200 and len(second.requests) == 2
        assert chat(gateway, "db-moving").status_code == 404
        assert admin(gateway, "/model/update", {"id": "no-such-model", "model_name": "x"}).status_code == 404
        admin(gateway, "/model/delete", {"id": model_id})


def test_patch_model_id_update_as_the_terraform_provider_calls_it(
    gateway: GatewayProcess, fake_openai: FakeOpenAI
) -> None:
    """``PATCH /model/{id}/update`` (LiteLLM's UI and the Terraform provider): the model named in the path."""
    created = admin(gateway, "/model/new", fake_model(fake_openai, "db-patched", model_info={"id": "tf:1"}))
    assert created.status_code == 200, created.text
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    try:
        path = "/model/tf%3A1/update"  # percent-encoded, as Go's url.PathEscape leaves it or not
        body = {"model_name": "db-patched-2", "litellm_params": {"rpm": 7}, "model_info": {"id": "tf:1"}}
        patched = httpx.patch(gateway.url + path, headers=headers, json=body)
        assert patched.status_code == 200, patched.text
        assert patched.json()["model_name"] == "db-patched-2"
        assert patched.json()["litellm_params"]["rpm"] == 7
        assert chat(gateway, "db-patched-2").status_code == 200  # the stored key was kept: same destination
        other = httpx.patch(gateway.url + path, headers=headers, json={"model_id": "another", "model_name": "x"})
        assert other.status_code == 400 and other.json()["error"]["param"] == "model_id"
        missing = httpx.patch(gateway.url + "/model/no-such-model/update", headers=headers, json={"model_name": "x"})
        assert missing.status_code == 404
        # the provider recreates a model that was deleted outside it when the message says "model not found"
        assert "model not found" in missing.json()["error"]["message"]
        assert "model not found" in admin(gateway, "/model/delete", {"id": "gone"}).json()["error"]["message"]
        member = httpx.patch(gateway.url + path, headers={"Authorization": "Bearer sk-not-a-key"}, json={})
        assert member.status_code == 401
    finally:
        admin(gateway, "/model/delete", {"id": "tf:1"})


def test_a_model_as_the_terraform_provider_creates_it_is_priced(
    gateway: GatewayProcess, fake_openai: FakeOpenAI
) -> None:
    """The provider's /model/new body: prices in litellm_params (per token, from its per-million settings),
    custom_llm_provider, db_model / base_model / tier / mode in model_info. Its requests cost what it says."""
    params = {
        "custom_llm_provider": "openai", "model": "openai/gpt-4o", "api_base": fake_openai.url + "/v1",
        "api_key": fake_openai.api_key, "input_cost_per_token": 2.5 / 1e6, "output_cost_per_token": 10 / 1e6,
        "merge_reasoning_content_in_choices": False,
    }  # fmt: skip
    info = {"id": "tf-priced", "db_model": True, "base_model": "gpt-4o", "tier": "paid", "mode": "chat"}
    created = admin(gateway, "/model/new", {"model_name": "db-tf", "litellm_params": params, "model_info": info})
    assert created.status_code == 200, created.text
    assert created.json()["model_info"]["input_cost_per_token"] == 2.5e-6
    try:
        # read back as the provider does: /v2/model/info?modelId= (and /model/info?litellm_model_id= before v2)
        (read,) = admin(gateway, "/v2/model/info?modelId=tf-priced").json()["data"]
        assert read["model_name"] == "db-tf" and read["litellm_params"]["model"] == "openai/gpt-4o"
        assert read["model_info"]["base_model"] == "gpt-4o" and read["model_info"]["tier"] == "paid"
        assert read["model_info"]["output_cost_per_token"] == 1e-5 and "api_key" not in read["litellm_params"]
        assert admin(gateway, "/model/info?litellm_model_id=tf-priced").json()["data"] == [read]
        assert admin(gateway, "/v2/model/info?modelId=gone").json()["data"] == []
        gone = admin(gateway, "/model/info?litellm_model_id=gone")
        assert gone.status_code == 404 and "model not found" in gone.json()["error"]["message"]
        answer = chat(gateway, "db-tf")
        assert answer.status_code == 200, answer.text
        usage = answer.json()["usage"]
        expected = usage["prompt_tokens"] * 2.5e-6 + usage["completion_tokens"] * 1e-5
        assert expected > 0
        assert float(answer.headers["x-litellm-response-cost"]) == pytest.approx(expected, rel=1e-9)
    finally:
        admin(gateway, "/model/delete", {"id": "tf-priced"})


def test_v2_model_info_pages_searches_and_narrows(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    ids = [f"v2-{n}" for n in range(5)]
    for n, model_id in enumerate(ids):
        body = fake_model(fake_openai, f"v2-Group-{n % 2}", model_info={"id": model_id})
        assert admin(gateway, "/model/new", body).status_code == 200
    try:
        first = admin(gateway, "/v2/model/info?search=V2-group&size=2").json()
        assert (first["total_count"], first["current_page"], first["size"], first["total_pages"]) == (5, 1, 2, 3)
        pages = [admin(gateway, f"/v2/model/info?search=v2-group&size=2&page={p}").json()["data"] for p in (1, 2, 3)]
        seen = [(e["model_name"], e["model_info"]["id"]) for page in pages for e in page]
        assert seen == sorted(seen) and sorted(i for _, i in seen) == ids  # sorted by group then id, no repeats
        group = admin(gateway, "/v2/model/info?model=v2-Group-1").json()
        assert {e["model_info"]["id"] for e in group["data"]} == {"v2-1", "v2-3"}
        assert admin(gateway, "/v2/model/info?page=9&search=v2-group").json()["data"] == []
        for bad in ("page=0", "size=101", "size=x"):
            refused = admin(gateway, f"/v2/model/info?{bad}")
            assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error", bad
        key = admin(gateway, "/key/generate", {"models": ["v2-Group-0"]}).json()["key"]
        mine = admin(gateway, "/v2/model/info?search=v2", key=key).json()
        assert mine["total_count"] == 3 and {e["model_name"] for e in mine["data"]} == {"v2-Group-0"}
    finally:
        for model_id in ids:
            admin(gateway, "/model/delete", {"id": model_id})


@pytest.mark.parametrize(
    ("params", "param", "words"),
    [
        ({"api_base": "https://api.example.com"}, "litellm_params.model", "required"),
        ({"model": "nosuch/model"}, "litellm_params.model", "unknown provider"),
        ({"model": "openai/gpt-4o", "api_key": "os.environ/DATABASE_URL"}, "litellm_params.api_key", "give the value"),
        ({"model": "openai/gpt-4o", "api_base": "os.environ/OPENAI_API_BASE"}, "litellm_params.api_base", "value"),
        ({"model": "openai/gpt-4o", "api_base": "https://169.254.169.254/v1"}, "litellm_params.api_base", "internal"),
        ({"model": "openai/gpt-4o", "api_base": "https://2130706433/v1"}, "litellm_params.api_base", "internal"),
        ({"model": "openai/gpt-4o", "api_base": "https://[::ffff:127.0.0.1]"}, "litellm_params.api_base", "internal"),
        ({"model": "openai/gpt-4o", "api_base": "https://u:p@api.example.com"}, "litellm_params.api_base", "user"),
        ({"model": "openai/gpt-4o", "api_base": "https://localhost/v1"}, "litellm_params.api_base", "localhost"),
        ({"model": "openai/gpt-4o", "timeout": "never"}, "litellm_params.timeout", "number"),
    ],
)
def test_validation_errors_name_the_field(
    gateway: GatewayProcess, params: dict[str, Any], param: str, words: str
) -> None:
    refused = admin(gateway, "/model/new", {"model_name": "bad", "litellm_params": params})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == param and words in error["message"]


def test_field_allowlists_and_shapes(gateway: GatewayProcess) -> None:
    missing_name = admin(gateway, "/model/new", {"litellm_params": {"model": "demo/echo"}})
    assert missing_name.status_code == 400 and missing_name.json()["error"]["param"] == "model_name"
    missing_params = admin(gateway, "/model/new", {"model_name": "x"})
    assert missing_params.status_code == 400 and missing_params.json()["error"]["param"] == "litellm_params"
    unknown = admin(gateway, "/model/new", {"model_name": "x", "litellm_params": {"model": "demo/echo"}, "team": 1})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "team"
    ignored = admin(gateway, "/model/new", {"model_name": "x-ok", "litellm_params": {"model": "demo/echo", "zz": 1}})
    assert ignored.status_code == 200 and "litellm_params.zz" in ignored.headers["x-lockgate-notice"]
    admin(gateway, "/model/delete", {"id": ignored.json()["model_info"]["id"]})


def test_http_to_loopback_needs_the_operators_allowlist(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    with GatewayProcess(config(str(tmp_path / "strict.db"), allow=False), env=salted()) as strict:
        refused = admin(strict, "/model/new", fake_model(fake_openai, "local"))
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "litellm_params.api_base"
        assert "model_api_base_allow" in refused.json()["error"]["message"]


DEMO = {"model": "demo/echo"}


def test_config_deployments_cannot_be_changed_here(gateway: GatewayProcess) -> None:
    for path, body in (
        ("/model/update", {"model_info": {"id": "config-demo"}, "model_name": "x"}),
        ("/model/delete", {"id": "config-demo"}),
        ("/model/new", {"model_name": "x", "litellm_params": DEMO, "model_info": {"id": "config-demo"}}),
    ):
        refused = admin(gateway, path, body)
        assert refused.status_code == 400, (path, refused.text)
        assert "config file" in refused.json()["error"]["message"]
    assert chat(gateway, "demo").status_code == 200


def test_only_admins(gateway: GatewayProcess, fake_openai: FakeOpenAI) -> None:
    key = admin(gateway, "/key/generate", {}).json()["key"]
    for path, body in (
        ("/model/new", fake_model(fake_openai, "sneaky")),
        ("/model/update", {"model_info": {"id": "config-demo"}}),
        ("/model/delete", {"id": "config-demo"}),
    ):
        assert admin(gateway, path, body, key=key).status_code == 403
    assert httpx.post(gateway.url + "/model/new", json=fake_model(fake_openai, "anon")).status_code == 401


def test_without_a_salt_key_only_models_without_credentials(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    with GatewayProcess(config(str(tmp_path / "unsalted.db"))) as gw:
        refused = admin(gw, "/model/new", fake_model(fake_openai, "with-key"))
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "salt_key_not_set" and "LITELLM_SALT_KEY" in error["message"]
        assert error["param"] == "litellm_params.api_key"
        keyless = admin(gw, "/model/new", {"model_name": "keyless", "litellm_params": {"model": "demo/echo"}})
        assert keyless.status_code == 200 and chat(gw, "keyless").status_code == 200


def test_restarts_keep_serving_and_another_salt_key_skips_the_model(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    database = str(tmp_path / "restart.db")
    with GatewayProcess(config(database), env=salted()) as first:
        model_id = admin(first, "/model/new", fake_model(fake_openai, "durable")).json()["model_info"]["id"]
        admin(first, "/model/new", {"model_name": "plain", "litellm_params": {"model": "demo/echo"}})
    with GatewayProcess(config(database), env=salted()) as second:
        assert chat(second, "durable").status_code == 200
    with GatewayProcess(config(database), env=salted(LITELLM_SALT_KEY="another-salt-key-0123456789abcd")) as third:
        assert chat(third, "durable").status_code == 404  # skipped...
        assert chat(third, "plain").status_code == 200  # ...and the rest served
        logs = third.logs()
        assert model_id in logs and "not served" in logs and UPSTREAM_KEY not in logs


def test_instances_without_redis_converge_within_the_cache_lifetime(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    database = str(tmp_path / "shared.db")
    with GatewayProcess(config(database), env=salted()) as a, GatewayProcess(config(database), env=salted()) as b:
        assert chat(b, "db-shared").status_code == 404
        model_id = admin(a, "/model/new", fake_model(fake_openai, "db-shared")).json()["model_info"]["id"]
        assert chat(a, "db-shared").status_code == 200  # at once where it was added
        assert eventually(lambda: chat(b, "db-shared").status_code == 200) < 4  # user_api_key_cache_ttl: 1
        admin(a, "/model/delete", {"id": model_id})
        eventually(lambda: chat(b, "db-shared").status_code == 404)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    schema = f"lockgate_models_{uuid.uuid4().hex[:10]}"

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


def test_postgres_and_redis_a_model_added_on_one_instance_is_served_by_the_other(
    postgres_url: str, fake_openai: FakeOpenAI
) -> None:
    import redis as redis_client

    try:
        redis_client.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except redis_client.RedisError as exc:
        pytest.fail(f"Redis at 127.0.0.1:6379 is not reachable ({exc})")
    # a long cache lifetime: only Redis can make B see the change this fast
    text = config(postgres_url, extra=f"router_settings:\n  redis_url: {REDIS}\n")
    text = text.replace("user_api_key_cache_ttl: 1", "user_api_key_cache_ttl: 60")
    with GatewayProcess(text, env=salted()) as a, GatewayProcess(text, env=salted()) as b:
        assert chat(b, "db-pg").status_code == 404
        created = admin(a, "/model/new", fake_model(fake_openai, "db-pg"))
        assert created.status_code == 200, created.text
        assert eventually(lambda: chat(b, "db-pg").status_code == 200, timeout=3) < 2
        model_id = created.json()["model_info"]["id"]

        async def row() -> str:
            connection = await asyncpg.connect(postgres_url.split("?")[0], timeout=5)
            try:
                schema = postgres_url.split("search_path=")[1]
                await connection.execute(f'SET search_path TO "{schema}"')
                sql = "SELECT litellm_params::text FROM models WHERE model_id = $1"
                return str(await connection.fetchval(sql, model_id))
            finally:
                await connection.close()

        stored = asyncio.run(row())
        assert "lockgate_encrypted" in stored and UPSTREAM_KEY not in stored and fake_openai.url in stored
        admin(a, "/model/delete", {"id": model_id})
        assert eventually(lambda: chat(b, "db-pg").status_code == 404, timeout=3) < 2
