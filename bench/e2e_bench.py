"""End to end: `PATCH /items/{id}` until its run is `succeeded` as seen through the API.

Side by side in one run, on the embedded default (SQLite, in-process worker, local sandbox):
  baseline  PATCH /items/{id} alone (no automation attached): the write path's own latency
  e2e       PATCH /items/{id} with one automation `print("hi")`, then GET /runs/{id} until
            it has finished; the time from sending the PATCH to seeing `succeeded`
Target (issue 3): e2e p50 <= 30 ms.

    .venv/bin/python bench/e2e_bench.py [--runs 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "ITEMFLOW_DATA_DIR": data_dir, "ITEMFLOW_LOG_LEVEL": "warning",
           "ITEMFLOW_BOOTSTRAP_ADMIN": "false",  # the key comes from `itemflow keys create` below
           # limits stay on, out of a sequential benchmark's reach
           "ITEMFLOW_RATE_LIMIT_READS": "100000000/minute", "ITEMFLOW_RATE_LIMIT_WRITES": "100000000/minute"}
    proc = subprocess.Popen([sys.executable, "-m", "itemflow", "serve", "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def auth_headers(client: httpx.Client, data_dir: str) -> dict[str, str]:
    """An admin key, once the API needs credentials (created through the CLI, as a user would)."""
    if client.get("/items").status_code != 401:
        return {}
    env = {**os.environ, "ITEMFLOW_DATA_DIR": data_dir}
    out = subprocess.run([sys.executable, "-m", "itemflow", "keys", "create", "--name", "bench",
                          "--scope", "admin", "--json"], env=env, capture_output=True, text=True, check=True)
    import json

    return {"Authorization": f"Bearer {json.loads(out.stdout)['key']}"}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_server(data_dir)
        try:
            with httpx.Client(base_url=url) as client:
                client.headers.update(auth_headers(client, data_dir))
                plain = client.post("/items", json={"name": "plain"}).json()["id"]
                watched = client.post("/items", json={"name": "watched"}).json()["id"]
                r = client.post("/automations", json={"item_id": watched, "code": 'print("hi")'})
                assert r.status_code == 201, r.text
                base, e2e, polls = [], [], []
                for i in range(args.runs + 20):
                    t0 = time.perf_counter()
                    assert client.patch(f"/items/{plain}", json={"name": f"p{i}"}).status_code == 200
                    t1 = time.perf_counter()
                    r = client.patch(f"/items/{watched}", json={"name": f"w{i}"})
                    run_id = int(r.headers["itemflow-run-ids"])
                    n = 0
                    while True:
                        n += 1
                        run = client.get(f"/runs/{run_id}").json()
                        if run["status"] not in ("queued", "running"):
                            break
                    t2 = time.perf_counter()
                    assert run["status"] == "succeeded" and run["stdout"] == "hi\n", run
                    if i >= 20:  # warm-up
                        base.append((t1 - t0) * 1000)
                        e2e.append((t2 - t1) * 1000)
                        polls.append(n)
        finally:
            proc.terminate()
            proc.wait(10)
    rows = [("baseline: PATCH alone", base), ("e2e: PATCH → run succeeded via API", e2e)]
    lines = [
        f"# End-to-end run latency ({args.runs} sequential runs, embedded default, {os.cpu_count()} CPUs)",
        "",
        "| measurement | p50 ms | p90 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in rows:
        lines.append(f"| {name} | {pct(values, 50):.1f} | {pct(values, 90):.1f} | {pct(values, 99):.1f} "
                     f"| {statistics.mean(values):.1f} |")
    verdict = "PASS" if pct(e2e, 50) <= 30 else "FAIL"
    lines += ["", f"Target e2e p50 ≤ 30 ms: {pct(e2e, 50):.1f} ms — {verdict}; "
                  f"GET /runs polls per run: median {statistics.median(polls):.0f}"]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "results" / "e2e.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
