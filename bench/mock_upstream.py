"""Very fast mock OpenAI upstream for benchmarks (raw asyncio Protocol + httptools, uvloop if present).

Run: ``python bench/mock_upstream.py --port N [--delay-ms D] [--stream-gap-ms G]``

Endpoints (HTTP/1.1, keep-alive, pipelining-safe):

* ``POST /v1/chat/completions`` -> a canned ``chat.completion`` JSON; if the body contains
  ``"stream": true`` (cheap bytes check) -> an SSE stream (``text/event-stream``, chunked) of
  10 ``chat.completion.chunk`` events, one usage chunk (``choices: []``), then ``data: [DONE]``.
* ``POST /v1/embeddings`` -> a small embedding list.
* anything else -> 404 JSON error.

``--delay-ms`` delays every response by D ms with an asyncio timer (never blocks the loop), for
open-loop tests. A request body holding ``"mock_delay_ms": N`` overrides it for that one request
(lets a benchmark drive a slow upstream *through* a proxy that forwards the body unchanged).
``--stream-gap-ms`` spaces the SSE events G ms apart (default 0), so that a proxy that buffers
instead of passing chunks through shows up in time-to-first-byte.
Prints ``READY <port>`` on stdout once listening. All response bytes are precomputed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools

MODEL = "gpt-4o-mini-2024-07-18"
CREATED = 1732406400

_ANSWER = "Hello! The capital of France is Paris. Is there anything else you would like to know?"
_CHAT = {
    "id": "chatcmpl-AXbench0000000000000000000001",
    "object": "chat.completion",
    "created": CREATED,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": _ANSWER,
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 131,
        "completion_tokens": 20,
        "total_tokens": 151,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_0ba0d124f1",
}

_EMBED = {
    "object": "list",
    "data": [
        {
            "object": "embedding",
            "index": 0,
            "embedding": [round(((i * 37) % 200 - 100) / 1000, 4) for i in range(16)],
        }
    ],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}

_WORDS = ["Hello", "!", " The", " capital", " of", " France", " is", " Paris", ".", " Anything else?"]
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_DELAY_RE = re.compile(rb'"mock_delay_ms"\s*:\s*([0-9.]+)')


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _response(status: bytes, ctype: bytes, body: bytes, keep_alive: bool) -> bytes:
    conn = b"keep-alive" if keep_alive else b"close"
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: "
        + ctype
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: "
        + conn
        + b"\r\n\r\n"
        + body
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse_events() -> list[bytes]:
    base = {
        "id": "chatcmpl-AXbenchstream0000000000000001",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_0ba0d124f1",
    }
    events: list[bytes] = []
    for i, word in enumerate(_WORDS):
        delta: dict[str, object] = {"content": word}
        if i == 0:
            delta = {"role": "assistant", "content": word, "refusal": None}
        last = i == len(_WORDS) - 1
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if last else None}
        events.append(b"data: " + _dumps({**base, "choices": [choice], "usage": None}) + b"\n\n")
    usage = {
        "prompt_tokens": 131,
        "completion_tokens": len(_WORDS),
        "total_tokens": 131 + len(_WORDS),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    events.append(b"data: " + _dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


CHAT_BODY = _dumps(_CHAT)
EMBED_BODY = _dumps(_EMBED)
NOT_FOUND_BODY = _dumps({"error": {"message": "not found", "type": "invalid_request_error", "code": None}})
SSE_CHUNKS = [_chunk(e) for e in _sse_events()]
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: %s\r\n\r\n"
)
SSE_END = b"0\r\n\r\n"
_JSON = b"application/json"
CANNED: dict[tuple[bytes, bool], bytes] = {
    (body_key, ka): _response(status, ctype, body, ka)
    for body_key, status, ctype, body in (
        (b"chat", b"200 OK", _JSON, CHAT_BODY),
        (b"embed", b"200 OK", _JSON, EMBED_BODY),
        (b"404", b"404 Not Found", _JSON, NOT_FOUND_BODY),
    )
    for ka in (True, False)
}


class MockProtocol(asyncio.Protocol):
    """One connection: parse with httptools, answer strictly in request order."""

    def __init__(self, delay: float, gap: float) -> None:
        self.delay = delay
        self.gap = gap
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        # Ordered work for pipelined requests: each item writes one full response, then calls done().
        self.queue: deque[tuple[float, Callable[[], None]]] = deque()
        self.busy = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_response(b"400 Bad Request", _JSON, b"{}", False))
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = bool(self.parser.should_keep_alive())
        method = self.parser.get_method()
        url = self.url
        body = b"".join(self.body)
        delay = self.delay
        if b"mock_delay_ms" in body and (m := _DELAY_RE.search(body)):
            delay = float(m.group(1)) / 1000.0
        if method == b"POST" and url.startswith(b"/v1/chat/completions"):
            if _STREAM_RE.search(body):
                self._enqueue(delay, lambda: self._stream(keep_alive))
                return
            payload = CANNED[(b"chat", keep_alive)]
        elif method == b"POST" and url.startswith(b"/v1/embeddings"):
            payload = CANNED[(b"embed", keep_alive)]
        else:
            payload = CANNED[(b"404", keep_alive)]
        self._enqueue(delay, lambda: self._write_done(payload, keep_alive))

    # response scheduling
    def _enqueue(self, delay: float, job: Callable[[], None]) -> None:
        self.queue.append((delay, job))
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.queue or self.transport is None:
            self.busy = False
            return
        self.busy = True
        delay, job = self.queue.popleft()
        if delay > 0:
            self.loop.call_later(delay, job)
        else:
            job()

    def _write_done(self, payload: bytes, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(payload)
        if not keep_alive:
            self.transport.close()
            return
        self._next()

    def _stream(self, keep_alive: bool) -> None:
        if self.transport is None:
            return
        head = SSE_HEAD % (b"keep-alive" if keep_alive else b"close")
        if self.gap <= 0:
            self._write_done(head + b"".join(SSE_CHUNKS) + SSE_END, keep_alive)
            return
        self.transport.write(head + SSE_CHUNKS[0])
        self._stream_rest(1, keep_alive)

    def _stream_rest(self, i: int, keep_alive: bool) -> None:
        def step() -> None:
            if self.transport is None:
                return
            if i < len(SSE_CHUNKS) - 1:
                self.transport.write(SSE_CHUNKS[i])
                self._stream_rest(i + 1, keep_alive)
            else:
                self._write_done(SSE_CHUNKS[i] + SSE_END, keep_alive)

        self.loop.call_later(self.gap, step)


async def serve(host: str, port: int, delay_ms: float, gap_ms: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockProtocol(delay_ms / 1000.0, gap_ms / 1000.0), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="delay every response by this many ms")
    ap.add_argument("--stream-gap-ms", type=float, default=0.0, help="gap between SSE events in ms")
    args = ap.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        runner: Callable[..., None] = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, args.delay_ms, args.stream_gap_ms))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
