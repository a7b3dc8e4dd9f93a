"""Acceptance: the real Claude Code CLI works through lockgate to Claude on AWS Bedrock (a fake that checks SigV4).

The CLI (pinned in ``tests/e2e/package.json``, installed once by :func:`claude_binary`) runs in print mode with the
settings a Claude Code user sets for a gateway: ``ANTHROPIC_BASE_URL``, ``ANTHROPIC_AUTH_TOKEN``, ``ANTHROPIC_MODEL``.
Between the CLI and lockgate sits a recording :class:`Tap` -- the only place the CLI's own headers
(``X-Claude-Code-Session-Id``, ``anthropic-beta``) can be seen. Each case is one CLI run; the tests below check it
from four sides: the CLI's stream-json output, what the CLI sent, lockgate's request log, and what reached Bedrock.

The fake answers ``echo: <last user text>`` with a signed thinking block (Claude Code asks for thinking) and a
``toolUse`` of the first tool offered, so every run goes through Claude Code's tool loop: the tool fails its input
validation, the CLI sends the error back as a tool result together with the signed thinking block (which the fake
verifies), and the second answer ends the run.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.claude_code import (
    ClaudeRun,
    InstallError,
    Tap,
    TappedRequest,
    claude_binary,
    claude_env,
    pinned_version,
    run_claude,
)
from tests.fakes.bedrock_upstream import FakeBedrock, RecordedRequest, converse_to_messages
from tests.fakes.bedrock_upstream import signature_for as thinking_signature
from tests.support import MASTER_KEY, GatewayProcess

ACCESS_KEY = "AKIDCLAUDECODEE2E01"
SECRET_KEY = "claude-code-e2e-secret-canary-93d1"
REGION = "us-east-1"
CLAUDE = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
PROMPT = "Say hello to Bedrock through lockgate."
CLI_TIMEOUT = 90.0
#: The beta flags AWS documents for Claude on Bedrock (as collected in LiteLLM PR #19877, which filters to them), plus
#: claude-code-20250219, which some Bedrock models accept (claude-code #49648). Bedrock answers other flags with 400
#: "invalid beta flag" (LiteLLM #20021, #16561; PR #19373 for advanced-tool-use-2025-11-20).
BEDROCK_BETAS = frozenset(
    {
        "claude-code-20250219",
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "token-efficient-tools-2025-02-19",
        "interleaved-thinking-2025-05-14",
        "output-128k-2025-02-19",
        "dev-full-thinking-2025-05-14",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "effort-2025-11-24",
        "tool-search-tool-2025-10-19",
        "tool-examples-2025-10-29",
    }
)


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # ANTHROPIC_MODEL
    args: tuple[str, ...]  # extra CLI arguments
    operation: str  # the Bedrock operation every request must use
    group: str | None  # the model group lockgate must log (None: an alias, the group name is not asserted)


CASES = (
    Case("converse", "claude-sonnet-bedrock", (), "converse-stream", "claude-sonnet-bedrock"),
    Case("invoke", "claude-sonnet-bedrock-invoke", (), "invoke-with-response-stream", "claude-sonnet-bedrock-invoke"),
    # `--model haiku` makes Claude Code ask for its own haiku id, which no config lists: the '*haiku*' alias.
    Case("haiku-alias", "claude-sonnet-bedrock", ("--model", "haiku"), "converse-stream", None),
)


def deployment(name: str, model: str, endpoint: str) -> str:
    return (
        f"  - model_name: {name}\n    litellm_params:\n      model: {model}\n"
        "      aws_access_key_id: os.environ/AWS_ACCESS_KEY_ID\n"
        "      aws_secret_access_key: os.environ/AWS_SECRET_ACCESS_KEY\n"
        f"      aws_region_name: {REGION}\n      aws_bedrock_runtime_endpoint: {endpoint}\n"
    )


@pytest.fixture(scope="module")
def claude() -> Path:
    try:
        return claude_binary()
    except InstallError as exc:
        if "node and npm" in str(exc):
            pytest.skip(str(exc))
        raise


@pytest.fixture(scope="module")
def fake_bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock(access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(fake_bedrock: FakeBedrock) -> Iterator[GatewayProcess]:
    config = (
        "model_list:\n"
        + deployment("claude-sonnet-bedrock", f"bedrock/converse/{CLAUDE}", fake_bedrock.url)
        + deployment("claude-sonnet-bedrock-invoke", f"bedrock/invoke/{CLAUDE}", fake_bedrock.url)
        + "router_settings:\n  model_group_alias:\n    '*haiku*': claude-sonnet-bedrock\n"
    )
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with GatewayProcess(config, env=env) as gw:
        yield gw
        logs = gw.logs()
    assert SECRET_KEY not in logs


@pytest.fixture(scope="module")
def tap(gateway: GatewayProcess) -> Iterator[Tap]:
    with Tap(gateway.url) as tapped:
        yield tapped


@dataclass
class Session:
    """One CLI run and everything recorded about it."""

    case: Case
    run: ClaudeRun
    sent: list[TappedRequest]  # what the CLI sent
    records: list[dict[str, Any]]  # lockgate's request log lines for it
    upstream: list[RecordedRequest]  # what reached Bedrock
    logs: str

    def explain(self) -> str:
        return (
            f"exit {self.run.returncode} in {self.run.seconds:.1f}s\nstdout tail:\n{self.run.stdout[-2000:]}\n"
            f"stderr:\n{self.run.stderr[-2000:]}\ngateway log tail:\n{self.logs[-3000:]}"
        )


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def session(
    request: pytest.FixtureRequest,
    claude: Path,
    fake_bedrock: FakeBedrock,
    gateway: GatewayProcess,
    tap: Tap,
    tmp_path_factory: pytest.TempPathFactory,
) -> Session:
    case: Case = request.param
    home = tmp_path_factory.mktemp(f"claude-{case.name}")
    workdir = home / "project"
    workdir.mkdir()
    fake_bedrock.clear()
    tap.clear()
    before = len(gateway.records())
    env = claude_env(home, base_url=tap.url, token=MASTER_KEY, model=case.model)
    run = run_claude(claude, PROMPT, cwd=workdir, env=env, args=(*case.args, "--max-turns", "3"), timeout=CLI_TIMEOUT)
    sent = tap.recorded()
    deadline = time.monotonic() + 5
    while len(gateway.records()) - before < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    return Session(case, run, sent, gateway.records()[before:], list(fake_bedrock.requests), gateway.logs())


def anthropic_view(req: RecordedRequest) -> dict[str, Any]:
    """What reached Bedrock, as an Anthropic Messages body (Converse translated back the way the fake reads it)."""
    if "/converse" in req.path:
        return converse_to_messages(req.json, CLAUDE)
    return dict(req.json)


def forwarded_betas(req: RecordedRequest) -> list[str]:
    """The beta flags lockgate put into a Bedrock request body."""
    if "/converse" in req.path:
        return list(req.json.get("additionalModelRequestFields", {}).get("anthropic_beta", []))
    return list(req.json.get("anthropic_beta", []))


def client_betas(req: TappedRequest) -> list[str]:
    return [flag.strip() for flag in req.headers.get("anthropic-beta", "").split(",") if flag.strip()]


def has_tool_result(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


# -- the CLI's side ---------------------------------------------------------------------------------------


def test_cli_run_succeeds_with_the_bedrock_reply(session: Session) -> None:
    run = session.run
    assert run.returncode == 0, session.explain()
    result = run.result
    assert result["subtype"] == "success" and result["is_error"] is False, session.explain()
    assert result["result"].startswith("echo: "), result["result"]  # the fake's answer to the tool result
    assert result["num_turns"] >= 2  # tool_use, then the final answer
    if session.case.group is not None:
        assert run.init["model"] == session.case.model
    texts = [b["text"] for b in run.blocks("assistant", "text")]
    assert texts and texts[0].startswith("echo: ") and texts[0].endswith(PROMPT), texts[:1]


def test_cli_sent_claude_code_requests(session: Session) -> None:
    """What the CLI itself put on the wire (seen by the tap): route, auth, Claude Code's headers and body."""
    sent = session.sent
    assert sent, session.explain()
    session_id = session.run.init["session_id"]
    for req in sent:
        assert (req.method, req.path_qs) == ("POST", "/v1/messages?beta=true")
        assert req.headers["authorization"] == f"Bearer {MASTER_KEY}" and "x-api-key" not in req.headers
        assert req.headers["x-claude-code-session-id"] == session_id
        assert req.headers["x-app"] == "cli"
        assert req.headers["user-agent"].startswith(f"claude-cli/{pinned_version()} ")
        assert req.headers["anthropic-version"] == "2023-06-01"
        assert "claude-code-20250219" in client_betas(req)
        body = req.json
        assert body["stream"] is True and body["tools"] and isinstance(body.get("thinking"), dict)
        # Claude Code 2.1.330 sends its environment info as a role "system" message inside `messages`.
        assert any(m["role"] == "system" for m in body["messages"])
    if session.case.name == "haiku-alias":
        assert "haiku" in sent[0].json["model"]


# -- lockgate's side --------------------------------------------------------------------------------------


def test_gateway_logged_every_request_with_usage(session: Session) -> None:
    records = session.records
    assert len(records) == len(session.sent), session.explain()
    for record in records:
        assert record["route"] == "/v1/messages"
        assert record["status"] == 200 and record["error_type"] is None, record
        assert record["provider"] == "bedrock" and record["stream"] is True and record["attempts"] == 1
        usage = record["usage"]
        assert usage is not None, record
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        if session.case.group is not None:
            assert record["model_group"] == session.case.group
    assert len({r["deployment_id"] for r in records}) == 1


# -- Bedrock's side ---------------------------------------------------------------------------------------


def test_requests_reached_bedrock_signed_and_streaming(session: Session) -> None:
    upstream = session.upstream
    assert len(upstream) == len(session.sent), session.explain()
    for req in upstream:
        assert req.path == f"/model/{quote(CLAUDE, safe='')}/{session.case.operation}"
        # The fake recomputed the SigV4 signature (a 403 otherwise, and the run would have failed).
        assert req.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
        assert f"/{REGION}/bedrock/aws4_request" in req.headers["authorization"]
        body = anthropic_view(req)
        # The mid-conversation system message was moved to Bedrock's system prompt.
        roles = [m["role"] for m in body["messages"]]
        assert roles[0] == "user" and "system" not in roles and all(a != b for a, b in itertools.pairwise(roles))
        assert any("# Environment" in block["text"] for block in body["system"])
        if "/invoke" in req.path:
            assert req.json["anthropic_version"] == "bedrock-2023-05-31" and "model" not in req.json


def test_client_beta_flags_reach_bedrock(session: Session) -> None:
    """The anthropic-beta header becomes the body's anthropic_beta (Converse: additionalModelRequestFields)."""
    for client, req in zip(session.sent, session.upstream, strict=True):
        forwarded = forwarded_betas(req)
        assert "interleaved-thinking-2025-05-14" in forwarded
        sent = set(client_betas(client))
        if "advanced-tool-use-2025-11-20" in sent:  # its name on Bedrock
            sent.add("tool-search-tool-2025-10-19")
        assert set(forwarded) <= sent


def test_only_bedrock_supported_beta_flags_reach_bedrock(session: Session) -> None:
    for req in session.upstream:
        assert set(forwarded_betas(req)) <= BEDROCK_BETAS, sorted(set(forwarded_betas(req)) - BEDROCK_BETAS)


def test_tool_loop_sends_the_tool_result_and_signed_thinking_back(session: Session) -> None:
    run, sent, upstream = session.run, session.sent, session.upstream
    first_tool = sent[0].json["tools"][0]["name"]
    uses = run.blocks("assistant", "tool_use")
    assert [u["name"] for u in uses] == [first_tool], session.explain()
    results = run.blocks("user", "tool_result")
    assert [r["tool_use_id"] for r in results] == [uses[0]["id"]]

    first, follow_ups = anthropic_view(upstream[0]), [anthropic_view(r) for r in upstream[1:]]
    assert not has_tool_result(first["messages"][-1])
    with_result = [b for b in follow_ups if has_tool_result(b["messages"][-1])]
    assert with_result, "no request with a tool result reached Bedrock"
    follow_up = with_result[0]
    assert any(
        b.get("tool_use_id") == uses[0]["id"] for b in follow_up["messages"][-1]["content"] if isinstance(b, dict)
    )
    # The assistant turn went back with its thinking block first, signature intact (the fake verified it: 200).
    assistant = [m for m in follow_up["messages"] if m["role"] == "assistant"][-1]
    thinking = assistant["content"][0]
    assert thinking["type"] == "thinking" and thinking["signature"] == thinking_signature(thinking["thinking"])
    assert [b["type"] for b in assistant["content"]][-1] == "tool_use"
    assert all(r["status"] == 200 for r in session.records)
    assert run.result["subtype"] == "success"
