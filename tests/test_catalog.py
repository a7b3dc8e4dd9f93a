"""lockgate.catalog: the shipped price catalog loads and validates, lookups, an external LiteLLM file, which entry
prices a deployment as written in a LiteLLM config (the precedence table: base_model, Bedrock's routes, regions,
inference profiles and ARNs, Gemini's models/, never another provider's entry), the entries imported from
genai-prices (exactly what scripts/import_prices.py computes, and found by the deployments that name them), and the
cost of catalog entries checked against figures written out by hand from the providers' per-million prices."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import lockgate.catalog as catalog_module
from lockgate.catalog import Catalog, CatalogError, is_price, load_catalog
from lockgate.config import parse_settings
from lockgate.dialects.anthropic import messages_usage_to_chat
from lockgate.pricing import PRICE_TABLES, cost_of
from lockgate.routing.router import Router, Target

# --- the shipped file -----------------------------------------------------------------------------------


def test_shipped_catalog_loads_and_every_entry_is_sourced() -> None:
    catalog = load_catalog()
    assert catalog.checked is not None
    assert catalog.models, "the shipped catalog is empty"
    for name, entry in catalog.models.items():
        provider, _, model = name.partition("/")
        assert provider and model, name
        assert str(entry["source"]).startswith("https://"), name
        assert len(str(entry["checked"])) == 10, name
        for field, value in entry.items():
            if field in PRICE_TABLES:  # search_context_cost_per_query: USD per search, by search context size
                assert all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in value.values())
            elif field not in ("source", "checked", "via", "completed_via"):
                assert isinstance(value, int | float) and math.isfinite(value) and value >= 0, (name, field)
        # context limits only where the provider's page states them (embeddings state none)
        for limit in ("max_input_tokens", "max_output_tokens"):
            if limit in entry:
                assert entry[limit] > 0, (name, limit)


def test_shipped_anthropic_entries_have_both_cache_write_prices() -> None:
    catalog = load_catalog()
    names = [name for name in catalog.models if name.startswith("anthropic/")]
    assert names
    for name in names:
        entry = catalog.models[name]
        # Anthropic: 5-minute writes 1.25x input, 1-hour writes 2x input (its pricing page).
        assert entry["cache_creation_input_token_cost"] == pytest.approx(1.25 * entry["input_cost_per_token"])
        assert entry["cache_creation_input_token_cost_above_1hr"] == pytest.approx(2 * entry["input_cost_per_token"])
        assert "cache_read_input_token_cost" in entry


def _with_shipped(monkeypatch: pytest.MonkeyPatch, data: object) -> None:
    """Make load_catalog read ``data`` as the shipped file."""
    text = json.dumps(data)

    class _File:
        def joinpath(self, _name: str) -> _File:
            return self

        def read_text(self, encoding: str = "utf-8") -> str:
            return text

    class _Resources:
        @staticmethod
        def files(_package: str) -> _File:
            return _File()

    monkeypatch.setattr(catalog_module, "resources", _Resources)


GOOD = {
    "input_cost_per_token": 1e-06,
    "output_cost_per_token": 2e-06,
    "max_input_tokens": 1000,
    "max_output_tokens": 100,
    "source": "https://example.com/pricing",
    "checked": "2026-11-24",
}


def test_shipped_unknown_field_is_refused_naming_model_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_shipped(monkeypatch, {"checked": "2026-11-24", "models": {"x/m": {**GOOD, "input_cost_per_tokn": 1e-06}}})
    with pytest.raises(CatalogError, match=r"'x/m'.*'input_cost_per_tokn'"):
        load_catalog()


@pytest.mark.parametrize("bad", [-1e-06, "1e-06", True, None, [1]])
def test_shipped_price_must_be_a_finite_non_negative_number(monkeypatch: pytest.MonkeyPatch, bad: object) -> None:
    _with_shipped(monkeypatch, {"checked": "2026-11-24", "models": {"x/m": {**GOOD, "output_cost_per_token": bad}}})
    with pytest.raises(CatalogError, match=r"'x/m'.*'output_cost_per_token'"):
        load_catalog()


def test_shipped_infinite_price_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    text = json.dumps({"checked": "2026-11-24", "models": {"x/m": GOOD}}).replace("2e-06", "Infinity")
    _with_shipped(monkeypatch, json.loads(text))
    with pytest.raises(CatalogError, match=r"'x/m'.*'output_cost_per_token'"):
        load_catalog()


def test_shipped_entry_without_source_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = {k: v for k, v in GOOD.items() if k != "source"}
    _with_shipped(monkeypatch, {"checked": "2026-11-24", "models": {"x/m": entry}})
    with pytest.raises(CatalogError, match=r"'x/m'.*'source'"):
        load_catalog()


def test_shipped_tier_fields_are_known(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = {**GOOD, "input_cost_per_token_above_200k_tokens": 2e-06, "output_cost_per_token_above_272k_tokens": 3e-06}
    _with_shipped(monkeypatch, {"checked": "2026-11-24", "models": {"x/m": entry}})
    assert load_catalog().prices_for("x", "m") == entry


@pytest.mark.parametrize("bad", ["", 1, None, ["genai-prices"]])
def test_shipped_via_must_be_a_non_empty_string(monkeypatch: pytest.MonkeyPatch, bad: object) -> None:
    _with_shipped(monkeypatch, {"checked": "2026-11-24", "models": {"x/m": {**GOOD, "via": bad}}})
    with pytest.raises(CatalogError, match=r"'x/m'.*'via'"):
        load_catalog()


def test_shipped_via_names_the_dataset_an_entry_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = {**GOOD, "via": "genai-prices 0.2.3"}
    _with_shipped(monkeypatch, {"checked": "2026-11-24", "models": {"x/m": entry}})
    assert load_catalog().prices_for("x", "m") == entry


# --- lookups --------------------------------------------------------------------------------------------


def test_lookup_exact_provider_and_model() -> None:
    catalog = load_catalog()
    entry = catalog.prices_for("anthropic", "claude-opus-5")
    assert entry is not None and entry["input_cost_per_token"] == 5e-06


def test_lookup_dated_model_falls_back_to_the_undated_entry() -> None:
    catalog = load_catalog()
    assert catalog.prices_for("anthropic", "claude-opus-5-20260724") is catalog.prices_for("anthropic", "claude-opus-5")
    assert catalog.prices_for("openai", "gpt-6.2-sol-2026-10-01") is catalog.prices_for("openai", "gpt-6.2-sol")


def test_lookup_bare_model_name() -> None:
    entry = {"input_cost_per_token": 1e-06}
    catalog = Catalog(models={"m-1": entry, "p/other": {"input_cost_per_token": 9e-06}})
    assert catalog.prices_for("anything", "m-1") is entry
    assert catalog.prices_for("anything", "m-1-20250101") is entry


def test_lookup_prefers_provider_entry_over_bare() -> None:
    bare, exact = {"input_cost_per_token": 1e-06}, {"input_cost_per_token": 2e-06}
    catalog = Catalog(models={"m": bare, "p/m": exact})
    assert catalog.prices_for("p", "m") is exact
    assert catalog.prices_for("q", "m") is bare


def test_lookup_unknown_is_none() -> None:
    catalog = load_catalog()
    assert catalog.prices_for("anthropic", "claude-nonexistent-9") is None
    assert catalog.prices_for("gemini", "claude-opus-5") is None  # another provider's model is not borrowed
    assert catalog.prices_for("openai", "gpt-6.2") is None  # no prefix matching


def test_a_date_suffix_is_stripped_only_when_it_is_a_date() -> None:
    catalog = Catalog(models={"p/m": {"input_cost_per_token": 1e-06}})
    assert catalog.prices_for("p", "m-12345678x") is None
    assert catalog.prices_for("p", "m-2025") is None


# --- an external LiteLLM-format file --------------------------------------------------------------------


def test_external_file_overrides_a_shipped_price(tmp_path: Path) -> None:
    extra = tmp_path / "model_prices_and_context_window.json"
    extra.write_text(
        json.dumps(
            {
                "sample_spec": {"input_cost_per_token": "documentation", "litellm_provider": "one of ..."},
                "claude-opus-5": {
                    "input_cost_per_token": 4e-06,
                    "output_cost_per_token": 2e-05,
                    "litellm_provider": "anthropic",
                    "mode": "chat",
                    "supports_vision": True,
                    "max_tokens": 128000,
                },
                "gemini/gemini-9-pro": {"input_cost_per_token": 1e-06, "output_cost_per_token": 8e-06},
            }
        )
    )
    shipped = load_catalog()
    catalog = load_catalog(extra)
    entry = catalog.prices_for("anthropic", "claude-opus-5")
    assert entry is not None
    assert entry["input_cost_per_token"] == 4e-06
    assert "mode" not in entry and "supports_vision" not in entry  # unknown LiteLLM fields ignored
    gemini = catalog.prices_for("gemini", "gemini-9-pro")
    assert gemini is not None and gemini["output_cost_per_token"] == 8e-06
    # untouched entries stay as shipped
    assert catalog.prices_for("openai", "gpt-6.2-sol") == shipped.prices_for("openai", "gpt-6.2-sol")


def test_external_file_bad_price_is_refused(tmp_path: Path) -> None:
    extra = tmp_path / "prices.json"
    extra.write_text(json.dumps({"my-model": {"input_cost_per_token": -1, "litellm_provider": "openai"}}))
    with pytest.raises(CatalogError, match=r"'my-model'.*'input_cost_per_token'"):
        load_catalog(extra)


def test_external_file_modality_prices_and_price_tables(tmp_path: Path) -> None:
    """Every price lockgate.pricing reads is kept from a LiteLLM file: audio and image ones, a tier of a name with a
    digit in it, and search_context_cost_per_query (a mapping, checked as one)."""
    extra = tmp_path / "prices.json"
    search = {"search_context_size_low": 0.01, "search_context_size_medium": 0.01, "search_context_size_high": 0.01}
    entry = {
        "input_cost_per_token": 3e-7, "input_cost_per_audio_token": 1e-6, "output_cost_per_image_token": 3e-5,
        "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 2e-6, "search_context_cost_per_query": search,
        "litellm_provider": "gemini",
    }  # fmt: skip
    extra.write_text(json.dumps({"gemini-9-flash": entry}))
    found = load_catalog(extra).prices_for("gemini", "gemini-9-flash")
    assert found is not None and dict(found) == {k: v for k, v in entry.items() if k != "litellm_provider"}
    extra.write_text(json.dumps({"m": {"input_cost_per_token": 1e-6, "search_context_cost_per_query": 0.01}}))
    with pytest.raises(CatalogError, match="'search_context_cost_per_query' is not an object"):
        load_catalog(extra)


def test_external_file_unreadable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(CatalogError, match="not a JSON object"):
        load_catalog(bad)


# --- which entry prices a deployment: the names written in LiteLLM configs --------------------------------

# A shipped catalog of two models, and a price file shaped as LiteLLM's model_prices_and_context_window.json is
# (its key shapes: bare names with litellm_provider, provider/model, bedrock/<region>/<id>, Bedrock's
# inference-profile ids). Every entry has its own input price, so a price says which entry it came from.
SHIPPED = {
    "checked": "2026-11-24",
    "models": {
        "anthropic/claude-opus-5": {**GOOD, "input_cost_per_token": 5e-06},
        "openai/gpt-6.2-sol": {**GOOD, "input_cost_per_token": 2e-06},
    },
}
LITELLM_FILE: dict[str, dict[str, Any]] = {
    "sample_spec": {"input_cost_per_token": "documentation", "litellm_provider": "one of ..."},
    "gpt-4o": {"input_cost_per_token": 2.5e-06, "litellm_provider": "openai", "max_tokens": 16384},
    "gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "litellm_provider": "openai"},
    "azure/gpt-4o": {"input_cost_per_token": 2.51e-06, "litellm_provider": "azure", "max_input_tokens": 128000},
    "azure/eu/gpt-4o-2024-08-06": {"input_cost_per_token": 2.75e-06, "litellm_provider": "azure"},
    "claude-sonnet-4-5-20250929": {"input_cost_per_token": 3e-06, "litellm_provider": "anthropic"},
    "anthropic.claude-sonnet-4-5-20250929-v1:0": {"input_cost_per_token": 3.01e-06, "litellm_provider": "bedrock"},
    "global.anthropic.claude-sonnet-4-5-20250929-v1:0": {
        "input_cost_per_token": 3.02e-06,
        "litellm_provider": "bedrock_converse",
    },
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0": {"input_cost_per_token": 3.3e-06, "litellm_provider": "bedrock"},
    "anthropic.claude-v2:1": {"input_cost_per_token": 8e-06, "litellm_provider": "bedrock"},
    "bedrock/eu-central-1/anthropic.claude-v2:1": {"input_cost_per_token": 8.01e-06, "litellm_provider": "bedrock"},
    "amazon.nova-pro-v1:0": {"input_cost_per_token": 8e-07, "litellm_provider": "bedrock_converse"},
    "claude-sonnet-4-6": {"input_cost_per_token": 3.03e-06, "litellm_provider": "anthropic"},
    "gemini/gemini-2.5-pro": {"input_cost_per_token": 1.25e-06, "litellm_provider": "gemini"},
    "gemini-2.5-pro": {"input_cost_per_token": 1.26e-06, "litellm_provider": "vertex_ai-language-models"},
    "gemini-2.5-flash": {"input_cost_per_token": 3e-07, "litellm_provider": "vertex_ai-language-models"},
    "ollama/llama3": {"input_cost_per_token": 0.0, "litellm_provider": "ollama"},
    "my-finetune": {"input_cost_per_token": 1e-09},  # the user's own entry, for no provider in particular
}
APP_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"

# (provider/model as in litellm_params.model, model_info.base_model, other litellm_params) -> the key that prices it
PRECEDENCE: list[tuple[str, str | None, dict[str, Any], str | None]] = [
    # the shipped catalog, and a date suffix stripped
    ("anthropic/claude-opus-5", None, {}, "anthropic/claude-opus-5"),
    ("anthropic/claude-opus-5-20260724", None, {}, "anthropic/claude-opus-5"),
    # LiteLLM's bare names price their own provider's deployments
    ("anthropic/claude-sonnet-4-5-20250929", None, {}, "anthropic/claude-sonnet-4-5-20250929"),
    ("openai/gpt-4o", None, {}, "openai/gpt-4o"),
    ("ollama_chat/llama3", None, {}, "ollama/llama3"),  # ollama and ollama_chat reach the same server
    ("hosted_vllm/my-finetune", None, {}, "my-finetune"),  # an entry stating no provider
    # Azure: by base_model, with or without the azure/ prefix; without it, by the deployment's name
    ("azure/my-prod-gpt", "gpt-4o", {}, "azure/gpt-4o"),
    ("azure/my-prod-gpt", "azure/gpt-4o", {}, "azure/gpt-4o"),
    ("azure/my-eu-gpt", "azure/eu/gpt-4o-2024-08-06", {}, "azure/eu/gpt-4o-2024-08-06"),
    ("azure/gpt-4o", None, {}, "azure/gpt-4o"),
    ("azure/my-prod-gpt", None, {}, None),
    ("azure/my-mini", "gpt-4o-mini", {}, None),  # LiteLLM's bare gpt-4o-mini is OpenAI's, not Azure's...
    ("azure/my-gpt", "gpt-6.2-sol", {}, None),
    ("azure/my-gpt", "openai/gpt-6.2-sol", {}, "openai/gpt-6.2-sol"),  # ...unless base_model names it
    ("azure/gpt-4o", "gpt-4o-nonexistent", {}, None),  # an unknown base_model: not the deployment's name instead
    # Bedrock: the id as written, its region's key first; converse/ and invoke/ are routes, not names
    ("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0", None, {}, "bedrock/us." + SONNET),
    ("bedrock/converse/us.anthropic.claude-sonnet-4-5-20250929-v1:0", None, {}, "bedrock/us." + SONNET),
    ("bedrock/invoke/" + SONNET, None, {}, "bedrock/" + SONNET),
    ("bedrock/global." + SONNET, None, {}, "bedrock_converse/global." + SONNET),  # its own price, not the bare one
    ("bedrock/eu." + SONNET, None, {}, "bedrock/" + SONNET),  # no eu. entry: the profile prefix stripped
    (
        "bedrock/us-gov.anthropic.claude-v2:1",
        None,
        {"aws_region_name": "us-gov-west-1"},
        "bedrock/anthropic.claude-v2:1",
    ),
    ("bedrock/apac.amazon.nova-pro-v1:0", None, {}, "bedrock_converse/amazon.nova-pro-v1:0"),
    (
        "bedrock/anthropic.claude-v2:1",
        None,
        {"aws_region_name": "eu-central-1"},
        "bedrock/eu-central-1/anthropic.claude-v2:1",
    ),
    ("bedrock/anthropic.claude-v2:1", None, {"aws_region_name": "us-west-2"}, "bedrock/anthropic.claude-v2:1"),
    (
        "bedrock/eu.anthropic.claude-v2:1",
        None,
        {"aws_region_name": "eu-central-1"},
        "bedrock/eu-central-1/anthropic.claude-v2:1",
    ),
    # Bedrock ARNs: a foundation model or system profile names its model; an application profile needs base_model
    ("bedrock/arn:aws:bedrock:us-east-1::foundation-model/" + SONNET, None, {}, "bedrock/" + SONNET),
    ("bedrock/arn:aws:bedrock:us-east-1:123456789012:inference-profile/us." + SONNET, None, {}, "bedrock/us." + SONNET),
    ("bedrock/" + APP_PROFILE, None, {}, None),
    ("bedrock/converse/" + APP_PROFILE, "us." + SONNET, {}, "bedrock/us." + SONNET),
    ("bedrock/" + APP_PROFILE, "bedrock/global." + SONNET, {}, "bedrock_converse/global." + SONNET),
    # never another provider's price: Anthropic's does not price Bedrock, nor Vertex's Gemini, nor OpenAI's vLLM
    ("bedrock/claude-opus-5", None, {}, None),
    ("bedrock/claude-sonnet-4-6", None, {}, None),
    ("bedrock/anthropic.claude-opus-5", None, {}, None),
    ("openrouter/anthropic/claude-opus-5", None, {}, None),
    ("hosted_vllm/gpt-4o", None, {}, None),
    # Gemini: gemini/<model>, with or without models/; the bare name is Vertex AI's
    ("gemini/gemini-2.5-pro", None, {}, "gemini/gemini-2.5-pro"),
    ("gemini/models/gemini-2.5-pro", None, {}, "gemini/gemini-2.5-pro"),
    ("gemini/gemini-2.5-flash", None, {}, None),
]


@pytest.fixture
def litellm_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Catalog:
    _with_shipped(monkeypatch, SHIPPED)
    extra = tmp_path / "model_prices_and_context_window.json"
    extra.write_text(json.dumps(LITELLM_FILE))
    return load_catalog(extra)


def _deployment_entry(model: str, base_model: str | None, params: dict[str, Any]) -> dict[str, Any]:
    litellm_params: dict[str, Any] = {"model": model, **params}
    if model.startswith("bedrock/"):
        litellm_params.setdefault("aws_region_name", "us-east-1")
    else:
        litellm_params.update(api_key="k", api_base="http://127.0.0.1:1/v1")
    entry: dict[str, Any] = {"model_name": "m", "litellm_params": litellm_params}
    return entry if base_model is None else {**entry, "model_info": {"base_model": base_model}}


def _priced_by(
    catalog: Catalog, model: str, base_model: str | None, params: dict[str, Any]
) -> tuple[str | None, Target]:
    """The catalog key that prices this config deployment (as parsed), and the router's target for it."""
    settings = parse_settings({"model_list": [_deployment_entry(model, base_model, params)]}, {})
    deployment = settings.deployments[0]
    found = catalog.find(
        deployment.provider,
        deployment.upstream_model,
        base_model=base_model,
        region=deployment.options.get("aws_region_name"),
    )
    return (found[0] if found else None), Router(settings, catalog=catalog).group("m")[0]


@pytest.mark.parametrize(
    ("model", "base_model", "params", "expected"),
    PRECEDENCE,
    ids=[f"{m}|{b}|{p.get('aws_region_name', '')}" for m, b, p, _ in PRECEDENCE],
)
def test_which_entry_prices_a_deployment(
    litellm_catalog: Catalog, model: str, base_model: str | None, params: dict[str, Any], expected: str | None
) -> None:
    """The config's deployment, as parsed, is priced by the key in the table, and the router's target carries that
    entry's prices (or none)."""
    key, target = _priced_by(litellm_catalog, model, base_model, params)
    assert key == expected
    if expected is None:
        assert not target.priced and "input_cost_per_token" not in target.prices
    else:
        assert target.priced
        assert target.prices["input_cost_per_token"] == litellm_catalog.models[expected]["input_cost_per_token"]


def test_an_exact_bedrock_entry_wins_over_the_profile_stripped_one(litellm_catalog: Catalog) -> None:
    """us. and global. profiles are priced apart from the in-region model: each keeps its own price."""
    prices = {
        profile: litellm_catalog.prices_for("bedrock", profile + SONNET, region="us-east-1")
        for profile in ("us.", "global.", "eu.", "")
    }
    assert {p: e["input_cost_per_token"] for p, e in prices.items() if e} == {
        "us.": 3.3e-06,
        "global.": 3.02e-06,
        "eu.": 3.01e-06,  # no eu. entry: the model's own
        "": 3.01e-06,
    }


def test_model_info_overrides_the_entry_base_model_found(litellm_catalog: Catalog) -> None:
    entry = _deployment_entry("azure/my-prod-gpt", None, {})
    entry["model_info"] = {"base_model": "azure/gpt-4o", "input_cost_per_token": 1e-06}
    target = Router(parse_settings({"model_list": [entry]}, {}), catalog=litellm_catalog).group("m")[0]
    assert target.prices["input_cost_per_token"] == 1e-06  # the deployment's own
    assert target.prices["max_input_tokens"] == 128000  # the catalog's, where model_info is silent


def test_a_bare_name_of_another_provider_is_skipped_for_the_next_key() -> None:
    """A bare name of the wrong provider does not stop the lookup: a later key of the right one still prices."""
    ours, theirs = {"input_cost_per_token": 1e-06}, {"input_cost_per_token": 9e-06}
    catalog = Catalog(models={"m-1-20250101": theirs, "p/m-1": ours}, providers={"m-1-20250101": "q", "p/m-1": "p"})
    assert catalog.find("p", "m-1-20250101") == ("p/m-1", ours)
    assert catalog.find("q", "m-1-20250101") == ("m-1-20250101", theirs)
    assert catalog.find("r", "m-1-20250101") is None


# --- the entries imported from genai-prices -------------------------------------------------------------

SHIPPED_FILE = Path(catalog_module.__file__).with_name("prices.json")
# The provider pages genai-prices names, one per lockgate provider (the script's source for each entry).
IMPORTED_PAGES = {
    "gemini": "https://ai.google.dev/gemini-api/docs/pricing",
    "bedrock": "https://aws.amazon.com/bedrock/pricing/",
    "azure": "https://azure.microsoft.com/en-us/pricing/details/cognitive-services/openai-service/#pricing",
    "deepseek": "https://api-docs.deepseek.com/quick_start/pricing",
    "groq": "https://console.groq.com/docs/models",
    "mistral": "https://mistral.ai/pricing/api",
    "openrouter": "https://openrouter.ai/models",
    "together_ai": "https://www.together.ai/pricing",
}


def _import_script() -> ModuleType:
    """scripts/import_prices.py (a script, not a package module), loaded from its file."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "import_prices.py"
    spec = importlib.util.spec_from_file_location("import_prices", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _imported() -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = json.loads(SHIPPED_FILE.read_text(encoding="utf-8"))["models"]
    return {name: entry for name, entry in models.items() if "via" in entry}


def test_imported_entries_are_what_the_script_computes() -> None:
    """Every entry with ``via`` is exactly what scripts/import_prices.py computes from the installed genai-prices
    for its ``checked`` day: the snapshot can be reproduced, and an imported entry edited by hand fails here
    (re-run the script instead)."""
    imported = _imported()
    days = {entry["checked"] for entry in imported.values()}
    assert len(days) == 1, f"imported on several days: {sorted(days)}"
    script = _import_script()
    computed = script.import_prices(date.fromisoformat(days.pop())).entries
    assert sorted(imported) == sorted(computed), "keys differ: re-run scripts/import_prices.py"
    for name, entry in imported.items():
        assert entry == computed[name], name
        assert list(entry) == list(computed[name]), name  # the same fields in the same order: the file as written
    assert {entry["via"] for entry in imported.values()} == {script.VIA}


def test_imported_entries_name_their_provider_page() -> None:
    imported = _imported()
    assert {name.partition("/")[0] for name in imported} == set(IMPORTED_PAGES)
    for name, entry in imported.items():
        assert entry["via"].startswith("genai-prices "), name
        assert entry["source"].startswith("https://"), name
        assert entry["source"] == IMPORTED_PAGES[name.partition("/")[0]], name
        assert not {"max_input_tokens", "max_output_tokens"} & set(entry), name  # genai-prices' limits: not taken


def test_hand_read_entries_have_no_via() -> None:
    """The script rewrites only ``via`` entries: Anthropic's and OpenAI's, read on their pages, never have one."""
    models = load_catalog().models
    hand_read = [name for name in models if name.partition("/")[0] in ("anthropic", "openai")]
    assert hand_read
    assert not [name for name in hand_read if "via" in models[name]]


def test_hand_read_entries_agree_with_genai_prices_and_completed_ones_have_all_it_has() -> None:
    """Our hand-read Anthropic and OpenAI prices and genai-prices' are the same figures; an entry ``completed_via``
    it (the prices its provider page, as read, lacked) holds every per-token price genai-prices gives that model.
    Anthropic's web search fee ($10 per 1,000) is genai-prices' ``web_searches_kcount`` too."""
    script = _import_script()
    day = date(2026, 11, 24)
    models = load_catalog().models
    completed = [name for name, entry in models.items() if "completed_via" in entry]
    assert completed, "no entry says completed_via"
    for name, entry in models.items():
        provider, _, model_id = name.partition("/")
        if provider not in ("anthropic", "openai"):
            continue
        found = script._provider(provider).find_model(model_id)
        if found is None:
            assert "completed_via" not in entry, name
            continue
        theirs = script._genai_view(script._price_on(found, day))
        ours = {field: value for field, value in entry.items() if is_price(field)}
        for field in ours.keys() & theirs.keys():
            assert ours[field] == pytest.approx(theirs[field], rel=1e-9), (name, field)
        if "search_context_cost_per_query" in entry:
            per_search = entry["search_context_cost_per_query"]["search_context_size_medium"]
            assert per_search == pytest.approx(theirs["web_searches_kcount"] / 1000), name
        if "completed_via" in entry:
            assert entry["completed_via"] == script.VIA, name
            assert not {field for field in theirs if is_price(field)} - ours.keys(), name


# Deployments as written in a config, each priced by the imported entry named: Bedrock's Converse route and
# cross-region profiles (a geographic one by the in-region price, global. by its own), Gemini with and without
# models/, Azure by base_model.
IMPORTED_DEPLOYMENTS: list[tuple[str, str | None, str]] = [
    ("bedrock/converse/us.anthropic.claude-sonnet-4-5-20250929-v1:0", None, "bedrock/" + SONNET),
    ("bedrock/converse/global." + SONNET, None, "bedrock/global." + SONNET),
    ("bedrock/converse/eu.anthropic.claude-opus-4-7", None, "bedrock/anthropic.claude-opus-4-7"),
    ("bedrock/converse/global.anthropic.claude-opus-4-7", None, "bedrock/global.anthropic.claude-opus-4-7"),
    ("bedrock/in.anthropic.claude-opus-5", None, "bedrock/in.anthropic.claude-opus-5"),
    ("bedrock/us.amazon.nova-pro-v1:0", None, "bedrock/amazon.nova-pro-v1:0"),
    ("bedrock/converse/us.amazon.nova-2-lite-v1:0", None, "bedrock/us.amazon.nova-2-lite-v1:0"),
    ("bedrock/meta.llama3-3-70b-instruct-v1:0", None, "bedrock/meta.llama3-3-70b-instruct-v1:0"),
    ("bedrock/" + APP_PROFILE, "us.anthropic.claude-haiku-4-5-20251001-v1:0",
     "bedrock/anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("gemini/gemini-2.5-pro", None, "gemini/gemini-2.5-pro"),
    ("gemini/models/gemini-3.8-flash", None, "gemini/gemini-3.8-flash"),
    ("azure/my-reasoner", "o4-mini", "azure/o4-mini"),
    ("azure/my-reasoner", "azure/o3-2025-04-16", "azure/o3-2025-04-16"),
    ("azure/o1", None, "azure/o1"),
    ("groq/gemma2-9b-it", None, "groq/gemma2-9b-it"),
    ("mistral/codestral-2508", None, "mistral/codestral-2508"),
    ("openrouter/openai/gpt-6-astra", None, "openrouter/openai/gpt-6-astra"),
    ("together_ai/MiniMaxAI/MiniMax-M3", None, "together_ai/MiniMaxAI/MiniMax-M3"),
    ("deepseek/deepseek-v3.2", None, "deepseek/deepseek-v3.2"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "base_model", "expected"), IMPORTED_DEPLOYMENTS)
def test_a_deployment_finds_its_imported_entry(model: str, base_model: str | None, expected: str) -> None:
    catalog = load_catalog()
    assert "via" in catalog.models[expected]
    key, target = _priced_by(catalog, model, base_model, {})
    assert key == expected
    assert target.priced
    prices = {name: value for name, value in catalog.models[expected].items() if isinstance(value, float)}
    assert {name: target.prices[name] for name in prices} == prices


# --- cost of catalog entries, by hand -------------------------------------------------------------------


def _anthropic(fresh: int, read: int, written: int, output: int, thinking: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": fresh,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
        "output_tokens": output,
    }
    if thinking is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    return messages_usage_to_chat(usage)


def _openai(prompt: int, completion: int, cached: int = 0, written: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _one_hour(prices: Any) -> dict[str, Any]:
    """pricing.cost_of prices every write at the 5-minute price (usage does not say which were 1-hour), so a
    request whose writes were all 1-hour is priced with the 1-hour price in its place."""
    return {**prices, "cache_creation_input_token_cost": prices["cache_creation_input_token_cost_above_1hr"]}


# Claude Opus 5 (platform.claude.com/docs/en/models/opus-5/overview): $5 input, $6.25 5m write, $10 1h write,
# $0.50 cache read, $25 output per MTok. GPT-6.2 Sol (developers.openai.com/api/docs/models/gpt-6.2-sol): $2 input,
# $0.10 cached input, $2.50 cache write, $10 output per MTok; above 272K input tokens input and cache rates double
# and output is 1.5x for the whole request ($4, $0.20, $5, $15).
CASES = [
    # 1000 x $5 + 500 x $25
    ("anthropic", "claude-opus-5", "plain", _anthropic(1000, 0, 0, 500), False, 0.005 + 0.0125),
    # 200 x $5 + 10000 x $0.50 + 300 x $25
    ("anthropic", "claude-opus-5", "cache read", _anthropic(200, 10000, 0, 300), False, 0.001 + 0.005 + 0.0075),
    # 200 x $5 + 4000 x $6.25 + 100 x $25
    ("anthropic", "claude-opus-5", "cache write 5m", _anthropic(200, 0, 4000, 100), False, 0.001 + 0.025 + 0.0025),
    # 200 x $5 + 4000 x $10 + 100 x $25
    ("anthropic", "claude-opus-5", "cache write 1h", _anthropic(200, 0, 4000, 100), True, 0.001 + 0.04 + 0.0025),
    # 1000 x $5 + (500 visible + 1500 thinking) x $25
    ("anthropic", "claude-opus-5", "reasoning", _anthropic(1000, 0, 0, 2000, 1500), False, 0.005 + 0.05),
    # 1000 x $2 + 500 x $10
    ("openai", "gpt-6.2-sol", "plain", _openai(1000, 500), False, 0.002 + 0.005),
    # 2000 fresh x $2 + 8000 cached x $0.10 + 200 x $10
    ("openai", "gpt-6.2-sol", "cache read", _openai(10000, 200, cached=8000), False, 0.004 + 0.0008 + 0.002),
    # 1000 fresh x $2 + 4000 written x $2.50 + 100 x $10
    ("openai", "gpt-6.2-sol", "cache write", _openai(5000, 100, written=4000), False, 0.002 + 0.01 + 0.001),
    # 1000 x $2 + (500 visible + 2500 reasoning) x $10
    ("openai", "gpt-6.2-sol", "reasoning", _openai(1000, 3000, reasoning=2500), False, 0.002 + 0.03),
    # 300K prompt: 200000 fresh x $4 + 100000 cached x $0.20 + 1000 x $15
    ("openai", "gpt-6.2-sol", "long prompt", _openai(300000, 1000, cached=100000), False, 0.8 + 0.02 + 0.015),
    # Claude Sonnet 5.5 cache reads are $0.10/MTok since 2026-10-07 (platform.claude.com release notes):
    # 200 x $2 + 10000 x $0.10 + 300 x $10
    ("anthropic", "claude-sonnet-5-5", "cache read", _anthropic(200, 10000, 0, 300), False, 0.0004 + 0.001 + 0.003),
    # Claude Haiku 5.5: $0.10 / $0.50, and $0.50 / $2.50 for every token of a prompt over 100,000 tokens
    ("anthropic", "claude-haiku-5-5", "plain", _anthropic(1000, 0, 0, 500), False, 0.0001 + 0.00025),
    ("anthropic", "claude-haiku-5-5", "long prompt", _anthropic(150000, 0, 0, 1000), False, 0.075 + 0.0025),
    # GPT-6 Luna: $0.10 input, $0.01 cached, $0.50 output; 2000 fresh + 8000 cached + 200 out
    ("openai", "gpt-6-luna", "cache read", _openai(10000, 200, cached=8000), False, 0.0002 + 0.00008 + 0.0001),
]


@pytest.mark.parametrize(
    ("provider", "model", "kind", "usage", "one_hour", "expected"),
    CASES,
    ids=[f"{p}/{m}:{k}" for p, m, k, *_ in CASES],
)
def test_cost_of_catalog_entry(
    provider: str, model: str, kind: str, usage: dict[str, Any], one_hour: bool, expected: float
) -> None:
    prices = load_catalog().prices_for(provider, model)
    assert prices is not None
    if one_hour:
        prices = _one_hour(prices)
    assert cost_of(prices, usage) == pytest.approx(expected, rel=1e-12)
