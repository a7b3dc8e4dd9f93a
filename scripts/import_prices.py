"""Import Gemini, Bedrock and Azure prices from pydantic's genai-prices into ``lockgate/catalog/prices.json``.

lockgate's own entries (``anthropic/``, ``openai/``) were read on the providers' pages by its maintainers. The
price pages of Gemini, Bedrock and Azure could not be read here, so their entries are transcribed from the
genai-prices dataset (https://github.com/pydantic/genai-prices, the version pinned in pyproject.toml's dev extra),
whose comments cite the providers' pages. Each such entry says so: ``via: "genai-prices <version>"``, ``source``
the provider's pricing page as genai-prices names it, ``checked`` the day of the import. This script rewrites
those entries (every entry with ``via``) and nothing else: not the hand-read entries, not the top-level
``checked``. Run it from the repository root, with the dev extra installed::

    .venv/bin/python scripts/import_prices.py                   # import the prices in force today (UTC)
    .venv/bin/python scripts/import_prices.py --day 2026-11-24  # those in force that day: repeats an import

It prints what it left out and why, and every difference between the hand-read ``anthropic/`` and ``openai/``
entries and genai-prices' prices for the same models, for a maintainer to judge (it changes none of them).
``tests/test_catalog.py`` recomputes the imported entries from the installed genai-prices and fails on any
difference, so the snapshot stays reproducible and a hand edit of an imported entry is caught.

What is imported, from genai-prices' providers::

    gemini/<id>    google: ``gemini-*`` models (the Gemini API), by genai-prices' id and its exact (``equals``)
                   aliases, not the moving ``*-latest`` ones; source: its ai.google.dev pricing URL
    bedrock/<id>   aws: by the Bedrock model ids users write (see _bedrock_keys); source: aws.amazon.com/bedrock/pricing
    azure/<model>  azure: by its id and exact aliases; genai-prices gives Azure's "Global" deployment prices

Fields, genai-prices' USD per million tokens divided by 10^6 into LiteLLM's names (_FIELDS): input, output, cache
read, cache write (``cache_creation_input_token_cost``), one-hour cache write (``..._above_1hr``), reasoning, audio
input, cached audio, audio output, image output. Context windows are not imported (a wrong limit would make
lockgate refuse requests).

Long prompts: genai-prices' ``TieredPrices`` price every token of the request at the tier's price once the request's
input tokens (cache included) exceed the tier's start (``genai_prices.types.calc_unit_price``: ``if
total_input_tokens > tier.start: applicable_price = tier.price``, then ``unit_price = applicable_price *
decimal_count``; ``total_input_tokens = usage_data.input_tokens``), per price, a price without tiers keeping its
base value: lockgate's ``<field>_above_<N>k_tokens`` exactly (pricing.py), so tiers are imported as such.

Prices that change over time: the one genai-prices applies on the import day (``ModelInfo.get_prices`` at noon
UTC; its last ``ConditionalPrice`` whose start date has come); a price change genai-prices already knows of is
printed. Batch, flex and priority variants (``price_variants``) are not imported: lockgate prices standard requests.

Left out, and listed (a partial price would charge too little): a model with a price lockgate cannot charge (per
request, per second, video output, image or video input dearer or cheaper than text, a fee of unknown unit), a
time-of-day price, no input price, no output price (unless an embedding model), a price genai-prices says it did
not find on the provider's page, a Gemini price read on a Google Cloud page (Vertex AI, Cloud TTS) only, and a
Bedrock model whose id cannot be derived. Gemini's grounding fee (per search) is dropped, not charged, as
lockgate does not count grounding searches (pricing.py); the models it is dropped from are listed.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

from genai_prices.data import providers as genai_providers
from genai_prices.types import (
    ClauseAnd,
    ClauseContains,
    ClauseEndsWith,
    ClauseEquals,
    ClauseOr,
    ClauseStartsWith,
    ModelInfo,
    ModelPrice,
    Provider,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)

from lockgate.catalog import Catalog
from lockgate.pricing import PRICE_FIELDS

CATALOG = Path(__file__).resolve().parents[1] / "lockgate" / "catalog" / "prices.json"
VIA = f"genai-prices {version('genai-prices')}"

# genai-prices' price keys (USD per million tokens) -> lockgate's (LiteLLM's) fields, USD per token, in entry order.
_FIELDS: dict[str, str] = {
    "input_mtok": "input_cost_per_token",
    "output_mtok": "output_cost_per_token",
    "cache_read_mtok": "cache_read_input_token_cost",
    "cache_write_mtok": "cache_creation_input_token_cost",
    "cache_write_1h_mtok": "cache_creation_input_token_cost_above_1hr",
    "output_reasoning_mtok": "output_cost_per_reasoning_token",
    "input_audio_mtok": "input_cost_per_audio_token",
    "cache_audio_read_mtok": "cache_read_input_audio_token_cost",
    "output_audio_mtok": "output_cost_per_audio_token",
    "output_image_mtok": "output_cost_per_image_token",
}
assert set(_FIELDS.values()) <= PRICE_FIELDS
# Input kinds lockgate prices as text input: importable only when their price is the text input price.
_AS_INPUT = ("input_image_mtok", "input_video_mtok")
# genai-prices says of these that the price was not read on the provider's page.
_NOT_FROM_THE_PROVIDER = re.compile(
    r"can't find|cannot find|could not find|could not be read|not yet published|imported from openrouter", re.I
)

# Bedrock model ids where genai-prices' model id is not the one Bedrock takes. Claude from the 4.6 generation on
# has dateless ids without the -v1:0 suffix, but Opus 4.6 (-v1); Opus 4.5 carries its date
# (https://platform.claude.com/docs/en/about-claude/models/model-ids-and-versions, and the "Base Bedrock model ID"
# table of https://platform.claude.com/docs/en/build-with-claude/claude-on-amazon-bedrock-legacy). The NVIDIA ids
# have no :0 and Qwen3 VL no -v1:0 (AWS's model cards, such as
# https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-nvidia-nemotron-nano-3-30b.html, and the modelId
# ListFoundationModels returns). Checked 2026-11-24; a model genai-prices adds may need a line here.
_BEDROCK_IDS: dict[str, str] = {
    "global.anthropic.claude-fable-5-v1:0": "global.anthropic.claude-fable-5",
    "global.anthropic.claude-fable-5-1-v1:0": "global.anthropic.claude-fable-5-1",
    "global.anthropic.claude-opus-4-5-v1:0": "global.anthropic.claude-opus-4-5-20251101-v1:0",
    "global.anthropic.claude-opus-4-6-v1:0": "global.anthropic.claude-opus-4-6-v1",
    "global.anthropic.claude-opus-4-7-v1:0": "global.anthropic.claude-opus-4-7",
    "global.anthropic.claude-opus-4-8-v1:0": "global.anthropic.claude-opus-4-8",
    "global.anthropic.claude-sonnet-4-6-v1:0": "global.anthropic.claude-sonnet-4-6",
    "global.anthropic.claude-sonnet-5-v1:0": "global.anthropic.claude-sonnet-5",
    "regional.anthropic.claude-fable-5-v1:0": "anthropic.claude-fable-5",
    "regional.anthropic.claude-fable-5-1-v1:0": "anthropic.claude-fable-5-1",
    "regional.anthropic.claude-opus-4-5-v1:0": "anthropic.claude-opus-4-5-20251101-v1:0",
    "regional.anthropic.claude-opus-4-6-v1:0": "anthropic.claude-opus-4-6-v1",
    "regional.anthropic.claude-opus-4-7-v1:0": "anthropic.claude-opus-4-7",
    "regional.anthropic.claude-opus-4-8-v1:0": "anthropic.claude-opus-4-8",
    "regional.anthropic.claude-sonnet-4-6-v1:0": "anthropic.claude-sonnet-4-6",
    "regional.anthropic.claude-sonnet-5-v1:0": "anthropic.claude-sonnet-5",
    "nvidia.nemotron-nano-3-30b:0": "nvidia.nemotron-nano-3-30b",
    "nvidia.nemotron-nano-9b-v2:0": "nvidia.nemotron-nano-9b-v2",
    "nvidia.nemotron-super-3-120b:0": "nvidia.nemotron-super-3-120b",
    "qwen.qwen3-vl-235b-a22b-v1:0": "qwen.qwen3-vl-235b-a22b",
}
# Bedrock's geographic cross-region profiles, as genai-prices' regional match clauses name them.
_GEOS = ("us", "eu", "apac", "jp", "au", "us-gov", "in")
_BEDROCK_ID = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z0-9.-]+(?::[0-9]+)?")
_DATED_CLAUDE = re.compile(r".*-[0-9]{8}-v[0-9]+:[0-9]+")


@dataclass
class Import:
    """What one import produced: the entries, and what it left out or dropped, for the maintainer."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- prices ---------------------------------------------------------------------------------------------------


def _per_token(per_million: Decimal) -> float:
    return float(per_million / Decimal(1_000_000))


def _tier_suffix(start: int) -> str:
    """lockgate's suffix for a tier that starts above ``start`` prompt tokens (pricing.py: ``prompt_tokens > N``)."""
    return f"_above_{start // 1000}k_tokens" if start % 1000 == 0 else f"_above_{start}_tokens"


def _price_on(model: ModelInfo, day: date) -> ModelPrice | str:
    """The standard price genai-prices applies on ``day``, or why there is none lockgate can use."""
    if isinstance(model.prices, list) and any(isinstance(c.constraint, TimeOfDateConstraint) for c in model.prices):
        return "a price by time of day"
    return model.get_prices(datetime.combine(day, time(12), tzinfo=UTC))


def _changes_after(model: ModelInfo, day: date) -> list[date]:
    if not isinstance(model.prices, list):
        return []
    starts = (c.constraint.start_date for c in model.prices if isinstance(c.constraint, StartDateConstraint))
    return sorted(start for start in starts if start > day)


def _stated(price: ModelPrice) -> dict[str, Decimal | TieredPrices]:
    return {k: v for k, v in vars(price).items() if not k.startswith("_") and v is not None}


def _fields(price: ModelPrice, uncharged: frozenset[str]) -> tuple[dict[str, float], list[str]] | str:
    """The entry's prices (base fields in _FIELDS order, then tiers by threshold) and the uncharged fees dropped;
    or why lockgate cannot charge this price."""
    stated = _stated(price)
    base: dict[str, float] = {}
    tiers: list[tuple[int, int, str, float]] = []
    dropped: list[str] = []
    order = list(_FIELDS)
    for key, value in stated.items():
        if key in _FIELDS:
            name = _FIELDS[key]
            if isinstance(value, TieredPrices):
                base[name] = _per_token(value.base)
                for tier in value.tiers:
                    if not isinstance(tier.start, int) or tier.start <= 0:
                        return f"a tier lockgate cannot state: {key} from {tier.start!r}"
                    tiers.append(
                        (tier.start, order.index(key), name + _tier_suffix(tier.start), _per_token(tier.price))
                    )
            else:
                base[name] = _per_token(value)
        elif key in _AS_INPUT:
            if value != stated.get("input_mtok"):
                return f"{key} differs from the text input price (lockgate prices it as text input)"
        elif key in uncharged:
            dropped.append(key)
        else:
            return f"a price lockgate cannot charge: {key}"
    ordered = {_FIELDS[k]: base[_FIELDS[k]] for k in order if _FIELDS[k] in base}
    return ordered | {name: value for _, _, name, value in sorted(tiers)}, dropped


# --- which keys a model is priced under ------------------------------------------------------------------------


def _literals(clause: object) -> Iterator[tuple[str, str]]:
    """(kind, text) of each literal in a genai-prices match clause (regex clauses have none)."""
    if isinstance(clause, ClauseOr):
        for each in clause.or_:
            yield from _literals(each)
    elif isinstance(clause, ClauseAnd):
        for each in clause.and_:
            yield from _literals(each)
    elif isinstance(clause, ClauseEquals):
        yield "equals", clause.equals
    elif isinstance(clause, ClauseStartsWith):
        yield "starts_with", clause.starts_with
    elif isinstance(clause, ClauseContains):
        yield "contains", clause.contains
    elif isinstance(clause, ClauseEndsWith):
        yield "ends_with", clause.ends_with


def _own(provider: Provider, model: ModelInfo, keys: list[str]) -> list[str]:
    """``keys`` (once each) that genai-prices itself prices with ``model``: no key takes another model's price."""
    return [key for key in dict.fromkeys(keys) if provider.find_model(key) is model]


def _exact_keys(provider: Provider, model: ModelInfo) -> list[str]:
    """The model's id and its exact (``equals``) aliases."""
    return _own(provider, model, [model.id, *(text for kind, text in _literals(model.match) if kind == "equals")])


def _gemini_keys(provider: Provider, model: ModelInfo) -> list[str]:
    return [key for key in _exact_keys(provider, model) if key.startswith("gemini-") and not key.endswith("-latest")]


def _bedrock_id(model: ModelInfo) -> str | None:
    """The Bedrock id genai-prices' model id stands for: its own, corrected by _BEDROCK_IDS, or without
    genai-prices' ``regional.`` label; None when it is not a Bedrock model id (an undated Claude id with a
    version suffix, other than those _BEDROCK_IDS corrects, is taken for one of genai-prices' made-up ids)."""
    if model.id in _BEDROCK_IDS:
        return _BEDROCK_IDS[model.id]
    bedrock_id = model.id.removeprefix("regional.")
    if not _BEDROCK_ID.fullmatch(bedrock_id):
        return None
    if (
        "anthropic.claude-" in bedrock_id
        and not _DATED_CLAUDE.fullmatch(bedrock_id)
        and re.search(r"-v[0-9]", bedrock_id)
    ):
        return None
    return bedrock_id


def _bedrock_keys(provider: Provider, model: ModelInfo) -> list[str]:
    """The Bedrock id; for genai-prices' ``regional.`` models (in-region and geographic profiles, priced apart from
    ``global.``) also each geographic profile its match names (``us.<id>``, ...). Those lockgate reaches by
    stripping the profile are dropped later (_explicit_profiles)."""
    bedrock_id = _bedrock_id(model)
    if bedrock_id is None:
        return []
    keys = [bedrock_id]
    if model.id.startswith("regional."):
        named = {text.lstrip("/").partition(".")[0] for _, text in _literals(model.match)}
        keys += [f"{geo}.{bedrock_id}" for geo in _GEOS if geo in named]
    return _own(provider, model, keys)


def _explicit_profiles(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``entries`` without the Bedrock profile keys (``bedrock/us.<id>``) whose price lockgate's lookup already finds
    through the profile-stripped key: one entry per price, a profile key only where it is needed."""
    bases = {key: entry for key, entry in entries.items() if not _is_profile(key)}
    catalog = Catalog(models=bases, providers={key: key.partition("/")[0] for key in bases})
    kept = dict(bases)
    for key, entry in entries.items():
        if _is_profile(key):
            found = catalog.find("bedrock", key.partition("/")[2])
            if found is None or found[1] != entry:
                kept[key] = entry
    return kept


def _is_profile(key: str) -> bool:
    provider, _, model = key.partition("/")
    return provider == "bedrock" and model.partition(".")[0] in _GEOS


# --- the import -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    name: str  # lockgate's provider
    genai: str  # genai-prices' provider id
    page: str  # which of genai-prices' pricing URLs is the source
    keys: Callable[[Provider, ModelInfo], list[str]]
    models: Callable[[ModelInfo], bool] = lambda model: True
    uncharged: frozenset[str] = frozenset()
    only_google_cloud: bool = False  # leave out prices read on a Google Cloud page only


SOURCES = (
    _Source(
        "gemini",
        "google",
        "ai.google.dev",
        _gemini_keys,
        models=lambda model: model.id.startswith("gemini-"),  # lockgate's gemini provider is the Gemini API
        uncharged=frozenset({"web_searches_kcount"}),  # grounding searches: lockgate does not count them
        only_google_cloud=True,
    ),
    _Source("bedrock", "aws", "aws.amazon.com/bedrock/pricing", _bedrock_keys),
    _Source("azure", "azure", "azure.microsoft.com", _exact_keys),  # genai-prices: Azure's "Global" prices
    # lockgate's OpenAI-compatible hosted providers (self-hosted vLLM and Ollama have no prices to import)
    _Source("deepseek", "deepseek", "api-docs.deepseek.com", _exact_keys),
    _Source("groq", "groq", "console.groq.com", _exact_keys),
    _Source("mistral", "mistral", "mistral.ai", _exact_keys),
    _Source("openrouter", "openrouter", "openrouter.ai", _exact_keys),
    _Source("together_ai", "together", "together.ai", _exact_keys),
)


def _provider(genai_id: str) -> Provider:
    return next(p for p in genai_providers if p.id == genai_id)


def _page(provider: Provider, part: str) -> str:
    pages = [url for url in provider.pricing_urls or () if part in url and url.startswith("https://")]
    if len(pages) != 1:
        raise SystemExit(
            f"genai-prices' {provider.id} has no single pricing URL with {part!r}: {provider.pricing_urls}"
        )
    return pages[0]


def _why_not(source: _Source, model: ModelInfo) -> str | None:
    comment = model.price_comments or ""
    if _NOT_FROM_THE_PROVIDER.search(comment):
        return f"genai-prices says the price was not read on the provider's page ({comment[:90]!r}...)"
    if source.only_google_cloud and "cloud.google.com" in comment and "ai.google.dev" not in comment:
        return "priced from a Google Cloud page (Vertex AI or Cloud TTS) only, not the Gemini API's"
    return None


def _import_model(source: _Source, provider: Provider, model: ModelInfo, page: str, day: date, out: Import) -> None:
    where = f"{source.name}: {model.id}"
    reason = _why_not(source, model)
    price = _price_on(model, day)
    found = _fields(price, source.uncharged) if isinstance(price, ModelPrice) else price
    keys = source.keys(provider, model)
    if reason is None and isinstance(found, str):
        reason = found
    if reason is None and not keys:
        reason = "no model id to key it by (see _bedrock_keys / _gemini_keys)"
    if reason is None and isinstance(found, tuple) and "input_cost_per_token" not in found[0]:
        reason = "no input price"
    if reason is not None or not isinstance(found, tuple):
        out.left_out.append(f"{where}: {reason}")
        return
    prices, dropped = found
    provenance = {"source": page, "checked": day.isoformat(), "via": VIA}
    for key in keys:
        if "output_cost_per_token" not in prices and "embed" not in key:
            out.left_out.append(f"{where}: {key}: no output price (not an embedding model)")
            continue
        out.entries[f"{source.name}/{key}"] = prices | provenance
    if dropped:
        out.notes.append(f"{where}: dropped {', '.join(dropped)} (not charged by lockgate)")
    for change in _changes_after(model, day):
        out.notes.append(f"{where}: genai-prices has a new price from {change.isoformat()}: re-run the import then")
    # (Bedrock's equals clauses also name bare Claude ids and profiles lockgate reaches by stripping: not listed)
    aliases = [text for kind, text in _literals(model.match) if kind == "equals" and text not in keys]
    if aliases and source.name != "bedrock":
        out.notes.append(f"{where}: aliases not keyed: {', '.join(aliases)}")


def import_prices(day: date) -> Import:
    """The entries genai-prices gives for ``day``, with what was left out and dropped."""
    out = Import()
    for source in SOURCES:
        provider = _provider(source.genai)
        page = _page(provider, source.page)
        for model in provider.models:
            if source.models(model):
                _import_model(source, provider, model, page, day, out)
    out.entries = dict(sorted(_explicit_profiles(out.entries).items()))
    return out


# --- the hand-read entries, compared --------------------------------------------------------------------------


def _genai_view(price: ModelPrice) -> dict[str, float]:
    """Every price genai-prices states, under lockgate's field name where it has one (USD per token), else its own
    (in its unit)."""
    view: dict[str, float] = {}
    for key, value in _stated(price).items():
        name = _FIELDS.get(key)
        if isinstance(value, TieredPrices):
            if name is None:
                view[key] = float(value.base)
                continue
            view[name] = _per_token(value.base)
            view |= {name + _tier_suffix(t.start): _per_token(t.price) for t in value.tiers}
        else:
            view[name or key] = _per_token(value) if name else float(value)
    return view


def compare_hand_entries(models: Mapping[str, Mapping[str, Any]], day: date) -> list[str]:
    """Every difference between the hand-read ``anthropic/`` and ``openai/`` entries and genai-prices."""
    found: list[str] = []
    for key, entry in models.items():
        name, _, model_id = key.partition("/")
        if "via" in entry or name not in ("anthropic", "openai"):
            continue
        model = _provider(name).find_model(model_id)
        if model is None:
            found.append(f"{key}: genai-prices has no such model")
            continue
        price = _price_on(model, day)
        if not isinstance(price, ModelPrice):
            found.append(f"{key}: genai-prices' price is {price}")
            continue
        theirs = _genai_view(price)
        ours = {k: v for k, v in entry.items() if isinstance(v, int | float) and not k.startswith("max_")}
        for field_name in sorted(ours.keys() | theirs.keys()):
            if field_name not in theirs:
                found.append(f"{key} ({model.id}): {field_name}: ours {ours[field_name]:g}, genai-prices none")
            elif field_name not in ours:
                found.append(f"{key} ({model.id}): {field_name}: ours none, genai-prices {theirs[field_name]:g}")
            elif not math.isclose(ours[field_name], theirs[field_name], rel_tol=1e-9):
                found.append(
                    f"{key} ({model.id}): {field_name}: ours {ours[field_name]:g}, genai-prices {theirs[field_name]:g}"
                )
        for change in _changes_after(model, day):
            found.append(f"{key} ({model.id}): genai-prices has a new price from {change.isoformat()}")
    return found


# --- the file ---------------------------------------------------------------------------------------------------


def write_catalog(path: Path, entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the file's imported entries (those with ``via``) by ``entries``, after the others, in key order."""
    data = json.loads(path.read_text(encoding="utf-8"))
    kept = {key: entry for key, entry in data["models"].items() if "via" not in entry}
    clash = sorted(kept.keys() & entries.keys())
    if clash:
        raise SystemExit(f"imported keys already held by hand-read entries: {clash}")
    data["models"] = kept | dict(sorted(entries.items()))
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    day_help = "the day whose prices to import, YYYY-MM-DD (default: today, UTC)"
    parser.add_argument("--day", type=date.fromisoformat, default=datetime.now(UTC).date(), help=day_help)
    parser.add_argument("--catalog", type=Path, default=CATALOG, help="the catalog file to rewrite")
    args = parser.parse_args(argv)
    result = import_prices(args.day)
    write_catalog(args.catalog, result.entries)
    counts = Counter(key.partition("/")[0] for key in result.entries)
    print(f"wrote {len(result.entries)} entries via {VIA}, checked {args.day}: {dict(sorted(counts.items()))}")
    hand_read = compare_hand_entries(json.loads(args.catalog.read_text(encoding="utf-8"))["models"], args.day)
    for title, lines in (("left out", result.left_out), ("notes", result.notes),
                         ("hand-read entries against genai-prices", hand_read)):  # fmt: skip
        print(f"\n{title} ({len(lines)}):")
        for line in lines:
            print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
