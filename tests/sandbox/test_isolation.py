"""Runs must not see each other. One warm zygote serves run A, then run B (think: another
automation of another principal), and B must learn nothing of A through memory, IPC or /tmp.

Every test checks three things: the hostile run ends cleanly, the next run is as clean as a
first run (no error, an empty writable /tmp, on the same zygote where the wipe can do it), and
the host is untouched (no process left, no host IPC object, nothing in the host's /tmp)."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from itemflow.sandbox import Limits, LocalSandbox

from .conftest import _procs, assert_no_strays

# Not conftest.SANDBOX_UID: the session sandbox runs under that uid, and the stray checks
# count processes by uid.
ISOLATION_UID = 61125
LIMITS = Limits(timeout_seconds=10, memory_mb=256)
LEAK_PREFIX = "ITEMFLOW-LEAK-"
LEAK_PATTERN = re.compile(re.escape(LEAK_PREFIX.encode()) + rb"[0-9a-f]{32}")

# What an attacker's run does to find an earlier run's data: scan every readable byte of its
# own address space (/proc/self/maps + ctypes), walk its stack up into the frames of
# whoever forked it, and look at every object the garbage collector knows. The prefix is
# built at run time so that the scanner's own text never matches.
SCANNER = r'''
import gc, re, sys
pattern = re.compile(re.escape(("ITEMFLOW" + "-LEAK-").encode()) + rb"[0-9a-f]{32}")
found = set()
with open("/proc/self/maps") as maps:
    regions = [line.split() for line in maps]
import ctypes
for region in regions:
    if region[1][0] != "r" or region[-1] in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
        continue
    lo, hi = (int(x, 16) for x in region[0].split("-"))
    for start in range(lo, hi, 1 << 20):
        chunk = ctypes.string_at(start, min((1 << 20) + 64, hi - start))
        found.update(m.group().decode() for m in pattern.finditer(chunk))
frame = sys._getframe()
while frame is not None:
    for value in list(frame.f_locals.values()):
        found.update(m.group().decode() for m in pattern.finditer(repr(value).encode("utf-8", "replace")))
    frame = frame.f_back
for obj in gc.get_objects():
    if isinstance(obj, (dict, list, tuple)):
        found.update(m.group().decode() for m in pattern.finditer(repr(obj).encode("utf-8", "replace")))
result = sorted(found)
'''


def marker() -> str:
    return LEAK_PREFIX + uuid.uuid4().hex


@pytest.fixture(scope="module")
async def one_zygote() -> AsyncIterator[LocalSandbox]:
    """One warm zygote: every run of a test goes through the same one, one after the other."""
    sb = LocalSandbox(pool_size=1, uid=ISOLATION_UID, gid=ISOLATION_UID)
    await sb.start()
    yield sb
    await sb.close()


def host_ipc() -> dict[str, str]:
    return {kind: Path(f"/proc/sysvipc/{kind}").read_text() for kind in ("shm", "msg", "sem")}


def host_tmp_of_uid(uid: int = ISOLATION_UID) -> list[str]:
    return [e.name for e in os.scandir("/tmp") if e.stat(follow_symlinks=False).st_uid == uid]


async def assert_next_run_is_pristine(sb: LocalSandbox, zygote_before: list[int] | None = None) -> None:
    """The run after a hostile one: succeeds with no error, finds /tmp empty and mode 1777, can
    write there, and (when asked) ran on the very zygote that served the hostile run."""
    assert_no_strays(sb, ISOLATION_UID)
    code = ("import os\nst = os.stat('/tmp')\nlisting = sorted(os.listdir('/tmp'))\n"
            "open('/tmp/probe', 'w').write('x')\nresult = [oct(st.st_mode & 0o7777), listing]")
    r = await sb.run(code, {}, Limits(timeout_seconds=5))
    assert (r.status, r.error, r.result) == ("succeeded", None, ["0o1777", []]), r
    if zygote_before is not None:
        assert sb.zygote_pids() == zygote_before, "the zygote was replaced instead of cleaned"
    assert await sb.check() is None
    assert not host_tmp_of_uid(), "the sandbox wrote to the host's /tmp"


def descendants(pid: int) -> list[int]:
    procs = _procs()
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (ppid, _, _) in procs.items() if ppid == parent]
        out += children
        frontier += children
    return out


def scan_process(pid: int) -> set[str]:
    """Every leak marker in another process's readable memory, read from the host."""
    found: set[str] = set()
    with open(f"/proc/{pid}/maps") as maps:
        regions = [line.split() for line in maps]
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for region in regions:
            if region[1][0] != "r" or region[-1] in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            lo, hi = (int(x, 16) for x in region[0].split("-"))
            for start in range(lo, hi, 1 << 20):
                try:
                    mem.seek(start)
                    chunk = mem.read(min((1 << 20) + 64, hi - start))
                except (OSError, OverflowError, ValueError):
                    continue
                found.update(m.group().decode() for m in LEAK_PATTERN.finditer(chunk))
    return found


def job_code(secret_in_code: str, secret_stdout: str, secret_stderr: str, secret_result: str) -> str:
    return (f"# {secret_in_code}\n"
            f"import sys\nprint({secret_stdout!r})\nprint({secret_stderr!r}, file=sys.stderr)\n"
            f"mine = {secret_result!r}\n" + SCANNER + "\nresult = [mine, result]\n")


async def test_the_next_run_finds_no_byte_of_the_previous_one(one_zygote: LocalSandbox) -> None:
    sb = one_zygote
    secrets = {"code": marker(), "event": marker(), "stdout": marker(), "stderr": marker(), "result": marker()}
    a = await sb.run(job_code(secrets["code"], secrets["stdout"], secrets["stderr"], secrets["result"]),
                     {"item": {"id": 1, "name": secrets["event"]}}, LIMITS)
    assert a.status == "succeeded", a
    mine, seen_by_a = a.result
    assert mine == secrets["result"] and secrets["stdout"] in a.stdout and secrets["stderr"] in a.stderr
    # The scanner works: A finds its own code, event and output in its own memory.
    assert {secrets["code"], secrets["event"], secrets["stdout"]} <= set(seen_by_a), seen_by_a

    b = await sb.run(SCANNER, {"item": {"id": 2, "name": "someone else"}}, LIMITS)
    assert (b.status, b.error) == ("succeeded", None), b
    assert b.result == [], f"run B found run A's data in its own memory: {b.result}"
    await assert_next_run_is_pristine(sb)


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory from the host needs root")
async def test_no_byte_of_a_job_is_in_the_zygote_or_the_next_process(one_zygote: LocalSandbox) -> None:
    """Read from the host, as root: the zygote, and the next job's process while it runs, hold
    nothing of the previous job, while the previous job's own process did hold it."""
    sb = one_zygote
    secrets = [marker() for _ in range(4)]
    code_a = (f"# {secrets[0]}\nimport time\nprint({secrets[1]!r})\nresult = {secrets[2]!r}\n"
              "time.sleep(1.5)\n")
    [bwrap] = sb.zygote_pids()

    async def scan_during(run: asyncio.Task) -> tuple[set[str], set[str]]:
        await asyncio.sleep(0.7)  # the job's process has its job by now, and sleeps
        zygote, *jobs = descendants(bwrap)
        assert jobs, "no job process found under the zygote"
        found_in_jobs = set().union(*(scan_process(pid) for pid in jobs))
        return scan_process(zygote), found_in_jobs

    task_a = asyncio.create_task(sb.run(code_a, {"item": {"name": secrets[3]}}, LIMITS))
    in_zygote, in_a = await scan_during(task_a)
    assert (await task_a).status == "succeeded"
    assert set(secrets) <= in_a, "the host scan found nothing in A: the scan does not work"
    assert not in_zygote, f"the zygote holds a job's data: {in_zygote}"

    task_b = asyncio.create_task(sb.run("import time\ntime.sleep(1.5)\nresult = 1", {}, LIMITS))
    in_zygote, in_b = await scan_during(task_b)
    assert (await task_b).result == 1
    assert not in_zygote, f"the zygote holds the previous job's data: {in_zygote}"
    assert not in_b, f"run B's process holds run A's data: {in_b}"
    await assert_next_run_is_pristine(sb)


async def test_system_v_ipc_cannot_be_made(one_zygote: LocalSandbox) -> None:
    """SysV IPC objects outlive their process: a run could leave data for the next, or memory
    past its own limit. They cannot be made at all; nor can POSIX shared memory or queues."""
    sb = one_zygote
    before = host_ipc()
    code = r'''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, call in (("shm", lambda: libc.shmget(0, 64 << 20, 0o1666)),
                   ("msg", lambda: libc.msgget(0, 0o1666)),
                   ("sem", lambda: libc.semget(0, 4, 0o1666))):
    rc = call()
    out[name] = [rc, os.strerror(ctypes.get_errno()) if rc < 0 else "made"]
try:
    from multiprocessing import shared_memory
    shared_memory.SharedMemory(create=True, size=1 << 20)
    out["posix_shm"] = "made"
except OSError as exc:
    out["posix_shm"] = type(exc).__name__
libc.mq_open.restype = ctypes.c_int
rc = libc.mq_open(b"/q", 0o100 | 0o2, 0o600, None)
out["mq"] = [rc, os.strerror(ctypes.get_errno()) if rc < 0 else "made"]
out["ipc"] = {k: open("/proc/sysvipc/" + k).read().count("\n") - 1 for k in ("shm", "msg", "sem")}
result = out
'''
    r = await sb.run(code, {}, LIMITS)
    assert r.status == "succeeded", r
    for kind in ("shm", "msg", "sem", "mq"):
        assert r.result[kind][0] == -1 and r.result[kind][1] == "Operation not permitted", r.result
    assert r.result["posix_shm"] != "made"
    assert r.result["ipc"] == {"shm": 0, "msg": 0, "sem": 0}
    nxt = await sb.run("result = {k: open('/proc/sysvipc/' + k).read().count('\\n') - 1 "
                       "for k in ('shm', 'msg', 'sem')}", {}, LIMITS)
    assert nxt.result == {"shm": 0, "msg": 0, "sem": 0}
    assert host_ipc() == before, "the host's IPC objects changed"
    await assert_next_run_is_pristine(sb)


TMP_ATTACKS = {
    "chmod-0555": "import os\nopen('/tmp/left', 'w').write('x')\nos.chmod('/tmp', 0o555)",
    "chmod-0-empty": "import os\nos.chmod('/tmp', 0)",
    "chmod-0-full": "import os\nopen('/tmp/left', 'w').write('x')\nos.chmod('/tmp', 0)",
    "1500-nested": "import os\nos.chdir('/tmp')\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\n"
                   "open('deep', 'w').write('x')",
    "deeper-than-path-max": "import os\nos.chdir('/tmp')\nname = 'n' * 250\nfor _ in range(40):\n"
                            "    os.mkdir(name)\n    os.chdir(name)\nopen('deep', 'w').write('x')",
    "locked-tree": "import os\nos.chdir('/tmp')\nfor d in ('a', 'a/b', 'a/b/c'):\n    os.mkdir(d)\n"
                   "    open(d + '/f', 'w').write('x')\nfor d in ('a/b/c', 'a/b', 'a'):\n    os.chmod(d, 0)\n"
                   "os.symlink('/usr', '/tmp/usr')\nos.mkfifo('/tmp/fifo')\nos.chmod('/tmp', 0o1000)",
}


@pytest.mark.parametrize("attack", list(TMP_ATTACKS))
async def test_tmp_is_reset_whatever_the_run_did(one_zygote: LocalSandbox, attack: str) -> None:
    sb = one_zygote
    zygote = sb.zygote_pids()
    r = await sb.run(TMP_ATTACKS[attack], {}, LIMITS)
    assert (r.status, r.error) == ("succeeded", None), r
    await assert_next_run_is_pristine(sb, zygote)


async def test_a_tmp_filled_with_locked_directories_is_emptied(one_zygote: LocalSandbox) -> None:
    sb = one_zygote
    zygote = sb.zygote_pids()
    code = ("import os\nos.chdir('/tmp')\ni = 0\ntry:\n    while True:\n        os.mkdir(str(i))\n"
            "        fd = os.open(f'{i}/f', os.O_CREAT | os.O_WRONLY)\n        os.write(fd, b'x' * 4096)\n"
            "        os.close(fd)\n        os.chmod(str(i), 0)\n        i += 1\n"
            "except OSError:\n    pass\nresult = i")
    r = await sb.run(code, {}, LIMITS)
    assert r.status == "succeeded" and r.result > 100, r
    await assert_next_run_is_pristine(sb, zygote)


async def test_a_flood_of_directories_costs_a_fresh_zygote_not_the_next_run(one_zygote: LocalSandbox) -> None:
    """Directories cost a tmpfs inodes, not bytes: a run can make them until its time is up,
    more than are worth wiping. The zygote then gives up, says so and exits; the host starts a
    fresh one before the next run, which starts as a first run does: no error, no retry, no
    zygote traceback, and no long wait."""
    sb = one_zygote
    zygote = sb.zygote_pids()
    code = ("import os\nos.chdir('/tmp')\ni = 0\nwhile True:\n    os.mkdir(str(i))\n"
            "    os.mkdir(f'{i}/{i}')\n    i += 1")
    r = await sb.run(code, {}, Limits(timeout_seconds=3))
    assert r.status == "timed_out", r
    started = time.monotonic()
    await assert_next_run_is_pristine(sb)
    assert time.monotonic() - started < 5
    assert sb.zygote_pids() != zygote, "a zygote that could not wipe /tmp in time was kept"


# --- found by the red team on the first version of this file's fixes -----------------------

ZYGOTE_TAMPERING = {
    "nofile": "import resource\nresource.prlimit(1, resource.RLIMIT_NOFILE, (10, 20000))",
    "fsize": "import resource\nresource.prlimit(1, resource.RLIMIT_FSIZE, (4096, 4096))",
    "rttime-channel": "import resource\nresource.prlimit(1, resource.RLIMIT_RTTIME, (0x2A6974, 0x2A6974))",
    "nice-user": "import os\nos.setpriority(os.PRIO_USER, 0, 19)",
    "nice-pid": "import os\nos.setpriority(os.PRIO_PROCESS, 1, 19)",
    "affinity": "import os\nos.sched_setaffinity(1, {0})",
    "scheduler": "import os\nos.sched_setscheduler(1, os.SCHED_IDLE, os.sched_param(0))",
}


@pytest.mark.parametrize("attack", list(ZYGOTE_TAMPERING))
async def test_a_run_cannot_change_the_zygote_later_runs_fork_from(one_zygote: LocalSandbox, attack: str) -> None:
    """Limits and scheduling are inherited at fork: changed on the zygote (same uid), they made
    every later run fail, or succeed without running its code."""
    sb = one_zygote
    zygote = sb.zygote_pids()
    r = await sb.run(ZYGOTE_TAMPERING[attack], {}, LIMITS)
    assert r.status == "failed" and "PermissionError" in r.stderr, r
    nxt = await sb.run("import os, resource\nresult = [resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 10, "
                       "os.getpriority(os.PRIO_PROCESS, 0), resource.getrlimit(resource.RLIMIT_RTTIME)]",
                       {}, LIMITS)
    assert (nxt.status, nxt.result) == ("succeeded", [True, 0, [-1, -1]]), nxt
    await assert_next_run_is_pristine(sb, zygote)


FORGED_REPORTS = {
    "huge exit code": "json.dumps({'exit_code': 2**63})",
    "bool exit code": "json.dumps({'exit_code': True})",
    "deep result": "json.dumps({'exit_code': 0, 'result_json': '[' * 100000 + ']' * 100000})",
    "deep report": "'[' * 100000 + ']' * 100000",
    "NaN result": "json.dumps({'exit_code': 0, 'result_json': 'NaN'})",
    "result not text": "json.dumps({'exit_code': 0, 'result_json': 5})",
}


@pytest.mark.parametrize("forged", list(FORGED_REPORTS))
async def test_a_forged_report_fails_the_run_that_forged_it_only(one_zygote: LocalSandbox, forged: str) -> None:
    """The job writes its own report (fd 3) and says it is done (fd 4): whatever it writes, the
    host answers with a clean failure, never an exception or a value no column can hold."""
    sb = one_zygote
    zygote = sb.zygote_pids()
    code = (f"import json, os\ndata = ({FORGED_REPORTS[forged]}).encode()\n"
            "os.ftruncate(3, 0)\nos.pwrite(3, data, 0)\nos.write(4, b'd')\nos._exit(0)")
    r = await sb.run(code, {}, LIMITS)
    assert r.status == "failed" and r.result is None, r
    assert r.exit_code is None or 0 <= r.exit_code <= 255
    await assert_next_run_is_pristine(sb, zygote)


async def test_the_next_run_finds_none_of_the_file_names_of_the_previous(one_zygote: LocalSandbox) -> None:
    """The wipe must not read the job's file names into the zygote (every later child is forked
    from its memory): an automation that names temporary files after its data leaked them."""
    sb = one_zygote
    names = [marker() for _ in range(300)]
    code = f"import os\nfor name in {names!r}:\n    open('/tmp/' + name, 'w').close()\nos.mkdir('/tmp/d')\n" \
           f"open('/tmp/d/' + {names[0]!r}, 'w').close()"
    assert (await sb.run(code, {}, LIMITS)).status == "succeeded"
    b = await sb.run(SCANNER, {}, LIMITS)
    assert (b.status, b.result) == ("succeeded", []), f"run B found run A's file names: {b.result[:5]}"
    await assert_next_run_is_pristine(sb)


async def test_tmp_keeps_no_attribute_or_time_of_the_previous_run(one_zygote: LocalSandbox) -> None:
    sb = one_zygote
    code = r'''
import os
out = {}
for name, call in (("acl", lambda: os.setxattr("/tmp", "system.posix_acl_default", b"\x02\x00\x00\x00")),
                   ("user", lambda: os.setxattr("/tmp", "user.note", b"A was here"))):
    try:
        call()
        out[name] = "set"
    except OSError as exc:
        out[name] = exc.errno
os.utime("/tmp", ns=(0x5345435245542121, 0x5345435245542121))
result = out
'''
    r = await sb.run(code, {}, LIMITS)
    assert r.result == {"acl": 1, "user": 1}, r  # EPERM
    b = await sb.run("import os\nst = os.stat('/tmp')\nresult = [os.listxattr('/tmp'), st.st_atime_ns, st.st_mtime_ns]",
                     {}, LIMITS)
    assert b.result == [[], 0, 0], b
    await assert_next_run_is_pristine(sb)


async def test_memfd_is_refused(one_zygote: LocalSandbox) -> None:
    """memfds are kernel memory outside every rlimit: a run held 1 GiB of them at memory_mb=64."""
    r = await one_zygote.run("import os\ntry:\n    os.memfd_create('x')\n    result = 'made'\n"
                             "except OSError as exc:\n    result = exc.errno", {}, LIMITS)
    assert r.result == 1, r
    await assert_next_run_is_pristine(one_zygote)


@pytest.mark.parametrize("trick", ["os.close(4)", "os.write(4, b'x')"])
async def test_tampering_with_the_done_pipe_keeps_the_deadline(one_zygote: LocalSandbox, trick: str) -> None:
    sb = one_zygote
    zygote = sb.zygote_pids()
    r = await sb.run(f"import os, time\n{trick}\nwhile True:\n    print('still here', flush=True)\n"
                     "    time.sleep(0.1)", {}, Limits(timeout_seconds=1))
    assert r.status == "timed_out" and r.error == "timed out after 1s", r
    assert r.duration_ms < 2500, r
    await assert_next_run_is_pristine(sb, zygote)
