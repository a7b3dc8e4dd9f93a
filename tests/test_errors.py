"""Error rendering and scrubbing: what a client sees of a failure."""

from __future__ import annotations

import json

import pytest

from lockgate.errors import BadRequest, ModelNotFound, UpstreamTimeout, scrub, upstream_error


def test_openai_and_anthropic_shapes() -> None:
    error = ModelNotFound("no such model", param="model")
    assert json.loads(error.openai_body()) == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert json.loads(error.anthropic_body()) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such model"},
    }
    assert json.loads(UpstreamTimeout("slow").anthropic_body())["error"]["type"] == "timeout_error"
    assert BadRequest("x").status == 400 and UpstreamTimeout("x").status == 504


@pytest.mark.parametrize(
    "text",
    [
        "Incorrect API key provided: sk-up****cret. You can find your API key at https://platform.openai.com/account.",
        "call to http://10.0.0.5:8000/v1/chat/completions?key=abc failed",
        "bad token sk-proj-AbCdEf0123456789xyz",
        "Authorization: Bearer abc.def.ghi",
        "AWS key AKIAIOSFODNN7EXAMPLE rejected",
        "google key AIzaSyA-1234567890abcdefghijklmnop",
    ],
)
def test_scrub_removes_urls_and_credentials(text: str) -> None:
    cleaned = scrub(text)
    for leak in ("sk-up", "http", "10.0.0.5", "sk-proj", "abc.def", "AKIA", "AIza"):
        assert leak not in cleaned


def test_scrub_removes_configured_secrets_of_any_shape() -> None:
    assert "hunter2hunter2" not in scrub("password hunter2hunter2 was wrong", ("hunter2hunter2",))


def test_upstream_error_keeps_status_type_code_and_message() -> None:
    body = json.dumps({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})
    error = upstream_error(429, body.encode())
    assert (error.status, error.type, error.code, error.message) == (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>502 Bad Gateway</html>", "upstream returned HTTP 502"),
        (b'[{"error": {"code": 400, "message": "Gemini says no", "status": "INVALID_ARGUMENT"}}]', "Gemini says no"),
        (b'{"error": "plain string"}', "plain string"),
        (b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}', "Overloaded"),
    ],
)
def test_upstream_error_shapes(body: bytes, message: str) -> None:
    assert upstream_error(502, body).message == message


def test_long_upstream_messages_are_truncated() -> None:
    assert len(scrub("x" * 10_000)) < 2100
