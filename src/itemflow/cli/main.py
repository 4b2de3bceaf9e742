"""`itemflow`: serve the API and do everything the API does, through the same operations."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from itemflow.auth import cli as auth_cli
from itemflow.cli import automations, execution, items, runs
from itemflow.cli.common import fail, settings
from itemflow.db import migrate
from itemflow.observability.logging import configure_logging

app = typer.Typer(
    help="itemflow: store items, run sandboxed automations when they change.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(items.app, name="items")
app.add_typer(automations.app, name="automations")
app.add_typer(runs.app, name="runs")
app.add_typer(execution.sandbox_app, name="sandbox")
app.add_typer(auth_cli.keys_app, name="keys")
app.add_typer(auth_cli.users_app, name="users")
app.command()(execution.worker)
app.command()(execution.runner)
app.command()(execution.doctor)


def default_port() -> int:
    try:
        return int(os.environ.get("PORT", "8000"))
    except ValueError:
        fail(f"PORT must be a number, not {os.environ['PORT']!r}", code=2)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Default: $PORT, else 8000.")] = None,
) -> None:
    """Run the API server (on SQLite, the database is upgraded on start)."""
    import uvicorn

    from itemflow.api.app import create_app
    from itemflow.api.server import uvicorn_options

    s = settings()
    configure_logging(s.log_level)
    app_ = create_app(s)
    uvicorn.run(app_, host=host, port=port or default_port(), log_config=None,
                log_level=s.log_level, proxy_headers=False, **uvicorn_options(s))


@db_app.command()
def upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the database migrations up to REVISION (default: the latest)."""
    migrate.upgrade(settings().resolved_database_url, revision)
    typer.echo(f"database at {revision}")
