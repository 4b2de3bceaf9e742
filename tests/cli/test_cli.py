"""The CLI calls the same operations as the API: same results, same JSON."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from itemflow.api.app import create_app
from itemflow.cli import common
from itemflow.cli.main import app
from tests.credentials import bearer


@pytest.fixture
def cli(settings, monkeypatch):
    monkeypatch.setenv("ITEMFLOW_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("ITEMFLOW_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ITEMFLOW_SECRET_KEY", "test-secret-key-not-for-production")
    common.settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input)

    yield invoke
    common.settings.cache_clear()


def test_item_lifecycle_matches_the_api(cli, settings, admin_key):
    r = cli("items", "create", "--name", "lamp", "--description", "desk", "--json")
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    with TestClient(create_app(settings), headers=bearer(admin_key)) as client:
        assert client.get(f"/items/{created['id']}").json() == created
        api_page = client.get("/items").json()
    r = cli("items", "list", "--json")
    assert json.loads(r.stdout) == api_page
    r = cli("items", "update", str(created["id"]), "--clear-description", "--json")
    assert json.loads(r.stdout)["description"] is None
    r = cli("items", "list")
    assert r.exit_code == 0 and "lamp" in r.stdout
    r = cli("items", "delete", str(created["id"]))
    assert r.exit_code == 0
    r = cli("items", "get", str(created["id"]))
    assert r.exit_code == 3 and "does not exist" in r.output


def test_bad_input_is_a_clear_error_and_nothing_is_stored(cli):
    r = cli("items", "create", "--name", "")
    assert r.exit_code == 2 and "name" in r.output
    assert json.loads(cli("items", "list", "--json").stdout)["data"] == []


def test_automation_from_stdin_and_file(cli, tmp_path):
    item = json.loads(cli("items", "create", "--name", "i", "--json").stdout)
    r = cli("automations", "create", "--item", str(item["id"]), "--event", "item.created",
            "--event", "item.deleted", "--json", input="print(event['type'])\n")
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout)
    assert a["events"] == ["item.created", "item.deleted"] and a["item_id"] == item["id"]
    code = tmp_path / "auto.py"
    code.write_text("result = 42\n")
    r = cli("automations", "update", str(a["id"]), "--file", str(code), "--disabled", "--json")
    updated = json.loads(r.stdout)
    assert updated["code"] == "result = 42\n" and updated["enabled"] is False
    r = cli("automations", "list", "--item", str(item["id"]), "--json")
    assert [x["id"] for x in json.loads(r.stdout)["data"]] == [a["id"]]
    r = cli("automations", "create", "--json", input="def broken(:\n")
    assert r.exit_code == 2 and "line 1" in r.output
    assert cli("automations", "delete", str(a["id"])).exit_code == 0
    assert cli("automations", "get", str(a["id"])).exit_code == 3


def test_db_upgrade_is_idempotent(cli):
    assert cli("db", "upgrade").exit_code == 0
    assert cli("db", "upgrade").exit_code == 0


def test_manual_run_runs_list_and_get(cli):
    item = json.loads(cli("items", "create", "--name", "i", "--json").stdout)
    a = json.loads(cli("automations", "create", "--json", input="print('hi', event['item']['name'])\n").stdout)
    r = cli("automations", "run", str(a["id"]), "--item", str(item["id"]), "--wait", "20", "--json")
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)
    assert run["status"] == "succeeded" and run["stdout"] == "hi i\n" and run["event"] == "manual"
    r = cli("runs", "list", "--automation", str(a["id"]), "--json")
    assert [x["id"] for x in json.loads(r.stdout)["data"]] == [run["id"]]
    assert json.loads(cli("runs", "get", str(run["id"]), "--json").stdout) == run
    r = cli("automations", "run", str(a["id"]), "--json")  # no --wait: queued, exit 0
    assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "queued"
    assert cli("automations", "run", "424242").exit_code == 3
    assert cli("runs", "list", "--status", "bogus").exit_code == 2


def test_sandbox_run_and_doctor(cli, tmp_path):
    code = tmp_path / "try.py"
    code.write_text("print(event['n'] * 2)\nresult = {'double': event['n'] * 2}\n")
    r = cli("sandbox", "run", str(code), "--input", '{"n": 21}')
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["status"] == "succeeded" and out["result"] == {"double": 42} and out["stdout"] == "42\n"
    code.write_text("raise RuntimeError('nope')\n")
    r = cli("sandbox", "run", str(code))
    assert r.exit_code == 1 and json.loads(r.stdout)["status"] == "failed"
    assert cli("sandbox", "run", str(code), "--input", "{not json").exit_code == 2
    r = cli("doctor")
    assert r.exit_code == 0, r.output
    assert "database   ok" in r.stdout and "sandbox    ok" in r.stdout


def test_doctor_says_exactly_what_is_wrong(cli, monkeypatch):
    monkeypatch.setenv("ITEMFLOW_SANDBOX_PYTHON", "/nonexistent/python3")
    common.settings.cache_clear()
    r = cli("doctor")
    assert r.exit_code == 1
    assert "database   ok" in r.stdout
    assert "sandbox    FAIL" in r.stdout and "/nonexistent/python3" in r.stdout
