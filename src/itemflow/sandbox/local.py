"""LocalSandbox: a pool of warm zygotes, each a Python process locked in bubblewrap.

Layers, outermost first (docs/architecture.md, section 5):

1. The host (root here) drops to an unprivileged uid/gid with ``setpriv`` (no groups, no
   capabilities in any set, no_new_privs): bwrap run as root would keep its capabilities.
2. ``bwrap``: every namespace unshared (no network, own PID namespace with the zygote as PID 1,
   own IPC/UTS/cgroup/user namespaces, nested user namespaces disabled), no capabilities, a new
   session, an empty environment, and a root holding only read-only binds of the interpreter,
   its standard library and the shared libraries they load; ``/`` and ``/dev`` remounted
   read-only; a size-capped tmpfs ``/tmp``; a seccomp deny-list loaded with ``--seccomp FD``.
3. The zygote (``_zygote.py``) forks one child per job with per-process rlimits (AS, CPU,
   NPROC, FSIZE, NOFILE), kills every leftover process of the job and wipes ``/tmp``.
4. The host enforces a backstop wall-clock timeout, caps what it reads from the job's pipes,
   and replaces a zygote that died or stopped answering.

There is no unsandboxed fallback: if any layer cannot be set up, ``start()`` and ``run()``
raise ``SandboxUnavailable`` with the reason, and ``check()`` returns it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from itemflow.sandbox import seccomp
from itemflow.sandbox.base import Limits, SandboxResult, SandboxUnavailable

log = logging.getLogger("itemflow.sandbox")

BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
DEFAULT_PYTHONS = ("/usr/bin/python3.11", "/usr/bin/python3")
NOBODY = 65534
# Past the cap, the host keeps reading (and dropping) output up to this many bytes per stream,
# so a chatty job can still finish; beyond it the pipe is closed and the job's writes fail.
DRAIN_FACTOR = 16
MIN_DRAIN_BYTES = 1024 * 1024
START_TIMEOUT = 15.0
# On top of the job's own limit, how long the host waits for the zygote to kill, reap and answer.
BACKSTOP_GRACE = 5.0
# How long the zygote may take to reset /tmp after a job before it is replaced.
CLEAN_TIMEOUT = 15.0
# The largest report (the run's result) the host reads.
MAX_REPORT = 16 * 1024 * 1024
ZYGOTE_SOURCE = (Path(__file__).parent / "_zygote.py").read_text()
SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


@dataclass(frozen=True)
class Layout:
    """What of the host's file system the sandbox sees: read-only, nothing else."""

    python: str  # real path of the interpreter
    binds: tuple[tuple[str, str], ...]  # (host source, sandbox destination)
    symlinks: tuple[tuple[str, str], ...]  # (target, sandbox path), mirroring merged-/usr links


@cache
def discover_layout(python: str) -> Layout:
    """Find the interpreter's stdlib and every shared library it or its extension modules load."""
    real = os.path.realpath(python)
    if not os.path.isfile(real):
        raise SandboxUnavailable(f"no Python interpreter at {python} (apt-get install python3)")
    probe = ("import json, sys, sysconfig; print(json.dumps({'stdlib': sysconfig.get_paths()['stdlib'], "
             "'platstdlib': sysconfig.get_paths()['platstdlib'], 'dynload': sysconfig.get_config_var('DESTSHARED')}))")
    try:
        out = subprocess.run([real, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=30,  # noqa: S603
                             check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailable(f"cannot run {real}: {exc}") from exc
    paths = json.loads(out)
    dirs = {os.path.realpath(p) for p in paths.values() if p and os.path.isdir(p)}
    binds: dict[str, str] = {real: real}
    for d in sorted(dirs):
        binds[d] = d
    objects = [real]
    for d in dirs:
        objects += [str(p) for p in Path(d).glob("*.so")]
    ldd = shutil.which("ldd") or "/usr/bin/ldd"
    try:
        listing = subprocess.run([ldd, *objects], capture_output=True, text=True, timeout=60,  # noqa: S603
                                 env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailable(f"cannot list the shared libraries of {real} with ldd: {exc}") from exc
    for line in listing.splitlines():
        parts = line.split()
        if "=>" in parts:
            i = parts.index("=>")
            path = parts[i + 1] if len(parts) > i + 1 else ""
        else:
            path = parts[0] if parts else ""
        if not path.startswith("/") or not os.path.exists(path):
            continue
        target = os.path.realpath(path)
        # The library under the name the loader asks for, in its directory with links resolved.
        binds[os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))] = target
        binds[target] = target
    symlinks = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            symlinks.append((os.readlink(top), top))
    return Layout(python=real, binds=tuple((src, dst) for dst, src in sorted(binds.items())),
                  symlinks=tuple(symlinks))


def preflight(python: str) -> None:
    """Raise SandboxUnavailable with the precise reason if this host cannot sandbox at all."""
    if not os.access(BWRAP, os.X_OK):
        raise SandboxUnavailable(f"bubblewrap not found at {BWRAP} (apt-get install bubblewrap)")
    if os.geteuid() == 0 and not os.access(SETPRIV, os.X_OK):
        raise SandboxUnavailable(f"setpriv not found at {SETPRIV} (apt-get install util-linux)")
    try:
        max_ns = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        max_ns = None
    if max_ns == 0:
        raise SandboxUnavailable("user namespaces are disabled (sysctl user.max_user_namespaces=0)")
    with contextlib.suppress(OSError, ValueError):
        if Path("/proc/sys/kernel/unprivileged_userns_clone").read_text().strip() == "0":
            raise SandboxUnavailable("unprivileged user namespaces are disabled "
                                     "(sysctl kernel.unprivileged_userns_clone=0)")
    try:
        seccomp.compile_filter()
    except seccomp.SeccompError as exc:
        raise SandboxUnavailable(f"cannot build the seccomp filter: {exc}") from exc
    discover_layout(python)


def bwrap_command(layout: Layout, *, uid: int, gid: int, tmp_bytes: int, seccomp_fd: int, ctl_fd: int) -> list[str]:
    cmd: list[str] = []
    if os.geteuid() == 0:
        cmd += [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs", "--"]
    cmd += [BWRAP, "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL",
            "--die-with-parent", "--new-session", "--clearenv", "--as-pid-1", "--hostname", "sandbox"]
    for target, path in layout.symlinks:
        cmd += ["--symlink", target, path]
    for src, dst in layout.binds:
        cmd += ["--ro-bind", src, dst]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp",  # noqa: S108
            "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/",
            "--seccomp", str(seccomp_fd),
            "--", layout.python, "-I", "-S", "-B", "-c", ZYGOTE_SOURCE, str(ctl_fd)]
    return cmd


def _validate_checks(checks: dict[str, Any], uid: int) -> None:
    """The zygote reports what it sees; refuse it unless every wall is in place."""
    problems = []
    if checks.get("pid") != 1:
        problems.append(f"zygote is pid {checks.get('pid')}, not 1 of its own PID namespace")
    if os.geteuid() == 0 and (checks.get("uid") == 0 or checks.get("euid") == 0):
        problems.append("zygote runs as uid 0")
    for cap in ("CapEff", "CapPrm", "CapBnd"):
        if int(checks.get(cap, "1"), 16) != 0:
            problems.append(f"{cap}={checks.get(cap)}: capabilities not dropped")
    if checks.get("NoNewPrivs") != "1":
        problems.append("no_new_privs is not set")
    if checks.get("Seccomp") != "2":
        problems.append("seccomp filter not loaded")
    if checks.get("inet_socket") == "allowed":
        problems.append("an AF_INET socket could be created")
    if checks.get("root_fs") != "read-only":
        problems.append("the sandbox root is writable")
    if problems:
        raise SandboxUnavailable("sandbox self-check failed: " + "; ".join(problems))


class _Capture:
    """Read one of the job's output pipes on the event loop: keep cap+1 bytes, drop the rest."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, cap: int) -> None:
        self.loop, self.fd, self.cap = loop, fd, cap
        self.drain_limit = max(cap * DRAIN_FACTOR, MIN_DRAIN_BYTES)
        self.buf = bytearray()
        self.total = 0
        self.cut_off = False
        self.done: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.total += len(data)
        room = self.cap + 1 - len(self.buf)
        if room > 0:
            self.buf += data[:room]
        if self.total > self.drain_limit:
            self.cut_off = True
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        if not self.done.done():
            self.done.set_result(None)

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def text(self) -> str:
        data = bytes(self.buf[: self.cap])
        # Cut inside a UTF-8 sequence: drop the partial character rather than show a replacement.
        return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=not self.truncated)


class ZygoteDied(Exception):
    pass


class _Zygote:
    def __init__(self, sandbox: LocalSandbox, index: int) -> None:
        self.sandbox = sandbox
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.stderr_tail: deque[bytes] = deque(maxlen=64)
        self._stderr_task: asyncio.Task[None] | None = None
        self.alive = False
        self.jobs = 0
        self.cleaning = False  # a job ran; the zygote's "clean" frame has not been read yet
        self._rbuf = bytearray()

    async def start(self) -> None:
        sb = self.sandbox
        loop = asyncio.get_running_loop()
        self.stderr_tail.clear()  # a replaced zygote's words are not this one's
        host_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        filter_fd = seccomp.filter_fd()
        try:
            cmd = bwrap_command(sb.layout, uid=sb.uid, gid=sb.gid, tmp_bytes=sb.tmp_bytes,
                                seccomp_fd=filter_fd, ctl_fd=zygote_end.fileno())
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(filter_fd, zygote_end.fileno()), env={"PATH": "/usr/bin:/bin"},
                start_new_session=True)
        except OSError as exc:
            host_end.close()
            raise SandboxUnavailable(f"cannot start bubblewrap: {exc}") from exc
        finally:
            os.close(filter_fd)
            zygote_end.close()
        host_end.setblocking(False)
        self.sock = host_end
        self._rbuf = bytearray()
        self.cleaning = False
        self._stderr_task = loop.create_task(self._read_stderr())
        try:
            ready = await asyncio.wait_for(self._read_frame(), START_TIMEOUT)
        except (ZygoteDied, TimeoutError) as exc:
            await self.kill()
            why = self.stderr_text() or (f"no answer within {START_TIMEOUT}s" if isinstance(exc, TimeoutError)
                                         else "it exited without a word")
            raise SandboxUnavailable(f"the sandbox did not start: {why}") from None
        if not ready.get("ready"):
            await self.kill()
            raise SandboxUnavailable(f"the sandbox did not start: {ready.get('error')}")
        try:
            _validate_checks(ready["checks"], sb.uid)
        except SandboxUnavailable:
            await self.kill()
            raise
        self.checks = ready["checks"]
        self.alive = True

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with contextlib.suppress(Exception):
            while chunk := await self.proc.stderr.read(4096):
                self.stderr_tail.append(chunk)

    def stderr_text(self) -> str:
        return b"".join(self.stderr_tail).decode("utf-8", "replace").strip()[-2000:]

    async def _recv(self, n: int) -> bytes:
        """Exactly n bytes from the control socket (reading ahead into a buffer: one recv per reply)."""
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        while len(self._rbuf) < n:
            try:
                chunk = await loop.sock_recv(self.sock, max(65536, n - len(self._rbuf)))
            except OSError:
                chunk = b""
            if not chunk:
                self.alive = False
                raise ZygoteDied
            self._rbuf += chunk
        data, self._rbuf = bytes(self._rbuf[:n]), self._rbuf[n:]
        return data

    async def _read_frame(self) -> dict[str, Any]:
        (length,) = struct.unpack("!I", await self._recv(4))
        return json.loads(await self._recv(length))

    async def ready(self) -> bool:
        """Wait until the zygote has cleaned up after its last job. False: replace it."""
        if not self.alive:
            return False
        if self.cleaning:
            try:
                frame = await asyncio.wait_for(self._read_frame(), CLEAN_TIMEOUT)
            except (ZygoteDied, TimeoutError):
                return False
            if not frame.get("clean"):
                log.warning("sandbox worker %s could not clean up: %s", self.index, frame.get("error"))
                return False
            self.cleaning = False
        return True

    async def run(self, code: str, input_json: str, limits: Limits) -> SandboxResult:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        # The job goes straight to the pre-forked process in a memfd, and its report comes back
        # in another: the zygote passes both on but never reads either (see _zygote.py).
        job = json.dumps({"code": code, "timeout": limits.timeout_seconds,
                          "memory_mb": limits.memory_mb, "max_processes": limits.max_processes,
                          "max_file_bytes": limits.max_file_bytes}).encode()
        job_fd = os.memfd_create("job", os.MFD_CLOEXEC)
        stdin_fd = os.memfd_create("stdin", os.MFD_CLOEXEC)  # the event, as the job's stdin
        report_fd = os.memfd_create("report", os.MFD_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        started = time.perf_counter()
        try:
            _write_all(job_fd, job)
            _write_all(stdin_fd, input_json.encode())
            try:
                socket.send_fds(self.sock, [b"G" + struct.pack("!d", limits.timeout_seconds)],
                                [job_fd, stdin_fd, report_fd, out_w, err_w])
            except OSError as exc:  # BlockingIOError included: the zygote stopped reading
                self.alive = False
                raise ZygoteDied from exc
        finally:
            for fd in (job_fd, stdin_fd, out_w, err_w):
                os.close(fd)
        out = _Capture(loop, out_r, limits.output_bytes)
        err = _Capture(loop, err_r, limits.output_bytes)
        try:
            self.jobs += 1
            self.cleaning = True
            try:
                async with asyncio.timeout(limits.timeout_seconds + BACKSTOP_GRACE):
                    reply = await self._read_frame()
            except TimeoutError:
                # The zygote did not come back after the job's own deadline: replace it.
                await self.kill()
                return SandboxResult(
                    status="timed_out", exit_code=None, stdout=out.text(), stderr=err.text(),
                    stdout_truncated=out.truncated, stderr_truncated=err.truncated,
                    error=f"timed out after {_secs(limits.timeout_seconds)} (sandbox worker unresponsive, replaced)",
                    duration_ms=(time.perf_counter() - started) * 1000)
            wall_ms = (time.perf_counter() - started) * 1000
            report = _read_report(report_fd)
            # Every writer is dead by now (the zygote killed the job's leftovers): EOF is immediate.
            if not (out.done.done() and err.done.done()):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await out.done
                        await err.done
        finally:
            os.close(report_fd)
            out.close()
            err.close()
        duration_ms = (time.perf_counter() - started) * 1000
        return _result_of(reply, report, out, err, limits, wall_ms, duration_ms)

    async def kill(self) -> None:
        self.alive = False
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()  # bwrap; --die-with-parent and PID 1 exiting take the rest
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), 5)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(BaseException):
                await self._stderr_task
            self._stderr_task = None

    async def close(self) -> None:
        """Ask politely (EOF on the control socket), then kill."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 2)
        await self.kill()


def _secs(value: float) -> str:
    return f"{value:g}s"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_report(fd: int) -> dict[str, Any]:
    """The job's report: what its process wrote to the report memfd (the job may forge it)."""
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if not size:
            return {}
        if size > MAX_REPORT:
            return {"report_error": f"the result is larger than {MAX_REPORT} bytes"}
        report = _decode(os.pread(fd, size, 0).decode("utf-8", "replace"))
    except Exception as exc:  # the job may have written anything: nesting, NaN, garbage
        return {"report_error": f"the run's report could not be read: {type(exc).__name__}"}
    return report if isinstance(report, dict) else {"report_error": "the run's report is not an object"}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode(text: str) -> Any:
    """JSON a job wrote, as strictly as the job's own side encodes it (no NaN or Infinity)."""
    return json.loads(text, parse_constant=_refuse_constant)


def _result_of(reply: dict[str, Any], report: dict[str, Any], out: _Capture, err: _Capture, limits: Limits,
               wall_ms: float, duration_ms: float) -> SandboxResult:
    if "internal_error" in reply or "protocol_error" in reply:
        raise RuntimeError(f"sandbox zygote error: {reply.get('internal_error') or reply.get('protocol_error')}")
    exit_code: int | None = reply["exit_code"]
    sig: int | None = reply["signal"]
    if reply.get("reported"):
        # The job finished on its own and said so: its exit code is in its report.
        reported_code = report.pop("exit_code", None)
        # An exit status is 0-255: anything else was forged, and would not fit the column.
        valid = type(reported_code) is int and 0 <= reported_code <= 255
        exit_code = reported_code if valid else None
        if exit_code is None:
            report.setdefault("report_error", "the run ended without a report")
    else:
        report.pop("exit_code", None)
    result: Any = None
    status = "succeeded"
    error: str | None = None
    notes = []
    if out.cut_off:
        notes.append(f"stdout exceeded {out.drain_limit} bytes and was closed")
    if err.cut_off:
        notes.append(f"stderr exceeded {err.drain_limit} bytes and was closed")
    if reply["timed_out"]:
        status, error = "timed_out", f"timed out after {_secs(limits.timeout_seconds)}"
    elif report.get("memory"):
        status, error = "failed", f"memory limit {limits.memory_mb} MB exceeded"
    elif sig is not None:
        status = "failed"
        name = SIGNAL_NAMES.get(sig, f"signal {sig}")
        over_time = wall_ms >= limits.timeout_seconds * 1000
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and over_time):
            status, error = "timed_out", f"CPU time limit {_secs(limits.timeout_seconds)} exceeded ({name})"
        elif sig == signal.SIGXFSZ:
            error = f"file size limit {limits.max_file_bytes} bytes exceeded ({name})"
        else:
            error = f"killed by {name}"
    elif exit_code is not None and exit_code != 0:
        status, error = "failed", f"exit code {exit_code}"
    elif "result_error" in report:
        status, error = "failed", f"result is not JSON-serialisable: {report['result_error']}"
    elif "report_error" in report:
        status, error = "failed", f"result could not be recorded: {report['report_error']}"
    elif "result_json" in report:
        try:
            result = _decode(report["result_json"])
        except Exception as exc:  # forged by the job: its own side never writes such JSON
            status, error = "failed", f"result could not be recorded: {type(exc).__name__}"
    if notes and error:
        error = f"{error} ({'; '.join(notes)})"
    elif notes:
        error = "; ".join(notes)
    return SandboxResult(status=status, exit_code=exit_code, stdout=out.text(), stderr=err.text(),
                         stdout_truncated=out.truncated, stderr_truncated=err.truncated, result=result,
                         error=error, duration_ms=duration_ms,
                         extra={"wall_ms": wall_ms, "signal": sig})


def default_python() -> str:
    for candidate in DEFAULT_PYTHONS:
        if os.path.isfile(candidate):
            return candidate
    return DEFAULT_PYTHONS[0]


class LocalSandbox:
    """A pool of warm, sandboxed zygotes on this machine.

    pool_size: zygotes (jobs that run at once); default: the number of CPUs.
    python: a system interpreter the unprivileged uid can read (stdlib only inside).
    uid/gid: who the sandbox runs as when the host is root (default nobody); ignored otherwise.
    tmp_bytes: size of each zygote's private /tmp (a run's own Limits.tmp_bytes can only lower
        the file-size cap, not grow the tmpfs).
    """

    def __init__(self, pool_size: int | None = None, python: str | None = None, *, uid: int = NOBODY,
                 gid: int = NOBODY, tmp_bytes: int = Limits().tmp_bytes) -> None:
        self.pool_size = pool_size or os.cpu_count() or 1
        self.python = python or default_python()
        self.uid, self.gid = uid, gid
        self.tmp_bytes = tmp_bytes
        self.layout: Layout
        self._zygotes: list[_Zygote] = []
        self._idle: asyncio.Queue[_Zygote] | None = None
        self._unavailable: str | None = None
        self._started = False
        self._closing = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self._started:
                return
            try:
                await asyncio.to_thread(preflight, self.python)
                self.layout = discover_layout(self.python)
                zygotes = [_Zygote(self, i) for i in range(self.pool_size)]
                results = await asyncio.gather(*(z.start() for z in zygotes), return_exceptions=True)
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    await asyncio.gather(*(z.kill() for z in zygotes))
                    first = failures[0]
                    if isinstance(first, SandboxUnavailable):
                        raise first
                    raise SandboxUnavailable(f"the sandbox did not start: {first!r}") from first
            except SandboxUnavailable as exc:
                self._unavailable = str(exc)
                raise
            self._unavailable = None
            self._zygotes = zygotes
            self._idle = asyncio.Queue()
            for z in zygotes:
                self._idle.put_nowait(z)
            self._started = True
            self._closing = False

    async def close(self) -> None:
        async with self._lock:
            self._closing = True
            zygotes, self._zygotes = self._zygotes, []
            self._started = False
            await asyncio.gather(*(z.close() for z in zygotes), return_exceptions=True)

    async def check(self) -> str | None:
        if self._unavailable:
            return self._unavailable
        if not self._started:
            return "sandbox not started"
        if not any(z.alive for z in self._zygotes):
            return "no sandbox worker is alive"
        return None

    async def run(self, code: str, input: dict[str, Any], limits: Limits) -> SandboxResult:
        if not self._started:
            if self._unavailable:
                raise SandboxUnavailable(self._unavailable)
            await self.start()
        assert self._idle is not None
        input_json = json.dumps(input)
        if limits.tmp_bytes < limits.max_file_bytes:
            limits = Limits(**{**limits.to_dict(), "max_file_bytes": limits.tmp_bytes})
        zygote = await self._idle.get()
        try:
            if not await zygote.ready():
                await self._replace(zygote)
            try:
                return await zygote.run(code, input_json, limits)
            except ZygoteDied:
                why = zygote.stderr_text()
                await zygote.kill()
                return SandboxResult(status="failed", exit_code=None,
                                     error="sandbox worker died during the run" + (f": {why}" if why else ""))
            except BaseException:
                # Cancelled mid-run, or a protocol error: the zygote's state is unknown. Replace it.
                await asyncio.shield(zygote.kill())
                raise
        finally:
            self._idle.put_nowait(zygote)

    async def _replace(self, zygote: _Zygote) -> None:
        await zygote.kill()
        try:
            await zygote.start()
        except SandboxUnavailable as exc:
            self._unavailable = str(exc)
            raise
        self._unavailable = None
        log.warning("sandbox worker %s replaced", zygote.index)

    # Introspection for tests and diagnostics.
    def zygote_pids(self) -> list[int]:
        return [z.proc.pid for z in self._zygotes if z.proc is not None and z.alive]
