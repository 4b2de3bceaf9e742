"""Cost of access control on the hottest read: authenticated `GET /items/{id}`.

    .venv/bin/python bench/auth_bench.py [--duration 10] [--conns 64] [--rounds 1]

Side by side in one run, each on a fresh server process and data directory:

- **guarded**: the product as shipped: API key authentication (HMAC lookup by indexed column)
  and the rate limit on Redis (`ITEMFLOW_REDIS_URL`, limit set high enough never to refuse,
  so every request is counted in Redis).
- **unguarded**: the same app and settings with access control replaced by a no-op here, in
  the benchmark (no product setting turns it off): the `guard` dependency through
  `app.dependency_overrides`, and `admit` (the same check) in the fast read that answers
  `GET /items/{id}` outside FastAPI's routing (items/fast_read.py).

One uvicorn process (uvloop, httptools, no access log) pinned to CPU 0 with `taskset -c 0`,
`wrk` pinned to CPU 1, 64 connections, 3 s warm-up, then `--duration` seconds. Target: guarded
req/s >= 80% of unguarded. The table goes to stdout and bench/results/auth.md.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "auth.md"
REDIS_URL = os.environ.get("ITEMFLOW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "auth-bench-secret-0123456789abcdef0123"
SERVER_CPU, CLIENT_CPU = "0", "1"


# --- the two apps (uvicorn factories) -------------------------------------------------------
def guarded_app():  # type: ignore[no-untyped-def]
    from itemflow.api.app import create_app

    return create_app()


def unguarded_app():  # type: ignore[no-untyped-def]
    from itemflow.api.app import create_app
    from itemflow.auth.deps import guard
    from itemflow.auth.schemas import Principal
    from itemflow.items import fast_read

    app = create_app()
    admin = Principal(kind="key", id=1, name="bench", scopes=frozenset({"admin"}))

    async def no_auth() -> Principal:
        return admin

    async def admit_anyone(*_args: object) -> tuple[Principal, dict[str, str]]:
        return admin, {}

    app.dependency_overrides[guard] = no_auth
    fast_read.admit = admit_anyone  # type: ignore[assignment]
    return app


# --- harness --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_admin_key(data_dir: Path) -> str:
    code = (
        "import asyncio, sys\n"
        "from itemflow.settings import Settings\n"
        "from itemflow.db import migrate\n"
        "from itemflow import runtime\n"
        "from itemflow.auth import crypto, service\n"
        "from itemflow.auth.schemas import CLI, KeyCreate\n"
        "s = Settings()\n"
        "migrate.upgrade(s.resolved_database_url)\n"
        "async def main():\n"
        "    db = runtime.build_database(s)\n"
        "    async with db.session(write=True) as session:\n"
        "        k = await service.create_key(session, KeyCreate(name='bench', scopes=['items:read',"
        " 'items:write']), CLI, crypto.Keys.derive(s.resolved_secret_key()))\n"
        "    await db.dispose()\n"
        "    print(k.key)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=server_env(data_dir, "unused"),
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def server_env(data_dir: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMFLOW_")}
    env.update({
        "ITEMFLOW_DATA_DIR": str(data_dir), "ITEMFLOW_SECRET_KEY": SECRET,
        "ITEMFLOW_REDIS_URL": REDIS_URL, "ITEMFLOW_RATE_LIMIT_REDIS_PREFIX": prefix,
        "ITEMFLOW_RATE_LIMIT_READS": "100000000/minute", "ITEMFLOW_RATE_LIMIT_WRITES": "100000000/minute",
        "ITEMFLOW_BOOTSTRAP_ADMIN": "false", "ITEMFLOW_LOG_LEVEL": "warning",
        "PYTHONPATH": str(BENCH) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    return env


def measure(variant: str, duration: float, conns: int) -> dict[str, float | str]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"auth-bench-{variant}-"))
    prefix = f"itemflow-bench-{uuid.uuid4().hex[:8]}"
    key = make_admin_key(data_dir)
    port = free_port()
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "uvicorn", f"auth_bench:{variant}_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", "uvloop",
           "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=server_env(data_dir, prefix), cwd=BENCH)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{variant} server did not start")
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {key}"}
        for n in range(20):
            assert httpx.post(url + "/items", json={"name": f"item {n}"}, headers=headers).status_code == 201
        check = httpx.get(url + "/items/1", headers=headers)
        assert check.status_code == 200, check.text
        if variant == "guarded":
            assert "x-ratelimit-limit" in check.headers  # the limit is really on, in Redis
            assert httpx.get(url + "/items/1").status_code == 401  # and so is authentication
        else:
            assert httpx.get(url + "/items/1").status_code == 200  # no check at all
        wrk = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{conns}", "--latency", "--timeout", "2s",
               "-H", f"Authorization: Bearer {key}"]
        subprocess.run([*wrk, "-d3s", url + "/items/1"], capture_output=True, check=True)
        out = subprocess.run([*wrk, f"-d{duration:g}s", url + "/items/1"], capture_output=True, text=True,
                             check=True).stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        client = redis.Redis.from_url(REDIS_URL)
        for k in client.scan_iter(f"{prefix}*"):
            client.delete(k)
        client.close()
    return parse_wrk(variant, out)


def parse_wrk(variant: str, out: str) -> dict[str, float | str]:
    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\b", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"variant": variant, "rps": rps, "p50": ms("50%"), "p99": ms("99%"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "errors": errors.group(1) if errors else "none"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="Alternate the two variants this many times.")
    parser.add_argument("--no-write", action="store_true", help="Do not update bench/results/auth.md.")
    args = parser.parse_args()
    rows = []
    for _ in range(args.rounds):
        for variant in ("unguarded", "guarded"):
            rows.append(measure(variant, args.duration, args.conns))
            print(rows[-1], file=sys.stderr)
    best = {v: max(float(r["rps"]) for r in rows if r["variant"] == v) for v in ("unguarded", "guarded")}
    ratio = best["guarded"] / best["unguarded"]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    lines = [
        "# Access control benchmark: authenticated GET /items/{id}",
        "",
        f"`.venv/bin/python bench/auth_bench.py --duration {args.duration:g} --rounds {args.rounds}` — "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, itemflow at {rev}. "
        "One uvicorn process (uvloop, httptools, no access log) on CPU 0, `wrk -t1 "
        f"-c{args.conns}` on CPU 1, 3 s warm-up then {args.duration:g} s per row; fresh server, SQLite "
        "file and Redis key prefix per row. **guarded**: API key auth + rate limit counted in Redis "
        "(127.0.0.1:6379) on every request. **unguarded**: the same app with access control "
        "(authentication, scope check and rate limit) replaced by a no-op in the benchmark: the "
        "`guard` dependency through `app.dependency_overrides`, and the fast read's `admit`.",
        "",
        "| variant | req/s | p50 ms | p99 ms | non-2xx | socket errors |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {float(r['rps']):,.0f} | {float(r['p50']):.1f} | {float(r['p99']):.1f} "
                     f"| {r['non2xx']} | {r['errors']} |")
    verdict = "PASS" if ratio >= 0.8 else "FAIL"
    lines += ["", f"Target: guarded ≥ 80% of unguarded req/s. Measured: **{ratio:.0%}** "
              f"({best['guarded']:,.0f} / {best['unguarded']:,.0f}, best of each) — **{verdict}**.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text)
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
