"""Fixtures for the access-control tests: real servers (uvicorn subprocesses) on real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.servers import free_port

REDIS_URL = os.environ.get("ITEMFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "auth-tests-secret-key-0123456789abcdef"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own (counters never leak between tests or runs)."""
    prefix = f"itemflow-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class Server:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `itemflow serve` subprocesses with the given ITEMFLOW_* settings; stop them after."""
    servers: list[Server] = []

    def start(env: dict[str, str] | None = None, *, data_dir: Path | None = None) -> Server:
        port = free_port()
        log = tmp_path / f"server-{port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMFLOW_")}
        full_env.update({"ITEMFLOW_DATA_DIR": str(data_dir or tmp_path / "data"),
                         "ITEMFLOW_SECRET_KEY": SECRET, "ITEMFLOW_EMBEDDED_WORKER": "false",
                         "ITEMFLOW_BOOTSTRAP_ADMIN": "false", "ITEMFLOW_LOG_LEVEL": "info"})
        full_env.update(env or {})
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "itemflow", "serve", "--port", str(port)],
                                    env=full_env, stdout=out, stderr=subprocess.STDOUT)
        server = Server(f"http://127.0.0.1:{port}", proc, log)
        servers.append(server)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {server.output()}")
            try:
                if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {server.output()}")
            time.sleep(0.05)

    yield start
    for server in servers:
        server.proc.terminate()
    for server in servers:
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
