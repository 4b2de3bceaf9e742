from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from itemflow.api.deps import AutomationId, Pagination, reading, writing
from itemflow.api.problems import AUTH_ERRORS, COMMON_ERRORS, problem_responses
from itemflow.auth.deps import access
from itemflow.automations import service
from itemflow.automations.schemas import AutomationCreate, AutomationRead, AutomationUpdate
from itemflow.pagination import Page
from itemflow.schemas import MAX_ID

router = APIRouter(prefix="/automations", tags=["automations"],
                   responses=problem_responses(*COMMON_ERRORS, *AUTH_ERRORS))
with_404 = problem_responses(404)


@router.post("", dependencies=access("automations:write"), status_code=status.HTTP_201_CREATED,
             responses={201: {"headers": {"Location": {"schema": {"type": "string"}}}}})
async def create_automation(data: AutomationCreate, request: Request,
                            response: Response) -> AutomationRead:
    async with writing(request) as session:
        automation = await service.create_automation(session, data)
    response.headers["Location"] = f"/automations/{automation.id}"
    return automation


@router.get("", dependencies=access("automations:read"))
async def list_automations(
    request: Request, page: Pagination,
    item_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    enabled: bool | None = None,
) -> Page[AutomationRead]:
    async with reading(request) as session:
        return await service.list_automations(session, page, item_id=item_id, enabled=enabled)


@router.get("/{automation_id}", dependencies=access("automations:read"), responses=with_404)
async def get_automation(automation_id: AutomationId, request: Request) -> AutomationRead:
    async with reading(request) as session:
        return await service.get_automation(session, automation_id)


@router.put("/{automation_id}", dependencies=access("automations:write"), responses=with_404,
            summary="Update an automation (partial, like PATCH)")
async def put_automation(automation_id: AutomationId, data: AutomationUpdate,
                         request: Request) -> AutomationRead:
    async with writing(request) as session:
        return await service.update_automation(session, automation_id, data)


@router.patch("/{automation_id}", dependencies=access("automations:write"), responses=with_404,
               summary="Update an automation")
async def patch_automation(automation_id: AutomationId, data: AutomationUpdate,
                           request: Request) -> AutomationRead:
    async with writing(request) as session:
        return await service.update_automation(session, automation_id, data)


@router.delete("/{automation_id}", dependencies=access("automations:write"),
                status_code=status.HTTP_204_NO_CONTENT, responses=with_404)
async def delete_automation(automation_id: AutomationId, request: Request) -> None:
    async with writing(request) as session:
        await service.delete_automation(session, automation_id)
