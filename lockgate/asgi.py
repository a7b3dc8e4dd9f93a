"""The ASGI vocabulary the gateway uses: a small request object and response helpers.

No framework: the request path is short and every step is visible here and in :mod:`lockgate.app`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from lockgate.auth import Principal
from lockgate.errors import PayloadTooLarge, RequestTimeout
from lockgate.pricing import ANY_KIND, Kinds

if TYPE_CHECKING:
    from lockgate.governance import Admitted
    from lockgate.prompts import PromptCapture

__all__ = ["ASGIApp", "Message", "Receive", "Request", "Scope", "Send", "new_request_id"]

_ID_PREFIX = os.urandom(6).hex()  # per process (each worker imports after the fork): ids never repeat across them
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(3), "big"))


def new_request_id() -> str:
    """A request id, unique across processes and restarts: 48 random bits per process and a counter (24 hex
    digits, as os.urandom(12).hex() gave, without a getrandom system call per request). Not a secret."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}"


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"
BODY_READ_TIMEOUT = 30.0


class Request:
    """One client request: raw ASGI parts plus what the gateway works out about it."""

    __slots__ = (
        "admitted", "capture", "charged", "headers", "kinds", "method", "path", "principal", "receive", "request_id",
        "response_headers", "scope", "send", "started",
    )  # fmt: skip

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[str, str] = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.request_id = new_request_id()
        self.principal: Principal | None = None
        self.started = time.perf_counter()
        self.response_headers: list[tuple[bytes, bytes]] = [(b"x-request-id", self.request_id.encode())]
        self.capture: PromptCapture | None = None
        """The prompt and answer, when the spend ledger stores them for this request (:mod:`lockgate.prompts`)."""
        self.admitted: Admitted | None = None
        """What the request was admitted under (governance.py), once it was."""
        self.charged = False
        """Its spend went to the ledger with its row (Gateway.emit): settling must not add it again."""
        self.kinds: Kinds = ANY_KIND
        """What its body may be billed for beside text (audio, images): what an estimated cost counts."""

    def cancel_on_disconnect(self) -> bool:
        """Have this task cancelled if the client disconnects before the response is complete (served by
        :class:`lockgate.corking.CorkedHttpToolsProtocol`, lockgate's HTTP/1.1 protocol); False when the server
        cannot (another ASGI server): then the request runs to its end."""
        cycle = getattr(self.receive, "__self__", None)
        if cycle is None or not hasattr(cycle, "disconnected"):
            return False
        cycle.lockgate_task = asyncio.current_task()
        return True

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters, the first value of each."""
        raw = self.scope.get("query_string", b"").decode("latin-1")
        return {k: v[0] for k, v in parse_qs(raw).items()} if raw else {}

    @property
    def disconnected(self) -> bool:
        """The client has gone (as far as the server knows)."""
        return bool(getattr(getattr(self.receive, "__self__", None), "disconnected", False))

    async def body(self, limit: int) -> bytes:
        """The whole body, refused with 413 past ``limit`` bytes and 408 when it arrives too slowly."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        message = await self.receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
            return body  # the common case: one message, no timer needed
        parts = [body]
        size = len(body)
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT):
                while message.get("more_body", False):
                    message = await self.receive()
                    if message["type"] == "http.disconnect":
                        raise RequestTimeout("The client disconnected before sending its whole body.")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
                    parts.append(chunk)
        except TimeoutError as exc:
            raise RequestTimeout("The request body was not received in time.") from exc
        return b"".join(parts)

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes = JSON,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        out = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        out += self.response_headers
        if headers:
            out += headers
        await self.send({"type": "http.response.start", "status": status, "headers": out})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
