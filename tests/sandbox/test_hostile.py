"""Every hostile case of docs/architecture.md section 5, each on its own. Each shows three
things: the run gets the right status and error, the sandbox serves the next run cleanly (no
leftover process or file), and the host is untouched."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from pathlib import Path

import pytest

from itemflow.sandbox import Limits, LocalSandbox

from .conftest import FAST, SANDBOX_UID, assert_no_strays, sandbox_uid_processes


async def assert_serves_cleanly(sb: LocalSandbox) -> None:
    """No process left behind, an empty /tmp, and a trivial run that works, on every zygote."""
    assert_no_strays(sb)
    results = await asyncio.gather(*(sb.run("import os\nresult = os.listdir('/tmp')", {}, FAST)
                                     for _ in range(sb.pool_size * 2)))
    for r in results:
        assert (r.status, r.result) == ("succeeded", []), r
    assert await sb.check() is None


async def test_infinite_loop(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("while True:\n    pass", {}, Limits(timeout_seconds=1))
    assert r.status == "timed_out" and r.error == "timed out after 1s"
    await assert_serves_cleanly(sandbox)


async def test_sleep_forever(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import time\ntime.sleep(10**6)", {}, Limits(timeout_seconds=0.5))
    assert r.status == "timed_out" and r.error == "timed out after 0.5s"
    await assert_serves_cleanly(sandbox)


async def test_signals_ignored_then_loop(sandbox: LocalSandbox) -> None:
    code = ("import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
            "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass")
    r = await sandbox.run(code, {}, Limits(timeout_seconds=1))
    assert r.status == "timed_out"
    await assert_serves_cleanly(sandbox)


async def test_memory_bomb(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("x = bytearray(1024 * 1024 * 1024)", {}, Limits(timeout_seconds=2, memory_mb=64))
    assert r.status == "failed" and r.error == "memory limit 64 MB exceeded"
    assert "MemoryError" in r.stderr
    await assert_serves_cleanly(sandbox)


async def test_memory_bomb_growing(sandbox: LocalSandbox) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(b'x' * (1024 * 1024))"
    r = await sandbox.run(code, {}, Limits(timeout_seconds=5, memory_mb=96))
    assert r.status == "failed" and r.error == "memory limit 96 MB exceeded"
    await assert_serves_cleanly(sandbox)


async def test_fork_bomb(sandbox: LocalSandbox) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(sandbox_uid_processes()))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        r = await sandbox.run(code, {}, Limits(timeout_seconds=1.5, max_processes=16))
    finally:
        watcher.cancel()
    assert r.status == "timed_out"
    # The job's processes never exceed its limit (plus each zygote's bwrap, itself and its idle child).
    assert peak <= 16 + 3 * sandbox.pool_size
    await assert_serves_cleanly(sandbox)


async def test_fork_bomb_escaping_the_process_group(sandbox: LocalSandbox) -> None:
    code = ("import os\nfor _ in range(10):\n    if os.fork() == 0:\n        os.setsid()\n"
            "        while True:\n            pass\nprint('parent done')")
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "succeeded" and r.stdout == "parent done\n"
    await assert_serves_cleanly(sandbox)


async def test_daemon_left_behind_is_killed(sandbox: LocalSandbox) -> None:
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(1)\n        open('/tmp/daemon-was-here', 'w').write('x')\n"
            "        time.sleep(100)\n    os._exit(0)\nprint('bye')")
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "succeeded"
    assert_no_strays(sandbox)
    await asyncio.sleep(1.5)
    await assert_serves_cleanly(sandbox)  # /tmp still empty: the daemon never woke up


async def test_thread_bomb(sandbox: LocalSandbox) -> None:
    code = ("import threading, time\nn = 0\nwhile True:\n    try:\n"
            "        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n        n += 1\n"
            "    except RuntimeError:\n        print('threads:', n, flush=True)\n        time.sleep(100)")
    r = await sandbox.run(code, {}, Limits(timeout_seconds=1.5, max_processes=16))
    assert r.status == "timed_out"
    count = int(r.stdout.split()[1])
    assert count < 16
    await assert_serves_cleanly(sandbox)


async def test_fill_tmp(sandbox: LocalSandbox) -> None:
    code = ("import os\nn = 0\nwhile True:\n    with open(f'/tmp/f{n}', 'wb') as f:\n"
            "        f.write(b'x' * 1024 * 1024)\n    n += 1")
    r = await sandbox.run(code, {}, Limits(timeout_seconds=5))
    assert r.status == "failed" and r.exit_code == 1
    assert "No space left on device" in r.stderr
    await assert_serves_cleanly(sandbox)


async def test_one_huge_file(sandbox: LocalSandbox) -> None:
    code = "with open('/tmp/big', 'wb') as f:\n    f.write(b'x' * (8 * 1024 * 1024))"
    r = await sandbox.run(code, {}, Limits(timeout_seconds=5, max_file_bytes=1024 * 1024))
    assert r.status == "failed"
    assert "File too large" in r.stderr
    await assert_serves_cleanly(sandbox)


@pytest.mark.parametrize("path", ["/big", "/usr/big", "/usr/lib/python3.11/os.py", "/dev/big", "/proc/big",
                                  "/dev/shm/big"])
async def test_fill_root_and_system_dirs(sandbox: LocalSandbox, path: str) -> None:
    code = f"with open({path!r}, 'ab') as f:\n    f.write(b'x' * 1024 * 1024)"
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "failed"
    assert any(e in r.stderr for e in ("Read-only file system", "No such file", "Permission denied")), r.stderr
    await assert_serves_cleanly(sandbox)


async def test_write_usr_does_not_touch_host(sandbox: LocalSandbox) -> None:
    marker = f"/usr/itemflow-marker-{uuid.uuid4().hex}"
    r = await sandbox.run(f"open({marker!r}, 'w').write('x')", {}, FAST)
    assert r.status == "failed" and "Read-only file system" in r.stderr
    assert not Path(marker).exists()  # noqa: ASYNC240
    assert os.stat("/usr/lib/python3.11/os.py").st_size > 0


async def test_cannot_remount_writable(sandbox: LocalSandbox) -> None:
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "MS_REMOUNT, MS_BIND = 32, 4096\n"
            "rc = libc.mount(None, b'/usr', None, MS_REMOUNT | MS_BIND, None)\n"
            "result = [rc, os.strerror(ctypes.get_errno())]")
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "succeeded", r.stderr
    assert r.result == [-1, "Operation not permitted"]
    await assert_serves_cleanly(sandbox)


async def test_read_proc1_environ_and_parent_environment() -> None:
    secret = f"itemflow-secret-{uuid.uuid4().hex}"
    os.environ["ITEMFLOW_TEST_SECRET"] = secret
    sb = LocalSandbox(pool_size=1, uid=SANDBOX_UID, gid=SANDBOX_UID)
    try:
        await sb.start()
        code = ("import os\nfound = [repr(dict(os.environ))]\n"
                "for pid in os.listdir('/proc'):\n    if pid.isdigit():\n"
                "        for what in ('environ', 'cmdline'):\n"
                "            try:\n                found.append(open(f'/proc/{pid}/{what}', 'rb').read().decode())\n"
                "            except OSError as e:\n                found.append(f'{pid}/{what}: {e.strerror}')\n"
                "print('\\n'.join(found))")
        r = await sb.run(code, {}, FAST)
        assert r.status == "succeeded", r.stderr
        assert secret not in r.stdout and "ITEMFLOW_TEST_SECRET" not in r.stdout
        assert "1/environ: Permission denied" in r.stdout  # the zygote is not dumpable
        assert "{}" in r.stdout  # os.environ is empty
        r = await sb.run("import os\nresult = open(f'/proc/{os.getppid()}/environ', 'rb').read().decode()", {}, FAST)
        assert secret not in (r.stdout + r.stderr + str(r.result))
    finally:
        os.environ.pop("ITEMFLOW_TEST_SECRET", None)
        await sb.close()


async def test_sees_only_its_own_processes(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import os\nresult = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())", {}, FAST)
    assert r.status == "succeeded"
    assert r.result[0] == 1 and len(r.result) <= 3  # the zygote, this run (and /proc's own reader)


async def test_cannot_read_zygote_memory(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("open('/proc/1/mem', 'rb').read(1)", {}, FAST)
    assert r.status == "failed" and "Permission denied" in r.stderr
    await assert_serves_cleanly(sandbox)


@pytest.mark.parametrize("port", [5432, 6379])
async def test_connect_to_local_services(sandbox: LocalSandbox, port: int) -> None:
    code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "print('CONNECTED')")
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "failed" and "CONNECTED" not in r.stdout
    assert "Address family not supported" in r.stderr
    await assert_serves_cleanly(sandbox)


async def test_no_network_families_but_unix(sandbox: LocalSandbox) -> None:
    code = ("import socket\nout = {}\n"
            "for name in ('AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_PACKET', 'AF_UNIX'):\n"
            "    try:\n        socket.socket(getattr(socket, name), socket.SOCK_DGRAM).close()\n"
            "        out[name] = 'allowed'\n    except OSError as e:\n        out[name] = e.strerror\n"
            "result = out")
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "succeeded", r.stderr
    assert r.result.pop("AF_UNIX") == "allowed"
    assert set(r.result.values()) == {"Address family not supported by protocol"}


async def test_one_gigabyte_of_output(sandbox: LocalSandbox) -> None:
    code = "import sys\nchunk = 'x' * 65536\nfor _ in range(16384):\n    sys.stdout.write(chunk)"
    r = await sandbox.run(code, {}, Limits(timeout_seconds=10))
    assert r.status == "failed"
    assert r.stdout_truncated and len(r.stdout) == Limits().output_bytes
    assert "stdout exceeded" in r.error
    assert r.duration_ms < 5000
    await assert_serves_cleanly(sandbox)


async def test_one_gigabyte_of_stderr(sandbox: LocalSandbox) -> None:
    code = "import os\nchunk = b'e' * 65536\nfor _ in range(16384):\n    os.write(2, chunk)"
    r = await sandbox.run(code, {}, Limits(timeout_seconds=10, output_bytes=100))
    assert r.status == "failed"
    assert r.stderr_truncated and r.stderr == "e" * 100
    await assert_serves_cleanly(sandbox)


async def test_kill_the_parent_and_the_zygote(sandbox: LocalSandbox) -> None:
    before = sandbox.zygote_pids()
    code = ("import os, signal\nout = []\n"
            "for target in (os.getppid(), 1, -1, 0 - os.getpgid(1)):\n"
            "    try:\n        os.kill(target, signal.SIGKILL)\n        out.append('sent')\n"
            "    except OSError as e:\n        out.append(e.strerror)\n"
            "result = [os.getppid(), out]")
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "succeeded", r
    assert r.result[0] == 1
    assert sandbox.zygote_pids() == before  # nobody died, nothing had to be replaced
    await assert_serves_cleanly(sandbox)


@pytest.mark.parametrize("syscall", ["ptrace", "mount", "unshare", "setns", "bpf", "perf_event_open",
                                     "io_uring_setup", "keyctl", "process_vm_readv", "userfaultfd"])
async def test_denied_syscalls(sandbox: LocalSandbox, syscall: str) -> None:
    numbers = {"ptrace": 101, "mount": 165, "unshare": 272, "setns": 308, "bpf": 321, "perf_event_open": 298,
               "io_uring_setup": 425, "keyctl": 250, "process_vm_readv": 310, "userfaultfd": 323}
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"rc = libc.syscall({numbers[syscall]}, 16, 1, 0, 0, 0, 0)\n"
            "result = [rc, os.strerror(ctypes.get_errno())]")
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "succeeded", r.stderr
    assert r.result == [-1, "Operation not permitted"]


async def test_ptrace_attach_to_zygote(sandbox: LocalSandbox) -> None:
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "PTRACE_ATTACH = 16\nrc = libc.ptrace(PTRACE_ATTACH, 1, None, None)\n"
            "result = [rc, os.strerror(ctypes.get_errno())]")
    r = await sandbox.run(code, {}, FAST)
    assert r.result == [-1, "Operation not permitted"]
    await assert_serves_cleanly(sandbox)


async def test_no_new_user_namespace(sandbox: LocalSandbox) -> None:
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "CLONE_NEWUSER = 0x10000000\nrc = libc.unshare(CLONE_NEWUSER)\n"
            "result = [rc, os.strerror(ctypes.get_errno()), os.getuid()]")
    r = await sandbox.run(code, {}, FAST)
    assert r.result == [-1, "Operation not permitted", SANDBOX_UID]


async def test_another_runs_files_are_gone(sandbox: LocalSandbox) -> None:
    secret = uuid.uuid4().hex
    code = (f"import os\nos.makedirs('/tmp/a/b')\nopen('/tmp/a/b/secret', 'w').write({secret!r})\n"
            f"open('/tmp/top', 'w').write({secret!r})\nos.chmod('/tmp/a/b', 0)\nos.chmod('/tmp/a', 0)")
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "succeeded", r.stderr
    for _ in range(sandbox.pool_size * 2):  # whichever zygote the next runs land on
        r = await sandbox.run("import os\nresult = os.listdir('/tmp')", {}, FAST)
        assert r.result == []
    assert_no_strays(sandbox)


async def test_host_files_are_invisible(sandbox: LocalSandbox, tmp_path: Path) -> None:
    db = tmp_path / "itemflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table secrets (v text)")
        conn.execute("insert into secrets values ('top-secret')")
    os.chmod(tmp_path, 0o755)
    os.chmod(db, 0o644)  # readable by anyone on the host: the sandbox must still not see it
    targets = ["/etc/shadow", "/etc/passwd", "/root", "/root/.bashrc", str(db), "/work", "/var/lib/postgresql",
               "/home", "/etc/hostname"]
    code = ("import os\nout = {}\n"
            f"for p in {targets!r}:\n"
            "    try:\n"
            "        out[p] = os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read(100).decode('latin-1')\n"
            "    except OSError as e:\n        out[p] = e.strerror\nresult = out")
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "succeeded", r.stderr
    assert set(r.result.values()) == {"No such file or directory"}, r.result
    code = f"import sqlite3\nsqlite3.connect('file:{db}?mode=ro', uri=True).execute('select 1')"
    r = await sandbox.run(code, {}, FAST)
    assert r.status == "failed" and "unable to open database" in r.stderr


async def test_root_holds_only_the_interpreter(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import os\nresult = [sorted(os.listdir('/')), sorted(os.listdir('/usr'))]", {}, FAST)
    top, usr = r.result
    assert set(top) <= {"bin", "dev", "lib", "lib64", "proc", "sbin", "tmp", "usr"}
    assert set(usr) <= {"bin", "lib", "lib64"}
    r = await sandbox.run("import os\nresult = os.listdir('/usr/bin')", {}, FAST)
    assert r.result == ["python3.11"]


async def test_host_tmp_untouched(sandbox: LocalSandbox, tmp_path: Path) -> None:
    canary = Path("/tmp") / f"itemflow-canary-{uuid.uuid4().hex}"
    canary.write_text("still here")
    try:
        r = await sandbox.run(f"import os\nprint(os.path.exists({str(canary)!r}))\nopen('/tmp/x', 'w')", {}, FAST)
        assert r.stdout == "False\n"
        await assert_serves_cleanly(sandbox)  # wipes the sandbox's /tmp...
        assert canary.read_text() == "still here"  # ...never the host's
    finally:
        canary.unlink()


async def test_zygote_that_dies_is_replaced(sandbox: LocalSandbox) -> None:
    for pid in sandbox.zygote_pids():
        os.kill(pid, 9)  # from the host: the job itself cannot
    await asyncio.sleep(0.2)
    results = await asyncio.gather(*(sandbox.run("result = 1", {}, FAST) for _ in range(sandbox.pool_size * 3)))
    for r in results:
        assert r.result == 1 or (r.status == "failed" and "died" in (r.error or "")), r
    results = await asyncio.gather(*(sandbox.run("result = 2", {}, FAST) for _ in range(sandbox.pool_size * 2)))
    assert [r.result for r in results] == [2] * sandbox.pool_size * 2
    await assert_serves_cleanly(sandbox)


async def test_cancelled_run_replaces_the_zygote(sandbox: LocalSandbox) -> None:
    task = asyncio.create_task(sandbox.run("import time\ntime.sleep(30)", {}, Limits(timeout_seconds=30)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_serves_cleanly(sandbox)


async def test_forged_completion_signal(sandbox: LocalSandbox) -> None:
    """Writing the zygote's "done" byte early only cuts the job itself short."""
    code = "import os, time\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'd')\n    except OSError:\n" \
           "        pass\ntime.sleep(5)"
    r = await sandbox.run(code, {}, Limits(timeout_seconds=3))
    assert r.status in ("failed", "timed_out")
    assert r.duration_ms < 3000 or r.status == "timed_out"
    await assert_serves_cleanly(sandbox)


async def test_closes_its_output_and_keeps_running(sandbox: LocalSandbox) -> None:
    r = await sandbox.run("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(10)", {}, Limits(timeout_seconds=0.5))
    assert r.status == "timed_out"
    await assert_serves_cleanly(sandbox)
