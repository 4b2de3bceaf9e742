"""RemoteSandbox against a real code-runner process (uvicorn in a subprocess, real bwrap inside)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from itemflow.sandbox import Limits, RemoteSandbox, SandboxUnavailable

TOKEN = "test-runner-token-" + os.urandom(8).hex()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runner_url() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "itemflow.sandbox.runner", "--port", str(port),
                             "--token", TOKEN, "--pool-size", "1"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the code runner did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def remote(runner_url: str) -> AsyncIterator[RemoteSandbox]:
    sb = RemoteSandbox(runner_url, TOKEN)
    await sb.start()
    yield sb
    await sb.close()


async def test_remote_run(remote: RemoteSandbox) -> None:
    r = await remote.run("import sys\nprint('hi')\nresult = {'event': event, 'stdin': sys.stdin.read()}",
                         {"type": "manual"}, Limits(timeout_seconds=3))
    assert r.status == "succeeded", r
    assert r.stdout == "hi\n"
    assert r.result == {"event": {"type": "manual"}, "stdin": '{"type": "manual"}'}
    assert await remote.check() is None


async def test_remote_failure_and_timeout(remote: RemoteSandbox) -> None:
    r = await remote.run("raise KeyError('k')", {}, Limits(timeout_seconds=3))
    assert r.status == "failed" and "KeyError" in r.stderr and r.error == "exit code 1"
    r = await remote.run("while True:\n    pass", {}, Limits(timeout_seconds=0.5))
    assert r.status == "timed_out" and r.error == "timed out after 0.5s"


async def test_remote_limits_are_passed(remote: RemoteSandbox) -> None:
    r = await remote.run("print('x' * 100)", {}, Limits(timeout_seconds=3, output_bytes=10))
    assert r.stdout == "x" * 10 and r.stdout_truncated


async def test_wrong_token_is_refused(runner_url: str) -> None:
    bad = RemoteSandbox(runner_url, "wrong")
    try:
        with pytest.raises(SandboxUnavailable, match="401"):
            await bad.run("print(1)", {}, Limits())
    finally:
        await bad.close()
    async with httpx.AsyncClient(base_url=runner_url) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = await client.post("/run", json={"code": "print(1)"}, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        response = await client.post("/run", json={"code": "print(1)"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200 and response.json()["stdout"] == "1\n"


async def test_unreachable_runner() -> None:
    sb = RemoteSandbox(f"http://127.0.0.1:{_free_port()}", TOKEN)
    await sb.start()
    try:
        assert "unreachable" in (await sb.check() or "")
        with pytest.raises(SandboxUnavailable, match="unreachable"):
            await sb.run("print(1)", {}, Limits())
    finally:
        await sb.close()
