"""The runs table as a queue: claims, leases, the reaper, retries and `dead`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from itemflow.automations.schemas import AutomationCreate
from itemflow.automations.service import create_automation
from itemflow.db import Database
from itemflow.db.base import utcnow
from itemflow.items.schemas import ItemCreate
from itemflow.items.service import create_item
from itemflow.runs import service
from itemflow.runs.models import Run

LEASE = timedelta(seconds=30)


@pytest.fixture
async def db(database_url):
    database = Database(database_url)
    yield database
    await database.dispose()


async def queue_runs(db: Database, n: int) -> list[int]:
    async with db.session(write=True) as s:
        await create_automation(s, AutomationCreate(code="pass", events=["item.created"]))
    ids = []
    for i in range(n):
        async with db.session(write=True) as s:
            ids += (await create_item(s, ItemCreate(name=f"i{i}"))).run_ids
    return ids


async def expire_lease(db: Database, run_id: int) -> None:
    async with db.session(write=True) as s:
        await s.execute(update(Run).where(Run.id == run_id)
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))


async def test_claims_are_exclusive_and_in_order(db):
    ids = await queue_runs(db, 3)
    claimed = []
    for worker in ("w1", "w2", "w3"):
        async with db.session(write=True) as s:
            run = await service.claim(s, worker, LEASE)
            claimed.append((run.id, run.locked_by, run.status, run.attempt))
    assert claimed == [(ids[0], "w1", "running", 1), (ids[1], "w2", "running", 1),
                       (ids[2], "w3", "running", 1)]
    async with db.session(write=True) as s:
        assert await service.claim(s, "w4", LEASE) is None


async def test_expired_lease_is_requeued_then_dead_after_last_attempt(db):
    [run_id] = await queue_runs(db, 1)
    for attempt in (1, 2):
        async with db.session(write=True) as s:
            run = await service.claim(s, "lost-worker", LEASE)
            assert (run.id, run.attempt) == (run_id, attempt)
        await expire_lease(db, run_id)
        async with db.session(write=True) as s:
            assert await service.reap_expired(s, max_attempts=2) == 1
            status = (await service.get_run(s, run_id)).status
        assert status == ("queued" if attempt == 1 else "dead")
    async with db.session() as s:
        run = await service.get_run(s, run_id)
    assert run.status == "dead" and "lost" in run.error and run.finished_at


async def test_a_worker_that_lost_its_lease_cannot_overwrite(db):
    [run_id] = await queue_runs(db, 1)
    async with db.session(write=True) as s:
        await service.claim(s, "slow", LEASE)
    await expire_lease(db, run_id)
    async with db.session(write=True) as s:
        await service.reap_expired(s, max_attempts=3)
        run = await service.claim(s, "fresh", LEASE)
        assert run.attempt == 2
    async with db.session(write=True) as s:
        assert not await service.finish(s, run_id, "slow", {"status": "failed"})
        assert await service.finish(s, run_id, "fresh", {"status": "succeeded"})
        assert (await service.get_run(s, run_id)).status == "succeeded"


async def test_retry_backs_off_then_buries(db):
    [run_id] = await queue_runs(db, 1)
    async with db.session(write=True) as s:
        run = await service.claim(s, "w", LEASE)
        assert await service.retry_or_bury(s, run, "w", "runner down", max_attempts=2) == "queued"
    async with db.session(write=True) as s:
        # backing off: not claimable yet
        assert await service.claim(s, "w", LEASE) is None
        await s.execute(update(Run).where(Run.id == run_id).values(available_at=utcnow()))
    async with db.session(write=True) as s:
        run = await service.claim(s, "w", LEASE)
        assert await service.retry_or_bury(s, run, "w", "runner down", max_attempts=2) == "dead"
        final = await service.get_run(s, run_id)
    assert final.status == "dead" and "runner down" in final.error
    assert service.backoff(1) < service.backoff(3) <= timedelta(seconds=60)
