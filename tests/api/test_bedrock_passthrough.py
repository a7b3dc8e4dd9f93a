"""/bedrock pass-through: boto3 pointed at lockgate with a lockgate key; the gateway re-signs with its own AWS
credentials, passes bodies and event-stream frames through untouched, and logs usage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from tests.fakes.bedrock_upstream import FakeBedrock
from tests.support import MASTER_KEY, GatewayProcess

ACCESS_KEY = "AKIDPASSTHROUGH01"
SECRET_KEY = "passthrough-secret-canary-9d2f"
CLAUDE = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[GatewayProcess, FakeBedrock]]:
    with FakeBedrock(access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1") as fake:
        config = (
            "model_list:\n  - model_name: claude-bedrock\n    litellm_params:\n"
            f"      model: bedrock/converse/{CLAUDE}\n      aws_access_key_id: os.environ/AWS_ACCESS_KEY_ID\n"
            "      aws_secret_access_key: os.environ/AWS_SECRET_ACCESS_KEY\n      aws_region_name: us-east-1\n"
            f"      aws_bedrock_runtime_endpoint: {fake.url}\n"
        )
        env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with GatewayProcess(config, env=env) as gw:
            yield gw, fake
            logs = gw.logs()
        assert SECRET_KEY not in logs


def client(gw: GatewayProcess, token: str = MASTER_KEY, *, signed: bool = True) -> Any:
    """boto3 pointed at lockgate. It signs with made-up AWS credentials (or not at all) and presents its lockgate
    key in a header; botocore's own Bedrock API-key support (AWS_BEARER_TOKEN_BEDROCK) needs HTTPS."""
    runtime = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=gw.url + "/bedrock",
        aws_access_key_id="AKIDCLIENTSIDE00000",
        aws_secret_access_key="client-side-secret-not-for-upstream",
        config=botocore.config.Config(
            retries={"max_attempts": 1}, signature_version="v4" if signed else botocore.UNSIGNED
        ),
    )

    def add_key(request: Any, **_: Any) -> None:
        request.headers["x-api-key"] = token

    runtime.meta.events.register("before-send.bedrock-runtime.*", add_key)
    return runtime


def test_converse_is_resigned_and_counted(gateway: tuple[GatewayProcess, FakeBedrock]) -> None:
    gw, fake = gateway
    runtime = client(gw)
    reply = runtime.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "native request"}]}])
    assert reply["output"]["message"]["content"][0]["text"] == "echo: native request"
    sent = fake.last_request
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=" + ACCESS_KEY)  # re-signed
    assert MASTER_KEY not in json.dumps(sent.headers)  # the client's credentials stayed at the gateway
    assert "AKIDCLIENTSIDE" not in json.dumps(sent.headers)  # and so did its own signature
    record = gw.records()[-1]
    assert record["route"].startswith("/bedrock/model/") and record["usage"]["prompt_tokens"] > 0


def test_converse_stream_frames_pass_through(gateway: tuple[GatewayProcess, FakeBedrock]) -> None:
    gw, _ = gateway
    runtime = client(gw, signed=False)
    response = runtime.converse_stream(
        modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "stream natively"}]}]
    )
    text = "".join(
        e["contentBlockDelta"]["delta"].get("text", "") for e in response["stream"] if "contentBlockDelta" in e
    )
    assert text == "echo: stream natively"
    assert gw.records()[-1]["usage"]["completion_tokens"] > 0


def test_invoke_model_by_group_name(gateway: tuple[GatewayProcess, FakeBedrock]) -> None:
    gw, _ = gateway
    runtime = client(gw)
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
    reply = runtime.invoke_model(modelId="claude-bedrock", body=json.dumps(body))
    assert json.loads(reply["body"].read())["content"][0]["text"] == "echo: hi"


def test_refused_without_a_lockgate_key_and_unknown_models(gateway: tuple[GatewayProcess, FakeBedrock]) -> None:
    gw, _ = gateway
    with pytest.raises(ClientError) as denied:
        client(gw, token="not-a-key").converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(ClientError) as missing:
        client(gw).converse(
            modelId="anthropic.unconfigured-v1:0", messages=[{"role": "user", "content": [{"text": "x"}]}]
        )
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
