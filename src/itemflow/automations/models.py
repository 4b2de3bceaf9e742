from __future__ import annotations

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from itemflow.db.base import Base, BigId, TimestampMixin


class Automation(TimestampMixin, Base):
    __tablename__ = "automations"
    # AUTOINCREMENT: SQLite never hands a deleted automation's id (and its run history) to a new one.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    # Null: the automation applies to every item. Deleting an item deletes its automations.
    item_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("items.id", ondelete="CASCADE"), index=True, default=None
    )
    code: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=5)
    memory_mb: Mapped[int] = mapped_column(Integer, default=128)
