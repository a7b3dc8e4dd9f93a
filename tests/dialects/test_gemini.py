"""lockgate.dialects.gemini: usageMetadata → OpenAI usage, per-modality counts under OpenAI's names."""

from __future__ import annotations

import json
from typing import Any

from lockgate.dialects.gemini import GeminiToChatStream, gemini_to_chat_response, gemini_usage_to_chat

# An answer to a prompt of text and audio, part of it from a cached context, with an image among the candidates and
# a tool-use prompt: every per-modality list Gemini sends (https://ai.google.dev/api/generate-content#UsageMetadata).
WIRE: dict[str, Any] = {
    "promptTokenCount": 10_000,
    "cachedContentTokenCount": 6000,
    "candidatesTokenCount": 1390,
    "toolUsePromptTokenCount": 50,
    "thoughtsTokenCount": 200,
    "totalTokenCount": 11_640,
    "promptTokensDetails": [
        {"modality": "TEXT", "tokenCount": 3000},
        {"modality": "AUDIO", "tokenCount": 6000},
        {"modality": "IMAGE", "tokenCount": 700},
        {"modality": "VIDEO", "tokenCount": 300},
    ],
    "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 1000}, {"modality": "AUDIO", "tokenCount": 5000}],
    "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 100}, {"modality": "IMAGE", "tokenCount": 1290}],
    "toolUsePromptTokensDetails": [{"modality": "TEXT", "tokenCount": 50}],
}
EXPECTED = {
    "prompt_tokens": 10_050,
    "completion_tokens": 1590,
    "total_tokens": 11_640,
    "prompt_tokens_details": {
        "cached_tokens": 6000,
        "text_tokens": 3050,
        "audio_tokens": 6000,
        "image_tokens": 700,
        "video_tokens": 300,
        "cached_tokens_details": {"text_tokens": 1000, "audio_tokens": 5000},
    },
    "completion_tokens_details": {"reasoning_tokens": 200, "text_tokens": 100, "image_tokens": 1290},
}


def test_modalities_keep_openais_names() -> None:
    assert gemini_usage_to_chat(WIRE) == EXPECTED


def test_without_modalities_the_usage_is_as_before() -> None:
    usage = gemini_usage_to_chat({"promptTokenCount": 100, "candidatesTokenCount": 20, "cachedContentTokenCount": 40})
    assert usage == {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert gemini_usage_to_chat(None)["prompt_tokens_details"] == {"cached_tokens": 0}


def test_odd_modality_lists() -> None:
    usage = gemini_usage_to_chat({
        "promptTokenCount": 500,
        "promptTokensDetails": [
            {"modality": "AUDIO"},  # proto3 JSON leaves a zero count out
            {"modality": "DOCUMENT", "tokenCount": 400},  # no OpenAI name: counted in the total only
            {"modality": "MODALITY_UNSPECIFIED", "tokenCount": 1},
            {"modality": ["TEXT"], "tokenCount": 5},
            {"modality": "TEXT", "tokenCount": "99"},
            {"modality": "TEXT", "tokenCount": -1},
            {"modality": "TEXT", "tokenCount": True},
            "TEXT",
            {"modality": "TEXT", "tokenCount": 99},
        ],
        "cacheTokensDetails": {"modality": "TEXT", "tokenCount": 1},  # not a list
        "candidatesTokensDetails": [],
    })  # fmt: skip
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0, "text_tokens": 99}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}


def test_response_and_stream_carry_the_modalities() -> None:
    candidate = {"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "STOP", "index": 0}
    response = gemini_to_chat_response({"candidates": [candidate], "usageMetadata": WIRE}, "m")
    assert response["usage"] == EXPECTED

    stream = GeminiToChatStream("m", None)
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "H"}]}, "index": 0}],
             "usageMetadata": {"promptTokenCount": 10_000}}  # fmt: skip
    last = {
        "candidates": [{**candidate, "content": {"role": "model", "parts": [{"text": "i"}]}}],
        "usageMetadata": WIRE,
    }
    out = b"".join(stream.feed(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n") for chunk in (first, last))
    out += stream.flush()
    events = [json.loads(line[6:]) for line in out.decode().split("\n\n") if line.startswith("data: {")]
    assert events[-1]["usage"] == EXPECTED
