"""Sandbox benchmark: a trivial job (`print("hi")`), three ways, side by side.

  (a) floor     - bare Python: fork, the child writes "hi" to a pipe and exits, the parent reads and waits
  (b) baseline  - a fresh sandbox per run: setpriv + bwrap (same flags, same seccomp filter) +
                  `python3 -I -S -c 'print("hi")'`
  (c) zygote    - LocalSandbox, warm: `await sandbox.run('print("hi")', {}, Limits())`

For each: p50/p99/mean latency over N sequential runs, and throughput (runs/s) with
concurrency = the pool size (default: CPU count). Prints a markdown table and writes it to
bench/results/sandbox.md (--output elsewhere). Run by hand, on an otherwise idle machine:

    .venv/bin/python bench/sandbox_bench.py [--runs 1000] [--baseline-runs 200] [--pool-size 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from itemflow.sandbox import Limits, LocalSandbox, local, seccomp

HERE = Path(__file__).parent


def summarize(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50": s[len(s) // 2] * 1000, "p99": s[min(len(s) - 1, int(len(s) * 0.99))] * 1000,
            "mean": statistics.fmean(s) * 1000}


def timed(fn: Callable[[], None], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def throughput_threads(fn: Callable[[], None], runs: int, concurrency: int) -> float:
    per = max(1, runs // concurrency)

    def worker() -> None:
        for _ in range(per):
            fn()

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    return per * concurrency / (time.perf_counter() - t)


# (a) the floor, measured in a small process (the same interpreter as the zygote, no sandbox): forking
# the app's own, much bigger process costs more and is not what the zygote does.
FLOOR_SCRIPT = """
import json, os, sys, time, threading
def once():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, b"hi\\n")
        os._exit(0)
    os.close(w)
    assert os.read(r, 16) == b"hi\\n"
    os.close(r)
    os.waitpid(pid, 0)
runs, conc = int(sys.argv[1]), int(sys.argv[2])
for _ in range(50):
    once()
lat = []
for _ in range(runs):
    t = time.perf_counter(); once(); lat.append(time.perf_counter() - t)
per = max(1, runs // conc)
def worker():
    for _ in range(per):
        once()
threads = [threading.Thread(target=worker) for _ in range(conc)]
t = time.perf_counter()
for th in threads: th.start()
for th in threads: th.join()
print(json.dumps({"lat": lat, "thr": per * conc / (time.perf_counter() - t)}))
"""


def floor(python: str, runs: int, concurrency: int) -> tuple[list[float], float]:
    import json

    out = subprocess.run([python, "-I", "-S", "-c", FLOOR_SCRIPT, str(runs), str(concurrency)],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    return data["lat"], data["thr"]


def fork_pipe_wait() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, b"hi\n")
        os._exit(0)
    os.close(w)
    assert os.read(r, 16) == b"hi\n"
    os.close(r)
    os.waitpid(pid, 0)


# (b) the baseline: a fresh sandboxed interpreter per run
def make_fresh_bwrap(sb: LocalSandbox) -> Callable[[], None]:
    layout = local.discover_layout(sb.python)
    data = seccomp.compile_filter()

    def run() -> None:
        fd = os.memfd_create("seccomp", 0)
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            cmd = local.bwrap_command(layout, uid=sb.uid, gid=sb.gid, tmp_bytes=sb.tmp_bytes, seccomp_fd=fd,
                                      ctl_fd=0)
            cmd = [*cmd[: cmd.index("-c") + 1], 'print("hi")']
            out = subprocess.run(cmd, pass_fds=(fd,), capture_output=True, env={"PATH": "/usr/bin:/bin"},
                                 check=True).stdout
        finally:
            os.close(fd)
        assert out == b"hi\n", out

    return run


# (c) the warm zygote pool
async def zygote_latency(sb: LocalSandbox, runs: int) -> list[float]:
    limits = Limits()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        r = await sb.run('print("hi")', {}, limits)
        out.append(time.perf_counter() - t)
        assert r.stdout == "hi\n", r
    return out


async def zygote_throughput(sb: LocalSandbox, runs: int, concurrency: int) -> float:
    limits = Limits()
    per = max(1, runs // concurrency)

    async def worker() -> None:
        for _ in range(per):
            r = await sb.run('print("hi")', {}, limits)
            assert r.status == "succeeded"

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per * concurrency / (time.perf_counter() - t)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--baseline-runs", type=int, default=200)
    parser.add_argument("--pool-size", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "sandbox.md")
    args = parser.parse_args()
    c = args.pool_size

    sb = LocalSandbox(pool_size=c)
    t = time.perf_counter()
    await sb.start()
    start_ms = (time.perf_counter() - t) * 1000
    load_before = os.getloadavg()[0]
    rows = []
    try:
        await zygote_latency(sb, 50)  # warm up

        samples, thr = floor(sb.python, args.runs, c)
        rows.append(("(a) floor: fork + pipe + wait in a bare `python3 -I -S`, no sandbox", summarize(samples), thr,
                     args.runs))
        for _ in range(50):
            fork_pipe_wait()
        lat = summarize(timed(fork_pipe_wait, args.runs))
        thr = throughput_threads(fork_pipe_wait, args.runs, c)
        rows.append(("(a') the same, forking this (app-sized) host process", lat, thr, args.runs))

        fresh = make_fresh_bwrap(sb)
        lat = summarize(timed(fresh, args.baseline_runs))
        thr = throughput_threads(fresh, args.baseline_runs, c)
        rows.append(("(b) baseline: fresh setpriv + bwrap + `python3 -I -S` per run", lat, thr, args.baseline_runs))

        lat = summarize(await zygote_latency(sb, args.runs))
        thr = await zygote_throughput(sb, args.runs * 2, c)
        rows.append(("(c) LocalSandbox: warm zygote pool, `run('print(\"hi\")')`", lat, thr, args.runs))
    finally:
        await sb.close()

    lines = [
        "# Sandbox benchmark",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"Linux {platform.release()}, host Python {platform.python_version()}, sandbox {sb.python}, "
        f"pool size {c}, load average before {load_before:.2f}. Pool start: {start_ms:.0f} ms.",
        "",
        "Job: `print(\"hi\")`. Latency: sequential runs, one at a time. Throughput: "
        f"{c} concurrent callers (threads for a and b, asyncio tasks for c).",
        "",
        "| variant | runs | p50 ms | p99 ms | mean ms | runs/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, lat, thr, n in rows:
        lines.append(f"| {name} | {n} | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['mean']:.2f} | {thr:.0f} |")
    lines += ["", "Target for (c): p50 <= 5 ms, p99 <= 15 ms, >= 200 runs/s on 2 cores.", ""]
    text = "\n".join(lines)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"written to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
