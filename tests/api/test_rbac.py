"""Roles end to end: who may call which management route, and that nobody hands on more than they hold.

One gateway (SQLite) with a proxy admin user, a proxy-admin viewer, internal users alice (admin of team
``t-eng``) and bob (a member of it), carol (an internal-user viewer), and dave (in team ``t-ops`` only);
each gets its key from ``/user/new`` as LiteLLM scripts do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import httpx
import openai
import pytest

from tests.support import MASTER_KEY, GatewayProcess

CONFIG = """model_list:
  - model_name: demo
    litellm_params: {model: demo/echo}
  - model_name: other
    litellm_params: {model: demo/other}
    model_info: {access_groups: [beta]}
  - model_name: third
    litellm_params: {model: demo/third}
    model_info: {access_groups: [beta]}
general_settings:
  user_api_key_cache_ttl: 1
"""


def call(
    gw: GatewayProcess, caller: str, path: str, body: dict[str, object] | None = None, **params: str
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {caller}"}
    if body is None:
        return httpx.get(gw.url + path, headers=headers, params=params)
    return httpx.post(gw.url + path, headers=headers, json=body)


def chat(gw: GatewayProcess, key: str, model: str = "demo") -> httpx.Response:
    return call(gw, key, "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]})


@dataclass
class World:
    gw: GatewayProcess
    keys: dict[str, str]
    ids: dict[str, str]

    def new_key(self, who: str, body: dict[str, object]) -> httpx.Response:
        return call(self.gw, self.keys[who], "/key/generate", body)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with GatewayProcess(CONFIG) as gw:
        suffix = uuid.uuid4().hex[:6]
        keys, ids = {}, {}
        for name, role in (
            ("root", "proxy_admin"), ("viewer", "proxy_admin_viewer"), ("alice", "internal_user"),
            ("bob", "internal_user"), ("carol", "internal_user_viewer"), ("dave", "internal_user"),
        ):  # fmt: skip
            made = call(gw, MASTER_KEY, "/user/new", {"user_id": f"{name}-{suffix}", "user_role": role})
            assert made.status_code == 200, made.text
            keys[name], ids[name] = made.json()["key"], f"{name}-{suffix}"
        for team, members in (
            ("t-eng", [{"user_id": ids["alice"], "role": "admin"}, {"user_id": ids["bob"], "role": "user"}]),
            ("t-ops", [{"user_id": ids["dave"], "role": "admin"}]),
        ):
            made = call(gw, MASTER_KEY, "/team/new", {"team_id": f"{team}-{suffix}", "members_with_roles": members})
            assert made.status_code == 200, made.text
            ids[team] = f"{team}-{suffix}"
        yield World(gw, keys, ids)


def test_every_role_reaches_only_its_routes(world: World) -> None:
    gw, k, ids = world.gw, world.keys, world.ids
    # a proxy admin user's own key administers, like the master key
    assert call(gw, k["root"], "/user/new", {"user_id": f"x-{uuid.uuid4().hex[:6]}"}).status_code == 200
    # a viewer reads everything, changes nothing
    assert call(gw, k["viewer"], "/user/list").status_code == 200
    assert call(gw, k["viewer"], "/team/info", team_id=ids["t-eng"]).status_code == 200
    assert call(gw, k["viewer"], "/key/list", user_id=ids["bob"]).json()["data"]
    denied = call(gw, k["viewer"], "/user/new", {"user_id": "nope"})
    assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
    assert call(gw, k["viewer"], "/key/generate", {}).status_code == 403
    # internal users: no directory writes, no lists of others, no role changes
    for path, body in (("/user/new", {"user_id": "z"}), ("/team/new", {}), ("/organization/new", {}),
                       ("/user/update", {"user_id": ids["bob"], "user_role": "proxy_admin"}),
                       ("/customer/new", {"user_id": "c"}), ("/team/update", {"team_id": ids["t-eng"]})):  # fmt: skip
        assert call(gw, k["bob"], path, body).status_code == 403, path
    assert call(gw, k["bob"], "/user/list").status_code == 403
    assert call(gw, k["bob"], "/organization/list").status_code == 403
    assert call(gw, k["bob"], "/health").status_code == 403
    # but they see themselves and their teams
    me = call(gw, k["bob"], "/user/info")
    assert me.status_code == 200 and me.json()["user_id"] == ids["bob"]
    assert call(gw, k["bob"], "/user/info", user_id=ids["alice"]).status_code == 403
    assert call(gw, k["bob"], "/team/info", team_id=ids["t-eng"]).status_code == 200
    assert call(gw, k["bob"], "/team/info", team_id=ids["t-ops"]).status_code == 403
    assert [t["team_id"] for t in call(gw, k["bob"], "/team/list").json()] == [ids["t-eng"]]
    # an internal-user viewer reads its own things only
    assert call(gw, k["carol"], "/user/info").status_code == 200
    assert call(gw, k["carol"], "/key/generate", {}).status_code == 403
    # a key without a (known) owner calls models and asks about itself, nothing else
    ownerless = call(gw, MASTER_KEY, "/key/generate", {}).json()["key"]
    assert chat(gw, ownerless).status_code == 200
    assert call(gw, ownerless, "/key/info").status_code == 200
    assert call(gw, ownerless, "/key/generate", {}).status_code == 403
    assert call(gw, ownerless, "/key/list").status_code == 403
    assert call(gw, ownerless, "/key/info", key=k["bob"]).status_code == 403


def test_internal_user_manages_only_own_keys(world: World) -> None:
    gw, k, ids = world.gw, world.keys, world.ids
    made = world.new_key("bob", {"key_alias": f"bob-{uuid.uuid4().hex[:6]}"})
    assert made.status_code == 200, made.text
    assert made.json()["user_id"] == ids["bob"] and made.json()["created_by"] == ids["bob"]
    listed = call(gw, k["bob"], "/key/list").json()["data"]
    assert listed and {row["user_id"] for row in listed} == {ids["bob"]}
    assert call(gw, k["bob"], "/key/list", user_id=ids["alice"]).status_code == 403
    assert call(gw, k["bob"], "/key/info", key=k["alice"]).status_code == 403
    assert call(gw, k["bob"], "/key/update", {"key": k["alice"], "key_alias": "mine"}).status_code == 403
    assert call(gw, k["bob"], "/key/delete", {"keys": [k["alice"]]}).status_code == 403
    assert call(gw, k["bob"], "/key/regenerate", {"key": k["alice"]}).status_code == 403
    assert chat(gw, k["alice"]).status_code == 200  # untouched
    # keys for somebody else: not without being their team's admin
    assert world.new_key("bob", {"user_id": ids["alice"]}).status_code == 403
    assert world.new_key("bob", {"organization_id": "o"}).status_code == 403
    # own keys: change, block, delete
    own = made.json()["key"]
    assert call(gw, k["bob"], "/key/update", {"key": own, "metadata": {"why": "ci"}}).status_code == 200
    assert call(gw, k["bob"], "/key/block", {"key": own}).status_code == 200
    assert chat(gw, own).status_code == 401
    unblock = call(gw, k["bob"], "/key/unblock", {"key": own})  # an admin's block is not the user's to lift
    assert unblock.status_code == 403
    assert call(gw, k["bob"], "/key/update", {"key": own, "blocked": False}).status_code == 403
    assert call(gw, k["bob"], "/key/delete", {"keys": [own]}).status_code == 200


def test_team_admin_manages_its_team(world: World) -> None:
    gw, k, ids = world.gw, world.keys, world.ids
    for_bob = world.new_key("alice", {"team_id": ids["t-eng"], "user_id": ids["bob"]})
    assert for_bob.status_code == 200, for_bob.text
    assert for_bob.json()["created_by"] == ids["alice"]
    assert world.new_key("alice", {"team_id": ids["t-ops"]}).status_code == 403  # not her team
    assert world.new_key("alice", {"team_id": ids["t-eng"], "user_id": ids["dave"]}).status_code == 403  # not a member
    assert world.new_key("bob", {"team_id": ids["t-eng"], "user_id": ids["alice"]}).status_code == 403  # not admin
    assert world.new_key("bob", {"team_id": ids["t-eng"]}).status_code == 200  # a member's own team key
    team_keys = call(gw, k["alice"], "/key/list", team_id=ids["t-eng"]).json()["data"]
    assert {row["user_id"] for row in team_keys} == {ids["bob"]}
    assert call(gw, k["bob"], "/key/list", team_id=ids["t-eng"]).json()["data"] == [
        row for row in team_keys if row["user_id"] == ids["bob"]
    ]
    key = for_bob.json()["key"]
    assert call(gw, k["bob"], "/key/block", {"key": key}).status_code == 200
    assert call(gw, k["alice"], "/key/unblock", {"key": key}).status_code == 200  # the team's admin may
    assert call(gw, k["dave"], "/key/block", {"key": key}).status_code == 403  # another team's admin may not
    # members: the team's admin adds and removes them; a plain member does not
    new_user = call(gw, MASTER_KEY, "/user/new", {"user_id": f"eve-{uuid.uuid4().hex[:6]}"}).json()["user_id"]
    added = call(gw, k["alice"], "/team/member_add", {"team_id": ids["t-eng"], "member": {"user_id": new_user}})
    assert added.status_code == 200, added.text
    assert call(gw, k["bob"], "/team/member_delete", {"team_id": ids["t-eng"], "user_id": new_user}).status_code == 403
    assert (
        call(
            gw, k["dave"], "/team/member_add", {"team_id": ids["t-eng"], "member": {"user_id": ids["dave"]}}
        ).status_code
        == 403
    )
    removed = call(gw, k["alice"], "/team/member_delete", {"team_id": ids["t-eng"], "user_id": new_user})
    assert removed.status_code == 200


def test_nobody_hands_on_more_than_it_holds(world: World) -> None:
    gw, ids = world.gw, world.ids
    narrow = call(gw, MASTER_KEY, "/key/generate", {
        "user_id": ids["bob"], "models": ["demo"], "rpm_limit": 5, "max_budget": 1.0, "duration": "1h",
        "allowed_routes": ["llm_api_routes", "/key/generate", "/key/info"],
    }).json()["key"]  # fmt: skip
    child = call(gw, narrow, "/key/generate", {})
    assert child.status_code == 200, child.text
    made = child.json()
    assert made["models"] == ["demo"] and made["rpm_limit"] == 5 and made["max_budget"] == 1.0
    assert made["allowed_routes"] == ["llm_api_routes", "/key/generate", "/key/info"]
    assert datetime.fromisoformat(made["expires"]) <= datetime.fromisoformat(
        call(gw, narrow, "/key/info").json()["info"]["expires"]
    )
    for body, param in (
        ({"models": ["other"]}, "models"),
        ({"models": ["beta"]}, "models"),
        ({"rpm_limit": 6}, "rpm_limit"),
        ({"max_budget": 2}, "max_budget"),
        ({"duration": "2h"}, "duration"),
        ({"allowed_routes": ["management_routes"]}, "allowed_routes"),
        ({"aliases": {"x": "other"}}, "aliases"),
        ({"key_type": "management"}, "allowed_routes"),
    ):
        refused = call(gw, narrow, "/key/generate", body)
        assert refused.status_code == 403 and refused.json()["error"]["param"] == param, (body, refused.text)
    ok = call(gw, narrow, "/key/generate", {"models": ["demo"], "rpm_limit": 2, "allowed_routes": ["llm_api_routes"]})
    assert ok.status_code == 200 and ok.json()["rpm_limit"] == 2
    # a child cannot be raised past its maker afterwards either
    raise_ = call(gw, narrow, "/key/update", {"key": ok.json()["key"], "rpm_limit": 50})
    assert raise_.status_code == 403
    # what the narrow key may not call, it cannot reach
    assert call(gw, narrow, "/key/list").status_code == 403
    assert chat(gw, ok.json()["key"]).status_code == 200
    assert call(gw, ok.json()["key"], "/key/generate", {}).status_code == 403
    # key_type 'default' (every route) from a caller held to some routes hands on only those (found by the T5
    # state machine: it used to leave the routes as they were, so an unrestricted key stayed unrestricted)
    widened = call(gw, narrow, "/key/generate", {"key_type": "default"}).json()
    assert widened["allowed_routes"] == ["llm_api_routes", "/key/generate", "/key/info"]
    routes = ["llm_api_routes", "/key/generate", "/key/info", "/key/update"]
    updater = call(gw, MASTER_KEY, "/key/generate", {"user_id": ids["bob"], "allowed_routes": routes}).json()["key"]
    unrestricted = call(gw, MASTER_KEY, "/key/generate", {"user_id": ids["bob"]}).json()["key"]
    updated = call(gw, updater, "/key/update", {"key": unrestricted, "key_type": "default"})
    assert updated.status_code == 200 and updated.json()["allowed_routes"] == routes, updated.text


def test_key_types_and_allowed_routes(world: World) -> None:
    gw = world.gw
    llm = call(gw, MASTER_KEY, "/key/generate", {"key_type": "llm_api", "user_id": world.ids["root"]}).json()
    assert llm["allowed_routes"] == ["llm_api_routes"]
    assert chat(gw, llm["key"]).status_code == 200
    assert call(gw, llm["key"], "/user/list").status_code == 403  # even a proxy admin's key, when restricted
    mgmt = call(gw, MASTER_KEY, "/key/generate", {"key_type": "management", "user_id": world.ids["root"]}).json()
    assert chat(gw, mgmt["key"]).status_code == 403
    assert call(gw, mgmt["key"], "/user/list").status_code == 200
    read_only = call(gw, MASTER_KEY, "/key/generate", {"key_type": "read_only", "user_id": world.ids["root"]}).json()
    assert call(gw, read_only["key"], "/key/info").status_code == 200
    assert call(gw, read_only["key"], "/user/new", {"user_id": "nope"}).status_code == 403
    assert chat(gw, read_only["key"]).status_code == 403
    patterned = call(gw, MASTER_KEY, "/key/generate", {"allowed_routes": ["/v1/chat/*"]}).json()["key"]
    assert chat(gw, patterned).status_code == 200
    assert call(gw, patterned, "/v1/models").status_code == 403
    assert call(gw, MASTER_KEY, "/key/generate", {"key_type": "root"}).status_code == 400


def test_aliases_and_access_groups(world: World) -> None:
    gw = world.gw
    grouped = call(gw, MASTER_KEY, "/key/generate", {"models": ["beta"], "aliases": {"gpt-4o": "other"}}).json()
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=grouped["key"], max_retries=0)
    assert sorted(m.id for m in client.models.list()) == ["gpt-4o", "other", "third"]
    assert client.chat.completions.create(model="third", messages=[{"role": "user", "content": "hi"}]).choices
    assert client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]).choices
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    records = {r.get("requested_model"): r for r in gw.records() if r.get("requested_model") == "gpt-4o"}
    assert records["gpt-4o"]["model_group"] == "other"
    # an alias cannot lead around the model list
    sneaky = call(gw, MASTER_KEY, "/key/generate", {"models": ["demo"], "aliases": {"demo2": "other"}}).json()["key"]
    assert chat(gw, sneaky, "demo2").status_code == 403
    # an organisation's model list binds the keys of its teams
    org = call(gw, MASTER_KEY, "/organization/new", {"models": ["demo"]}).json()["organization_id"]
    org_team = call(gw, MASTER_KEY, "/team/new", {"organization_id": org}).json()["team_id"]
    org_key = call(gw, MASTER_KEY, "/key/generate", {"team_id": org_team}).json()["key"]
    assert chat(gw, org_key).status_code == 200 and chat(gw, org_key, "other").status_code == 403
    assert call(gw, MASTER_KEY, "/organization/update", {"organization_id": org, "models": []}).status_code == 200
    assert chat(gw, org_key, "other").status_code == 200  # the change reached the cached key at once
    # a team's aliases reach its keys
    team = call(gw, MASTER_KEY, "/team/new", {"model_aliases": {"fast": "third"}}).json()["team_id"]
    team_key = call(gw, MASTER_KEY, "/key/generate", {"team_id": team}).json()["key"]
    assert chat(gw, team_key, "fast").status_code == 200


def test_counting_tokens_and_bedrock_passthrough_check_model_access(world: World) -> None:
    gw = world.gw
    demo_only = call(gw, MASTER_KEY, "/key/generate", {"models": ["demo"]}).json()["key"]
    body = {"model": "other", "messages": [{"role": "user", "content": "hi"}]}
    counted = httpx.post(gw.url + "/v1/messages/count_tokens", headers={"x-api-key": demo_only}, json=body)
    assert counted.status_code == 403 and counted.json()["type"] == "error"
    body["model"] = "demo"
    assert (
        httpx.post(gw.url + "/v1/messages/count_tokens", headers={"x-api-key": demo_only}, json=body).status_code == 200
    )


def test_regenerate_by_path_and_user_new_is_one_transaction(world: World) -> None:
    gw, k = world.gw, world.keys
    own = world.new_key("bob", {}).json()["key"]
    regenerated = call(gw, k["bob"], f"/key/{own}/regenerate", {})
    assert regenerated.status_code == 200, regenerated.text
    assert chat(gw, own).status_code == 401 and chat(gw, regenerated.json()["key"]).status_code == 200
    assert call(gw, k["bob"], f"/key/{k['alice']}/regenerate", {}).status_code == 403
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    assert call(gw, MASTER_KEY, "/user/new", {"user_email": email}).status_code == 200
    clash_id = f"clash-{uuid.uuid4().hex[:6]}"
    clash = call(gw, MASTER_KEY, "/user/new", {"user_id": clash_id, "user_email": email})
    assert clash.status_code == 400 and clash.json()["error"]["param"] == "user_email"
    assert call(gw, MASTER_KEY, "/key/list", user_id=clash_id).json()["data"] == []  # no key without its user


def test_role_change_reaches_the_users_keys(world: World) -> None:
    gw = world.gw
    made = call(gw, MASTER_KEY, "/user/new", {"user_id": f"fred-{uuid.uuid4().hex[:6]}"}).json()
    assert call(gw, made["key"], "/user/list").status_code == 403
    promoted = call(gw, MASTER_KEY, "/user/update", {"user_id": made["user_id"], "user_role": "proxy_admin_viewer"})
    assert promoted.status_code == 200
    assert call(gw, made["key"], "/user/list").status_code == 200  # at once: the cache was dropped
    bad_role = call(gw, MASTER_KEY, "/user/update", {"user_id": made["user_id"], "user_role": "god"})
    assert bad_role.status_code == 400
