from __future__ import annotations

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from itemflow.db.base import Base, BigId, TimestampMixin


class Item(TimestampMixin, Base):
    __tablename__ = "items"
    # AUTOINCREMENT: SQLite never hands a deleted item's id (and its run history) to a new one.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
