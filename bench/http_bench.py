"""HTTP benchmark: itemflow vs a bare FastAPI route vs the FastAPI tutorial's design.

    .venv/bin/python bench/http_bench.py [--duration 10] [--only get,post,patch] [--profile]

Every measurement gets its own fresh server process (uvicorn, one worker, pinned to CPU 0)
on a free 127.0.0.1 port with a fresh temporary data directory, seeded over HTTP, warmed up,
then loaded by `wrk` pinned to CPU 1. Servers are killed at the end, whatever happens.
The markdown table goes to stdout and to bench/results/http.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent
RESULTS = BENCH / "results" / "http.md"

# Where `itemflow` is imported from: None = the installed (editable) work tree.
ITEMFLOW_SRC: Path | None = None

SERVER_CPU = "0"
CLIENT_CPU = "1"
SEED_ITEMS = 100
WRK_TIMEOUT = "2s"
# The same for all three servers: one process, uvloop + httptools, no access log.
UVICORN_OPTIONS = ["--host", "127.0.0.1", "--workers", "1", "--loop", "uvloop",
                   "--http", "httptools", "--no-access-log", "--log-level", "warning"]


# --- servers --------------------------------------------------------------------------------
@dataclass
class AppSpec:
    name: str
    target: str  # uvicorn's APP argument
    factory: bool = False
    app_dir: Path | None = None
    has_items: bool = True  # the bare app has a constant route only: nothing to seed

    def env(self, data_dir: Path) -> dict[str, str]:
        # Nothing from the caller's ITEMFLOW_* environment: itemflow runs on its defaults.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMFLOW_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["BASELINE_DB"] = str(data_dir / "baseline.db")
        env["ITEMFLOW_DATA_DIR"] = str(data_dir)
        env["ITEMFLOW_LOG_LEVEL"] = "warning"
        # The limiter stays on (memory storage), with limits a load test cannot reach: the
        # defaults (1,200 reads and 300 writes a minute per key) would turn this into 429s.
        env["ITEMFLOW_RATE_LIMIT_READS"] = env["ITEMFLOW_RATE_LIMIT_WRITES"] = "100000000/minute"
        if ITEMFLOW_SRC is not None:
            # Ahead of the editable install's path: run that copy of the package.
            env["PYTHONPATH"] = str(ITEMFLOW_SRC)
        return env


APPS = {
    "itemflow": AppSpec("itemflow", "itemflow.api.app:create_app", factory=True),
    "bare": AppSpec("bare", "bare_app:app", app_dir=BENCH, has_items=False),
    "baseline": AppSpec("baseline", "baseline_app:app", app_dir=BENCH),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    spec: AppSpec
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""


@contextlib.contextmanager
def running(spec: AppSpec) -> Iterator[Server]:
    """A fresh server for `spec` on a fresh data dir; killed (the whole group) on exit."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{spec.name}-"))
    port = free_port()
    cmd = ["taskset", "-c", SERVER_CPU, str(VENV_BIN / "python"), "-m", "uvicorn", spec.target,
           "--port", str(port), *UVICORN_OPTIONS]
    if spec.factory:
        cmd.append("--factory")
    if spec.app_dir:
        cmd += ["--app-dir", str(spec.app_dir)]
    log_path = data_dir / "server.log"
    log = log_path.open("wb")
    # cwd = the data dir, so that no .env of the work tree is read.
    proc = subprocess.Popen(cmd, cwd=data_dir, env=spec.env(data_dir), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(spec, data_dir, port, proc, log_path)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(proc)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def wait_ready(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.spec.name} exited on start:\n{server.log_tail()}")
        try:
            # Any HTTP answer (even 404/401) means the app is serving.
            httpx.get(server.url + "/items/1", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{server.spec.name} not ready in {timeout}s:\n{server.log_tail()}")


# --- auth (itemflow, once issue 4 lands) -----------------------------------------------------
def obtain_api_key(server: Server) -> str:
    """An admin API key for `server`'s data dir: $BENCH_API_KEY, else `itemflow keys create`."""
    if os.environ.get("BENCH_API_KEY"):
        return os.environ["BENCH_API_KEY"]
    cli = str(VENV_BIN / "itemflow")
    env = server.spec.env(server.data_dir)
    help_ = subprocess.run([cli, "keys", "create", "--help"], cwd=server.data_dir, env=env,
                           capture_output=True, text=True, check=False)
    if help_.returncode != 0:
        raise RuntimeError("itemflow answers 401 but has no `itemflow keys create`; "
                           "set BENCH_API_KEY\n" + help_.stderr[-2000:])
    cmd = [cli, "keys", "create", "--name", "bench", "--scope", "admin"]
    if "--json" in help_.stdout:
        cmd.append("--json")
    out = subprocess.run(cmd, cwd=server.data_dir, env=env, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed:\n{out.stdout}\n{out.stderr}")
    key = _find_key(out.stdout) or _find_key(out.stderr)
    if not key:
        raise RuntimeError(f"no key found in the output of {' '.join(cmd[1:])}:\n{out.stdout}")
    return key


def _find_key(text: str) -> str | None:
    with contextlib.suppress(ValueError):
        found = _key_in_json(json.loads(text))
        if found:
            return found
    # A table or a sentence: take the longest token-like word.
    words = re.findall(r"[A-Za-z0-9_\-.~+/=]{20,}", text)
    return max(words, key=len) if words else None


def _key_in_json(value: object) -> str | None:
    if isinstance(value, dict):
        for k in ("key", "api_key", "token", "secret", "plaintext", "value"):
            v = value.get(k)
            if isinstance(v, str) and len(v) >= 16:
                return v
        for v in value.values():
            found = _key_in_json(v)
            if found:
                return found
    if isinstance(value, list):
        for v in value:
            found = _key_in_json(v)
            if found:
                return found
    return None


def seed(server: Server, n: int = SEED_ITEMS) -> None:
    """Create items 1..n over HTTP; on 401, fetch an API key once and use it from then on."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i in range(n):
            body = {"name": f"item {i + 1}", "description": f"seeded item number {i + 1}"}
            r = client.post("/items", json=body, headers=server.headers)
            if r.status_code == 401 and not server.headers:
                server.headers = {"Authorization": f"Bearer {obtain_api_key(server)}"}
                r = client.post("/items", json=body, headers=server.headers)
            if r.status_code >= 300:
                raise RuntimeError(f"seeding {server.spec.name}: {r.status_code} {r.text[:500]}")
        r = client.get("/items/1", headers=server.headers)
        if r.status_code != 200:
            raise RuntimeError(f"GET /items/1 on {server.spec.name}: {r.status_code} {r.text[:500]}")


# --- wrk ---------------------------------------------------------------------------------
LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%.0f,"p90":%.0f,"p99":%.0f,"max":%.0f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def lua_script(kind: str, headers: dict[str, str]) -> str:
    lines = [f'wrk.headers[{json.dumps(k)}] = {json.dumps(v)}' for k, v in headers.items()]
    if kind == "get":
        lines.append('wrk.method = "GET"')
    elif kind == "post":
        body = json.dumps({"name": "bench", "description": "created by wrk"})
        lines += ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"',
                  f"wrk.body = {json.dumps(body)}"]
    elif kind == "patch":
        # Cycle over the seeded items; a new description each time so every PATCH writes
        # (SQLAlchemy skips an UPDATE that changes nothing).
        lines += ['wrk.headers["Content-Type"] = "application/json"',
                  "local i = 0",
                  "request = function()",
                  "  i = i + 1",
                  f"  local id = (i % {SEED_ITEMS}) + 1",
                  '  local body = \'{"description":"revision \' .. i .. \'"}\'',
                  '  return wrk.format("PATCH", "/items/" .. id, nil, body)',
                  "end"]
    else:
        raise ValueError(kind)
    return "\n".join(lines) + "\n" + LUA_DONE


@dataclass
class Result:
    app: str
    kind: str
    conns: int
    requests: int = 0
    duration_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    non_2xx: int = 0
    socket_errors: int = 0
    timeouts: int = 0
    error: str = ""
    unresponsive: bool = False  # no answer to a GET within 5 s after the run

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def stalled(self) -> bool:
        return self.requests == 0 or self.timeouts > 0 or self.unresponsive

    @property
    def clean(self) -> bool:
        return not self.error and not self.stalled and self.non_2xx == 0 and self.socket_errors == 0


def run_wrk(server: Server, kind: str, conns: int, seconds: float, workdir: Path) -> Result:
    script = workdir / f"{server.spec.name}-{kind}.lua"
    script.write_text(lua_script(kind, server.headers))
    path = "/items/1" if kind == "get" else "/items"
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s",
           "--timeout", WRK_TIMEOUT, "--latency", "-s", str(script), server.url + path]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    result = Result(server.spec.name, kind, conns)
    match = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not match:
        result.error = f"wrk failed ({out.returncode}): {out.stderr.strip()[:300]}"
        return result
    data = json.loads(match.group(1))
    result.requests = data["requests"]
    result.duration_s = data["duration_us"] / 1e6
    result.p50_ms, result.p99_ms, result.max_ms = (data[k] / 1000 for k in ("p50", "p99", "max"))
    result.non_2xx = data["status"]
    result.timeouts = data["timeout"]
    result.socket_errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    if server.proc.poll() is not None:
        result.error = f"server died: {server.log_tail(5)}"
    return result


# --- measurements --------------------------------------------------------------------------
# (kind, connections, apps), in the order they are run.
MEASUREMENTS = [
    ("get", 64, ["bare", "itemflow", "baseline"]),
    ("post", 8, ["itemflow", "baseline"]),
    ("post", 64, ["itemflow", "baseline"]),
    ("patch", 8, ["itemflow", "baseline"]),
    ("patch", 64, ["itemflow", "baseline"]),
]


def measure(app: str, kind: str, conns: int, args: argparse.Namespace, workdir: Path,
            profile_dir: Path | None = None) -> Result:
    with running(APPS[app]) as server:
        if server.spec.has_items:
            seed(server)
        # Warm-up: the same requests at <= 8 connections (a warm-up at 64 would leave the
        # baseline's stalled threads behind to spoil the measurement).
        run_wrk(server, kind, min(conns, 8), args.warmup, workdir)
        time.sleep(0.5)
        spy = None
        if profile_dir is not None:
            spy = start_py_spy(server, kind, args.duration, profile_dir)
        result = run_wrk(server, kind, conns, args.duration, workdir)
        if spy is not None:
            spy.wait(timeout=args.duration + 60)
        if not result.error and server.proc.poll() is None:
            # A server that wedged (the baseline's stall) shows here too.
            try:
                httpx.get(server.url + "/items/1", headers=server.headers, timeout=5)
            except httpx.HTTPError:
                result.unresponsive = True
        return result


def fmt_ms(v: float) -> str:
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def results_table(results: list[Result]) -> str:
    rows = ["| request | conns | app | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors "
            "(timeouts) | note |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        note = r.error or ("**stall**: no request completed" if r.requests == 0 else
                           "**stall**: requests timed out at 2 s" if r.timeouts else
                           "**stall**: no answer to a GET 5 s after the run" if r.unresponsive
                           else "")
        path = "GET /items/1" if r.kind == "get" else (
            "POST /items" if r.kind == "post" else "PATCH /items/{id}")
        rows.append(f"| {path} | {r.conns} | {r.app} | {r.rps:,.0f} | {fmt_ms(r.p50_ms)} | "
                    f"{fmt_ms(r.p99_ms)} | {fmt_ms(r.max_ms)} | {r.non_2xx} | "
                    f"{r.socket_errors} ({r.timeouts}) | {note} |")
    return "\n".join(rows)


def targets_table(by: dict[tuple[str, str, int], Result]) -> str:
    rows = ["| target | measured | result |", "|---|---|---|"]

    def add(name: str, measured: str, ok: bool | None) -> None:
        rows.append(f"| {name} | {measured} | {'n/a' if ok is None else 'PASS' if ok else 'FAIL'} |")

    it, bare = by.get(("itemflow", "get", 64)), by.get(("bare", "get", 64))
    if it and bare:
        ratio = it.rps / bare.rps if bare.rps else 0
        add("GET @64: itemflow req/s ≥ 50% of bare", f"{ratio:.0%} ({it.rps:,.0f} / {bare.rps:,.0f})",
            it.clean and ratio >= 0.5)
        p99 = it.p99_ms / bare.p99_ms if bare.p99_ms else float("inf")
        add("GET @64: itemflow p99 ≤ 2x bare p99", f"{p99:.2f}x ({fmt_ms(it.p99_ms)} / "
            f"{fmt_ms(bare.p99_ms)} ms)", it.clean and p99 <= 2)
    for kind, label in (("post", "POST /items"), ("patch", "PATCH /items/{id}")):
        i64, i8, b8 = (by.get(("itemflow", kind, 64)), by.get(("itemflow", kind, 8)),
                       by.get(("baseline", kind, 8)))
        if i64:
            add(f"{label} @64: itemflow no stall, no error",
                f"{i64.rps:,.0f} req/s, {i64.non_2xx} non-2xx, {i64.socket_errors} socket errors, "
                f"{i64.timeouts} timeouts", i64.clean)
        if i64 and b8:
            ratio = i64.rps / b8.rps if b8.rps else float("inf")
            add(f"{label}: itemflow @64 ≥ 4x baseline @8", f"{ratio:.1f}x ({i64.rps:,.0f} / "
                f"{b8.rps:,.0f})", i64.clean and ratio >= 4)
        if i8 and b8:
            ratio = i8.rps / b8.rps if b8.rps else float("inf")
            add(f"{label}: itemflow @8 ≥ 4x baseline @8", f"{ratio:.1f}x ({i8.rps:,.0f} / "
                f"{b8.rps:,.0f})", i8.clean and ratio >= 4)
    return "\n".join(rows)


# --- profiling --------------------------------------------------------------------------------
def start_py_spy(server: Server, kind: str, seconds: float, out_dir: Path) -> subprocess.Popen[bytes]:
    """py-spy on the server for the measurement, pinned with wrk (CPU 1)."""
    pid = server_pid(server)
    raw = out_dir / f"itemflow-{kind}.txt"
    cmd = ["taskset", "-c", CLIENT_CPU, str(VENV_BIN / "py-spy"), "record", "--pid", str(pid),
           # --gil: only the thread running Python; idle aiosqlite/anyio threads blocked on
           # their queues are otherwise sampled as busy on this kernel.
           "--gil", "--rate", "200", "--duration", str(max(1, round(seconds))), "--format", "raw",
           "--nonblocking", "-o", str(raw)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def server_pid(server: Server) -> int:
    # taskset execs python, so the Popen pid is the interpreter.
    return server.proc.pid


def summarize_profile(raw: Path, top: int = 25) -> str:
    """Self and inclusive time per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return f"{raw.name}: no samples\n"
    out = [f"### {raw.stem}: {total} samples", "", "| self % | function |", "|---:|---|"]
    out += [f"| {n / total:.1%} | `{f}` |" for f, n in own.most_common(top)]
    out += ["", "| inclusive % | function |", "|---:|---|"]
    out += [f"| {n / total:.1%} | `{f}` |" for f, n in incl.most_common(top * 2)]
    return "\n".join(out) + "\n"


def _short(frame: str) -> str:
    # "func (path/to/site-packages/pkg/mod.py:123)" -> "func (pkg/mod.py:123)"
    m = re.match(r"(.*) \((.*)\)$", frame)
    if not m:
        return frame
    path = m.group(2)
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group(1)} ({path})"


# --- main -------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per server")
    parser.add_argument("--only", default="get,post,patch", help="request kinds to run")
    parser.add_argument("--apps", default="itemflow,bare,baseline", help="apps to run")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy itemflow's GET and PATCH at 64 connections instead")
    parser.add_argument("--output", type=Path, default=RESULTS)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--rev", help="benchmark itemflow as committed at REV (git archive of "
                        "src/), not the work tree")
    source.add_argument("--itemflow-src", type=Path,
                        help="benchmark the itemflow package under this src/ directory")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (apt-get install wrk util-linux)")
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; server and wrk share one", file=sys.stderr)

    # SIGTERM (e.g. `kill PID` of this script) unwinds like Ctrl-C, so servers are still killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.itemflow_src and not (args.itemflow_src / "itemflow" / "__init__.py").is_file():
        sys.exit(f"{args.itemflow_src} has no itemflow package")
    kinds, apps = set(args.only.split(",")), set(args.apps.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    global ITEMFLOW_SRC
    if args.itemflow_src:
        ITEMFLOW_SRC = args.itemflow_src.resolve()
    elif args.rev:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev, "src"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
        ITEMFLOW_SRC = workdir / "src"
    if args.rev:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev],
                             capture_output=True, text=True, check=True).stdout.strip()
        args.rev = f"{args.rev} ({sha})" if sha != args.rev else sha
    source = (f"itemflow at {args.rev}" if args.rev else f"itemflow from {ITEMFLOW_SRC}"
              if ITEMFLOW_SRC else "itemflow from the work tree")
    try:
        if args.profile:
            out_dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
            for kind in ("get", "patch"):
                if kind in kinds:
                    r = measure("itemflow", kind, 64, args, workdir, profile_dir=out_dir)
                    print(f"{kind}: {r.rps:,.0f} req/s under py-spy (p99 {fmt_ms(r.p99_ms)} ms)")
                    raw = out_dir / f"itemflow-{kind}.txt"
                    if raw.exists():
                        print(summarize_profile(raw))
            print(f"raw stacks in {out_dir}")
            return 0

        results: list[Result] = []
        for kind, conns, names in MEASUREMENTS:
            if kind not in kinds:
                continue
            for app in names:
                if app not in apps:
                    continue
                print(f"{kind.upper()} @{conns} {app} ...", end=" ", file=sys.stderr, flush=True)
                r = measure(app, kind, conns, args, workdir)
                print(f"{r.rps:,.0f} req/s p99 {fmt_ms(r.p99_ms)} ms {r.error}", file=sys.stderr)
                results.append(r)
        by = {(r.app, r.kind, r.conns): r for r in results}
        report = "\n".join([
            "# HTTP benchmark: itemflow vs bare FastAPI vs the FastAPI tutorial",
            "",
            f"`.venv/bin/python bench/http_bench.py --duration {args.duration:g}` — "
            f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs; server on CPU "
            f"{SERVER_CPU} (uvicorn, 1 worker, uvloop, httptools, no access log), wrk on CPU "
            f"{CLIENT_CPU} (1 thread, --timeout {WRK_TIMEOUT}); {args.warmup:g} s warm-up "
            f"then {args.duration:g} s per row; fresh server and SQLite file per row, "
            f"{SEED_ITEMS} items seeded over HTTP; {source}. Method: bench/README.md.",
            "",
            "## Targets",
            "",
            targets_table(by),
            "",
            "## Measurements",
            "",
            results_table(results),
            "",
        ])
        print(report)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
        print(f"written to {args.output}", file=sys.stderr)
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
