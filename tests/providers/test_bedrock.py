"""Bedrock end to end: the official SDKs -> lockgate -> a fake Bedrock Runtime that checks SigV4 for real."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from lockgate.deployment import Deployment
from lockgate.providers.bedrock import Bedrock
from tests.fakes.bedrock_upstream import FakeBedrock
from tests.support import MASTER_KEY, GatewayProcess

ACCESS_KEY = "AKIDLOCKGATETEST01"
SECRET_KEY = "bedrock-secret-canary-51e0aa"
CLAUDE = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
WORKSHOP = Path(__file__).resolve().parents[1] / "configs" / "workshop"


@pytest.fixture(scope="module")
def fake_bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock(access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1") as fake:
        yield fake


def deployment(name: str, model: str, endpoint: str, secret: str = "os.environ/AWS_SECRET_ACCESS_KEY") -> str:
    return (
        f"  - model_name: {name}\n    litellm_params:\n      model: {model}\n"
        f"      aws_access_key_id: os.environ/AWS_ACCESS_KEY_ID\n      aws_secret_access_key: {secret}\n"
        f"      aws_region_name: us-east-1\n      aws_bedrock_runtime_endpoint: {endpoint}\n"
    )


@pytest.fixture(scope="module")
def gateway(fake_bedrock: FakeBedrock) -> Iterator[GatewayProcess]:
    config = "model_list:\n" + "".join(
        [
            deployment("converse", f"bedrock/converse/{CLAUDE}", fake_bedrock.url),
            deployment("invoke", f"bedrock/invoke/{CLAUDE}", fake_bedrock.url),
            deployment("default-route", f"bedrock/{CLAUDE}", fake_bedrock.url),
            deployment("wrong-secret", f"bedrock/converse/{CLAUDE}", fake_bedrock.url, "not-the-secret-key"),
            deployment("throttled", "bedrock/converse/fault-status-429", fake_bedrock.url),
        ]
    )
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with GatewayProcess(config, env=env) as gw:
        yield gw
        logs = gw.logs()
    assert SECRET_KEY not in logs and "not-the-secret-key" not in logs


@pytest.fixture
def claude_code(gateway: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, auth_token=MASTER_KEY, api_key=None, max_retries=0, timeout=15)


@pytest.fixture
def cline(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=15)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


TOOLS: list[dict[str, Any]] = [
    {
        "name": "lookup",
        "description": "look up",
        "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
    }
]


@pytest.mark.parametrize("model", ["converse", "invoke", "default-route"])
def test_claude_code_on_bedrock(claude_code: anthropic.Anthropic, fake_bedrock: FakeBedrock, model: str) -> None:
    message = claude_code.messages.create(model=model, max_tokens=256, messages=user("hello bedrock"))
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello bedrock"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    sent = fake_bedrock.last_request
    operation = "converse" if model == "converse" else "invoke"
    assert sent.path.endswith(f"/{operation}") and "us.anthropic.claude-3-7-sonnet" in sent.path
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=" + ACCESS_KEY)


@pytest.mark.parametrize("model", ["converse", "invoke"])
def test_claude_code_streams_from_bedrock(claude_code: anthropic.Anthropic, model: str) -> None:
    with claude_code.messages.stream(model=model, max_tokens=256, messages=user("stream from bedrock")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream from bedrock"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["converse", "invoke"])
def test_thinking_and_tools_round_trip_on_bedrock(claude_code: anthropic.Anthropic, model: str) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    first = claude_code.messages.create(
        model=model,
        max_tokens=2048,
        thinking=thinking,
        tools=TOOLS,
        messages=user("think, then a tool"),  # type: ignore[arg-type]
    )
    assert first.content[0].type == "thinking" and first.content[0].signature
    tool_use = next(b for b in first.content if b.type == "tool_use")
    follow_up = claude_code.messages.create(
        model=model,
        max_tokens=2048,
        thinking=thinking,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[
            *user("think, then a tool"),
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "42"}]},
        ],
    )
    assert follow_up.stop_reason == "end_turn"


def test_claude_code_system_message_inside_messages(
    claude_code: anthropic.Anthropic, fake_bedrock: FakeBedrock
) -> None:
    """For model names it does not know, Claude Code sends environment info as a role: system message."""
    messages: Any = [{"role": "system", "content": "env: linux"}, *user("where am I")]
    claude_code.messages.create(model="converse", max_tokens=128, system="you are claude code", messages=messages)
    sent = fake_bedrock.last_request.json
    assert sent["system"] == [{"text": "you are claude code"}, {"text": "env: linux"}]
    assert [m["role"] for m in sent["messages"]] == ["user"]
    claude_code.messages.create(model="invoke", max_tokens=128, system="you are claude code", messages=messages)
    sent = fake_bedrock.last_request.json
    assert [b["text"] for b in sent["system"]] == ["you are claude code", "env: linux"]
    assert sent["anthropic_version"] == "bedrock-2023-05-31" and "model" not in sent


def test_cline_on_bedrock(cline: openai.OpenAI) -> None:
    completion = cline.chat.completions.create(model="converse", messages=user("hello from cline"))  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "echo: hello from cline"
    stream = cline.chat.completions.create(
        model="converse",
        messages=user("stream to cline"),
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: stream to cline"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


def test_bedrock_errors_keep_status_without_secrets(claude_code: anthropic.Anthropic, cline: openai.OpenAI) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        claude_code.messages.create(model="wrong-secret", max_tokens=64, messages=user("hi"))
    assert "not-the-secret-key" not in str(denied.value.body) and SECRET_KEY not in str(denied.value.body)
    with pytest.raises(openai.RateLimitError):
        cline.chat.completions.create(model="throttled", messages=user("hi"))  # type: ignore[arg-type]


def test_workshop_config_served_unchanged(fake_bedrock: FakeBedrock) -> None:
    """The Cline + LiteLLM workshop's config, with only the endpoint pointed at the fake."""
    text = (WORKSHOP / "access_key_config.yml").read_text()
    # After each deployment's aws_region_name (indented 6 or 7 spaces in the file), at the same indentation.
    text = re.sub(
        r"^( {6,})aws_region_name: (.*)$",
        lambda m: f"{m[0]}\n{m[1]}aws_bedrock_runtime_endpoint: {fake_bedrock.url}",
        text,
        flags=re.MULTILINE,
    )
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION_NAME": "us-east-1"}
    with GatewayProcess(text, env=env, master_key="sk-litellm-test-key-workshop") as gw:
        client = openai.OpenAI(base_url=gw.url, api_key="sk-litellm-test-key-workshop", max_retries=0)
        completion = client.chat.completions.create(
            model="bedrock-converse-us-claude-3-7-sonnet-v1",
            messages=user("workshop"),
            extra_body={"drop_params": True},
        )  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "echo: workshop"
        # disable_user_auth in the config is ignored: auth stays on.
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gw.url, api_key="wrong", max_retries=0).models.list()


def test_workshop_iam_role_config_uses_the_standard_credential_chain(fake_bedrock: FakeBedrock) -> None:
    """iam_role_config.yml names no keys: botocore's chain finds them (here in the environment; on EC2/ECS, the
    instance or task role). aws_session_name without aws_role_name assumes nothing, as in LiteLLM."""
    text = (WORKSHOP / "iam_role_config.yml").read_text()
    text = re.sub(
        r"^( {6,})aws_region_name: (.*)$",
        lambda m: f"{m[0]}\n{m[1]}aws_bedrock_runtime_endpoint: {fake_bedrock.url}",
        text,
        flags=re.MULTILINE,
    )
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION_NAME": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with GatewayProcess(text, env=env, master_key="sk-litellm-test-key-workshop") as gw:
        client = openai.OpenAI(base_url=gw.url, api_key="sk-litellm-test-key-workshop", max_retries=0)
        completion = client.chat.completions.create(
            model="bedrock-us-claude-3-5-sonnet-v2", messages=user("from the instance role")
        )  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "echo: from the instance role"
    assert fake_bedrock.last_request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=" + ACCESS_KEY)


@pytest.mark.parametrize("model", ["converse", "invoke"])
def test_count_tokens_asks_bedrock(gateway: GatewayProcess, fake_bedrock: FakeBedrock, model: str) -> None:
    response = httpx.post(
        gateway.url + "/v1/messages/count_tokens",
        json={"model": model, "system": "be brief", "messages": user("count these words please")},
        headers={"x-api-key": MASTER_KEY},
    )
    assert response.status_code == 200, response.text
    assert "x-lockgate-estimate" not in response.headers and response.json()["input_tokens"] > 0
    assert fake_bedrock.last_request.path.endswith("/count-tokens")


def test_assumed_role_credentials(tmp_path: Path) -> None:
    """aws_role_name + aws_session_name: the gateway's own credentials (here from the environment) assume the
    role through STS, and Bedrock is called with the temporary credentials and their session token."""
    from datetime import timedelta

    from tests.fakes.sts_upstream import FakeSTS

    temporary = ("ASIAFAKETEMPORARY01", "temporary-secret-canary-77", "session-token-canary-88")
    with (
        FakeSTS(access_key=temporary[0], secret_key=temporary[1], session_token=temporary[2],
                lifetime=timedelta(hours=1)) as sts,
        FakeBedrock(access_key=temporary[0], secret_key=temporary[1], session_token=temporary[2],
                    region="us-east-1") as bedrock,
    ):  # fmt: skip
        config = (
            "model_list:\n  - model_name: assumed\n    litellm_params:\n"
            f"      model: bedrock/converse/{CLAUDE}\n      aws_region_name: us-east-1\n"
            "      aws_role_name: arn:aws:iam::123456789012:role/bedrock-caller\n"
            "      aws_session_name: lockgate-test\n"
            f"      aws_bedrock_runtime_endpoint: {bedrock.url}\n"
        )
        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL_STS": sts.url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        with GatewayProcess(config, env=env) as gw:
            client = openai.OpenAI(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
            for text in ("first", "second"):
                reply = client.chat.completions.create(model="assumed", messages=user(text))  # type: ignore[arg-type]
                assert reply.choices[0].message.content == f"echo: {text}"
            logs = gw.logs()
        assert len(sts.requests) == 1  # assumed once, then reused until near expiry
        form = sts.form()
        assert form["RoleArn"] == "arn:aws:iam::123456789012:role/bedrock-caller"
        assert form["RoleSessionName"] == "lockgate-test"
        assert ACCESS_KEY in sts.requests[0].headers["authorization"]  # signed with the gateway's own keys
        assert bedrock.last_request.headers["x-amz-security-token"] == temporary[2]
        assert temporary[1] not in logs and temporary[2] not in logs


@pytest.mark.parametrize(
    ("model", "route"),
    [
        ("anthropic.claude-x-v1:0", ("invoke", "anthropic.claude-x-v1:0")),
        ("us.anthropic.claude-x-v1:0", ("invoke", "us.anthropic.claude-x-v1:0")),
        ("us-gov.anthropic.claude-x-v1:0", ("invoke", "us-gov.anthropic.claude-x-v1:0")),  # GovCloud's profiles
        ("us-gov.meta.llama3-x-v1:0", ("converse", "us-gov.meta.llama3-x-v1:0")),
        ("converse/us-gov.anthropic.claude-x-v1:0", ("converse", "us-gov.anthropic.claude-x-v1:0")),
        ("invoke/meta.llama3-x-v1:0", ("invoke", "meta.llama3-x-v1:0")),
    ],
)
def test_the_route_a_model_id_takes(model: str, route: tuple[str, str]) -> None:
    """Claude goes to InvokeModel (Anthropic's own body), other models to Converse, unless the config says."""
    assert Bedrock.route(Deployment("m", "bedrock", model, "id")) == route
