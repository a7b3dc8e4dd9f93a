"""pipeline._strip_features: which extension fields an OpenAI-dialect deployment gets, by what it claims."""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.pipeline import _strip_features

MARK = {"type": "ephemeral"}
BODY: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": "rules", "cache_control": MARK}]},
        {
            "role": "assistant",
            "content": "ok",
            "reasoning_content": "thought",
            "thinking_blocks": [{"type": "thinking"}],
        },
        {"role": "user", "content": "hi", "cache_control": MARK},
    ],
    "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": MARK}],
}
RAW = orjson.dumps(BODY)


def test_a_plain_deployment_gets_neither_markers_nor_reasoning_history() -> None:
    stripped = _strip_features(BODY, RAW, {}, False)
    assert stripped is not None
    out, dropped = stripped
    assert dropped == ["cache_control", "thinking history"]
    assert b"cache_control" not in orjson.dumps(out) and b"reasoning_content" not in orjson.dumps(out)
    assert out["messages"][1] == {"role": "assistant", "content": "ok"}
    assert out["tools"] == [{"type": "function", "function": {"name": "f"}}]
    assert b"cache_control" in orjson.dumps(BODY)  # the client's body is not changed


def test_what_a_deployment_claims_or_its_provider_passes_on_is_kept() -> None:
    out, dropped = _strip_features(BODY, RAW, {"supports_prompt_caching": True}, False) or ({}, [])
    assert dropped == ["thinking history"] and out["messages"][0] == BODY["messages"][0]
    out, dropped = _strip_features(BODY, RAW, {}, True) or ({}, [])  # OpenRouter
    assert dropped == ["thinking history"]
    assert _strip_features(BODY, RAW, {"supports_prompt_caching": True, "supports_reasoning": True}, False) is None


def test_nothing_to_take_off_costs_a_substring_test() -> None:
    plain = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert _strip_features(plain, orjson.dumps(plain), {}, False) is None
    assert _strip_features(plain, None, {}, False) is None  # translated: the dicts are looked at
