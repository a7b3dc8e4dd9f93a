"""OpenAI Chat Completions ↔ Google Gemini ``generateContent``: requests, responses and stream chunks.

The Gemini provider speaks the OpenAI dialect to the rest of the gateway and uses these functions at its
edge. Gemini's function-call parts carry an opaque ``thoughtSignature`` that must come back on later
turns; OpenAI clients have nowhere to keep it, so it is remembered by tool-call id
(:class:`lockgate.dialects.thinking.ThinkingMemory`) and restored when the call is sent back.

Usage (a gateway convention, as LiteLLM's): ``prompt_tokens`` = ``promptTokenCount`` (+ tool-use prompt
tokens), ``cached_tokens`` = ``cachedContentTokenCount``, ``completion_tokens`` = candidates + thoughts,
``reasoning_tokens`` = ``thoughtsTokenCount``. Gemini's per-modality counts (``[{modality, tokenCount}]``,
https://ai.google.dev/api/generate-content#UsageMetadata) keep OpenAI's names: ``promptTokensDetails`` (with
``toolUsePromptTokensDetails``, both inside ``prompt_tokens``) become ``prompt_tokens_details.text_tokens`` /
``audio_tokens`` / ``image_tokens`` / ``video_tokens``, cached ones included, as OpenAI counts them;
``cacheTokensDetails`` becomes ``prompt_tokens_details.cached_tokens_details``, as in OpenAI's Realtime usage;
``candidatesTokensDetails`` becomes ``completion_tokens_details`` (thoughts are not in it). A modality is given only
when Gemini lists it; ``DOCUMENT`` and unknown modalities are left out (still counted in the totals).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from lockgate.dialects.anthropic import text_of
from lockgate.dialects.thinking import ThinkingMemory
from lockgate.errors import BadRequest

__all__ = ["GeminiToChatStream", "chat_to_gemini", "gemini_to_chat_response", "gemini_usage_to_chat"]

_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "LANGUAGE": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_MODALITIES = {"TEXT": "text_tokens", "AUDIO": "audio_tokens", "IMAGE": "image_tokens", "VIDEO": "video_tokens"}
_SIGNATURE_KEY = "gemini-fc:"  # ThinkingMemory key prefix: a tool-call id, not a thought's text (see pipeline)


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and part.get("text"):
            parts.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else str(image or "")
            if url.startswith("data:") and ";base64," in url:
                header, _, data = url[5:].partition(",")
                parts.append({"inlineData": {"mimeType": header.split(";")[0], "data": data}})
            elif url:
                parts.append({"fileData": {"mimeType": "image/*", "fileUri": url}})
    return parts


def chat_to_gemini(body: dict[str, Any], memory: ThinkingMemory | None = None) -> dict[str, Any]:
    """An OpenAI chat request → a Gemini generateContent request (the model goes in the URL)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool-call id → function name (a functionResponse names its function)
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            raise BadRequest("messages: each message must be an object", param="messages")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(message.get("content")))
            continue
        if role == "tool":
            call_id = str(message.get("tool_call_id", ""))
            part = {
                "functionResponse": {
                    "name": names.get(call_id, "tool"),
                    "response": {"result": text_of(message.get("content"))},
                }
            }
            if contents and contents[-1]["role"] == "user" and "functionResponse" in contents[-1]["parts"][-1]:
                contents[-1]["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
            continue
        if role == "assistant":
            parts = _parts(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                try:
                    args = orjson.loads(function.get("arguments") or "{}")
                except orjson.JSONDecodeError as exc:
                    raise BadRequest("messages: a tool call's arguments are not valid JSON", param="messages") from exc
                names[str(call.get("id", ""))] = function.get("name", "")
                fc: dict[str, Any] = {"functionCall": {"name": function.get("name", ""), "args": args}}
                signature = memory.signature(_SIGNATURE_KEY + str(call.get("id", ""))) if memory else None
                if signature:
                    fc["thoughtSignature"] = signature
                parts.append(fc)
            if parts:
                contents.append({"role": "model", "parts": parts})
            continue
        if role != "user":
            raise BadRequest(f"messages: unknown role {str(role)[:40]!r}", param="messages")
        parts = _parts(message.get("content"))
        if parts:
            contents.append({"role": "user", "parts": parts})
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    for source, target in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("seed", "seed"),
    ):
        if body.get(source) is not None:
            config[target] = body[source]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    effort = body.get("reasoning_effort")
    if effort in _BUDGETS:
        config["thinkingConfig"] = {"thinkingBudget": _BUDGETS[effort], "includeThoughts": True}
    elif effort == "none":
        config["thinkingConfig"] = {"thinkingBudget": 0}
    if config:
        out["generationConfig"] = config
    declarations = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict):
            declaration: dict[str, Any] = {"name": function.get("name", "")}
            if function.get("description"):
                declaration["description"] = function["description"]
            if function.get("parameters"):
                declaration["parametersJsonSchema"] = function["parameters"]
            declarations.append(declaration)
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        choice = body.get("tool_choice")
        if choice == "required":
            out["toolConfig"] = {"functionCallingConfig": {"mode": "ANY"}}
        elif choice == "none":
            out["toolConfig"] = {"functionCallingConfig": {"mode": "NONE"}}
        elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            name = choice["function"].get("name", "")
            out["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return out


def _by_modality(*lists: object) -> dict[str, int]:
    """Gemini's ``[{modality, tokenCount}]`` lists, summed by modality under OpenAI's names (``text_tokens``, ...).
    proto3 JSON leaves a zero ``tokenCount`` out; entries that are not well formed are skipped."""
    counts: dict[str, int] = {}
    for entries in lists:
        for entry in entries if isinstance(entries, list) else []:
            modality = entry.get("modality") if isinstance(entry, dict) else None
            if not isinstance(modality, str) or modality not in _MODALITIES:
                continue
            name, count = _MODALITIES[modality], entry.get("tokenCount", 0)
            if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                counts[name] = counts.get(name, 0) + count
    return counts


def gemini_usage_to_chat(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Gemini's ``usageMetadata`` → OpenAI usage (see the module docstring)."""
    usage = usage or {}
    prompt = int(usage.get("promptTokenCount") or 0) + int(usage.get("toolUsePromptTokenCount") or 0)
    thoughts = int(usage.get("thoughtsTokenCount") or 0)
    completion = int(usage.get("candidatesTokenCount") or 0) + thoughts
    prompt_details: dict[str, Any] = {"cached_tokens": int(usage.get("cachedContentTokenCount") or 0)}
    prompt_details.update(_by_modality(usage.get("promptTokensDetails"), usage.get("toolUsePromptTokensDetails")))
    cached = _by_modality(usage.get("cacheTokensDetails"))
    if cached:
        prompt_details["cached_tokens_details"] = cached
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": thoughts,
            **_by_modality(usage.get("candidatesTokensDetails")),
        },
    }


def _call_id(part: dict[str, Any]) -> str:
    call = part.get("functionCall") or {}
    return str(call.get("id") or "call_" + uuid.uuid4().hex[:24])


def _message(parts: list[dict[str, Any]], memory: ThinkingMemory | None) -> tuple[dict[str, Any], bool]:
    texts, thoughts, calls = [], [], []
    for part in parts:
        if "functionCall" in part:
            call = part["functionCall"]
            call_id = _call_id(part)
            if memory is not None and part.get("thoughtSignature"):
                memory.remember(_SIGNATURE_KEY + call_id, str(part["thoughtSignature"]))
            arguments = orjson.dumps(call.get("args") or {}).decode()
            calls.append(
                {"id": call_id, "type": "function", "function": {"name": call.get("name", ""), "arguments": arguments}}
            )
        elif part.get("thought"):
            thoughts.append(part.get("text", ""))
        elif "text" in part:
            texts.append(part["text"])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message, bool(calls)


def gemini_to_chat_response(data: dict[str, Any], model: str, memory: ThinkingMemory | None = None) -> dict[str, Any]:
    choices = []
    for index, candidate in enumerate(data.get("candidates") or []):
        parts = (candidate.get("content") or {}).get("parts") or []
        message, has_calls = _message(parts, memory)
        finish = "tool_calls" if has_calls else FINISH_REASONS.get(str(candidate.get("finishReason")), "stop")
        choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": None})
    if not choices:  # the prompt itself was blocked
        message = {"role": "assistant", "content": None}
        choices.append({"index": 0, "message": message, "finish_reason": "content_filter", "logprobs": None})
    return {
        "id": "chatcmpl-" + str(data.get("responseId") or uuid.uuid4().hex[:24]),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": gemini_usage_to_chat(data.get("usageMetadata")),
    }


class GeminiToChatStream:
    """Gemini SSE chunks (each a whole GenerateContentResponse, no [DONE]) → OpenAI chunks."""

    def __init__(self, model: str, memory: ThinkingMemory | None) -> None:
        self._model = model
        self._memory = memory
        self._id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self._created = int(time.time())
        self._pending = b""
        self._started = False
        self._calls = 0
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(b"\n\n")
        self._pending = events.pop()
        return b"".join(self._event(e) for e in events if e.strip())

    def _event(self, event: bytes) -> bytes:
        payload = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(data, dict):
            return b""
        if isinstance(data.get("error"), dict):
            self._done = True
            error = data["error"]
            body = {"error": {"message": str(error.get("message", "upstream error")), "type": "api_error",
                              "param": None, "code": str(error.get("status") or error.get("code") or "")}}  # fmt: skip
            return b"data: " + orjson.dumps(body) + b"\n\n"
        out = b""
        if not self._started:
            self._started = True
            out += self._chunk({"role": "assistant", "content": ""})
        if isinstance(data.get("usageMetadata"), dict):
            self._usage = data["usageMetadata"]
        candidates = data.get("candidates") or []
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
            self._finish = "content_filter"
        for candidate in candidates[:1]:
            parts = (candidate.get("content") or {}).get("parts") or []
            message, has_calls = _message(parts, self._memory)
            delta: dict[str, Any] = {}
            if message.get("content"):
                delta["content"] = message["content"]
            if message.get("reasoning_content"):
                delta["reasoning_content"] = message["reasoning_content"]
            if has_calls:
                delta["tool_calls"] = [
                    {**call, "index": self._calls + i} for i, call in enumerate(message["tool_calls"])
                ]
                self._calls += len(message["tool_calls"])
            if delta:
                out += self._chunk(delta)
            if candidate.get("finishReason"):
                self._finish = (
                    "tool_calls" if self._calls else FINISH_REASONS.get(str(candidate["finishReason"]), "stop")
                )
        return out

    def flush(self) -> bytes:
        """The stream's end (Gemini sends no sentinel): the finish chunk, usage and ``[DONE]``."""
        out = self.feed(b"\n\n") if self._pending.strip() else b""
        if self._done or not self._started:
            return out
        self._done = True
        usage = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                 "choices": [], "usage": gemini_usage_to_chat(self._usage)}  # fmt: skip
        return out + self._chunk({}, self._finish or "stop") + b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n"
