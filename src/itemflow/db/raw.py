"""Core statements compiled once and run on the SQLite driver's own cursor.

For the hottest statements of the embedded database: reads (an API key by hash, an item by
id, the automations an item change triggers) and item writes (INSERT/UPDATE ... RETURNING).
SQLAlchemy's execution machinery cost ~90 us a statement here against ~8 us for the
statement itself; compiling once and applying the columns' own bind and result processors
keeps every type conversion SQLAlchemy would make (aware datetimes, JSON) without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable

from itemflow.db.inline import InlineSession

Processor = Callable[[Any], Any] | None


class RawStatement:
    __slots__ = ("_binds", "_keys", "_names", "_results", "sql")

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if not compiled.positiontup and compiled.binds:
            raise ValueError("RawStatement needs a positional (qmark) dialect")
        self.sql = compiled.string
        self._names = tuple(compiled.positiontup or ())
        self._binds: tuple[Processor, ...] = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self._names
        )
        columns = list(statement.exported_columns)  # type: ignore[attr-defined]  # SELECT or RETURNING
        self._keys = tuple(column.key for column in columns)
        self._results: tuple[Processor, ...] = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )

    def parameters(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            params[name] if process is None else process(params[name])
            for name, process in zip(self._names, self._binds, strict=True)
        )

    def row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        return {
            key: value if process is None else process(value)
            for key, value, process in zip(self._keys, values, self._results, strict=True)
        }

    def run(self, driver_connection: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every row, as mappings. fetchall, never fetchone: a statement left unfinished
        would hold its read snapshot open (stale reads, and a WAL that cannot restart)."""
        rows = driver_connection.execute(self.sql, self.parameters(params)).fetchall()
        return [self.row(values) for values in rows]


_compiled: dict[tuple[Any, str], RawStatement] = {}


def compiled(statement: Executable, dialect: Dialect) -> RawStatement:
    raw = _compiled.get((statement, dialect.name))
    if raw is None:
        raw = _compiled[(statement, dialect.name)] = RawStatement(statement, dialect)
    return raw


async def fetch_all(session: Any, statement: Executable, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a statement (a SELECT, or a write with RETURNING) inside a unit of work,
    as mappings. `statement` is built once (a module constant): it is compiled once per
    statement object, and its parameters are all named bindparams.

    In an embedded (inline SQLite) unit of work the statement runs on the transaction's own
    driver connection, compiled once; elsewhere through the session as usual.
    """
    if isinstance(session, InlineSession):
        connection = session.connection
        return compiled(statement, connection.dialect).run(connection.connection.driver_connection, params)
    return [dict(row) for row in (await session.execute(statement, params)).mappings()]
