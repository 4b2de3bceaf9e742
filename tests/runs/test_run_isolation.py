"""Through the service, as the red team met it: one warm sandbox, run A of one automation on
one item, then run B of another automation on another item. B is a first run in every way
(attempt 1, no error, an empty writable /tmp) and finds nothing of A in its memory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from itemflow.api.app import create_app
from itemflow.settings import Settings
from tests.credentials import bearer
from tests.runs.test_runs_api import automation, finished_run, run_ids
from tests.sandbox.test_isolation import SCANNER


@pytest.fixture
def one_sandbox_client(settings: Settings, admin_key: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"sandbox_pool_size": 1})),
                    headers=bearer(admin_key)) as c:
        yield c


def test_run_b_learns_nothing_of_run_a(one_sandbox_client: TestClient) -> None:
    client = one_sandbox_client
    secret = "ITEMFLOW-LEAK-" + uuid.uuid4().hex
    item_a = client.post("/items", json={"name": secret}).json()
    item_b = client.post("/items", json={"name": "b"}).json()
    # A: holds a secret in its code, event and result, and breaks /tmp on its way out.
    automation(client, f"import os\nkept = {secret!r}\nresult = kept\nos.chmod('/tmp', 0)",
               item_id=item_a["id"])
    automation(client, SCANNER + "\nopen('/tmp/mine', 'w').write('x')\n"
               "import os\nresult = [result, sorted(os.listdir('/tmp'))]", item_id=item_b["id"])
    [run_a] = run_ids(client.patch(f"/items/{item_a['id']}", json={"description": "go"}))
    a = finished_run(client, run_a)
    assert (a["status"], a["result"]) == ("succeeded", secret), a
    [run_b] = run_ids(client.patch(f"/items/{item_b['id']}", json={"description": "go"}))
    b = finished_run(client, run_b)
    assert (b["status"], b["attempt"], b["error"]) == ("succeeded", 1, None), b
    assert b["result"] == [[], ["mine"]], f"run B saw run A's data or /tmp: {b['result']}"
