"""Shared bits of the bench/stack candidate proxies: upstream URL, the auth check, CLI port parsing."""

from __future__ import annotations

import hmac
import os
import sys

UPSTREAM_URL = os.environ.get("LOCKGATE_BENCH_UPSTREAM", "http://127.0.0.1:9101/v1/chat/completions")
CHAT_PATH = "/v1/chat/completions"
MASTER_AUTH = b"Bearer " + os.environ.get("LOCKGATE_BENCH_MASTER_KEY", "sk-master").encode()
UNAUTHORIZED_BODY = b'{"error":{"message":"invalid api key","type":"auth_error","code":401}}'
NOT_FOUND_BODY = b'{"error":{"message":"not found","type":"invalid_request_error","code":404}}'
BAD_GATEWAY_BODY = b'{"error":{"message":"upstream error","type":"upstream_error","code":502}}'
JSON_CT = b"application/json"


def auth_ok(value: bytes | None) -> bool:
    """Constant-time compare of the Authorization header value against the master key."""
    return value is not None and hmac.compare_digest(value, MASTER_AUTH)


def port_from_argv(default: int = 9200) -> int:
    """``--port N`` from argv (kept dependency-free and tiny on purpose)."""
    args = sys.argv[1:]
    if "--port" in args:
        return int(args[args.index("--port") + 1])
    return int(os.environ.get("PORT", default))
