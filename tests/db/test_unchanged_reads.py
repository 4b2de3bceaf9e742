"""Database.fetch_one_unless_changed: rows from memory while nothing was committed, a fresh
read as soon as any connection (this process's writer, another process) commits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select

from itemflow import runtime
from itemflow.db import migrate
from itemflow.items.models import Item
from itemflow.items.schemas import ItemCreate, ItemUpdate
from itemflow.items.service import create_item, update_item
from itemflow.settings import Settings

_items = Item.__table__
_BY_ID = select(_items.c.id, _items.c.name).where(_items.c.id == bindparam("item_id"))


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """The embedded database only: on PostgreSQL the method is plain fetch_one."""
    url = f"sqlite:///{tmp_path / 'itemflow.db'}"
    migrate.upgrade(url)
    return Settings(_env_file=None, data_dir=tmp_path, database_url=url)  # type: ignore[call-arg]


async def test_rows_are_kept_until_any_connection_commits(sqlite_settings: Settings) -> None:
    database = runtime.build_database(sqlite_settings)
    try:
        async with database.session(write=True) as session:
            item = (await create_item(session, ItemCreate(name="first"))).item
        assert item is not None
        selects: list[str] = []
        database._reader_connection().set_trace_callback(
            lambda sql: selects.append(sql) if sql.lstrip().upper().startswith("SELECT") else None)
        params = {"item_id": item.id}

        for _ in range(3):
            assert (await database.fetch_one_unless_changed(_BY_ID, params))["name"] == "first"
        assert len(selects) == 1  # read once, then from memory

        async with database.session(write=True) as session:  # this process's writer commits
            await update_item(session, item.id, ItemUpdate(name="second"))
        assert (await database.fetch_one_unless_changed(_BY_ID, params))["name"] == "second"
        assert len(selects) == 2

        db_file = Path(sqlite_settings.resolved_database_url.removeprefix("sqlite:///"))
        with sqlite3.connect(db_file) as other:  # another process's connection, say the CLI
            other.execute("UPDATE items SET name = 'third' WHERE id = ?", (item.id,))
        assert (await database.fetch_one_unless_changed(_BY_ID, params))["name"] == "third"
        assert (await database.fetch_one_unless_changed(_BY_ID, params))["name"] == "third"
        assert len(selects) == 3

        assert await database.fetch_one_unless_changed(_BY_ID, {"item_id": 10**9}) is None
        assert await database.fetch_one_unless_changed(_BY_ID, {"item_id": 10**9}) is None
        assert len(selects) == 5  # a missing row is looked up every time, never kept
    finally:
        await database.dispose()
