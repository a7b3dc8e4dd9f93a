"""The ``lockgate`` command: ``serve``, ``check-config``, ``db upgrade``, ``keys create|list|revoke``,
``teams create|list|add-member|delete``, ``top`` (a running gateway's metrics: :mod:`lockgate.top`),
``--version``. The admin commands work on the configured database directly (no running gateway needed); running
gateways see a revoked key fail within ``user_api_key_cache_ttl``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from lockgate import __version__, top
from lockgate.config import ConfigError, Settings, load_settings
from lockgate.errors import GatewayError
from lockgate.keys import generate_key, hash_key, new_record, parse_duration
from lockgate.server import ServeOptions, UnsafeBind, check_bind, serve
from lockgate.storage.base import (
    DEFAULT_USER_ROLE,
    NotFoundError,
    StorageError,
    Store,
    TeamRecord,
    UserRecord,
    open_store,
    utc_now,
)
from lockgate.storage.migrations import LATEST_VERSION

__all__ = ["demo_config_path", "main"]


def demo_config_path() -> Path:
    return Path(str(resources.files("lockgate") / "demo" / "config.yaml"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lockgate", description="An LLM gateway, drop-in for LiteLLM Proxy.")
    parser.add_argument("--version", action="version", version=f"lockgate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("serve", help="serve the gateway")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="a LiteLLM-style config.yaml")
    source.add_argument("--demo", action="store_true", help="the built-in demo config (offline demo model)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=4000)
    run.add_argument("--workers", type=int, default=1, help="worker processes sharing the port (default 1)")
    run.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve without a master key on a non-loopback address",
    )
    run.add_argument("--request-log", action="store_true", help="one JSON line per request on stderr")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = commands.add_parser("check-config", help="validate a config and print every problem")
    check.add_argument("config", type=Path)
    db = commands.add_parser("db", help="the database").add_subparsers(dest="db_command", metavar="ACTION")
    upgrade = db.add_parser("upgrade", help="apply the schema migrations this version knows")
    upgrade.add_argument("--config", type=Path, required=True)
    keys = commands.add_parser("keys", help="virtual keys").add_subparsers(dest="keys_command", metavar="ACTION")
    create = keys.add_parser("create", help="make a key and print it (once)")
    create.add_argument("--config", type=Path, required=True)
    create.add_argument("--alias")
    create.add_argument("--models", help="comma-separated model names or wildcards (default: all)")
    create.add_argument("--duration", help="lifetime such as 30d, 12h or 1mo (default: none)")
    create.add_argument("--user-id")
    create.add_argument("--team-id")
    listing = keys.add_parser("list", help="list keys (never their values)")
    listing.add_argument("--config", type=Path, required=True)
    revoke = keys.add_parser("revoke", help="delete a key, named by its value or its hash")
    revoke.add_argument("--config", type=Path, required=True)
    revoke.add_argument("key")
    teams = commands.add_parser("teams", help="teams").add_subparsers(dest="teams_command", metavar="ACTION")
    team_create = teams.add_parser("create", help="make a team and print its id")
    team_create.add_argument("--config", type=Path, required=True)
    team_create.add_argument("--alias")
    team_create.add_argument("--models", help="comma-separated model names or wildcards (default: all)")
    team_create.add_argument("--organization-id")
    team_list = teams.add_parser("list", help="list teams")
    team_list.add_argument("--config", type=Path, required=True)
    team_add = teams.add_parser("add-member", help="add a user to a team (creating the user if needed)")
    team_add.add_argument("--config", type=Path, required=True)
    team_add.add_argument("team_id")
    team_add.add_argument("user_id")
    team_add.add_argument("--role", choices=["user", "admin"], default="user")
    team_delete = teams.add_parser("delete", help="delete a team (its keys stay, and stop seeing its models)")
    team_delete.add_argument("--config", type=Path, required=True)
    team_delete.add_argument("team_id")
    top = commands.add_parser("top", help="requests/s, latency and errors per model group of a running gateway")
    top.add_argument("--url", default="http://127.0.0.1:4000", help="the gateway (default http://127.0.0.1:4000)")
    top.add_argument("--key", help="a proxy admin or viewer key (default: LITELLM_MASTER_KEY)")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes (default 1)")
    top.add_argument("--once", action="store_true", help="print one table (two scrapes an interval apart)")
    return parser


def _print_warnings(settings_or_error: Settings | ConfigError) -> None:
    for warning in settings_or_error.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _check_config(path: Path) -> int:
    try:
        settings = load_settings(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        _print_warnings(error)
        return 1
    _print_warnings(settings)
    groups = {d.model_name for d in settings.deployments}
    print(f"{path}: OK, {len(settings.deployments)} deployment(s) in {len(groups)} model group(s)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    path = demo_config_path() if args.demo else args.config
    try:
        settings = load_settings(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        _print_warnings(error)
        return 1
    _print_warnings(settings)
    if args.demo:  # the demo's database goes where the user is, not into the installed package
        settings = dataclasses.replace(settings, sqlite_path=str(Path.cwd() / "lockgate-demo.db"))
    options = ServeOptions(
        host=args.host,
        port=args.port,
        workers=max(1, args.workers),
        allow_unauthenticated=args.allow_unauthenticated,
        request_log=args.request_log,
        log_level=args.log_level,
    )
    try:
        for warning in check_bind(settings, options):
            print(f"warning: {warning}", file=sys.stderr)
    except UnsafeBind as error:
        print(f"lockgate: refusing to start: {error}", file=sys.stderr)
        return 2
    host = f"[{options.host}]" if ":" in options.host else options.host
    print(
        f"lockgate {__version__}: {len(settings.deployments)} deployment(s) from {path}; "
        f"listening on http://{host}:{options.port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        return serve(settings, options)
    except OSError as error:
        print(f"lockgate: cannot listen on {options.host}:{options.port}: {error.strerror}", file=sys.stderr)
        return 1


async def _with_store(path: Path, action: Callable[[Store], Awaitable[int]]) -> int:
    settings = load_settings(path)
    url = settings.database_url.reveal() if settings.database_url else None
    store = await open_store(url, sqlite_path=Path(settings.sqlite_path))
    try:
        return await action(store)
    finally:
        await store.close()


def _admin(args: argparse.Namespace) -> int:
    """``db upgrade`` and ``keys ...``: one store, one action, errors as one line."""

    async def upgrade(store: Store) -> int:
        print(f"database schema is at version {LATEST_VERSION}")
        return 0

    async def create(store: Store) -> int:
        fields: dict[str, object] = {"key_alias": args.alias, "user_id": args.user_id, "team_id": args.team_id,
                                     "created_by": "cli", "updated_by": "cli"}  # fmt: skip
        if args.models:
            fields["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
        expires = parse_duration(args.duration, datetime.now(UTC)) if args.duration else None
        token = generate_key()
        await store.insert_key(new_record(token, fields, expires))
        print(token)
        print("(shown once; lockgate stores only its hash)", file=sys.stderr)
        return 0

    async def listing(store: Store) -> int:
        for record in await store.list_keys(limit=1000):
            models = ",".join(record.models) or "*"
            state = "blocked" if record.blocked else "active"
            expires = record.expires.isoformat() if record.expires else "-"
            print(
                f"{record.token_hash[:12]}  {record.key_name}  {record.key_alias or '-'}  {models}  {state}  {expires}"
            )
        return 0

    async def revoke(store: Store) -> int:
        value = args.key
        token_hash = value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else hash_key(value)
        if await store.delete_keys([token_hash]) == 0:
            print("lockgate: no such key", file=sys.stderr)
            return 1
        print("revoked")
        return 0

    async def team_create(store: Store) -> int:
        now = utc_now()
        models = tuple(m.strip() for m in (args.models or "").split(",") if m.strip())
        team = TeamRecord(
            team_id=str(uuid.uuid4()), team_alias=args.alias, organization_id=args.organization_id, models=models,
            max_budget=None, budget_duration=None, tpm_limit=None, rpm_limit=None, max_parallel_requests=None,
            metadata={}, blocked=False, created_at=now, updated_at=now,
        )  # fmt: skip
        await store.insert_team(team)
        print(team.team_id)
        return 0

    async def team_list(store: Store) -> int:
        for team in await store.list_teams(limit=1000):
            members = len(await store.list_members(team.team_id, limit=1000))
            models = ",".join(team.models) or "*"
            print(f"{team.team_id}  {team.team_alias or '-'}  {models}  {members} member(s)")
        return 0

    async def team_add(store: Store) -> int:
        if await store.get_user(args.user_id) is None:
            now = utc_now()
            await store.insert_user(
                UserRecord(
                    user_id=args.user_id, user_alias=None, user_email=None, user_role=DEFAULT_USER_ROLE, models=(),
                    max_budget=None, budget_duration=None, tpm_limit=None, rpm_limit=None, metadata={},
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip
        member = await store.add_member(args.team_id, args.user_id, args.role)
        print(f"{member.user_id} is {member.role} of {member.team_id}")
        return 0

    async def team_delete(store: Store) -> int:
        if await store.delete_teams([args.team_id]) == 0:
            print("lockgate: no such team", file=sys.stderr)
            return 1
        print("deleted")
        return 0

    actions = {("db", "upgrade"): upgrade, ("keys", "create"): create, ("keys", "list"): listing,
               ("keys", "revoke"): revoke, ("teams", "create"): team_create, ("teams", "list"): team_list,
               ("teams", "add-member"): team_add, ("teams", "delete"): team_delete}  # fmt: skip
    sub = str(getattr(args, f"{args.command}_command", None))
    action = actions.get((args.command, sub))
    if action is None:
        _parser().parse_args([args.command, "--help"])
        return 2
    try:
        return asyncio.run(_with_store(args.config, action))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    except NotFoundError as error:
        print(f"lockgate: no such {error.field}", file=sys.stderr)
        return 1
    except (StorageError, GatewayError, ValueError) as error:
        message = error.message if isinstance(error, GatewayError) else str(error)
        print(f"lockgate: {message}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "serve":
        return _serve(args)
    if args.command in ("db", "keys", "teams"):
        return _admin(args)
    if args.command == "top":
        key = args.key or os.environ.get("LITELLM_MASTER_KEY")  # (the variable config.ENVIRONMENT documents)
        return top.run(args.url, key, interval=max(0.05, args.interval), once=args.once)
    _parser().print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
