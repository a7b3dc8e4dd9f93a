"""The cost of one request, provider by provider and token kind by token kind, in dollars written out by hand.

Each case is a usage block exactly as the provider sends it on the wire (wire-formats reference, sections 1.3, 2.3,
4.4 and 5.3; the fakes in ``tests/fakes``). It goes through every path lockgate has for that provider's usage, the
same functions the gateway calls, and then through ``pricing.cost_of`` with a price table written here, so that
catalog updates leave these figures alone::

    OpenAI, Azure OpenAI, an         body    the upstream's ``usage`` as is (pipeline._relay_body: no ``input_tokens``)
    OpenAI-compatible server         stream  the final usage chunk, read by streaming.UsageTap
    Anthropic                        body    dialects.anthropic.messages_usage_to_chat
                                     stream  message_start + message_delta through MessagesUsageTap (Anthropic client)
                                     openai  the same events through MessagesToChatStream, then UsageTap (OpenAI client)
    Bedrock Converse                 body    dialects.converse.converse_to_message, then messages_usage_to_chat
                                     stream  ConverseToMessagesStream's message_delta through MessagesUsageTap
                                     native  /bedrock passthrough, api.bedrock._usage_of("converse", ...)
                                     native-stream  its event-stream tap on the ``metadata`` frame
    Bedrock InvokeModel (Anthropic)  body, stream  as Anthropic (the provider passes the body and events through)
                                     native, native-stream  the /bedrock passthrough (``invoke``, ``chunk`` frames)
    Gemini                           body    dialects.gemini.gemini_to_chat_response
                                     stream  GeminiToChatStream, then UsageTap

Token kinds: plain, cache read, cache write (5-minute, or the provider's only lifetime), cache write 1h, reasoning;
where a provider bills them apart, audio (input and output), audio with a cache read, image output and web searches.
A provider that has no such kind has no such case; each table says why. A case lockgate gets wrong is marked
``xfail(strict=True)`` with the right figure, so fixing the bug turns it into a failure to be unmarked.

A second table (``CATALOG_CASES``) prices real usage with the shipped catalog's entries imported from genai-prices
(Gemini, Bedrock, Azure; ``scripts/import_prices.py``), as the deployment that names them finds them, the dollars
written out by hand from the per-million prices of the entry: it fails when a re-import changes those prices.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from lockgate.api.bedrock import _usage_of as bedrock_native_usage
from lockgate.api.bedrock import _UsageTap as BedrockNativeTap
from lockgate.catalog import load_catalog
from lockgate.dialects.anthropic import messages_usage_to_chat
from lockgate.dialects.anthropic_stream import MessagesToChatStream, MessagesUsageTap
from lockgate.dialects.converse import ConverseToMessagesStream, converse_to_message
from lockgate.dialects.gemini import GeminiToChatStream, gemini_to_chat_response
from lockgate.pricing import PRICE_TABLES, cost_of
from lockgate.streaming import UsageTap
from tests.fakes.bedrock_upstream import encode_event

Usage = dict[str, Any]

# --- price tables (USD per token), fixed here -------------------------------------------------------------

# OpenAI (and Azure, which bills OpenAI's models by the same token kinds): $2 input, $0.10 cached input,
# $2.50 cache write, $10 output per MTok; reasoning is billed as output.
OPENAI = {
    "input_cost_per_token": 2e-06,
    "cache_read_input_token_cost": 1e-07,
    "cache_creation_input_token_cost": 2.5e-06,
    "output_cost_per_token": 1e-05,
}
# An OpenAI audio model: gpt-audio's $2.50 text input, $10 text output, $32 audio input and $64 audio output per
# MTok, with cache prices set here (gpt-audio lists none): $0.25 cached text, and $0.40 cached audio as OpenAI lists
# it for gpt-realtime-1.5.
OPENAI_AUDIO = {
    "input_cost_per_token": 2.5e-06,
    "cache_read_input_token_cost": 2.5e-07,
    "input_cost_per_audio_token": 3.2e-05,
    "cache_read_input_audio_token_cost": 4e-07,
    "output_cost_per_token": 1e-05,
    "output_cost_per_audio_token": 6.4e-05,
}
# Anthropic: $5 input, $6.25 5-minute write, $10 1-hour write, $0.50 cache read, $25 output per MTok.
ANTHROPIC = {
    "input_cost_per_token": 5e-06,
    "cache_creation_input_token_cost": 6.25e-06,
    "cache_creation_input_token_cost_above_1hr": 1e-05,
    "cache_read_input_token_cost": 5e-07,
    "output_cost_per_token": 2.5e-05,
}
# Anthropic with its web search: $10 per 1,000 searches, in LiteLLM's search_context_cost_per_query.
ANTHROPIC_SEARCH = {
    **ANTHROPIC,
    "search_context_cost_per_query": {"search_context_size_low": 0.01, "search_context_size_medium": 0.01,
                                      "search_context_size_high": 0.01},
}  # fmt: skip
# Bedrock (Converse and InvokeModel): $2 input, $2.50 5-minute write, $4 1-hour write, $0.10 read, $10 output.
BEDROCK = {
    "input_cost_per_token": 2e-06,
    "cache_creation_input_token_cost": 2.5e-06,
    "cache_creation_input_token_cost_above_1hr": 4e-06,
    "cache_read_input_token_cost": 1e-07,
    "output_cost_per_token": 1e-05,
}
# Gemini: $0.30 input (text, image, video), $1.00 audio input, $0.03 cached, $0.10 cached audio, $2.50 output (2.5
# Flash's prices) and a distinct $3.50 for thinking tokens per MTok, so the thinking count is seen to reach the
# reasoning price.
GEMINI = {
    "input_cost_per_token": 3e-07,
    "input_cost_per_audio_token": 1e-06,
    "cache_read_input_token_cost": 3e-08,
    "cache_read_input_audio_token_cost": 1e-07,
    "output_cost_per_token": 2.5e-06,
    "output_cost_per_reasoning_token": 3.5e-06,
}
# Gemini 2.5 Flash Image: $0.30 input, $2.50 text output, $30 image output per MTok.
GEMINI_IMAGE = {
    "input_cost_per_token": 3e-07,
    "output_cost_per_token": 2.5e-06,
    "output_cost_per_image_token": 3e-05,
}
# A self-hosted OpenAI-compatible server (vLLM) priced by its operator: $0.10 input, $0.05 cached, $0.40 output.
COMPAT = {
    "input_cost_per_token": 1e-07,
    "cache_read_input_token_cost": 5e-08,
    "output_cost_per_token": 4e-07,
}

# --- the paths usage takes through lockgate ---------------------------------------------------------------


def _sse(name: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + json.dumps({"type": name, **payload}).encode() + b"\n\n"


def _chat_body(wire: Usage) -> Usage:
    # pipeline._relay_body keeps an OpenAI-dialect upstream's usage as it came (it has no ``input_tokens``)
    assert "input_tokens" not in wire
    return wire


def _chat_stream(wire: Usage) -> Usage:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    text = {**chunk, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}], "usage": None}
    tap = UsageTap(strip_usage_chunk=False)
    for event in (text, {**chunk, "choices": [], "usage": wire}):
        tap.feed(b"data: " + json.dumps(event).encode() + b"\n\n")
    tap.feed(b"data: [DONE]\n\n")
    assert tap.usage is not None
    return tap.usage


def _anthropic_events(wire: Usage) -> list[tuple[str, dict[str, Any]]]:
    """An Anthropic stream of a reply with this usage: message_start carries the input side (and one output
    token), message_delta the cumulative counts at the end, as the API sends them."""
    start = {k: v for k, v in wire.items() if k != "output_tokens_details"} | {"output_tokens": 1}
    final = {k: v for k, v in wire.items() if k != "cache_creation"}
    message: Usage = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
                      "stop_reason": None, "stop_sequence": None, "usage": start}  # fmt: skip
    return [
        ("message_start", {"message": message}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": final}),
        ("message_stop", {}),
    ]


def _messages_stream(wire: Usage) -> Usage:
    tap = MessagesUsageTap()
    for name, payload in _anthropic_events(wire):
        tap.feed(_sse(name, payload))
    assert tap.usage is not None
    return messages_usage_to_chat(tap.usage)  # pipeline._usage_of


def _messages_to_openai_client(wire: Usage) -> Usage:
    converter, tap = MessagesToChatStream("m"), UsageTap(strip_usage_chunk=False)
    for name, payload in _anthropic_events(wire):
        tap.feed(converter.feed(_sse(name, payload)))
    assert tap.usage is not None
    return tap.usage


def _converse_response(wire: Usage) -> dict[str, Any]:
    message = {"role": "assistant", "content": [{"text": "Hi"}]}
    return {"output": {"message": message}, "stopReason": "end_turn", "usage": wire, "metrics": {"latencyMs": 9}}


def _converse_body(wire: Usage) -> Usage:
    return messages_usage_to_chat(converse_to_message(_converse_response(wire), "m", "msg_1")["usage"])


def _converse_stream(wire: Usage) -> Usage:
    converter, tap = ConverseToMessagesStream("m", "msg_1"), MessagesUsageTap()
    events: list[tuple[str, dict[str, Any]]] = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": wire}),
    ]
    for kind, payload in events:
        tap.feed(converter.event(kind, payload))
    assert tap.usage is not None
    return messages_usage_to_chat(tap.usage)


def _native(operation: str) -> Callable[[Usage], Usage]:
    def usage(wire: Usage) -> Usage:
        body = _converse_response(wire) if operation == "converse" else {"type": "message", "usage": wire}
        found = bedrock_native_usage(operation, json.dumps(body).encode())
        assert found is not None
        return found

    return usage


def _converse_native_stream(wire: Usage) -> Usage:
    tap = BedrockNativeTap("converse-stream")
    tap.feed(encode_event("messageStop", {"stopReason": "end_turn"}))
    tap.feed(encode_event("metadata", {"usage": wire, "metrics": {"latencyMs": 9}}))
    assert tap.usage is not None
    return tap.usage


def _invoke_native_stream(wire: Usage) -> Usage:
    tap = BedrockNativeTap("invoke-with-response-stream")
    for name, payload in _anthropic_events(wire):
        event = {"type": name, **payload}
        if name == "message_stop":
            event["amazon-bedrock-invocationMetrics"] = {"inputTokenCount": 1, "outputTokenCount": 1}
        tap.feed(encode_event("chunk", {"bytes": base64.b64encode(json.dumps(event).encode()).decode()}))
    assert tap.usage is not None
    return tap.usage


def _gemini_body(wire: Usage) -> Usage:
    candidate = {"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "STOP", "index": 0}
    data = {"candidates": [candidate], "usageMetadata": wire, "modelVersion": "m", "responseId": "r1"}
    usage: Usage = gemini_to_chat_response(data, "m")["usage"]
    return usage


def _gemini_stream(wire: Usage) -> Usage:
    converter, tap = GeminiToChatStream("m", None), UsageTap(strip_usage_chunk=False)
    first = {"promptTokenCount": wire["promptTokenCount"], "totalTokenCount": wire["promptTokenCount"]}
    chunks = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "H"}]}, "index": 0}], "usageMetadata": first},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "i"}]}, "finishReason": "STOP", "index": 0}],
         "usageMetadata": wire},
    ]  # fmt: skip
    for chunk in chunks:
        tap.feed(converter.feed(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"))
    tap.feed(converter.flush())
    assert tap.usage is not None
    return tap.usage


PATHS: dict[str, dict[str, Callable[[Usage], Usage]]] = {
    "openai": {"body": _chat_body, "stream": _chat_stream},
    "azure": {"body": _chat_body, "stream": _chat_stream},
    "openai-compatible": {"body": _chat_body, "stream": _chat_stream},
    "anthropic": {"body": messages_usage_to_chat, "stream": _messages_stream, "openai": _messages_to_openai_client},
    "bedrock-converse": {"body": _converse_body, "stream": _converse_stream, "native": _native("converse"),
                         "native-stream": _converse_native_stream},
    "bedrock-invoke": {"body": messages_usage_to_chat, "stream": _messages_stream, "native": _native("invoke"),
                       "native-stream": _invoke_native_stream},
    "gemini": {"body": _gemini_body, "stream": _gemini_stream},
}  # fmt: skip

# --- the table --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    provider: str
    kind: str
    prices: Mapping[str, Any]
    wire: Usage
    expected: float
    bug: str | None = None
    """Why lockgate gets this case wrong today (the case is then a strict xfail)."""


def _openai(prompt: int, completion: int, cached: int = 0, written: int | None = None, reasoning: int = 0,
            audio: int = 0, audio_out: int = 0) -> Usage:  # fmt: skip
    """Chat Completions usage: ``prompt_tokens`` includes the cached, written and audio tokens, ``completion_tokens``
    the reasoning and audio ones (section 1.3); which cached tokens were audio is not said."""
    details: Usage = {"cached_tokens": cached, "audio_tokens": audio}
    if written is not None:
        details["cache_write_tokens"] = written
    completion_details = {"reasoning_tokens": reasoning, "audio_tokens": audio_out, "accepted_prediction_tokens": 0,
                          "rejected_prediction_tokens": 0}  # fmt: skip
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": details, "completion_tokens_details": completion_details}  # fmt: skip


def _anthropic(fresh: int, output: int, read: int = 0, m5: int = 0, h1: int = 0, thinking: int | None = None,
               searches: int | None = None) -> Usage:  # fmt: skip
    """Messages usage: ``input_tokens`` excludes the cache reads and writes; ``output_tokens`` includes thinking
    (section 2.3); ``server_tool_use`` counts the web searches Anthropic ran."""
    usage: Usage = {"input_tokens": fresh, "cache_creation_input_tokens": m5 + h1, "cache_read_input_tokens": read,
                    "output_tokens": output, "service_tier": "standard",
                    "cache_creation": {"ephemeral_5m_input_tokens": m5, "ephemeral_1h_input_tokens": h1}}  # fmt: skip
    if thinking is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    if searches is not None:
        usage["server_tool_use"] = {"web_search_requests": searches}
    return usage


def _converse(fresh: int, output: int, read: int = 0, written: int = 0, ttl: str = "5m") -> Usage:
    """Converse TokenUsage: ``inputTokens`` excludes the cache (as the fake and the Anthropic body have it; the
    reference marks it unverified), writes split by lifetime in ``cacheDetails`` (section 4.4)."""
    usage: Usage = {"inputTokens": fresh, "outputTokens": output, "totalTokens": fresh + read + written + output,
                    "cacheReadInputTokens": read, "cacheWriteInputTokens": written}  # fmt: skip
    if written:
        usage["cacheDetails"] = [{"ttl": ttl, "inputTokens": written}]
    return usage


def _modalities(**counts: int) -> list[dict[str, Any]]:
    """A ``[{modality, tokenCount}]`` list (``TEXT=...``, ``AUDIO=...``)."""
    return [{"modality": modality, "tokenCount": count} for modality, count in counts.items()]


def _gemini(prompt: int, candidates: int, cached: int = 0, thoughts: int = 0, audio: int = 0, cached_audio: int = 0,
            image_out: int = 0) -> Usage:  # fmt: skip
    """usageMetadata: ``promptTokenCount`` includes the cached tokens, ``candidatesTokenCount`` excludes the
    thoughts (section 5.3); zero counts are left out, as proto3 JSON does. Per-modality details as Gemini sends
    them (``promptTokensDetails`` counts cached tokens too, ``cacheTokensDetails`` only those), when one of
    ``audio``, ``cached_audio``, ``image_out`` is given."""
    usage: Usage = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
                    "totalTokenCount": prompt + candidates + thoughts}  # fmt: skip
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if audio or cached_audio or image_out:
        usage["promptTokensDetails"] = _modalities(TEXT=prompt - audio, AUDIO=audio)
        usage["candidatesTokensDetails"] = _modalities(TEXT=candidates - image_out, IMAGE=image_out)
    if cached and (audio or cached_audio):
        usage["cacheTokensDetails"] = _modalities(TEXT=cached - cached_audio, AUDIO=cached_audio)
    return usage


CASES = [
    # OpenAI. No 1-hour write: its usage does not split writes by lifetime (cache_write_tokens only).
    # 1200 x $2 + 300 x $10 = 0.0024 + 0.003
    Case("openai", "plain", OPENAI, _openai(1200, 300), 0.005_4),
    # 2000 fresh x $2 + 8000 cached x $0.10 + 200 x $10 = 0.004 + 0.0008 + 0.002
    Case("openai", "cache read", OPENAI, _openai(10_000, 200, cached=8000), 0.006_8),
    # 1000 fresh x $2 + 4000 written x $2.50 + 100 x $10 = 0.002 + 0.01 + 0.001
    Case("openai", "cache write", OPENAI, _openai(5000, 100, written=4000), 0.013),
    # 1000 x $2 + (500 visible + 2500 reasoning) x $10 = 0.002 + 0.03
    Case("openai", "reasoning", OPENAI, _openai(1000, 3000, reasoning=2500), 0.032),
    # 200 text x $2.50 + 1000 audio x $32 + 100 text out x $10 + 600 audio out x $64
    # = 0.0005 + 0.032 + 0.001 + 0.0384
    Case("openai", "audio", OPENAI_AUDIO, _openai(1200, 700, audio=1000, audio_out=600), 0.071_9),
    # 3000 prompt tokens, 2000 of them cached, 1500 of them audio: the 1000 fresh tokens hold at most 1000 of the
    # audio ones, so at least 500 cached are audio, and lockgate takes exactly that (the split is not said):
    # 1000 fresh audio x $32 + 1500 cached text x $0.25 + 500 cached audio x $0.40 + 100 text out x $10
    # + 400 audio out x $64 = 0.032 + 0.000375 + 0.0002 + 0.001 + 0.0256
    Case(
        "openai",
        "audio cache read",
        OPENAI_AUDIO,
        _openai(3000, 500, cached=2000, audio=1500, audio_out=400),
        0.059_175,
    ),
    # Azure OpenAI: OpenAI's wire format. No cache write kinds: Azure documents no cache-write count. Its audio
    # models report OpenAI's audio fields, through the same paths as OpenAI's: not repeated here.
    # 800 x $2 + 150 x $10 = 0.0016 + 0.0015
    Case("azure", "plain", OPENAI, _openai(800, 150), 0.003_1),
    # 1024 fresh x $2 + 3072 cached x $0.10 + 50 x $10 = 0.002048 + 0.0003072 + 0.0005
    Case("azure", "cache read", OPENAI, _openai(4096, 50, cached=3072), 0.002_855_2),
    # 2000 x $2 + (200 visible + 1000 reasoning) x $10 = 0.004 + 0.012
    Case("azure", "reasoning", OPENAI, _openai(2000, 1200, reasoning=1000), 0.016),
    # Anthropic: every kind.
    # 1000 x $5 + 500 x $25 = 0.005 + 0.0125
    Case("anthropic", "plain", ANTHROPIC, _anthropic(1000, 500), 0.017_5),
    # 200 x $5 + 10000 read x $0.50 + 300 x $25 = 0.001 + 0.005 + 0.0075
    Case("anthropic", "cache read", ANTHROPIC, _anthropic(200, 300, read=10_000), 0.013_5),
    # 200 x $5 + 4000 written (5m) x $6.25 + 100 x $25 = 0.001 + 0.025 + 0.0025
    Case("anthropic", "cache write 5m", ANTHROPIC, _anthropic(200, 100, m5=4000), 0.028_5),
    # 200 x $5 + 4000 written (1h) x $10 + 100 x $25 = 0.001 + 0.04 + 0.0025
    Case("anthropic", "cache write 1h", ANTHROPIC, _anthropic(200, 100, h1=4000), 0.043_5),
    # 1000 x $5 + 2000 output (1500 of it thinking) x $25 = 0.005 + 0.05
    Case("anthropic", "reasoning", ANTHROPIC, _anthropic(1000, 2000, thinking=1500), 0.055),
    # 1000 x $5 + 500 x $25 + 3 searches x $0.01 = 0.005 + 0.0125 + 0.03
    Case("anthropic", "web search", ANTHROPIC_SEARCH, _anthropic(1000, 500, searches=3), 0.047_5),
    # Bedrock Converse. Reasoning has no count of its own: it is inside outputTokens.
    # 1000 x $2 + 500 x $10 = 0.002 + 0.005
    Case("bedrock-converse", "plain", BEDROCK, _converse(1000, 500), 0.007),
    # 300 x $2 + 20000 read x $0.10 + 400 x $10 = 0.0006 + 0.002 + 0.004
    Case("bedrock-converse", "cache read", BEDROCK, _converse(300, 400, read=20_000), 0.006_6),
    # 300 x $2 + 8000 written (5m) x $2.50 + 100 x $10 = 0.0006 + 0.02 + 0.001
    Case("bedrock-converse", "cache write 5m", BEDROCK, _converse(300, 100, written=8000), 0.021_6),
    # 300 x $2 + 8000 written (1h) x $4 + 100 x $10 = 0.0006 + 0.032 + 0.001
    Case("bedrock-converse", "cache write 1h", BEDROCK, _converse(300, 100, written=8000, ttl="1h"), 0.033_6),
    # 1000 x $2 + 3000 output (reasoning included) x $10 = 0.002 + 0.03
    Case("bedrock-converse", "reasoning", BEDROCK, _converse(1000, 3000), 0.032),
    # Bedrock InvokeModel with Anthropic's body: Anthropic's usage. Thinking inside output_tokens, no details.
    Case("bedrock-invoke", "plain", BEDROCK, _anthropic(1000, 500), 0.007),  # 0.002 + 0.005
    Case("bedrock-invoke", "cache read", BEDROCK, _anthropic(300, 400, read=20_000), 0.006_6),  # as Converse
    Case("bedrock-invoke", "cache write 5m", BEDROCK, _anthropic(300, 100, m5=8000), 0.021_6),  # as Converse
    Case("bedrock-invoke", "cache write 1h", BEDROCK, _anthropic(300, 100, h1=8000), 0.033_6),  # as Converse
    Case("bedrock-invoke", "reasoning", BEDROCK, _anthropic(1000, 3000), 0.032),  # as Converse
    # Gemini. No cache writes: context caching bills storage by the hour, implicit caching nothing for writing.
    # 2000 x $0.30 + 400 x $2.50 = 0.0006 + 0.001
    Case("gemini", "plain", GEMINI, _gemini(2000, 400), 0.001_6),
    # 10000 fresh x $0.30 + 40000 cached x $0.03 + 500 x $2.50 = 0.003 + 0.0012 + 0.00125
    Case("gemini", "cache read", GEMINI, _gemini(50_000, 500, cached=40_000), 0.005_45),
    # 2000 x $0.30 + 400 x $2.50 + 1600 thoughts x $3.50 = 0.0006 + 0.001 + 0.0056
    Case("gemini", "reasoning", GEMINI, _gemini(2000, 400, thoughts=1600), 0.007_2),
    # 1000 text x $0.30 + 4000 audio x $1 + 300 x $2.50 = 0.0003 + 0.004 + 0.00075
    Case("gemini", "audio", GEMINI, _gemini(5000, 300, audio=4000), 0.005_05),
    # 50000 prompt tokens: 30000 audio, of them 25000 cached; 40000 cached, of them 15000 text.
    # 5000 fresh text x $0.30 + 5000 fresh audio x $1 + 15000 cached text x $0.03 + 25000 cached audio x $0.10
    # + 500 x $2.50 = 0.0015 + 0.005 + 0.00045 + 0.0025 + 0.00125
    Case(
        "gemini",
        "audio cache read",
        GEMINI,
        _gemini(50_000, 500, cached=40_000, audio=30_000, cached_audio=25_000),
        0.010_7,
    ),
    # 100 x $0.30 + 100 text out x $2.50 + 1290 image out x $30 = 0.00003 + 0.00025 + 0.0387
    Case("gemini", "image output", GEMINI_IMAGE, _gemini(100, 1390, image_out=1290), 0.038_98),
    # An OpenAI-compatible server (vLLM): prefix-cache hits in cached_tokens; no cache writes; reasoning counted
    # inside completion_tokens with no breakdown.
    # 3000 x $0.10 + 700 x $0.40 = 0.0003 + 0.00028
    Case("openai-compatible", "plain", COMPAT, _openai(3000, 700), 0.000_58),
    # 952 fresh x $0.10 + 2048 cached x $0.05 + 700 x $0.40 = 0.0000952 + 0.0001024 + 0.00028
    Case("openai-compatible", "cache read", COMPAT, _openai(3000, 700, cached=2048), 0.000_477_6),
    # 3000 x $0.10 + 2000 (reasoning included) x $0.40 = 0.0003 + 0.0008
    Case("openai-compatible", "reasoning", COMPAT, _openai(3000, 2000), 0.001_1),
]


def _params() -> list[Any]:
    out = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
        for path in PATHS[case.provider]:
            out.append(pytest.param(case, path, id=f"{case.provider}:{case.kind}:{path}", marks=marks))
    return out


@pytest.mark.parametrize(("case", "path"), _params())
def test_cost_by_provider_and_token_kind(case: Case, path: str) -> None:
    usage = PATHS[case.provider][path](case.wire)
    assert cost_of(case.prices, usage) == pytest.approx(case.expected, rel=1e-12, abs=0)


def test_the_table_covers_every_provider_and_kind() -> None:
    kinds: dict[str, set[str]] = {}
    for case in CASES:
        kinds.setdefault(case.provider, set()).add(case.kind)
    assert set(kinds) == set(PATHS)
    every = {"plain", "cache read", "cache write 5m", "cache write 1h", "reasoning"}
    assert kinds["bedrock-invoke"] == kinds["bedrock-converse"] == every
    assert kinds["anthropic"] == every | {"web search"}
    assert kinds["openai"] == {"plain", "cache read", "cache write", "reasoning", "audio", "audio cache read"}
    assert kinds["gemini"] == {"plain", "cache read", "reasoning", "audio", "audio cache read", "image output"}
    for provider in ("azure", "openai-compatible"):
        assert kinds[provider] == {"plain", "cache read", "reasoning"}, provider


# --- usage priced by the catalog's imported entries -------------------------------------------------------


@dataclass(frozen=True)
class CatalogCase:
    path: str  # a provider of PATHS: how the usage reaches pricing
    deployment: str  # litellm_params.model as a config writes it, base_model after a "|"
    entry: str  # the catalog key that prices it
    kind: str
    wire: Usage
    expected: float


# The per-million prices of each entry (genai-prices 0.2.3, imported 2026-11-24):
# gemini/gemini-2.5-pro: $1.25 input, $0.125 cached, $10 output (thinking too); a prompt over 200K tokens pays
#   $2.50, $0.25 and $15 for every token.
# gemini/gemini-3.1-flash-lite: $0.25 input (text, image, video), $0.50 audio, $0.025 cached, $0.05 cached audio,
#   $1.50 output.
# gemini/gemini-nano-banana-2.1: $1.50 input, $7.50 text output, $30 image output.
# bedrock/anthropic.claude-sonnet-4-5-20250929-v1:0 (us. profile, in-region price): $3.30 input, $0.33 read, $4.125
#   5-minute write, $6.60 1-hour write, $16.50 output; its global. profile: $3, $0.30, $3.75, $6, $15.
# bedrock/anthropic.claude-haiku-5-5: $0.11 input, $0.55 output; a prompt over 100K tokens pays $0.55 and $2.75.
# bedrock/amazon.nova-pro-v1:0: $0.80 input, $0.20 read, $3.20 output; bedrock/us.amazon.nova-2-lite-v1:0: $0.33
#   input, $2.75 output.
# azure/o4-mini (Global; genai-prices has no GPT-4o/4.1/5 price of Azure's own): $1.10 input, $0.275 cached, $4.40
#   output, reasoning billed as output.
SONNET_4_5 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
CATALOG_CASES = [
    # 10000 x $1.25 + 1000 x $10 = 0.0125 + 0.01
    CatalogCase("gemini", "gemini/gemini-2.5-pro", "gemini/gemini-2.5-pro", "plain", _gemini(10_000, 1000), 0.022_5),
    # 1000 x $1.25 + (200 + 800 thoughts) x $10 = 0.00125 + 0.01
    CatalogCase("gemini", "gemini/gemini-2.5-pro", "gemini/gemini-2.5-pro", "reasoning",
                _gemini(1000, 200, thoughts=800), 0.011_25),
    # 250000 > 200K: 200000 fresh x $2.50 + 50000 cached x $0.25 + 2000 x $15 = 0.5 + 0.0125 + 0.03
    CatalogCase("gemini", "gemini/models/gemini-2.5-pro", "gemini/gemini-2.5-pro", "long prompt",
                _gemini(250_000, 2000, cached=50_000), 0.542_5),
    # 1000 text x $0.25 + 4000 audio x $0.50 + 300 x $1.50 = 0.00025 + 0.002 + 0.00045
    CatalogCase("gemini", "gemini/gemini-3.1-flash-lite", "gemini/gemini-3.1-flash-lite", "audio",
                _gemini(5000, 300, audio=4000), 0.002_7),
    # 5000 fresh text x $0.25 + 5000 fresh audio x $0.50 + 15000 cached text x $0.025 + 25000 cached audio x $0.05
    # + 500 x $1.50 = 0.00125 + 0.0025 + 0.000375 + 0.00125 + 0.00075
    CatalogCase("gemini", "gemini/gemini-3.1-flash-lite", "gemini/gemini-3.1-flash-lite", "audio cache read",
                _gemini(50_000, 500, cached=40_000, audio=30_000, cached_audio=25_000), 0.006_125),
    # 100 x $1.50 + 100 text out x $7.50 + 1290 image out x $30 = 0.00015 + 0.00075 + 0.0387
    CatalogCase("gemini", "gemini/gemini-nano-banana-2.1", "gemini/gemini-nano-banana-2.1", "image output",
                _gemini(100, 1390, image_out=1290), 0.039_6),
    # 300 x $3.30 + 20000 read x $0.33 + 8000 written (5m) x $4.125 + 400 x $16.50
    # = 0.00099 + 0.0066 + 0.033 + 0.0066
    CatalogCase("bedrock-converse", "bedrock/converse/us." + SONNET_4_5, "bedrock/" + SONNET_4_5, "cache read, write",
                _converse(300, 400, read=20_000, written=8000), 0.047_19),
    # 300 x $3.30 + 8000 written (1h) x $6.60 + 100 x $16.50 = 0.00099 + 0.0528 + 0.00165
    CatalogCase("bedrock-converse", "bedrock/converse/us." + SONNET_4_5, "bedrock/" + SONNET_4_5, "cache write 1h",
                _converse(300, 100, written=8000, ttl="1h"), 0.055_44),
    # global.: 1000 x $3 + 10000 read x $0.30 + 500 x $15 = 0.003 + 0.003 + 0.0075
    CatalogCase("bedrock-converse", "bedrock/converse/global." + SONNET_4_5, "bedrock/global." + SONNET_4_5,
                "global cache read", _converse(1000, 500, read=10_000), 0.013_5),
    # 150000 > 100K: 150000 x $0.55 + 1000 x $2.75 = 0.0825 + 0.00275
    CatalogCase("bedrock-converse", "bedrock/converse/us.anthropic.claude-haiku-5-5",
                "bedrock/anthropic.claude-haiku-5-5", "long prompt", _converse(150_000, 1000), 0.085_25),
    # 2000 x $0.80 + 6000 read x $0.20 + 500 x $3.20 = 0.0016 + 0.0012 + 0.0016
    CatalogCase("bedrock-converse", "bedrock/converse/us.amazon.nova-pro-v1:0", "bedrock/amazon.nova-pro-v1:0",
                "cache read", _converse(2000, 500, read=6000), 0.004_4),
    # 1000 x $0.33 + 1000 x $2.75 = 0.00033 + 0.00275
    CatalogCase("bedrock-converse", "bedrock/converse/us.amazon.nova-2-lite-v1:0", "bedrock/us.amazon.nova-2-lite-v1:0",
                "plain", _converse(1000, 1000), 0.003_08),
    # 1024 fresh x $1.10 + 3072 cached x $0.275 + 50 x $4.40 = 0.0011264 + 0.0008448 + 0.00022
    CatalogCase("azure", "azure/my-reasoner|o4-mini", "azure/o4-mini", "cache read", _openai(4096, 50, cached=3072),
                0.002_191_2),
    # 2000 x $1.10 + (200 visible + 1000 reasoning) x $4.40 = 0.0022 + 0.00528
    CatalogCase("azure", "azure/my-reasoner|o4-mini", "azure/o4-mini", "reasoning",
                _openai(2000, 1200, reasoning=1000), 0.007_48),
]  # fmt: skip


def _catalog_params() -> list[Any]:
    return [
        pytest.param(case, path, id=f"{case.entry}:{case.kind}:{path}")
        for case in CATALOG_CASES
        for path in PATHS[case.path]
    ]


@pytest.mark.parametrize(("case", "path"), _catalog_params())
def test_cost_by_imported_catalog_entry(case: CatalogCase, path: str) -> None:
    provider, _, model = case.deployment.partition("|")[0].partition("/")
    base_model = case.deployment.partition("|")[2] or None
    found = load_catalog().find(provider, model, base_model=base_model)
    assert found is not None and found[0] == case.entry
    assert found[1]["via"].startswith("genai-prices ")
    usage = PATHS[case.path][path](case.wire)
    assert cost_of(found[1], usage) == pytest.approx(case.expected, rel=1e-12, abs=0)


# --- the shipped catalog's prices are in the order every provider bills them ------------------------------

_CACHE = ("cache_read_input_token_cost", "cache_creation_input_token_cost", "cache_creation_input_token_cost_above_1hr")


def _tier(entry: Mapping[str, Any], base: str, tier: str) -> float | None:
    """``base`` at a long-prompt tier (``""`` for the base price), falling back to the base price as pricing.py
    does; None when the entry has neither."""
    value = entry.get(base + tier, entry.get(base))
    return None if value is None else float(value)


def test_catalog_prices_are_sourced_and_ordered() -> None:
    """Every entry: prices >= 0, a source and a checked date. Where cache prices are given: a read costs less
    than fresh input, and fresh input less than a write, and a 5-minute write no more than a 1-hour one (no
    exceptions today); a cached audio token less than a fresh one; each long-prompt tier keeps that order and costs
    no less than the base price."""
    catalog = load_catalog()
    for name, entry in catalog.models.items():
        assert str(entry["source"]).startswith("https://"), name
        assert len(str(entry["checked"])) == 10, name
        prices = {k: v for k, v in entry.items() if k not in ("source", "checked", "via", "completed_via",
                                                               "max_input_tokens", "max_output_tokens",
                                                               *PRICE_TABLES)}  # fmt: skip
        for table in PRICE_TABLES & set(entry):  # search_context_cost_per_query: USD per search, by size
            prices |= {f"{table}.{size}": value for size, value in entry[table].items()}
        assert all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in prices.values()), name
        if name.startswith("openrouter/"):
            continue  # a marketplace's listing of its upstreams' prices: Gemini's cache "write" there is a storage
            # charge below the input price; the order below holds for the providers' own price lists
        tiers = {""} | {k[k.rindex("_above_") :] for k in prices if k.endswith("_tokens")}
        for tier in sorted(tiers):
            read = _tier(entry, _CACHE[0], tier)
            fresh = _tier(entry, "input_cost_per_token", tier)
            write = _tier(entry, _CACHE[1], tier)
            write_1h = _tier(entry, _CACHE[2], tier)
            audio = _tier(entry, "input_cost_per_audio_token", tier)
            read_audio = _tier(entry, "cache_read_input_audio_token_cost", tier)
            assert fresh is not None, name
            if read is not None:
                assert read < fresh, (name, tier)
            if write is not None:
                assert fresh < write, (name, tier)
            if write is not None and write_1h is not None:
                assert write <= write_1h, (name, tier)
            if read_audio is not None:
                assert read_audio < (fresh if audio is None else audio), (name, tier)
        for key, value in prices.items():
            if "_above_" in key and key.endswith("_tokens"):
                assert value >= prices[key[: key.rindex("_above_")]], (name, key)
