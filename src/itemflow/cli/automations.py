from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from itemflow.automations import service
from itemflow.automations.schemas import AutomationCreate, AutomationUpdate
from itemflow.cli.common import JsonOption, emit, fail, parse, run
from itemflow.pagination import PageParams

app = typer.Typer(help="Automations: Python code run when items change.", no_args_is_help=True)
COLUMNS = ("id", "name", "item_id", "events", "enabled", "timeout_seconds", "memory_mb")

FileOption = typer.Option("--file", "-f", help="Code file; '-' or omitted reads stdin.")
EventOption = typer.Option("--event", "-e", help="item.created, item.updated or item.deleted; repeatable.")


def _read_code(file: Path | None) -> str:
    if file is None or str(file) == "-":
        if sys.stdin.isatty():
            fail("give --file FILE or pipe the code on stdin", code=2)
        return sys.stdin.read()
    try:
        return file.read_text()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", code=2)


@app.command("list")
def list_automations(
    item: Annotated[int | None, typer.Option("--item", help="Only this item's automations.")] = None,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    cursor: Annotated[str | None, typer.Option()] = None,
    as_json: bool = JsonOption,
) -> None:
    """List automations."""
    page = run(lambda s: service.list_automations(s, PageParams(limit, cursor), item_id=item,
                                                  enabled=enabled))
    emit(page, as_json, COLUMNS)


@app.command()
def get(automation_id: int, as_json: bool = JsonOption) -> None:
    """Show one automation, with its code in --json."""
    emit(run(lambda s: service.get_automation(s, automation_id)), as_json, COLUMNS)


@app.command()
def create(
    file: Annotated[Path | None, FileOption] = None,
    name: Annotated[str | None, typer.Option()] = None,
    item: Annotated[int | None, typer.Option("--item", help="Attach to this item; default: every item.")] = None,
    event: Annotated[list[str] | None, EventOption] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it switched off.")] = False,
    timeout: Annotated[int | None, typer.Option("--timeout", help="Seconds, 1-60.")] = None,
    memory: Annotated[int | None, typer.Option("--memory", help="MB, 32-1024.")] = None,
    as_json: bool = JsonOption,
) -> None:
    """Create an automation from a file or stdin."""
    fields: dict[str, object] = {"code": _read_code(file), "name": name, "item_id": item,
                                 "enabled": not disabled}
    if event:
        fields["events"] = event
    if timeout is not None:
        fields["timeout_seconds"] = timeout
    if memory is not None:
        fields["memory_mb"] = memory
    data = parse(AutomationCreate, fields)
    emit(run(lambda s: service.create_automation(s, data), write=True), as_json, COLUMNS)


@app.command()
def update(
    automation_id: int,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="New code ('-' for stdin).")] = None,
    name: Annotated[str | None, typer.Option()] = None,
    item: Annotated[int | None, typer.Option("--item")] = None,
    all_items: Annotated[bool, typer.Option("--all-items", help="Detach: run for every item.")] = False,
    event: Annotated[list[str] | None, EventOption] = None,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled")] = None,
    timeout: Annotated[int | None, typer.Option("--timeout")] = None,
    memory: Annotated[int | None, typer.Option("--memory")] = None,
    as_json: bool = JsonOption,
) -> None:
    """Change the fields given; the others stay."""
    fields: dict[str, object] = {}
    if file is not None:
        fields["code"] = _read_code(file)
    if item is not None and all_items:
        fail("give --item or --all-items, not both", code=2)
    if item is not None or all_items:
        fields["item_id"] = item
    optional = {"name": name, "events": event or None, "enabled": enabled,
                "timeout_seconds": timeout, "memory_mb": memory}
    fields.update({k: v for k, v in optional.items() if v is not None})
    data = parse(AutomationUpdate, fields)
    emit(run(lambda s: service.update_automation(s, automation_id, data), write=True), as_json, COLUMNS)


@app.command("run")
def run_automation(
    automation_id: int,
    item: Annotated[int | None, typer.Option("--item", help="The item the run sees.")] = None,
    wait: Annotated[float, typer.Option("--wait", min=0, max=60, help="Seconds to wait for the outcome.")] = 0,
    as_json: bool = JsonOption,
) -> None:
    """Run an automation now (event `manual`)."""
    from itemflow.cli.execution import run_now
    from itemflow.cli.runs import COLUMNS as RUN_COLUMNS
    from itemflow.errors import DomainError

    try:
        result = run_now(automation_id, item, wait)
    except DomainError as exc:
        fail(exc.detail, code=3 if exc.status_code == 404 else 2)
    emit(result, as_json, RUN_COLUMNS)
    if wait and result.status != "succeeded":
        raise typer.Exit(1)


@app.command()
def delete(automation_id: int) -> None:
    """Delete an automation (its runs stay in the history)."""
    run(lambda s: service.delete_automation(s, automation_id), write=True)
    typer.echo(f"deleted automation {automation_id}")
