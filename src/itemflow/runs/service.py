"""Run history and the run queue. The runs table is both (docs/architecture.md, sections 2 and 3)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from itemflow.automations.service import get_automation_row
from itemflow.db.base import utcnow
from itemflow.errors import NotFound
from itemflow.items.models import Item
from itemflow.items.schemas import ItemRead
from itemflow.pagination import Page, PageParams, paginate
from itemflow.runs.models import Run
from itemflow.runs.schemas import ManualRun, RunFilters, RunRead
from itemflow.runs.triggers import announce, new_run


async def get_run(session: AsyncSession, run_id: int) -> RunRead:
    run = await session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    return RunRead.model_validate(run)


async def list_runs(session: AsyncSession, params: PageParams, filters: RunFilters) -> Page[RunRead]:
    stmt = select(Run)
    if filters.status is not None:
        stmt = stmt.where(Run.status == filters.status)
    if filters.automation_id is not None:
        stmt = stmt.where(Run.automation_id == filters.automation_id)
    if filters.item_id is not None:
        stmt = stmt.where(Run.item_id == filters.item_id)
    return await paginate(session, stmt, Run.id, params, RunRead)


async def start_manual_run(session: AsyncSession, automation_id: int, data: ManualRun) -> RunRead:
    automation = await get_automation_row(session, automation_id)
    item_id = data.item_id if data.item_id is not None else automation.item_id
    item = None
    if item_id is not None:
        row = await session.get(Item, item_id)
        if row is None:
            raise NotFound(f"item {item_id} does not exist")
        item = ItemRead.model_validate(row).model_dump(mode="json")
    run = new_run(automation, "manual", item_id, {"type": "manual", "item": item, "previous": None})
    session.add(run)
    await session.flush()
    await announce(session)
    return RunRead.model_validate(run)


# --- the queue: used by workers -----------------------------------------------------------


async def claim(
    session: AsyncSession, worker_id: str, lease: timedelta, *, run_id: int | None = None
) -> Run | None:
    """Take the oldest runnable queued run (or `run_id`), lease it to `worker_id`."""
    now = utcnow()
    pick = (
        select(Run.id)
        .where(Run.status == "queued", Run.available_at <= now)
        .order_by(Run.id)
        .limit(1)
        # PostgreSQL: concurrent workers skip each other's rows instead of queueing on them.
        .with_for_update(skip_locked=True)
    )
    if run_id is not None:
        pick = pick.where(Run.id == run_id)
    chosen = (await session.execute(pick)).scalar_one_or_none()
    if chosen is None:
        return None
    result = await session.execute(
        update(Run)
        .where(Run.id == chosen, Run.status == "queued")
        .values(status="running", attempt=Run.attempt + 1, started_at=now, locked_by=worker_id,
                lease_expires_at=now + lease)
        .returning(Run)
        .execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none()


async def renew_lease(session: AsyncSession, run_id: int, worker_id: str, lease: timedelta) -> bool:
    result = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running", Run.locked_by == worker_id)
        .values(lease_expires_at=utcnow() + lease)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def finish(session: AsyncSession, run_id: int, worker_id: str, outcome: dict[str, Any]) -> bool:
    """Record the outcome, if this worker still holds the run (else another took it over)."""
    now = utcnow()
    result = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running", Run.locked_by == worker_id)
        .values(**outcome, finished_at=now, locked_by=None, lease_expires_at=None)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def backoff(attempt: int, base_seconds: float = 1.0, cap_seconds: float = 60.0) -> timedelta:
    return timedelta(seconds=min(cap_seconds, base_seconds * 2 ** max(0, attempt - 1)))


async def retry_or_bury(
    session: AsyncSession, run: Run, worker_id: str, error: str, max_attempts: int
) -> str:
    """After an infrastructure failure: queue again with backoff, or `dead` after the last try."""
    if run.attempt >= max_attempts:
        outcome = {"status": "dead", "error": f"gave up after {run.attempt} attempts: {error}"}
        await finish(session, run.id, worker_id, outcome)
        return "dead"
    await session.execute(
        update(Run)
        .where(Run.id == run.id, Run.locked_by == worker_id)
        .values(status="queued", error=error, locked_by=None, lease_expires_at=None,
                available_at=utcnow() + backoff(run.attempt))
    )
    return "queued"


async def release(session: AsyncSession, run_id: int, worker_id: str) -> bool:
    """Give a run back untried (graceful shutdown): queued again, the attempt not counted."""
    result = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running", Run.locked_by == worker_id)
        .values(status="queued", attempt=Run.attempt - 1, available_at=utcnow(), locked_by=None,
                lease_expires_at=None, started_at=None)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        await announce(session)
    return result.rowcount == 1  # type: ignore[attr-defined]


async def reap_expired(session: AsyncSession, max_attempts: int) -> int:
    """Runs whose worker vanished (lease expired): queue them again, or `dead` after the last."""
    now = utcnow()
    dead = await session.execute(
        update(Run)
        .where(Run.status == "running", Run.lease_expires_at < now, Run.attempt >= max_attempts)
        .values(status="dead", finished_at=now, locked_by=None, lease_expires_at=None,
                error="the worker running it was lost on the last attempt")
    )
    requeued = await session.execute(
        update(Run)
        .where(Run.status == "running", Run.lease_expires_at < now)
        .values(status="queued", available_at=now, locked_by=None, lease_expires_at=None,
                error="the worker running it was lost; queued again")
    )
    total = dead.rowcount + requeued.rowcount  # type: ignore[attr-defined]
    if requeued.rowcount:  # type: ignore[attr-defined]
        await announce(session)
    return total
