"""LiteLLM's model management API: ``/model/new``, ``/model/update`` (and ``PATCH /model/{id}/update``),
``/model/delete`` (admin routes).

Deployments added here are kept in the database and served beside the config file's; one with the
model_name of a config group joins that group. Each is validated exactly as a config ``model_list`` entry,
plus the API's own rules (:mod:`lockgate.dbmodels`: no ``os.environ/`` references, the SSRF guard on its
URLs, credentials sealed under ``LITELLM_SALT_KEY``). A change is served at once by the instance that made
it and by the others within moments through Redis, else within ``user_api_key_cache_ttl``. Config-file
deployments cannot be changed here. Bodies, as LiteLLM's::

    /model/new      {"model_name", "litellm_params": {...}, "model_info"?: {"id"?: a chosen id, ...}}
    /model/update   {"model_info": {"id"}} or {"model_id"} or {"id"}, with "model_name"?, "litellm_params"?,
                    "model_info"?: the keys given replace the stored ones, a null leaves one as it is
    PATCH /model/{id}/update   the same, the model named in the path (what LiteLLM's UI and the Terraform
                    provider call); an id in the body too must be the same
    /model/delete   {"id"}

New and update answer the model in ``/model/info``'s shape (``db_model: true``, never a credential), with
the keys it ignores named in ``x-lockgate-notice``. A stored credential is never sent to a new address: an
update that changes where the model's traffic goes must give its credentials again.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from lockgate.api.openai import deployment_info
from lockgate.asgi import Request
from lockgate.config import Problem
from lockgate.dbmodels import SEALED_PARAMS, ModelProblem
from lockgate.deployment import Deployment
from lockgate.errors import BadRequest, GatewayError, NotFound
from lockgate.pipeline import read_json
from lockgate.sealing import SealError
from lockgate.storage.base import Conflict, ModelRecord, utc_now

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = ["model_delete", "model_new", "model_update", "path_model_id"]

_NEW_FIELDS = frozenset({"model_name", "litellm_params", "model_info"})
_UPDATE_FIELDS = _NEW_FIELDS | {"model_id", "id"}
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _only(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for name in body:
        if name not in allowed:
            raise BadRequest(f"Unknown field '{name[:60]}'.", param=name[:60])


def _mapping(body: dict[str, Any], name: str, *, required: bool = False) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"'{name}' must be an object.", param=name)
    return dict(value)


def _info(body: dict[str, Any]) -> dict[str, Any]:
    """The given model_info, without what the gateway says itself (``db_model``)."""
    info = _mapping(body, "model_info")
    info.pop("db_model", None)
    return info


def _refused(problem: ModelProblem) -> BadRequest:
    return BadRequest(str(problem), param=problem.path or None, code=problem.code)


def _notice(warnings: tuple[Problem, ...]) -> list[tuple[bytes, bytes]]:
    if not warnings:
        return []
    text = _UNPRINTABLE.sub("?", "; ".join(str(w) for w in warnings[:20]))[:2000]
    return [(b"x-lockgate-notice", text.encode())]


def _missing(gw: Gateway, model_id: str, param: str) -> GatewayError:
    if model_id in gw.db_models.config_ids:
        return BadRequest(f"The model '{model_id[:100]}' is defined in the config file; change it there.", param=param)
    # "model not found": the words the Terraform provider looks for to recreate a model deleted outside it
    return NotFound(f"model not found: no model with id '{model_id[:100]}' was added through the API.", param=param)


async def _checked(gw: Gateway, entry: dict[str, Any]) -> tuple[Deployment, dict[str, Any], tuple[Problem, ...]]:
    """The deployment an entry stands for, its litellm_params as stored (sealed), and its warnings."""
    try:
        deployment, warnings = gw.db_models.validate(entry)
        sealed = gw.db_models.seal(entry["litellm_params"], entry["model_info"]["id"])
        await gw.db_models.check_destinations(entry["litellm_params"])
    except ModelProblem as problem:
        raise _refused(problem) from None
    return deployment, sealed, warnings


async def model_new(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    _only(body, _NEW_FIELDS)
    params = _mapping(body, "litellm_params", required=True)
    info = _info(body)
    model_id = info.pop("id", None) or str(uuid.uuid4())
    if not isinstance(model_id, str):
        raise BadRequest("'model_info.id' must be a string.", param="model_info.id")
    if model_id in gw.db_models.config_ids:
        raise BadRequest(
            f"The config file has a deployment with the id '{model_id[:100]}'.", param="model_info.id", code="conflict"
        )
    entry = {"model_name": body.get("model_name"), "litellm_params": params, "model_info": {**info, "id": model_id}}
    deployment, sealed, warnings = await _checked(gw, entry)
    now = utc_now()
    who = req.principal.identity if req.principal is not None else None
    record = ModelRecord(model_id, deployment.model_name, sealed, info, who, now, now)
    try:
        await gw.store.insert_model(record)
    except Conflict as exc:
        raise BadRequest(
            f"A model with the id '{model_id[:100]}' already exists.", param="model_info.id", code="conflict"
        ) from exc
    await gw.models_changed()
    await req.respond(200, orjson.dumps(_shown(gw, deployment)), headers=_notice(warnings))


def _shown(gw: Gateway, deployment: Deployment) -> dict[str, Any]:
    """The model as ``/model/info`` shows it, with the prices it is charged at once it is served."""
    target = next((t for t in gw.router.targets() if t.deployment.id == deployment.id), None)
    return deployment_info(deployment, db_model=True, prices=None if target is None else target.prices)


def _model_id(body: dict[str, Any], info: dict[str, Any]) -> str:
    """The model an update names: ``model_info.id`` (LiteLLM's), ``model_id`` or ``id``; all that are given agree."""
    candidates = (("model_info.id", info.get("id")), ("model_id", body.get("model_id")), ("id", body.get("id")))
    given = {name: value for name, value in candidates if value is not None}
    if not given:
        raise BadRequest("Name the model: 'model_info.id' (or 'model_id').", param="model_info.id")
    for name, value in given.items():
        if not isinstance(value, str) or not value:
            raise BadRequest(f"'{name}' must be a non-empty string.", param=name)
    if len(set(given.values())) > 1:
        raise BadRequest("'model_info.id', 'model_id' and 'id' name different models.", param="model_info.id")
    return str(next(iter(given.values())))


def _opened(gw: Gateway, record: ModelRecord, kept: dict[str, Any]) -> dict[str, Any]:
    """The stored litellm_params an update keeps, credentials opened."""
    try:
        opened = gw.db_models.open(record.litellm_params, record.model_id, only=frozenset(kept))
    except SealError as exc:
        raise BadRequest(
            f"A stored credential cannot be opened ({exc}); give the model's credentials again.",
            param="litellm_params",
        ) from None
    return {key: value for key, value in opened.items() if key in kept}


def _destination(d: Deployment) -> tuple[Any, ...]:
    """Where a deployment's traffic (and so its credentials) goes."""
    options = d.options
    return (d.provider, d.api_base, options.get("aws_bedrock_runtime_endpoint"), options.get("aws_region_name"))


def _check_destination(gw: Gateway, record: ModelRecord, kept: dict[str, Any], after: Deployment) -> None:
    """A stored credential is never sent to a new address: an update that moves the model gives them again."""
    kept_secrets = sorted(key for key, value in kept.items() if key in SEALED_PARAMS and value not in (None, ""))
    if not kept_secrets:
        return
    try:
        before: Deployment | None = gw.db_models.validate(gw.db_models.entry(record))[0]
    except (ModelProblem, SealError):
        before = None
    if before is None or _destination(before) != _destination(after):
        raise BadRequest(
            f"This update changes where the model's traffic goes: give {', '.join(kept_secrets)} again "
            "(a stored credential is never sent to a new address).",
            param=f"litellm_params.{kept_secrets[0]}",
        )


def path_model_id(path: str) -> str | None:
    """The model ``/model/{id}/update`` names (the ASGI path is already percent-decoded); None for any other
    path."""
    if not (path.startswith("/model/") and path.endswith("/update")) or path == "/model/update":
        return None
    named = path[len("/model/") : -len("/update")]
    return named if named and "/" not in named else None


async def model_update(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    _only(body, _UPDATE_FIELDS)
    given_params = _mapping(body, "litellm_params")
    info = _info(body)
    in_path = path_model_id(req.path)
    if in_path is not None:
        body.setdefault("model_id", in_path)  # the body's own ids must agree with it (_model_id)
    model_id = _model_id(body, info)
    if in_path is not None and model_id != in_path:
        raise BadRequest("The body names another model than the path.", param="model_id")
    info.pop("id", None)
    param = "model_info.id" if "model_info" in body else "model_id" if "model_id" in body else "id"
    if model_id in gw.db_models.config_ids:
        raise _missing(gw, model_id, param)
    record = await gw.store.get_model(model_id)
    if record is None:
        raise _missing(gw, model_id, param)
    changes = {key: value for key, value in given_params.items() if value is not None}
    kept = {key: value for key, value in record.litellm_params.items() if key not in changes}
    params = {**_opened(gw, record, kept), **changes}
    name = body.get("model_name")
    merged_info = {**record.model_info, **{key: value for key, value in info.items() if value is not None}}
    entry = {
        "model_name": record.model_name if name is None else name,
        "litellm_params": params,
        "model_info": {**merged_info, "id": model_id},
    }
    deployment, sealed, warnings = await _checked(gw, entry)
    _check_destination(gw, record, kept, deployment)
    updated = await gw.store.update_model(
        model_id, model_name=deployment.model_name, litellm_params=sealed, model_info=merged_info
    )
    if updated is None:  # deleted meanwhile
        raise _missing(gw, model_id, param)
    await gw.models_changed()
    await req.respond(200, orjson.dumps(_shown(gw, deployment)), headers=_notice(warnings))


async def model_delete(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    _only(body, frozenset({"id"}))
    model_id = body.get("id")
    if not isinstance(model_id, str) or not model_id:
        raise BadRequest("'id' must name the model to delete.", param="id")
    if await gw.store.delete_models([model_id]) == 0:
        raise _missing(gw, model_id, "id")
    await gw.models_changed()
    await req.respond(200, orjson.dumps({"message": f"Model: {model_id} deleted successfully", "id": model_id}))
