"""An id names one thing forever: a new item or automation never inherits a deleted one's runs."""

from __future__ import annotations

import sqlalchemy as sa

from tests.runs.test_runs_api import finished_run, run_ids


def test_create_delete_create_never_reuses_an_id(client, database_url):
    announcer = client.post("/automations", json={"code": "print('secret')",
                                                   "events": ["item.created"]}).json()
    first = client.post("/items", json={"name": "first"}).json()
    r = client.post("/items", json={"name": "doomed"})
    doomed = r.json()
    [doomed_run] = run_ids(r)
    assert finished_run(client, doomed_run)["stdout"] == "secret\n"
    # Delete the newest item and the newest automation: their ids are the ones SQLite reused.
    assert client.delete(f"/items/{doomed['id']}").status_code == 204
    assert client.delete(f"/automations/{announcer['id']}").status_code == 204

    item = client.post("/items", json={"name": "new"}).json()
    assert item["id"] > doomed["id"] > first["id"]
    assert client.get(f"/items/{item['id']}/runs").json()["data"] == []
    automation = client.post("/automations", json={"code": "pass"}).json()
    assert automation["id"] > announcer["id"]
    assert client.get(f"/automations/{automation['id']}/runs").json()["data"] == []
    # The deleted ones keep their history, under their own ids.
    assert [run["id"] for run in client.get(f"/items/{doomed['id']}/runs").json()["data"]] == [doomed_run]

    # Runs have no delete in the API; pruning the newest by hand must not free its id either.
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM runs WHERE id = :id"), {"id": doomed_run})
    engine.dispose()
    run = client.post(f"/automations/{automation['id']}/run").json()
    assert run["id"] > doomed_run
