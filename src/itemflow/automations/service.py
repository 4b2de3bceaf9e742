"""Automation operations: session and schemas in, schemas out; the edge commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from itemflow.automations.models import Automation
from itemflow.automations.schemas import AutomationCreate, AutomationRead, AutomationUpdate
from itemflow.errors import Invalid, NotFound
from itemflow.items.models import Item
from itemflow.pagination import Page, PageParams, paginate


async def get_automation_row(session: AsyncSession, automation_id: int) -> Automation:
    automation = await session.get(Automation, automation_id)
    if automation is None:
        raise NotFound(f"automation {automation_id} does not exist")
    return automation


async def _require_item(session: AsyncSession, item_id: int | None) -> None:
    if item_id is not None and await session.get(Item, item_id) is None:
        raise Invalid(f"item {item_id} does not exist", field="item_id")


async def get_automation(session: AsyncSession, automation_id: int) -> AutomationRead:
    return AutomationRead.model_validate(await get_automation_row(session, automation_id))


async def list_automations(
    session: AsyncSession,
    params: PageParams,
    *,
    item_id: int | None = None,
    enabled: bool | None = None,
    global_only: bool = False,
) -> Page[AutomationRead]:
    stmt = select(Automation)
    if item_id is not None:
        stmt = stmt.where(Automation.item_id == item_id)
    elif global_only:
        stmt = stmt.where(Automation.item_id.is_(None))
    if enabled is not None:
        stmt = stmt.where(Automation.enabled.is_(enabled))
    return await paginate(session, stmt, Automation.id, params, AutomationRead)


async def list_item_automations(
    session: AsyncSession, item_id: int, params: PageParams
) -> Page[AutomationRead]:
    """The automations attached to one item (not the global ones)."""
    if await session.get(Item, item_id) is None:
        raise NotFound(f"item {item_id} does not exist")
    return await list_automations(session, params, item_id=item_id)


async def create_automation(session: AsyncSession, data: AutomationCreate) -> AutomationRead:
    await _require_item(session, data.item_id)
    automation = Automation(**data.model_dump())
    session.add(automation)
    await session.flush()
    return AutomationRead.model_validate(automation)


async def update_automation(
    session: AsyncSession, automation_id: int, data: AutomationUpdate
) -> AutomationRead:
    automation = await get_automation_row(session, automation_id)
    changes = data.model_dump(exclude_unset=True)
    if "item_id" in changes:
        await _require_item(session, changes["item_id"])
    for field, value in changes.items():
        setattr(automation, field, value)
    await session.flush()
    return AutomationRead.model_validate(automation)


async def delete_automation(session: AsyncSession, automation_id: int) -> None:
    await session.delete(await get_automation_row(session, automation_id))
    await session.flush()
