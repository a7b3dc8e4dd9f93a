"""The ``lockgate`` command: ``serve``, ``check-config``, ``--version``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from lockgate import __version__
from lockgate.config import ConfigError, Settings, load_settings
from lockgate.server import ServeOptions, UnsafeBind, check_bind, serve

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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "serve":
        return _serve(args)
    _parser().print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
