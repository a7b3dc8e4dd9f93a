"""Privilege escalation as a state machine (security.md, T5): random programs over the admin API, run by
random callers, against one real gateway; after every step the invariants must hold:

- a key made by a caller that is not a proxy admin reaches no model the caller cannot reach, and holds no
  limit, expiry or route looser than the caller's own;
- only a proxy admin changes a user's role;
- a deleted key never authenticates again.

``LOCKGATE_T5_EXAMPLES`` sets how many programs run (default 150, about 6 s; 5,000 for a release).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule

from tests.support import MASTER_KEY, GatewayProcess

CONFIG = """model_list:
  - model_name: demo
    litellm_params: {model: demo/echo}
  - model_name: other
    litellm_params: {model: demo/other}
    model_info: {access_groups: [beta]}
  - model_name: third
    litellm_params: {model: demo/third}
general_settings:
  user_api_key_cache_ttl: 1
"""
MODELS = ("demo", "other", "third")
ROLES = ("proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer")
CAPS = ("max_budget", "tpm_limit", "rpm_limit", "max_parallel_requests")
PEOPLE = st.integers(0, len(ROLES))  # an index into the program's people
EXAMPLES = int(os.environ.get("LOCKGATE_T5_EXAMPLES", "150"))

_client = httpx.Client(timeout=10)


def call(gw: GatewayProcess, caller: str, path: str, body: dict[str, Any] | None = None, **params: str) -> Any:
    headers = {"Authorization": f"Bearer {caller}"}
    if body is None:
        return _client.get(gw.url + path, headers=headers, params=params)
    return _client.post(gw.url + path, headers=headers, json=body)


def info(gw: GatewayProcess, key: str) -> dict[str, Any] | None:
    found = call(gw, MASTER_KEY, "/key/info", key=key)
    return found.json()["info"] if found.status_code == 200 else None


def reaches(gw: GatewayProcess, key: str, model: str) -> bool:
    """Whether the key may use the model: /v1/models shows each key what it may use (a chat would spend the key's
    rpm and budget, which the programs set, and answer 429 for reasons that are not access)."""
    listed = call(gw, key, "/v1/models")
    return listed.status_code == 200 and model in {m["id"] for m in listed.json()["data"]}


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with GatewayProcess(CONFIG) as gw:
        yield gw


key_fields = st.fixed_dictionaries(
    {},
    optional={
        "models": st.lists(st.sampled_from((*MODELS, "beta", "*", "all-proxy-models")), max_size=3),
        "rpm_limit": st.none() | st.integers(0, 20),
        "tpm_limit": st.none() | st.integers(0, 5000),
        "max_budget": st.none() | st.floats(0, 10, allow_nan=False),
        "max_parallel_requests": st.none() | st.integers(0, 5),
        "duration": st.sampled_from(("1h", "2d", "30d")),
        "allowed_routes": st.lists(
            st.sampled_from(("llm_api_routes", "info_routes", "management_routes", "/key/generate", "/key/*")),
            max_size=2,
        ),
        "key_type": st.sampled_from(("default", "llm_api", "management", "read_only")),
        "aliases": st.dictionaries(st.sampled_from(("a", "b")), st.sampled_from(MODELS), max_size=1),
        "blocked": st.booleans(),
    },
)


def test_no_program_escalates(gateway: GatewayProcess) -> None:
    run_id = uuid.uuid4().hex[:6]
    seen = {"programs": 0, "steps": 0, "checked": 0, "refused": 0, "role_refused": 0, "deleted": 0}

    class Escalation(RuleBasedStateMachine):
        keys = Bundle("keys")

        def __init__(self) -> None:
            super().__init__()
            self.gw = gateway
            self.deleted: list[str] = []
            self.n = 0
            seen["programs"] += 1

        def _id(self, what: str) -> str:
            self.n += 1
            return f"{what}-{run_id}-{uuid.uuid4().hex[:8]}"

        @initialize(target=keys)
        def world(self) -> object:
            """Fresh people for each program: one user of each role (two internal users), two teams (alice
            admin of one, bob of the other), a key each, and a narrow key for bob made by the master key."""
            keys = []
            self.people: list[str] = []
            for role in (*ROLES, "internal_user"):
                made = call(self.gw, MASTER_KEY, "/user/new", {"user_id": self._id(role), "user_role": role})
                assert made.status_code == 200, made.text
                self.people.append(made.json()["user_id"])
                keys.append(made.json()["key"])
            alice, bob = self.people[2], self.people[4]
            self.teams = []
            for admin, member in ((alice, bob), (bob, self.people[3])):
                members = [{"user_id": admin, "role": "admin"}, {"user_id": member, "role": "user"}]
                made = call(self.gw, MASTER_KEY, "/team/new", {"team_id": self._id("t"), "members_with_roles": members})
                assert made.status_code == 200, made.text
                self.teams.append(made.json()["team_id"])
            narrow = call(self.gw, MASTER_KEY, "/key/generate", {
                "user_id": bob, "models": ["demo", "other"], "rpm_limit": 5, "max_budget": 1.0, "duration": "1h",
                "allowed_routes": ["llm_api_routes", "/key/generate", "/key/info", "/key/update", "/key/delete"],
            })  # fmt: skip
            keys.append(narrow.json()["key"])
            return multiple(*keys)

        @rule(
            target=keys, caller=keys, fields=key_fields, for_user=st.none() | PEOPLE, team=st.none() | st.integers(0, 1)
        )
        def generate(self, caller: str, fields: dict[str, Any], for_user: int | None, team: int | None) -> str:
            body = dict(fields)
            if for_user is not None:
                body["user_id"] = self.people[for_user]
            if team is not None:
                body["team_id"] = self.teams[team]
            before = info(self.gw, caller)
            admin = before is not None and self._is_admin(before)
            made = call(self.gw, caller, "/key/generate", body)
            seen["steps"] += 1
            if made.status_code != 200:
                assert made.status_code in (400, 401, 403, 404), made.text
                seen["refused"] += 1
                return caller  # nothing new: the bundle gets the caller again
            child = made.json()
            if before is not None and not admin:
                self._check_within(caller, before, child)
            return str(child["key"])

        @rule(caller=keys, victim=keys, fields=key_fields)
        def update(self, caller: str, victim: str, fields: dict[str, Any]) -> None:
            fields = {k: v for k, v in fields.items() if k != "duration"}
            before = info(self.gw, caller)
            admin = before is not None and self._is_admin(before)
            changed = call(self.gw, caller, "/key/update", {"key": victim, **fields})
            if changed.status_code == 200 and before is not None and not admin:
                self._check_within(caller, before, changed.json(), given=set(fields))

        @rule(target=keys, caller=keys, victim=keys)
        def regenerate(self, caller: str, victim: str) -> object:
            before = info(self.gw, caller)
            admin = before is not None and self._is_admin(before)
            made = call(self.gw, caller, "/key/regenerate", {"key": victim})
            if made.status_code != 200:
                return multiple()
            if before is not None and not admin and victim != caller:  # a new value of a key hands that key on
                self._check_within(caller, before, made.json())
            return multiple(made.json()["key"])

        @rule(caller=keys, person=PEOPLE, role=st.sampled_from(ROLES))
        def set_role(self, caller: str, person: int, role: str) -> None:
            user = self.people[person]
            caller_info = info(self.gw, caller)
            admin = caller_info is not None and self._is_admin(caller_info)
            old = call(self.gw, MASTER_KEY, "/user/info", user_id=user).json()["user_info"]["user_role"]
            changed = call(self.gw, caller, "/user/update", {"user_id": user, "user_role": role})
            if changed.status_code == 200:
                assert admin, "a non-admin changed a role"
            else:
                seen["role_refused"] += 1
                now = call(self.gw, MASTER_KEY, "/user/info", user_id=user).json()["user_info"]["user_role"]
                assert now == old

        @rule(caller=keys, victim=keys)
        def delete(self, caller: str, victim: str) -> None:
            if call(self.gw, caller, "/key/delete", {"keys": [victim]}).status_code == 200:
                self.deleted.append(victim)
                seen["deleted"] += 1

        @invariant()
        def deleted_keys_stay_dead(self) -> None:
            for key in self.deleted[-3:]:
                assert call(self.gw, key, "/v1/models").status_code == 401

        def _is_admin(self, key_info: dict[str, Any]) -> bool:
            """A proxy admin's keys are not narrowed (the Terraform provider's management key makes keys that
            call models): only the role counts."""
            if key_info["user_id"] is None:
                return False
            user = call(self.gw, MASTER_KEY, "/user/info", user_id=key_info["user_id"])
            return user.status_code == 200 and user.json()["user_info"]["user_role"] == "proxy_admin"

        def _check_within(
            self, caller: str, parent: dict[str, Any], child: dict[str, Any], given: set[str] | None = None
        ) -> None:
            """``child`` holds no more than ``parent``; after an update (``given``: the fields it set), only
            what the update handed on is checked."""
            seen["checked"] += 1
            fields = set(child) if given is None else given
            if "key_type" in fields:
                fields.add("allowed_routes")
            for cap in CAPS:
                if parent[cap] is not None and cap in fields:
                    assert child[cap] is not None and child[cap] <= parent[cap], (cap, parent, child)
            if parent["expires"] is not None and given is None:
                assert child["expires"] is not None
                assert datetime.fromisoformat(child["expires"]) <= datetime.fromisoformat(parent["expires"])
            if parent["allowed_routes"] and "allowed_routes" in fields:
                assert child["allowed_routes"], (parent, child)
            if parent["models"] and "models" in fields:
                assert child["models"], (parent, child)
            if not child["blocked"] and given is None:
                key = child.get("key")
                for model in MODELS:
                    if key and reaches(self.gw, key, model):
                        assert reaches(self.gw, caller, model), f"child reaches {model}, its maker does not"

    Escalation.TestCase.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    Escalation.TestCase().runTest()
    print(f"T5: {seen}")
    # not vacuous: non-admin key making and refusals, refused role changes and deletions all happened
    assert seen["checked"] >= EXAMPLES // 4 and seen["refused"] and seen["role_refused"] and seen["deleted"], seen
