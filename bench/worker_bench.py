"""Workers on PostgreSQL: trivial runs per second with one and with two `itemflow worker`
processes on this machine, and the queue's claim latency (queued_at -> started_at).

Side by side in one run, each on a fresh database cloned from a migrated template:
  1 worker   N queued `pass` runs, one `itemflow worker` process (a zygote per core)
  2 workers  the same N, two worker processes
Runs are queued up front, the workers started, and the clock runs until the last run has
finished. Claim latency is measured separately, with runs queued one at a time into idle
workers (LISTEN/NOTIFY wake-up, SKIP LOCKED claim).

    .venv/bin/python bench/worker_bench.py [--runs 1000]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import PG_ADMIN_URL, clone_pg_database, drop_pg_database  # noqa: E402

from itemflow.db import migrate  # noqa: E402

TEMPLATE = f"itemflow_bench_tpl_{os.getpid()}"


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def queue(url: str, n: int) -> None:
    with psycopg.connect(libpq(url)) as conn:
        conn.execute(
            "INSERT INTO runs (automation_id, item_id, event, code, input, timeout_seconds, memory_mb,"
            " status, attempt, stdout, stderr, stdout_truncated, stderr_truncated, queued_at, available_at)"
            " SELECT 1, NULL, 'manual', 'pass', '{\"type\": \"manual\"}', 5, 128, 'queued', 0, '', '',"
            " false, false, now(), now() FROM generate_series(1, %s)", (n,))
        conn.execute("NOTIFY itemflow_runs")


def unfinished(url: str) -> int:
    with psycopg.connect(libpq(url)) as conn:
        return conn.execute("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')").fetchone()[0]


def start_workers(url: str, count: int, data_dir: str) -> list[subprocess.Popen]:
    env = {**os.environ, "ITEMFLOW_DATABASE_URL": url, "ITEMFLOW_DATA_DIR": data_dir,
           "ITEMFLOW_SECRET_KEY": "bench", "ITEMFLOW_LOG_LEVEL": "warning"}
    procs = [subprocess.Popen([sys.executable, "-m", "itemflow", "worker"], env=env,
                              stderr=subprocess.DEVNULL) for _ in range(count)]
    time.sleep(3)  # zygotes warm, LISTEN connected
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)


def throughput(workers: int, n: int, data_dir: str) -> float:
    url = clone_pg_database(TEMPLATE, "wbench")
    try:
        procs = start_workers(url, workers, data_dir)
        try:
            queue(url, n)
            t0 = time.perf_counter()
            while unfinished(url):
                time.sleep(0.02)
            return n / (time.perf_counter() - t0)
        finally:
            stop(procs)
    finally:
        drop_pg_database(url)


def claim_latency(samples: int, data_dir: str) -> list[float]:
    url = clone_pg_database(TEMPLATE, "wbench")
    try:
        procs = start_workers(url, 1, data_dir)
        try:
            for _ in range(samples):
                queue(url, 1)
                while unfinished(url):
                    time.sleep(0.002)
                time.sleep(0.01)
            with psycopg.connect(libpq(url)) as conn:
                rows = conn.execute("SELECT extract(epoch FROM started_at - queued_at) * 1000 FROM runs").fetchall()
            return [float(r[0]) for r in rows]
        finally:
            stop(procs)
    finally:
        drop_pg_database(url)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    try:
        migrate.upgrade(f"postgresql+psycopg://postgres@127.0.0.1:5432/{TEMPLATE}")
        with tempfile.TemporaryDirectory() as data_dir:
            one = throughput(1, args.runs, data_dir)
            two = throughput(2, args.runs, data_dir)
            lat = sorted(claim_latency(args.samples, data_dir))
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
    p = lambda q: lat[min(len(lat) - 1, round(q / 100 * (len(lat) - 1)))]  # noqa: E731
    text = "\n".join([
        f"# Workers on PostgreSQL ({os.cpu_count()} CPUs, {args.runs} trivial runs, `pass`)",
        "",
        "| workers | runs/s |",
        "|---:|---:|",
        f"| 1 process | {one:.0f} |",
        f"| 2 processes | {two:.0f} |",
        "",
        f"Claim latency (queued_at → started_at, {len(lat)} runs queued one at a time into an idle worker): "
        f"p50 {p(50):.1f} ms, p99 {p(99):.1f} ms, mean {statistics.mean(lat):.1f} ms.",
        "",
    ])
    print(text)
    (ROOT / "bench" / "results" / "workers.md").write_text(text)


if __name__ == "__main__":
    main()
