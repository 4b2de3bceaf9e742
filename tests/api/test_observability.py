"""Request ids, Prometheus metrics and structured logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx

from tests.servers import free_port


def test_request_id_is_echoed_or_made(client):
    r = client.get("/items", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    made = client.get("/items", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert made != "bad id\twith spaces" and len(made) == 32
    assert client.get("/items/999").headers["x-request-id"]


def test_metrics_expose_requests_runs_and_queue(client):
    item = client.post("/items", json={"name": "m"}).json()
    client.post("/automations", json={"code": "pass", "item_id": item["id"]})
    run_id = int(client.patch(f"/items/{item['id']}", json={"name": "n"}).headers["itemflow-run-ids"])
    deadline = time.monotonic() + 20
    while client.get(f"/runs/{run_id}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'itemflow_http_requests_total{method="PATCH",route="/items/{item_id}",status="200"}' in text
    assert "itemflow_http_request_duration_seconds_bucket" in text
    assert 'itemflow_runs{status="succeeded"} 1.0' in text
    assert "itemflow_queue_depth 0.0" in text
    assert 'itemflow_runs_finished_total{status="succeeded"}' in text
    assert "itemflow_sandbox_run_seconds_count" in text


def test_logs_are_json_with_request_and_run_ids_and_no_automation_output(tmp_path):
    port = free_port()
    env = {**os.environ, "ITEMFLOW_DATA_DIR": str(tmp_path), "ITEMFLOW_LOG_LEVEL": "info",
           "ITEMFLOW_SECRET_KEY": "log-test-secret-value",
           # The first-start admin key banner is console text, not a JSON log line.
           "ITEMFLOW_BOOTSTRAP_ADMIN": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "itemflow", "serve", "--port", str(port)],
                            env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with httpx.Client(base_url=url) as c:
            headers = {}
            if c.get("/items").status_code == 401:  # credentials, once access control is on
                out = subprocess.run([sys.executable, "-m", "itemflow", "keys", "create", "--name", "log",
                                      "--scope", "admin", "--json"], env=env, capture_output=True,
                                     text=True, check=True)
                headers = {"Authorization": f"Bearer {json.loads(out.stdout)['key']}"}
            c.headers.update(headers)
            item = c.post("/items", json={"name": "x"}, headers={"X-Request-ID": "req-42"}).json()
            c.post("/automations", json={"code": "print('AUTOMATION-OUTPUT-9f8e')", "item_id": item["id"]})
            run_id = int(c.patch(f"/items/{item['id']}", json={"name": "y"}).headers["itemflow-run-ids"])
            while c.get(f"/runs/{run_id}").json()["status"] != "succeeded":
                time.sleep(0.02)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    assert any(entry.get("request_id") == "req-42" for entry in lines)
    assert any(entry.get("run_id") == run_id for entry in lines)
    assert "AUTOMATION-OUTPUT-9f8e" not in stderr
    assert "log-test-secret-value" not in stderr


def test_rate_limit_rejections_are_counted(settings, admin_key):
    from fastapi.testclient import TestClient

    from itemflow.api.app import create_app
    from itemflow.observability import metrics
    from tests.credentials import bearer

    # Read from the registry /metrics renders (itself a GET, it would be limited here too).
    def rejected() -> float:
        return metrics.REGISTRY.get_sample_value("itemflow_rate_limit_rejections_total", {"limit": "reads"}) or 0.0

    before = rejected()
    strict = settings.model_copy(update={"rate_limit_reads": "3/minute"})
    with TestClient(create_app(strict), headers=bearer(admin_key)) as client:
        codes = [client.get("/items").status_code for _ in range(5)]
    assert codes.count(429) == 2
    assert rejected() - before == 2
