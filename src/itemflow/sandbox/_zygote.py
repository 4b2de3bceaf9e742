# ruff: noqa: S102, S108, S110
"""The zygote: runs INSIDE the sandbox, as PID 1 of its own PID namespace, under the system
Python with only the standard library. The host passes this file's text with ``-c``.

The zygote never holds a job. Every job process is forked ahead of time from a zygote that has
seen no code, event, result or output of any run; the job reaches that process after the fork,
in a memfd the zygote only passes on, and the result leaves it in another memfd that the host
reads. So nothing of one run is in the memory the next run's process is forked from.

Protocol on the control socket (fd number in argv[1]; AF_UNIX stream):
  zygote -> host, once: frame({"ready": true, "checks": {...}}) or frame({"ready": false, "error": ...})
  host -> zygote, per job: b"G" + 8-byte big-endian double (the timeout), with SCM_RIGHTS
      [job memfd, stdin memfd (the event), report memfd, stdout_w, stderr_w] on the first byte
  zygote -> host, per job: frame({"reported", "exit_code", "signal", "timed_out"}), then, once
      the job's processes are gone and /tmp is empty again, frame({"clean": true}) (or
      frame({"clean": false, "error": ...}) and the zygote exits, to be replaced)
A frame is a 4-byte big-endian length and that many bytes of JSON.

Each job runs in a forked child: own process group, per-process rlimits, non-dumpable, stdin a
memfd holding the event JSON, stdout/stderr the host's pipes, fd 3 the report memfd (result /
memory flag). When the child exits or its time is up, the zygote kills every other process in
the namespace (kill(-1) from PID 1 reaches exactly the job's leftovers; the kernel never lets
them signal PID 1), reaps them, replies, then resets /tmp.
"""

import atexit
import builtins
import ctypes
import fcntl
import io
import json
import math
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback
import types

PR_SET_DUMPABLE = 4
TMP_IS_PRIVATE = False
TMP_EMPTY_SIZE = None  # st_size of /tmp when empty, read at start
TMP_MODE = 0o1777
JOB_FDS = 5
# A run can fill /tmp with more entries than are worth wiping one by one (they cost a tmpfs
# inodes, not bytes); past this, the zygote exits instead and the host starts a fresh one.
WIPE_BUDGET_SECONDS = 0.5
_libc = ctypes.CDLL(None, use_errno=True)


def _frame(obj):
    data = json.dumps(obj).encode()
    return struct.pack("!I", len(data)) + data


def _recv_exact(sock, n, buf=b""):
    while len(buf) < n:
        chunk = sock.recv(max(n - len(buf), 65536))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _self_checks():
    """Facts the host verifies before it trusts this zygote with any job."""
    checks = {"pid": os.getpid(), "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid()}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"):
                checks[key] = value.strip()
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        checks["inet_socket"] = "allowed"
    except OSError as exc:
        checks["inet_socket"] = f"denied: {exc.strerror}"
    try:
        with open("/.itemflow-rw-probe", "w"):
            pass
        checks["root_fs"] = "writable"
    except OSError:
        checks["root_fs"] = "read-only"
    checks["root_entries"] = sorted(os.listdir("/"))
    return checks


def _tmp_is_private():
    """True only if /tmp is a tmpfs mount of its own (bwrap's --tmpfs /tmp) and we are PID 1."""
    if os.getpid() != 1:
        return False
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if left.split()[4] == "/tmp" and right.split()[0] == "tmpfs":
                    return True
    except (OSError, IndexError):
        pass
    return False


def _reset_tmp():
    """Make /tmp as a first run finds it, whatever the job did to it. Returns None when it is,
    else what is wrong (the zygote then exits, to be replaced).

    The zygote never reads what the job left: every later child is forked from its memory, so
    a file name read here would reach them. It only looks at /tmp's own size and mode, and if
    the job left anything, a short-lived helper process empties it within a time budget."""
    if not TMP_IS_PRIVATE:
        # Wiping a /tmp that is not the sandbox's own tmpfs would delete the host's files.
        raise RuntimeError("refusing to wipe /tmp: not the sandbox's private tmpfs")
    if not _tmp_is_pristine():
        pid = os.fork()
        if pid == 0:
            try:
                os.chmod("/tmp", TMP_MODE)  # we own it; the job may have made it 0 or read-only
                _empty_tree("/tmp")
            except BaseException:
                os._exit(1)
            os._exit(0)
        pidfd = os.pidfd_open(pid)
        try:
            if not select.select([pidfd], [], [], WIPE_BUDGET_SECONDS)[0]:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        finally:
            os.close(pidfd)
        if not _tmp_is_pristine():
            return f"/tmp could not be made empty within {WIPE_BUDGET_SECONDS}s"
    os.utime("/tmp", ns=(0, 0))  # its times would tell the next run when this one wrote there
    return None


def _tmp_is_pristine():
    # tmpfs counts a directory's size by its entries: the size of the empty /tmp means empty.
    st = os.stat("/tmp")
    return st.st_size == TMP_EMPTY_SIZE and (st.st_mode & 0o7777) == TMP_MODE


def _empty_tree(top):
    """Remove everything under top, depth first, holding one directory fd at a time: each
    directory is listed once, its files unlinked and its subdirectories kept by name.
    Iterative and relative to directory fds: a job may leave a tree deeper than the recursion
    limit or than PATH_MAX, and directories it made unreadable."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(top, flags)
    stack = [("", _unlink_files(fd))]  # (name of the directory fd is on, its subdirectories left)
    while True:
        name, subdirs = stack[-1]
        if subdirs:
            subdir = subdirs.pop()
            os.chmod(subdir, 0o700, dir_fd=fd)  # ours, though the job may have locked it
            child = os.open(subdir, flags, dir_fd=fd)
            os.close(fd)
            fd = child
            stack.append((subdir, _unlink_files(fd)))
            continue
        stack.pop()
        if not stack:
            os.close(fd)
            return
        parent = os.open("..", flags, dir_fd=fd)
        os.close(fd)
        fd = parent
        os.rmdir(name, dir_fd=fd)


def _unlink_files(fd):
    """Unlink everything in the directory but subdirectories; return those."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirs


RLIMITS = tuple(getattr(resource, name) for name in sorted(dir(resource)) if name.startswith("RLIMIT_"))


def _own_state():
    """What every child inherits from the zygote besides its memory: limits and scheduling.
    A job must not be able to change them (seccomp allows those calls only on the caller
    itself); the zygote checks after every job all the same."""
    return ([resource.getrlimit(r) for r in RLIMITS], os.getpriority(os.PRIO_PROCESS, 0),
            os.sched_getaffinity(0), os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)


def _kill_leftovers():
    """Kill and reap every process in this PID namespace but ourselves."""
    if os.getpid() != 1:
        # kill(-1) outside a private PID namespace would reach every process this uid may
        # signal on the machine. main() refuses to start in that case; this is the second lock.
        raise RuntimeError("refusing kill(-1): not PID 1 of a private PID namespace")
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Everyone else has a pending SIGKILL (and fork fails for a process with one): blocking
        # here waits exactly until the next one is gone. Orphans are reparented to us, PID 1.
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return  # no child left: nobody else is alive in the namespace


def _set_limits(job):
    mib = 1024 * 1024
    cpu = math.ceil(job["timeout"]) + 1
    limits = [
        (resource.RLIMIT_AS, job["memory_mb"] * mib),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        # The zygote itself counts against the uid's process count in this user namespace.
        (resource.RLIMIT_NPROC, job["max_processes"] + 1),
        (resource.RLIMIT_FSIZE, job["max_file_bytes"]),
        (resource.RLIMIT_NOFILE, job.get("max_open_files", 256)),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_MEMLOCK, 0),
        (resource.RLIMIT_MSGQUEUE, 0),
    ]
    for what, value in limits:
        soft, hard = value if isinstance(value, tuple) else (value, value)
        resource.setrlimit(what, (soft, hard))


def _prefork():
    """Fork the next job's process ahead of time; it waits for its job's fds on a private socket.

    Returns (pid, socket to hand it the fds, done pipe). The fork, the child's first page faults
    and every step that does not depend on the job happen here, off the job's clock."""
    done_r, done_w = os.pipe()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            os.setpgid(0, 0)  # its own process group, for the zygote's killpg
            os.chdir("/tmp")
            _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            data, fds, _, _ = socket.recv_fds(theirs, 1, JOB_FDS)
            if not data or len(fds) != JOB_FDS:
                os._exit(126)  # no job (the zygote is shutting down): never a success
            job_fd, stdin_fd, report_fd, out_w, err_w = fds
            job = json.loads(os.pread(job_fd, os.fstat(job_fd).st_size, 0))
            os.close(job_fd)
        except BaseException:
            os._exit(126)
        _child(job, stdin_fd, out_w, err_w, report_fd, done_w)
    theirs.close()
    os.close(done_w)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    return pid, ours, done_r


def _child(job, stdin_fd, out_w, err_w, report_fd, done_w):
    """In the job's process: take the job's fds and limits, run the code, exit. Never returns."""
    try:
        event_json = os.pread(stdin_fd, os.fstat(stdin_fd).st_size, 0)
        os.lseek(stdin_fd, 0, os.SEEK_SET)  # the host wrote it: its offset is at the end
        # Move them out of the way first, so no dup2 below clobbers another one.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (stdin_fd, out_w, err_w, report_fd, done_w)]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(5, 1 << 20)  # the control socket included
        _set_limits(job)
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8",
                                      errors="backslashreplace")
        sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8",
                                      errors="backslashreplace", line_buffering=True)
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        sys.argv = ["<automation>"]
        event = json.loads(event_json)
        main = types.ModuleType("__main__")
        main.__dict__.update({"__builtins__": builtins, "__file__": "<automation>", "event": event})
        sys.modules["__main__"] = main
        code = compile(job["code"], "<automation>", "exec")
    except BaseException:
        try:
            _print_exc()
            sys.stderr.flush()
        finally:
            os._exit(1)

    exit_code, report = 0, {}
    try:
        exec(code, main.__dict__)
    except SystemExit as exc:
        exit_code = _exit_code_of(exc)
    except MemoryError:
        report["memory"] = True
        exit_code = 1
        _print_exc()
    except BaseException:
        exit_code = 1
        _print_exc()
    try:
        if "threading" in sys.modules:  # like the interpreter: wait for non-daemon threads
            sys.modules["threading"]._shutdown()
        atexit._run_exitfuncs()
    except SystemExit as exc:
        exit_code = exit_code or _exit_code_of(exc)
    except BaseException:
        exit_code = exit_code or 1
        _print_exc()
    if exit_code == 0 and "result" in main.__dict__:
        try:
            report["result_json"] = json.dumps(main.__dict__["result"], allow_nan=False)
        except MemoryError:
            report["memory"] = True
        except BaseException as exc:
            report["result_error"] = f"{type(exc).__name__}: {exc}"
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            exit_code = exit_code or 120  # what the interpreter does when it cannot flush at exit
    report["exit_code"] = exit_code
    try:
        data = json.dumps(report).encode()
        os.ftruncate(3, 0)
        os.pwrite(3, data, 0)
    except BaseException as exc:
        try:
            os.pwrite(3, json.dumps({"report_error": f"{type(exc).__name__}: {exc}"}).encode(), 0)
        except BaseException:
            pass
    # Done: release the output pipes and tell the zygote, which answers the host while the kernel
    # tears this process down (killing it is then harmless: the exit code is in the report).
    for fd in (0, 1, 2, 3):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.write(4, b"d")
    except OSError:
        pass
    os._exit(exit_code)


def _exit_code_of(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def _print_exc():
    try:
        etype, value, tb = sys.exc_info()
        # Hide the zygote's own frame: the traceback starts in the user's code, as for a script.
        traceback.print_exception(etype, value, tb.tb_next if tb is not None else None)
    except BaseException:
        try:
            os.write(2, b"(traceback could not be printed)\n")
        except OSError:
            pass


def _run(timeout, fds, pending):
    """Pass the job's fds to the pre-forked process; wait for it to finish, exit or time out.

    Returns (reply, cleaned): when the job reported completion itself, its leftovers are only
    signalled, and the caller reaps them after replying (cleaned is False)."""
    pid, sock, done_r = pending
    try:
        socket.send_fds(sock, [b"G"], fds)
    finally:
        for fd in fds:
            os.close(fd)
        sock.close()
    timed_out = done = False
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(done_r, select.POLLIN)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            events = poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
            if not events:
                timed_out = True
                break
            if not any(fd == done_r for fd, _ in events):
                break  # the job's process exited
            try:
                done = os.read(done_r, 1) == b"d"
            except OSError:
                done = False
            if done:
                break
            # The job closed or scribbled on the done pipe: wait for its exit, to the deadline.
            poller.unregister(done_r)
    finally:
        os.close(pidfd)
    exit_code = sig = None
    if done:
        # The job wrote its report and is exiting; its exit code is in the report, which only
        # the host reads. Anything it left, dies now.
        _signal_everyone()
        cleaned = False
    else:
        if timed_out:
            _signal_everyone()
        _, status = os.waitpid(pid, 0)
        _kill_leftovers()
        cleaned = True
        if not timed_out:
            exit_code = os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    return {"reported": done, "exit_code": exit_code, "signal": sig, "timed_out": timed_out}, cleaned


def _signal_everyone():
    """SIGKILL every process of the namespace but PID 1 (ourselves): the job and all it left."""
    if os.getpid() != 1:
        raise RuntimeError("refusing kill(-1): not PID 1 of a private PID namespace")
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


WARM_UP_CODE = """
import json
data = {"type": "item.updated", "item": {"id": 1, "name": "x", "tags": ["a", "b"], "price": 2.5}, "previous": None}
total = sum(len(str(v)) for v in data.values())
def f(x):
    return [i * 2 for i in range(x)]
class C:
    pass
print(f(3), total, C(), file=sink)
result = {"ok": True, "n": total}
"""


def _warm_up():
    """Do once, here, the lazy first-time work of every job (parser, codecs, json, io,
    traceback): a forked child would otherwise redo it, page faults included, on every run."""
    sink = io.TextIOWrapper(io.BufferedWriter(io.FileIO(os.open(os.devnull, os.O_WRONLY) if os.path.exists(
        os.devnull) else os.dup(1), "w")), encoding="utf-8", errors="backslashreplace")
    for _ in range(3):
        scope = {"__builtins__": builtins, "__name__": "__warmup__", "sink": sink}
        exec(compile(WARM_UP_CODE, "<automation>", "exec"), scope)
        json.loads(json.dumps(scope["result"], allow_nan=False))
        try:
            exec(compile("1/0", "<automation>", "exec"), {})
        except ZeroDivisionError:
            traceback.format_exc()
    io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sink.close()


def main():
    ctl = socket.socket(fileno=int(sys.argv[1]))
    ctl.setblocking(True)
    global TMP_IS_PRIVATE, TMP_EMPTY_SIZE
    TMP_IS_PRIVATE = _tmp_is_private()
    if not TMP_IS_PRIVATE or os.listdir("/tmp"):
        error = "/tmp is not an empty private tmpfs, or not PID 1: not a sandbox"
        ctl.sendall(_frame({"ready": False, "error": error}))
        return
    if os.getpid() != 1:
        # Cleaning up after a job kills every other process in the PID namespace: only sane as
        # PID 1 of a namespace of our own. Never run jobs anywhere else.
        error = f"zygote is pid {os.getpid()}, not PID 1 of its own PID namespace"
        ctl.sendall(_frame({"ready": False, "error": error}))
        return
    os.chdir("/")
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # PID 1: the kernel drops default-action signals from inside
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/1/mem, no ptrace, even for the same uid
    try:
        checks = _self_checks()
    except BaseException as exc:
        ctl.sendall(_frame({"ready": False, "error": f"self-check crashed: {exc!r}"}))
        return
    _warm_up()
    import gc
    gc.collect()
    gc.freeze()  # fork children share these pages instead of touching them
    TMP_EMPTY_SIZE = os.stat("/tmp").st_size
    os.chmod("/tmp", TMP_MODE)
    state = _own_state()
    ctl.sendall(_frame({"ready": True, "checks": checks}))
    pending = _prefork()
    while _serve_one_job(ctl, pending):
        problem = _reset_tmp()
        if problem is None and _own_state() != state:
            problem = "the zygote's own limits or scheduling changed during a job"
        if problem is not None:
            ctl.sendall(_frame({"clean": False, "error": problem}))
            return
        pending = _prefork()
        ctl.sendall(_frame({"clean": True}))


def _serve_one_job(ctl, pending):
    """Take one job's fds from the host, run it on the pre-forked process, reply, and kill what
    it left. False when the host is gone. Its locals (the reply) die with its frame, before the
    next fork."""
    try:
        data, fds, _, _ = socket.recv_fds(ctl, 9, JOB_FDS)
    except OSError:
        return False
    if not data:
        return False  # the host closed the socket: shut down (PID 1 exiting takes the namespace down)
    if data[:1] != b"G" or len(fds) != JOB_FDS:
        ctl.sendall(_frame({"protocol_error": "bad job header"}))
        return False  # exit: the host replaces a zygote it cannot talk to
    (timeout,) = struct.unpack("!d", _recv_exact(ctl, 9, data)[1:9])
    try:
        reply, cleaned = _run(timeout, fds, pending)
    except BaseException as exc:
        _kill_leftovers()
        reply, cleaned = {"internal_error": f"{type(exc).__name__}: {exc}"}, True
    os.close(pending[2])
    ctl.sendall(_frame(reply))
    if not cleaned:
        _kill_leftovers()  # reap what _run signalled: nothing of this job survives into the next
    return True

if __name__ == "__main__":
    main()
