"""Whatever a run produces is stored as something every reader of the history can serve."""

from __future__ import annotations

from tests.runs.test_runs_api import automation

# A JSON "\ud800" escape parses to an unpaired surrogate, which no UTF-8 response can carry.
SURROGATE_RESULT = """
print('nul \\x00 out')
result = {'k': '\\ud800', '\\udfff': ['x\\udc80y', 'ok \\U0001f600', 'nul \\x00']}
"""
# The sandbox reports why a result is not JSON in words; here those words hold a surrogate.
SURROGATE_ERROR = """
class Hostile(dict):
    def items(self):
        raise ValueError('\\ud800')
result = Hostile(a=1)
"""


def readers(run: dict) -> list[str]:
    return ["/runs", f"/runs/{run['id']}", f"/items/{run['item_id']}/runs",
            f"/automations/{run['automation_id']}/runs"]


def test_a_result_with_unpaired_surrogates_is_stored_servable(client):
    item = client.post("/items", json={"name": "i"}).json()
    a = automation(client, SURROGATE_RESULT, item_id=item["id"])
    r = client.post(f"/automations/{a['id']}/run", params={"wait": 10})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["stdout"] == "nul \ufffd out\n"  # NUL: valid JSON, but no PostgreSQL text
    expected = {"k": "\ufffd", "\ufffd": ["x\ufffdy", "ok \U0001f600", "nul \x00"]}
    for path in readers(r.json()):
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        body = answer.json()
        assert (body["data"][0] if "data" in body else body)["result"] == expected, path


def test_an_error_with_an_unpaired_surrogate_is_stored_servable(client):
    # Before: the outcome could not be written at all; the run stayed `running` until reaped.
    item = client.post("/items", json={"name": "i"}).json()
    a = automation(client, SURROGATE_ERROR, item_id=item["id"])
    r = client.post(f"/automations/{a['id']}/run", params={"wait": 10})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["status"] == "failed" and run["attempt"] == 1
    assert run["error"] == "result is not JSON-serialisable: ValueError: \ufffd"
    for path in readers(run):
        assert client.get(path).status_code == 200, path
