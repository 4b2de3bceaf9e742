"""What every CLI command shares: one unit of work per command, output, error handling."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from itemflow.db import Database, migrate
from itemflow.errors import DomainError
from itemflow.settings import Settings

T = TypeVar("T")
JsonOption = typer.Option(False, "--json", help="Print the API's JSON instead of a table.")
err_console = Console(stderr=True)


@cache
def settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        fail(f"invalid settings: {exc}")


def open_database() -> Database:
    s = settings()
    if s.is_sqlite:  # the embedded default keeps itself migrated, as `serve` does
        migrate.upgrade(s.resolved_database_url)
    return Database(s.resolved_database_url, busy_timeout_ms=s.sqlite_busy_timeout_ms)


def run(op: Callable[[AsyncSession], Awaitable[T]], *, write: bool = False) -> T:
    """Run one operation in one unit of work (committed when it succeeds)."""

    async def main() -> T:
        database = open_database()
        try:
            async with database.session(write=write) as session:
                return await op(session)
        finally:
            await database.dispose()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        fail(exc.detail, code=exit_code_for(exc))


def exit_code_for(exc: DomainError) -> int:
    return {404: 3, 409: 4, 401: 5, 403: 5}.get(exc.status_code, 2)


def parse(schema: type[T], data: dict[str, Any]) -> T:
    """Validate CLI input with the API's own schema; say which field is wrong."""
    try:
        return schema.model_validate(data)  # type: ignore[attr-defined,no-any-return]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors()
        )
        fail(problems, code=2)


def fail(message: str, *, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def to_json(value: BaseModel | dict[str, Any] | list[Any]) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, indent=2, ensure_ascii=False)


def emit(value: BaseModel, as_json: bool, columns: Sequence[str]) -> None:
    """Print one object, or a page (`data` + `next_cursor`), as a table or the API's JSON."""
    if as_json:
        sys.stdout.write(to_json(value) + "\n")
        return
    dumped = value.model_dump(mode="json")
    rows = dumped["data"] if "data" in dumped and "next_cursor" in dumped else [dumped]
    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console().print(table)
    if dumped.get("next_cursor"):
        Console().print(f"more: --cursor {dumped['next_cursor']}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
