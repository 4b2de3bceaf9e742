from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from itemflow.db.base import Base, BigId, StoredJSON, StoredText, UTCDateTime, utcnow


class Run(Base):
    """One execution of an automation: both the job queue and the run history."""

    __tablename__ = "runs"
    __table_args__ = (
        # The queue's claim query: oldest available queued run first.
        Index("ix_runs_claim", "status", "available_at", "id"),
        Index("ix_runs_automation_id", "automation_id", "id"),
        Index("ix_runs_item_id", "item_id", "id"),
        # AUTOINCREMENT: SQLite never hands a deleted run's id to a new one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign keys: a run's record outlives its automation and its item.
    automation_id: Mapped[int | None] = mapped_column(BigId)
    item_id: Mapped[int | None] = mapped_column(BigId)
    event: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(Text)
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)

    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    # What the run produced (user code can make any of it): stored so every reader can serve it.
    stdout: Mapped[str] = mapped_column(StoredText, default="")
    stderr: Mapped[str] = mapped_column(StoredText, default="")
    stdout_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    stderr_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    result: Mapped[Any] = mapped_column(StoredJSON, nullable=True, default=None)
    error: Mapped[str | None] = mapped_column(StoredText, default=None)

    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    duration_ms: Mapped[float | None] = mapped_column(Float, default=None)

    # Worker lease: who holds the run and until when (renewed by a heartbeat).
    locked_by: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
