"""Request-scoped dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from itemflow.db import Database
from itemflow.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageParams
from itemflow.schemas import MAX_ID


async def get_database(request: Request) -> Database:
    return request.app.state.database


DatabaseDep = Annotated[Database, Depends(get_database)]


async def _read_session(db: Annotated[Database, Depends(get_database)]) -> AsyncIterator[AsyncSession]:
    async with db.session() as session:
        yield session


async def _write_session(db: Annotated[Database, Depends(get_database)]) -> AsyncIterator[AsyncSession]:
    async with db.session(write=True) as session:
        yield session


# scope="function": the unit of work commits when the endpoint returns, before the response
# is sent, so a client never sees a success that was not stored.
ReadSession = Annotated[AsyncSession, Depends(_read_session, scope="function")]
WriteSession = Annotated[AsyncSession, Depends(_write_session, scope="function")]


async def _page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


Pagination = Annotated[PageParams, Depends(_page_params)]


def id_path(what: str) -> object:
    return Path(ge=1, le=MAX_ID, description=f"The {what}'s id.")


ItemId = Annotated[int, id_path("item")]
AutomationId = Annotated[int, id_path("automation")]
RunId = Annotated[int, id_path("run")]
