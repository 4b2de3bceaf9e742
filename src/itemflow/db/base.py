from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints so that Alembic migrations are stable across databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, but INTEGER on SQLite, where only "INTEGER PRIMARY KEY" is the rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes everywhere; SQLite stores them naive, so re-attach UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(text: str) -> str:
    try:
        text.encode("utf-8")  # far cheaper than the search, and nearly all text has none
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def storable_text(text: str) -> str:
    """`text` with what no database or JSON encoder takes as U+FFFD: unpaired surrogates (not
    UTF-8; a JSON "\\ud800" escape parses to one) and NUL (PostgreSQL text cannot hold it)."""
    return _no_surrogates(text.replace("\x00", "\ufffd"))


def storable_json(value: Any) -> Any:
    """`value` with every unpaired surrogate in its strings and keys as U+FFFD (NUL is valid
    JSON and is kept: the JSON column stores it escaped)."""
    if isinstance(value, str):
        return _no_surrogates(value)
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    if isinstance(value, dict):
        return {storable_json(k): storable_json(v) for k, v in value.items()}
    return value


class StoredText(TypeDecorator[str]):
    """Text that untrusted code produced: stored so that every reader can serve it."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        return storable_text(value) if value is not None else None


class StoredJSON(TypeDecorator[Any]):
    """JSON that untrusted code produced: stored so that every reader can serve it."""

    impl = JSON
    cache_ok = True
    should_evaluate_none = True  # as JSON: None is stored as JSON null

    def process_bind_param(self, value: Any, dialect: object) -> Any:
        return storable_json(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
