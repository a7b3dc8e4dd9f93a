"""The ``lockgate`` command, run as a real subprocess with a clean environment (no ``LITELLM_*`` variables)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import MASTER_KEY, GatewayProcess, free_port

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "configs"
MINIMAL = (CONFIGS / "minimal.yaml").read_text()
GOOD_ENV = {
    "GOOD_MASTER_KEY": "sk-good-master-key-0123456789",
    "OPENAI_API_KEY": "sk-openai-canary-5d1e",
    "AZURE_API_KEY": "azure-canary-77b2",
    "OPENROUTER_API_KEY": "sk-or-canary-90aa",
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "OPENAI_")) and k != "DATABASE_URL"}
    env.update(extra)
    return env


def lockgate(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockgate.cli", *args],
        capture_output=True,
        text=True,
        env=clean_env() if env is None else env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- version and check-config --------------------------------------------------------------------------------------


def test_version() -> None:
    result = lockgate("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "lockgate 0.1.0"


def test_no_command_prints_help_and_fails() -> None:
    result = lockgate()
    assert result.returncode == 2
    assert "serve" in result.stdout and "check-config" in result.stdout


def test_check_config_ok_prints_counts() -> None:
    path = CONFIGS / "good.yaml"
    result = lockgate("check-config", str(path), env=clean_env(**GOOD_ENV))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: OK, 8 deployment(s) in 6 model group(s)\n"
    assert result.stderr == ""


def test_check_config_ok_with_warnings_on_stderr() -> None:
    path = CONFIGS / "warnings.yaml"
    result = lockgate("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: OK, 1 deployment(s) in 1 model group(s)\n"
    warnings = result.stderr.splitlines()
    assert len(warnings) == 10 and all(line.startswith("warning: line ") for line in warnings), warnings
    assert "warning: line 24: openapi: ignored: unknown key" in warnings
    assert (
        "warning: line 11: general_settings.master_keys: ignored: unknown key (did you mean 'master_key'?)" in warnings
    )
    assert "warning: line 13: general_settings.log_level: ignored: not implemented by lockgate yet" in warnings


def test_check_config_bad_prints_every_problem() -> None:
    path = CONFIGS / "bad_many.yaml"
    result = lockgate("check-config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}: 8 problem(s):"
    for expected in (
        "  line 5: model_list[0].litellm_params.model: unknown provider 'opneai' (did you mean 'openai'?)",
        "  model_list[1].model_name: is required (the name clients ask for)",
        "  line 11: model_list[2].litellm_params.rpm: must be an integer, not 'lots'",
        "  line 12: model_list[2].litellm_params.timeout: must be at least 0",
        "  line 17: litellm_settings.fallbacks[0].typo-provider: 'no-such-group' is not a model_name in model_list",
        "  line 24: general_settings.custom_auth: not supported: lockgate never loads code named in a config",
        "warning: line 23: general_settings.master_keys: ignored: unknown key (did you mean 'master_key'?)",
    ):
        assert expected in lines, (expected, lines)
    assert any(line.startswith("  line 14: model_list[2].model_info.mode: must be one of ") for line in lines)
    assert any(line.startswith("  line 20: router_settings.routing_strategy: must be one of ") for line in lines)
    assert len([line for line in lines if line.startswith("  ")]) == 8


def test_check_config_workshop_config_is_ok() -> None:
    path = CONFIGS / "workshop" / "access_key_config.yml"
    env = clean_env(AWS_REGION_NAME="us-east-1", AWS_ACCESS_KEY_ID="AKIA-test", AWS_SECRET_ACCESS_KEY="secret-test")
    result = lockgate("check-config", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: OK, 4 deployment(s) in 4 model group(s)"
    assert "warning: line 52: general_settings.disable_user_auth: ignored" in result.stderr
    assert "secret-test" not in result.stderr + result.stdout


def test_check_config_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    result = lockgate("check-config", str(CONFIGS / "invalid_yaml.yaml"))
    assert result.returncode == 1
    assert (
        f"{CONFIGS / 'invalid_yaml.yaml'}: 1 problem(s):\n  line 5: invalid YAML: expected <block end>" in result.stderr
    )
    missing = tmp_path / "missing.yaml"
    result = lockgate("check-config", str(missing))
    assert result.returncode == 1
    assert result.stderr == f"{missing}: 1 problem(s):\n  cannot read the file: No such file or directory\n"


# --- serve: refusing unsafe binds ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("master_key", "reason"),
    [
        pytest.param(None, "no master key is configured", id="no-master-key"),
        pytest.param("sk-1234", "the master key is weak", id="weak-master-key"),
        pytest.param("short-key", "the master key is weak", id="short-master-key"),
    ],
)
def test_serve_refuses_an_exposed_unsafe_gateway(master_key: str | None, reason: str) -> None:
    port = free_port()
    env = clean_env() if master_key is None else clean_env(LITELLM_MASTER_KEY=master_key)
    result = lockgate(
        "serve", "--config", str(CONFIGS / "minimal.yaml"), "--host", "0.0.0.0", "--port", str(port), env=env
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"lockgate: refusing to start: {reason}"), result.stderr
    assert "listening on" not in result.stderr
    assert not accepts(port)
    if master_key is not None:
        assert master_key not in result.stderr


def test_serve_missing_config_exits_1(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = lockgate("serve", "--config", str(missing), "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr == f"{missing}: 1 problem(s):\n  cannot read the file: No such file or directory\n"


def test_serve_bad_config_exits_1() -> None:
    result = lockgate("serve", "--config", str(CONFIGS / "bad_many.yaml"), "--port", str(free_port()))
    assert result.returncode == 1
    assert "8 problem(s)" in result.stderr and "listening on" not in result.stderr


def test_serve_unauthenticated_on_all_interfaces_when_asked() -> None:
    args = ("--host", "0.0.0.0", "--allow-unauthenticated")
    with GatewayProcess(MINIMAL, master_key=None, args=args) as gateway:
        assert httpx.get(gateway.url + "/health/liveliness", timeout=5).status_code == 200
        models = httpx.get(gateway.url + "/v1/models", timeout=5)  # no key needed: the operator said so
        assert models.status_code == 200
        assert [m["id"] for m in models.json()["data"]] == ["demo"]
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(15) == 0
        assert "warning: no master key is configured: every request is allowed" in gateway.logs()
        assert f"listening on http://0.0.0.0:{gateway.port}" in gateway.logs()
        assert not accepts(gateway.port)


def test_serve_weak_key_on_loopback_is_a_warning() -> None:
    with GatewayProcess(MINIMAL, master_key="sk-1234", args=("--host", "127.0.0.1")) as gateway:
        assert httpx.get(gateway.url + "/v1/models", headers=gateway.headers(), timeout=5).status_code == 200
        assert httpx.get(gateway.url + "/v1/models", timeout=5).status_code == 401
        logs = gateway.logs()
        assert "warning: the master key is weak (a well-known value, or shorter than 16 characters)" in logs
        assert "sk-1234" not in logs
        assert gateway.stop() == 0


# --- serve --demo with the official openai SDK ---------------------------------------------------------------------


@dataclass
class Demo:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "stderr.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lockgate.cli", "serve", "--demo", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=clean_env(LITELLM_MASTER_KEY=MASTER_KEY),
            cwd=log.parent,  # the demo's database (./lockgate-demo.db) lands here, not in the repository
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the demo did not start:\n" + log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield Demo(port, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def client(demo: Demo, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo.base_url, api_key=key, max_retries=0, timeout=10)


def test_demo_chat_completion_with_the_openai_sdk(demo: Demo) -> None:
    with client(demo) as sdk:
        completion = sdk.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "ping from the sdk"}]
        )
    reply = completion.choices[0].message.content
    assert reply is not None and reply.startswith("Hello from lockgate"), reply
    assert "ping from the sdk" in reply
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_demo_streaming_with_the_openai_sdk(demo: Demo) -> None:
    with client(demo) as sdk:
        stream = sdk.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "stream this please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from lockgate"), text
    assert "stream this please" in text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_demo_rejects_a_wrong_key(demo: Demo) -> None:
    with client(demo, key="sk-wrong-key-0123456789abcdef") as sdk, pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])


def test_demo_without_a_master_key_on_all_interfaces_is_refused() -> None:
    port = free_port()
    result = lockgate("serve", "--demo", "--host", "0.0.0.0", "--port", str(port))
    assert result.returncode == 2
    assert "lockgate: refusing to start: no master key is configured" in result.stderr
    assert not accepts(port)


# --- serve --workers 2 ---------------------------------------------------------------------------------------------


def test_two_workers_serve_and_stop_together() -> None:
    with GatewayProcess(MINIMAL, args=("--workers", "2")) as gateway:
        assert gateway.proc is not None
        deadline = time.monotonic() + 5
        workers = children_of(gateway.proc.pid)
        while len(workers) < 2 and time.monotonic() < deadline:  # the second fork may trail the first answer
            time.sleep(0.05)
            workers = children_of(gateway.proc.pid)
        assert len(workers) == 2, (workers, gateway.logs())
        body = {"model": "demo", "messages": [{"role": "user", "content": "hello workers"}]}
        for _ in range(12):  # a new connection each time, so the kernel spreads them over the workers
            with httpx.Client(timeout=10, headers=gateway.headers()) as http:
                response = http.post(gateway.url + "/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"].startswith("Hello from lockgate")
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(15) == 0
        assert not accepts(gateway.port)
        assert not [pid for pid in workers if alive(pid)]


def test_admin_commands_manage_keys_for_a_running_gateway(tmp_path: Path) -> None:
    """keys create / list / revoke and db upgrade work on the configured database, no gateway needed; a running
    gateway accepts the key and stops accepting it within user_api_key_cache_ttl after revocation."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n  - model_name: demo\n    litellm_params: {model: demo/echo}\n"
        "general_settings:\n  user_api_key_cache_ttl: 0.5\n"
    )
    env = clean_env(LITELLM_MASTER_KEY="sk-cli-master-key-0123456789")
    upgraded = lockgate("db", "upgrade", "--config", str(config), env=env)
    assert upgraded.returncode == 0 and "schema is at version" in upgraded.stdout
    created = lockgate("keys", "create", "--config", str(config), "--alias", "ci", "--models", "demo", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sk-") and "shown once" in created.stderr
    listed = lockgate("keys", "list", "--config", str(config), env=env)
    assert " ci " in listed.stdout and key not in listed.stdout and key[-4:] in listed.stdout
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockgate.cli", "serve", "--config", str(config), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/health/liveliness", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.post(url + "/v1/chat/completions", json=body, headers=headers).status_code == 200
        revoked = lockgate("keys", "revoke", "--config", str(config), key, env=env)
        assert revoked.returncode == 0 and revoked.stdout.strip() == "revoked"
        time.sleep(0.7)
        assert httpx.post(url + "/v1/chat/completions", json=body, headers=headers).status_code == 401
        again = lockgate("keys", "revoke", "--config", str(config), key, env=env)
        assert again.returncode == 1 and "no such key" in again.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def test_teams_commands(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("model_list:\n  - model_name: demo\n    litellm_params: {model: demo/echo}\n")
    env = clean_env(LITELLM_MASTER_KEY="sk-cli-master-key-0123456789")
    created = lockgate("teams", "create", "--config", str(config), "--alias", "ml", "--models", "demo", env=env)
    assert created.returncode == 0, created.stderr
    team_id = created.stdout.strip()
    added = lockgate("teams", "add-member", "--config", str(config), team_id, "ada", "--role", "admin", env=env)
    assert added.returncode == 0 and added.stdout.strip() == f"ada is admin of {team_id}"
    listed = lockgate("teams", "list", "--config", str(config), env=env)
    assert listed.stdout.strip() == f"{team_id}  ml  demo  1 member(s)"
    missing = lockgate("teams", "add-member", "--config", str(config), "no-such-team", "ada", env=env)
    assert missing.returncode == 1 and "no such team_id" in missing.stderr
    assert lockgate("teams", "delete", "--config", str(config), team_id, env=env).stdout.strip() == "deleted"
    assert lockgate("teams", "delete", "--config", str(config), team_id, env=env).returncode == 1
