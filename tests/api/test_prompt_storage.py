"""Prompt storage in the spend ledger (security.md P1, T25), on a gateway in this process (the demo model, a
SQLite file in tmp_path, ASGI calls without a socket):

- off (the default): after 1,000 requests of every kind (OpenAI and Anthropic dialects, streamed or not,
  embeddings; the master key and virtual keys), not one byte of any prompt or answer is in the database
  files, the spool, the logs or the request log;
- on (for the gateway, a team or a key): every seeded secret and piece of personal data is redacted, in the
  stored prompt, in the stored answer and in the database file; long prompts are cut; streamed answers are
  stored; the most specific setting wins; only proxy admins set it, and only proxy admins see what is stored;
- retention deletes rows past maximum_spend_logs_retention_period and clears prompts past
  lockgate.prompt_retention.
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from lockgate.app import Gateway
from lockgate.config import parse_settings
from lockgate.observe import JsonLinesSink
from lockgate.retention import Retention
from lockgate.storage import SpendLogRow, open_store
from tests.test_redact import FOUND

MASTER = "sk-master-canary-0123456789abcdefXYZ"
PROVIDER_KEY = "prov-key-canary-9876543210fedcba"


def config(general: dict[str, Any] | None = None, native: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "model_list": [
            {"model_name": "demo", "litellm_params": {"model": "demo/echo", "api_key": PROVIDER_KEY}},
            {"model_name": "embed", "litellm_params": {"model": "demo/embed"}, "model_info": {"mode": "embedding"}},
        ],
        "general_settings": {"master_key": MASTER, "user_api_key_cache_ttl": 0, **(general or {})},
        "lockgate": native or {},
    }


class World:
    """A started gateway, a client for it, and what it logged."""

    def __init__(self, gw: Gateway, client: httpx.AsyncClient, log: io.StringIO, path: Path) -> None:
        self.gw, self.client, self.log, self.path = gw, client, log, path

    async def call(self, path: str, body: dict[str, Any] | None = None, key: str = MASTER, **params: str) -> Any:
        headers = {"Authorization": f"Bearer {key}"}
        if body is None:
            answer = await self.client.get(path, headers=headers, params=params)
        else:
            answer = await self.client.post(path, headers=headers, json=body)
        return answer

    async def ok(self, path: str, body: dict[str, Any] | None = None, key: str = MASTER, **params: str) -> Any:
        answer = await self.call(path, body, key, **params)
        assert answer.status_code == 200, answer.text
        return answer

    async def rows(self, caller: str = MASTER, **params: str) -> list[dict[str, Any]]:
        await self.gw._ledger.flush()  # type: ignore[union-attr]
        return list((await self.ok("/spend/logs", key=caller, page_size="1000", **params)).json())

    async def key(self, **fields: Any) -> str:
        return str((await self.ok("/key/generate", fields)).json()["key"])


@asynccontextmanager
async def world(tmp_path: Path, cfg: dict[str, Any]) -> AsyncIterator[World]:
    settings = parse_settings(cfg, {}, source=str(tmp_path / "config.yaml"))
    log = io.StringIO()
    gw = Gateway(settings, sinks=(JsonLinesSink(log),))
    await gw.startup()
    try:
        transport = httpx.ASGITransport(app=gw)
        async with httpx.AsyncClient(transport=transport, base_url="http://lockgate") as client:
            yield World(gw, client, log, tmp_path)
    finally:
        await gw.shutdown()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def chat(text: str, *, stream: bool = False, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    return {"model": "demo", "messages": [*messages, {"role": "user", "content": text}], "stream": stream}


def claude(text: str, *, stream: bool = False, system: str | None = None) -> dict[str, Any]:
    body = {"model": "demo", "max_tokens": 64, "messages": [{"role": "user", "content": text}], "stream": stream}
    return {**body, "system": system} if system else body


# --- storage off: T25's "0 prompt bytes in DB/logs after 1,000 requests" ---------------------------------------


def _files(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and p.name != "config.yaml")


def test_off_by_default_nothing_of_1000_prompts_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    canary = "CANARY" + uuid.uuid4().hex  # in every prompt; the demo model says it back in every answer

    async def test() -> None:
        async with world(tmp_path, config()) as w:
            keys = [MASTER, await w.key(), await w.key(metadata={"tag": "x"})]
            await w.ok("/team/new", {"team_id": "quiet"})
            keys.append(await w.key(team_id="quiet"))
            kinds = [
                ("/v1/chat/completions", lambda n: chat(f"{canary} {n}", system=f"{canary} system")),
                ("/v1/chat/completions", lambda n: chat(f"{canary} {n}", stream=True)),
                ("/v1/messages", lambda n: claude(f"{canary} {n}", system=f"{canary} system")),
                ("/v1/messages", lambda n: claude(f"{canary} {n}", stream=True)),
                ("/v1/embeddings", lambda n: {"model": "embed", "input": [f"{canary} {n}"]}),
            ]
            for start in range(0, 1000, 50):  # 50 at a time, concurrently
                batch = [w.call(kinds[n % 5][0], kinds[n % 5][1](n), keys[n % 4]) for n in range(start, start + 50)]
                answers = await asyncio.gather(*batch)
                assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
                assert canary in answers[0].text  # the answers did carry it
            rows = await w.rows()
            assert len(rows) == 1000 and all(r["messages"] == {} and r["response"] == {} for r in rows)
            assert {r["stream"] for r in rows} == {True, False} and len({r["api_key"] for r in rows}) == 4
            assert w.log.getvalue().count("\n") >= 1000 and canary not in w.log.getvalue()  # the request log

    with caplog.at_level(logging.DEBUG, logger="lockgate"):
        run(test)
    stored = _files(tmp_path)  # the database, its WAL, the spool directory
    assert len(stored) > 100_000  # the rows are there
    assert canary.encode() not in stored
    assert canary not in caplog.text


async def _count_rows(path: Path) -> int:
    store = await open_store(None, sqlite_path=path)
    try:
        return len(await store.list_spend_logs(limit=100_000))
    finally:
        await store.close()


def test_off_the_request_log_has_no_prompt(tmp_path: Path) -> None:
    async def test() -> None:
        async with world(tmp_path, config()) as w:
            await w.ok("/v1/chat/completions", chat("CANARY-log-1234"))
            await w.ok("/v1/messages", claude("CANARY-log-1234", stream=True))
            assert "CANARY" not in w.log.getvalue() and w.log.getvalue().count("\n") == 2

    run(test)
    assert asyncio.run(_count_rows(tmp_path / "lockgate.db")) == 2


# --- storage on: T25's "redaction rules applied to 100 % of seeded PII" --------------------------------------

SEEDED = [(kind, text, secret) for kind, text, secret in FOUND if kind != "known_secret"] + [
    ("known_secret", f"the master key {MASTER} is here", MASTER),
    ("known_secret", f"and the provider's: {PROVIDER_KEY}.", PROVIDER_KEY),
]


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def test_on_every_seeded_secret_is_redacted(tmp_path: Path) -> None:
    async def test() -> None:
        async with world(tmp_path, config({"store_prompts_in_spend_logs": True})) as w:
            ids = []
            for n, (kind, text, secret) in enumerate(SEEDED):  # in a prompt of each kind; the demo says it back
                for path, body in (
                    ("/v1/chat/completions", chat(f"case{n} {text}", system=text)),
                    ("/v1/chat/completions", chat(f"case{n} {text}", stream=True)),
                    ("/v1/messages", claude(f"case{n} {text}", system=text)),
                    ("/v1/messages", claude(f"case{n} {text}", stream=True)),
                    ("/v1/embeddings", {"model": "embed", "input": f"case{n} {text}"}),
                ):
                    answer = await w.ok(path, body)
                    ids.append((n, kind, secret, path, answer.headers["x-request-id"]))
            rows = {r["request_id"]: r for r in await w.rows()}
            assert len(rows) == len(ids) == 5 * len(SEEDED)
            for n, kind, secret, path, request_id in ids:
                row = rows[request_id]
                messages, response = _text(row["messages"]), _text(row["response"])
                assert f"[REDACTED:{kind}]" in messages and secret not in messages, (kind, messages)
                if path == "/v1/embeddings":
                    assert row["response"] == {}  # vectors are not kept
                    continue
                assert f"case{n}" in response and secret not in response, (kind, path, response)
                assert row["response"]["finish_reason"] in ("stop", "end_turn")
            everything = _text(list(rows.values()))
            for kind, _, secret in SEEDED:
                assert secret not in everything, kind

    run(test)
    stored = _files(tmp_path)
    for kind, _, secret in SEEDED:  # nor anywhere in the database files or the spool
        assert secret.encode() not in stored, kind


def test_on_streams_and_long_prompts_are_stored_cut(tmp_path: Path) -> None:
    async def test() -> None:
        async with world(tmp_path, config({"store_prompts_in_spend_logs": True})) as w:
            long = "word " * 40_000  # 200 KB
            a = (await w.ok("/v1/chat/completions", chat(long))).headers["x-request-id"]
            b = (await w.ok("/v1/chat/completions", chat("hello stream", stream=True))).headers["x-request-id"]
            c = (await w.ok("/v1/messages", claude("hello claude", stream=True))).headers["x-request-id"]
            d = (await w.ok("/v1/messages", claude("hi", system="be brief"))).headers["x-request-id"]
            rows = {r["request_id"]: r for r in await w.rows()}
            content = rows[a]["messages"][0]["content"]
            assert content.endswith("…[truncated: 200000 characters in all]") and len(content) < 66_000
            said = "Hello from lockgate's built-in demo model. You said:"
            assert rows[b]["response"] == {"content": f"{said} hello stream", "finish_reason": "stop"}
            assert rows[b]["messages"] == [{"role": "user", "content": "hello stream"}]
            assert rows[c]["response"] == {"content": f"{said} hello claude", "finish_reason": "end_turn"}
            assert rows[d]["messages"] == [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
            ]
            assert rows[d]["response"]["content"] == f"{said} hi"

    run(test)


# --- who turns it on, who sees it ---------------------------------------------------------------------------------


def test_team_and_key_settings_and_their_precedence(tmp_path: Path) -> None:
    async def test() -> None:
        async with world(tmp_path, config()) as w:
            await w.ok("/team/new", {"team_id": "loud", "metadata": {"store_prompts_in_spend_logs": True}})
            await w.ok("/team/new", {"team_id": "plain"})
            bad = await w.call("/team/new", {"team_id": "odd", "metadata": {"store_prompts_in_spend_logs": "yes"}})
            assert bad.status_code == 400
            keys = {
                "master": MASTER,
                "loud-team": await w.key(team_id="loud"),
                "loud-team-key-off": await w.key(team_id="loud", metadata={"store_prompts_in_spend_logs": False}),
                "plain-team": await w.key(team_id="plain"),
                "plain-team-key-on": await w.key(team_id="plain", metadata={"store_prompts_in_spend_logs": True}),
                "no-team": await w.key(),
            }
            for name, key in keys.items():
                await w.ok("/v1/chat/completions", chat(f"from {name}"), key)
            stored = {r["messages"][0]["content"] for r in await w.rows() if r["messages"]}
            assert stored == {"from loud-team", "from plain-team-key-on"}
            # a team turned off later: its keys stop at once (the team's change reaches its keys)
            await w.ok("/team/update", {"team_id": "loud", "metadata": {"store_prompts_in_spend_logs": False}})
            await w.ok("/v1/chat/completions", chat("from loud-team after"), keys["loud-team"])
            assert not any(r["messages"] and "after" in _text(r["messages"]) for r in await w.rows())

    run(test)


def test_global_on_and_a_team_that_opts_out(tmp_path: Path) -> None:
    async def test() -> None:
        async with world(tmp_path, config({"store_prompts_in_spend_logs": True})) as w:
            await w.ok("/team/new", {"team_id": "private", "metadata": {"store_prompts_in_spend_logs": False}})
            private, other = await w.key(team_id="private"), await w.key()
            await w.ok("/v1/chat/completions", chat("from private"), private)
            await w.ok("/v1/chat/completions", chat("from other"), other)
            await w.ok("/v1/chat/completions", chat("from master"))
            stored = {r["messages"][0]["content"] for r in await w.rows() if r["messages"]}
            assert stored == {"from other", "from master"}

    run(test)


def test_only_proxy_admins_set_it_and_see_it(tmp_path: Path) -> None:
    flag = "store_prompts_in_spend_logs"

    async def test() -> None:
        async with world(tmp_path, config({"store_prompts_in_spend_logs": True})) as w:
            await w.ok("/user/new", {"user_id": "alice"})
            await w.ok("/user/new", {"user_id": "vera", "user_role": "proxy_admin_viewer"})
            await w.ok("/team/new", {"team_id": "t", "members_with_roles": [{"user_id": "alice", "role": "admin"}]})
            alice = await w.key(user_id="alice", team_id="t")
            vera = await w.key(user_id="vera")
            # alice (an internal user, admin of her team) may not set the flag, on a new key or her own
            made = await w.call("/key/generate", {"team_id": "t", "metadata": {flag: False}}, alice)
            assert made.status_code == 403 and flag in made.text
            assert (await w.call("/key/update", {"key": alice, "metadata": {flag: False}}, alice)).status_code == 403
            # an admin sets it on her key; when alice replaces the key's metadata, the admin's value stays
            await w.ok("/key/update", {"key": alice, "metadata": {flag: False}})
            kept = await w.ok("/key/update", {"key": alice, "metadata": {"project": "x"}}, alice)
            assert kept.json()["metadata"] == {"project": "x", flag: False}
            assert (await w.call("/key/update", {"key": alice, "metadata": {flag: True}}, alice)).status_code == 403
            own = await w.ok("/key/generate", {"team_id": "t", "metadata": {"project": "y"}}, alice)
            assert flag not in own.json()["metadata"]
            # what is stored: proxy admins see it; a viewer and the key's owner do not
            await w.ok("/v1/chat/completions", chat("visible to admins only"), own.json()["key"])
            rows = await w.rows()
            assert any(r["messages"] and "visible" in _text(r["messages"]) for r in rows)
            for caller in (vera, alice):
                seen = await w.rows(caller)
                assert seen and all("messages" not in r and "response" not in r for r in seen)
                csv = (await w.ok("/spend/logs", key=caller, format="csv")).text
                assert "visible to admins only" not in csv and "messages" not in csv.splitlines()[0]
            admin_csv = (await w.ok("/spend/logs", format="csv")).text
            assert "visible to admins only" in admin_csv

    run(test)


# --- retention ----------------------------------------------------------------------------------------------------


def test_retention_settings_are_read() -> None:
    settings = parse_settings(
        config(
            {"maximum_spend_logs_retention_period": "90d", "maximum_spend_logs_retention_interval": "6h"},
            {"prompt_retention": "7d"},
        ),
        {},
    )
    assert settings.spend_logs_retention == 90 * 86400 and settings.spend_logs_retention_interval == 6 * 3600
    assert settings.prompt_retention == 7 * 86400
    assert not [w for w in settings.warnings if "retention" in w.path]
    defaults = parse_settings(config(), {})
    assert defaults.spend_logs_retention is None and defaults.prompt_retention == 30 * 86400
    assert defaults.spend_logs_retention_interval == 3600
    assert parse_settings(config(native={"prompt_retention": "never"}), {}).prompt_retention is None
    with pytest.raises(Exception, match="maximum_spend_logs_retention_period"):
        parse_settings(config({"maximum_spend_logs_retention_period": "30 days"}), {})
    with pytest.raises(Exception, match="prompt_retention"):
        parse_settings(config(native={"prompt_retention": "0d"}), {})


def _row(n: int, age: timedelta, now: datetime, content: bool) -> SpendLogRow:
    extra: dict[str, Any] = {"messages": [{"role": "user", "content": f"p{n}"}], "response": {"content": "r"}}
    return SpendLogRow(f"req-{n}", now - age, cost=0.25, **(extra if content else {}))


def test_retention_deletes_old_rows_and_clears_old_prompts(tmp_path: Path) -> None:
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    ages = {0: 1, 1: 6, 2: 8, 3: 29, 4: 31, 5: 88, 6: 91, 7: 400}  # days

    async def test() -> None:
        store = await open_store(None, sqlite_path=tmp_path / "r.db")
        try:
            await store.insert_spend_logs([_row(n, timedelta(days=d), now, n != 3) for n, d in ages.items()])
            retention = Retention(store, rows=90 * 86400, prompts=7 * 86400)
            assert await retention.run_once(now) == (2, 3)  # deleted: 6 and 7; cleared: 2, 4 and 5 (3 had none)
            rows = {r.request_id: r for r in await store.list_spend_logs()}
            assert sorted(rows) == [f"req-{n}" for n in range(6)]
            with_content = sorted(n for n in rows if rows[n].messages is not None)
            assert with_content == ["req-0", "req-1"]
            assert all(r.cost == 0.25 for r in rows.values())
            assert await retention.run_once(now) == (0, 0)  # idempotent
            # a second instance running at the same time changes nothing more
            assert await Retention(store, rows=90 * 86400, prompts=7 * 86400).run_once(now) == (0, 0)
            # a day later: req-1 (now 7 days old) is cleared by the windowed pass
            assert await retention.run_once(now + timedelta(days=1, seconds=1)) == (0, 1)
            # the task: a pass soon after start, then one every interval
            await store.insert_spend_logs([_row(9, timedelta(days=500), datetime.now(UTC), True)])
            task = Retention(store, rows=90 * 86400, prompts=None, interval=0.05, start_delay=0.01)
            task.start()
            for _ in range(100):
                await asyncio.sleep(0.02)
                if not await store.list_spend_logs(request_id="req-9"):
                    break
            await task.close()
            assert await store.list_spend_logs(request_id="req-9") == []
        finally:
            await store.close()

    run(test)


def test_the_gateway_runs_retention(tmp_path: Path) -> None:
    async def test() -> None:
        cfg = config({"store_prompts_in_spend_logs": True}, {"prompt_retention": "1s"})
        async with world(tmp_path, cfg) as w:
            retention = w.gw._retention
            assert retention is not None and retention.prompts == 1 and retention.rows is None
            request_id = (await w.ok("/v1/chat/completions", chat("short-lived"))).headers["x-request-id"]
            assert (await w.rows(request_id=request_id))[0]["messages"] != {}
            await asyncio.sleep(1.1)
            assert await retention.run_once() == (0, 1)
            assert (await w.rows(request_id=request_id))[0]["messages"] == {}

    run(test)
    assert b"short-lived" not in _files(tmp_path)
