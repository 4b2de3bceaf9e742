"""Item events become queued runs, in the same transaction as the item change."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from itemflow.automations.models import Automation
from itemflow.db.raw import fetch_all
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


_automations = Automation.__table__.c
_runs = Run.__table__
# Every write of an item asks this: one indexed read on the write path.
_MATCHING = (
    select(_automations.id, _automations.events, _automations.code, _automations.timeout_seconds,
           _automations.memory_mb)
    .where(_automations.enabled.is_(True))
    .where(or_(_automations.item_id == bindparam("item_id"), _automations.item_id.is_(None)))
    .order_by(_automations.id)
)
_INSERT_RUN = insert(_runs).returning(_runs.c.id)

Automations = list[dict[str, Any]]


async def matching_automations(session: AsyncSession, event: str, item_id: int) -> Automations:
    """The enabled automations of this item (or of every item) that run on `event`."""
    rows = await fetch_all(session, _MATCHING, {"item_id": item_id})
    return [row for row in rows if event in row["events"]]


async def enqueue(
    session: AsyncSession, automations: Automations, event: str, item: ItemRead | None,
    previous: ItemRead | None,
) -> list[int]:
    """Queue one run of each automation for this event; their ids."""
    if not automations:
        return []
    item_id = (item or previous).id  # type: ignore[union-attr]
    payload = item_event_input(event, item, previous)
    run_ids = []
    for automation in automations:
        run_ids.append((await session.execute(_INSERT_RUN, {
            "automation_id": automation["id"], "item_id": item_id, "event": event,
            "code": automation["code"], "input": payload,
            "timeout_seconds": automation["timeout_seconds"], "memory_mb": automation["memory_mb"],
        })).scalar_one())
    await announce(session)
    return run_ids


async def enqueue_item_event(
    session: AsyncSession, event: str, item: ItemRead | None, previous: ItemRead | None
) -> list[int]:
    """Queue one run per enabled automation of this item (or of every item) for `event`."""
    item_id = (item or previous).id  # type: ignore[union-attr]
    return await enqueue(session, await matching_automations(session, event, item_id), event, item, previous)


RUNS_CHANNEL = "itemflow_runs"


async def announce(session: AsyncSession) -> None:
    """Tell workers that runs are waiting, once the transaction commits.

    In-process workers are woken by the Database's commit hook; on PostgreSQL, NOTIFY is
    delivered to LISTENing workers in other processes at commit, and never if it rolls back.
    """
    session.info["runs_queued"] = True
    if session.bind.dialect.name == "postgresql":
        await session.execute(text(f"NOTIFY {RUNS_CHANNEL}"))
