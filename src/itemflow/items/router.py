from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from itemflow.api.deps import ItemId, Pagination, reading, writing
from itemflow.api.problems import AUTH_ERRORS, COMMON_ERRORS, problem_responses
from itemflow.auth.deps import access
from itemflow.automations import service as automations
from itemflow.automations.schemas import AutomationRead
from itemflow.items import service
from itemflow.items.schemas import ItemChange, ItemCreate, ItemRead, ItemUpdate
from itemflow.pagination import Page
from itemflow.schemas import Text

router = APIRouter(prefix="/items", tags=["items"], responses=problem_responses(*COMMON_ERRORS, *AUTH_ERRORS))
with_404 = problem_responses(404)
RUN_IDS_HEADER = "Itemflow-Run-Ids"
_run_ids_doc = {RUN_IDS_HEADER: {"description": "Ids of the runs this change queued, comma-separated.",
                                 "schema": {"type": "string"}}}


def _report(change: ItemChange, response: Response) -> None:
    if change.run_ids:
        response.headers[RUN_IDS_HEADER] = ",".join(map(str, change.run_ids))


@router.post("", dependencies=access("items:write"), status_code=status.HTTP_201_CREATED, response_model=ItemRead,
             responses={201: {"headers": {"Location": {"schema": {"type": "string"}},
                                          **_run_ids_doc}}})
async def create_item(data: ItemCreate, request: Request, response: Response) -> ItemRead:
    async with writing(request) as session:
        change = await service.create_item(session, data)
    assert change.item is not None
    response.headers["Location"] = f"/items/{change.item.id}"
    _report(change, response)
    return change.item


@router.get("", dependencies=access("items:read"))
async def list_items(
    request: Request, page: Pagination,
    q: Annotated[Text | None, Query(max_length=200, description="Search name and description.")] = None,
) -> Page[ItemRead]:
    async with reading(request) as session:
        return await service.list_items(session, page, q)


@router.get("/{item_id}", dependencies=access("items:read"), responses=with_404)
async def get_item(item_id: ItemId, request: Request) -> ItemRead:
    # The hottest route: the database straight from app state (a dependency costs more here
    # than the read itself).
    return await service.read_item(request.app.state.database, item_id)


async def _update(item_id: int, data: ItemUpdate, request: Request, response: Response) -> ItemRead:
    async with writing(request) as session:
        change = await service.update_item(session, item_id, data)
    _report(change, response)
    assert change.item is not None
    return change.item


update_doc = {**with_404, 200: {"headers": _run_ids_doc}}


@router.put("/{item_id}", dependencies=access("items:write"), responses=update_doc,
            summary="Update an item (partial, like PATCH)")
async def put_item(item_id: ItemId, data: ItemUpdate, request: Request,
                   response: Response) -> ItemRead:
    return await _update(item_id, data, request, response)


@router.patch("/{item_id}", dependencies=access("items:write"), responses=update_doc, summary="Update an item")
async def patch_item(item_id: ItemId, data: ItemUpdate, request: Request,
                     response: Response) -> ItemRead:
    return await _update(item_id, data, request, response)


@router.delete("/{item_id}", dependencies=access("items:write"), status_code=status.HTTP_204_NO_CONTENT,
               responses={**with_404, 204: {"headers": _run_ids_doc}})
async def delete_item(item_id: ItemId, request: Request) -> Response:
    async with writing(request) as session:
        change = await service.delete_item(session, item_id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _report(change, response)
    return response


@router.get("/{item_id}/automations", dependencies=access("automations:read"), responses=with_404,
            summary="The automations attached to this item (not the global ones)")
async def list_item_automations(item_id: ItemId, request: Request,
                                page: Pagination) -> Page[AutomationRead]:
    async with reading(request) as session:
        return await automations.list_item_automations(session, item_id, page)
