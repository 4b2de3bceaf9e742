"""The embedded database's write-ahead log stays bounded under a steady stream of writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from itemflow.db import migrate
from itemflow.db.database import CHECKPOINT_EVERY, Database
from itemflow.items import service
from itemflow.items.schemas import ItemCreate

WRITES = 5 * CHECKPOINT_EVERY


async def test_wal_restarts_under_steady_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'itemflow.db'}"
    migrate.upgrade(url)
    database = Database(url)
    sizes = []
    try:
        for n in range(WRITES):
            async with database.session(write=True) as session:
                await service.create_item(session, ItemCreate(name=f"item {n}", description="x" * 200))
            await asyncio.sleep(0)  # as between requests: the checkpoint runs meanwhile
            if n % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                sizes.append((tmp_path / "itemflow.db-wal").stat().st_size)
    finally:
        await database.dispose()
    # Restarted after each checkpoint, the WAL is reused: it stops growing after the first
    # rounds. (Racing the writes, checkpoints never caught up and it grew every round.)
    assert sizes[-1] < 1.5 * sizes[0], sizes
