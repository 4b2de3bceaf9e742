"""RemoteSandbox on Cloud Run: an ID token for the runner's URL in X-Serverless-Authorization.

Google's metadata server cannot exist here, so a stand-in serves the one endpoint used; the
runner is a real HTTP server recording what it received."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from itemflow.sandbox import Limits, RemoteSandbox, SandboxUnavailable
from tests.servers import serve_in_thread


@pytest.fixture
def metadata_and_runner():
    seen: dict[str, list] = {"audiences": [], "run_headers": []}
    metadata = FastAPI()

    @metadata.get("/identity")
    async def identity(request: Request, audience: str) -> PlainTextResponse:
        assert request.headers.get("metadata-flavor") == "Google"
        seen["audiences"].append(audience)
        return PlainTextResponse(f"id-token-for-{audience}")

    runner = FastAPI()

    @runner.post("/run")
    async def run(request: Request) -> dict:
        seen["run_headers"].append(dict(request.headers))
        return {"status": "succeeded", "exit_code": 0, "stdout": "ok\n", "stderr": "",
                "stdout_truncated": False, "stderr_truncated": False, "result": None,
                "error": None, "duration_ms": 1.0}

    with serve_in_thread(metadata) as meta_url, serve_in_thread(runner) as runner_url:
        yield meta_url, runner_url, seen


async def test_id_token_sent_beside_the_runner_token_and_reused(metadata_and_runner):
    meta_url, runner_url, seen = metadata_and_runner
    sb = RemoteSandbox(runner_url, "runner-secret", google_id_token=True, metadata_url=f"{meta_url}/identity")
    await sb.start()
    try:
        for _ in range(3):
            assert (await sb.run("print('ok')", {}, Limits())).status == "succeeded"
    finally:
        await sb.close()
    assert seen["audiences"] == [runner_url]  # fetched once, reused
    headers = seen["run_headers"][0]
    assert headers["x-serverless-authorization"] == f"Bearer id-token-for-{runner_url}"
    assert headers["authorization"] == "Bearer runner-secret"


async def test_no_metadata_server_is_a_transient_unavailability(metadata_and_runner):
    _, runner_url, _ = metadata_and_runner
    sb = RemoteSandbox(runner_url, "t", google_id_token=True, metadata_url="http://127.0.0.1:9/identity")
    await sb.start()
    try:
        with pytest.raises(SandboxUnavailable) as info:
            await sb.run("print(1)", {}, Limits())
        assert info.value.transient and "ID token" in str(info.value)
    finally:
        await sb.close()
