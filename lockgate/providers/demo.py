"""The built-in demo model: answers offline, so the quick start works with no provider account.

``model: demo/<anything>``. Chat replies are deterministic (they quote the last user message), stream
word by word, and carry real usage counts; embeddings are deterministic vectors. It speaks the OpenAI
dialect exactly as an upstream would, through the same interface, so everything downstream of the
provider (streaming, usage capture, errors) is exercised by the demo too.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from lockgate.providers.base import Call, Provider
from lockgate.upstream import StaticResponse, UpstreamResponse

__all__ = ["Demo"]

_DIMENSIONS = 16


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _count(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(len(_text_of(m.get("content")).split()) + 3 for m in messages if isinstance(m, dict))


class Demo(Provider):
    name = "demo"

    def _reply(self, body: dict[str, Any]) -> str:
        messages = body.get("messages")
        last = ""
        if isinstance(messages, list):
            for message in reversed(messages):
                if isinstance(message, dict) and message.get("role") == "user":
                    last = _text_of(message.get("content"))
                    break
        last = " ".join(last.split()[:40])
        return f"Hello from lockgate's built-in demo model. You said: {last}" if last else "Hello from lockgate."

    async def chat(self, call: Call) -> UpstreamResponse:
        body = call.body
        reply = self._reply(body)
        prompt_tokens = _count(body.get("messages"))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reply.split()),
            "total_tokens": prompt_tokens + len(reply.split()),
        }
        ident = "chatcmpl-demo-" + uuid.uuid4().hex[:20]
        created = int(time.time())
        model = body.get("model", "demo")
        if not call.stream:
            return StaticResponse(
                200,
                orjson.dumps(
                    {
                        "id": ident,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply},
                                "finish_reason": "stop",
                                "logprobs": None,
                            }
                        ],
                        "usage": usage,
                    }
                ),
                headers={"content-type": "application/json"},
            )
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return StaticResponse(
            200,
            chunks=self._stream(ident, created, model, reply, usage if include_usage else None),
            headers={"content-type": "text/event-stream"},
        )

    async def _stream(
        self, ident: str, created: int, model: Any, reply: str, usage: dict[str, int] | None
    ) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            event = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + orjson.dumps(event) + b"\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for i, word in enumerate(reply.split()):
            yield chunk({"content": word if i == 0 else " " + word})
        yield chunk({}, "stop")
        if usage is not None:
            final = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
            yield b"data: " + orjson.dumps({**final, "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def embeddings(self, call: Call) -> UpstreamResponse:
        raw = call.body.get("input")
        inputs = raw if isinstance(raw, list) else [raw]
        if inputs and all(isinstance(x, int) for x in inputs):  # one token list
            inputs = [inputs]
        data = []
        tokens = 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item)) if isinstance(item, list) else ""
            tokens += max(1, len(text.split()))
            digest = hashlib.sha256(text.encode()).digest()
            vector = [(b - 127.5) / 127.5 for b in digest[:_DIMENSIONS]]
            embedding: Any = vector
            if call.body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        result = {
            "object": "list",
            "data": data,
            "model": call.body.get("model", "demo"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return StaticResponse(200, orjson.dumps(result), headers={"content-type": "application/json"})
