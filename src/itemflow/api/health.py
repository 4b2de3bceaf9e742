from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

import itemflow
from itemflow.api.deps import get_database
from itemflow.api.problems import problem_responses
from itemflow.db import Database
from itemflow.errors import Unavailable

router = APIRouter(tags=["health"])


class ServiceStatus(BaseModel):
    status: str
    service: str
    version: str


class Health(BaseModel):
    status: str


@router.get("/", summary="Service and version")
async def root() -> ServiceStatus:
    return ServiceStatus(status="ok", service="itemflow", version=itemflow.__version__)


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", summary="Readiness: the database (and the sandbox, if this process runs "
            "automations) answer", responses=problem_responses(503))
async def readyz(request: Request, db: Annotated[Database, Depends(get_database)]) -> Health:
    try:
        await db.ping()
    except Exception as exc:  # any failure to reach the database means "not ready"
        raise Unavailable(f"database unreachable: {type(exc).__name__}: {exc}") from None
    sandbox = getattr(request.app.state, "sandbox", None)
    if sandbox is not None and (reason := await sandbox.check()) is not None:
        raise Unavailable(f"sandbox unavailable: {reason}")
    return Health(status="ready")
