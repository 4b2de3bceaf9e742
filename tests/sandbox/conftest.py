"""A real LocalSandbox shared by the sandbox tests (no mocks), and helpers that look at the host."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import pytest

from itemflow.sandbox import Limits, LocalSandbox

# A uid no one else uses, so "processes owned by the sandbox uid" means exactly ours.
SANDBOX_UID = 61123
FAST = Limits(timeout_seconds=2)


@pytest.fixture(scope="session")
async def sandbox() -> AsyncIterator[LocalSandbox]:
    sb = LocalSandbox(pool_size=2, uid=SANDBOX_UID, gid=SANDBOX_UID)
    await sb.start()
    yield sb
    await sb.close()


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, real uid, name) for every process on the host."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        out[int(name)] = (int(fields["PPid"]), int(fields["Uid"].split()[0]), fields["Name"].strip())
    return out


def sandbox_uid_processes(uid: int = SANDBOX_UID) -> dict[int, tuple[int, int, str]]:
    return {pid: p for pid, p in _procs().items() if p[1] == uid}


def strays(sb: LocalSandbox, uid: int = SANDBOX_UID) -> list[str]:
    """Processes of the sandbox uid other than each zygote's bwrap, the zygote (PID 1 inside)
    and its one idle pre-forked child."""
    procs = sandbox_uid_processes(uid)
    allowed: set[int] = set()
    for bwrap_pid in sb.zygote_pids():
        allowed.add(bwrap_pid)
        zygotes = [pid for pid, p in procs.items() if p[0] == bwrap_pid]
        allowed.update(zygotes)
        for z in zygotes:
            idle = [pid for pid, p in procs.items() if p[0] == z]
            allowed.update(idle[:1])
    return [f"{pid} {p}" for pid, p in procs.items() if pid not in allowed]


def assert_no_strays(sb: LocalSandbox, uid: int = SANDBOX_UID, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while (left := strays(sb, uid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, f"processes left behind by the sandbox: {left}"
    assert len(sandbox_uid_processes(uid)) <= 3 * sb.pool_size
