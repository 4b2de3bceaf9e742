"""Engine and units of work. Built once by the edge (app lifespan, CLI command, worker)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from itemflow.db.inline import InlineSession
from itemflow.db.raw import compiled

_NO_GATE = nullcontext()
log = logging.getLogger("itemflow.db")

CHECKPOINT_EVERY = 500  # write transactions between WAL checkpoints


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, busy_timeout_ms: int = 5000) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._write_gate: asyncio.Lock | None = None
        self._reader: Any = None  # SQLite: a driver connection kept open for fetch_one
        self._unchanged: dict[tuple[Any, ...], Any] = {}  # fetch_one_unless_changed's rows
        self._unchanged_since: int | None = None  # ... as of this PRAGMA data_version
        self._writes_since_checkpoint = 0
        self._checkpoint_task: asyncio.Task[None] | None = None
        if self.is_sqlite:
            # The embedded database runs inline on the event loop thread (see db/inline.py).
            self.url = self.url.set(drivername="sqlite+pysqlite")
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            # Every unit of work ends in COMMIT or ROLLBACK itself: skip the pool's reset.
            # LIFO: consecutive read units of work reuse the same connection, whose page cache
            # is then more likely current (SQLite drops it when another connection has written).
            self.sync_engine = create_engine(
                self.url, pool_size=pool_size, pool_reset_on_return=None, pool_use_lifo=True
            )
            _configure_sqlite(self.sync_engine, busy_timeout_ms)
            self._writer: Connection | None = None  # kept open; write units of work take turns
            # SQLite has one writer at a time: queue writers of this process here, fairly,
            # instead of letting them spin on SQLITE_BUSY (which stalled the tutorial's app).
            self._write_gate = asyncio.Lock()
        else:
            self.engine = create_async_engine(
                self.url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size
            )
            self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

        self._runs_queued_listeners: list[Callable[[], None]] = []

    def on_runs_queued(self, listener: Callable[[], None]) -> None:
        """Call `listener` after any unit of work that queued runs has committed."""
        self._runs_queued_listeners.append(listener)

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block succeeds, rolls back when it raises."""
        session: Any
        if not self.is_sqlite:
            async with self._sessions() as session, session.begin():
                yield session
        else:
            # Nested blocks, not an AsyncExitStack: this runs on every request.
            async with self._write_gate if write else _NO_GATE:
                with self._inline_connection(write) as connection:
                    session = InlineSession(connection)
                    try:
                        with connection.begin():
                            yield session
                            session.finish()
                    finally:
                        session.close()
            if write:
                self._after_sqlite_write()
        if session.info.pop("runs_queued", False):
            for listener in self._runs_queued_listeners:
                listener()

    @contextmanager
    def _inline_connection(self, write: bool) -> Iterator[Connection]:
        """The connection of an embedded unit of work. Writers (one at a time, behind the
        write gate) share one connection kept open: its page cache stays current, and a
        pool checkout per write cost more than the write. Readers take one from the pool."""
        if not write:
            with self.sync_engine.connect() as connection:
                yield connection
            return
        if self._writer is None or self._writer.closed or self._writer.invalidated:
            self._writer = self.sync_engine.connect().execution_options(sqlite_immediate=True)
        yield self._writer

    def _after_sqlite_write(self) -> None:
        # Checkpoint the WAL now and then (autocheckpoint is off: it would run inside a
        # writer's COMMIT, on the event loop, with its fsyncs).
        self._writes_since_checkpoint += 1
        if self._writes_since_checkpoint < CHECKPOINT_EVERY or self._checkpoint_task is not None:
            return
        self._writes_since_checkpoint = 0
        self._checkpoint_task = asyncio.get_running_loop().create_task(self._checkpoint_between_writes())

    async def _checkpoint_between_writes(self) -> None:
        """Checkpoint in a thread (its fsyncs must not stall the event loop) while this
        process's writers wait at the gate. A checkpoint racing a steady stream of writes
        never catches up with the end of the WAL, so no writer could start the WAL over and
        it grew without bound (seen: +500 frames per checkpoint under a write benchmark).
        Caught up, the next writer restarts it. Readers go on meanwhile."""
        assert self._write_gate is not None
        try:
            async with self._write_gate:
                await asyncio.get_running_loop().run_in_executor(None, self._checkpoint)
        except Exception as exc:  # the next checkpoint tries again; writes go on regardless
            log.warning("WAL checkpoint failed: %s", exc)
        finally:
            self._checkpoint_task = None

    def _checkpoint(self) -> None:
        with self.sync_engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    async def fetch_one(self, statement: Any, params: dict[str, Any]) -> Any:
        """One read statement outside a unit of work (for the hottest reads): its row as a
        mapping, or None.

        On SQLite it runs on a driver connection kept open for the purpose, compiled once
        (db/raw.py): no session, no BEGIN (in WAL mode a statement reads a consistent
        snapshot), no SQLAlchemy execution machinery.
        """
        if self.is_sqlite:
            rows = compiled(statement, self.sync_engine.dialect).run(self._reader_connection(), params)
            return rows[0] if rows else None
        async with self.engine.connect() as conn:
            return (await conn.execute(statement, params)).mappings().first()

    async def fetch_one_unless_changed(self, statement: Any, params: dict[str, Any]) -> Any:
        """`fetch_one` for rows read on every request that rarely change (credentials): on
        SQLite the row comes from memory for as long as no connection, of this process or
        another, has committed since it was read (`PRAGMA data_version`, a few microseconds
        against ~15 for the lookup). Exact, not a time-to-live: a revocation committed
        anywhere is seen by the next request. Rows returned are shared: read, don't change.
        Elsewhere (PostgreSQL) it is `fetch_one`."""
        if not self.is_sqlite:
            return await self.fetch_one(statement, params)
        version = self._reader_connection().execute("PRAGMA data_version").fetchone()[0]
        if version != self._unchanged_since:
            self._unchanged.clear()
            self._unchanged_since = version
        key = (statement, *params.items())
        row = self._unchanged.get(key)
        if row is None:
            row = await self.fetch_one(statement, params)
            if row is not None:  # unknown keys are not kept: a flood of them would fill this
                if len(self._unchanged) >= 10_000:
                    self._unchanged.clear()
                self._unchanged[key] = row
        return row

    def _reader_connection(self) -> Any:
        if self._reader is None:
            self._reader = self.sync_engine.raw_connection()
        return self._reader.driver_connection

    async def ping(self) -> None:
        if self.is_sqlite:
            with self.sync_engine.connect() as sync_conn:
                sync_conn.execute(text("SELECT 1"))
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._checkpoint_task is not None:
            await self._checkpoint_task
        if self.is_sqlite:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self.sync_engine.dispose()
        else:
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
        cursor.execute("PRAGMA wal_autocheckpoint=0")  # Database._checkpoint does it, off the loop
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers: IMMEDIATE takes the write lock up front, so a writer waits on busy_timeout
        # rather than failing when it upgrades from a read lock. Readers open no transaction:
        # in WAL mode each statement reads a consistent snapshot, and read units of work are
        # one statement (a BEGIN/COMMIT pair cost more than the read itself).
        if conn.get_execution_options().get("sqlite_immediate"):
            conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
