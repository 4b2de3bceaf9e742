"""A unit of work is all or nothing, whether its statements went through the ORM or were
compiled statements on its connection (db/raw.py), on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from itemflow import runtime
from itemflow.auth.models import User
from itemflow.items import service
from itemflow.items.models import Item
from itemflow.items.schemas import ItemCreate
from itemflow.settings import Settings


async def _names(database) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    async with database.session() as session:
        names = list((await session.execute(select(Item.name).order_by(Item.id))).scalars())
        users = (await session.execute(select(func.count()).select_from(User))).scalar_one()
    return names, users


async def test_a_failed_unit_of_work_leaves_nothing_behind(settings: Settings) -> None:
    database = runtime.build_database(settings)
    try:
        async with database.session(write=True) as session:
            session.add(User(username="ann", password_hash="x", scopes=[]))

        with pytest.raises(IntegrityError):  # fails at an explicit flush
            async with database.session(write=True) as session:
                await service.create_item(session, ItemCreate(name="lost 1"))
                session.add(User(username="ann", password_hash="y", scopes=[]))
                await session.flush()
        with pytest.raises(IntegrityError):  # fails when the unit of work ends
            async with database.session(write=True) as session:
                await service.create_item(session, ItemCreate(name="lost 2"))
                session.add(User(username="ann", password_hash="z", scopes=[]))
        with pytest.raises(RuntimeError):  # the caller fails after a compiled write
            async with database.session(write=True) as session:
                await service.create_item(session, ItemCreate(name="lost 3"))
                raise RuntimeError("boom")

        async with database.session(write=True) as session:  # and the next one works
            await service.create_item(session, ItemCreate(name="kept"))
        assert await _names(database) == (["kept"], 1)
    finally:
        await database.dispose()
