"""A deployment: one entry of ``model_list``, an upstream model reachable with one set of credentials.

Several deployments that share a ``model_name`` form a model group; the router picks among them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lockgate.secret import Secret

__all__ = ["Deployment", "deployment_id", "public_url"]


@dataclass(frozen=True, slots=True)
class Deployment:
    model_name: str
    """The public name clients ask for (the model group). May contain ``*`` wildcards."""
    provider: str
    """Provider prefix, e.g. ``openai``, ``azure``, ``hosted_vllm``, ``demo``."""
    upstream_model: str
    """The model the upstream is asked for (``gpt-4o``; for Azure, the deployment name)."""
    id: str
    """Stable id, shown to clients and in logs instead of anything secret."""
    api_base: str | None = field(default=None, repr=False)
    api_key: Secret | None = None
    api_version: str | None = None
    organization: str | None = None
    timeout: float | None = None
    stream_timeout: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    weight: float = 1.0
    order: int | None = None
    max_retries: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    """Provider parameters from ``litellm_params`` that become request defaults (e.g. ``temperature``)."""
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    """Provider-specific settings (credentials, endpoints) that are never sent in a body; secrets as Secret."""
    model_info: dict[str, Any] = field(default_factory=dict)

    @property
    def litellm_model(self) -> str:
        return f"{self.provider}/{self.upstream_model}"

    def public_params(self) -> dict[str, Any]:
        """``litellm_params`` as shown by ``/model/info``: never a key, never a URL's credentials."""
        shown: dict[str, Any] = {"model": self.litellm_model}
        if self.api_base:
            shown["api_base"] = public_url(self.api_base)
        for name in ("api_version", "timeout", "stream_timeout", "rpm", "tpm", "order", "max_retries"):
            value = getattr(self, name)
            if value is not None:
                shown[name] = value
        if self.weight != 1.0:
            shown["weight"] = self.weight
        shown.update(self.params)
        return shown

    def secrets(self) -> tuple[str, ...]:
        """Values to scrub from anything an upstream sends back."""
        found = [self.api_key.reveal()] if self.api_key else []
        found += [value.reveal() for value in self.options.values() if isinstance(value, Secret)]
        return tuple(found)


def public_url(url: str) -> str:
    """A URL without user info, query or fragment (where credentials hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def deployment_id(model_name: str, model: str, api_base: str | None, index: int) -> str:
    """A stable id from what identifies a deployment (never its key)."""
    digest = hashlib.sha256(f"{model_name}\0{model}\0{api_base or ''}\0{index}".encode()).hexdigest()
    return digest[:16]
