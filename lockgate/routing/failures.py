"""What an attempt's error says: the :class:`~lockgate.routing.plan.Failure` the plan and the health tracker act on.

The upstreams say "too long" and "refused by a content filter" each in their own words; these are the ones
recognised (each seen in the provider's documentation or error reference):

    context window    OpenAI / Azure / vLLM code ``context_length_exceeded`` or "maximum context length";
                      Anthropic "prompt is too long"; Bedrock "input is too long" / "too many input tokens" /
                      "max_tokens ... exceeds"; Gemini "input token count ... exceeds the maximum"
    content policy    OpenAI ``content_policy_violation``; Azure ``content_filter`` / "content management policy"

Anything else at 400/413/422 is the client's (not retried); the rest by status (see
:func:`lockgate.routing.health.failure_kind`).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping

from lockgate.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from lockgate.routing.health import failure_kind
from lockgate.routing.plan import Failure

__all__ = ["classify", "retry_after_of"]

_CONTEXT = re.compile(
    r"context[_ ]length[_ ]exceeded|maximum context length|prompt is too long|input is too long"
    r"|too many input tokens|input token count .{0,40}exceeds the maximum|exceeds? the context window"
    r"|context window (?:size|limit) (?:exceeded|of)",
    re.IGNORECASE,
)
_POLICY = re.compile(r"content_policy_violation|content_filter|content management policy", re.IGNORECASE)


def classify(error: GatewayError) -> Failure:
    """The failure an attempt's error stands for (its ``retry_after`` is read from the error when it has one)."""
    if isinstance(error, UpstreamTimeout):
        return Failure("timeout")
    if isinstance(error, UpstreamUnavailable):
        return Failure("connection")
    if not isinstance(error, UpstreamError):
        return Failure("bad_request")
    text = f"{error.code or ''} {error.message}"
    if error.status in (400, 413, 422) or (error.status == 404 and _CONTEXT.search(text)):
        if _CONTEXT.search(text):
            return Failure("context_window")
        if _POLICY.search(text):
            return Failure("content_policy")
        return Failure("bad_request")
    kind = failure_kind(error.status)
    return Failure(kind or "bad_request", error.retry_after)


def retry_after_of(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the upstream asks to wait: ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    seconds: float | None = None
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "retry-after-ms":
            try:
                return _sane(float(value) / 1000)
            except ValueError:
                continue
        if lowered == "retry-after" and seconds is None:
            text = value.strip()
            try:
                seconds = float(text)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(text)
                except (TypeError, ValueError):
                    continue
                seconds = when.timestamp() - (time.time() if now is None else now)
    return None if seconds is None else _sane(seconds)


def _sane(seconds: float) -> float | None:
    return min(max(seconds, 0.0), 3600.0) if math.isfinite(seconds) else None
