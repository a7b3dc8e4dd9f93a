"""The real Claude Code CLI for end-to-end tests: a pinned install, a recording tap in front of the gateway, a runner.

* :func:`claude_binary` installs the exact version pinned in ``tests/e2e/package.json`` (and its
  ``package-lock.json``) into ``.cache/claude-code/`` with ``npm ci`` and returns the runnable ``claude``. It is
  idempotent (a stamp of the pinned files plus ``claude --version``), bounded by a timeout and serialised with a
  file lock, so parallel test processes neither race nor install twice.
* :class:`Tap` is a tiny recording HTTP pass-through: the CLI talks to the tap, the tap to lockgate. It records
  exactly what the CLI sent (headers such as ``X-Claude-Code-Session-Id``, the body) and streams every response back
  unchanged as it arrives, so the CLI sees the gateway as is.
* :func:`run_claude` runs ``claude -p ... --output-format stream-json --verbose`` in a scrubbed environment (nothing
  inherited: no ``ANTHROPIC_API_KEY``, no proxies) with a throwaway ``HOME`` / ``CLAUDE_CONFIG_DIR``, bounded by a
  timeout that kills the whole process group.

npm installs with ``--ignore-scripts`` and the package's own ``install.cjs`` (its postinstall: it links the native
``-linux-x64`` binary over the ``bin/claude.exe`` placeholder) is run explicitly, whatever npm's script policy is.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache" / "claude-code"
PACKAGE = "@anthropic-ai/claude-code"
PINNED_FILES = ("package.json", "package-lock.json")
INSTALL_TIMEOUT = 600.0
_STAMP = ".lockgate-installed"
#: Headers a pass-through must not copy (the tap's own server sets the framing; bodies pass still encoded).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer"})


class InstallError(RuntimeError):
    """The pinned Claude Code could not be installed (npm or node missing, npm failed, wrong version)."""


def pinned_version() -> str:
    """The exact ``@anthropic-ai/claude-code`` version in ``tests/e2e/package.json``."""
    manifest = json.loads((HERE / "package.json").read_text())
    return str(manifest["dependencies"][PACKAGE])


def _pin_digest() -> str:
    digest = hashlib.sha256()
    for name in PINNED_FILES:
        digest.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    return digest.hexdigest()


def installed_version(binary: Path, timeout: float = 30.0) -> str | None:
    """``claude --version``'s version (``"2.1.330 (Claude Code)"`` -> ``"2.1.330"``), None if it does not run."""
    if not binary.is_file():
        return None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(binary.parent), "DISABLE_AUTOUPDATER": "1"}
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = done.stdout.split()
    return words[0] if done.returncode == 0 and words else None


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout`` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise InstallError(f"timed out after {timeout:.0f}s waiting for the install lock {path}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], cwd: Path, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise InstallError(f"install timed out before {command[:2]}")
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=remaining, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"{' '.join(command)} timed out after {remaining:.0f}s") from exc
    if done.returncode != 0:
        raise InstallError(
            f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


def claude_binary(cache: Path = CACHE, timeout: float = INSTALL_TIMEOUT) -> Path:
    """Install the pinned Claude Code into ``cache`` (once) and return the runnable ``claude`` binary.

    Skips the install when ``cache`` holds an install of the same ``package.json`` / ``package-lock.json`` whose
    binary reports the pinned version. Raises :class:`InstallError` on any failure.
    """
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise InstallError("Claude Code needs node and npm on PATH")
    version = pinned_version()
    package_dir = cache / "node_modules" / PACKAGE
    binary = package_dir / "bin" / "claude.exe"
    wanted = _pin_digest()
    deadline = time.monotonic() + timeout
    with _file_lock(cache.parent / "claude-code.lock", timeout):
        stamp = cache / _STAMP
        if stamp.is_file() and stamp.read_text() == wanted and installed_version(binary) == version:
            return binary
        cache.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        for name in PINNED_FILES:
            shutil.copyfile(HERE / name, cache / name)
        _run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], cache, deadline)
        _run([node, "install.cjs"], package_dir, deadline)  # links the native binary over bin/claude.exe
        found = installed_version(binary)
        if found != version:
            raise InstallError(f"{binary} reports version {found!r}, pinned {version!r}")
        stamp.write_text(wanted)
        return binary


# -- the tap -----------------------------------------------------------------------------------------------


@dataclass
class TappedRequest:
    """One request as the CLI sent it."""

    method: str
    path_qs: str  # path and query as sent, e.g. ``/v1/messages?beta=true``
    headers: dict[str, str]  # lower-cased names
    json: Any  # the parsed body (None when empty or not JSON)


class Tap:
    """A recording HTTP pass-through on 127.0.0.1 to ``target`` (see the module docstring)."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.requests: list[TappedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def recorded(self) -> list[TappedRequest]:
        with self._lock:
            return list(self.requests)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def start(self) -> Tap:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="claude-code-tap", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(sock), loop).result(timeout=10)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Tap:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _serve(self, sock: socket.socket) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=None, sock_read=120), auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        parsed: Any = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(body) if body else None
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            self.requests.append(TappedRequest(request.method, request.path_qs, headers, parsed))
        forward = {k: v for k, v in request.headers.items() if k.lower() not in ("host", *_HOP_BY_HOP)}
        assert self._session is not None
        async with self._session.request(
            request.method, self.target + request.path_qs, data=body, headers=forward, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


# -- running the CLI ---------------------------------------------------------------------------------------


@dataclass
class ClaudeRun:
    """One finished ``claude -p`` run."""

    returncode: int
    events: list[dict[str, Any]]  # the stream-json lines, parsed
    stdout: str
    stderr: str
    seconds: float
    env: dict[str, str] = field(repr=False)

    @property
    def result(self) -> dict[str, Any]:
        """The final ``{"type": "result", ...}`` event."""
        results = [e for e in self.events if e.get("type") == "result"]
        if not results:
            raise AssertionError(f"no result event (exit {self.returncode}):\n{self.stdout[-3000:]}\n{self.stderr}")
        return results[-1]

    @property
    def init(self) -> dict[str, Any]:
        """The ``{"type": "system", "subtype": "init", ...}`` event."""
        return next(e for e in self.events if e.get("type") == "system" and e.get("subtype") == "init")

    def blocks(self, role: str, kind: str) -> list[dict[str, Any]]:
        """Every content block of type ``kind`` in the ``assistant`` / ``user`` events."""
        out: list[dict[str, Any]] = []
        for event in self.events:
            if event.get("type") == role:
                content = event.get("message", {}).get("content")
                out.extend(b for b in content or [] if isinstance(b, dict) and b.get("type") == kind)
        return out


def claude_env(home: Path, *, base_url: str, token: str, model: str | None) -> dict[str, str]:
    """A scrubbed environment for the CLI: nothing is inherited but ``PATH`` (so no API key, no proxy)."""
    (home / "home").mkdir(parents=True, exist_ok=True)
    (home / "config").mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home / "home"),
        "CLAUDE_CONFIG_DIR": str(home / "config"),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": token,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    if model is not None:
        env["ANTHROPIC_MODEL"] = model
    return env


def run_claude(
    binary: Path, prompt: str, *, cwd: Path, env: dict[str, str], args: tuple[str, ...] = (), timeout: float = 90.0
) -> ClaudeRun:
    """``claude -p <prompt> --output-format stream-json --verbose <args>``; kills the process group on timeout."""
    command = [str(binary), "-p", prompt, "--output-format", "stream-json", "--verbose", *args]
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"claude did not finish in {timeout}s:\n{stdout[-3000:]}\n{stderr[-3000:]}") from None
    events: list[dict[str, Any]] = []
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return ClaudeRun(proc.returncode, events, stdout, stderr, time.monotonic() - started, env)
