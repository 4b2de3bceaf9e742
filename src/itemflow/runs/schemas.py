from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from itemflow.schemas import Id, InputSchema, OutputSchema

RunStatus = Literal["queued", "running", "succeeded", "failed", "timed_out", "dead"]
RunEvent = Literal["item.created", "item.updated", "item.deleted", "manual"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "dead"})


class ManualRun(InputSchema):
    item_id: Id | None = Field(default=None, description="The item the run sees as `event.item`.")


class RunRead(OutputSchema):
    id: int
    automation_id: int | None
    item_id: int | None
    event: RunEvent
    status: RunStatus
    attempt: int
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    result: Any = None
    error: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class RunFilters(InputSchema):
    status: RunStatus | None = None
    automation_id: Id | None = None
    item_id: Id | None = None
