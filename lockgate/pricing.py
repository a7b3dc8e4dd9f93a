"""The cost of one request in USD, from a deployment's prices (its ``model_info``) and the usage of its answer.

Prices use LiteLLM's field names (:data:`PRICE_FIELDS`), USD per token: ``input_cost_per_token``,
``output_cost_per_token``, ``cache_read_input_token_cost``, ``cache_creation_input_token_cost``,
``cache_creation_input_token_cost_above_1hr``, ``output_cost_per_reasoning_token``; by modality
``input_cost_per_audio_token``, ``cache_read_input_audio_token_cost``, ``output_cost_per_audio_token`` and
``output_cost_per_image_token``; and for each a long-prompt tier ``<name>_above_<N>k_tokens`` (``_above_200k_tokens``,
``_above_272k_tokens``, ...). One price is a mapping (:data:`PRICE_TABLES`): ``search_context_cost_per_query``, USD
per web search by search context size (``search_context_size_low`` / ``_medium`` / ``_high``), without tiers. A price
is a number >= 0 or a numeric string (YAML reads ``3e-7`` as a string); anything else is treated as if it were
absent.

Usage is OpenAI-shaped, as lockgate normalises every provider's (``dialects.anthropic.messages_usage_to_chat``,
``dialects.gemini.gemini_usage_to_chat``)::

    prompt_tokens      = fresh input + cache reads + cache writes
        prompt_tokens_details.cached_tokens       (or top-level cache_read_input_tokens)      reads
        prompt_tokens_details.cache_write_tokens  (or top-level cache_creation_input_tokens)  writes
        prompt_tokens_details.cache_write_1h_tokens   of the writes, those for a one-hour cache (Anthropic)
        prompt_tokens_details.audio_tokens            audio input, cached audio included (OpenAI, Gemini)
        prompt_tokens_details.cached_tokens_details.audio_tokens   of the reads, the audio ones (Gemini)
    completion_tokens  = visible output + reasoning + audio output + image output
        completion_tokens_details.reasoning_tokens
        completion_tokens_details.audio_tokens    (OpenAI, Gemini)
        completion_tokens_details.image_tokens    (Gemini)
    server_tool_use.web_search_requests           web searches run by the provider (Anthropic; LiteLLM's place)

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
  output price. They are never counted twice: visible output = completion - reasoning - audio - image output.
- Audio input, a part of ``prompt_tokens`` that some models bill at a price of its own. OpenAI reports it as
  ``prompt_tokens_details.audio_tokens`` ("audio input tokens present in the prompt",
  https://platform.openai.com/docs/api-reference/chat/object) and bills gpt-audio's at $32 per MTok against $2.50
  for text (https://developers.openai.com/api/docs/models/gpt-audio); Gemini reports it in ``promptTokensDetails``
  (https://ai.google.dev/api/generate-content#UsageMetadata) and bills 2.5 Flash's at $1.00 against $0.30 for
  text, image and video, and its cached audio at $0.10 against $0.03 (https://ai.google.dev/gemini-api/docs/pricing).
  Both count a modality's cached tokens inside it: Gemini's ``cacheTokensDetails`` splits the cached tokens by
  modality, as OpenAI's Realtime usage does with ``cached_tokens_details``, whose cached audio is billed at its
  own price (gpt-realtime-1.5: $32 audio, $0.40 cached audio,
  https://developers.openai.com/api/docs/models/gpt-realtime-1.5).
  So fresh audio (audio - cached audio) is priced at ``input_cost_per_audio_token``, cached audio at
  ``cache_read_input_audio_token_cost``, and the rest of the fresh input and of the reads at the text prices.
  With no audio price audio is priced as text; cached audio with no price of its own at the cache-read price (as
  LiteLLM prices every cached token, ``generic_cost_per_token``), or at the audio price when the model has no
  cache-read price either (reads at the input price, as for text). When the usage does not say which reads were
  audio (OpenAI's Chat Completions usage does not), none are taken to be but those the fresh input cannot hold
  (audio - fresh), the split LiteLLM also makes: the dearest the counts allow wherever audio costs more over text
  fresh than cached (every provider above). Cache writes are priced as text: no provider lockgate serves reports
  audio ones.
- Audio and image output, parts of ``completion_tokens``: OpenAI's ``completion_tokens_details.audio_tokens``
  (gpt-audio: $64 per MTok against $10 for text), Gemini's ``candidatesTokensDetails`` (2.5 Flash Image: image
  output at $30 per MTok against $2.50 for text, https://ai.google.dev/gemini-api/docs/pricing), at
  ``output_cost_per_audio_token`` / ``output_cost_per_image_token``, else at the output price (as LiteLLM's
  ``generic_cost_per_token``).
- Web searches: Anthropic runs its web search tool server-side, reports ``usage.server_tool_use.web_search_requests``
  and bills $10 per 1,000 searches on top of the tokens
  (https://platform.claude.com/docs/en/agents-and-tools/tool-use/web-search-tool). Each is priced at
  ``search_context_cost_per_query["search_context_size_medium"]``: LiteLLM's field, which holds a price per search
  context size (an OpenAI request option) and which LiteLLM reads at the medium size for Anthropic
  (``get_cost_for_anthropic_web_search``); no price, no charge.
- Long prompts: when ``prompt_tokens`` (cache reads and writes included) is greater than N, each price that has
  an ``_above_<N>k_tokens`` (or ``_above_<N>_tokens``) variant is replaced by it, for every token of the request,
  output included; a price without a variant keeps its base value, and of several thresholds the prompt exceeds
  the highest applies (per price). This is how Anthropic bills prompts over 200K tokens on its 1M-context
  models (https://docs.anthropic.com/en/docs/about-claude/pricing#long-context-pricing) and Google bills
  Gemini 2.5 Pro prompts over 200K (https://ai.google.dev/gemini-api/docs/pricing), and what LiteLLM does
  (``_get_token_base_cost``: ``prompt_tokens > threshold``, each tiered price falling back to its base one).
  A price without its own variant keeps its base value, as in LiteLLM (reasoning, audio, image); one that is
  absent follows the (tiered) price it falls back to.

Counts that contradict their totals are read so the cost is never negative and never less than its parts:
reads + writes above ``prompt_tokens`` leave no fresh input (both still charged in full); fresh audio above the
fresh input leaves no fresh text (the audio still charged in full); reasoning, audio and image output above
``completion_tokens`` leave no visible output (still charged in full). A part of a part is held to it: one-hour
writes to the writes, cached audio to the reads.

Unknown cost is ``None``: prices with neither an input nor an output price (one of the two missing counts as 0),
or a usage that is missing or malformed (not a mapping; ``prompt_tokens`` absent; a count that is not a
non-negative int; details that are not a mapping). ``completion_tokens`` may be absent (embeddings report none)
and then counts as 0.

Not priced: per-second, per-character and per-image prices (lockgate serves no transcription, speech or
image-generation endpoint); image, video and document input apart from text (LiteLLM's
``input_cost_per_image_token``, ``input_cost_per_video_token``: Gemini bills them as text); audio cache writes;
OpenAI's web search in Chat Completions (its usage has no search count, and the fee depends on the request's
``search_context_size``); Gemini's grounding with Google Search (not counted in ``usageMetadata``) and other
server tools; batch/priority tiers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANY_KIND", "PRICE_FIELDS", "PRICE_TABLES", "Kinds", "PriceTable", "Rates", "cost_of", "estimate", "kinds_of",
    "price_table", "rates_for",
]  # fmt: skip

_INPUT = "input_cost_per_token"
_OUTPUT = "output_cost_per_token"
_CACHE_READ = "cache_read_input_token_cost"
_CACHE_WRITE = "cache_creation_input_token_cost"
_CACHE_WRITE_1H = "cache_creation_input_token_cost_above_1hr"
_REASONING = "output_cost_per_reasoning_token"
_INPUT_AUDIO = "input_cost_per_audio_token"
_CACHE_READ_AUDIO = "cache_read_input_audio_token_cost"
_OUTPUT_AUDIO = "output_cost_per_audio_token"
_OUTPUT_IMAGE = "output_cost_per_image_token"
_SEARCH = "search_context_cost_per_query"
_SEARCH_SIZE = "search_context_size_medium"  # the size LiteLLM reads for Anthropic, whose fee has none

PRICE_FIELDS: frozenset[str] = frozenset(
    {
        _INPUT,
        _OUTPUT,
        _CACHE_READ,
        _CACHE_WRITE,
        _CACHE_WRITE_1H,
        _REASONING,
        _INPUT_AUDIO,
        _CACHE_READ_AUDIO,
        _OUTPUT_AUDIO,
        _OUTPUT_IMAGE,
    }
)
"""The prices read, each a number (USD per token); each may also come as ``<name>_above_<N>k_tokens`` or
``<name>_above_<N>_tokens``, its long-prompt tier."""

PRICE_TABLES: frozenset[str] = frozenset({_SEARCH})
"""The prices read that are mappings, of names to numbers: ``search_context_cost_per_query`` (USD per web search
by ``search_context_size_low`` / ``_medium`` / ``_high``). They have no tiers."""

_TIER = re.compile(r"(?P<base>[a-z0-9_]+)_above_(?P<n>[0-9]+)(?P<k>k?)_tokens")


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token of each kind (per search for ``web_search``), for one request (long-prompt tiers already
    applied)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float
    cache_write_1h: float = 0.0
    input_audio: float = 0.0
    cache_read_audio: float = 0.0
    output_audio: float = 0.0
    output_image: float = 0.0
    web_search: float = 0.0


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


@dataclass(frozen=True, slots=True)
class PriceTable:
    """A deployment's prices read once (:func:`price_table`), for any prompt size: the valid prices by name, the
    long-prompt tiers by threshold, and the web search fee. The router keeps one per deployment, so a request's
    cost does not parse its prices again."""

    base: Mapping[str, float]
    tiers: tuple[tuple[int, str, float], ...] = ()
    """(threshold, price name, price), thresholds ascending."""
    web_search: float = 0.0


def price_table(prices: Mapping[str, Any]) -> PriceTable:
    """``prices`` (LiteLLM's field names) read: every valid price, its tiers apart (see the module docstring)."""
    base: dict[str, float] = {}
    tiers: list[tuple[int, str, float]] = []
    for name, value in prices.items():
        price = _price(value)
        if price is None or not isinstance(name, str):
            continue
        tier = _TIER.fullmatch(name)
        if tier is None:
            base[name] = price
        else:
            tiers.append((int(tier["n"]) * (1000 if tier["k"] else 1), tier["base"], price))
    tiers.sort(key=lambda tier: tier[0])  # stable: of two tiers at one threshold, the later in the mapping wins
    return PriceTable(base, tuple(tiers), _search_price(prices))


def _prices_at(table: PriceTable, prompt_tokens: int) -> Mapping[str, float]:
    """Every valid price by name, each replaced by its highest long-prompt tier below ``prompt_tokens``."""
    tiers = table.tiers
    if not tiers or prompt_tokens <= tiers[0][0]:
        return table.base
    found = dict(table.base)
    for threshold, name, price in tiers:  # ascending: a higher tier that applies replaces a lower one
        if prompt_tokens <= threshold:
            break
        found[name] = price
    return found


def _search_price(prices: Mapping[str, Any]) -> float:
    """USD per web search: ``search_context_cost_per_query`` at the medium size; 0 when not given."""
    table = prices.get(_SEARCH)
    price = _price(table.get(_SEARCH_SIZE)) if isinstance(table, Mapping) else None
    return 0.0 if price is None else price


def rates_for(prices: Mapping[str, Any] | PriceTable, prompt_tokens: int) -> Rates | None:
    """The rates a request with ``prompt_tokens`` of input pays; None when the prices have neither an input nor
    an output price."""
    if isinstance(prices, PriceTable):
        table = prices
    elif isinstance(prices, Mapping):
        table = price_table(prices)
    else:
        return None
    found = _prices_at(table, prompt_tokens)
    if _INPUT not in found and _OUTPUT not in found:
        return None
    input_rate, output_rate = found.get(_INPUT, 0.0), found.get(_OUTPUT, 0.0)
    cache_write = found.get(_CACHE_WRITE, input_rate)
    input_audio = found.get(_INPUT_AUDIO, input_rate)
    return Rates(
        input=input_rate,
        output=output_rate,
        cache_read=found.get(_CACHE_READ, input_rate),
        cache_write=cache_write,
        reasoning=found.get(_REASONING, output_rate),
        cache_write_1h=found.get(_CACHE_WRITE_1H, cache_write),
        input_audio=input_audio,
        cache_read_audio=found.get(_CACHE_READ_AUDIO, found.get(_CACHE_READ, input_audio)),
        output_audio=found.get(_OUTPUT_AUDIO, output_rate),
        output_image=found.get(_OUTPUT_IMAGE, output_rate),
        web_search=table.web_search,
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
    audio: int = 0  # of ``prompt``, the audio ones (cached audio included)
    reads_audio: int = 0  # of ``reads``, the audio ones, as reported (0 when not said)
    output_audio: int = 0  # of ``completion``
    output_image: int = 0  # of ``completion``
    web_searches: int = 0


def _tokens(usage: object) -> _Tokens | None:
    """The counts ``usage`` reports, or None when it is missing or malformed."""
    if not isinstance(usage, Mapping):
        return None
    details, output = usage.get("prompt_tokens_details"), usage.get("completion_tokens_details")
    cached = details.get("cached_tokens_details") if isinstance(details, Mapping) else None
    found = (
        _count(usage.get("prompt_tokens")),
        0 if usage.get("completion_tokens") is None else _count(usage["completion_tokens"]),
        _part(details, "cached_tokens", usage.get("cache_read_input_tokens")),
        _part(details, "cache_write_tokens", usage.get("cache_creation_input_tokens")),
        _part(output, "reasoning_tokens"),
        _part(details, "cache_write_1h_tokens"),
        _part(details, "audio_tokens"),
        _part(cached, "audio_tokens"),
        _part(output, "audio_tokens"),
        _part(output, "image_tokens"),
        _part(usage.get("server_tool_use"), "web_search_requests"),
    )
    counts = [count for count in found if isinstance(count, int)]
    if len(counts) != len(found):
        return None
    prompt, completion, reads, writes, reasoning, writes_1h, audio, reads_audio, *rest = counts
    output_audio, output_image, web_searches = rest
    return _Tokens(prompt, reads, writes, completion, reasoning, min(writes_1h, writes), audio,
                   min(reads_audio, reads), output_audio, output_image, web_searches)  # fmt: skip


def _cost(rates: Rates, tokens: _Tokens) -> float:
    fresh = max(0, tokens.prompt - tokens.reads - tokens.writes)
    # cached audio: as reported, and at least the audio the fresh input cannot hold
    reads_audio = min(tokens.reads, max(tokens.reads_audio, tokens.audio - fresh))
    fresh_audio = max(0, tokens.audio - reads_audio)
    visible = max(0, tokens.completion - tokens.reasoning - tokens.output_audio - tokens.output_image)
    return (
        max(0, fresh - fresh_audio) * rates.input
        + fresh_audio * rates.input_audio
        + (tokens.reads - reads_audio) * rates.cache_read
        + reads_audio * rates.cache_read_audio
        + (tokens.writes - tokens.writes_1h) * rates.cache_write
        + tokens.writes_1h * rates.cache_write_1h
        + visible * rates.output
        + tokens.reasoning * rates.reasoning
        + tokens.output_audio * rates.output_audio
        + tokens.output_image * rates.output_image
        + tokens.web_searches * rates.web_search
    )


def cost_of(prices: Mapping[str, Any] | PriceTable, usage: Mapping[str, Any] | None) -> float | None:
    """The USD cost of a request that used ``usage`` on a deployment with these prices; None when unknown (no
    input or output price, or a usage that is missing or malformed)."""
    tokens = _tokens(usage)
    if tokens is None:
        return None
    rates = rates_for(prices, tokens.prompt)
    return None if rates is None else _cost(rates, tokens)


@dataclass(frozen=True, slots=True)
class Kinds:
    """The dearer kinds of tokens beside text a request may be billed for, as far as its body tells
    (:func:`kinds_of`); :data:`ANY_KIND` when nothing is known."""

    audio_in: bool = True
    audio_out: bool = True
    image_out: bool = True


ANY_KIND = Kinds()


def kinds_of(body: Mapping[str, Any]) -> Kinds:
    """What a request body (OpenAI's or Anthropic's shape) may be billed for beside text: audio input when a message
    holds an ``input_audio`` part (OpenAI's; Gemini's audio arrives that way too, Anthropic takes none), audio output
    when it asks for it (``modalities`` with ``audio``, or ``audio``: OpenAI answers no audio otherwise), image output
    always (an image model may answer with images unasked)."""
    modalities = body.get("modalities")
    audio_out = body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities)
    audio_in = False
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, Mapping) else None
            if isinstance(content, list) and any(
                isinstance(part, Mapping) and part.get("type") == "input_audio" for part in content
            ):
                audio_in = True
                break
    return Kinds(audio_in=audio_in, audio_out=audio_out, image_out=True)


def estimate(
    prices: Mapping[str, Any] | PriceTable, prompt_tokens: int, max_output_tokens: int, kinds: Kinds = ANY_KIND
) -> float | None:
    """An upper bound, before the request is sent (or when its usage never came), on the cost of its tokens:
    ``prompt_tokens`` of fresh input (no cache assumed) at the text input price, or the audio one if dearer and the
    request may hold audio, and ``max_output_tokens`` at the dearest of the output and reasoning prices and of the
    audio and image output prices the request may be billed for (``kinds``: by default all of them); web searches
    are not counted (how many is not known before the answer). None when the prices are unknown or a count is not
    a non-negative int."""
    prompt, output = _count(prompt_tokens), _count(max_output_tokens)
    if prompt is None or output is None:
        return None
    rates = rates_for(prices, prompt)
    if rates is None:
        return None
    input_rate = max(rates.input, rates.input_audio) if kinds.audio_in else rates.input
    dearest_output = max(
        rates.output,
        rates.reasoning,
        rates.output_audio if kinds.audio_out else 0.0,
        rates.output_image if kinds.image_out else 0.0,
    )
    return prompt * input_rate + output * dearest_output
