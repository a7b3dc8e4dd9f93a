"""The gateway's error tree, and how each error is shown to a client.

Every failure a client can see is a :class:`GatewayError`; anything else is a bug and is shown as a
generic 500 without details. Each error knows its HTTP status and renders in the client's dialect::

    GatewayError                      status  OpenAI type / code
    ├── BadRequest                    400     invalid_request_error
    │   ├── InvalidJSON               400     invalid_request_error / invalid_json
    │   └── ForbiddenField            400     invalid_request_error / forbidden_field
    ├── AuthenticationFailed          401     invalid_request_error / invalid_api_key
    ├── PermissionDenied              403     permission_error
    ├── NotFound                      404     invalid_request_error / not_found
    │   └── ModelNotFound             404     invalid_request_error / model_not_found
    ├── MethodNotAllowed              405     invalid_request_error
    ├── RequestTimeout                408     timeout_error      (the client sent its body too slowly)
    ├── PayloadTooLarge               413     invalid_request_error / request_too_large
    ├── HeadersTooLarge               431     invalid_request_error / request_header_fields_too_large
    ├── RateLimited                   429     requests or tokens / rate_limit_exceeded  (with retry-after)
    ├── BudgetExceeded                400     budget_exceeded / budget_exceeded          (LiteLLM's shape)
    ├── UpstreamError                 (the upstream's own status, message scrubbed)
    ├── UpstreamUnavailable           502     api_error / upstream_unavailable
    ├── UpstreamTimeout               504     timeout_error / upstream_timeout
    ├── StoreUnavailable              503     api_error / store_unavailable    (the database, for what it alone knows)
    └── InternalError                 500     api_error

Messages are written for the client: they never carry a traceback, an internal path, an upstream URL or a
credential. :func:`scrub` is applied to any text that came from an upstream.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = [
    "AuthenticationFailed",
    "BadRequest",
    "BudgetExceeded",
    "ForbiddenField",
    "GatewayError",
    "HeadersTooLarge",
    "InternalError",
    "InvalidJSON",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "RequestTimeout",
    "StoreUnavailable",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "describe",
    "scrub",
    "upstream_error",
]

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_BEDROCK_TYPES = {
    400: "ValidationException",
    401: "AccessDeniedException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    413: "ValidationException",
    429: "ThrottlingException",
    503: "ServiceUnavailableException",
}


class GatewayError(Exception):
    """An error with a status and a client-safe message."""

    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: list[tuple[bytes, bytes]] = []

    def openai_body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )

    def bedrock_body(self) -> tuple[bytes, bytes]:
        """Bedrock's error shape: a ``message`` body and the ``x-amzn-ErrorType`` header's value."""
        kind = _BEDROCK_TYPES.get(
            self.status, "InternalServerException" if self.status >= 500 else "ValidationException"
        )
        return orjson.dumps({"message": self.message}), kind.encode()

    def anthropic_body(self) -> bytes:
        kind = _ANTHROPIC_TYPES.get(self.status, "api_error" if self.status >= 500 else "invalid_request_error")
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": self.message}})


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class ForbiddenField(BadRequest):
    code = "forbidden_field"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(GatewayError):
    status = 408
    type = "timeout_error"
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class RateLimited(GatewayError):
    """A gateway limit (requests, tokens or requests in flight) is reached; ``retry-after`` says when to retry."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, tokens: bool = False, scope: str = "") -> None:
        super().__init__(message)
        self.scope = scope  # what is limited (``key:...``, ``deployment:<id>``, ...)
        if tokens:
            self.type = "tokens"
        self.headers.append((b"retry-after", str(max(1, int(retry_after + 0.999))).encode()))


class BudgetExceeded(GatewayError):
    """A budget (key, user, team, organisation, end user, or one model's within a key) is spent; a 400 as
    LiteLLM answers, so clients do not retry what only a reset or an admin can change."""

    status = 400
    type = "budget_exceeded"
    code = "budget_exceeded"


class UpstreamError(GatewayError):
    """The upstream answered with an error: keep its status, type and code; scrub its message."""

    type = "api_error"
    retry_after: float | None = None
    """Seconds the upstream asked to wait before trying again (its retry-after), for the retry planner; not shown
    to the client."""


class UpstreamUnavailable(GatewayError):
    status = 502
    type = "api_error"
    code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class StoreUnavailable(GatewayError):
    """The database did not answer a question only it can answer (a key not cached yet): try again shortly."""

    status = 503
    type = "api_error"
    code = "store_unavailable"


class InternalError(GatewayError):
    status = 500
    type = "api_error"
    code = "internal_error"


# Things that must never reach a client or a log when an upstream echoes them back.
_URL = re.compile(r"\b(?:https?|wss?)://[^\s\"'<>]+", re.IGNORECASE)
_KEYLIKE = re.compile(
    r"\b(?:sk|pk|rk|ak|key|api|tok)[-_][A-Za-z0-9*._\-]{6,}"  # sk-..., sk-proj-..., partially masked sk-ab****yz
    r"|\bAKIA[0-9A-Z]{12,}"  # AWS access key ids
    r"|\bAIza[0-9A-Za-z_\-]{20,}"  # Google API keys
    r"|\bBearer\s+[A-Za-z0-9._\-~+/]+=*",
    re.IGNORECASE,
)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove URLs, credentials and anything that looks like one from upstream text."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "*****")
    text = _URL.sub("[url]", text)
    text = _KEYLIKE.sub("*****", text)
    if len(text) > 2000:
        text = text[:2000] + "..."
    return text


def describe(exc: BaseException) -> str:
    """An unexpected exception for a log line: its type and scrubbed message, never a traceback or a path."""
    return f"{type(exc).__name__}: {scrub(str(exc))[:500]}"


def upstream_error(status: int, body: bytes, secrets: tuple[str, ...] = ()) -> UpstreamError:
    """Translate an upstream's error response (any dialect) into an :class:`UpstreamError`."""
    message, etype, code, param = f"upstream returned HTTP {status}", None, None, None
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):  # Gemini wraps errors in a list
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            if isinstance(err.get("message"), str):
                message = err["message"]
            etype = err.get("type") if isinstance(err.get("type"), str) else None
            raw_code = err.get("code")
            code = str(raw_code) if isinstance(raw_code, str | int) else None
            param = err.get("param") if isinstance(err.get("param"), str) else None
        elif isinstance(err, str):
            message = err
    error = UpstreamError(scrub(message, secrets), status=status, code=code, param=param)
    error.type = etype or ("invalid_request_error" if 400 <= status < 500 else "api_error")
    return error
