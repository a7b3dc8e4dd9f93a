"""The price catalog shipped with lockgate: USD per token per ``provider/model``, in LiteLLM's field names.

``prices.json`` (package data) holds, for each model, the prices ``lockgate.pricing`` reads, its context limits,
the URL of the provider's own page the prices were read from (``source``) and the day they were read (``checked``).
A user file in LiteLLM's ``model_prices_and_context_window.json`` format may be layered on top; its entries replace
the shipped ones of the same name whole.

Validation at load: every price (and limit) is a finite number >= 0. The shipped file refuses any field it does not
know; the external file ignores fields it does not know (LiteLLM's carry many lockgate does not use).
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

__all__ = ["Catalog", "CatalogError", "load_catalog"]

_BASE_PRICES = frozenset(
    {
        "input_cost_per_token",
        "output_cost_per_token",
        "cache_read_input_token_cost",
        "cache_creation_input_token_cost",
        "cache_creation_input_token_cost_above_1hr",
        "output_cost_per_reasoning_token",
    }
)
_TIER = re.compile(r"(?P<base>[a-z0-9_]+?)_above_[0-9]+k?_tokens")
_LIMITS = frozenset({"max_input_tokens", "max_output_tokens"})
_TEXT = frozenset({"source", "checked"})
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATED = re.compile(r"(?P<model>.+?)-(?:[0-9]{8}|[0-9]{4}-[0-9]{2}-[0-9]{2})")


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message names the file, the model and the field."""


def _is_price(name: str) -> bool:
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
        if _is_price(name) or name in _LIMITS:
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


def _external_entry(where: str, model: str, entry: object) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: model {model!r}: entry is not an object")
    kept: dict[str, Any] = {}
    for name, value in entry.items():
        if not isinstance(name, str) or not (_is_price(name) or name in _LIMITS):
            continue  # a LiteLLM field lockgate does not use
        if value is None:
            continue
        if not _number(value):
            raise CatalogError(f"{where}: model {model!r}: field {name!r} is not a finite number >= 0: {value!r}")
        kept[name] = value
    return kept


@dataclass(frozen=True)
class Catalog:
    """Prices by ``provider/model`` (or a bare model name, from an external file)."""

    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    checked: str | None = None

    def prices_for(self, provider: str, upstream_model: str) -> Mapping[str, Any] | None:
        """The entry for ``upstream_model`` at ``provider``: ``provider/model`` first, then the bare model name, then
        the same two with a date suffix stripped (``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5``) when the
        catalog lists the model that way; None when unknown."""
        names = [upstream_model]
        dated = _DATED.fullmatch(upstream_model)
        if dated is not None:
            names.append(dated["model"])
        for name in names:
            for key in (f"{provider}/{name}", name):
                entry = self.models.get(key)
                if entry is not None:
                    return entry
        return None


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


def _read_external(path: Path) -> dict[str, dict[str, Any]]:
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{where}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: not a JSON object of models")
    out: dict[str, dict[str, Any]] = {}
    for model, entry in data.items():
        if model == "sample_spec":  # LiteLLM's documentation entry
            continue
        kept = _external_entry(where, model, entry)
        out[model] = kept
        provider = entry.get("litellm_provider")
        if "/" not in model and isinstance(provider, str) and provider:
            out[f"{provider}/{model}"] = kept
    return out


def load_catalog(extra: Path | None = None) -> Catalog:
    """The shipped catalog, with the entries of ``extra`` (LiteLLM's format) replacing those of the same name."""
    models, checked = _read_shipped()
    if extra is not None:
        models.update(_read_external(extra))
    frozen = {name: MappingProxyType(entry) for name, entry in models.items()}
    return Catalog(models=MappingProxyType(frozen), checked=checked)
