"""The OpenAI dialect: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``, ``/model/info``.

Inference handlers only read what the gateway needs and hand the rest to :mod:`lockgate.pipeline`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from lockgate.asgi import Request
from lockgate.errors import BadRequest, PermissionDenied
from lockgate.pipeline import Exchange, read_json, require_model, run, take_controls

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = ["chat_completions", "embeddings", "list_models", "model_info"]


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
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "lockgate"}
        for name in gw.router.names()
        if (wildcards or "*" not in name) and _may_use(req, name)
    ]
    await req.respond(200, orjson.dumps({"object": "list", "data": data}))


def _may_use(req: Request, model: str) -> bool:
    """Whether the caller's key may use a model group (each caller sees only what it may use)."""
    try:
        if req.principal is not None:
            req.principal.check_model(model)
    except PermissionDenied:
        return False
    return True


_INFO_FIELDS = (
    "max_tokens", "max_input_tokens", "max_output_tokens", "input_cost_per_token", "output_cost_per_token",
    "cache_read_input_token_cost", "cache_creation_input_token_cost", "output_cost_per_reasoning_token",
    "supports_vision", "supports_function_calling", "supports_tool_choice", "supports_prompt_caching",
    "supports_reasoning", "supports_response_schema", "supports_pdf_input",
)  # fmt: skip


async def model_info(gw: Gateway, req: Request) -> None:
    """LiteLLM's ``/model/info``: what Cline reads to show limits, capabilities and prices."""
    data = []
    for target in gw.router.targets():
        d = target.deployment
        if not _may_use(req, d.model_name):
            continue
        info: dict[str, Any] = {name: d.model_info.get(name) for name in _INFO_FIELDS}
        info.update(
            id=d.id,
            db_model=False,
            mode=d.model_info.get("mode", "chat"),
            key=d.upstream_model,
            litellm_provider=d.provider,
            access_groups=d.model_info.get("access_groups", []),
        )
        data.append({"model_name": d.model_name, "litellm_params": d.public_params(), "model_info": info})
    await req.respond(200, orjson.dumps({"data": data}))
