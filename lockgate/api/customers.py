"""End users (LiteLLM's "customers", aliased ``/end_user/*``): the ``user`` named in a request's body.

``/customer/new|info|update|list|delete|block|unblock``. A blocked end user's requests are refused with
403 before they reach a provider. Admin routes (master key); field allowlists as for keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from lockgate.api.keys import fields_of, notice
from lockgate.asgi import Request
from lockgate.errors import BadRequest, NotFound
from lockgate.pipeline import read_json
from lockgate.storage.base import Conflict, EndUserRecord, utc_now

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = ["block", "delete", "info", "list_end_users", "new", "unblock", "update"]

_FIELDS: dict[str, tuple[type, ...]] = {
    "alias": (str, type(None)),
    "blocked": (bool,),
    "max_budget": (int, float, type(None)),
    "default_model": (str, type(None)),
    "metadata": (dict,),
}
_NOT_YET = frozenset({"budget_id", "allowed_model_region", "spend", "budget_duration", "tpm_limit", "rpm_limit",
                      "model_max_budget", "object_permission"})  # fmt: skip


def _public(record: EndUserRecord) -> dict[str, Any]:
    return {
        "user_id": record.user_id,
        "alias": record.alias,
        "blocked": record.blocked,
        "max_budget": record.max_budget,
        "default_model": record.default_model,
        "metadata": record.metadata,
        "spend": record.spend,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def _user_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise BadRequest("'user_id' is required (the end user's id, as sent in requests' 'user').", param="user_id")
    return value


def _user_ids(body: dict[str, Any]) -> list[str]:
    ids = body.get("user_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise BadRequest("'user_ids' must be a non-empty list.", param="user_ids")
    return ids


async def new(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    user_id = _user_id(body.get("user_id"))
    changes, ignored = fields_of(body, _FIELDS, _NOT_YET, frozenset({"user_id"}))
    now = utc_now()
    record = EndUserRecord(
        user_id=user_id,
        alias=changes.get("alias"),
        blocked=changes.get("blocked", False),
        max_budget=changes.get("max_budget"),
        default_model=changes.get("default_model"),
        metadata=changes.get("metadata", {}),
        created_at=now,
        updated_at=now,
    )
    try:
        await gw.store.insert_end_user(record)
    except Conflict as exc:
        raise BadRequest("This end user already exists.", code="conflict", param="user_id") from exc
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    await gw.key_changed("end:" + user_id)
    await req.respond(200, orjson.dumps(_public(record)), headers=notice(ignored))


async def info(gw: Gateway, req: Request) -> None:
    query = req.query
    user_id = _user_id(query.get("end_user_id") or query.get("user_id"))
    record = await gw.store.get_end_user(user_id)
    if record is None:
        raise NotFound("No such end user.", code="end_user_not_found")
    await req.respond(200, orjson.dumps(_public(record)))


async def update(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    user_id = _user_id(body.get("user_id"))
    changes, ignored = fields_of(body, _FIELDS, _NOT_YET, frozenset({"user_id"}))
    try:
        record = await gw.store.update_end_user(user_id, **changes)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    if record is None:
        raise NotFound("No such end user.", code="end_user_not_found")
    await gw.key_changed("end:" + user_id)
    await req.respond(200, orjson.dumps(_public(record)), headers=notice(ignored))


async def list_end_users(gw: Gateway, req: Request) -> None:
    records = await gw.store.list_end_users(limit=1000)
    await req.respond(200, orjson.dumps([_public(r) for r in records]))


async def delete(gw: Gateway, req: Request) -> None:
    ids = _user_ids(read_json(await req.body(gw.body_limit)))
    deleted = await gw.store.delete_end_users(ids)
    for user_id in ids:
        await gw.key_changed("end:" + user_id)
    if deleted == 0:
        raise NotFound("None of these end users exist.", code="end_user_not_found")
    await req.respond(200, orjson.dumps({"deleted_end_users": ids, "deleted": deleted}))


async def _set_blocked(gw: Gateway, req: Request, blocked: bool) -> None:
    ids = _user_ids(read_json(await req.body(gw.body_limit)))
    changed = await gw.store.set_end_users_blocked(ids, blocked)
    for user_id in ids:
        await gw.key_changed("end:" + user_id)
    if changed == 0:
        raise NotFound("None of these end users exist.", code="end_user_not_found")
    await req.respond(200, orjson.dumps({"blocked_users" if blocked else "unblocked_users": ids}))


async def block(gw: Gateway, req: Request) -> None:
    await _set_blocked(gw, req, True)


async def unblock(gw: Gateway, req: Request) -> None:
    await _set_blocked(gw, req, False)
