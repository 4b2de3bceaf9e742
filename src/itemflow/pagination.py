"""Keyset pagination by id: stable under concurrent inserts, O(limit) per page."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from itemflow.errors import Invalid
from itemflow.schemas import MAX_ID

MAX_LIMIT = 100
DEFAULT_LIMIT = 50


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class PageParams:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None

    def after_id(self) -> int:
        if self.cursor is None:
            return 0
        try:
            raw = json.loads(base64.urlsafe_b64decode(self.cursor.encode() + b"=="))
            after = raw["after"]
        except (binascii.Error, ValueError, TypeError, KeyError, UnicodeError):
            raise Invalid("cursor is not one this API returned", field="cursor", location="query") from None
        # Past MAX_ID no id can follow, and SQLite cannot even compare with it (overflow).
        if type(after) is not int or not 0 <= after <= MAX_ID:
            raise Invalid("cursor is not one this API returned", field="cursor", location="query")
        return after


def encode_cursor(after_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after_id}).encode()).decode().rstrip("=")


async def paginate(
    session: AsyncSession, stmt: Select[Any], id_column: Any, params: PageParams, schema: type[Any]
) -> Page[Any]:
    """Run `stmt` (a select of one ORM entity) from the cursor on, one page of `schema`."""
    stmt = stmt.where(id_column > params.after_id()).order_by(id_column).limit(params.limit + 1)
    rows = list((await session.scalars(stmt)).all())
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    next_cursor = encode_cursor(rows[-1].id) if more and rows else None
    return Page[schema](data=[schema.model_validate(r) for r in rows], next_cursor=next_cursor)
