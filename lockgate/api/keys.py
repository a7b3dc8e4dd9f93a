"""LiteLLM's key management API: ``/key/generate``, ``/key/info``, ``/key/list``, ``/key/update``,
``/key/delete``, ``/key/block``, ``/key/unblock``, ``/key/regenerate`` and ``/key/{key}/regenerate`` (paths
and field names as LiteLLM's, so existing scripts keep working).

Who may do what is decided here, per key (see the section "who may do what"): proxy admins everything,
everyone else their own keys and those of the teams they administer, and never more than they hold
themselves. Each endpoint accepts an allowlist of fields: LiteLLM fields lockgate does not implement
yet are accepted and named in ``x-lockgate-notice``; anything else is refused with 400. Keys are shown
once, at creation; afterwards a key is named by itself or by its hash (``token``).
"""

from __future__ import annotations

import fnmatch
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from lockgate import prompts
from lockgate.asgi import Request
from lockgate.auth import KEY_TYPES, ROUTE_GROUPS, Principal, model_allowed
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
    "organization_id": (str, type(None)),
    "models": (list,),
    "aliases": (dict,),
    "allowed_routes": (list,),
    "max_budget": (int, float, type(None)),
    "soft_budget": (int, float, type(None)),
    "budget_duration": (str, type(None)),
    "tpm_limit": (int, type(None)),
    "rpm_limit": (int, type(None)),
    "max_parallel_requests": (int, type(None)),
    "model_max_budget": (dict,),
    "model_rpm_limit": (dict,),
    "model_tpm_limit": (dict,),
    "metadata": (dict,),
    "blocked": (bool,),
}
# LiteLLM key fields not implemented yet: accepted (scripts and the Terraform provider send them), named back.
_NOT_YET = frozenset(
    {
        "config", "permissions", "guardrails", "tags", "allowed_cache_controls", "project_id", "budget_id",
        "send_invite_email", "enforced_params", "object_permission", "rpm_limit_type", "tpm_limit_type",
        "auto_rotate", "rotation_interval", "allowed_passthrough_routes", "prompts", "policies", "agent_id",
        "access_group_ids", "budget_limits", "router_settings",
    }
)  # fmt: skip
_READ_BY_ENDPOINT = frozenset({"key", "duration", "key_type"})
_LISTS = frozenset({"models", "allowed_routes"})
_NUMBERS = ("max_budget", "soft_budget", "tpm_limit", "rpm_limit", "max_parallel_requests")
_MAPS = {"aliases": str, "model_max_budget": float, "model_rpm_limit": int, "model_tpm_limit": int}


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
        if name in _LISTS and not all(isinstance(m, str) and m for m in value):
            raise BadRequest(f"'{name}' must be a list of names.", param=name)
        if name in _NUMBERS and value is not None and value < 0:
            raise BadRequest(f"'{name}' must not be negative.", param=name)
        if name in _MAPS:
            _check_map(name, value, _MAPS[name])
        changes[name] = tuple(value) if name in _LISTS else value
    return changes, ignored


def _check_map(name: str, value: dict[str, Any], kind: type) -> None:
    """``aliases`` map names to model names; the per-model limits map model names to non-negative numbers."""
    if kind is not str and "" in value:
        raise BadRequest(f"'{name}' must name each model.", param=name)
    for item in value.values():
        if kind is float and isinstance(item, dict):  # LiteLLM's GenericBudgetInfo
            raise BadRequest(f"'{name}' takes a number (USD) per model; {{budget_limit, time_period}} objects are "
                             "not supported: the budget's period is 'budget_duration'.", param=name)  # fmt: skip
        if kind is str:
            ok = isinstance(item, str) and bool(item)
        else:
            ok = isinstance(item, int | float) and not isinstance(item, bool) and item >= 0
            ok = ok and (kind is float or isinstance(item, int))
        if not ok:
            what = "model names" if kind is str else "non-negative integers" if kind is int else "non-negative numbers"
            raise BadRequest(f"'{name}' must map model names to {what}.", param=name)


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
        "aliases": record.aliases,
        "allowed_routes": list(record.allowed_routes),
        "soft_budget": record.soft_budget,
        "model_max_budget": record.model_max_budget,
        "model_rpm_limit": record.model_rpm_limit,
        "model_tpm_limit": record.model_tpm_limit,
        "organization_id": record.organization_id,
        "created_by": record.created_by,
        "updated_by": record.updated_by,
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


# --- who may do what to which key ------------------------------------------------------------------------
# Proxy admins: everything. Proxy-admin viewers: read everything. Everyone else with a user behind their key
# (internal users, and team admins for their teams): their own keys, and the keys of teams they administer;
# and whatever they create or change is at most what they hold themselves (their key's models, limits,
# expiry and routes, their user's limits). A key without a known owner may only ask about itself.


async def _team_role(gw: Gateway, team_id: str, user_id: str | None) -> str | None:
    if user_id is None:
        return None
    member = await gw.store.get_member(team_id, user_id)
    return member.role if member is not None else None


async def _check_scope(gw: Gateway, p: Principal, record: KeyRecord, *, write: bool) -> None:
    """Raise :class:`PermissionDenied` unless ``p`` may see (or, with ``write``, change) this key."""
    if p.is_admin or (p.sees_all and not write):
        return
    if p.key is not None and p.key.token_hash == record.token_hash and not write:
        return
    if p.user_id is not None:
        if record.user_id == p.user_id:
            return
        if record.team_id and await _team_role(gw, record.team_id, p.user_id) == "admin":
            return
    raise PermissionDenied("This key belongs to someone else.")


def _caps(p: Principal) -> dict[str, float]:
    """The caller's own limits: the lower of its key's and its user's."""
    caps: dict[str, float] = {}
    for source in (p.key, p.user):
        for name in _NUMBERS:
            value = getattr(source, name, None)
            if value is not None:
                caps[name] = min(caps.get(name, value), value)
    return caps


def _covers(gw: Gateway, own: tuple[str, ...], model: str) -> bool:
    """Whether the caller's model list admits a model name, wildcard or access group it wants to hand on."""
    if model_allowed(model, own, gw.access_groups):  # an empty list admits everything
        return True
    members = gw.access_groups.get(model)
    return bool(members) and all(model_allowed(m, own, gw.access_groups) for m in members or ())


def _route_covers(gw: Gateway, own: tuple[str, ...], wanted: str) -> bool:
    """Whether the caller's allowed_routes admit a route entry it wants to hand on."""
    if wanted in own:
        return True
    kinds = {kind for entry in own for kind in ROUTE_GROUPS.get(entry, ())}
    if wanted in ROUTE_GROUPS:
        return ROUTE_GROUPS[wanted] <= kinds
    route = gw.routes.get(wanted)
    if route is not None and route.kind in kinds:
        return True
    return any(fnmatch.fnmatchcase(wanted, entry) for entry in own if entry not in ROUTE_GROUPS)


async def _limit_to_caller(
    gw: Gateway, p: Principal, fields: dict[str, Any], current: KeyRecord | None, expires: datetime | None
) -> datetime | None:
    """For a caller that is not a proxy admin: check that the key it makes (``current`` None) or changes stays
    inside what the caller holds, filling what it leaves open with the caller's own limits; refuse anything
    more. Returns the expiry the key gets."""
    if p.is_admin:
        return expires
    creating = current is None
    # whose key it is
    if creating and "user_id" not in fields:
        fields["user_id"] = p.user_id
    if "organization_id" in fields:
        raise PermissionDenied("Only an admin may set 'organization_id'.", param="organization_id")
    user_id = fields.get("user_id", current.user_id if current else None)
    team_id = fields.get("team_id", current.team_id if current else None)
    role = await _team_role(gw, team_id, p.user_id) if team_id else None
    if team_id and role is None:
        raise PermissionDenied("You are not a member of this team.", param="team_id")
    if user_id != p.user_id:
        if role != "admin":
            raise PermissionDenied("Only a team admin may make or change keys of other users.", param="user_id")
        if user_id is None or await _team_role(gw, str(team_id), user_id) is None:
            raise PermissionDenied("A team admin may give keys only to members of the team.", param="user_id")
    if current is not None and current.blocked and fields.get("blocked") is False and role != "admin":
        raise PermissionDenied("Only an admin or a team admin may unblock a key.", param="blocked")
    # limits: at most the caller's; left open, the caller's
    for name, cap in _caps(p).items():
        if fields.get(name) is not None:
            if fields[name] > cap:
                raise PermissionDenied(f"'{name}' may not be more than your own ({cap:g}).", param=name)
        elif creating or name in fields:
            fields[name] = cap
    own_models = p.key.models if p.key is not None else ()
    if own_models:
        if fields.get("models"):
            outside = [m for m in fields["models"] if not _covers(gw, own_models, m)]
            if outside:
                raise PermissionDenied(f"You may not hand on models you cannot use: {', '.join(outside[:5])}.",
                                       param="models")  # fmt: skip
        elif creating or "models" in fields:
            fields["models"] = own_models
    for alias, target in (fields.get("aliases") or {}).items():
        if not (p.may_use(target, gw.access_groups) and _covers(gw, own_models, target)):
            raise PermissionDenied(f"The alias '{alias[:60]}' leads to a model you cannot use.", param="aliases")
    own_routes = p.key.allowed_routes if p.key is not None else ()
    if own_routes:
        if fields.get("allowed_routes"):
            outside = [r for r in fields["allowed_routes"] if not _route_covers(gw, own_routes, r)]
            if outside:
                raise PermissionDenied(f"You may not hand on routes you cannot call: {', '.join(outside[:5])}.",
                                       param="allowed_routes")  # fmt: skip
        elif creating or "allowed_routes" in fields:
            fields["allowed_routes"] = own_routes
    own_expiry = p.key.expires if p.key is not None else None
    if own_expiry is not None:
        if expires is not None and expires > own_expiry:
            raise PermissionDenied("The key may not outlive your own.", param="duration")
        if creating and expires is None:
            return own_expiry
    return expires


def _holds(gw: Gateway, p: Principal, record: KeyRecord) -> bool:
    """Whether the caller holds at least everything this key holds (so getting a new value of it gains the
    caller nothing)."""
    if p.is_admin:
        return True
    for name, cap in _caps(p).items():
        value = getattr(record, name)
        if value is None or value > cap:
            return False
    own_models = p.key.models if p.key is not None else ()
    if own_models and not (record.models and all(_covers(gw, own_models, m) for m in record.models)):
        return False
    own_routes = p.key.allowed_routes if p.key is not None else ()
    if own_routes and not (
        record.allowed_routes and all(_route_covers(gw, own_routes, r) for r in record.allowed_routes)
    ):
        return False
    own_expiry = p.key.expires if p.key is not None else None
    return own_expiry is None or (record.expires is not None and record.expires <= own_expiry)


def _key_type(body: dict[str, Any], changes: dict[str, Any]) -> None:
    """LiteLLM's ``key_type`` as the ``allowed_routes`` it stands for."""
    key_type = body.get("key_type")
    if key_type is None:
        return
    routes = KEY_TYPES.get(key_type) if isinstance(key_type, str) else None
    if routes is None:
        raise BadRequest(f"'key_type' is one of {', '.join(KEY_TYPES)}.", param="key_type")
    if "allowed_routes" in changes and tuple(changes["allowed_routes"]) != routes:
        raise BadRequest("Give 'key_type' or 'allowed_routes', not both.", param="key_type")
    # ``default`` is every route: set as such, so that a caller held to some routes hands on only those
    changes["allowed_routes"] = routes


def _prompt_flag(p: Principal, changes: dict[str, Any], current: KeyRecord | None) -> None:
    """Whether a key's prompts are stored (``metadata.store_prompts_in_spend_logs``) is a proxy admin's to say:
    anyone else's metadata keeps the key's current value, and may not name another (lockgate.prompts)."""
    metadata = changes.get("metadata")
    if metadata is None:
        return
    prompts.check_flag(metadata)
    if not p.is_admin:
        changes["metadata"] = prompts.keep_flag(metadata, current.metadata if current is not None else None)


def _principal(req: Request) -> Principal:
    if req.principal is None:  # pragma: no cover - the route table authenticates every non-public route
        raise PermissionDenied("Not authenticated.")
    return req.principal


async def generate(gw: Gateway, req: Request) -> None:
    p = _principal(req)
    body = read_json(await req.body(gw.body_limit))
    changes, ignored = fields_of(body, _SETTABLE, _NOT_YET, _READ_BY_ENDPOINT)
    _key_type(body, changes)
    _prompt_flag(p, changes, None)
    custom = body.get("key")
    if custom is not None and (not isinstance(custom, str) or len(custom) < 16):
        raise BadRequest("A chosen 'key' must be a string of at least 16 characters.", param="key")
    duration = body.get("duration")
    expires = parse_duration(duration, datetime.now(UTC)) if isinstance(duration, str) and duration else None
    expires = await _limit_to_caller(gw, p, changes, None, expires)
    await _check_team(gw, changes)
    token = custom or generate_key()
    record = new_record(token, {**changes, "created_by": p.identity, "updated_by": p.identity}, expires)
    try:
        await gw.store.insert_key(record)
    except Conflict as exc:
        raise BadRequest("A key with this value or key_alias already exists.", code="conflict") from exc
    await req.respond(200, orjson.dumps({"key": token, **_public(record)}), headers=notice(ignored))


async def info(gw: Gateway, req: Request) -> None:
    p = _principal(req)
    query = parse_qs(req.scope.get("query_string", b"").decode("latin-1"))
    asked = query.get("key", [None])[0]
    if asked is None:  # a key asking about itself
        if p.key is None:
            raise BadRequest("'key' is required.", param="key")
        token_hash = p.key.token_hash
    else:
        token_hash = _token_hash(asked)
    record = await gw.store.get_key(token_hash)
    if record is None:
        if not (p.sees_all or p.user_id is not None):  # an owner-less key learns nothing about other keys
            raise PermissionDenied("Only an admin may look at another key.")
        raise NotFound("No such key.", code="key_not_found")
    await _check_scope(gw, p, record, write=False)
    await req.respond(200, orjson.dumps({"key": token_hash, "info": _public(record)}))


async def list_keys(gw: Gateway, req: Request) -> None:
    p = _principal(req)
    query = req.query
    try:
        page, size = int(query.get("page", "1")), int(query.get("size", "100"))
    except ValueError as exc:
        raise BadRequest("'page' and 'size' must be numbers.") from exc
    page, size = max(page, 1), min(max(size, 1), 1000)
    user_id, team_id = query.get("user_id"), query.get("team_id")
    team_admin = bool(team_id) and await _team_role(gw, str(team_id), p.user_id) == "admin"
    if not p.sees_all and not team_admin:  # one's own keys; a team admin asking for the team's: all of them
        if user_id not in (None, p.user_id):
            raise PermissionDenied("You may list only your own keys (or those of teams you administer).")
        user_id = p.user_id
    records = await gw.store.list_keys(user_id=user_id, team_id=team_id, limit=size, offset=(page - 1) * size)
    keys = [r.token_hash for r in records]
    body = {"keys": keys, "data": [_public(r) for r in records], "current_page": page, "page_size": size}
    await req.respond(200, orjson.dumps(body))


async def _existing(gw: Gateway, p: Principal, token_hash: str) -> KeyRecord:
    """The key a change names, if the caller may change it (404 otherwise, or 403 if it exists but is not
    the caller's)."""
    record = await gw.store.get_key(token_hash)
    if record is None:
        raise NotFound("No such key.", code="key_not_found")
    await _check_scope(gw, p, record, write=True)
    return record


async def update(gw: Gateway, req: Request) -> None:
    p = _principal(req)
    body = read_json(await req.body(gw.body_limit))
    token_hash = _token_hash(body.get("key"))
    changes, ignored = fields_of(body, _SETTABLE, _NOT_YET, _READ_BY_ENDPOINT)
    _key_type(body, changes)
    current = await _existing(gw, p, token_hash)
    _prompt_flag(p, changes, current)
    duration = body.get("duration")
    expires = parse_duration(duration, datetime.now(UTC)) if isinstance(duration, str) and duration else None
    expires = await _limit_to_caller(gw, p, changes, current, expires)
    if expires is not None:
        changes["expires"] = expires
    await _check_team(gw, {"team_id": changes.get("team_id", current.team_id), **changes})
    try:
        record = await gw.store.update_key(token_hash, **changes, updated_by=p.identity)
    except Conflict as exc:
        raise BadRequest("Another key has this key_alias.", code="conflict") from exc
    if record is None:
        raise NotFound("No such key.", code="key_not_found")
    await gw.key_changed(token_hash)
    await req.respond(200, orjson.dumps(_public(record)), headers=notice(ignored))


async def delete(gw: Gateway, req: Request) -> None:
    p = _principal(req)
    body = read_json(await req.body(gw.body_limit))
    keys = body.get("keys")
    if not isinstance(keys, list) or not keys:
        raise BadRequest("'keys' must be a non-empty list.", param="keys")
    hashes = [_token_hash(k) for k in keys]
    if not p.is_admin:  # every one must be the caller's to delete, or nothing is deleted
        for token_hash in hashes:
            record = await gw.store.get_key(token_hash)
            if record is not None:
                await _check_scope(gw, p, record, write=True)
    deleted = await gw.store.delete_keys(hashes)
    for token_hash in hashes:
        await gw.key_changed(token_hash)
    if deleted == 0:
        raise NotFound("None of these keys exist.", code="key_not_found")
    await req.respond(200, orjson.dumps({"deleted_keys": keys, "deleted": deleted}))


async def regenerate(gw: Gateway, req: Request) -> None:
    """A new value for an existing key, same settings; the old value stops working (everywhere). The key is
    named in the body (``/key/regenerate``) or in the path (``/key/{key}/regenerate``)."""
    p = _principal(req)
    raw = await req.body(gw.body_limit)
    if req.path != "/key/regenerate":
        named = req.path[len("/key/") : -len("/regenerate")]  # the ASGI path is decoded already
        body = read_json(raw) if raw.strip() else {}
        if body.get("key") not in (None, named):
            raise BadRequest("The key in the path and in the body differ.", param="key")
        body["key"] = named
    else:
        body = read_json(raw)
    token_hash = _token_hash(body.get("key"))
    if not _holds(gw, p, await _existing(gw, p, token_hash)):
        raise PermissionDenied("This key holds more than the key you call with; regenerate it with that key.")
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
    p = _principal(req)
    body = read_json(await req.body(gw.body_limit))
    token_hash = _token_hash(body.get("key"))
    current = await _existing(gw, p, token_hash)
    if not blocked and not p.is_admin:
        team_admin = current.team_id and await _team_role(gw, current.team_id, p.user_id) == "admin"
        if not team_admin:
            raise PermissionDenied("Only an admin or a team admin may unblock a key.")
    record = await gw.store.update_key(token_hash, blocked=blocked, updated_by=p.identity)
    if record is None:
        raise NotFound("No such key.", code="key_not_found")
    await gw.key_changed(token_hash)
    await req.respond(200, orjson.dumps(_public(record)))


async def block(gw: Gateway, req: Request) -> None:
    await _set_blocked(gw, req, True)


async def unblock(gw: Gateway, req: Request) -> None:
    await _set_blocked(gw, req, False)
