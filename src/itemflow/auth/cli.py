"""`itemflow keys ...` and `itemflow users ...`: the same operations as /keys and /users.

The command line has the machine's database and secret at hand, so it acts as an admin.
A new key is printed once (on stdout, for scripts to capture), never logged.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from itemflow.auth import crypto, service
from itemflow.auth.schemas import CLI, KeyCreate, UserCreate
from itemflow.auth.scopes import SCOPES
from itemflow.cli.common import JsonOption, emit, fail, parse, run, settings, to_json
from itemflow.pagination import PageParams

keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
users_app = typer.Typer(help="Users who sign in with a password (POST /auth/token).",
                        no_args_is_help=True)
KEY_COLUMNS = ("id", "name", "prefix", "scopes", "created_at", "expires_at", "last_used_at")
USER_COLUMNS = ("id", "username", "scopes", "created_at")
ScopeOption = typer.Option("--scope", "-s", help=f"Repeatable. One of: {', '.join(SCOPES)}.")


def _keys() -> crypto.Keys:
    return crypto.Keys.derive(settings().resolved_secret_key())


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option("--name", help="What the key is for.")],
    scope: Annotated[list[str], ScopeOption],
    expires_at: Annotated[datetime | None, typer.Option(
        "--expires-at", formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%SZ"],
        help="With a timezone, e.g. 2030-01-01T00:00:00+00:00.")] = None,
    as_json: bool = JsonOption,
) -> None:
    """Create an API key. The key is printed this once: it is stored only as a hash."""
    if expires_at is not None and expires_at.tzinfo is None:  # %Y-%m-%dT%H:%M:%SZ parses naive
        expires_at = expires_at.replace(tzinfo=UTC)
    data = parse(KeyCreate, {"name": name, "scopes": scope, "expires_at": expires_at})
    keys = _keys()
    created = run(lambda s: service.create_key(s, data, CLI, keys), write=True)
    if as_json:
        sys.stdout.write(to_json(created) + "\n")
        return
    sys.stdout.write(created.key + "\n")
    sys.stderr.write(f"created API key {created.id} ({created.prefix}..., scopes: "
                     f"{' '.join(created.scopes)}). It is shown this once.\n")


@keys_app.command("list")
def list_keys(
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    cursor: Annotated[str | None, typer.Option()] = None,
    as_json: bool = JsonOption,
) -> None:
    """Keys not revoked (never their secret)."""
    emit(run(lambda s: service.list_keys(s, PageParams(limit, cursor))), as_json, KEY_COLUMNS)


@keys_app.command("revoke")
def revoke_key(key_id: int) -> None:
    """Revoke a key: it stops working at once."""
    run(lambda s: service.revoke_key(s, key_id), write=True)
    typer.echo(f"revoked API key {key_id}")


@users_app.command("create")
def create_user(
    username: Annotated[str, typer.Option("--username")],
    scope: Annotated[list[str], ScopeOption],
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from standard input instead of a prompt.")] = False,
    as_json: bool = JsonOption,
) -> None:
    """Create a user (the password is prompted, or read with --password-stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        fail("the password is empty", code=2)
    data = parse(UserCreate, {"username": username, "password": password, "scopes": scope})
    user = run(lambda s: service.create_user(s, data, CLI), write=True)
    emit(user, as_json, USER_COLUMNS)


@users_app.command("list")
def list_users(
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    cursor: Annotated[str | None, typer.Option()] = None,
    as_json: bool = JsonOption,
) -> None:
    """List users."""
    emit(run(lambda s: service.list_users(s, PageParams(limit, cursor))), as_json, USER_COLUMNS)


@users_app.command("delete")
def delete_user(user_id: int) -> None:
    """Delete a user: their access tokens stop working at once."""
    run(lambda s: service.delete_user(s, user_id), write=True)
    typer.echo(f"deleted user {user_id}")
