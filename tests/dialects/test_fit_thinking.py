"""fit_thinking: adaptive thinking becomes enabled + budget only for models that predate it."""

from __future__ import annotations

import pytest

from lockgate.dialects.anthropic import fit_thinking
from lockgate.providers.bedrock import bedrock_betas

ADAPTIVE = {
    "model": "x",
    "max_tokens": 32000,
    "thinking": {"type": "adaptive", "display": "updates"},
    "output_config": {"effort": "high"},
    "messages": [],
}


@pytest.mark.parametrize(
    "model",
    [
        "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "claude-opus-4-1-20250805",
        "claude-sonnet-4-5",
        "claude-haiku-4-5-20251001",
    ],
)
def test_older_models_get_enabled_thinking(model: str) -> None:
    fitted = fit_thinking(ADAPTIVE, model)
    assert fitted is not None
    assert fitted["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert "output_config" not in fitted and fitted["max_tokens"] == 32000
    assert ADAPTIVE["thinking"]["type"] == "adaptive"  # the input is not modified


@pytest.mark.parametrize("model", ["claude-opus-4-6", "claude-sonnet-4-6", "claude-opus-4-7", "some-new-model"])
def test_newer_and_unknown_models_keep_adaptive(model: str) -> None:
    assert fit_thinking(ADAPTIVE, model) is None


def test_budget_needs_room_below_max_tokens() -> None:
    fitted = fit_thinking(
        {**ADAPTIVE, "max_tokens": 1000, "output_config": {"effort": "low", "format": {}}}, "claude-3-7"
    )
    assert fitted is not None
    assert fitted["thinking"]["budget_tokens"] == 1024 and fitted["max_tokens"] > 1024
    assert fitted["output_config"] == {"format": {}}


def test_only_bedrock_beta_flags_pass() -> None:
    header = "claude-code-20250219, interleaved-thinking-2025-05-14,advanced-tool-use-2025-11-20,made-up-2099-01-01"
    assert bedrock_betas(header) == ["interleaved-thinking-2025-05-14", "tool-search-tool-2025-10-19"]
    assert bedrock_betas(None) == []
