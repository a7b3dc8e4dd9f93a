"""The OpenAI dialect: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``, ``/model/info``.

Inference handlers only read what the gateway needs and hand the rest to :mod:`lockgate.pipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from lockgate.asgi import Request
from lockgate.catalog import is_price
from lockgate.errors import BadRequest, NotFound
from lockgate.pipeline import Exchange, read_json, require_model, run, take_controls

if TYPE_CHECKING:
    from lockgate.app import Gateway
    from lockgate.deployment import Deployment

__all__ = ["chat_completions", "deployment_info", "embeddings", "list_models", "model_info", "model_info_v2"]


async def chat_completions(gw: Gateway, req: Request) -> None:
    raw = await req.body(gw.body_limit)
    body = read_json(raw)
    model = require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", param="messages")
    controls = take_controls(body)
    stream = body.get("stream") is True
    options = body.get("stream_options")
    wants_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    await run(gw, req, body, raw, model, controls, Exchange("openai", "chat", stream, wants_usage))


async def embeddings(gw: Gateway, req: Request) -> None:
    raw = await req.body(gw.body_limit)
    body = read_json(raw)
    model = require_model(body)
    if "input" not in body:
        raise BadRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    controls = take_controls(body)
    await run(gw, req, body, raw, model, controls, Exchange("openai", "embeddings"))


async def list_models(gw: Gateway, req: Request) -> None:
    created = gw.started_at
    wildcards = req.scope.get("query_string", b"").find(b"return_wildcard_routes=true") >= 0
    names = [name for name in gw.router.names() if (wildcards or "*" not in name) and _may_use(gw, req, name)]
    if req.principal is not None:  # the caller's own aliases, where they lead to a model it may use
        names += [a for a, target in req.principal.aliases().items() if a not in names and _may_use(gw, req, target)]
    data = [{"id": name, "object": "model", "created": created, "owned_by": "lockgate"} for name in names]
    await req.respond(200, orjson.dumps({"object": "list", "data": data}))


def _may_use(gw: Gateway, req: Request, model: str) -> bool:
    """Whether the caller's key may use a model group (each caller sees only what it may use)."""
    return req.principal is None or req.principal.may_use(model, gw.access_groups)


_INFO_FIELDS = (
    "max_tokens", "max_input_tokens", "max_output_tokens", "input_cost_per_token", "output_cost_per_token",
    "cache_read_input_token_cost", "cache_creation_input_token_cost", "output_cost_per_reasoning_token",
    "supports_vision", "supports_function_calling", "supports_tool_choice", "supports_prompt_caching",
    "supports_reasoning", "supports_response_schema", "supports_pdf_input",
)  # fmt: skip


def _model_infos(gw: Gateway, req: Request, *, model: str | None, model_id: str | None) -> list[dict[str, Any]]:
    """The deployments the caller may use, in ``/model/info``'s shape, of one model group and/or one id."""
    router = gw.router
    return [
        deployment_info(t.deployment, db_model=t.deployment.id in router.db_ids, prices=t.prices)
        for t in router.targets()
        if (model is None or t.deployment.model_name == model)
        and (model_id is None or t.deployment.id == model_id)
        and _may_use(gw, req, t.deployment.model_name)
    ]


async def model_info(gw: Gateway, req: Request) -> None:
    """LiteLLM's ``/model/info``: what Cline reads to show limits, capabilities and prices (those the gateway
    charges: the catalog's under each deployment's model_info); deployments added through ``/model/new`` are
    marked ``db_model: true``. ``?litellm_model_id=`` (one deployment, 404 if the caller has none of that id:
    what the Terraform provider reads back) and ``?model=`` (one model group) narrow it."""
    query = req.query
    model_id = query.get("litellm_model_id")
    data = _model_infos(gw, req, model=query.get("model"), model_id=model_id)
    if model_id is not None and not data:
        raise NotFound(f"model not found: no model with id '{model_id[:100]}'.", param="litellm_model_id")
    await req.respond(200, orjson.dumps({"data": data}))


async def model_info_v2(gw: Gateway, req: Request) -> None:
    """LiteLLM's ``/v2/model/info`` (its UI, the Terraform provider): ``/model/info``'s entries, narrowed by
    ``modelId`` (a deployment id), ``model`` (a model group) and ``search`` (part of a model group's name, any
    case), a page at a time (``page`` from 1, ``size`` 1-100, 50 by default), sorted by model group then id."""
    query = req.query
    try:
        page, size = int(query.get("page", "1")), int(query.get("size", "50"))
    except ValueError:
        raise BadRequest("'page' and 'size' must be whole numbers.", param="page") from None
    if page < 1 or not 1 <= size <= 100:
        raise BadRequest("'page' must be 1 or more and 'size' from 1 to 100.", param="page" if page < 1 else "size")
    data = _model_infos(gw, req, model=query.get("model"), model_id=query.get("modelId"))
    search = query.get("search", "").casefold()
    if search:
        data = [entry for entry in data if search in entry["model_name"].casefold()]
    data.sort(key=lambda entry: (entry["model_name"], entry["model_info"]["id"]))
    total = len(data)
    await req.respond(200, orjson.dumps({
        "data": data[(page - 1) * size : page * size], "total_count": total, "current_page": page, "size": size,
        "total_pages": -(-total // size),
    }))  # fmt: skip


def deployment_info(d: Deployment, *, db_model: bool, prices: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One deployment in ``/model/info``'s shape: never a credential (:meth:`Deployment.public_params`).

    ``prices`` is what the gateway charges for it (the router's ``Target.prices``: the catalog's entry for its model
    with its ``model_info`` over it), shown as LiteLLM shows its cost map merged into model_info: every price
    (tiers and 1-hour cache writes too) and the catalog's context limits where model_info has none. Without it, the
    deployment's own ``model_info`` alone. ``max_tokens``, when not set, is the output limit (LiteLLM's older name
    for it)."""
    shown = d.model_info if prices is None else prices
    info: dict[str, Any] = {name: shown.get(name) for name in _INFO_FIELDS}
    info.update((name, value) for name, value in shown.items() if isinstance(name, str) and is_price(name))
    info.update((name, value) for name, value in d.model_info.items() if name not in info)  # base_model, tier, ...
    if info["max_tokens"] is None:
        info["max_tokens"] = info["max_output_tokens"]
    info.update(
        id=d.id,
        db_model=db_model,
        mode=d.model_info.get("mode", "chat"),
        key=d.upstream_model,
        litellm_provider=d.provider,
        access_groups=d.model_info.get("access_groups", []),
    )
    return {"model_name": d.model_name, "litellm_params": d.public_params(), "model_info": info}
