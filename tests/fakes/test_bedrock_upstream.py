"""Tests of the fake Bedrock Runtime upstream itself, driven through boto3 (SigV4, rest-json, event streams)."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
import botocore.auth
import botocore.config
import pytest
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError, ConnectionClosedError, EventStreamError, ResponseStreamingError

from .bedrock_upstream import (
    ANTHROPIC_VERSION,
    DEFAULT_ACCESS_KEY,
    DEFAULT_SECRET_KEY,
    TOOL_USE_ID,
    FakeBedrock,
    claude_model_name,
    converse_input_tokens,
    converse_reply_text,
    decode_frames,
    encode_event,
    encode_exception,
    parse_fault,
    signature_for,
)

MODEL = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
TOOLS: Any = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Weather for a city",
                "inputSchema": {"json": {"type": "object", "properties": {"x": {"type": "integer"}}}},
            }
        }
    ]
}
THINKING: Any = {"thinking": {"type": "enabled", "budget_tokens": 1024}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


def claude_body(**extra: Any) -> bytes:
    body = {"anthropic_version": ANTHROPIC_VERSION, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    return json.dumps({**body, **extra}).encode()


def make_client(fake: FakeBedrock, **overrides: Any) -> Any:
    params: dict[str, Any] = {
        "region_name": fake.region,
        "endpoint_url": fake.url,
        "aws_access_key_id": fake.access_key,
        "aws_secret_access_key": fake.secret_key,
        "config": botocore.config.Config(retries={"max_attempts": 1}, read_timeout=5, connect_timeout=5),
        **overrides,
    }
    return boto3.client("bedrock-runtime", **params)


@pytest.fixture(scope="module", autouse=True)
def _hermetic_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_BEARER_TOKEN_BEDROCK", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        yield


@pytest.fixture(scope="module")
def server() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeBedrock) -> FakeBedrock:
    server.clear()
    return server


@pytest.fixture(scope="module")
def module_client(server: FakeBedrock) -> Any:
    return make_client(server)


@pytest.fixture
def client(fake: FakeBedrock, module_client: Any) -> Any:
    return module_client


def signed_post(
    fake: FakeBedrock,
    path: str,
    body: bytes,
    *,
    secret_key: str = DEFAULT_SECRET_KEY,
    region: str | None = None,
    token: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` to ``path`` signed by botocore's SigV4Auth, sent with http.client; (status, headers, body)."""
    request = AWSRequest(method="POST", url=fake.url + path, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(DEFAULT_ACCESS_KEY, secret_key, token), "bedrock", region or fake.region).add_auth(request)
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers=dict(request.headers.items()))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def model_path(model_id: str, operation: str) -> str:
    return f"/model/{quote(model_id, safe='')}/{operation}"


# -- event-stream framing ----------------------------------------------------------------------------------


def test_encode_event_decodes_with_botocore_and_decode_frames() -> None:
    frames = encode_event("messageStart", {"role": "assistant"}) + encode_exception("throttlingException", "slow down")
    buffer = EventStreamBuffer()
    buffer.add_data(frames)
    messages = list(buffer)
    assert [m.headers for m in messages] == [
        {":event-type": "messageStart", ":content-type": "application/json", ":message-type": "event"},
        {":exception-type": "throttlingException", ":content-type": "application/json", ":message-type": "exception"},
    ]
    assert json.loads(messages[0].payload) == {"role": "assistant"}
    assert [(h, json.loads(p)) for h, p in decode_frames(frames)] == [
        (messages[0].headers, {"role": "assistant"}),
        (messages[1].headers, {"message": "slow down"}),
    ]
    corrupt = frames[:-1] + bytes([frames[-1] ^ 1])
    with pytest.raises(ValueError, match="message CRC"):
        decode_frames(corrupt)
    with pytest.raises(ValueError, match="truncated"):
        decode_frames(frames[:-3])


def test_helpers() -> None:
    assert claude_model_name(MODEL) == "claude-3-7-sonnet-20250219"
    assert claude_model_name("anthropic.claude-sonnet-4-6") == "claude-sonnet-4-6"
    assert parse_fault("fault-status-429") == ("status", 429)
    assert parse_fault("us.anthropic.fault-drop") == ("drop", 0)
    assert parse_fault(MODEL) == ("", 0)
    assert converse_reply_text({"messages": [user("a b")]}) == "echo: a b"


# -- Converse ----------------------------------------------------------------------------------------------


def test_converse_text(fake: FakeBedrock, client: Any) -> None:
    body: Any = {"messages": [user("Hello there")], "system": [{"text": "Be brief."}]}
    reply = client.converse(modelId=MODEL, inferenceConfig={"maxTokens": 50, "temperature": 0.5}, **body)
    assert reply["output"]["message"] == {"role": "assistant", "content": [{"text": "echo: Hello there"}]}
    assert reply["stopReason"] == "end_turn"
    usage = reply["usage"]
    assert usage["inputTokens"] == converse_input_tokens(body) > 0
    assert usage["outputTokens"] == 3
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert usage["cacheReadInputTokens"] == usage["cacheWriteInputTokens"] == 0
    assert isinstance(reply["metrics"]["latencyMs"], int)
    request = fake.last_request
    assert request.path == "/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse"
    assert request.json["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.5}
    assert request.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={DEFAULT_ACCESS_KEY}/")


def test_converse_max_tokens_and_stop_sequences(client: Any) -> None:
    reply = client.converse(modelId=MODEL, messages=[user("one two three")], inferenceConfig={"maxTokens": 2})
    assert reply["output"]["message"]["content"] == [{"text": "echo: one"}]
    assert reply["stopReason"] == "max_tokens"
    reply = client.converse(modelId=MODEL, messages=[user("one two three")], inferenceConfig={"stopSequences": ["two"]})
    assert reply["output"]["message"]["content"] == [{"text": "echo: one "}]
    assert reply["stopReason"] == "stop_sequence"


def test_converse_with_tools_round_trip(client: Any) -> None:
    first = client.converse(modelId=MODEL, messages=[user("Weather in Paris?")], toolConfig=TOOLS)
    assert first["stopReason"] == "tool_use"
    content = first["output"]["message"]["content"]
    assert content[0] == {"text": "echo: Weather in Paris?"}
    assert content[1] == {"toolUse": {"toolUseId": TOOL_USE_ID, "name": "get_weather", "input": {"x": 1}}}
    tool_result = {"toolResult": {"toolUseId": TOOL_USE_ID, "content": [{"json": {"temp": 21}}], "status": "success"}}
    messages = [user("Weather in Paris?"), first["output"]["message"], {"role": "user", "content": [tool_result]}]
    second = client.converse(modelId=MODEL, messages=messages, toolConfig=TOOLS)
    assert second["stopReason"] == "end_turn"
    assert second["output"]["message"]["content"] == [{"text": 'echo: tool said: {"temp": 21}'}]
    forced = client.converse(
        modelId=MODEL, messages=[user("hi")], toolConfig={**TOOLS, "toolChoice": {"tool": {"name": "get_weather"}}}
    )
    assert forced["output"]["message"]["content"][-1]["toolUse"]["name"] == "get_weather"


def test_converse_tool_blocks_without_tool_config_are_rejected(client: Any) -> None:
    use = {"toolUse": {"toolUseId": TOOL_USE_ID, "name": "get_weather", "input": {}}}
    result = {"toolResult": {"toolUseId": TOOL_USE_ID, "content": [{"text": "ok"}]}}
    messages = [user("hi"), {"role": "assistant", "content": [use]}, {"role": "user", "content": [result]}]
    with pytest.raises(ClientError) as info:
        client.converse(modelId=MODEL, messages=messages)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "toolConfig" in info.value.response["Error"]["Message"]


def test_converse_alternation_and_first_role(client: Any) -> None:
    for messages in ([{"role": "assistant", "content": [{"text": "hi"}]}], [user("a"), user("b")]):
        with pytest.raises(ClientError) as info:
            client.converse(modelId=MODEL, messages=messages)
        assert info.value.response["Error"]["Code"] == "ValidationException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_converse_stream(client: Any) -> None:
    body: Any = {"messages": [user("Hello streaming world")]}
    events = list(client.converse_stream(modelId=MODEL, **body)["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and events[0]["messageStart"] == {"role": "assistant"}
    assert kinds[-2:] == ["messageStop", "metadata"]
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "echo: Hello streaming world" == converse_reply_text(body)
    assert {"contentBlockStop": {"contentBlockIndex": 0}} in events
    metadata = events[-1]["metadata"]
    assert metadata["usage"]["inputTokens"] == converse_input_tokens(body)
    assert metadata["usage"]["outputTokens"] == 4
    assert metadata["usage"]["totalTokens"] == metadata["usage"]["inputTokens"] + 4
    assert isinstance(metadata["metrics"]["latencyMs"], int)


def test_converse_stream_raw_frames(fake: FakeBedrock) -> None:
    body = json.dumps({"messages": [user("raw frames")], "toolConfig": TOOLS}).encode()
    status, headers, data = signed_post(fake, model_path(MODEL, "converse-stream"), body)
    assert status == 200
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    botocore_frames = [(m.headers, m.payload) for m in buffer]
    frames = decode_frames(data)
    assert frames == botocore_frames
    assert all(h[":message-type"] == "event" and h[":content-type"] == "application/json" for h, _ in frames)
    payloads = [json.loads(p) for _, p in frames]
    assert all(isinstance(p.pop("p"), str) for p in payloads)  # Bedrock-style padding field
    start = next(p for (h, _), p in zip(frames, payloads, strict=True) if h[":event-type"] == "contentBlockStart")
    assert start == {"start": {"toolUse": {"toolUseId": TOOL_USE_ID, "name": "get_weather"}}, "contentBlockIndex": 1}
    fragments = [p["delta"]["toolUse"]["input"] for p in payloads if "toolUse" in p.get("delta", {})]
    assert json.loads("".join(fragments)) == {"x": 1}


def test_reasoning_signatures_round_trip(client: Any) -> None:
    first = client.converse(
        modelId=MODEL, messages=[user("Why is the sky blue?")], additionalModelRequestFields=THINKING, toolConfig=TOOLS
    )
    content = first["output"]["message"]["content"]
    reasoning = content[0]["reasoningContent"]["reasoningText"]
    assert reasoning["text"] == "Let me think about: Why is the sky blue?"
    assert reasoning["signature"] == signature_for(reasoning["text"])
    assert "toolUse" in content[-1]
    result = {"toolResult": {"toolUseId": TOOL_USE_ID, "content": [{"text": "Rayleigh"}]}}
    history = [user("Why is the sky blue?"), first["output"]["message"], {"role": "user", "content": [result]}]
    second = client.converse(modelId=MODEL, messages=history, additionalModelRequestFields=THINKING, toolConfig=TOOLS)
    assert second["output"]["message"]["content"][-1] == {"text": "echo: tool said: Rayleigh"}
    tampered = json.loads(json.dumps(history))
    tampered[1]["content"][0]["reasoningContent"]["reasoningText"]["signature"] = "sig_forged"
    with pytest.raises(ClientError) as info:
        client.converse(modelId=MODEL, messages=tampered, additionalModelRequestFields=THINKING, toolConfig=TOOLS)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "signature" in info.value.response["Error"]["Message"]


def test_reasoning_stream_deltas(client: Any) -> None:
    events = list(
        client.converse_stream(
            modelId=MODEL,
            messages=[user("ponder")],
            additionalModelRequestFields={"reasoning_config": THINKING["thinking"]},
        )["stream"]
    )
    deltas = [e["contentBlockDelta"] for e in events if "contentBlockDelta" in e]
    thought = "".join(d["delta"]["reasoningContent"].get("text", "") for d in deltas if d["contentBlockIndex"] == 0)
    signature = [d["delta"]["reasoningContent"]["signature"] for d in deltas if "signature" in str(d["delta"])]
    assert thought == "Let me think about: ponder"
    assert signature == [signature_for(thought)]
    assert "".join(d["delta"].get("text", "") for d in deltas if d["contentBlockIndex"] == 1) == "echo: ponder"


def test_cache_write_then_read(fake: FakeBedrock, client: Any) -> None:
    fake.clear_cache()
    system: Any = [{"text": "A long and stable system prompt " * 20}, {"cachePoint": {"type": "default"}}]
    body: Any = {"messages": [user("question one")], "system": system}
    first = client.converse(modelId=MODEL, **body)["usage"]
    assert first["cacheWriteInputTokens"] > 0 and first["cacheReadInputTokens"] == 0
    assert first["cacheDetails"] == [{"ttl": "5m", "inputTokens": first["cacheWriteInputTokens"]}]
    second = client.converse(modelId=MODEL, messages=[user("question two")], system=system)["usage"]
    assert second["cacheReadInputTokens"] == first["cacheWriteInputTokens"]
    assert second["cacheWriteInputTokens"] == 0
    # inputTokens excludes cache reads and writes (our reading; unverified against the real service).
    assert first["inputTokens"] == second["inputTokens"] == converse_input_tokens(body) - first["cacheWriteInputTokens"]
    assert second["totalTokens"] == second["inputTokens"] + second["cacheReadInputTokens"] + second["outputTokens"]


# -- InvokeModel (Claude body) -----------------------------------------------------------------------------


def test_invoke_model_claude_body(fake: FakeBedrock, client: Any) -> None:
    reply = client.invoke_model(
        modelId=MODEL, body=claude_body(system="Be brief."), contentType="application/json", accept="application/json"
    )
    assert reply["contentType"] == "application/json"
    message = json.loads(reply["body"].read())
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["id"].startswith("msg_bdrk_")
    assert message["model"] == "claude-3-7-sonnet-20250219"
    assert message["content"] == [{"type": "text", "text": "echo: hi"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] == 2
    headers = reply["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == str(message["usage"]["input_tokens"])
    assert fake.last_request.json["anthropic_version"] == ANTHROPIC_VERSION


def test_invoke_model_with_response_stream(client: Any) -> None:
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    reply = client.invoke_model_with_response_stream(modelId=MODEL, body=claude_body(tools=tools))
    assert reply["contentType"] == "application/json"
    events = [json.loads(e["chunk"]["bytes"]) for e in reply["body"]]
    types = [e["type"] for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert "ping" not in types
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == "echo: hi"
    partial = "".join(e["delta"].get("partial_json", "") for e in events if e["type"] == "content_block_delta")
    assert json.loads(partial) == {"x": 1}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["inputTokenCount"] == events[0]["message"]["usage"]["input_tokens"]
    assert metrics["outputTokenCount"] == events[-2]["usage"]["output_tokens"]
    assert {"invocationLatency", "firstByteLatency"} <= set(metrics)


def test_invoke_stream_raw_chunks_are_base64_events(fake: FakeBedrock) -> None:
    status, headers, data = signed_post(fake, model_path(MODEL, "invoke-with-response-stream"), claude_body())
    assert status == 200 and headers["x-amzn-bedrock-content-type"] == "application/json"
    frames = decode_frames(data)
    assert {h[":event-type"] for h, _ in frames} == {"chunk"}
    decoded = [json.loads(base64.b64decode(json.loads(p)["bytes"])) for _, p in frames]
    assert decoded[0]["type"] == "message_start" and decoded[-1]["type"] == "message_stop"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"model": "claude-3-7-sonnet"}, "extraneous key [model]"),
        ({"stream": True}, "extraneous key [stream]"),
        ({"anthropic_version": None}, "required key [anthropic_version]"),
    ],
)
def test_invoke_model_validation(client: Any, extra: dict[str, Any], needle: str) -> None:
    body = json.loads(claude_body(**extra))
    if body["anthropic_version"] is None:
        del body["anthropic_version"]
    with pytest.raises(ClientError) as info:
        client.invoke_model(modelId=MODEL, body=json.dumps(body))
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert needle in info.value.response["Error"]["Message"]


def test_invoke_model_anthropic_validation_passes_through(client: Any) -> None:
    with pytest.raises(ClientError) as info:
        client.invoke_model(modelId=MODEL, body=claude_body(max_tokens="many"))
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "max_tokens" in info.value.response["Error"]["Message"]


# -- authentication ----------------------------------------------------------------------------------------


def test_wrong_secret_key_is_invalid_signature(fake: FakeBedrock) -> None:
    bad = make_client(fake, aws_secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as info:
        bad.converse(modelId=MODEL, messages=[user("hi")])
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert info.value.response["Error"]["Message"].startswith("The request signature we calculated does not match")
    assert fake.last_request.json["messages"][0]["content"][0]["text"] == "hi"  # recorded before verification


def test_unknown_access_key_is_unrecognized_client(fake: FakeBedrock) -> None:
    bad = make_client(fake, aws_access_key_id="AKIDSOMEBODYELSE")
    with pytest.raises(ClientError) as info:
        bad.converse(modelId=MODEL, messages=[user("hi")])
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_wrong_region_and_tampered_body(fake: FakeBedrock) -> None:
    path = model_path(MODEL, "converse")
    body = json.dumps({"messages": [user("hi")]}).encode()
    status, headers, _ = signed_post(fake, path, body, region="us-west-2")
    assert (status, headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")
    request = AWSRequest(method="POST", url=fake.url + path, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY), "bedrock", fake.region).add_auth(request)
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        forged = body.replace(b"hi", b"yo")
        conn.request("POST", path, body=forged, headers=dict(request.headers.items()))
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("x-amzn-ErrorType")) == (403, "InvalidSignatureException")
        resp.read()
    finally:
        conn.close()
    assert signed_post(fake, path, body)[0] == 200


class _SignEverything(SigV4Auth):  # type: ignore[misc]
    """SigV4 over every header given, ``user-agent`` included (which botocore's own selection skips)."""

    def headers_to_sign(self, request: AWSRequest) -> Any:
        headers = super().headers_to_sign(request)
        headers["user-agent"] = request.headers["User-Agent"]
        return headers


def test_any_signed_header_is_honoured_and_literal_colon_paths_work(fake: FakeBedrock) -> None:
    path = f"/model/{MODEL}/converse"  # ':' left literal, as the Anthropic SDK's Bedrock client sends it
    body = json.dumps({"messages": [user("hi")]}).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "lockgate-test/1.0"}
    request = AWSRequest(method="POST", url=fake.url + path, data=body, headers=headers)
    _SignEverything(Credentials(DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY), "bedrock", fake.region).add_auth(request)
    assert "user-agent" in request.headers["Authorization"]
    for agent, expected in (("lockgate-test/1.0", 200), ("someone-else/2.0", 403)):
        conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
        try:
            conn.request("POST", path, body=body, headers={**dict(request.headers.items()), "User-Agent": agent})
            resp = conn.getresponse()
            assert resp.status == expected, resp.read()
            resp.read()
        finally:
            conn.close()
    assert fake.requests[0].path == path


def test_expired_signature(fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> None:
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=6)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: old)
    status, headers, data = signed_post(fake, model_path(MODEL, "converse"), b'{"messages": []}')
    assert (status, headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")
    assert json.loads(data)["message"].startswith("Signature expired")


def test_missing_authorization(fake: FakeBedrock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        conn.request("POST", model_path(MODEL, "converse"), body=b"{}", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("x-amzn-ErrorType")) == (403, "MissingAuthenticationTokenException")
        resp.read()
    finally:
        conn.close()


def test_session_token() -> None:
    with FakeBedrock(session_token="session-token-xyz") as fake:
        good = make_client(fake, aws_session_token="session-token-xyz")
        assert good.converse(modelId=MODEL, messages=[user("hi")])["stopReason"] == "end_turn"
        request = fake.last_request
        assert request.headers["x-amz-security-token"] == "session-token-xyz"
        assert "x-amz-security-token" in request.headers["authorization"]  # listed in SignedHeaders
        for token in (None, "another-token"):
            bad = make_client(fake, aws_session_token=token)
            with pytest.raises(ClientError) as info:
                bad.converse(modelId=MODEL, messages=[user("hi")])
            assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_api_key_bearer() -> None:
    with FakeBedrock(api_key="bedrock-api-key-1") as fake:
        for key, expected in (("bedrock-api-key-1", 200), ("wrong", 403)):
            conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
            try:
                body = json.dumps({"messages": [user("hi")]})
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                conn.request("POST", model_path(MODEL, "converse"), body=body, headers=headers)
                resp = conn.getresponse()
                assert resp.status == expected
                resp.read()
            finally:
                conn.close()


# -- faults ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "ValidationException"),
        (403, "AccessDeniedException"),
        (404, "ResourceNotFoundException"),
        (408, "ModelTimeoutException"),
        (429, "ThrottlingException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
    ],
)
def test_status_faults(client: Any, status: int, code: str) -> None:
    with pytest.raises(ClientError) as info:
        client.converse(modelId=f"fault-status-{status}", messages=[user("hi")])
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_not_ready_fault(client: Any) -> None:
    with pytest.raises(ClientError) as info:
        client.invoke_model(modelId="us.anthropic.fault-notready", body=claude_body())
    assert info.value.response["Error"]["Code"] == "ModelNotReadyException"


def test_stream_error_fault_raises_during_iteration(client: Any) -> None:
    stream = client.converse_stream(modelId="fault-streamerror", messages=[user("hi")])["stream"]
    seen: list[dict[str, Any]] = []
    with pytest.raises(EventStreamError) as info:
        seen.extend(stream)
    assert seen == [{"messageStart": {"role": "assistant"}}]
    assert info.value.response["Error"]["Code"] == "throttlingException"
    body = client.invoke_model_with_response_stream(modelId="fault-streamerror", body=claude_body())["body"]
    with pytest.raises(EventStreamError):
        list(body)


def test_bad_crc_fault_raises_checksum_mismatch(client: Any) -> None:
    stream = client.converse_stream(modelId="fault-badcrc", messages=[user("hi")])["stream"]
    with pytest.raises(ChecksumMismatch):
        list(stream)


def test_drop_faults(fake: FakeBedrock, client: Any) -> None:
    with pytest.raises(ConnectionClosedError):
        client.converse(modelId="fault-drop", messages=[user("hi")])
    stream = client.converse_stream(modelId="fault-dropmidstream", messages=[user("hi")])["stream"]
    seen: list[Any] = []
    with pytest.raises((urllib3.exceptions.ProtocolError, ResponseStreamingError)):
        seen.extend(stream)
    assert seen == [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "echo:"}, "contentBlockIndex": 0}},
    ]


def test_drop_midstream_non_stream_sends_half_a_body(fake: FakeBedrock) -> None:
    # (boto3 itself swallows the truncated JSON and returns only ResponseMetadata, so check on the wire.)
    body = json.dumps({"messages": [user("hi")]}).encode()
    with pytest.raises(http.client.IncompleteRead) as info:
        signed_post(fake, model_path("fault-dropmidstream", "converse"), body)
    assert info.value.partial.startswith(b'{"output":')


def test_unknown_operation(fake: FakeBedrock) -> None:
    status, headers, _ = signed_post(fake, "/model/x/unknown", b"{}")
    assert (status, headers["x-amzn-errortype"]) == (404, "UnknownOperationException")
