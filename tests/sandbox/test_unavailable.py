"""No sandbox, no run: the reason is precise, and nothing ever runs unsandboxed."""

from __future__ import annotations

import pytest

from itemflow.sandbox import Limits, LocalSandbox, SandboxUnavailable, local


async def test_missing_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "BWRAP", "/nonexistent/bwrap")
    sb = LocalSandbox(pool_size=1)
    with pytest.raises(SandboxUnavailable, match=r"bubblewrap not found at /nonexistent/bwrap \(apt-get install"):
        await sb.start()
    assert "bubblewrap not found" in (await sb.check() or "")
    with pytest.raises(SandboxUnavailable, match="bubblewrap not found"):
        await sb.run("print(1)", {}, Limits())


async def test_missing_interpreter() -> None:
    sb = LocalSandbox(pool_size=1, python="/nonexistent/python3")
    with pytest.raises(SandboxUnavailable, match="no Python interpreter at /nonexistent/python3"):
        await sb.start()


async def test_unreadable_interpreter_is_reported() -> None:
    """The venv's pyenv interpreter lives under /root (0700): the sandbox uid cannot read it."""
    import os
    import sys

    python = os.path.realpath(sys.executable)  # noqa: ASYNC240
    if not python.startswith("/root/") or os.getuid() != 0:
        pytest.skip("the test interpreter is not under /root")
    sb = LocalSandbox(pool_size=1, python=python)
    with pytest.raises(SandboxUnavailable, match="did not start") as info:
        await sb.start()
    assert "/root/" in str(info.value)
    assert await sb.check() == str(info.value)


async def test_not_started_is_not_healthy() -> None:
    assert await LocalSandbox(pool_size=1).check() == "sandbox not started"


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="timeout_seconds"):
        Limits(timeout_seconds=0)
    with pytest.raises(ValueError, match="memory_mb"):
        Limits(memory_mb=0)


def test_zygote_refuses_to_run_outside_a_sandbox() -> None:
    """Its clean-up (kill(-1), wiping /tmp) is only sane as PID 1 of its own namespaces with a
    private /tmp: started bare, it must refuse before doing anything. Run as a uid that owns no
    process and no file, so that even a failing guard could harm nothing."""
    import json
    import socket
    import struct
    import subprocess

    from .conftest import SANDBOX_UID

    ours, theirs = socket.socketpair()
    with ours, theirs:
        proc = subprocess.run(
            ["/usr/bin/setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups",
             "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
             local.default_python(), "-I", "-S", "-c", local.ZYGOTE_SOURCE, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), capture_output=True, timeout=30, env={}, check=False)
        theirs.close()
        data = ours.recv(65536)
    (length,) = struct.unpack("!I", data[:4])
    message = json.loads(data[4 : 4 + length])
    assert message["ready"] is False
    assert "not a sandbox" in message["error"] or "PID 1" in message["error"]
    assert proc.returncode == 0, proc.stderr
