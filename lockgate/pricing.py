"""The cost of one request in USD, from a deployment's prices (its ``model_info``) and the usage of its answer.

Prices use LiteLLM's field names, USD per token: ``input_cost_per_token``, ``output_cost_per_token``,
``cache_read_input_token_cost``, ``cache_creation_input_token_cost``, ``output_cost_per_reasoning_token``, and
for each a long-prompt tier ``<name>_above_<N>k_tokens`` (``_above_200k_tokens``, ``_above_272k_tokens``, ...).
A price is a number >= 0 or a numeric string (YAML reads ``3e-7`` as a string); anything else is treated as if
it were absent.

Usage is OpenAI-shaped, as lockgate normalises every provider's (``dialects.anthropic.messages_usage_to_chat``,
``dialects.gemini``)::

    prompt_tokens      = fresh input + cache reads + cache writes
        prompt_tokens_details.cached_tokens       (or top-level cache_read_input_tokens)      reads
        prompt_tokens_details.cache_write_tokens  (or top-level cache_creation_input_tokens)  writes
        prompt_tokens_details.cache_write_1h_tokens   of the writes, those for a one-hour cache (Anthropic)
    completion_tokens  = visible output + reasoning
        completion_tokens_details.reasoning_tokens

How it is priced, and where each rule comes from:

- Fresh input (prompt - reads - writes) at ``input_cost_per_token``; reads at ``cache_read_input_token_cost``
  and writes at ``cache_creation_input_token_cost``, each at the input price when the model has none; the
  one-hour writes (Anthropic's ``usage.cache_creation.ephemeral_1h_input_tokens``) at
  ``cache_creation_input_token_cost_above_1hr``, else at the write price.
  Anthropic reports ``input_tokens`` without the cache and bills writes at 1.25x (5-minute) or 2x (1-hour) the
  base input price and reads at 0.1x (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching);
  OpenAI counts ``cached_tokens`` inside ``prompt_tokens``, bills them at its cached-input price and charges
  nothing extra for writing (https://platform.openai.com/docs/guides/prompt-caching), hence the input price for
  a write when no write price is given. LiteLLM prices a cache read or write with no price of its own at 0
  (``litellm_core_utils/llm_cost_calc/utils.py``, ``_get_token_base_cost``); lockgate does not: a missing read price
  over-counts (reads at the input price), a missing write price under-counts where the provider charges a
  premium for writes (Anthropic: 1.25x / 2x input), so catalog entries for such providers carry write prices.
- Output at ``output_cost_per_token``; reasoning tokens, which are part of ``completion_tokens`` and billed as
  output (https://platform.openai.com/docs/guides/reasoning; Gemini's thinking tokens likewise,
  https://ai.google.dev/gemini-api/docs/pricing), at ``output_cost_per_reasoning_token`` when set, else the
  output price. They are never counted twice: visible output = completion - reasoning.
- Long prompts: when ``prompt_tokens`` (cache reads and writes included) is greater than N, each price that has
  an ``_above_<N>k_tokens`` (or ``_above_<N>_tokens``) variant is replaced by it, for every token of the request,
  output included; a price without a variant keeps its base value, and of several thresholds the prompt exceeds
  the highest applies (per price). This is how Anthropic bills prompts over 200K tokens on its 1M-context
  models (https://docs.anthropic.com/en/docs/about-claude/pricing#long-context-pricing) and Google bills
  Gemini 2.5 Pro prompts over 200K (https://ai.google.dev/gemini-api/docs/pricing), and what LiteLLM does
  (``_get_token_base_cost``: ``prompt_tokens > threshold``, each tiered price falling back to its base one).
  A reasoning price without its own variant keeps its base value, as in LiteLLM; with no reasoning price at all,
  reasoning follows the (tiered) output price.

Counts that contradict their totals are read so the cost is never negative and never less than its parts:
reads + writes above ``prompt_tokens`` leave no fresh input (both still charged in full); reasoning above
``completion_tokens`` leaves no visible output (reasoning still charged in full).

Unknown cost is ``None``: prices with neither an input nor an output price (one of the two missing counts as 0),
or a usage that is missing or malformed (not a mapping; ``prompt_tokens`` absent; a count that is not a
non-negative int). ``completion_tokens`` may be absent (embeddings report none) and then counts as 0.

Not priced: per-second, per-image, audio and tool-call prices, batch/priority tiers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Rates", "cost_of", "estimate", "rates_for"]

_INPUT = "input_cost_per_token"
_OUTPUT = "output_cost_per_token"
_CACHE_READ = "cache_read_input_token_cost"
_CACHE_WRITE = "cache_creation_input_token_cost"
_CACHE_WRITE_1H = "cache_creation_input_token_cost_above_1hr"
_REASONING = "output_cost_per_reasoning_token"
_TIER = re.compile(r"(?P<base>[a-z_]+)_above_(?P<n>[0-9]+)(?P<k>k?)_tokens")


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token of each kind, for one request (long-prompt tiers already applied)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float
    cache_write_1h: float = 0.0


def _price(value: object) -> float | None:
    """A price as a float, or None when it is not a finite number >= 0 (or a string holding one)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    try:
        price = float(value)
    except OverflowError:
        return None
    return price if math.isfinite(price) and price >= 0 else None


def _prices_at(prices: Mapping[str, Any], prompt_tokens: int) -> dict[str, float]:
    """Every valid price by name, each replaced by its highest long-prompt tier below ``prompt_tokens``."""
    base: dict[str, float] = {}
    tiers: dict[str, tuple[int, float]] = {}  # name -> (threshold, price) of the highest tier that applies
    for name, value in prices.items():
        price = _price(value)
        if price is None or not isinstance(name, str):
            continue
        tier = _TIER.fullmatch(name)
        if tier is None:
            base[name] = price
            continue
        threshold = int(tier["n"]) * (1000 if tier["k"] else 1)
        if prompt_tokens > threshold and threshold >= tiers.get(tier["base"], (-1, 0.0))[0]:
            tiers[tier["base"]] = (threshold, price)
    return base | {name: price for name, (_, price) in tiers.items()}


def rates_for(prices: Mapping[str, Any], prompt_tokens: int) -> Rates | None:
    """The rates a request with ``prompt_tokens`` of input pays; None when the prices have neither an input nor
    an output price."""
    if not isinstance(prices, Mapping):
        return None
    found = _prices_at(prices, prompt_tokens)
    if _INPUT not in found and _OUTPUT not in found:
        return None
    input_rate, output_rate = found.get(_INPUT, 0.0), found.get(_OUTPUT, 0.0)
    return Rates(
        input=input_rate,
        output=output_rate,
        cache_read=found.get(_CACHE_READ, input_rate),
        cache_write=found.get(_CACHE_WRITE, input_rate),
        reasoning=found.get(_REASONING, output_rate),
        cache_write_1h=found.get(_CACHE_WRITE_1H, found.get(_CACHE_WRITE, input_rate)),
    )


def _count(value: object) -> int | None:
    """A token count: a non-negative int (not a bool); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


_MALFORMED = object()


def _part(details: object, field: str, fallback: object = None) -> object:
    """A part of a total: ``details[field]`` when non-zero, else ``fallback`` (LiteLLM's top-level field), else 0;
    ``_MALFORMED`` when either is present but not a count, or the details are not a mapping."""
    if details is not None and not isinstance(details, Mapping):
        return _MALFORMED
    for value in (None if details is None else details.get(field), fallback):
        if value is None:
            continue
        count = _count(value)
        if count is None:
            return _MALFORMED
        if count:
            return count
    return 0


@dataclass(frozen=True, slots=True)
class _Tokens:
    prompt: int
    reads: int
    writes: int
    completion: int
    reasoning: int
    writes_1h: int = 0  # of ``writes``, those for a one-hour cache lifetime


def _tokens(usage: object) -> _Tokens | None:
    """The counts ``usage`` reports, or None when it is missing or malformed."""
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = 0 if usage.get("completion_tokens") is None else _count(usage["completion_tokens"])
    details = usage.get("prompt_tokens_details")
    reads = _part(details, "cached_tokens", usage.get("cache_read_input_tokens"))
    writes = _part(details, "cache_write_tokens", usage.get("cache_creation_input_tokens"))
    reasoning = _part(usage.get("completion_tokens_details"), "reasoning_tokens")
    writes_1h = _part(details, "cache_write_1h_tokens")
    if prompt is None or completion is None:
        return None
    if (
        not isinstance(reads, int)
        or not isinstance(writes, int)
        or not isinstance(reasoning, int)
        or not isinstance(writes_1h, int)
    ):
        return None
    return _Tokens(prompt, reads, writes, completion, reasoning, min(writes_1h, writes))


def _cost(rates: Rates, tokens: _Tokens) -> float:
    fresh = max(0, tokens.prompt - tokens.reads - tokens.writes)
    visible = max(0, tokens.completion - tokens.reasoning)
    return (
        fresh * rates.input
        + tokens.reads * rates.cache_read
        + (tokens.writes - tokens.writes_1h) * rates.cache_write
        + tokens.writes_1h * rates.cache_write_1h
        + visible * rates.output
        + tokens.reasoning * rates.reasoning
    )


def cost_of(prices: Mapping[str, Any], usage: Mapping[str, Any] | None) -> float | None:
    """The USD cost of a request that used ``usage`` on a deployment with these prices; None when unknown (no
    input or output price, or a usage that is missing or malformed)."""
    tokens = _tokens(usage)
    if tokens is None:
        return None
    rates = rates_for(prices, tokens.prompt)
    return None if rates is None else _cost(rates, tokens)


def estimate(prices: Mapping[str, Any], prompt_tokens: int, max_output_tokens: int) -> float | None:
    """An upper bound, before the request is sent, on its cost: ``prompt_tokens`` of fresh input (no cache
    assumed) and ``max_output_tokens`` of output at the dearer of the output and reasoning prices; None when the
    prices are unknown or a count is not a non-negative int."""
    prompt, output = _count(prompt_tokens), _count(max_output_tokens)
    if prompt is None or output is None:
        return None
    rates = rates_for(prices, prompt)
    if rates is None:
        return None
    return prompt * rates.input + output * max(rates.output, rates.reasoning)
