"""classify: each provider's own words for "too long" and "filtered"; retry-after in its three forms."""

from __future__ import annotations

import pytest

from lockgate.errors import BadRequest, UpstreamError, UpstreamTimeout, UpstreamUnavailable, upstream_error
from lockgate.routing.failures import classify, retry_after_of


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, b'{"error": {"message": "This model\'s maximum context length is 128000 tokens.", '
              b'"code": "context_length_exceeded"}}', "context_window"),
        (400, b'{"type": "error", "error": {"type": "invalid_request_error", '
              b'"message": "prompt is too long: 210000 tokens > 200000 maximum"}}', "context_window"),
        (400, b'{"message": "Input is too long for requested model."}', "context_window"),
        (400, b'[{"error": {"code": 400, "message": "The input token count (1200000) exceeds the maximum number '
              b'of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}]', "context_window"),
        (400, b'{"error": {"message": "filtered", "code": "content_filter"}}', "content_policy"),
        (400, b'{"error": {"message": "Your request was rejected as a result of our safety system.", '
              b'"code": "content_policy_violation"}}', "content_policy"),
        (400, b'{"error": {"message": "Invalid value for temperature"}}', "bad_request"),
        (422, b'{"detail": "bad"}', "bad_request"),
        (429, b"{}", "rate_limit"),
        (401, b"{}", "auth"),
        (404, b'{"error": {"message": "model not found"}}', "not_found"),
        (500, b"{}", "server"),
        (529, b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}', "server"),
    ],
)  # fmt: skip
def test_upstream_errors(status: int, body: bytes, kind: str) -> None:
    assert classify(upstream_error(status, body)).kind == kind


def test_the_gateways_own_errors() -> None:
    assert classify(UpstreamTimeout("slow")).kind == "timeout"
    assert classify(UpstreamUnavailable("refused")).kind == "connection"
    assert classify(BadRequest("no")).kind == "bad_request"


def test_retry_after_travels_with_the_error() -> None:
    error = UpstreamError("limited", status=429)
    error.retry_after = 3.0
    assert classify(error).retry_after == 3.0


def test_retry_after_forms() -> None:
    assert retry_after_of({"Retry-After": "7"}) == 7.0
    assert retry_after_of({"retry-after": "2", "retry-after-ms": "1500"}) == 1.5
    assert retry_after_of({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert retry_after_of({"retry-after": "soon"}) is None
    assert retry_after_of({"retry-after": "-5"}) == 0.0
    assert retry_after_of({"retry-after": "1e9"}) == 3600.0
    assert retry_after_of({"retry-after": "nan"}) is None
    assert retry_after_of({}) is None
