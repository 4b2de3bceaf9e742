"""Engine and units of work. Built once by the edge (app lifespan, CLI command, worker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, busy_timeout_ms: int = 5000) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"pool_pre_ping": not self.is_sqlite}
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["pool_size"] = pool_size
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        self.engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine.sync_engine, busy_timeout_ms)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(
            self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )
        # SQLite has one writer at a time: queue writers of this process here, fairly,
        # instead of letting them spin on SQLITE_BUSY (which stalled the tutorial's app).
        self._write_gate = asyncio.Lock() if self.is_sqlite else None

        self._runs_queued_listeners: list[Callable[[], None]] = []

    def on_runs_queued(self, listener: Callable[[], None]) -> None:
        """Call `listener` after any unit of work that queued runs has committed."""
        self._runs_queued_listeners.append(listener)

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block succeeds, rolls back when it raises."""
        factory = self._write_sessions if write else self._sessions
        async with AsyncExitStack() as stack:
            if write and self._write_gate is not None:
                await stack.enter_async_context(self._write_gate)
            session = await stack.enter_async_context(factory())
            async with session.begin():
                yield session
            queued = session.info.pop("runs_queued", False)
        if queued:
            for listener in self._runs_queued_listeners:
                listener()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(sync_engine: Any, busy_timeout_ms: int) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below own the transaction instead of the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so a writer waits on busy_timeout rather
        # than failing when it upgrades from a read lock.
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
