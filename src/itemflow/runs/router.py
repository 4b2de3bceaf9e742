from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from itemflow.api.deps import AutomationId, ItemId, Pagination, RunId, get_database, reading
from itemflow.api.problems import AUTH_ERRORS, COMMON_ERRORS, problem_responses
from itemflow.auth.deps import access
from itemflow.db import Database
from itemflow.pagination import Page
from itemflow.runs import service, waiting
from itemflow.runs.schemas import ManualRun, RunFilters, RunRead, RunStatus
from itemflow.runs.worker import RunEvents
from itemflow.schemas import MAX_ID

router = APIRouter(tags=["runs"], responses=problem_responses(*COMMON_ERRORS, *AUTH_ERRORS))
OptionalId = Annotated[int | None, Query(ge=1, le=MAX_ID)]


async def get_run_events(request: Request) -> RunEvents:
    return request.app.state.run_events


@router.get("/runs", dependencies=access("runs:read"), summary="Run history, newest last")
async def list_runs(
    request: Request, page: Pagination,
    status: RunStatus | None = None, automation_id: OptionalId = None, item_id: OptionalId = None,
) -> Page[RunRead]:
    filters = RunFilters(status=status, automation_id=automation_id, item_id=item_id)
    async with reading(request) as session:
        return await service.list_runs(session, page, filters)


@router.get("/runs/{run_id}", dependencies=access("runs:read"), responses=problem_responses(404))
async def get_run(run_id: RunId, request: Request) -> RunRead:
    async with reading(request) as session:
        return await service.get_run(session, run_id)


@router.get("/automations/{automation_id}/runs", dependencies=access("runs:read"),
            summary="Runs of one automation (kept after it is deleted)")
async def list_automation_runs(automation_id: AutomationId, request: Request,
                               page: Pagination) -> Page[RunRead]:
    async with reading(request) as session:
        return await service.list_runs(session, page, RunFilters(automation_id=automation_id))


@router.get("/items/{item_id}/runs", dependencies=access("runs:read"),
            summary="Runs about one item (kept after it is deleted)")
async def list_item_runs(item_id: ItemId, request: Request, page: Pagination) -> Page[RunRead]:
    async with reading(request) as session:
        return await service.list_runs(session, page, RunFilters(item_id=item_id))


@router.post(
    "/automations/{automation_id}/run", dependencies=access("runs:write"),
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run an automation now (event `manual`)",
    responses={200: {"model": RunRead, "description": "Finished within `wait`"},
               **problem_responses(404)},
)
async def run_automation(
    automation_id: AutomationId,
    database: Annotated[Database, Depends(get_database)],
    events: Annotated[RunEvents, Depends(get_run_events)],
    response: Response,
    data: ManualRun | None = None,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for the outcome.")] = 0,
) -> RunRead:
    run = await waiting.run_automation(database, events, automation_id, data or ManualRun(), wait)
    if run.finished:
        response.status_code = status.HTTP_200_OK
    return run
