"""LiteLLM's user, team and organisation API: ``/user/*``, ``/team/*``, ``/organization/*``.

Organisations hold teams; teams hold members (users, with a role) and keys; a key may use only the models
its own list and its team's list both allow. Writes are for proxy admins, except a team's members, which
its team admins manage too; reads are for proxy admins and viewers, and for members of what is read (a user
sees itself, a team member its teams). Each endpoint takes an allowlist of
fields; LiteLLM fields not implemented yet are accepted and named in ``x-lockgate-notice``, anything else
is refused with 400. Ids are chosen by the caller or generated.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from lockgate.api.keys import fields_of, notice
from lockgate.asgi import Request
from lockgate.auth import Principal
from lockgate.errors import BadRequest, NotFound, PermissionDenied
from lockgate.keys import generate_key, new_record
from lockgate.pipeline import read_json
from lockgate.prompts import check_flag
from lockgate.storage.base import (
    Conflict,
    KeyRecord,
    NotFoundError,
    OrgRecord,
    TeamMember,
    TeamRecord,
    UserRecord,
    utc_now,
)

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = [
    "member_add", "member_delete", "org_delete", "org_info", "org_list", "org_new", "org_update", "team_block",
    "team_delete", "team_info", "team_list", "team_new", "team_unblock", "team_update", "user_delete", "user_info",
    "user_list", "user_new", "user_update",
]  # fmt: skip

_LIMITS: dict[str, tuple[type, ...]] = {
    "models": (list,),
    "max_budget": (int, float, type(None)),
    "budget_duration": (str, type(None)),
    "tpm_limit": (int, type(None)),
    "rpm_limit": (int, type(None)),
    "max_parallel_requests": (int, type(None)),
    "metadata": (dict,),
}
_USER = {**_LIMITS, "user_alias": (str, type(None)), "user_email": (str, type(None)), "user_role": (str,)}
_USER.pop("max_parallel_requests")
_TEAM = {**_LIMITS, "team_alias": (str, type(None)), "organization_id": (str, type(None)), "blocked": (bool,),
         "model_aliases": (dict,), "soft_budget": (int, float, type(None)), "model_max_budget": (dict,),
         "model_rpm_limit": (dict,), "model_tpm_limit": (dict,)}  # fmt: skip
_ORG = {"organization_alias": (str, type(None)), "models": (list,), "max_budget": (int, float, type(None)),
        "metadata": (dict,)}  # fmt: skip
_USER_NOT_YET = frozenset({"send_invite_email", "auto_create_key", "sso_user_id", "organization_id", "soft_budget",
                           "model_max_budget", "object_permission", "prompts", "teams", "key_alias"})  # fmt: skip
_TEAM_NOT_YET = frozenset({"guardrails", "tags", "team_member_budget",
                           "team_member_rpm_limit", "team_member_tpm_limit", "team_member_key_duration",
                           "router_settings", "object_permission", "prompts",
                           "default_team_member_models", "members_with_roles"})  # fmt: skip
_ORG_NOT_YET = frozenset({"budget_id", "soft_budget", "tpm_limit", "rpm_limit", "model_max_budget",
                          "object_permission", "tags"})  # fmt: skip
_ROLES = frozenset({"admin", "user"})


def _principal(req: Request) -> Principal:
    if req.principal is None:  # pragma: no cover - the route table authenticates every non-public route
        raise PermissionDenied("Not authenticated.")
    return req.principal


def _query(req: Request) -> dict[str, str]:
    return req.query


def _page(query: dict[str, str]) -> tuple[int, int]:
    try:
        page, size = int(query.get("page", "1")), int(query.get("page_size", query.get("size", "100")))
    except ValueError as exc:
        raise BadRequest("'page' and 'page_size' must be numbers.") from exc
    page, size = max(page, 1), min(max(size, 1), 1000)
    return size, (page - 1) * size


def _dump(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in record.__slots__:
        value = getattr(record, name)
        out[name] = (
            list(value) if isinstance(value, tuple) else value.isoformat() if hasattr(value, "isoformat") else value
        )
    return out


def _new_id(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return str(uuid.uuid4())
    if not isinstance(value, str) or not value or len(value) > 200:
        raise BadRequest(f"'{name}' must be a non-empty string.", param=name)
    return value


def _required(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{name}' is required.", param=name)
    return value


def _members(value: Any) -> list[tuple[str, str]]:
    """``[{user_id, role}]`` (LiteLLM's members_with_roles / member_add shapes), checked."""
    items = value if isinstance(value, list) else [value]
    members = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("user_id"), str) or not item["user_id"]:
            raise BadRequest("Each member needs a 'user_id'.", param="member")
        role = item.get("role", "user")
        if role not in _ROLES:
            raise BadRequest("A member's role is 'admin' or 'user'.", param="role")
        members.append((item["user_id"], role))
    return members


def _key_summaries(keys: list[KeyRecord]) -> list[dict[str, Any]]:
    """Keys as an owner's info shows them: the hash and display name, never the key."""
    return [{"token": k.token_hash, "key_name": k.key_name, "key_alias": k.key_alias} for k in keys]


def _conflict(exc: Conflict) -> BadRequest:
    return BadRequest(f"Another record has this {exc.field}.", code="conflict", param=exc.field)


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """The store's refusals as the API's errors: a taken field 400, a missing reference 404, a bad value 400."""
    try:
        yield
    except Conflict as exc:
        raise _conflict(exc) from exc
    except NotFoundError as exc:
        raise NotFound(f"No such {exc.field}.", param=exc.field) from exc
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


# --- users --------------------------------------------------------------------------------------------


async def user_new(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    changes, ignored = fields_of(body, _USER, _USER_NOT_YET, frozenset({"user_id"}))
    now = utc_now()
    record = UserRecord(
        user_id=_new_id(body, "user_id"),
        user_alias=changes.get("user_alias"),
        user_email=changes.get("user_email"),
        user_role=changes.get("user_role", "internal_user"),
        models=tuple(changes.get("models", ())),
        max_budget=changes.get("max_budget"),
        budget_duration=changes.get("budget_duration"),
        tpm_limit=changes.get("tpm_limit"),
        rpm_limit=changes.get("rpm_limit"),
        metadata=changes.get("metadata", {}),
        created_at=now,
        updated_at=now,
    )
    token = key = None
    if body.get("auto_create_key", True) is not False:  # LiteLLM makes the new user a key unless told not to
        token = generate_key()
        creator = req.principal.identity if req.principal is not None else None
        key = new_record(token, {"user_id": record.user_id, "models": record.models, "created_by": creator})
    with _storage_errors():
        await gw.store.insert_user(record, key)  # the user and its key: one transaction
    result = _dump(record)
    if token is not None:
        result["key"] = token
    await req.respond(200, orjson.dumps(result), headers=notice([i for i in ignored if i != "auto_create_key"]))


async def user_info(gw: Gateway, req: Request) -> None:
    p = _principal(req)
    user_id = _query(req).get("user_id") or p.user_id
    user_id = _required(user_id, "user_id")
    if not p.sees_all and user_id != p.user_id:
        raise PermissionDenied("You may look only at your own user.")
    record = await gw.store.get_user(user_id)
    if record is None:
        raise NotFound("No such user.", code="user_not_found")
    keys = await gw.store.list_keys(user_id=user_id, limit=1000)
    teams = await gw.store.teams_of(user_id)
    body = {"user_id": user_id, "user_info": _dump(record), "teams": teams, "keys": _key_summaries(keys)}
    await req.respond(200, orjson.dumps(body))


async def user_update(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    user_id = _required(body.get("user_id"), "user_id")
    changes, ignored = fields_of(body, _USER, _USER_NOT_YET, frozenset({"user_id"}))
    with _storage_errors():
        record = await gw.store.update_user(user_id, **changes)
    if record is None:
        raise NotFound("No such user.", code="user_not_found")
    await gw.key_changed("*")  # the user's role, models and limits reach its keys on every instance
    await req.respond(200, orjson.dumps(_dump(record)), headers=notice(ignored))


async def user_list(gw: Gateway, req: Request) -> None:
    query = _query(req)
    limit, offset = _page(query)
    users = await gw.store.list_users(team_id=query.get("team_id"), limit=limit, offset=offset)
    await req.respond(200, orjson.dumps({"users": [_dump(u) for u in users], "total": len(users)}))


async def user_delete(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    ids = body.get("user_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise BadRequest("'user_ids' must be a non-empty list.", param="user_ids")
    deleted = await gw.store.delete_users(ids)
    await gw.key_changed("*")
    if deleted == 0:
        raise NotFound("None of these users exist.", code="user_not_found")
    await req.respond(200, orjson.dumps({"deleted_users": ids, "deleted": deleted}))


# --- teams --------------------------------------------------------------------------------------------


async def team_new(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    changes, ignored = fields_of(
        body, _TEAM, _TEAM_NOT_YET - {"members_with_roles"}, frozenset({"team_id", "members_with_roles"})
    )
    check_flag(changes.get("metadata"))
    members = _members(body["members_with_roles"]) if body.get("members_with_roles") else []
    now = utc_now()
    record = TeamRecord(
        team_id=_new_id(body, "team_id"),
        team_alias=changes.get("team_alias"),
        organization_id=changes.get("organization_id"),
        models=tuple(changes.get("models", ())),
        max_budget=changes.get("max_budget"),
        budget_duration=changes.get("budget_duration"),
        tpm_limit=changes.get("tpm_limit"),
        rpm_limit=changes.get("rpm_limit"),
        max_parallel_requests=changes.get("max_parallel_requests"),
        metadata=changes.get("metadata", {}),
        blocked=changes.get("blocked", False),
        created_at=now,
        updated_at=now,
        model_aliases=changes.get("model_aliases", {}),
        soft_budget=changes.get("soft_budget"),
        model_max_budget=changes.get("model_max_budget", {}),
        model_rpm_limit=changes.get("model_rpm_limit", {}),
        model_tpm_limit=changes.get("model_tpm_limit", {}),
    )
    first = [TeamMember(record.team_id, user_id, role) for user_id, role in members]
    with _storage_errors():
        try:
            await gw.store.insert_team(record, first)  # the team and its members: one transaction
        except NotFoundError as exc:
            if exc.field != "user_id":
                raise
            raise NotFound("A member names no user.", param="members_with_roles", code="user_not_found") from exc
    await req.respond(200, orjson.dumps(_dump(record)), headers=notice(ignored))


async def team_info(gw: Gateway, req: Request) -> None:
    p = _principal(req)
    team_id = _required(_query(req).get("team_id"), "team_id")
    if not p.sees_all and (p.user_id is None or await gw.store.get_member(team_id, p.user_id) is None):
        raise PermissionDenied("You may look only at teams you are a member of.")
    record = await gw.store.get_team(team_id)
    if record is None:
        raise NotFound("No such team.", code="team_not_found")
    members = await gw.store.list_members(team_id)
    keys = await gw.store.list_keys(team_id=team_id, limit=1000)
    info = {**_dump(record), "members_with_roles": [{"user_id": m.user_id, "role": m.role} for m in members]}
    body = {"team_id": team_id, "team_info": info, "keys": _key_summaries(keys)}
    await req.respond(200, orjson.dumps(body))


async def team_update(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    team_id = _required(body.get("team_id"), "team_id")
    changes, ignored = fields_of(body, _TEAM, _TEAM_NOT_YET, frozenset({"team_id"}))
    check_flag(changes.get("metadata"))
    with _storage_errors():
        record = await gw.store.update_team(team_id, **changes)
    if record is None:
        raise NotFound("No such team.", code="team_not_found")
    await gw.team_changed(team_id)
    await req.respond(200, orjson.dumps(_dump(record)), headers=notice(ignored))


async def team_list(gw: Gateway, req: Request) -> None:
    p = _principal(req)
    query = _query(req)
    limit, offset = _page(query)
    if p.sees_all:
        teams = await gw.store.list_teams(organization_id=query.get("organization_id"), limit=limit, offset=offset)
    else:  # the caller's own teams
        found = [await gw.store.get_team(t) for t in await gw.store.teams_of(str(p.user_id))]
        org = query.get("organization_id")
        teams = [t for t in found if t is not None and (org is None or t.organization_id == org)]
        teams = teams[offset : offset + limit]
    await req.respond(200, orjson.dumps([_dump(t) for t in teams]))


async def team_delete(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    ids = body.get("team_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise BadRequest("'team_ids' must be a non-empty list.", param="team_ids")
    deleted = await gw.store.delete_teams(ids)
    for team_id in ids:
        await gw.team_changed(team_id)
    if deleted == 0:
        raise NotFound("None of these teams exist.", code="team_not_found")
    await req.respond(200, orjson.dumps({"deleted_teams": ids, "deleted": deleted}))


async def _set_team_blocked(gw: Gateway, req: Request, blocked: bool) -> None:
    body = read_json(await req.body(gw.body_limit))
    team_id = _required(body.get("team_id"), "team_id")
    record = await gw.store.update_team(team_id, blocked=blocked)
    if record is None:
        raise NotFound("No such team.", code="team_not_found")
    await gw.team_changed(team_id)
    await req.respond(200, orjson.dumps(_dump(record)))


async def team_block(gw: Gateway, req: Request) -> None:
    await _set_team_blocked(gw, req, True)


async def team_unblock(gw: Gateway, req: Request) -> None:
    await _set_team_blocked(gw, req, False)


async def _require_team_admin(gw: Gateway, req: Request, team_id: str) -> None:
    """Proxy admins manage every team's members; a team admin those of its own team."""
    p = _principal(req)
    if p.is_admin:
        return
    member = await gw.store.get_member(team_id, p.user_id) if p.user_id is not None else None
    if member is None or member.role != "admin":
        raise PermissionDenied("Only an admin or an admin of this team may change its members.")


async def member_add(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    team_id = _required(body.get("team_id"), "team_id")
    await _require_team_admin(gw, req, team_id)
    members = _members(body.get("member"))
    try:  # all of them or none
        await gw.store.add_members(team_id, [TeamMember(team_id, user_id, role) for user_id, role in members])
    except NotFoundError as exc:
        raise NotFound(f"No such {exc.field}.", param=exc.field) from exc
    found = await gw.store.list_members(team_id)
    await req.respond(200, orjson.dumps({"team_id": team_id, "members_with_roles":
                                         [{"user_id": m.user_id, "role": m.role} for m in found]}))  # fmt: skip


_MEMBER_UPDATE = frozenset({"team_id", "user_id", "user_email", "role", "max_budget_in_team"})


async def member_update(gw: Gateway, req: Request) -> None:
    """LiteLLM's ``/team/member_update`` (the Terraform provider's team_member): a member's role. A member's own
    budget in the team (``max_budget_in_team``) is not kept yet: named back in ``x-lockgate-notice``."""
    body = read_json(await req.body(gw.body_limit))
    for name in body:
        if name not in _MEMBER_UPDATE:
            raise BadRequest(f"Unknown field '{str(name)[:60]}'.", param=str(name)[:60])
    team_id = _required(body.get("team_id"), "team_id")
    if body.get("user_id") is None and body.get("user_email") is not None:
        raise BadRequest("Name the member by 'user_id' (members are not looked up by e-mail).", param="user_id")
    user_id = _required(body.get("user_id"), "user_id")
    role = body.get("role")
    if role is not None and role not in _ROLES:
        raise BadRequest("A member's role is 'admin' or 'user'.", param="role")
    await _require_team_admin(gw, req, team_id)
    member = await gw.store.get_member(team_id, user_id)
    if member is None:
        raise NotFound("This user is not a member of this team.", code="member_not_found")
    if role is not None and role != member.role:
        member = await gw.store.add_member(team_id, user_id, role)  # a member already: its role changes
    ignored = ["max_budget_in_team"] if body.get("max_budget_in_team") is not None else []
    await req.respond(200, orjson.dumps({"team_id": team_id, "user_id": user_id, "role": member.role}),
                      headers=notice(ignored))  # fmt: skip


async def member_delete(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    team_id = _required(body.get("team_id"), "team_id")
    user_id = _required(body.get("user_id"), "user_id")
    await _require_team_admin(gw, req, team_id)
    if not await gw.store.remove_member(team_id, user_id):
        raise NotFound("This user is not a member of this team.", code="member_not_found")
    await req.respond(200, orjson.dumps({"team_id": team_id, "user_id": user_id, "removed": True}))


# --- organisations ------------------------------------------------------------------------------------


async def org_new(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    changes, ignored = fields_of(body, _ORG, _ORG_NOT_YET, frozenset({"organization_id"}))
    now = utc_now()
    record = OrgRecord(
        organization_id=_new_id(body, "organization_id"),
        organization_alias=changes.get("organization_alias"),
        models=tuple(changes.get("models", ())),
        max_budget=changes.get("max_budget"),
        metadata=changes.get("metadata", {}),
        created_at=now,
        updated_at=now,
    )
    with _storage_errors():
        await gw.store.insert_org(record)
    await req.respond(200, orjson.dumps(_dump(record)), headers=notice(ignored))


async def org_info(gw: Gateway, req: Request) -> None:
    org_id = _required(_query(req).get("organization_id"), "organization_id")
    record = await gw.store.get_org(org_id)
    if record is None:
        raise NotFound("No such organization.", code="organization_not_found")
    teams = await gw.store.list_teams(organization_id=org_id, limit=1000)
    await req.respond(200, orjson.dumps({**_dump(record), "teams": [_dump(t) for t in teams]}))


async def org_update(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    org_id = _required(body.get("organization_id"), "organization_id")
    changes, ignored = fields_of(body, _ORG, _ORG_NOT_YET, frozenset({"organization_id"}))
    with _storage_errors():
        record = await gw.store.update_org(org_id, **changes)
    if record is None:
        raise NotFound("No such organization.", code="organization_not_found")
    await gw.key_changed("*")  # its models and budget reach its teams' keys on every instance
    await req.respond(200, orjson.dumps(_dump(record)), headers=notice(ignored))


async def org_delete(gw: Gateway, req: Request) -> None:
    body = read_json(await req.body(gw.body_limit))
    ids = body.get("organization_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise BadRequest("'organization_ids' must be a non-empty list.", param="organization_ids")
    try:
        deleted = await gw.store.delete_orgs(ids)
    except Conflict as exc:
        raise BadRequest("An organization that still has teams cannot be deleted.", code="conflict") from exc
    if deleted == 0:
        raise NotFound("None of these organizations exist.", code="organization_not_found")
    await req.respond(200, orjson.dumps({"deleted_organizations": ids, "deleted": deleted}))


async def org_list(gw: Gateway, req: Request) -> None:
    limit, offset = _page(_query(req))
    orgs = await gw.store.list_orgs(limit=limit, offset=offset)
    await req.respond(200, orjson.dumps([_dump(o) for o in orgs]))
