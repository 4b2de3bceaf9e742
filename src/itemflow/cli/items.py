from __future__ import annotations

from typing import Annotated

import typer

from itemflow.cli.common import JsonOption, emit, fail, parse, run
from itemflow.items import service
from itemflow.items.schemas import ItemCreate, ItemUpdate
from itemflow.pagination import PageParams

app = typer.Typer(help="Items: create, read, update, delete.", no_args_is_help=True)
COLUMNS = ("id", "name", "description", "updated_at")


@app.command("list")
def list_items(
    q: Annotated[str | None, typer.Option(help="Search name and description.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    cursor: Annotated[str | None, typer.Option()] = None,
    as_json: bool = JsonOption,
) -> None:
    """List items, oldest first."""
    page = run(lambda s: service.list_items(s, PageParams(limit, cursor), q))
    emit(page, as_json, COLUMNS)


@app.command()
def get(item_id: int, as_json: bool = JsonOption) -> None:
    """Show one item."""
    emit(run(lambda s: service.get_item(s, item_id)), as_json, COLUMNS)


@app.command()
def create(
    name: Annotated[str, typer.Option(help="1-200 characters.")],
    description: Annotated[str | None, typer.Option()] = None,
    as_json: bool = JsonOption,
) -> None:
    """Create an item (runs its item.created automations)."""
    data = parse(ItemCreate, {"name": name, "description": description})
    change = run(lambda s: service.create_item(s, data), write=True)
    emit(change.item, as_json, COLUMNS)  # type: ignore[arg-type]


@app.command()
def update(
    item_id: int,
    name: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    clear_description: Annotated[bool, typer.Option(help="Set description to null.")] = False,
    as_json: bool = JsonOption,
) -> None:
    """Change the fields given; the others stay."""
    fields: dict[str, object] = {}
    if name is not None:
        fields["name"] = name
    if description is not None and clear_description:
        fail("give --description or --clear-description, not both", code=2)
    if description is not None or clear_description:
        fields["description"] = description
    data = parse(ItemUpdate, fields)
    change = run(lambda s: service.update_item(s, item_id, data), write=True)
    emit(change.item, as_json, COLUMNS)  # type: ignore[arg-type]


@app.command()
def delete(item_id: int) -> None:
    """Delete an item and its own automations (runs its item.deleted automations)."""
    change = run(lambda s: service.delete_item(s, item_id), write=True)
    typer.echo(f"deleted item {item_id}" + (f"; queued runs {change.run_ids}" if change.run_ids else ""))
