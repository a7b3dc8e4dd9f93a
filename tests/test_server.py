"""The server process: SIGTERM drains in-flight streams and refuses new connections."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx

from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import GatewayProcess


def test_sigterm_lets_streams_finish_and_refuses_new_connections(fake_openai: FakeOpenAI) -> None:
    config = (
        "model_list:\n  - model_name: slow\n    litellm_params:\n      model: openai/fault-slowstream-250\n"
        f"      api_base: {fake_openai.url}/v1\n      api_key: os.environ/UPSTREAM_KEY\n"
    )
    gateway = GatewayProcess(config, env={"UPSTREAM_KEY": UPSTREAM_KEY}).start()
    received: list[bytes] = []
    first = threading.Event()
    finished = threading.Event()

    def stream() -> None:
        body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "one two three four"}]}
        with httpx.stream(
            "POST", gateway.url + "/v1/chat/completions", json=body, headers=gateway.headers(), timeout=20
        ) as response:
            for chunk in response.iter_raw():
                received.append(chunk)
                first.set()
        finished.set()

    worker = threading.Thread(target=stream, daemon=True)
    try:
        worker.start()
        assert first.wait(10), "no first chunk"
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        refused = False
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not refused:
            try:
                socket.create_connection(("127.0.0.1", gateway.port), timeout=0.5).close()
                time.sleep(0.05)
            except OSError:
                refused = True
        assert refused, "new connections are still accepted after SIGTERM"
        assert not finished.is_set(), "the stream should still be running while draining"
        assert finished.wait(15), "the in-flight stream did not finish"
        assert b"".join(received).endswith(b"data: [DONE]\n\n")
        assert gateway.proc.wait(10) == 0
    finally:
        gateway.stop()
