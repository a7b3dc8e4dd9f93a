"""Config loading: LiteLLM-style ``config.yaml`` -> validated :class:`Settings`, or every problem with its place.

Each bad config asserts the exact problem: its key path, its line when the key is in the file, and the wording.
Fixture files live in ``tests/configs/``; one-off cases are written to a temporary file.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from lockgate.config import ConfigError, Problem, Settings, load_settings, parse_settings
from lockgate.deployment import Deployment, public_url
from lockgate.secret import Secret

CONFIGS = Path(__file__).resolve().parent / "configs"
WORKSHOP = CONFIGS / "workshop"
REFERENCE_WORKSHOP = Path(__file__).resolve().parents[2] / "shared/reference/workshop-configs"
WORKSHOP_FILES = sorted(WORKSHOP.glob("*.yml"))

GOOD_ENV = {
    "GOOD_MASTER_KEY": "sk-good-master-key-0123456789",
    "OPENAI_API_KEY": "sk-openai-canary-5d1e",
    "AZURE_API_KEY": "azure-canary-77b2",
    "OPENROUTER_API_KEY": "sk-or-canary-90aa",
}
REFS_ENV = {
    "REFS_UPSTREAM_KEY": "sk-refs-upstream-canary",
    "REFS_OVERRIDDEN": "from-the-process",
    "REFS_STOP_WORD": "STOP",
    "REFS_MASTER_KEY": "sk-refs-master-key-0123456789",
    "REFS_DATABASE_URL": "postgresql://u:refs-db-password@db:5432/x",
    "REFS_PUBLIC_ROUTE": "/metrics",
}
AWS_ENV = {
    "AWS_REGION_NAME": "us-east-1",
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}
NOT_IMPLEMENTED = "ignored: not implemented by lockgate yet"


def load_text(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return load_settings(path, {} if env is None else env)


def error_of(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    return info.value


def only(problems: list[Problem] | tuple[Problem, ...], path: str) -> Problem:
    found = [p for p in problems if p.path == path]
    assert len(found) == 1, f"expected one problem at {path!r}, got {[str(p) for p in problems]}"
    return found[0]


def assert_problem(problem: Problem, path: str, line: int | None, fragment: str) -> None:
    assert (problem.path, problem.line) == (path, line), str(problem)
    assert fragment in problem.message, str(problem)
    assert fragment in str(problem)
    if line is not None:
        assert str(problem).startswith(f"line {line}: {path}: " if path else f"line {line}: {problem.message}")


# --- a good config -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good() -> Settings:
    return load_settings(CONFIGS / "good.yaml", GOOD_ENV)


def by_name(settings: Settings, name: str) -> list[Deployment]:
    return [d for d in settings.deployments if d.model_name == name]


def test_good_config_deployments_and_providers(good: Settings) -> None:
    assert good.warnings == ()
    assert good.source == str(CONFIGS / "good.yaml")
    assert [(d.model_name, d.provider, d.upstream_model) for d in good.deployments] == [
        ("gpt-4o", "openai", "gpt-4o"),
        ("gpt-4o", "azure", "gpt-4o-eu"),
        ("gpt-4o", "openai", "gpt-4o"),  # no prefix: a gpt-* model is openai's
        ("claude-via-openrouter", "openrouter", "anthropic/claude-3.5-sonnet"),  # split at the first "/" only
        ("llama", "hosted_vllm", "meta-llama/Llama-3.1-8B-Instruct"),
        ("qwen", "hosted_vllm", "Qwen/Qwen2.5-7B-Instruct"),  # custom_llm_provider, model kept whole
        ("embed", "openai", "text-embedding-3-small"),
        ("demo", "demo", "echo"),
    ]
    assert by_name(good, "claude-via-openrouter")[0].litellm_model == "openrouter/anthropic/claude-3.5-sonnet"
    assert by_name(good, "qwen")[0].litellm_model == "hosted_vllm/Qwen/Qwen2.5-7B-Instruct"
    assert len(by_name(good, "gpt-4o")) == 3


def test_good_config_deployment_fields(good: Settings) -> None:
    primary, azure, plain = by_name(good, "gpt-4o")
    assert primary.id == "gpt-4o-primary"
    assert primary.model_info == {"id": "gpt-4o-primary", "max_input_tokens": 128000, "supports_vision": True}
    assert (primary.rpm, primary.tpm, primary.params) == (600, 100000, {"temperature": 0.25})
    assert primary.api_key is not None and primary.api_key.reveal() == GOOD_ENV["OPENAI_API_KEY"]
    assert azure.api_base == "https://eu-resource.openai.azure.com"
    assert (azure.api_version, azure.timeout, azure.weight) == ("2024-10-21", 30.0, 2.0)
    assert azure.api_key is not None and azure.api_key.reveal() == GOOD_ENV["AZURE_API_KEY"]
    assert (plain.order, plain.weight, plain.model_info) == (2, 1.0, {})
    llama = by_name(good, "llama")[0]
    assert (llama.stream_timeout, llama.params) == (12.5, {"top_k": 40})
    assert by_name(good, "embed")[0].model_info == {"mode": "embedding"}


def test_good_config_settings(good: Settings) -> None:
    assert good.master_key is not None and good.master_key.reveal() == GOOD_ENV["GOOD_MASTER_KEY"]
    assert good.database_url is not None
    assert good.database_url.reveal() == "postgresql://lockgate:db-password@db.internal:5432/lockgate"
    assert good.store_prompts_in_spend_logs is True
    assert good.drop_params is True
    assert (good.num_retries, good.request_timeout, good.stream_timeout) == (2, 45.0, 90.0)
    assert good.fallbacks == {"gpt-4o": ("claude-via-openrouter", "llama"), "qwen": ("llama",)}
    assert good.routing_strategy == "simple-shuffle"
    assert (good.max_request_size_mb, good.shutdown_grace_seconds, good.connect_timeout) == (5.0, 3.0, 2.5)


def test_ids_are_unique_and_stable(good: Settings) -> None:
    ids = [d.id for d in good.deployments]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids[1:])
    again = load_settings(CONFIGS / "good.yaml", GOOD_ENV)
    assert [d.id for d in again.deployments] == ids
    # An id never depends on the key: a rotated key keeps every id.
    rotated = load_settings(CONFIGS / "good.yaml", {k: v + "-rotated" for k, v in GOOD_ENV.items()})
    assert [d.id for d in rotated.deployments] == ids
    assert all(GOOD_ENV["OPENAI_API_KEY"] not in i for i in ids)


def test_public_params_hide_credentials(good: Settings) -> None:
    llama = by_name(good, "llama")[0]
    assert llama.api_base is not None and "vllm-password" in llama.api_base  # kept for the upstream call
    assert llama.public_params() == {
        "model": "hosted_vllm/meta-llama/Llama-3.1-8B-Instruct",
        "api_base": "https://vllm.internal:8443/v1",
        "stream_timeout": 12.5,
        "top_k": 40,
    }
    for deployment in good.deployments:
        shown = repr(deployment.public_params())
        for secret in (*GOOD_ENV.values(), "vllm-user", "vllm-password", "query-secret"):
            assert secret not in shown, (deployment.model_name, secret)
        assert "api_key" not in deployment.public_params()
    assert by_name(good, "gpt-4o")[1].public_params() == {
        "model": "azure/gpt-4o-eu",
        "api_base": "https://eu-resource.openai.azure.com",
        "api_version": "2024-10-21",
        "timeout": 30.0,
        "weight": 2.0,
    }


def test_azure_accepts_an_ad_token_instead_of_a_key(tmp_path: Path) -> None:
    settings = load_text(
        tmp_path,
        """
        model_list:
          - model_name: az
            litellm_params:
              model: azure/my-deployment
              api_base: https://r.openai.azure.com
              azure_ad_token: os.environ/AZ_TOKEN
        """,
        {"AZ_TOKEN": "ad-token-canary"},
    )
    (deployment,) = settings.deployments
    token = deployment.options["azure_ad_token"]
    assert isinstance(token, Secret) and token.reveal() == "ad-token-canary"
    assert "ad-token-canary" not in repr(deployment)
    assert deployment.secrets() == ("ad-token-canary",)


# --- os.environ/NAME and the environment ---------------------------------------------------------------------------


def test_environment_references_resolve_everywhere() -> None:
    settings = load_settings(CONFIGS / "env_refs.yaml", REFS_ENV)
    (deployment,) = settings.deployments
    assert deployment.api_base == "https://llm.example.com/v1"  # from environment_variables
    assert deployment.api_key is not None and deployment.api_key.reveal() == REFS_ENV["REFS_UPSTREAM_KEY"]
    assert deployment.params == {"user": "from-the-config", "stop": ["STOP", "END"]}  # nested list resolved
    assert settings.master_key is not None and settings.master_key.reveal() == REFS_ENV["REFS_MASTER_KEY"]
    assert settings.database_url is not None and settings.database_url.reveal() == REFS_ENV["REFS_DATABASE_URL"]
    assert [str(w) for w in settings.warnings] == [f"line 18: general_settings.public_routes: {NOT_IMPLEMENTED}"]


def test_environment_variables_section_overrides_the_process_environment() -> None:
    # LiteLLM exports environment_variables before reading the rest, so the config's value wins.
    settings = load_settings(CONFIGS / "env_refs.yaml", {**REFS_ENV, "UPSTREAM_BASE": "https://other.example/v1"})
    assert settings.deployments[0].api_base == "https://llm.example.com/v1"
    assert settings.deployments[0].params["user"] == "from-the-config"


def test_every_missing_variable_is_reported_with_its_key_path() -> None:
    env = {k: v for k, v in REFS_ENV.items() if k not in ("REFS_UPSTREAM_KEY", "REFS_STOP_WORD", "REFS_PUBLIC_ROUTE")}
    with pytest.raises(ConfigError) as info:
        load_settings(CONFIGS / "env_refs.yaml", env)
    problems = info.value.problems
    # public_routes is ignored (a warning), so its unset variable is not a reason to refuse the config.
    assert len(problems) == 2, [str(p) for p in problems]
    expected = [
        ("model_list[0].litellm_params.api_key", 11, "REFS_UPSTREAM_KEY"),
        ("model_list[0].litellm_params.stop[0]", 13, "REFS_STOP_WORD"),
    ]
    for path, line, name in expected:
        assert_problem(
            only(problems, path),
            path,
            line,
            f"environment variable {name} is not set (referenced as os.environ/{name})",
        )
    assert str(info.value).startswith(f"{CONFIGS / 'env_refs.yaml'}: 2 problem(s):\n")


def test_a_missing_variable_in_general_settings(tmp_path: Path) -> None:
    error = error_of(tmp_path, "general_settings:\n  master_key: os.environ/NO_SUCH_MASTER_KEY\n")
    (problem,) = error.problems
    assert_problem(problem, "general_settings.master_key", 2, "environment variable NO_SUCH_MASTER_KEY is not set")


MINIMAL = "model_list:\n  - model_name: demo\n    litellm_params:\n      model: demo/echo\n"


def test_litellm_master_key_from_the_environment(tmp_path: Path) -> None:
    assert load_text(tmp_path, MINIMAL).master_key is None
    settings = load_text(tmp_path, MINIMAL, {"LITELLM_MASTER_KEY": "sk-from-env-0123456789"})
    assert settings.master_key is not None and settings.master_key.reveal() == "sk-from-env-0123456789"
    both = load_text(
        tmp_path,
        MINIMAL + "general_settings:\n  master_key: sk-from-config-0123456789\n",
        {"LITELLM_MASTER_KEY": "sk-from-env-0123456789"},
    )
    assert both.master_key is not None and both.master_key.reveal() == "sk-from-config-0123456789"


def test_database_url_from_the_environment(tmp_path: Path) -> None:
    assert load_text(tmp_path, MINIMAL).database_url is None
    settings = load_text(tmp_path, MINIMAL, {"DATABASE_URL": "postgresql://env"})
    assert settings.database_url is not None and settings.database_url.reveal() == "postgresql://env"
    both = load_text(
        tmp_path,
        MINIMAL + "general_settings:\n  database_url: postgresql://config\n",
        {"DATABASE_URL": "postgresql://env"},
    )
    assert both.database_url is not None and both.database_url.reveal() == "postgresql://config"


@pytest.mark.parametrize(
    ("config_value", "env_value", "expected"),
    [
        (None, None, False),
        (None, "true", True),
        (None, "True", True),
        (None, "false", False),
        (False, "true", False),  # the config wins
        (True, "false", True),
    ],
)
def test_litellm_drop_params(tmp_path: Path, config_value: bool | None, env_value: str | None, expected: bool) -> None:
    text = (
        MINIMAL
        if config_value is None
        else MINIMAL + f"litellm_settings:\n  drop_params: {str(config_value).lower()}\n"
    )
    env = {} if env_value is None else {"LITELLM_DROP_PARAMS": env_value}
    assert load_text(tmp_path, text, env).drop_params is expected


def test_the_loader_reads_no_other_environment_variable(tmp_path: Path) -> None:
    # Only what ENVIRONMENT lists, or what the config names, is read: OPENAI_API_KEY is not picked up implicitly.
    settings = load_text(tmp_path, "model_list:\n  - model_name: g\n    litellm_params: {model: openai/gpt-4o}\n",
                         {"OPENAI_API_KEY": "sk-implicit"})  # fmt: skip
    assert settings.deployments[0].api_key is None


def test_default_environment_is_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-process-env-0123456789")
    settings = load_settings(CONFIGS / "minimal.yaml")
    assert settings.master_key is not None and settings.master_key.reveal() == "sk-process-env-0123456789"
    assert os.environ["LITELLM_MASTER_KEY"] == "sk-process-env-0123456789"  # read, never changed


# --- secrets -------------------------------------------------------------------------------------------------------


def test_secrets_never_print_themselves(good: Settings) -> None:
    assert isinstance(good.master_key, Secret) and isinstance(good.database_url, Secret)
    master = GOOD_ENV["GOOD_MASTER_KEY"]
    assert str(good.master_key) == "*****" and repr(good.master_key) == "Secret('*****')"
    assert f"{good.master_key}" == "*****"
    keyed = [d for d in good.deployments if d.model_name in ("gpt-4o", "claude-via-openrouter", "embed")]
    assert len(keyed) == 5
    for deployment in keyed:
        assert isinstance(deployment.api_key, Secret), deployment.model_name
        assert deployment.api_key.reveal() in GOOD_ENV.values()
        assert deployment.api_key.reveal() not in repr(deployment) + str(deployment)
        assert str(deployment.api_key) == "*****"
    text = repr(good) + str(good)
    for secret in (master, "db-password", GOOD_ENV["OPENAI_API_KEY"], GOOD_ENV["AZURE_API_KEY"]):
        assert secret not in text
    assert GOOD_ENV["OPENROUTER_API_KEY"] not in text
    assert good.master_key.matches(master) and not good.master_key.matches(master + "x")


def test_problems_and_warnings_never_quote_a_secret(tmp_path: Path) -> None:
    error = error_of(
        tmp_path,
        """
        model_list:
          - model_name: az
            litellm_params:
              model: azure/dep
              api_base: r.openai.azure.com
              api_key: os.environ/AZ_KEY
        general_settings:
          master_key: sk-config-master-canary-123456
          master_keys: sk-typo-canary-123456
        """,
        {"AZ_KEY": "azure-key-canary-123"},
    )
    text = str(error) + "".join(str(w) for w in error.warnings)
    for secret in ("sk-config-master-canary-123456", "sk-typo-canary-123456", "azure-key-canary-123"):
        assert secret not in text


# --- warnings ------------------------------------------------------------------------------------------------------


def test_warnings_for_unimplemented_and_unknown_keys_carry_lines() -> None:
    settings = load_settings(CONFIGS / "warnings.yaml", {})
    assert len(settings.deployments) == 1
    assert settings.routing_strategy == "simple-shuffle"
    assert {(w.path, w.line, w.message) for w in settings.warnings} == {
        ("openapi", 24, "ignored: unknown key"),
        ("general_settings.master_keys", 11, "ignored: unknown key (did you mean 'master_key'?)"),
        ("general_settings.spend_report_frequency", 12, NOT_IMPLEMENTED),
        ("general_settings.log_level", 13, NOT_IMPLEMENTED),
        ("litellm_settings.drop_param", 16, "ignored: unknown key (did you mean 'drop_params'?)"),
        ("litellm_settings.service_callbacks", 17, NOT_IMPLEMENTED),
        ("router_settings.num_retry", 20, "ignored: unknown key (did you mean 'num_retries'?)"),
        ("router_settings.routing_strategy", 21, "ignored: 'lar1' is not implemented yet; using simple-shuffle"),
        ("router_settings.failover", 22, NOT_IMPLEMENTED),
        ("model_list[0].litellm_params.tags", 6, NOT_IMPLEMENTED),
    }
    assert len(settings.warnings) == 10
    # A typo of master_key is never taken for the master key.
    assert settings.master_key is None
    assert settings.drop_params is False and settings.num_retries == 0


@pytest.mark.parametrize(
    ("section", "key", "suggestion"),
    [
        ("general_settings", "master_keys", "master_key"),
        ("general_settings", "masterkey", "master_key"),
        ("general_settings", "database_ur", "database_url"),
        ("litellm_settings", "drop_param", "drop_params"),
        ("litellm_settings", "num_retry", "num_retries"),
        ("router_settings", "num_retry", "num_retries"),
        ("router_settings", "routing_stratgy", "routing_strategy"),
        ("lockgate", "shutdown_grace_second", "shutdown_grace_seconds"),
    ],
)
def test_typo_suggestions(tmp_path: Path, section: str, key: str, suggestion: str) -> None:
    settings = load_text(tmp_path, MINIMAL + f"{section}:\n  {key}: 1\n")
    (warning,) = settings.warnings
    assert_problem(warning, f"{section}.{key}", 6, f"ignored: unknown key (did you mean '{suggestion}'?)")


def test_unknown_keys_without_a_close_match_and_unknown_parameters(tmp_path: Path) -> None:
    settings = load_text(
        tmp_path,
        """
        model_list:
          - model_name: g
            litellm_params:
              model: openai/gpt-4o
              frobnicate: 3
            extra_entry_key: 1
        zzz_custom: {a: 1}
        """,
    )
    assert {(w.path, w.line, w.message) for w in settings.warnings} == {
        ("zzz_custom", 8, "ignored: unknown key"),
        ("model_list[0].extra_entry_key", 7, "ignored: unknown key"),
        ("model_list[0].litellm_params.frobnicate", 6, "ignored: not a parameter of the openai provider"),
    }


def test_empty_file_is_valid_with_a_warning() -> None:
    settings = load_settings(CONFIGS / "empty.yaml", {})
    assert settings.deployments == ()
    (warning,) = settings.warnings
    assert warning.path == "model_list" and "no models configured" in warning.message


# --- refused keys and errors ---------------------------------------------------------------------------------------


def test_refused_keys_are_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(CONFIGS / "refused.yaml", {})
    problems = info.value.problems
    assert len(problems) == 4
    assert_problem(only(problems, "general_settings.custom_auth"), "general_settings.custom_auth", 9,
                   "not supported: lockgate never loads code named in a config")  # fmt: skip
    assert_problem(only(problems, "general_settings.allowed_ips"), "general_settings.allowed_ips", 10,
                   "not supported: IP allow-lists are not implemented yet")  # fmt: skip
    assert_problem(only(problems, "general_settings.enable_jwt_auth"), "general_settings.enable_jwt_auth", 11,
                   "not supported: JWT auth is not implemented yet")  # fmt: skip
    path = "general_settings.allow_client_side_credentials"
    assert_problem(only(problems, path), path, 12, "a client may never choose an upstream's URL or credentials")


def entry(params: str, info: str = "") -> str:
    """One model_list entry named ``m`` (litellm_params start on line 4, model_info on the line after them)."""
    text = "model_list:\n  - model_name: m\n    litellm_params:\n" + textwrap.indent(params, "      ")
    return text + ("    model_info:\n" + textwrap.indent(info, "      ") if info else "")


P = "model_list[0].litellm_params"
ERROR_CASES = [
    pytest.param(entry("model: opneai/gpt-4o\n"), f"{P}.model", 4,
                 "unknown provider 'opneai' (did you mean 'openai'?)", id="provider-typo"),
    pytest.param(entry("model: azur/gpt-4o\n"), f"{P}.model", 4,
                 "unknown provider 'azur' (did you mean 'azure'?)", id="provider-typo-azure"),
    pytest.param(entry("model: zzzq/x\n"), f"{P}.model", 4,
                 "unknown provider 'zzzq'; known: anthropic, azure, bedrock, deepseek, demo, gemini",
                 id="provider-unknown"),
    pytest.param(entry("model: gpt-4o\ncustom_llm_provider: opnai\n"), f"{P}.model", 4,
                 "unknown provider 'opnai' (did you mean 'openai'?)", id="custom-provider-typo"),
    pytest.param(entry("model: anthropic/claude-3-5-sonnet-latest\n"), f"{P}.api_key", None,
                 "the anthropic provider needs api_key", id="anthropic-without-key"),
    pytest.param(entry("model: claude-3-5-sonnet-latest\n"), f"{P}.api_key", None,
                 "the anthropic provider needs api_key", id="anthropic-no-prefix-without-key"),
    pytest.param(entry("model: bedrock/anthropic.claude-3-5-sonnet\n"), f"{P}.aws_region_name", None,
                 "the bedrock provider needs aws_region_name (or aws_bedrock_runtime_endpoint)",
                 id="bedrock-no-region"),
    pytest.param(entry("model: gemini/gemini-2.0-flash\n"), f"{P}.api_key", None,
                 "the gemini provider needs api_key", id="gemini-without-key"),
    pytest.param(entry("model: vertex_ai/gemini-2.0-flash\n"), f"{P}.model", 4,
                 "the vertex_ai provider is not supported by this version yet", id="planned-vertex"),
    pytest.param(entry("model: my-own-model\n"), f"{P}.model", 4,
                 "cannot tell the provider of 'my-own-model': write it as provider/model", id="no-provider"),
    pytest.param("model_list:\n  - litellm_params:\n      model: openai/gpt-4o\n", "model_list[0].model_name", None,
                 "is required (the name clients ask for)", id="missing-model-name"),
    pytest.param("model_list:\n  - model_name: ''\n    litellm_params: {model: openai/gpt-4o}\n",
                 "model_list[0].model_name", 2, "is required", id="empty-model-name"),
    pytest.param(entry("api_key: sk-x\n"), f"{P}.model", None,
                 "is required, as provider/model (e.g. openai/gpt-4o)", id="missing-model"),
    pytest.param("model_list:\n  - model_name: m\n", f"{P}.model", None,
                 "is required, as provider/model", id="missing-litellm-params"),
    pytest.param(entry("model: openai/gpt-4o\nrpm: lots\n"), f"{P}.rpm", 5,
                 "must be an integer, not 'lots'", id="rpm-not-numeric"),
    pytest.param(entry("model: openai/gpt-4o\ntpm: [1]\n"), f"{P}.tpm", 5,
                 "must be an integer, not [1]", id="tpm-not-numeric"),
    pytest.param(entry("model: openai/gpt-4o\ntimeout: soon\n"), f"{P}.timeout", 5,
                 "must be a number, not 'soon'", id="timeout-not-numeric"),
    pytest.param(entry("model: openai/gpt-4o\ntimeout: true\n"), f"{P}.timeout", 5,
                 "must be a number, not True", id="timeout-bool"),
    pytest.param(entry("model: openai/gpt-4o\ntimeout: -5\n"), f"{P}.timeout", 5,
                 "must be at least 0", id="timeout-negative"),
    pytest.param(entry("model: openai/gpt-4o\nweight: -1\n"), f"{P}.weight", 5,
                 "must be at least 0", id="weight-negative"),
    pytest.param(entry("model: openai/gpt-4o\n", "mode: chatty\n"), "model_list[0].model_info.mode", 6,
                 "must be one of audio_speech, audio_transcription, chat, completion, embedding", id="bad-mode"),
    pytest.param(entry("model: openai/gpt-4o\nstream: true\n"), f"{P}.stream", 5,
                 "cannot be set per deployment", id="stream-per-deployment"),
    pytest.param(entry("model: openai/gpt-4o\ndrop_params: maybe\n"), f"{P}.drop_params", 5,
                 "must be true or false, not 'maybe'", id="drop-params-not-bool"),
    pytest.param("model_list:\n  model_name: m\n", "model_list", 1,
                 "must be a list of models", id="model-list-mapping"),
    pytest.param("model_list: openai/gpt-4o\n", "model_list", 1, "must be a list of models", id="model-list-string"),
    pytest.param("model_list:\n  - openai/gpt-4o\n", "model_list[0]", 2,
                 "must be a mapping with model_name and litellm_params", id="entry-not-mapping"),
    pytest.param(MINIMAL + "general_settings: [master_key]\n", "general_settings", 5,
                 "must be a mapping, not list", id="section-not-mapping"),
    pytest.param("[1, 2]\n", "", None, "the config must be a YAML mapping", id="top-level-list"),
    pytest.param(MINIMAL + "litellm_settings:\n  fallbacks: [{demo: [nope]}]\n", "litellm_settings.fallbacks[0].demo",
                 6, "'nope' is not a model_name in model_list", id="fallback-target-missing"),
    pytest.param(MINIMAL + "router_settings:\n  fallbacks:\n    - ghost: [demo]\n",
                 "router_settings.fallbacks[0].ghost", 7, "'ghost' is not a model_name in model_list",
                 id="fallback-group-missing"),
    pytest.param(MINIMAL + "litellm_settings:\n  fallbacks: {demo: [demo]}\n", "litellm_settings.fallbacks", 6,
                 "must be a list of {model_group: [fallback groups]}", id="fallbacks-not-list"),
    pytest.param(MINIMAL + "litellm_settings:\n  fallbacks: [{demo: 3}]\n", "litellm_settings.fallbacks[0].demo",
                 6, "must be a list of model group names", id="fallback-targets-not-names"),
    pytest.param(MINIMAL + "router_settings:\n  routing_strategy: fastest\n", "router_settings.routing_strategy", 6,
                 "must be one of cost-based-routing, lar1, latency-based-routing, least-busy", id="bad-strategy"),
    pytest.param(MINIMAL + "router_settings:\n  timeout: soon\n", "router_settings.timeout", 6,
                 "must be a number, not 'soon'", id="router-timeout"),
    pytest.param(MINIMAL + "litellm_settings:\n  num_retries: -1\n", "litellm_settings.num_retries", 6,
                 "must be at least 0", id="num-retries-negative"),
    pytest.param(MINIMAL + "lockgate:\n  max_request_size_mb: big\n", "lockgate.max_request_size_mb", 6,
                 "must be a number, not 'big'", id="lockgate-section"),
    pytest.param(MINIMAL + "environment_variables:\n  FLAG: true\n", "environment_variables.FLAG", 6,
                 "must be a string", id="env-var-not-string"),
    pytest.param(entry("model: hosted_vllm/meta-llama/Llama-3-8B\n"), f"{P}.api_base", None,
                 "the hosted_vllm provider needs api_base (the server's URL)", id="vllm-without-api-base"),
    pytest.param(entry("model: azure/dep\napi_base: https://r.openai.azure.com\n"), f"{P}.api_key", None,
                 "the azure provider needs api_key (or azure_ad_token)", id="azure-without-key"),
    pytest.param(entry("model: openai/gpt-4o\napi_base: localhost:8000/v1\n"), f"{P}.api_base", 5,
                 "api_base must be an http:// or https:// URL", id="api-base-no-scheme"),
    pytest.param(entry("model: openai/gpt-4o\napi_base: ftp://files.example/v1\n"), f"{P}.api_base", 5,
                 "api_base must be an http:// or https:// URL", id="api-base-ftp"),
    pytest.param(entry("model: openai/gpt-4o\napi_base: [http://a]\n"), f"{P}.api_base", 5,
                 "must be a non-empty string", id="api-base-not-string"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "path", "line", "fragment"), ERROR_CASES)
def test_one_problem(tmp_path: Path, text: str, path: str, line: int | None, fragment: str) -> None:
    error = error_of(tmp_path, text)
    assert len(error.problems) == 1, [str(p) for p in error.problems]
    assert_problem(error.problems[0], path, line, fragment)
    source = str(tmp_path / "config.yaml")
    assert error.source == source
    assert str(error) == f"{source}: 1 problem(s):\n  {error.problems[0]}"


def test_litellm_params_not_a_mapping(tmp_path: Path) -> None:
    error = error_of(tmp_path, "model_list:\n  - model_name: m\n    litellm_params: openai/gpt-4o\n")
    assert [(p.path, p.line, p.message) for p in error.problems] == [
        (P, 3, "must be a mapping, not str"),
        (f"{P}.model", None, "is required, as provider/model (e.g. openai/gpt-4o)"),
    ]


def test_prices_in_litellm_params_join_model_info(tmp_path: Path) -> None:
    """LiteLLM's custom pricing in litellm_params (as its docs and the Terraform provider write it) prices the
    deployment; model_info's own value wins; a price that is not a number is an error, not a free model."""
    settings = load_text(
        tmp_path,
        """
        model_list:
          - model_name: a
            litellm_params: {model: openai/gpt-4o, input_cost_per_token: "3e-7", output_cost_per_token: 1.2e-6,
                             cache_read_input_token_cost: 3.0e-8, input_cost_per_token_above_200k_tokens: 6e-7}
            model_info: {output_cost_per_token: 1.5e-6}
        """,
    )
    (deployment,) = settings.deployments
    assert deployment.model_info == {
        "input_cost_per_token": 3e-7,
        "output_cost_per_token": 1.5e-6,
        "cache_read_input_token_cost": 3e-8,
        "input_cost_per_token_above_200k_tokens": 6e-7,
    }
    assert not [w for w in settings.warnings if "cost" in w.path]
    audio = load_text(
        tmp_path,
        """
        model_list:
          - model_name: a
            litellm_params: {model: gemini/gemini-9-flash, api_key: k}
            model_info: {input_cost_per_audio_token: 1.0e-6, output_cost_per_image_token: 3.0e-5,
                         cache_creation_input_token_cost_above_1hr_above_200k_tokens: 2.0e-6,
                         search_context_cost_per_query: {search_context_size_medium: 0.01}}
        """,
    )
    assert not audio.warnings  # every price pricing.py reads is a known model_info key
    error = error_of(
        tmp_path, "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x, input_cost_per_token: cheap}\n"
    )
    assert [(p.path, p.message) for p in error.problems] == [
        (f"{P}.input_cost_per_token", "must be a number, not 'cheap'")
    ]


def test_duplicate_model_info_id(tmp_path: Path) -> None:
    error = error_of(
        tmp_path,
        """
        model_list:
          - model_name: a
            litellm_params: {model: openai/gpt-4o}
            model_info: {id: same}
          - model_name: b
            litellm_params: {model: demo/echo}
            model_info: {id: same}
        """,
    )
    (problem,) = error.problems
    assert_problem(problem, "model_list", 2, "model_info.id 'same' is used by more than one deployment")


def test_several_problems_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(CONFIGS / "bad_many.yaml", {})
    error = info.value
    assert {(p.path, p.line) for p in error.problems} == {
        ("model_list[0].litellm_params.model", 5),
        ("model_list[1].model_name", None),
        ("model_list[2].litellm_params.rpm", 11),
        ("model_list[2].litellm_params.timeout", 12),
        ("model_list[2].model_info.mode", 14),
        ("litellm_settings.fallbacks[0].typo-provider", 17),
        ("router_settings.routing_strategy", 20),
        ("general_settings.custom_auth", 24),
    }
    assert len(error.problems) == 8
    text = str(error)
    assert text.startswith(f"{CONFIGS / 'bad_many.yaml'}: 8 problem(s):\n")
    for fragment in (
        "line 5: model_list[0].litellm_params.model: unknown provider 'opneai' (did you mean 'openai'?)",
        "model_list[1].model_name: is required",
        "line 11: model_list[2].litellm_params.rpm: must be an integer, not 'lots'",
        "line 12: model_list[2].litellm_params.timeout: must be at least 0",
        "line 14: model_list[2].model_info.mode: must be one of",
        "line 17: litellm_settings.fallbacks[0].typo-provider: 'no-such-group' is not a model_name in model_list",
        "line 20: router_settings.routing_strategy: must be one of",
        "line 24: general_settings.custom_auth: not supported",
    ):
        assert fragment in text
    # Warnings travel with the error, so the typo that may explain a problem is still shown.
    assert [(w.path, w.line) for w in error.warnings] == [("general_settings.master_keys", 23)]


def test_invalid_yaml_reports_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(CONFIGS / "invalid_yaml.yaml", {})
    (problem,) = info.value.problems
    assert_problem(problem, "", 5, "invalid YAML: expected <block end>, but found '<block mapping start>'")
    assert str(problem).startswith("line 5: invalid YAML: ")


def test_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing, {})
    (problem,) = info.value.problems
    assert_problem(problem, "", None, "cannot read the file: No such file or directory")
    assert str(info.value) == f"{missing}: 1 problem(s):\n  cannot read the file: No such file or directory"


def test_the_loader_never_runs_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def fake_system(*args: object) -> int:
        calls.append(args)
        return 0

    monkeypatch.setattr(os, "system", fake_system)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(CONFIGS / "python_tag.yaml", {})
    (problem,) = info.value.problems
    assert_problem(problem, "", 2, "invalid YAML: could not determine a constructor for the tag")
    assert "python/object/apply:os.system" in problem.message
    assert calls == []
    assert not (tmp_path / "PWNED_MARKER").exists()
    # Even with os.system restored, a file naming a real command has no effect.
    monkeypatch.undo()
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'model_list: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(evil, {})
    assert not marker.exists()


# --- the workshop configs ------------------------------------------------------------------------------------------
# Real users' LiteLLM configs (tests/configs/workshop, copied verbatim from shared/reference/workshop-configs).
# lockgate serves them unchanged: they load with warnings for the keys it ignores, and auth stays on.


def test_workshop_copies_match_the_reference() -> None:
    if not REFERENCE_WORKSHOP.is_dir():
        pytest.skip(f"{REFERENCE_WORKSHOP} is not present")
    reference = sorted(REFERENCE_WORKSHOP.glob("*.yml"))
    assert [p.name for p in reference] == [p.name for p in WORKSHOP_FILES]
    for original, copy in zip(reference, WORKSHOP_FILES, strict=True):
        assert copy.read_bytes() == original.read_bytes(), copy.name


def test_there_are_four_workshop_configs() -> None:
    assert [p.name for p in WORKSHOP_FILES] == [
        "access_key_config.yml",
        "iam_role_config.yml",
        "iam_role_config_claude4.yml",
        "prompt_caching.yml",
    ]


@pytest.mark.parametrize("path", WORKSHOP_FILES, ids=lambda p: p.stem)
def test_workshop_config_loads(path: Path) -> None:
    settings = load_settings(path, AWS_ENV)
    model_lines = [line for line in path.read_text().splitlines() if "model: bedrock/" in line]
    assert len(settings.deployments) == len(model_lines) > 0
    assert all(d.provider == "bedrock" and d.upstream_model.startswith("converse/") for d in settings.deployments)
    assert all(d.options["aws_region_name"] for d in settings.deployments)
    assert settings.drop_params is True and settings.num_retries in (2, 5)


@pytest.mark.parametrize("path", WORKSHOP_FILES, ids=lambda p: p.stem)
def test_workshop_config_warnings(path: Path) -> None:
    settings = load_settings(path, AWS_ENV)
    warnings = {w.path: w for w in settings.warnings}
    lines = path.read_text().splitlines()
    for key in (
        "general_settings.disable_user_auth",
        "general_settings.log_level",
        "general_settings.openai_api_base",
        "router_settings.failover",
        "router_settings.retries",
        "router_settings.default_model",
    ):
        assert key in warnings, (key, sorted(warnings))
        warning = warnings[key]
        assert warning.message == NOT_IMPLEMENTED
        assert warning.line is not None
        assert lines[warning.line - 1].strip().startswith(key.split(".")[-1] + ":")
    openapi = warnings["openapi"]
    assert openapi.message == "ignored: unknown key" and openapi.line is not None
    assert lines[openapi.line - 1] == "openapi:"
    assert all(w.line is not None for w in settings.warnings)
    assert all(w.message.startswith("ignored:") for w in settings.warnings)


def test_workshop_config_without_aws_environment_names_the_variable() -> None:
    path = WORKSHOP / "prompt_caching.yml"
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    # litellm_settings.aws_region_name is ignored, so only the deployment's own reference counts.
    assert [(p.path, p.line) for p in info.value.problems] == [
        ("model_list[0].litellm_params.aws_region_name", 5),
        ("model_list[0].litellm_params.aws_region_name", 5),
    ]
    assert "needs aws_region_name" in info.value.problems[1].message
    assert "environment variable AWS_REGION_NAME is not set" in info.value.problems[0].message


# --- regressions: bugs found while writing these tests ------------------------------------------------------------


def test_bug_routing_strategy_list_crashes(tmp_path: Path) -> None:
    error = error_of(tmp_path, MINIMAL + "router_settings:\n  routing_strategy: [simple-shuffle]\n")
    assert_problem(only(error.problems, "router_settings.routing_strategy"),
                   "router_settings.routing_strategy", 6, "must be one of")  # fmt: skip


def test_bug_model_info_mode_list_crashes(tmp_path: Path) -> None:
    error = error_of(tmp_path, entry("model: openai/gpt-4o\n", "mode: [chat]\n"))
    assert_problem(only(error.problems, "model_list[0].model_info.mode"),
                   "model_list[0].model_info.mode", 6, "must be one of")  # fmt: skip


def test_bug_infinite_integer_crashes(tmp_path: Path) -> None:
    error = error_of(tmp_path, entry("model: openai/gpt-4o\nrpm: .inf\n"))
    assert only(error.problems, f"{P}.rpm").line == 5


@pytest.mark.parametrize(
    ("text", "path"),
    [
        pytest.param(entry("model: openai/gpt-4o\ntimeout: .nan\n"), f"{P}.timeout", id="deployment"),
        pytest.param(MINIMAL + "router_settings:\n  timeout: .nan\n", "router_settings.timeout", id="router"),
    ],
)
def test_bug_nan_timeout_is_accepted(tmp_path: Path, text: str, path: str) -> None:
    try:
        settings = load_text(tmp_path, text)
    except ConfigError as error:
        assert only(error.problems, path)
        return
    timeouts = [settings.request_timeout, *(d.timeout for d in settings.deployments)]
    assert not any(isinstance(t, float) and math.isnan(t) for t in timeouts), timeouts


def test_bug_public_url_ipv6() -> None:
    assert public_url("http://[::1]:8000/v1") == "http://[::1]:8000/v1"


def test_redis_settings_and_environment_names() -> None:
    models = {"model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x"}}]}
    config = {**models, "router_settings": {"redis_host": "cache", "redis_port": 6380, "redis_password": "p@ss"}}
    settings = parse_settings(config, {})
    assert settings.redis_url is not None and settings.redis_url.reveal() == "redis://:p%40ss@cache:6380/0"
    assert "p@ss" not in repr(settings)
    from_env = parse_settings(models, {"REDIS_HOST": "envhost", "REDIS_PASSWORD": "x"})
    assert from_env.redis_url is not None and from_env.redis_url.reveal() == "redis://:x@envhost:6379/0"
    url = parse_settings(models, {"REDIS_URL": "rediss://r:6379/2"})
    assert url.redis_url is not None and url.redis_url.reveal() == "rediss://r:6379/2"
    assert parse_settings(models, {}).redis_url is None
    with pytest.raises(ConfigError) as info:
        parse_settings({**models, "router_settings": {"redis_url": "http://nope"}}, {})
    assert "redis_url: must be a redis://" in str(info.value)


def test_price_file_is_checked_at_start(tmp_path: Path) -> None:
    good = tmp_path / "prices.json"
    good.write_text('{"my-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, '
                    '"litellm_provider": "openai", "mode": "chat"}}')  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text('{"my-model": {"input_cost_per_token": -1}}')
    base = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/my-model", "api_key": "k"}}]}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**base, "lockgate": {"price_file": "prices.json"}}))
    settings = load_settings(config, {})
    assert settings.price_file == str(good)
    config.write_text(yaml.safe_dump({**base, "lockgate": {"price_file": "bad.json"}}))
    with pytest.raises(ConfigError, match=r"lockgate\.price_file"):
        load_settings(config, {})


def test_gateway_budgets_from_litellm_settings() -> None:
    base = {"model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x"}}]}
    settings = parse_settings(
        {**base, "litellm_settings": {"max_budget": 100, "budget_duration": "30d", "max_end_user_budget": 5}}, {}
    )
    assert (settings.max_budget, settings.budget_duration, settings.max_end_user_budget) == (100, "30d", 5)
    assert not [w for w in settings.warnings if "budget" in str(w)]  # implemented, not "ignored"
    with pytest.raises(ConfigError, match="budget_duration"):
        parse_settings({**base, "litellm_settings": {"max_budget": 1, "budget_duration": "weekly"}}, {})
