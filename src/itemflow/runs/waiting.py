"""Start a manual run and wait for it: two units of work with a wait between them."""

from __future__ import annotations

import asyncio

from itemflow.db import Database
from itemflow.runs import service
from itemflow.runs.schemas import ManualRun, RunRead
from itemflow.runs.worker import RunEvents

# Runs finished by a worker in another process are not announced here: look again this often.
POLL_SECONDS = 0.2


async def wait_for_run(database: Database, events: RunEvents, run_id: int, timeout: float) -> RunRead:
    """The run once it has finished, or as it stands when `timeout` runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with database.session() as session:
            run = await service.get_run(session, run_id)
        remaining = deadline - loop.time()
        if run.finished or remaining <= 0:
            return run
        await events.wait(run_id, min(remaining, POLL_SECONDS))


async def run_automation(
    database: Database, events: RunEvents, automation_id: int, data: ManualRun, wait: float
) -> RunRead:
    async with database.session(write=True) as session:
        run = await service.start_manual_run(session, automation_id, data)
    if wait <= 0:
        return run
    return await wait_for_run(database, events, run.id, wait)
