"""The private code-runner service: POST /run executes code in this machine's sandbox.

``create_runner_app(sandbox, token)`` is what the CLI (``itemflow runner``) serves; for tests and
ad-hoc use, ``python -m itemflow.sandbox.runner --port P --token T`` serves a LocalSandbox.
POST /run needs ``Authorization: Bearer <token>`` (compared in constant time).
"""

from __future__ import annotations

import argparse
import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from itemflow.sandbox.base import Limits, Sandbox, SandboxResult, SandboxUnavailable


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_seconds: float = Field(default=Limits.timeout_seconds, gt=0, le=300)
    memory_mb: int = Field(default=Limits.memory_mb, ge=16, le=4096)
    output_bytes: int = Field(default=Limits.output_bytes, ge=1, le=16 * 1024 * 1024)
    max_processes: int = Field(default=Limits.max_processes, ge=1, le=1024)
    max_file_bytes: int = Field(default=Limits.max_file_bytes, ge=1, le=1024 * 1024 * 1024)
    tmp_bytes: int = Field(default=Limits.tmp_bytes, ge=1, le=1024 * 1024 * 1024)


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=1024 * 1024)
    input: dict[str, Any] = Field(default_factory=dict)
    limits: LimitsIn = Field(default_factory=LimitsIn)


class RunOut(BaseModel):
    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    result: Any
    error: str | None
    duration_ms: float


_bearer = HTTPBearer(auto_error=False)


def create_runner_app(sandbox: Sandbox, token: str) -> FastAPI:
    if not token:
        raise ValueError("the code runner needs a token (ITEMFLOW_RUNNER_TOKEN)")
    expected = token.encode()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await sandbox.start()
        except SandboxUnavailable:
            pass  # /healthz and /run say why; the process stays up so the operator can see it
        try:
            yield
        finally:
            await sandbox.close()

    def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or missing bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="itemflow code runner", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(SandboxUnavailable)
    async def unavailable(request: Request, exc: SandboxUnavailable) -> JSONResponse:
        return JSONResponse({"detail": f"sandbox unavailable: {exc}"}, status_code=503)

    @app.post("/run", response_model=RunOut, dependencies=[Depends(authorized)])
    async def run(body: RunIn) -> dict[str, Any]:
        result: SandboxResult = await sandbox.run(body.code, body.input, Limits(**body.limits.model_dump()))
        return result.to_dict()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Unauthenticated, for the platform's probes: says only whether the sandbox works."""
        reason = await sandbox.check()
        if reason is not None:
            return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from itemflow.sandbox.local import LocalSandbox

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default=os.environ.get("ITEMFLOW_RUNNER_TOKEN", ""))
    parser.add_argument("--pool-size", type=int, default=None)
    args = parser.parse_args(argv)
    app = create_runner_app(LocalSandbox(pool_size=args.pool_size), args.token)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
