from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from itemflow.schemas import Id, InputSchema, OutputSchema, Text

ItemEvent = Literal["item.created", "item.updated", "item.deleted"]
MAX_CODE_BYTES = 64 * 1024


def _compiles(code: str) -> str:
    if len(code.encode("utf-8", "surrogatepass")) > MAX_CODE_BYTES:
        raise ValueError(f"code is larger than {MAX_CODE_BYTES} bytes")
    try:
        compile(code, "<automation>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ValueError(
            f"code does not compile: {exc.msg} (line {exc.lineno}, column {exc.offset})"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"code does not compile: {exc}") from None
    return code


def _unique(events: list[ItemEvent]) -> list[ItemEvent]:
    return list(dict.fromkeys(events))


Code = Annotated[Text, Field(min_length=1, max_length=MAX_CODE_BYTES), AfterValidator(_compiles)]
Events = Annotated[list[ItemEvent], Field(min_length=1, max_length=3), AfterValidator(_unique)]
AutomationName = Annotated[Text, Field(min_length=1, max_length=200)]
TimeoutSeconds = Annotated[int, Field(ge=1, le=60)]
MemoryMB = Annotated[int, Field(ge=32, le=1024)]


class AutomationCreate(InputSchema):
    name: AutomationName | None = None
    item_id: Id | None = Field(default=None, description="Null: runs for every item.")
    code: Code
    events: Events = Field(default_factory=lambda: ["item.updated"])
    enabled: bool = True
    timeout_seconds: TimeoutSeconds = 5
    memory_mb: MemoryMB = 128


class AutomationUpdate(InputSchema):
    """Partial update: fields not sent stay; `name` and `item_id` may be cleared with null."""

    name: AutomationName | None = None
    item_id: Id | None = None
    # absent is fine, null is a 422: these fields are required on an automation.
    code: Code = Field(default=None)  # type: ignore[assignment]
    events: Events = Field(default=None)  # type: ignore[assignment]
    enabled: bool = Field(default=None)  # type: ignore[assignment]
    timeout_seconds: TimeoutSeconds = Field(default=None)  # type: ignore[assignment]
    memory_mb: MemoryMB = Field(default=None)  # type: ignore[assignment]


class AutomationRead(OutputSchema):
    id: int
    name: str | None
    item_id: int | None
    code: str
    events: list[ItemEvent]
    enabled: bool
    timeout_seconds: int
    memory_mb: int
    created_at: datetime
    updated_at: datetime
