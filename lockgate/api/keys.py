"""LiteLLM's key management API: ``/key/generate``, ``/key/info``, ``/key/list``, ``/key/update``,
``/key/delete``, ``/key/block``, ``/key/unblock`` (paths and field names as LiteLLM's, so existing scripts
keep working).

Admin routes (master key) except ``/key/info``, which a key may also ask about itself. Each endpoint
accepts an allowlist of fields: LiteLLM fields lockgate does not implement yet are accepted and named in
``x-lockgate-notice``; anything else is refused with 400. Keys are shown once, at creation; afterwards a
key is named by itself or by its hash (``token``).
"""

from __future__ import annotations

import fnmatch
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from lockgate.asgi import Request
from lockgate.errors import BadRequest, NotFound, PermissionDenied
from lockgate.keys import display_name, generate_key, hash_key, new_record, parse_duration
from lockgate.pipeline import read_json
from lockgate.storage.base import Conflict, KeyRecord

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = [
    "block", "delete", "fields_of", "generate", "info", "list_keys", "notice", "regenerate", "unblock", "update",
]  # fmt: skip

_SETTABLE: dict[str, tuple[type, ...]] = {
    "key_alias": (str, type(None)),
    "user_id": (str, type(None)),
    "team_id": (str, type(None)),
    "models": (list,),
    "max_budget": (int, float, type(None)),
    "budget_duration": (str, type(None)),
    "tpm_limit": (int, type(None)),
    "rpm_limit": (int, type(None)),
    "max_parallel_requests": (int, type(None)),
    "metadata": (dict,),
    "blocked": (bool,),
}
# LiteLLM key fields not implemented yet: accepted (scripts and the Terraform provider send them), named back.
_NOT_YET = frozenset(
    {
        "soft_budget", "aliases", "config", "permissions", "model_max_budget", "model_rpm_limit", "model_tpm_limit",
        "guardrails", "tags", "allowed_routes", "allowed_cache_controls", "key_type", "organization_id",
        "project_id", "budget_id", "send_invite_email", "enforced_params", "object_permission",
        "rpm_limit_type", "tpm_limit_type", "auto_rotate", "rotation_interval", "allowed_passthrough_routes",
        "prompts", "policies", "agent_id", "access_group_ids", "budget_limits", "router_settings",
    }
)  # fmt: skip


def fields_of(
    body: dict[str, Any], allowed: dict[str, tuple[type, ...]], not_yet: frozenset[str], extra: frozenset[str]
) -> tuple[dict[str, Any], list[str]]:
    """The settable fields of a request, checked against ``allowed``; and the names of the accepted but not
    yet implemented ones (``not_yet``). ``extra`` names fields the endpoint reads itself."""
    changes: dict[str, Any] = {}
    ignored: list[str] = []
    for name, value in body.items():
        if name in extra:
            continue
        if name in not_yet:
            ignored.append(name)
            continue
        kinds = allowed.get(name)
        if kinds is None:
            raise BadRequest(f"Unknown field '{name[:60]}'.", param=name[:60])
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise BadRequest(f"'{name}' has the wrong type.", param=name)
        value = body[name]  # checked above; typed Any again for what follows
        if name == "models" and not all(isinstance(m, str) for m in value):
            raise BadRequest("'models' must be a list of model names.", param="models")
        if (
            name in ("tpm_limit", "rpm_limit", "max_parallel_requests", "max_budget")
            and value is not None
            and value < 0
        ):
            raise BadRequest(f"'{name}' must not be negative.", param=name)
        changes[name] = tuple(value) if name == "models" else value
    return changes, ignored


async def _check_team(gw: Gateway, changes: dict[str, Any]) -> None:
    """A key's team must exist, and the key may not be given models its team does not allow."""
    team_id = changes.get("team_id")
    if not team_id:
        return
    team = await gw.store.get_team(team_id)
    if team is None:
        raise NotFound(f"No team '{str(team_id)[:100]}'.", param="team_id", code="team_not_found")
    models = changes.get("models", ())
    if team.models:
        outside = [m for m in models if not any(fnmatch.fnmatchcase(m, allowed) for allowed in team.models)]
        if outside:  # a key without its own list simply gets the team's
            raise PermissionDenied(
                f"The team does not allow {', '.join(outside[:5])}; a team key may use only the team's models."
            )


def _public(record: KeyRecord) -> dict[str, Any]:
    """A key as the API shows it: never the key itself, only its hash (``token``) and display name."""
    return {
        "token": record.token_hash,
        "key_name": record.key_name,
        "key_alias": record.key_alias,
        "user_id": record.user_id,
        "team_id": record.team_id,
        "models": list(record.models),
        "max_budget": record.max_budget,
        "budget_duration": record.budget_duration,
        "tpm_limit": record.tpm_limit,
        "rpm_limit": record.rpm_limit,
        "max_parallel_requests": record.max_parallel_requests,
        "metadata": record.metadata,
        "blocked": record.blocked,
        "expires": record.expires.isoformat() if record.expires else None,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "spend": record.spend,
    }


def notice(ignored: list[str]) -> list[tuple[bytes, bytes]]:
    if not ignored:
        return []
    return [(b"x-lockgate-notice", ("not implemented yet, ignored: " + ", ".join(sorted(ignored))).encode())]


def _token_hash(value: Any) -> str:
    """A key named by itself (``sk-...``) or by its hash."""
    if not isinstance(value, str) or not value:
        raise BadRequest("'key' is required.", param="key")
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else hash_key(value)


async def generate(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    changes, ignored = fields_of(body, _SETTABLE, _NOT_YET, frozenset({"key", "duration"}))
    await _check_team(gw, changes)
    custom = body.get("key")
    if custom is not None and (not isinstance(custom, str) or len(custom) < 16):
        raise BadRequest("A chosen 'key' must be a string of at least 16 characters.", param="key")
    token = custom or generate_key()
    duration = body.get("duration")
    expires = parse_duration(duration, datetime.now(UTC)) if isinstance(duration, str) and duration else None
    record = new_record(token, changes, expires)
    try:
        await gw.store.insert_key(record)
    except Conflict as exc:
        raise BadRequest("A key with this value or key_alias already exists.", code="conflict") from exc
    await req.respond(200, orjson.dumps({"key": token, **_public(record)}), headers=notice(ignored))


async def info(gw: Gateway, req: Request) -> None:
    query = parse_qs(req.scope.get("query_string", b"").decode("latin-1"))
    asked = query.get("key", [None])[0]
    principal = req.principal
    if asked is None:  # a key asking about itself
        if principal is None or principal.key is None:
            raise BadRequest("'key' is required.", param="key")
        token_hash = principal.key.token_hash
    else:
        token_hash = _token_hash(asked)
        own = principal is not None and principal.key is not None and principal.key.token_hash == token_hash
        if not own and (principal is None or not principal.is_admin):
            raise PermissionDenied("Only an admin may look at another key.")
    record = await gw.store.get_key(token_hash)
    if record is None:
        raise NotFound("No such key.", code="key_not_found")
    await req.respond(200, orjson.dumps({"key": token_hash, "info": _public(record)}))


async def list_keys(gw: Gateway, req: Request) -> None:
    query = {k: v[0] for k, v in parse_qs(req.scope.get("query_string", b"").decode("latin-1")).items()}
    try:
        page, size = int(query.get("page", "1")), int(query.get("size", "100"))
    except ValueError as exc:
        raise BadRequest("'page' and 'size' must be numbers.") from exc
    page, size = max(page, 1), min(max(size, 1), 1000)
    records = await gw.store.list_keys(
        user_id=query.get("user_id"), team_id=query.get("team_id"), limit=size, offset=(page - 1) * size
    )
    keys = [r.token_hash for r in records]
    body = {"keys": keys, "data": [_public(r) for r in records], "current_page": page, "page_size": size}
    await req.respond(200, orjson.dumps(body))


async def update(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    token_hash = _token_hash(body.get("key"))
    changes, ignored = fields_of(body, _SETTABLE, _NOT_YET, frozenset({"key", "duration"}))
    await _check_team(gw, changes)
    duration = body.get("duration")
    if isinstance(duration, str) and duration:
        changes["expires"] = parse_duration(duration, datetime.now(UTC))
    try:
        record = await gw.store.update_key(token_hash, **changes)
    except Conflict as exc:
        raise BadRequest("Another key has this key_alias.", code="conflict") from exc
    if record is None:
        raise NotFound("No such key.", code="key_not_found")
    await gw.key_changed(token_hash)
    await req.respond(200, orjson.dumps(_public(record)), headers=notice(ignored))


async def delete(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    keys = body.get("keys")
    if not isinstance(keys, list) or not keys:
        raise BadRequest("'keys' must be a non-empty list.", param="keys")
    hashes = [_token_hash(k) for k in keys]
    deleted = await gw.store.delete_keys(hashes)
    for token_hash in hashes:
        await gw.key_changed(token_hash)
    if deleted == 0:
        raise NotFound("None of these keys exist.", code="key_not_found")
    await req.respond(200, orjson.dumps({"deleted_keys": keys, "deleted": deleted}))


async def regenerate(gw: Gateway, req: Request) -> None:
    """A new value for an existing key, same settings; the old value stops working (everywhere)."""
    body = read_json(await req.body(gw.body_limit))
    token_hash = _token_hash(body.get("key"))
    token = generate_key()
    try:
        record = await gw.store.rekey(token_hash, hash_key(token), display_name(token))
    except Conflict as exc:  # pragma: no cover - a fresh 256-bit key colliding
        raise BadRequest("Could not regenerate the key; try again.", code="conflict") from exc
    if record is None:
        raise NotFound("No such key.", code="key_not_found")
    await gw.key_changed(token_hash)
    await req.respond(200, orjson.dumps({"key": token, **_public(record)}))


async def _set_blocked(gw: Gateway, req: Request, blocked: bool) -> None:
    body = read_json(await req.body(gw.body_limit))
    token_hash = _token_hash(body.get("key"))
    record = await gw.store.update_key(token_hash, blocked=blocked)
    if record is None:
        raise NotFound("No such key.", code="key_not_found")
    await gw.key_changed(token_hash)
    await req.respond(200, orjson.dumps(_public(record)))


async def block(gw: Gateway, req: Request) -> None:
    await _set_blocked(gw, req, True)


async def unblock(gw: Gateway, req: Request) -> None:
    await _set_blocked(gw, req, False)
