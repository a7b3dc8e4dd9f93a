"""Run a real lockgate server process on a loopback port for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

MASTER_KEY = "sk-test-master-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    """``lockgate serve`` in a subprocess with a config written to a temporary file."""

    def __init__(
        self,
        config: str,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        master_key: str | None = MASTER_KEY,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="lockgate-test-")
        self.config_path = Path(self._dir.name) / "config.yaml"
        self.config_path.write_text(config)
        self.log_path = Path(self._dir.name) / "stderr.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.master_key = master_key
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "OPENAI_", "DATABASE_URL"))}
        if master_key:
            self.env["LITELLM_MASTER_KEY"] = master_key
        self.env.update(env or {})
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> GatewayProcess:
        command = [sys.executable, "-m", "lockgate.cli", "serve", "--config", str(self.config_path)]
        command += ["--port", str(self.port), "--request-log", *self.args]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/health/liveliness", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not start in {timeout}s:\n{self.logs()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def logs(self) -> str:
        self._log.flush() if hasattr(self, "_log") and not self._log.closed else None
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The request log lines (one JSON object per request) written so far."""
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def wait_record(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records():
                if record.get("request_id") == request_id:
                    return record
            time.sleep(0.02)
        raise AssertionError(f"no request log record for {request_id}:\n{self.logs()[-3000:]}")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"} if self.master_key else {}

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()
