"""lockgate.pricing: the cost of one request, checked against hand-computed figures and two properties."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from lockgate.dialects.anthropic import messages_usage_to_chat
from lockgate.dialects.gemini import gemini_usage_to_chat
from lockgate.pricing import (
    ANY_KIND,
    PRICE_FIELDS,
    PRICE_TABLES,
    Kinds,
    Rates,
    cost_of,
    estimate,
    kinds_of,
    price_table,
    rates_for,
)

# Claude Sonnet 4 (per token): $3 / $15 per MTok, cache reads 0.1x input, 5-minute writes 1.25x input; above 200K
# input tokens (1M-context beta) $6 / $22.50, with the cache prices doubled too.
SONNET = {
    "input_cost_per_token": 3e-06,
    "output_cost_per_token": 1.5e-05,
    "cache_read_input_token_cost": 3e-07,
    "cache_creation_input_token_cost": 3.75e-06,
    "cache_creation_input_token_cost_above_1hr": 6e-06,  # not a long-prompt tier
}
SONNET_LONG = {
    **SONNET,
    "input_cost_per_token_above_200k_tokens": 6e-06,
    "output_cost_per_token_above_200k_tokens": 2.25e-05,
    "cache_read_input_token_cost_above_200k_tokens": 6e-07,
    "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
}
# An OpenAI reasoning model: $2 input, $0.50 cached input, $8 output per MTok; no cache-write price.
O_SERIES = {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06, "cache_read_input_token_cost": 5e-07}
# Gemini 2.5 Pro: $1.25 / $10 per MTok up to 200K prompt tokens, $2.50 / $15 above; cached input $0.3125 / $0.625.
GEMINI_PRO = {
    "input_cost_per_token": 1.25e-06,
    "output_cost_per_token": 1e-05,
    "cache_read_input_token_cost": 3.125e-07,
    "input_cost_per_token_above_200k_tokens": 2.5e-06,
    "output_cost_per_token_above_200k_tokens": 1.5e-05,
    "cache_read_input_token_cost_above_200k_tokens": 6.25e-07,
}


# --- hand-computed figures -------------------------------------------------------------------------


def test_anthropic_usage_with_cache_reads_and_writes() -> None:
    usage = messages_usage_to_chat(
        {"input_tokens": 100, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 500, "output_tokens": 300}
    )
    assert usage["prompt_tokens"] == 2600
    # 100 fresh x $3/M + 2000 read x $0.30/M + 500 written x $3.75/M + 300 out x $15/M
    expected = 0.0003 + 0.0006 + 0.001875 + 0.0045
    assert cost_of(SONNET, usage) == pytest.approx(expected, rel=1e-12)
    assert cost_of(SONNET, usage) == pytest.approx(0.007275, rel=1e-12)


def test_litellm_top_level_cache_fields_alone() -> None:
    usage: dict[str, Any] = {"prompt_tokens": 2600, "completion_tokens": 300, "cache_read_input_tokens": 2000,
                             "cache_creation_input_tokens": 500}  # fmt: skip
    assert cost_of(SONNET, usage) == pytest.approx(0.007275, rel=1e-12)
    # prompt_tokens_details wins when it has a count; a zero there falls back to the top-level field
    usage["prompt_tokens_details"] = {"cached_tokens": 0, "cache_write_tokens": 500}
    assert cost_of(SONNET, usage) == pytest.approx(0.007275, rel=1e-12)


def test_anthropic_thinking_is_output_counted_once() -> None:
    usage = messages_usage_to_chat(
        {"input_tokens": 1000, "output_tokens": 4000, "output_tokens_details": {"thinking_tokens": 3000}}
    )
    # output_tokens already includes the 3000 thinking tokens: 1000 x $3/M + 4000 x $15/M
    assert cost_of(SONNET, usage) == pytest.approx(0.003 + 0.06, rel=1e-12)


def test_openai_cached_tokens_and_reasoning() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 300, "accepted_prediction_tokens": 0},
    }
    # 600 fresh x $2/M + 400 cached x $0.50/M + 500 out (300 of them reasoning, at the output price) x $8/M
    assert cost_of(O_SERIES, usage) == pytest.approx(0.0012 + 0.0002 + 0.004, rel=1e-12)
    # with a reasoning price: 200 visible x $8/M + 300 reasoning x $10/M
    priced = {**O_SERIES, "output_cost_per_reasoning_token": 1e-05}
    assert cost_of(priced, usage) == pytest.approx(0.0012 + 0.0002 + 0.0016 + 0.003, rel=1e-12)


def test_cache_without_its_own_price_is_at_the_input_price() -> None:
    prices = {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}
    usage = {"prompt_tokens": 1000, "completion_tokens": 10,
             "prompt_tokens_details": {"cached_tokens": 300, "cache_write_tokens": 200}}  # fmt: skip
    assert cost_of(prices, usage) == pytest.approx(1000 * 1e-06 + 10 * 2e-06, rel=1e-12)


def test_embeddings_report_no_completion_tokens() -> None:
    prices = {"input_cost_per_token": 1e-07}
    assert cost_of(prices, {"prompt_tokens": 8, "total_tokens": 8}) == pytest.approx(8e-07, rel=1e-12)
    assert cost_of(prices, {"prompt_tokens": 8, "completion_tokens": None}) == pytest.approx(8e-07, rel=1e-12)
    # an output price alone: the missing input price counts as 0
    assert cost_of({"output_cost_per_token": 1e-06}, {"prompt_tokens": 8, "completion_tokens": 2}) == 2e-06


def test_zero_prices_are_free_not_unknown() -> None:
    free = {"input_cost_per_token": 0, "output_cost_per_token": 0.0}
    assert cost_of(free, {"prompt_tokens": 10, "completion_tokens": 10}) == 0.0


@pytest.mark.parametrize(
    "prices",
    [
        {},
        {"mode": "chat", "max_tokens": 4096},
        {"input_cost_per_second": 0.001, "output_cost_per_second": 0.001},  # not priced per token
        {"cache_read_input_token_cost": 1e-07},  # no input or output price
        {"input_cost_per_token": -1e-06, "output_cost_per_token": "free"},  # malformed prices count as absent
        {"input_cost_per_token": math.nan, "output_cost_per_token": True},
    ],
)
def test_no_prices_is_unknown(prices: dict[str, Any]) -> None:
    assert cost_of(prices, {"prompt_tokens": 10, "completion_tokens": 10}) is None
    assert estimate(prices, 10, 10) is None
    assert rates_for(prices, 10) is None


def test_prices_as_numeric_strings() -> None:
    # YAML 1.1 reads 3e-7 (no dot) as a string; LiteLLM accepts it, so does lockgate
    prices = {"input_cost_per_token": "3e-7", "output_cost_per_token": "1.5E-6", "cache_read_input_token_cost": "x"}
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}
    assert cost_of(prices, usage) == pytest.approx(100 * 3e-7 + 10 * 1.5e-6, rel=1e-12)  # "x": reads at input


@pytest.mark.parametrize(
    "usage",
    [
        None,
        [],
        "usage",
        {},
        {"completion_tokens": 10},  # no prompt_tokens
        {"prompt_tokens": None, "completion_tokens": 10},
        {"prompt_tokens": "10", "completion_tokens": 10},
        {"prompt_tokens": 10, "completion_tokens": "10"},
        {"prompt_tokens": -1, "completion_tokens": 10},
        {"prompt_tokens": 10, "completion_tokens": -5},
        {"prompt_tokens": 10.0, "completion_tokens": 10},
        {"prompt_tokens": True, "completion_tokens": 10},
        {"prompt_tokens": 10, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": "3"}},
        {"prompt_tokens": 10, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": -3}},
        {"prompt_tokens": 10, "completion_tokens": 10, "prompt_tokens_details": {"cache_write_tokens": 1.5}},
        {"prompt_tokens": 10, "completion_tokens": 10, "prompt_tokens_details": "cached"},
        {"prompt_tokens": 10, "completion_tokens": 10, "prompt_tokens_details": [3]},
        {"prompt_tokens": 10, "completion_tokens": 10, "cache_read_input_tokens": "3"},
        {"prompt_tokens": 10, "completion_tokens": 10, "cache_creation_input_tokens": -1},
        {"prompt_tokens": 10, "completion_tokens": 10, "completion_tokens_details": {"reasoning_tokens": -2}},
        {"prompt_tokens": 10, "completion_tokens": 10, "completion_tokens_details": {"reasoning_tokens": "2"}},
        {"prompt_tokens": 10, "completion_tokens": 10, "completion_tokens_details": 2},
        {"prompt_tokens": 10, "completion_tokens": 10, "prompt_tokens_details": {"audio_tokens": "4"}},
        {"prompt_tokens": 10, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens_details": [4]}},
        {
            "prompt_tokens": 10,
            "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens_details": {"audio_tokens": -4}},
        },
        {"prompt_tokens": 10, "completion_tokens": 10, "completion_tokens_details": {"audio_tokens": 2.0}},
        {"prompt_tokens": 10, "completion_tokens": 10, "completion_tokens_details": {"image_tokens": True}},
        {"prompt_tokens": 10, "completion_tokens": 10, "server_tool_use": 3},
        {"prompt_tokens": 10, "completion_tokens": 10, "server_tool_use": {"web_search_requests": -1}},
    ],
)
def test_missing_or_malformed_usage_is_unknown(usage: Any) -> None:
    assert cost_of(SONNET, usage) is None


def test_null_details_are_zero() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 10, "prompt_tokens_details": None,
             "completion_tokens_details": {"reasoning_tokens": None}, "cache_read_input_tokens": None}  # fmt: skip
    assert cost_of(O_SERIES, usage) == pytest.approx(10 * 2e-06 + 10 * 8e-06, rel=1e-12)


def test_parts_larger_than_their_totals_are_charged_in_full() -> None:
    # reads + writes above prompt_tokens: no fresh input, both charged; reasoning above completion: all reasoning
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 80,
             "cache_write_tokens": 40}, "completion_tokens_details": {"reasoning_tokens": 7}}  # fmt: skip
    assert cost_of(SONNET, usage) == pytest.approx(80 * 3e-07 + 40 * 3.75e-06 + 7 * 1.5e-05, rel=1e-12)


# --- audio, image output, web searches -------------------------------------------------------------

# gpt-audio's prices per MTok: text $2.50 in / $10 out, audio $32 in / $64 out (no cache prices).
GPT_AUDIO = {
    "input_cost_per_token": 2.5e-06,
    "output_cost_per_token": 1e-05,
    "input_cost_per_audio_token": 3.2e-05,
    "output_cost_per_audio_token": 6.4e-05,
}
# A Realtime-like table with every cache price (per MTok): text $4, cached $0.40; audio $32, cached audio $0.80.
REALTIME = {
    "input_cost_per_token": 4e-06,
    "cache_read_input_token_cost": 4e-07,
    "input_cost_per_audio_token": 3.2e-05,
    "cache_read_input_audio_token_cost": 8e-07,
    "output_cost_per_token": 1.6e-05,
    "output_cost_per_audio_token": 6.4e-05,
}


def test_openai_audio_in_and_out_at_audio_prices() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 500,
             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 800},
             "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 400}}  # fmt: skip
    # 200 text x $2.50 + 800 audio x $32 + 100 text out x $10 + 400 audio out x $64 = 52,700 per MTok
    assert cost_of(GPT_AUDIO, usage) == pytest.approx(0.0527, rel=1e-12)
    # a model without audio prices: audio is priced as text (1000 x $2.50 + 500 x $10)
    text_only = {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05}
    assert cost_of(text_only, usage) == pytest.approx(0.0075, rel=1e-12)


def test_cached_audio_as_reported_or_the_dearest_split() -> None:
    usage: dict[str, Any] = {"prompt_tokens": 1000, "completion_tokens": 0,
                             "prompt_tokens_details": {"cached_tokens": 600, "audio_tokens": 800}}  # fmt: skip
    # Chat Completions does not say which cached tokens are audio: 400 fresh tokens can hold at most 400 of the 800
    # audio ones, so 400 cached are audio, the other 200 cached are text, and no fresh token is text.
    # 400 fresh audio x $32 + 200 cached text x $0.40 + 400 cached audio x $0.80 = 13,200 per MTok
    assert cost_of(REALTIME, usage) == pytest.approx(0.0132, rel=1e-12)
    # told that all 600 cached were audio: 200 fresh text x $4 + 200 fresh audio x $32 + 600 x $0.80 = 7,680
    usage["prompt_tokens_details"]["cached_tokens_details"] = {"text_tokens": 0, "audio_tokens": 600}
    assert cost_of(REALTIME, usage) == pytest.approx(0.00768, rel=1e-12)
    # cached audio is held to the reads: 900 said, 600 read
    usage["prompt_tokens_details"]["cached_tokens_details"] = {"audio_tokens": 900}
    assert cost_of(REALTIME, usage) == pytest.approx(0.00768, rel=1e-12)


def test_cached_audio_without_a_price_of_its_own() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 0,
             "prompt_tokens_details": {"cached_tokens": 600, "audio_tokens": 800,
                                       "cached_tokens_details": {"audio_tokens": 600}}}  # fmt: skip
    # at the cache-read price: 200 fresh text x $4 + 200 fresh audio x $32 + 600 x $0.40 = 7,440 per MTok
    no_cached_audio = {k: v for k, v in REALTIME.items() if k != "cache_read_input_audio_token_cost"}
    assert cost_of(no_cached_audio, usage) == pytest.approx(0.00744, rel=1e-12)
    # no cache price at all: reads at the input price of their kind (200 x $4 + 800 audio x $32 = 26,400)
    no_cache = {k: v for k, v in no_cached_audio.items() if k != "cache_read_input_token_cost"}
    assert cost_of(no_cache, usage) == pytest.approx(0.0264, rel=1e-12)


def test_gemini_audio_input_and_image_output() -> None:
    # Gemini 2.5 Flash per MTok: $0.30 text/image/video, $1.00 audio, cached $0.03 / $0.10 audio, $2.50 output;
    # 2.5 Flash Image: image output $30.
    prices = {
        "input_cost_per_token": 3e-07,
        "input_cost_per_audio_token": 1e-06,
        "cache_read_input_token_cost": 3e-08,
        "cache_read_input_audio_token_cost": 1e-07,
        "output_cost_per_token": 2.5e-06,
        "output_cost_per_image_token": 3e-05,
    }
    usage = gemini_usage_to_chat({
        "promptTokenCount": 10_000, "cachedContentTokenCount": 6000, "candidatesTokenCount": 1390,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4000}, {"modality": "AUDIO", "tokenCount": 6000}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 1000}, {"modality": "AUDIO", "tokenCount": 5000}],
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 100}, {"modality": "IMAGE", "tokenCount": 1290}],
    })  # fmt: skip
    # 3000 fresh text x $0.30 + 1000 fresh audio x $1 + 1000 cached text x $0.03 + 5000 cached audio x $0.10
    # + 100 text out x $2.50 + 1290 image out x $30 = 900 + 1000 + 30 + 500 + 250 + 38,700 = 41,380 per MTok
    assert cost_of(prices, usage) == pytest.approx(0.04138, rel=1e-12)


def test_modality_prices_in_tiers() -> None:
    usage = {"prompt_tokens": 300_000, "completion_tokens": 100,
             "prompt_tokens_details": {"audio_tokens": 100_000},
             "completion_tokens_details": {"audio_tokens": 40}}  # fmt: skip
    prices = {
        "input_cost_per_token": 1e-06,
        "input_cost_per_token_above_200k_tokens": 2e-06,
        "output_cost_per_token": 1e-05,
        "output_cost_per_token_above_200k_tokens": 2e-05,
    }
    # no audio prices: audio follows the tiered text prices
    assert cost_of(prices, usage) == pytest.approx(300_000 * 2e-06 + 100 * 2e-05, rel=1e-12)
    # audio prices without a tier keep their base values
    audio = {**prices, "input_cost_per_audio_token": 5e-06, "output_cost_per_audio_token": 4e-05}
    expected = 200_000 * 2e-06 + 100_000 * 5e-06 + 60 * 2e-05 + 40 * 4e-05
    assert cost_of(audio, usage) == pytest.approx(expected, rel=1e-12)
    tiered = {**audio, "input_cost_per_audio_token_above_200k_tokens": 7e-06,
              "output_cost_per_audio_token_above_200k_tokens": 8e-05}  # fmt: skip
    expected = 200_000 * 2e-06 + 100_000 * 7e-06 + 60 * 2e-05 + 40 * 8e-05
    assert cost_of(tiered, usage) == pytest.approx(expected, rel=1e-12)


def test_one_hour_writes_above_a_long_prompt_threshold() -> None:
    # LiteLLM's name for a 1-hour write above 200K: cache_creation_input_token_cost_above_1hr_above_200k_tokens
    prices = {**SONNET_LONG, "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05}
    usage = {"prompt_tokens": 250_000, "completion_tokens": 0,
             "prompt_tokens_details": {"cache_write_tokens": 50_000, "cache_write_1h_tokens": 50_000}}  # fmt: skip
    assert cost_of(prices, usage) == pytest.approx(200_000 * 6e-06 + 50_000 * 1.2e-05, rel=1e-12)
    small = {"prompt_tokens": 150_000, "completion_tokens": 0,
             "prompt_tokens_details": {"cache_write_tokens": 50_000, "cache_write_1h_tokens": 50_000}}  # fmt: skip
    assert cost_of(prices, small) == pytest.approx(100_000 * 3e-06 + 50_000 * 6e-06, rel=1e-12)


def test_output_parts_larger_than_the_total_are_charged_in_full() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 50, "prompt_tokens_details": {"audio_tokens": 30},
             "completion_tokens_details": {"reasoning_tokens": 20, "audio_tokens": 30, "image_tokens": 40}}  # fmt: skip
    prices = {**GPT_AUDIO, "output_cost_per_image_token": 3e-05}
    # 30 audio in x $32 (above the 10 of the prompt: no text left), 20 reasoning x $10 + 30 audio x $64 + 40 x $30
    expected = 30 * 3.2e-05 + 20 * 1e-05 + 30 * 6.4e-05 + 40 * 3e-05
    assert cost_of(prices, usage) == pytest.approx(expected, rel=1e-12)


def test_web_searches_at_the_price_per_query() -> None:
    # Anthropic: $10 per 1,000 searches, LiteLLM's search_context_cost_per_query holding it at every size
    search = {"search_context_size_low": 0.01, "search_context_size_medium": 0.01, "search_context_size_high": 0.01}
    prices = {**SONNET, "search_context_cost_per_query": search}
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "server_tool_use": {"web_search_requests": 3}}
    # 1000 x $3/M + 100 x $15/M + 3 x $0.01
    assert cost_of(prices, usage) == pytest.approx(0.003 + 0.0015 + 0.03, rel=1e-12)
    assert cost_of(SONNET, usage) == pytest.approx(0.0045, rel=1e-12)  # no price: no charge
    as_strings = {**SONNET, "search_context_cost_per_query": {"search_context_size_medium": "1e-2"}}
    assert cost_of(as_strings, usage) == pytest.approx(0.0345, rel=1e-12)
    for malformed in (0.01, {"search_context_size_medium": -1}, {"search_context_size_high": 0.01}):
        assert cost_of({**SONNET, "search_context_cost_per_query": malformed}, usage) == pytest.approx(0.0045)
    assert cost_of(prices, {**usage, "server_tool_use": None}) == pytest.approx(0.0045, rel=1e-12)


_EVERY_KIND = {
    "prompt_tokens": 300_000,
    "completion_tokens": 1000,
    "prompt_tokens_details": {"cached_tokens": 100_000, "cache_write_tokens": 50_000, "cache_write_1h_tokens": 20_000,
                              "audio_tokens": 60_000, "cached_tokens_details": {"audio_tokens": 10_000}},
    "completion_tokens_details": {"reasoning_tokens": 100, "audio_tokens": 200, "image_tokens": 300},
    "server_tool_use": {"web_search_requests": 2},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PRICE_FIELDS))
def test_every_price_field_is_read_and_so_is_its_tier(name: str) -> None:
    """Each field PRICE_FIELDS names changes the cost of a usage with every kind of token, and so does its
    long-prompt tier: the list the catalog validates against is the list pricing reads."""
    base = {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}
    before = cost_of(base, _EVERY_KIND)
    assert before is not None
    raised = cost_of({**base, name: 1.0}, _EVERY_KIND)
    assert raised is not None and raised > before + 1
    tier = cost_of({**base, name: 1e-06, f"{name}_above_200k_tokens": 1.0}, _EVERY_KIND)
    assert tier is not None and tier > before + 1


def test_price_tables_are_read() -> None:
    assert not PRICE_TABLES & PRICE_FIELDS
    assert sorted(PRICE_TABLES) == ["search_context_cost_per_query"]
    base = {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}
    before = cost_of(base, _EVERY_KIND)
    table = {"search_context_cost_per_query": {"search_context_size_medium": 1.0}}
    assert before is not None and cost_of({**base, **table}, _EVERY_KIND) == pytest.approx(before + 2.0)


# --- long-prompt tiers -----------------------------------------------------------------------------


def test_tier_applies_above_200k_prompt_tokens_to_every_token() -> None:
    at_threshold = {"prompt_tokens": 200_000, "completion_tokens": 1000}
    assert cost_of(SONNET_LONG, at_threshold) == pytest.approx(200_000 * 3e-06 + 1000 * 1.5e-05, rel=1e-12)  # 0.615
    over = {"prompt_tokens": 250_000, "completion_tokens": 1000,
            "prompt_tokens_details": {"cached_tokens": 100_000, "cache_write_tokens": 50_000}}  # fmt: skip
    # 100K fresh x $6/M + 100K read x $0.60/M + 50K written x $7.50/M + 1000 out x $22.50/M
    assert cost_of(SONNET_LONG, over) == pytest.approx(0.6 + 0.06 + 0.375 + 0.0225, rel=1e-12)  # 1.0575
    # the threshold counts cache reads and writes: 1000 fresh + 199_500 read + 500 written = 201_000 > 200K
    cached = messages_usage_to_chat({"input_tokens": 1000, "cache_read_input_tokens": 199_500,
                                     "cache_creation_input_tokens": 500, "output_tokens": 10})  # fmt: skip
    expected = 1000 * 6e-06 + 199_500 * 6e-07 + 500 * 7.5e-06 + 10 * 2.25e-05
    assert cost_of(SONNET_LONG, cached) == pytest.approx(expected, rel=1e-12)


def test_gemini_pro_above_200k_with_thinking() -> None:
    usage = gemini_usage_to_chat({"promptTokenCount": 300_000, "cachedContentTokenCount": 100_000,
                                  "candidatesTokenCount": 2000, "thoughtsTokenCount": 3000})  # fmt: skip
    # 200K fresh x $2.50/M + 100K cached x $0.625/M + (2000 + 3000 thinking) out x $15/M
    assert cost_of(GEMINI_PRO, usage) == pytest.approx(0.5 + 0.0625 + 0.075, rel=1e-12)  # 0.6375
    small = gemini_usage_to_chat({"promptTokenCount": 1000, "candidatesTokenCount": 100, "thoughtsTokenCount": 50})
    assert cost_of(GEMINI_PRO, small) == pytest.approx(1000 * 1.25e-06 + 150 * 1e-05, rel=1e-12)


def test_a_price_without_a_tier_keeps_its_base_value() -> None:
    prices = {
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 2e-06,
        "input_cost_per_token_above_200k_tokens": 3e-06,
    }
    usage = {"prompt_tokens": 300_000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 1000}}
    # output keeps $2/M; reads have no price of their own, so they follow the (tiered) input price
    assert cost_of(prices, usage) == pytest.approx(300_000 * 3e-06 + 100 * 2e-06, rel=1e-12)


def test_reasoning_price_in_tiers() -> None:
    usage = {"prompt_tokens": 300_000, "completion_tokens": 100, "completion_tokens_details": {"reasoning_tokens": 60}}
    base = {
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 1e-05,
        "output_cost_per_token_above_200k_tokens": 2e-05,
    }
    # no reasoning price: reasoning follows the tiered output price
    assert cost_of(base, usage) == pytest.approx(100 * 2e-05, rel=1e-12)
    # a reasoning price without a tier keeps its base value (as in LiteLLM)
    priced = {**base, "output_cost_per_reasoning_token": 5e-06}
    assert cost_of(priced, usage) == pytest.approx(40 * 2e-05 + 60 * 5e-06, rel=1e-12)
    tiered = {**priced, "output_cost_per_reasoning_token_above_200k_tokens": 7e-06}
    assert cost_of(tiered, usage) == pytest.approx(40 * 2e-05 + 60 * 7e-06, rel=1e-12)


def test_of_several_thresholds_the_highest_exceeded_applies() -> None:
    prices = {
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 0.0,
        "input_cost_per_token_above_128k_tokens": 2e-06,
        "input_cost_per_token_above_272k_tokens": 4e-06,
        "input_cost_per_token_above_200000_tokens": 3e-06,  # LiteLLM also spells thresholds without the k
    }
    for prompt, rate in ((128_000, 1e-06), (128_001, 2e-06), (200_001, 3e-06), (272_000, 3e-06), (272_001, 4e-06)):
        assert cost_of(prices, {"prompt_tokens": prompt, "completion_tokens": 0}) == pytest.approx(prompt * rate)
    assert rates_for(prices, 300_000) == Rates(
        input=4e-06, output=0.0, cache_read=4e-06, cache_write=4e-06, reasoning=0.0, cache_write_1h=4e-06,
        input_audio=4e-06, cache_read_audio=4e-06, output_audio=0.0, output_image=0.0, web_search=0.0,
    )  # fmt: skip


# --- estimates -------------------------------------------------------------------------------------


def test_estimate() -> None:
    assert estimate(SONNET, 1000, 500) == pytest.approx(1000 * 3e-06 + 500 * 1.5e-05, rel=1e-12)
    assert estimate(SONNET_LONG, 250_000, 500) == pytest.approx(250_000 * 6e-06 + 500 * 2.25e-05, rel=1e-12)
    # output at the dearer of the output and reasoning prices: the split is not known before the answer
    thinking = {
        "input_cost_per_token": 1.5e-07,
        "output_cost_per_token": 6e-07,
        "output_cost_per_reasoning_token": 3.5e-06,
    }
    assert estimate(thinking, 100, 1000) == pytest.approx(100 * 1.5e-07 + 1000 * 3.5e-06, rel=1e-12)
    assert estimate(SONNET, 0, 0) == 0.0
    for prompt, output in ((-1, 10), (10, -1), ("10", 10), (10, None), (True, 10)):
        assert estimate(SONNET, prompt, output) is None  # type: ignore[arg-type]


def test_estimate_counts_only_the_dearer_kinds_a_request_may_be_billed_for() -> None:
    """A text request to a model with audio prices is estimated at text prices (a stream cut short is charged at
    that estimate; budgets reserve it); one carrying audio, or asking for an audio answer, at the audio ones."""
    audio_model = {"input_cost_per_token": 3e-07, "output_cost_per_token": 2.5e-06,
                   "input_cost_per_audio_token": 1e-06, "output_cost_per_audio_token": 2e-05}  # fmt: skip
    text = kinds_of({"messages": [{"role": "user", "content": "hi"}]})
    assert text == Kinds(audio_in=False, audio_out=False, image_out=True)
    assert estimate(audio_model, 1000, 100, text) == pytest.approx(1000 * 3e-07 + 100 * 2.5e-06, rel=1e-12)
    spoken = kinds_of({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is said?"},
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
    ]}]})  # fmt: skip
    assert spoken == Kinds(audio_in=True, audio_out=False, image_out=True)
    assert estimate(audio_model, 1000, 100, spoken) == pytest.approx(1000 * 1e-06 + 100 * 2.5e-06, rel=1e-12)
    answered_aloud = kinds_of({"messages": [], "modalities": ["text", "audio"], "audio": {"voice": "alloy"}})
    assert answered_aloud.audio_out and not answered_aloud.audio_in
    assert estimate(audio_model, 1000, 100, answered_aloud) == pytest.approx(1000 * 3e-07 + 100 * 2e-05, rel=1e-12)
    assert estimate(audio_model, 1000, 100) == estimate(audio_model, 1000, 100, ANY_KIND)  # unknown: the dearest
    assert estimate(audio_model, 1000, 100) == pytest.approx(1000 * 1e-06 + 100 * 2e-05, rel=1e-12)
    assert kinds_of({"messages": "not a list", "modalities": "audio"}) == Kinds(False, False, True)


def test_estimate_bounds_the_cost_of_any_answer_within_it() -> None:
    prices = {**O_SERIES, "output_cost_per_reasoning_token": 1.2e-05}
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "completion_tokens_details": {"reasoning_tokens": 500}}
    cost, bound = cost_of(prices, usage), estimate(prices, 1000, 500)
    assert cost is not None and bound is not None and cost <= bound


# --- properties ------------------------------------------------------------------------------------

_NAMES = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token",
    "input_cost_per_audio_token",
    "cache_read_input_audio_token_cost",
    "output_cost_per_audio_token",
    "output_cost_per_image_token",
)
_price = st.floats(min_value=0, max_value=1e-03, allow_nan=False, allow_infinity=False)


@st.composite
def price_tables(draw: st.DrawFn, names: tuple[str, ...] = _NAMES) -> dict[str, Any]:
    """Any subset of ``names`` (at least input or output), each maybe with a 200K tier no cheaper than it, and
    maybe a price per web search."""
    prices: dict[str, Any] = {}
    for name in names:
        base = draw(st.none() | _price)
        if base is None:
            continue
        prices[name] = base
        factor = draw(st.none() | st.floats(min_value=1, max_value=4))
        if factor is not None:
            prices[f"{name}_above_200k_tokens"] = base * factor
    search = draw(st.none() | st.floats(min_value=0, max_value=0.1))
    if search is not None:
        prices["search_context_cost_per_query"] = {"search_context_size_medium": search}
    assume("input_cost_per_token" in prices or "output_cost_per_token" in prices)
    return prices


_count = st.integers(min_value=0, max_value=400_000)
_PARTS = ("fresh", "fresh_audio", "reads", "reads_audio", "writes", "visible", "reasoning", "output_audio",
          "output_image", "searches")  # fmt: skip


def _usage(parts: dict[str, int]) -> dict[str, Any]:
    """A usage made of these parts, each at its place (``reads`` are the text ones, ``reads_audio`` the audio ones)."""
    reads = parts["reads"] + parts["reads_audio"]
    return {
        "prompt_tokens": parts["fresh"] + parts["fresh_audio"] + reads + parts["writes"],
        "completion_tokens": parts["visible"] + parts["reasoning"] + parts["output_audio"] + parts["output_image"],
        "prompt_tokens_details": {"cached_tokens": reads, "cache_write_tokens": parts["writes"],
                                  "audio_tokens": parts["fresh_audio"] + parts["reads_audio"],
                                  "cached_tokens_details": {"audio_tokens": parts["reads_audio"]}},
        "completion_tokens_details": {"reasoning_tokens": parts["reasoning"], "audio_tokens": parts["output_audio"],
                                      "image_tokens": parts["output_image"]},
        "server_tool_use": {"web_search_requests": parts["searches"]},
    }  # fmt: skip


@given(
    prices=price_tables(),
    parts=st.fixed_dictionaries(dict.fromkeys(_PARTS, _count)),
    grow=st.sampled_from(_PARTS),
    more=st.integers(min_value=0, max_value=300_000),
)
def test_cost_is_non_negative_and_grows_with_every_token_count(
    prices: dict[str, Any], parts: dict[str, int], grow: str, more: int
) -> None:
    cost = cost_of(prices, _usage(parts))
    assert cost is not None and cost >= 0 and math.isfinite(cost)
    bigger = cost_of(prices, _usage({**parts, grow: parts[grow] + more}))
    assert bigger is not None and bigger >= cost


@given(prices=price_tables(), parts=st.fixed_dictionaries(dict.fromkeys(_PARTS, _count)))
def test_an_unknown_cached_audio_split_costs_no_less_than_the_known_one(
    prices: dict[str, Any], parts: dict[str, int]
) -> None:
    """Without ``cached_tokens_details`` (OpenAI's Chat Completions), lockgate takes the dearest split the counts
    allow, at prices where audio's premium over text is no smaller fresh than cached (every provider's)."""
    usage = _usage(parts)
    rates = rates_for(prices, usage["prompt_tokens"])
    assert rates is not None
    assume(rates.input_audio - rates.input >= rates.cache_read_audio - rates.cache_read)
    known = cost_of(prices, usage)
    del usage["prompt_tokens_details"]["cached_tokens_details"]
    unknown = cost_of(prices, usage)
    assert known is not None and unknown is not None and unknown >= known * (1 - 1e-12)


# The totals property moves audio tokens between the fresh input and the reads as the prompt grows (the audio the
# fresh input cannot hold is taken as read), so it holds for prices in the providers' order: a cached audio price
# of its own would have to stay below the audio price at every tier. Leaving it out, cached audio follows the
# cache-read price (or the audio price), which keeps that order by construction.
_TOTALS_NAMES = tuple(name for name in _NAMES if name != "cache_read_input_audio_token_cost")


@given(
    prices=price_tables(_TOTALS_NAMES),
    prompt=_count,
    completion=_count,
    reads=_count,
    writes=_count,
    reasoning=_count,
    audio=_count,
    reads_audio=_count,
    output_audio=_count,
    output_image=_count,
    more_prompt=st.integers(min_value=0, max_value=300_000),
    more_completion=st.integers(min_value=0, max_value=300_000),
)
def test_cost_grows_with_the_reported_totals(
    prices: dict[str, Any],
    prompt: int,
    completion: int,
    reads: int,
    writes: int,
    reasoning: int,
    audio: int,
    reads_audio: int,
    output_audio: int,
    output_image: int,
    more_prompt: int,
    more_completion: int,
) -> None:
    """The same, for the raw totals with the details held still (including details that exceed them)."""

    def usage(p: int, c: int) -> dict[str, Any]:
        return {"prompt_tokens": p, "completion_tokens": c,
                "prompt_tokens_details": {"cached_tokens": reads, "cache_write_tokens": writes, "audio_tokens": audio,
                                          "cached_tokens_details": {"audio_tokens": reads_audio}},
                "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": output_audio,
                                              "image_tokens": output_image}}  # fmt: skip

    cost = cost_of(prices, usage(prompt, completion))
    assert cost is not None and cost >= 0
    more = cost_of(prices, usage(prompt + more_prompt, completion + more_completion))
    assert more is not None and more >= cost * (1 - 1e-12)
    bound = estimate(prices, prompt, completion)
    assert bound is not None and bound >= 0


@given(
    prices=price_tables(),
    text=_count,
    audio=_count,
    visible=_count,
    reasoning=_count,
    output_audio=_count,
    output_image=_count,
)
def test_estimate_bounds_the_tokens_of_any_answer_within_it(
    prices: dict[str, Any], text: int, audio: int, visible: int, reasoning: int, output_audio: int, output_image: int
) -> None:
    """Whatever the prompt's and the answer's mix of text, audio, reasoning and image, with no cache and no web
    search, the cost stays within the estimate for the same totals."""
    prompt, completion = text + audio, visible + reasoning + output_audio + output_image
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "prompt_tokens_details": {"audio_tokens": audio},
             "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": output_audio,
                                           "image_tokens": output_image}}  # fmt: skip
    cost, bound = cost_of(prices, usage), estimate(prices, prompt, completion)
    assert cost is not None and bound is not None and cost <= bound * (1 + 1e-12)


def test_one_hour_cache_writes_at_their_own_price() -> None:
    """Anthropic splits writes by cache lifetime (usage.cache_creation); a 1-hour write costs 2x input, a
    5-minute one 1.25x. Prices per MTok: input 5, output 25, 5m write 6.25, 1h write 10, read 0.5."""
    from lockgate.dialects.anthropic import messages_usage_to_chat

    prices = {
        "input_cost_per_token": 5e-06,
        "output_cost_per_token": 2.5e-05,
        "cache_read_input_token_cost": 5e-07,
        "cache_creation_input_token_cost": 6.25e-06,
        "cache_creation_input_token_cost_above_1hr": 1e-05,
    }
    usage = messages_usage_to_chat({
        "input_tokens": 100, "output_tokens": 200, "cache_read_input_tokens": 1_000,
        "cache_creation_input_tokens": 3_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000},
    })  # fmt: skip
    assert usage["prompt_tokens_details"]["cache_write_1h_tokens"] == 2_000
    # 100 x 5 + 1,000 x 0.5 + 1,000 x 6.25 + 2,000 x 10 + 200 x 25 = 32,250 per MTok
    assert cost_of(prices, usage) == pytest.approx(0.03225)
    without_1h_price = {k: v for k, v in prices.items() if k != "cache_creation_input_token_cost_above_1hr"}
    # every write at the 5-minute price: 100 x 5 + 500 + 3,000 x 6.25 + 5,000 = 24,750 per MTok
    assert cost_of(without_1h_price, usage) == pytest.approx(0.02475)


@given(prices=price_tables(), prompt=st.integers(min_value=0, max_value=400_000))
def test_a_price_table_read_once_gives_the_rates_of_its_mapping(prices: dict[str, Any], prompt: int) -> None:
    """The router reads each deployment's prices once (price_table) and prices every request from that."""
    assert rates_for(price_table(prices), prompt) == rates_for(prices, prompt)
