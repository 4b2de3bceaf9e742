"""Migrations on databases that hold rows written at the revision before them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from itemflow.api.app import create_app
from itemflow.db import migrate
from itemflow.settings import Settings
from tests.conftest import _pg_admin, drop_pg_database, sqlalchemy_pg_url
from tests.credentials import bearer, make_key

NOW = datetime(2026, 1, 1, tzinfo=UTC)
items = sa.table("items", sa.column("id", sa.Integer), sa.column("name", sa.String),
                 sa.column("created_at", sa.DateTime(timezone=True)),
                 sa.column("updated_at", sa.DateTime(timezone=True)))
automations = sa.table(
    "automations", sa.column("id", sa.Integer), sa.column("item_id", sa.Integer),
    sa.column("code", sa.Text), sa.column("events", sa.JSON), sa.column("enabled", sa.Boolean),
    sa.column("timeout_seconds", sa.Integer), sa.column("memory_mb", sa.Integer),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)))
runs = sa.table(
    "runs", sa.column("id", sa.Integer), sa.column("automation_id", sa.Integer),
    sa.column("item_id", sa.Integer), sa.column("event", sa.String), sa.column("code", sa.Text),
    sa.column("input", sa.JSON), sa.column("timeout_seconds", sa.Integer),
    sa.column("memory_mb", sa.Integer), sa.column("status", sa.String),
    sa.column("attempt", sa.Integer), sa.column("stdout", sa.Text), sa.column("stderr", sa.Text),
    sa.column("stdout_truncated", sa.Boolean), sa.column("stderr_truncated", sa.Boolean),
    sa.column("result", sa.JSON), sa.column("queued_at", sa.DateTime(timezone=True)),
    sa.column("available_at", sa.DateTime(timezone=True)))


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """Overrides conftest's: an empty database, for each test to migrate step by step."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'itemflow.db'}"
        return
    name = f"itemflow_mig_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield sqlalchemy_pg_url(name)
    drop_pg_database(sqlalchemy_pg_url(name))


def write(url: str, *statements: Any) -> list[Any]:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        returned = []
        for statement in statements:
            result = conn.execute(statement)
            returned.append(result.scalar() if result.returns_rows else None)
    engine.dispose()
    return returned


def add_item(name: str) -> Any:
    return items.insert().values(name=name, created_at=NOW, updated_at=NOW).returning(items.c.id)


def add_automation(item_id: int | None) -> Any:
    return automations.insert().values(
        item_id=item_id, code="pass", events=["item.created"], enabled=True, timeout_seconds=5,
        memory_mb=128, created_at=NOW, updated_at=NOW).returning(automations.c.id)


def add_run(automation_id: int, item_id: int | None, result: Any = None) -> Any:
    return runs.insert().values(
        automation_id=automation_id, item_id=item_id, event="manual", code="pass", input={},
        timeout_seconds=5, memory_mb=128, status="succeeded", attempt=1, stdout="out", stderr="",
        stdout_truncated=False, stderr_truncated=False, result=result, queued_at=NOW,
        available_at=NOW).returning(runs.c.id)


def api(settings: Settings) -> TestClient:
    return TestClient(create_app(settings), headers=bearer(make_key(settings).key))


def test_autoincrement_migration_keeps_rows_and_never_reuses_ids(database_url, settings):
    migrate.upgrade(database_url, "0002")
    first, kept, doomed = write(database_url, add_item("first"), add_item("kept"), add_item("doomed"))
    own, gone = write(database_url, add_automation(kept), add_automation(None))
    run_ids = write(database_url, add_run(own, kept, {"n": 1}), add_run(gone, doomed))
    # Deleted before the upgrade: their ids live on only in the runs that name them.
    write(database_url, items.delete().where(items.c.id == doomed),
          automations.delete().where(automations.c.id == gone))

    migrate.upgrade(database_url)

    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(items.c.id, items.c.name).order_by(items.c.id)).all() == [
            (first, "first"), (kept, "kept")]
        assert conn.execute(sa.select(automations.c.id, automations.c.item_id)).all() == [(own, kept)]
        assert conn.execute(sa.select(runs.c.id, runs.c.result).order_by(runs.c.id)).all() == [
            (run_ids[0], {"n": 1}), (run_ids[1], None)]
    inspector = sa.inspect(engine)
    assert {i["name"] for i in inspector.get_indexes("runs")} == {
        "ix_runs_claim", "ix_runs_automation_id", "ix_runs_item_id"}
    assert [i["name"] for i in inspector.get_indexes("automations")] == ["ix_automations_item_id"]
    [fk] = inspector.get_foreign_keys("automations")
    assert (fk["referred_table"], fk["options"].get("ondelete")) == ("items", "CASCADE")
    engine.dispose()

    with api(settings) as client:
        item = client.post("/items", json={"name": "new"}).json()
        assert item["id"] > doomed
        assert client.get(f"/items/{item['id']}/runs").json()["data"] == []
        automation = client.post("/automations", json={"code": "pass"}).json()
        assert automation["id"] > gone
        assert client.get(f"/automations/{automation['id']}/runs").json()["data"] == []
        run = client.post(f"/automations/{automation['id']}/run").json()
        assert run["id"] > max(run_ids)
        # The foreign key still cascades: deleting an item deletes its automations.
        assert client.delete(f"/items/{kept}").status_code == 204
        assert client.get(f"/automations/{own}").status_code == 404


def test_run_results_stored_with_surrogates_are_repaired(database_url, settings):
    migrate.upgrade(database_url, "0003")
    item, = write(database_url, add_item("i"))
    automation, = write(database_url, add_automation(item))
    # What a run's `result` of {"k": "\ud800"} (a JSON escape) was stored as, before.
    broken, clean = write(
        database_url,
        add_run(automation, item, {"k": "\ud800", "\udfff": ["\udc80x", "ok"]}),
        add_run(automation, item, {"path": "C:\\udir", "emoji": "\U0001f600"}))

    migrate.upgrade(database_url)

    with api(settings) as client:
        for path in ("/runs", f"/items/{item}/runs", f"/automations/{automation}/runs"):
            assert client.get(path).status_code == 200, path
        assert client.get(f"/runs/{broken}").json()["result"] == {
            "k": "\ufffd", "\ufffd": ["\ufffdx", "ok"]}
        assert client.get(f"/runs/{clean}").json()["result"] == {
            "path": "C:\\udir", "emoji": "\U0001f600"}
