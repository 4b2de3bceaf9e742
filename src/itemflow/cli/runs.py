from __future__ import annotations

from typing import Annotated

import typer

from itemflow.cli.common import JsonOption, emit, parse, run
from itemflow.pagination import PageParams
from itemflow.runs import service
from itemflow.runs.schemas import RunFilters

app = typer.Typer(help="Run history.", no_args_is_help=True)
COLUMNS = ("id", "automation_id", "item_id", "event", "status", "attempt", "duration_ms", "error")


@app.command("list")
def list_runs(
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed, timed_out, dead")] = None,
    automation: Annotated[int | None, typer.Option("--automation")] = None,
    item: Annotated[int | None, typer.Option("--item")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    cursor: Annotated[str | None, typer.Option()] = None,
    as_json: bool = JsonOption,
) -> None:
    """List runs, oldest first."""
    filters = parse(RunFilters, {"status": status, "automation_id": automation, "item_id": item})
    emit(run(lambda s: service.list_runs(s, PageParams(limit, cursor), filters)), as_json, COLUMNS)


@app.command()
def get(run_id: int, as_json: bool = JsonOption) -> None:
    """Show one run; --json includes its output and result."""
    emit(run(lambda s: service.get_run(s, run_id)), as_json, COLUMNS)
