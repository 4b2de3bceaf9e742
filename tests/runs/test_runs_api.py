"""Item events run the matching automations in the real sandbox; every run is recorded."""

from __future__ import annotations

import time

FINISHED = {"succeeded", "failed", "timed_out", "dead"}


def finished_run(client, run_id: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/runs/{run_id}").json()
        if run["status"] in FINISHED:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        time.sleep(0.02)


def run_ids(response) -> list[int]:
    header = response.headers.get("itemflow-run-ids")
    return [int(x) for x in header.split(",")] if header else []


def automation(client, code: str, **fields) -> dict:
    r = client.post("/automations", json={"code": code, **fields})
    assert r.status_code == 201, r.text
    return r.json()


def test_created_item_runs_its_automation_with_the_contract(client):
    a = automation(client, (
        "import sys, json\n"
        "stdin = json.load(sys.stdin)\n"
        "assert stdin == event\n"
        "print('hello', event['item']['name'])\n"
        "result = {'type': event['type'], 'previous': event['previous'],\n"
        "          'automation_id': event['automation_id'], 'run_id': event['run_id']}\n"
    ), events=["item.created"])
    r = client.post("/items", json={"name": "lamp"})
    [run_id] = run_ids(r)
    run = finished_run(client, run_id)
    assert run["status"] == "succeeded", run
    assert run["stdout"] == "hello lamp\n"
    assert run["result"] == {"type": "item.created", "previous": None,
                             "automation_id": a["id"], "run_id": run_id}
    assert run["event"] == "item.created" and run["item_id"] == r.json()["id"]
    assert run["exit_code"] == 0 and run["attempt"] == 1
    assert run["duration_ms"] > 0 and run["started_at"] and run["finished_at"]


def test_only_matching_enabled_automations_run(client):
    item = client.post("/items", json={"name": "a"}).json()
    other = client.post("/items", json={"name": "b"}).json()
    own = automation(client, "pass", item_id=item["id"])                      # item.updated
    glob = automation(client, "pass", events=["item.updated", "item.deleted"])
    automation(client, "pass", item_id=other["id"])                            # other item
    automation(client, "pass", events=["item.created"])                        # other event
    automation(client, "pass", enabled=False)                                  # switched off
    r = client.patch(f"/items/{item['id']}", json={"name": "a2"})
    ids = run_ids(r)
    runs = [finished_run(client, i) for i in ids]
    assert sorted(run["automation_id"] for run in runs) == sorted([own["id"], glob["id"]])
    assert all(run["status"] == "succeeded" for run in runs)
    assert client.patch(f"/items/{item['id']}", json={}).headers.get("itemflow-run-ids")


def test_update_sees_item_and_previous(client):
    item = client.post("/items", json={"name": "old"}).json()
    automation(client, "result = [event['previous']['name'], event['item']['name']]",
               item_id=item["id"])
    [run_id] = run_ids(client.patch(f"/items/{item['id']}", json={"name": "new"}))
    assert finished_run(client, run_id)["result"] == ["old", "new"]


def test_delete_runs_own_and_global_automations_and_keeps_history(client):
    item = client.post("/items", json={"name": "doomed"}).json()
    code = "result = {'item': event['item'], 'previous': event['previous']['name']}"
    own = automation(client, code, item_id=item["id"], events=["item.deleted"])
    glob = automation(client, code, events=["item.deleted"])
    r = client.delete(f"/items/{item['id']}")
    assert r.status_code == 204
    runs = [finished_run(client, i) for i in run_ids(r)]
    assert sorted(run["automation_id"] for run in runs) == sorted([own["id"], glob["id"]])
    assert all(run["result"] == {"item": None, "previous": "doomed"} for run in runs)
    assert client.get(f"/automations/{own['id']}").status_code == 404
    history = client.get(f"/automations/{own['id']}/runs").json()["data"]
    assert [run["status"] for run in history] == ["succeeded"]
    assert len(client.get(f"/items/{item['id']}/runs").json()["data"]) == 2


def test_failure_timeout_and_truncation(client):
    item = client.post("/items", json={"name": "x"}).json()
    failing = automation(client, "raise ValueError('boom')", item_id=item["id"])
    slow = automation(client, "while True: pass", item_id=item["id"], timeout_seconds=1)
    chatty = automation(client, "print('x' * 200_000)", item_id=item["id"])
    ids = run_ids(client.patch(f"/items/{item['id']}", json={"name": "y"}))
    runs = {run["automation_id"]: run for run in (finished_run(client, i) for i in ids)}
    assert runs[failing["id"]]["status"] == "failed"
    assert "ValueError: boom" in runs[failing["id"]]["stderr"]
    assert "Traceback" in runs[failing["id"]]["stderr"]
    assert runs[slow["id"]]["status"] == "timed_out"
    assert runs[slow["id"]]["error"]
    assert runs[chatty["id"]]["status"] == "succeeded"
    assert runs[chatty["id"]]["stdout_truncated"] is True
    assert len(runs[chatty["id"]]["stdout"]) <= 64 * 1024


def test_manual_run_waits_or_accepts(client):
    item = client.post("/items", json={"name": "m"}).json()
    a = automation(client, "result = event['type'], (event['item'] or {}).get('name')")
    r = client.post(f"/automations/{a['id']}/run", params={"wait": 10}, json={"item_id": item["id"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded" and r.json()["result"] == ["manual", "m"]
    r = client.post(f"/automations/{a['id']}/run")
    assert r.status_code == 202 and r.json()["event"] == "manual"
    assert finished_run(client, r.json()["id"])["result"] == ["manual", None]
    assert client.post("/automations/999999/run").status_code == 404
    assert client.post(f"/automations/{a['id']}/run", json={"item_id": 999999}).status_code == 404
    assert client.post(f"/automations/{a['id']}/run", params={"wait": 61}).status_code == 422


def test_run_filters(client):
    item = client.post("/items", json={"name": "f"}).json()
    ok = automation(client, "pass", item_id=item["id"])
    bad = automation(client, "raise SystemExit(3)", item_id=item["id"])
    for i in run_ids(client.patch(f"/items/{item['id']}", json={"name": "g"})):
        finished_run(client, i)
    failed = client.get("/runs", params={"status": "failed"}).json()["data"]
    assert [run["automation_id"] for run in failed] == [bad["id"]]
    assert failed[0]["exit_code"] == 3
    mine = client.get("/runs", params={"automation_id": ok["id"]}).json()["data"]
    assert [run["status"] for run in mine] == ["succeeded"]
    assert client.get("/runs", params={"status": "exploded"}).status_code == 422
    assert client.get("/runs/999999").status_code == 404


def test_without_a_sandbox_the_api_serves_and_runs_fail_with_the_reason(settings, admin_key):
    from fastapi.testclient import TestClient

    from itemflow.api.app import create_app
    from tests.credentials import bearer

    broken = settings.model_copy(update={"sandbox_python": "/nonexistent/python3"})
    with TestClient(create_app(broken), headers=bearer(admin_key)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "sandbox unavailable" in ready.json()["detail"]
        assert "/nonexistent/python3" in ready.json()["detail"]
        item = client.post("/items", json={"name": "still served"}).json()
        a = automation(client, "print('never runs')", item_id=item["id"])
        r = client.post(f"/automations/{a['id']}/run", params={"wait": 10})
        run = r.json()
        assert run["status"] == "failed", run
        assert "sandbox unavailable" in run["error"] and "/nonexistent/python3" in run["error"]
        assert run["stdout"] == ""


def test_unreachable_code_runner_is_retried_then_dead_with_the_reason(settings, admin_key):
    from fastapi.testclient import TestClient

    from itemflow.api.app import create_app
    from tests.credentials import bearer
    from tests.servers import free_port

    remote = settings.model_copy(update={"sandbox_url": f"http://127.0.0.1:{free_port()}", "max_attempts": 2})
    with TestClient(create_app(remote), headers=bearer(admin_key)) as client:
        a = automation(client, "print('never runs')")
        run = client.post(f"/automations/{a['id']}/run").json()
        final = finished_run(client, run["id"], timeout=30)
        assert final["status"] == "dead", final
        assert final["attempt"] == 2
        assert "unreachable" in final["error"]
