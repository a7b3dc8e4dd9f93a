"""API-added models without a server: validated as config entries plus the API's rules, sealed, loaded back
(skipping the ones that no longer pass), and served by the router beside the config's."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from lockgate.config import ConfigError, Settings, parse_deployment, parse_settings
from lockgate.dbmodels import DbModels, ModelProblem
from lockgate.routing.router import Router
from lockgate.sealing import SealError, is_sealed
from lockgate.storage.base import ModelRecord, Store, open_store, utc_now

SALT = "salt-key-for-tests-0123456789abcdef"
CANARY = "sk-db-model-canary-9a8b7c6d"
CONFIG: dict[str, Any] = {
    "model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}, "model_info": {"id": "cfg-1"}}],
    "lockgate": {"model_api_base_allow": ["http://127.0.0.1:*"]},
}


def settings(salt: str | None = SALT, **extra: Any) -> Settings:
    env = {"LITELLM_SALT_KEY": salt} if salt else {}
    return parse_settings({**CONFIG, **extra}, env)


def entry(params: dict[str, Any], name: str = "m", model_id: str = "db-1", **info: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": params, "model_info": {"id": model_id, **info}}


OPENAI = {"model": "openai/gpt-4o", "api_base": "https://api.openai.com/v1", "api_key": CANARY}


def refused(models: DbModels, item: dict[str, Any]) -> ModelProblem:
    with pytest.raises(ModelProblem) as caught:
        models.validate(item)
    return caught.value


def test_an_entry_is_validated_as_a_config_entry_with_paths_relative_to_it() -> None:
    models = DbModels(settings())
    deployment, warnings = models.validate(entry({**OPENAI, "temperature": 0.5, "frobnicate": 1}))
    assert deployment.provider == "openai" and deployment.params == {"temperature": 0.5}
    assert [w.path for w in warnings] == ["litellm_params.frobnicate"]
    assert refused(models, entry({})).path == "litellm_params.model"
    assert refused(models, {"litellm_params": OPENAI, "model_info": {"id": "x"}}).path == "model_name"
    unknown = refused(models, entry({"model": "nosuch/thing"}))
    assert unknown.path == "litellm_params.model" and "unknown provider" in str(unknown)
    assert refused(models, entry({**OPENAI, "timeout": "soon"})).path == "litellm_params.timeout"
    assert refused(models, entry({"model": "azure/dep", "api_key": CANARY})).path == "litellm_params.api_base"


def test_parse_deployment_refuses_environment_references() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_deployment(entry({**OPENAI, "api_key": "os.environ/DATABASE_URL"}))
    (problem,) = caught.value.problems
    assert problem.path == "litellm_params.api_key" and "give the value itself" in problem.message


def test_the_api_rules_on_top() -> None:
    models = DbModels(settings())
    assert "https" in str(refused(models, entry({**OPENAI, "api_base": "http://api.example.com/v1"})))
    assert refused(models, entry({**OPENAI, "api_base": "https://169.254.169.254"})).path == "litellm_params.api_base"
    assert refused(models, entry({**OPENAI, "base_url": "https://0x7f.1"})).path == "litellm_params.base_url"
    assert models.validate(entry({**OPENAI, "api_base": "http://127.0.0.1:9999/v1"}))  # the operator allows it
    bedrock = {"model": "bedrock/anthropic.claude-3", "aws_region_name": "us-east-1"}
    assert refused(models, entry({**bedrock, "aws_profile_name": "prod"})).path == "litellm_params.aws_profile_name"
    assert refused(models, entry({**bedrock, "aws_region_name": "evil.example#"})).path.endswith("aws_region_name")
    endpoint = {**bedrock, "aws_bedrock_runtime_endpoint": "https://10.0.0.1"}
    assert refused(models, entry(endpoint)).path == "litellm_params.aws_bedrock_runtime_endpoint"
    assert refused(models, entry(OPENAI, model_id="has space")).path == "model_info.id"
    assert refused(models, entry(OPENAI, name="bad\r\nname")).path == "model_name"
    for key in ("api_key", "api_version", "organization"):
        assert refused(models, entry({**OPENAI, key: "x\r\nHost: evil"})).path == f"litellm_params.{key}"
    assert models.validate(entry({**OPENAI, "stop": ["\n"]}))  # request defaults may hold newlines


def test_credentials_are_sealed_and_need_a_salt_key() -> None:
    models = DbModels(settings())
    stored = models.seal({**OPENAI, "aws_secret_access_key": "s3cr3t", "azure_ad_token": ""}, "db-1")
    assert is_sealed(stored["api_key"]) and is_sealed(stored["aws_secret_access_key"])
    assert stored["azure_ad_token"] == "" and stored["api_base"] == OPENAI["api_base"]
    assert CANARY not in str(stored) and models.open(stored, "db-1")["api_key"] == CANARY
    assert "api_key" not in models.open(stored, "db-1", only=frozenset({"aws_secret_access_key"}))
    without = DbModels(settings(salt=None))
    with pytest.raises(ModelProblem) as caught:
        without.seal(OPENAI, "db-1")
    problem = caught.value
    assert problem.code == "salt_key_not_set" and "LITELLM_SALT_KEY" in str(problem)
    assert without.seal({"model": "demo/echo"}, "db-1") == {"model": "demo/echo"}  # no credentials: fine


def test_a_sealed_credential_is_bound_to_its_model_and_destination() -> None:
    """One who can write the database but lacks the salt key cannot send a stored key somewhere else."""
    models = DbModels(settings())
    stored = models.seal(OPENAI, "db-1")
    for tampered, model_id in (
        ({**stored, "api_base": "https://attacker.example/v1"}, "db-1"),
        ({**stored, "model": "anthropic/claude-3"}, "db-1"),
        ({**stored, "aws_bedrock_runtime_endpoint": "https://attacker.example"}, "db-1"),
        (stored, "db-2"),  # copied to another row
    ):
        with pytest.raises(SealError):
            models.open(tampered, model_id)
    assert models.open({**stored, "temperature": 0.1}, "db-1")["api_key"] == CANARY  # other params are free


def test_settings_read_the_salt_key_and_the_allowlist() -> None:
    configured = settings()
    assert configured.salt_key is not None and configured.salt_key.reveal() == SALT
    assert configured.model_api_base_allow == ("http://127.0.0.1:*",)
    short = parse_settings(CONFIG, {"LITELLM_SALT_KEY": "sk-1234"})
    assert any("LITELLM_SALT_KEY" in w.path for w in short.warnings)
    with pytest.raises(ConfigError) as caught:
        parse_settings({**CONFIG, "lockgate": {"model_api_base_allow": ["ok.example", "http://x:1"]}}, {})
    assert [p.path for p in caught.value.problems] == ["lockgate.model_api_base_allow[0]"]


def record(models: DbModels, item: dict[str, Any]) -> ModelRecord:
    info = {k: v for k, v in item["model_info"].items() if k != "id"}
    now = utc_now()
    params = models.seal(item["litellm_params"], item["model_info"]["id"])
    return ModelRecord(item["model_info"]["id"], item["model_name"], params, info, "master_key", now, now)


async def with_store(tmp_path: Path, work: Any) -> Any:
    store: Store = await open_store(None, sqlite_path=tmp_path / "models.db")
    try:
        return await work(store)
    finally:
        await store.close()


def test_load_skips_what_no_longer_passes_and_names_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = DbModels(settings())

    async def work(store: Store) -> Any:
        await store.insert_model(record(writer, entry(OPENAI, model_id="good")))
        await store.insert_model(record(writer, entry({"model": "demo/echo"}, model_id="keyless")))
        first = await DbModels(settings()).load(store)
        other_salt = DbModels(settings(salt="another-salt-key-abcdef0123456789"))
        with caplog.at_level(logging.ERROR, logger="lockgate"):
            skipped = await other_salt.load(store)
            again = await other_salt.load(store)
        narrower = await DbModels(settings(lockgate={})).load(store)
        return first, skipped, again, narrower

    first, skipped, again, narrower = asyncio.run(with_store(tmp_path, work))
    assert [d.id for d in first] == ["good", "keyless"] and first[0].api_key.reveal() == CANARY
    assert [d.id for d in skipped] == ["keyless"] and again is None  # unchanged since the last load
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "'good'" in errors[0] and CANARY not in caplog.text  # named once, never its key
    assert [d.id for d in narrower] == ["good", "keyless"]  # a public https base needs no allowlist entry


def test_a_stored_model_with_a_config_id_is_not_served(tmp_path: Path) -> None:
    models = DbModels(settings())

    async def work(store: Store) -> Any:
        await store.insert_model(record(models, entry({"model": "demo/echo"}, model_id="cfg-1")))
        return await models.load(store)

    assert asyncio.run(with_store(tmp_path, work)) == ()


def test_the_router_serves_db_deployments_beside_the_config_group() -> None:
    base = settings()
    models = DbModels(base)
    joined, _ = models.validate(entry({"model": "demo/other"}, name="demo", model_id="db-demo"))
    alone, _ = models.validate(entry({"model": "demo/echo"}, name="solo", model_id="db-solo"))
    router = Router(base, db_deployments=(joined, alone))
    assert {t.deployment.id for t in router.group("demo")} == {"cfg-1", "db-demo"}
    assert router.names() == ["demo", "solo"] and router.db_ids == {"db-demo", "db-solo"}
    assert Router(base).db_ids == frozenset()
