"""The price catalog shipped with lockgate: USD per token per ``provider/model``, in LiteLLM's field names.

``prices.json`` (package data) holds, for each model, the prices ``lockgate.pricing`` reads, its context limits,
the URL of the provider's own page the prices were read from (``source``) and the day they were read (``checked``).
An entry with ``via`` (a non-empty string: ``"genai-prices 0.2.3"``) was not read on that page by lockgate's
maintainers: it was transcribed on the day ``checked`` from the dataset ``via`` names, which cites the page
(``scripts/import_prices.py``: Gemini, Bedrock, Azure and the hosted OpenAI-compatible providers). An entry read
on the provider's page whose page, as read, lacked some prices it bills (cache prices, a long-prompt tier) has them
from that dataset and says so in ``completed_via``: its own prices agree with the dataset's. A user file in
LiteLLM's
``model_prices_and_context_window.json`` format may be layered on top; its entries replace the shipped ones of the
same name whole.

Validation at load: every price (and limit) is a finite number >= 0. The shipped file refuses any field it does not
know, requires ``source`` (an https URL) and ``checked`` (YYYY-MM-DD) and takes ``via`` and ``completed_via`` only as
non-empty strings;
the external file ignores fields it does not know (LiteLLM's carry many lockgate does not use).

Which entry prices a deployment (:meth:`Catalog.find`). The name looked up is the deployment's
``model_info.base_model`` when set (LiteLLM's field: an Azure deployment ``azure/my-prod-gpt`` with ``base_model:
gpt-4o`` or ``azure/gpt-4o``), else its model after the provider prefix; never both: a base_model the catalog does
not know leaves the deployment unpriced rather than priced as another model. From that name come model ids, exact
first:

- the name; for Bedrock without its route (``converse/``, ``invoke/``), for Gemini without ``models/``;
- for Bedrock, then the name without its cross-region inference-profile prefix (``us.``, ``eu.``, ``apac.``,
  ``global.``, ``jp.``, ``au.``, ``us-gov.``): after every exact key, since a profile may be priced apart from the
  model (in LiteLLM's file ``us.anthropic.claude-opus-4-8`` costs 10% more than ``global.`` and the bare id);
- each id followed by itself with a date suffix stripped (``claude-x-20250929`` -> ``claude-x``).

For each id in that order, the first of these keys the catalog holds wins::

    1. bedrock/<aws_region_name>/<id>   Bedrock only: LiteLLM's region-priced keys (bedrock/eu-west-1/meta.llama...)
    2. <provider>/<id>                  and the LiteLLM providers of the same upstream: openai and
                                        text-completion-openai, azure and azure_text, bedrock and bedrock_converse,
                                        ollama and ollama_chat
    3. <id>                             a bare name (LiteLLM's ``gpt-4o``, ``us.anthropic.claude-...-v1:0``), only if
                                        its entry's provider (the file's ``litellm_provider``, a shipped entry's
                                        prefix) is one of those in 2, or its file states none

Before all of them, a base_model whose prefix is not the deployment's provider (``openai/gpt-4o`` on an Azure
deployment) is looked up as written: the administrator named that entry. Otherwise there is never a fallback to
another provider's entry: ``anthropic/claude-...`` does not price a Bedrock deployment (Bedrock's prices, regional
ones in particular, differ), nor does LiteLLM's bare ``gpt-4o`` (OpenAI's) price an Azure one. A Bedrock ARN names
a model only as a foundation model or a system inference profile (``.../foundation-model/<id>``,
``.../inference-profile/<id>``); any other (an application inference profile, a provisioned model) cannot be priced
by its name: such a deployment needs a base_model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lockgate.pricing import PRICE_FIELDS, PRICE_TABLES

__all__ = ["Catalog", "CatalogError", "is_price", "load_catalog"]

_BASE_PRICES = PRICE_FIELDS  # what lockgate.pricing charges by; tiers are derived from each by suffix
_TIER = re.compile(r"(?P<base>[a-z0-9_]+?)_above_[0-9]+k?_tokens")
_LIMITS = frozenset({"max_input_tokens", "max_output_tokens"})
# via: the dataset an entry was transcribed from; completed_via: the one its missing prices were taken from
_TEXT = frozenset({"source", "checked", "via", "completed_via"})
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATED = re.compile(r"(?P<model>.+?)-(?:[0-9]{8}|[0-9]{4}-[0-9]{2}-[0-9]{2})")
# LiteLLM's ``litellm_provider`` names that price the same upstream as a lockgate provider (the first is its own).
_FAMILIES: dict[str, tuple[str, ...]] = {
    "openai": ("openai", "text-completion-openai"),
    "azure": ("azure", "azure_text"),
    "bedrock": ("bedrock", "bedrock_converse"),
    "ollama": ("ollama", "ollama_chat"),
    "ollama_chat": ("ollama_chat", "ollama"),
}
# Bedrock's cross-region inference profiles (``us.anthropic.claude-...``), the prefixes LiteLLM knows.
_PROFILES = frozenset({"global", "us", "eu", "apac", "jp", "au", "us-gov"})
# A Bedrock ARN that says which model it runs: a foundation model, or a system-defined inference profile.
_MODEL_ARN = re.compile(
    r"arn:aws[a-z-]*:bedrock:[a-z0-9-]*:[0-9]*:(?:foundation-model|inference-profile)/(?P<id>[^/]+)"
)


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message names the file, the model and the field."""


def is_price(name: str) -> bool:
    """A price field lockgate charges by (LiteLLM's name, a tier such as ``input_cost_per_token_above_200k_tokens``
    included)."""
    if name in _BASE_PRICES:
        return True
    tier = _TIER.fullmatch(name)
    return tier is not None and tier["base"] in _BASE_PRICES


def _number(value: object) -> bool:
    """A finite number >= 0 (a bool is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0


def _shipped_entry(where: str, model: str, entry: object) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: model {model!r}: entry is not an object")
    for name, value in entry.items():
        if name in PRICE_TABLES:
            _table(where, model, name, value)
        elif is_price(name) or name in _LIMITS:
            if not _number(value):
                raise CatalogError(f"{where}: model {model!r}: field {name!r} is not a finite number >= 0: {value!r}")
        elif name in _TEXT:
            if not isinstance(value, str) or not value:
                raise CatalogError(f"{where}: model {model!r}: field {name!r} is not a non-empty string")
            if name == "checked" and not _DATE.fullmatch(value):
                raise CatalogError(f"{where}: model {model!r}: field 'checked' is not a YYYY-MM-DD date: {value!r}")
            if name == "source" and not value.startswith("https://"):
                raise CatalogError(f"{where}: model {model!r}: field 'source' is not an https URL: {value!r}")
        else:
            raise CatalogError(f"{where}: model {model!r}: unknown field {name!r}")
    for required in ("input_cost_per_token", "source", "checked"):
        if required not in entry:
            raise CatalogError(f"{where}: model {model!r}: missing field {required!r}")
    return dict(entry)


def _table(where: str, model: str, name: str, value: object) -> dict[str, Any]:
    """A price that is a mapping of names to numbers (``search_context_cost_per_query``), checked."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and _number(v) for k, v in value.items()):
        raise CatalogError(f"{where}: model {model!r}: field {name!r} is not an object of finite numbers >= 0")
    return dict(value)


def _external_entry(where: str, model: str, entry: object) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: model {model!r}: entry is not an object")
    kept: dict[str, Any] = {}
    for name, value in entry.items():
        if isinstance(name, str) and name in PRICE_TABLES and value is not None:
            kept[name] = _table(where, model, name, value)
            continue
        if not isinstance(name, str) or not (is_price(name) or name in _LIMITS):
            continue  # a LiteLLM field lockgate does not use
        if value is None:
            continue
        if not _number(value):
            raise CatalogError(f"{where}: model {model!r}: field {name!r} is not a finite number >= 0: {value!r}")
        kept[name] = value
    return kept


def _family(provider: str) -> tuple[str, ...]:
    return _FAMILIES.get(provider, (provider,))


def _model_ids(provider: str, name: str) -> list[str]:
    """The model ids ``name`` is priced by at ``provider``, exact first (see the module docstring)."""
    if provider == "gemini":
        return [name.removeprefix("models/")]
    if provider != "bedrock":
        return [name]
    for route in ("converse/", "invoke/"):
        if name.startswith(route):
            name = name[len(route) :]
            break
    if name.startswith("arn:"):
        named = _MODEL_ARN.fullmatch(name)
        if named is None:  # an application inference profile, a provisioned model: only base_model says
            return []
        name = named["id"]
    profile, dot, model = name.partition(".")
    return [name, model] if dot and model and profile in _PROFILES else [name]


def _keys(provider: str, model: str, base_model: str | None, region: str | None) -> list[tuple[str, bool]]:
    """The keys that may price a deployment, in order, each with whether it is a bare name (which prices it only
    when its entry's provider is the deployment's)."""
    family = _family(provider)
    keys: list[tuple[str, bool]] = []
    name = model
    if base_model:
        prefix, slash, rest = base_model.partition("/")
        if slash and prefix in family:
            name = rest
        else:
            if slash:
                keys.append((base_model, False))  # another provider's entry, named on purpose
            name = base_model
    for model_id in _model_ids(provider, name):
        dated = _DATED.fullmatch(model_id)
        for variant in (model_id, dated["model"]) if dated is not None else (model_id,):
            if provider == "bedrock" and region:
                keys.append((f"bedrock/{region}/{variant}", False))
            keys.extend((f"{each}/{variant}", False) for each in family)
            keys.append((variant, True))
    first: dict[str, bool] = {}
    for key, bare in keys:
        first.setdefault(key, bare)  # a key met twice keeps its first place
    return list(first.items())


@dataclass(frozen=True)
class Catalog:
    """Prices by ``provider/model`` (or a bare model name, from an external file)."""

    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    checked: str | None = None
    providers: Mapping[str, str] = field(default_factory=dict)
    """The provider each entry is for, where known: a shipped entry's prefix, an external one's
    ``litellm_provider``. A bare name prices only its own provider's deployments."""

    def find(
        self, provider: str, model: str, *, base_model: str | None = None, region: str | None = None
    ) -> tuple[str, Mapping[str, Any]] | None:
        """The key and entry that price a deployment at ``provider`` of ``model`` (the part of
        ``litellm_params.model`` after the provider prefix), with ``model_info.base_model`` and, for Bedrock, its
        ``aws_region_name``, in the order the module docstring gives; None when none does."""
        family = _family(provider)
        for key, bare in _keys(provider, model, base_model or None, region or None):
            entry = self.models.get(key)
            if entry is None:
                continue
            stated = self.providers.get(key)
            if bare and stated is not None and stated not in family:
                continue  # another provider's model of the same name
            return key, entry
        return None

    def prices_for(
        self, provider: str, upstream_model: str, *, base_model: str | None = None, region: str | None = None
    ) -> Mapping[str, Any] | None:
        """The entry :meth:`find` finds (``claude-sonnet-4-5-20250929`` is priced by ``anthropic/claude-sonnet-4-5``
        when the catalog lists it so); None when unknown."""
        found = self.find(provider, upstream_model, base_model=base_model, region=region)
        return None if found is None else found[1]


def _read_shipped() -> tuple[dict[str, Any], str]:
    where = "lockgate/catalog/prices.json"
    text = resources.files(__package__ or "lockgate.catalog").joinpath("prices.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise CatalogError(f"{where}: not an object with a 'models' object")
    unknown = set(data) - {"checked", "models"}
    if unknown:
        raise CatalogError(f"{where}: unknown top-level field(s) {sorted(unknown)}")
    checked = data.get("checked")
    if not isinstance(checked, str) or not _DATE.fullmatch(checked):
        raise CatalogError(f"{where}: top-level 'checked' is not a YYYY-MM-DD date")
    models = {model: _shipped_entry(where, model, entry) for model, entry in data["models"].items()}
    for model in models:
        if "/" not in model:
            raise CatalogError(f"{where}: model {model!r}: name is not provider/model")
    return models, checked


def _read_external(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The file's entries (a bare name also as ``<litellm_provider>/<name>``), and the provider each states."""
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{where}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: not a JSON object of models")
    out: dict[str, dict[str, Any]] = {}
    providers: dict[str, str] = {}
    for model, entry in data.items():
        if model == "sample_spec":  # LiteLLM's documentation entry
            continue
        kept = _external_entry(where, model, entry)
        out[model] = kept
        provider = entry.get("litellm_provider")
        if isinstance(provider, str) and provider:
            providers[model] = provider
            if "/" not in model:
                out[f"{provider}/{model}"] = kept
                providers[f"{provider}/{model}"] = provider
    return out, providers


def load_catalog(extra: Path | None = None) -> Catalog:
    """The shipped catalog, with the entries of ``extra`` (LiteLLM's format) replacing those of the same name."""
    models, checked = _read_shipped()
    providers = {name: name.partition("/")[0] for name in models}
    if extra is not None:
        external, stated = _read_external(extra)
        models.update(external)
        providers.update(stated)  # an entry that states none keeps the shipped one's provider
    frozen = {name: MappingProxyType(entry) for name, entry in models.items()}
    return Catalog(models=MappingProxyType(frozen), checked=checked, providers=MappingProxyType(providers))
