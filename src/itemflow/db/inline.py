"""AsyncSession's interface over a synchronous Session, run on the calling (event loop) thread.

Used for the embedded SQLite database only. SQLite runs inside this process and answers in
microseconds, so handing each statement to aiosqlite's thread cost far more than the
statement itself: measured here, an ORM read through aiosqlite took 3.6 ms of CPU against
0.6 ms for the same read on a plain sqlite3 connection, and every request paid it several
times. Operations are written once against AsyncSession; this facade serves them the same
calls. (PostgreSQL keeps the real AsyncSession over psycopg.)

A unit of work runs on one connection, already in its transaction. The ORM Session is made
only when an operation asks for it: the hottest writes (items) are compiled statements on
the connection (db/raw.py) and never need one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session


class InlineSession:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.info: dict[Any, Any] = {}
        self._session: Session | None = None

    @property
    def sync_session(self) -> Session:
        if self._session is None:
            # Joined to the unit of work's transaction: the unit of work commits or rolls
            # back, never the Session.
            self._session = Session(bind=self.connection, expire_on_commit=False,
                                    join_transaction_mode="rollback_only")
        return self._session

    def finish(self) -> None:
        """Before the commit: write what the ORM still holds. (Raises like a commit would.)"""
        if self._session is not None:
            self._session.flush()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def bind(self) -> Any:
        return self.connection

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync_session.get(*args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync_session.execute(*args, **kwargs)

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync_session.scalars(*args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync_session.scalar(*args, **kwargs)

    def add(self, instance: object) -> None:
        self.sync_session.add(instance)

    def add_all(self, instances: Any) -> None:
        self.sync_session.add_all(instances)

    async def flush(self, objects: Any = None) -> None:
        self.sync_session.flush(objects)

    async def delete(self, instance: object) -> None:
        self.sync_session.delete(instance)

    async def refresh(self, instance: object, *args: Any, **kwargs: Any) -> None:
        self.sync_session.refresh(instance, *args, **kwargs)
