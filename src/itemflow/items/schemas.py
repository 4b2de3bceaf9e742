from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from itemflow.schemas import InputSchema, OutputSchema, Text

Name = Annotated[Text, Field(min_length=1, max_length=200)]
Description = Annotated[Text, Field(max_length=10_000)]


class ItemCreate(InputSchema):
    name: Name
    description: Description | None = None


class ItemUpdate(InputSchema):
    """Partial update: fields not sent stay as they are; `name` cannot be cleared."""

    name: Name = Field(default=None)  # type: ignore[assignment]  # absent ok, null is 422
    description: Description | None = None


class ItemRead(OutputSchema):
    id: int
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime


class ItemChange(OutputSchema):
    """An item write and the runs it queued."""

    item: ItemRead | None
    run_ids: list[int]
