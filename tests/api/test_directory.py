"""Organisations > teams > users > keys through LiteLLM's API, and what a team's settings do to its keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support import MASTER_KEY, GatewayProcess

CONFIG = """model_list:
  - model_name: demo
    litellm_params: {model: demo/echo}
  - model_name: other
    litellm_params: {model: demo/other}
"""


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG) as gw:
        yield gw


def call(gw: GatewayProcess, path: str, body: dict[str, object] | None = None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    if body is None:
        return httpx.get(gw.url + path, headers=headers, params=params)
    return httpx.post(gw.url + path, headers=headers, json=body)


def chat(gw: GatewayProcess, key: str, model: str = "demo") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_org_team_user_key_and_model_access(gateway: GatewayProcess) -> None:
    org = call(gateway, "/organization/new", {"organization_alias": unique("acme")}).json()
    team = call(gateway, "/team/new", {"team_alias": unique("ml"), "organization_id": org["organization_id"],
                                       "models": ["demo"]}).json()  # fmt: skip
    user = call(gateway, "/user/new", {"user_email": unique("alice") + "@example.com", "auto_create_key": False})
    assert user.status_code == 200 and "key" not in user.json()
    user_id = user.json()["user_id"]
    added = call(
        gateway, "/team/member_add", {"team_id": team["team_id"], "member": {"user_id": user_id, "role": "admin"}}
    )
    assert added.json()["members_with_roles"] == [{"user_id": user_id, "role": "admin"}]

    key = call(gateway, "/key/generate", {"team_id": team["team_id"], "user_id": user_id}).json()["key"]
    assert chat(gateway, key, "demo").status_code == 200
    refused = chat(gateway, key, "other")  # the key has no list of its own: the team's applies
    assert refused.status_code == 403 and "team" in refused.json()["error"]["message"]
    outside = call(gateway, "/key/generate", {"team_id": team["team_id"], "models": ["other"]})
    assert outside.status_code == 403

    info = call(gateway, "/team/info", team_id=team["team_id"]).json()
    assert info["team_info"]["members_with_roles"] == [{"user_id": user_id, "role": "admin"}]
    assert len(info["keys"]) == 1 and "key" not in info["keys"][0]
    assert call(gateway, "/user/info", user_id=user_id).json()["teams"] == [team["team_id"]]
    org_info = call(gateway, "/organization/info", organization_id=org["organization_id"]).json()
    assert [t["team_id"] for t in org_info["teams"]] == [team["team_id"]]


def test_blocking_a_team_stops_its_keys_at_once(gateway: GatewayProcess) -> None:
    team = call(gateway, "/team/new", {"team_alias": unique("blockme")}).json()
    key = call(gateway, "/key/generate", {"team_id": team["team_id"]}).json()["key"]
    assert chat(gateway, key).status_code == 200
    assert call(gateway, "/team/update", {"team_id": team["team_id"], "blocked": True}).json()["blocked"] is True
    refused = chat(gateway, key)
    assert refused.status_code == 401 and "team" in refused.json()["error"]["message"]
    call(gateway, "/team/update", {"team_id": team["team_id"], "blocked": False})
    assert chat(gateway, key).status_code == 200


def test_new_user_gets_a_key_like_litellm(gateway: GatewayProcess) -> None:
    made = call(gateway, "/user/new", {"user_role": "internal_user", "models": ["demo"]}).json()
    assert made["key"].startswith("sk-") and chat(gateway, made["key"]).status_code == 200
    assert chat(gateway, made["key"], "other").status_code == 403


def test_errors_name_the_field(gateway: GatewayProcess) -> None:
    alias = unique("dup")
    assert call(gateway, "/team/new", {"team_alias": alias}).status_code == 200
    duplicate = call(gateway, "/team/new", {"team_alias": alias})
    assert duplicate.status_code == 400 and duplicate.json()["error"]["code"] == "conflict"
    missing = call(gateway, "/key/generate", {"team_id": "no-such-team"})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "team_id"
    orphan = call(gateway, "/team/new", {"organization_id": "no-such-org"})
    assert orphan.status_code == 404
    unknown = call(gateway, "/team/new", {"api_key": "x"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "api_key"
    role = call(gateway, "/team/member_add", {"team_id": "t", "member": {"user_id": "u", "role": "owner"}})
    assert role.status_code == 400
    assert call(gateway, "/team/info", team_id="nope").status_code == 404
    assert call(gateway, "/user/info", user_id="nope").status_code == 404


def test_deleting_a_team_removes_its_members(gateway: GatewayProcess) -> None:
    team = call(gateway, "/team/new", {}).json()
    user = call(gateway, "/user/new", {"auto_create_key": False}).json()
    call(gateway, "/team/member_add", {"team_id": team["team_id"], "member": [{"user_id": user["user_id"]}]})
    assert call(gateway, "/team/delete", {"team_ids": [team["team_id"]]}).json()["deleted"] == 1
    assert call(gateway, "/user/info", user_id=user["user_id"]).json()["teams"] == []
    assert call(gateway, "/team/delete", {"team_ids": [team["team_id"]]}).status_code == 404


def test_member_add_is_all_or_nothing(gateway: GatewayProcess) -> None:
    team = call(gateway, "/team/new", {}).json()
    user = call(gateway, "/user/new", {"auto_create_key": False}).json()
    members = [{"user_id": user["user_id"]}, {"user_id": "nobody-" + unique("u")}]
    refused = call(gateway, "/team/member_add", {"team_id": team["team_id"], "member": members})
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "user_id"
    assert call(gateway, "/team/info", team_id=team["team_id"]).json()["team_info"]["members_with_roles"] == []


def test_member_update_changes_a_role_as_the_terraform_provider_calls_it(gateway: GatewayProcess) -> None:
    team = call(gateway, "/team/new", {}).json()["team_id"]
    alice, bob = (call(gateway, "/user/new", {"auto_create_key": False}).json()["user_id"] for _ in range(2))
    call(gateway, "/team/member_add", {"team_id": team, "member": [{"user_id": alice}, {"user_id": bob}]})
    alices = {"Authorization": "Bearer " + call(gateway, "/key/generate", {"user_id": alice}).json()["key"]}
    promote_bob = {"team_id": team, "user_id": bob, "role": "admin"}
    denied = httpx.post(gateway.url + "/team/member_update", headers=alices, json=promote_bob)
    assert denied.status_code == 403  # a plain member changes nobody's role
    promoted = call(gateway, "/team/member_update", {"team_id": team, "user_id": alice, "role": "admin"})
    assert promoted.status_code == 200 and promoted.json() == {"team_id": team, "user_id": alice, "role": "admin"}
    by_admin = httpx.post(gateway.url + "/team/member_update", headers=alices, json={**promote_bob,
                          "max_budget_in_team": 10})  # fmt: skip
    assert by_admin.status_code == 200 and "max_budget_in_team" in by_admin.headers["x-lockgate-notice"]
    roles = call(gateway, "/team/info", team_id=team).json()["team_info"]["members_with_roles"]
    assert sorted((m["user_id"], m["role"]) for m in roles) == sorted([(alice, "admin"), (bob, "admin")])
    outsider = call(gateway, "/team/member_update", {"team_id": team, "user_id": "nobody", "role": "user"})
    assert outsider.status_code == 404 and outsider.json()["error"]["code"] == "member_not_found"
    for body, param in (({"team_id": team, "user_id": bob, "role": "owner"}, "role"),
                        ({"team_id": team, "user_email": "bob@example.com", "role": "user"}, "user_id"),
                        ({"team_id": team, "user_id": bob, "budget": 1}, "budget")):  # fmt: skip
        refused = call(gateway, "/team/member_update", body)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text


def test_directory_routes_need_the_master_key(gateway: GatewayProcess) -> None:
    key = call(gateway, "/key/generate", {}).json()["key"]
    for path in ("/user/new", "/team/new", "/organization/new"):
        response = httpx.post(gateway.url + path, headers={"Authorization": f"Bearer {key}"}, json={})
        assert response.status_code == 403, path


def test_team_block_and_organization_update_delete(gateway: GatewayProcess) -> None:
    org = call(gateway, "/organization/new", {"organization_alias": unique("org")}).json()
    renamed = call(gateway, "/organization/update", {"organization_id": org["organization_id"], "models": ["demo"]})
    assert renamed.json()["models"] == ["demo"]
    team = call(gateway, "/team/new", {"organization_id": org["organization_id"]}).json()
    key = call(gateway, "/key/generate", {"team_id": team["team_id"]}).json()["key"]
    assert call(gateway, "/team/block", {"team_id": team["team_id"]}).json()["blocked"] is True
    assert chat(gateway, key).status_code == 401
    call(gateway, "/team/unblock", {"team_id": team["team_id"]})
    assert chat(gateway, key).status_code == 200
    busy = call(gateway, "/organization/delete", {"organization_ids": [org["organization_id"]]})
    assert busy.status_code == 400 and busy.json()["error"]["code"] == "conflict"
    call(gateway, "/team/delete", {"team_ids": [team["team_id"]]})
    gone = call(gateway, "/organization/delete", {"organization_ids": [org["organization_id"]]})
    assert gone.json()["deleted"] == 1


def test_end_users_blocked_by_their_request_user(gateway: GatewayProcess) -> None:
    end_user = unique("customer")
    made = call(gateway, "/customer/new", {"user_id": end_user, "alias": "Ada", "budget_id": "b1"})
    assert made.status_code == 200 and "budget_id" in made.headers["x-lockgate-notice"]
    key = call(gateway, "/key/generate", {}).json()["key"]
    body = {"model": "demo", "user": end_user, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200
    assert call(gateway, "/customer/block", {"user_ids": [end_user]}).status_code == 200
    refused = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "user"
    assert call(gateway, "/end_user/unblock", {"user_ids": [end_user]}).status_code == 200  # LiteLLM's alias
    assert httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200
    assert call(gateway, "/customer/info", end_user_id=end_user).json()["alias"] == "Ada"
    duplicate = call(gateway, "/customer/new", {"user_id": end_user})
    assert duplicate.status_code == 400
    assert call(gateway, "/customer/delete", {"user_ids": [end_user]}).json()["deleted"] == 1
    assert call(gateway, "/customer/info", end_user_id=end_user).status_code == 404


def test_regenerate_keeps_settings_and_retires_the_old_value(gateway: GatewayProcess) -> None:
    old = call(gateway, "/key/generate", {"models": ["demo"], "key_alias": unique("rotate")}).json()
    new = call(gateway, "/key/regenerate", {"key": old["key"]}).json()
    assert new["key"] != old["key"] and new["models"] == ["demo"] and new["key_alias"] == old["key_alias"]
    assert chat(gateway, old["key"]).status_code == 401
    assert chat(gateway, new["key"]).status_code == 200
    assert call(gateway, "/key/regenerate", {"key": old["key"]}).status_code == 404


def test_a_team_with_an_unknown_member_is_not_half_made(gateway: GatewayProcess) -> None:
    alias = unique("half")
    refused = call(gateway, "/team/new", {"team_alias": alias, "members_with_roles": [{"user_id": "nobody"}]})
    assert refused.status_code == 404
    teams = call(gateway, "/team/list", page_size="1000").json()
    assert alias not in [t["team_alias"] for t in teams]
