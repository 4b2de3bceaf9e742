"""Item events become queued runs, in the same transaction as the item change."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from itemflow.automations.models import Automation
from itemflow.runs.models import Run

if TYPE_CHECKING:
    from itemflow.items.schemas import ItemRead


def item_event_input(event: str, item: ItemRead | None, previous: ItemRead | None) -> dict[str, Any]:
    return {
        "type": event,
        "item": item.model_dump(mode="json") if item else None,
        "previous": previous.model_dump(mode="json") if previous else None,
    }


def new_run(automation: Automation, event: str, item_id: int | None, payload: dict[str, Any]) -> Run:
    return Run(
        automation_id=automation.id,
        item_id=item_id,
        event=event,
        code=automation.code,
        input=payload,
        timeout_seconds=automation.timeout_seconds,
        memory_mb=automation.memory_mb,
    )


async def enqueue_item_event(
    session: AsyncSession, event: str, item: ItemRead | None, previous: ItemRead | None
) -> list[int]:
    """Queue one run per enabled automation of this item (or of every item) for `event`."""
    item_id = (item or previous).id  # type: ignore[union-attr]
    automations = await session.scalars(
        select(Automation)
        .where(Automation.enabled.is_(True))
        .where(or_(Automation.item_id == item_id, Automation.item_id.is_(None)))
        .order_by(Automation.id)
    )
    matching = [a for a in automations if event in a.events]
    if not matching:
        return []
    payload = item_event_input(event, item, previous)
    runs = [new_run(a, event, item_id, payload) for a in matching]
    session.add_all(runs)
    await session.flush()
    await announce(session)
    return [r.id for r in runs]


RUNS_CHANNEL = "itemflow_runs"


async def announce(session: AsyncSession) -> None:
    """Tell workers that runs are waiting, once the transaction commits.

    In-process workers are woken by the Database's commit hook; on PostgreSQL, NOTIFY is
    delivered to LISTENing workers in other processes at commit, and never if it rolls back.
    """
    session.info["runs_queued"] = True
    if session.bind.dialect.name == "postgresql":
        await session.execute(text(f"NOTIFY {RUNS_CHANNEL}"))
