"""Deployments added through the API (``/model/new``), kept in the database and served beside the config
file's::

    API body ─► validate: the config's rules (config.parse_deployment) + the API's (below) + DNS (urls.check)
             ─► seal credentials (sealing) ─► ModelRecord ─► store
    store ─► ModelRecord ─► open credentials ─► validate again (no DNS) ─► Deployment ─► Router

The API's rules on top of the config's: no ``os.environ/`` references (the config loader refuses them for
entries not from the file), upstream URLs pass the SSRF guard (:mod:`lockgate.urls`), nothing that reads the
server's own files (``aws_profile_name``), and ids and names that are safe in a header. Credentials
(:data:`SEALED_PARAMS`) are stored sealed under ``LITELLM_SALT_KEY``, bound to the model's id and to where
its traffic goes (:data:`BOUND_PARAMS`), so one who can write the database but lacks the salt key cannot
point a stored credential elsewhere; without a salt key only models without credentials are accepted. A
stored model that no longer passes (another salt key, a narrower allowlist) is skipped with an error line
naming its id, never its values; the others are served.

:class:`DbModels` is the gateway's one per process; it holds no deployments itself (the router does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson

from lockgate import urls
from lockgate.config import ConfigError, Problem, Settings, parse_deployment
from lockgate.configkeys import _SECRET_PARAMS
from lockgate.deployment import Deployment
from lockgate.errors import describe
from lockgate.providers.base import COMMON_CONFIG_PARAMS
from lockgate.sealing import Sealer, SealError, is_sealed
from lockgate.storage.base import ModelRecord, Store

__all__ = ["BOUND_PARAMS", "SEALED_PARAMS", "URL_PARAMS", "DbModels", "ModelProblem"]

log = logging.getLogger("lockgate")

SEALED_PARAMS = frozenset({*_SECRET_PARAMS, "aws_web_identity_token"})
"""``litellm_params`` stored only sealed."""
URL_PARAMS = ("api_base", "base_url", "aws_bedrock_runtime_endpoint")
"""``litellm_params`` that say where traffic goes: each passes the SSRF guard."""
BOUND_PARAMS = ("model", "custom_llm_provider", *URL_PARAMS, "aws_region_name")
"""``litellm_params`` a sealed credential is bound to (with the model's id): changed, it no longer opens."""
_SERVER_LOCAL = {
    "aws_profile_name": "names a profile in the server's own AWS files: only a config-file model may use it",
}
# What reaches a URL or a header must be one line; request defaults may hold "\n" (stop sequences), and a
# service account's JSON (vertex_credentials) a PEM key's newlines.
_NO_CONTROL = (COMMON_CONFIG_PARAMS | SEALED_PARAMS) - {"vertex_credentials"}
_REGION = re.compile(r"[a-z0-9-]{1,40}")
_ID = re.compile(r"[\x21-\x7e]{1,200}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PAGE = 1000


def _has_control(value: object) -> bool:
    if isinstance(value, str):
        return _CONTROL.search(value) is not None
    if isinstance(value, dict):
        return any(_has_control(k) or _has_control(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_control(v) for v in value)
    return False


def _context(model_id: str, params: dict[str, Any]) -> bytes:
    return orjson.dumps([model_id, [params.get(key) for key in BOUND_PARAMS]])


class ModelProblem(Exception):
    """A model entry that cannot be served; ``path`` names the field (``litellm_params.api_base``)."""

    def __init__(self, path: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
        self.code = code

    @classmethod
    def of(cls, problems: list[Problem]) -> ModelProblem:
        """One problem standing for all: the first one's path, every message."""
        text = "; ".join(str(p) for p in problems[:10])
        return cls(problems[0].path if problems else "", text)

    def __str__(self) -> str:
        return self.message if not self.path or self.message.startswith(self.path) else f"{self.path}: {self.message}"


class DbModels:
    """Validation, sealing and loading of API-added models for one gateway (built from its settings)."""

    def __init__(self, settings: Settings) -> None:
        self.sealer = Sealer(settings.salt_key) if settings.salt_key else None
        self.allow = urls.Allowlist.parse(settings.model_api_base_allow)
        self.config_ids = frozenset(d.id for d in settings.deployments)
        self.lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._loaded: tuple[tuple[str, datetime], ...] | None = None
        self._reported: set[tuple[str, datetime]] = set()

    # --- one entry -----------------------------------------------------------------------------------

    def validate(self, entry: dict[str, Any]) -> tuple[Deployment, tuple[Problem, ...]]:
        """The deployment an entry (``model_name``, plain ``litellm_params``, ``model_info`` with ``id``)
        stands for, and its warnings; :class:`ModelProblem` if it may not be served. No I/O."""
        try:
            deployment, warnings = parse_deployment(entry)
        except ConfigError as exc:
            raise ModelProblem.of(exc.problems) from None
        if not _ID.fullmatch(deployment.id):
            raise ModelProblem("model_info.id", "must be 1-200 printable ASCII characters without spaces")
        if _CONTROL.search(deployment.model_name) or len(deployment.model_name) > 256:
            raise ModelProblem("model_name", "must be at most 256 characters, without control characters")
        params: dict[str, Any] = entry["litellm_params"]
        for key, value in params.items():
            if (key in _NO_CONTROL or key.startswith("aws_")) and _has_control(value):
                raise ModelProblem(f"litellm_params.{key}", "must not contain control characters (CR, LF, ...)")
        for key, why in _SERVER_LOCAL.items():
            if key in params:
                raise ModelProblem(f"litellm_params.{key}", why)
        region = params.get("aws_region_name")
        if region is not None and not (isinstance(region, str) and _REGION.fullmatch(region)):
            raise ModelProblem("litellm_params.aws_region_name", "must be an AWS region name such as us-east-1")
        for key in URL_PARAMS:
            if params.get(key) is not None:
                try:
                    urls.check_syntax(params[key], self.allow, what=f"litellm_params.{key}")
                except urls.UnsafeURL as exc:
                    raise ModelProblem(f"litellm_params.{key}", str(exc)) from None
        return deployment, warnings

    async def check_destinations(self, params: dict[str, Any]) -> None:
        """Resolve the hosts of an entry's URLs: :class:`ModelProblem` if one leads somewhere internal."""
        for key in URL_PARAMS:
            if params.get(key) is not None:
                try:
                    await urls.check(params[key], self.allow, what=f"litellm_params.{key}")
                except urls.UnsafeURL as exc:
                    raise ModelProblem(f"litellm_params.{key}", str(exc)) from None

    def seal(self, params: dict[str, Any], model_id: str) -> dict[str, Any]:
        """``litellm_params`` as stored: every credential sealed (:class:`ModelProblem` without a salt key)."""
        context = _context(model_id, params)
        stored: dict[str, Any] = {}
        for key, value in params.items():
            if key in SEALED_PARAMS and value not in (None, ""):
                if self.sealer is None:
                    raise ModelProblem(
                        f"litellm_params.{key}",
                        "this gateway cannot store credentials: set LITELLM_SALT_KEY (a long random value, kept "
                        "and never changed) and restart it, or add the model without credentials",
                        code="salt_key_not_set",
                    )
                stored[key] = self.sealer.seal(key, value, context)
            else:
                stored[key] = value
        return stored

    def open(self, stored: dict[str, Any], model_id: str, *, only: frozenset[str] | None = None) -> dict[str, Any]:
        """Stored ``litellm_params`` with their credentials opened (only those named in ``only``, when given; the
        others are left out); :class:`SealError` if one does not open."""
        context = _context(model_id, stored)
        params: dict[str, Any] = {}
        for key, value in stored.items():
            if not is_sealed(value):
                params[key] = value
            elif only is None or key in only:
                if self.sealer is None:
                    raise SealError(f"{key} is sealed and no LITELLM_SALT_KEY is set")
                params[key] = self.sealer.open(key, value, context)
        return params

    def entry(self, record: ModelRecord) -> dict[str, Any]:
        """A stored model as a ``model_list`` entry, credentials opened."""
        return {
            "model_name": record.model_name,
            "litellm_params": self.open(record.litellm_params, record.model_id),
            "model_info": {**record.model_info, "id": record.model_id},
        }

    def deployment(self, record: ModelRecord) -> Deployment:
        if record.model_id in self.config_ids:
            raise ModelProblem("model_info.id", "is the id of a config-file deployment")
        return self.validate(self.entry(record))[0]

    # --- all of them ---------------------------------------------------------------------------------

    async def load(self, store: Store) -> tuple[Deployment, ...] | None:
        """The stored models that may be served, or None when nothing changed since the last load."""
        records: list[ModelRecord] = []
        while True:
            page = await store.list_models(limit=_PAGE, offset=len(records))
            records += page
            if len(page) < _PAGE:
                break
        stamp = tuple((r.model_id, r.updated_at) for r in records)
        if stamp == self._loaded:
            return None
        deployments: list[Deployment] = []
        for record in records:
            try:
                deployments.append(self.deployment(record))
            except (ModelProblem, SealError) as exc:
                seen = (record.model_id, record.updated_at)
                if seen not in self._reported:
                    self._reported.add(seen)
                    log.error("model %r (added through the API) is not served: %s", record.model_id[:200], exc)
        self._loaded = stamp
        return tuple(deployments)

    def wake(self) -> None:
        """Reload soon (another instance changed the models)."""
        self._wake.set()

    async def keep_fresh(self, reload: Callable[[], Awaitable[None]], every: float) -> None:
        """Call ``reload`` every ``every`` seconds, and at once after :meth:`wake`; a failure is logged and the
        models last loaded stay served. Runs until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(every, 0.5)):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await reload()
            except Exception as exc:
                log.warning(
                    "reloading the models added through the API failed (%s); serving the last ones", describe(exc)
                )
