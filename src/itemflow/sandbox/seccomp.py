"""Compile the sandbox's seccomp deny-list to classic BPF with libseccomp, through ctypes.

The PyPI bindings do not build here, and the filter is compiled once per process, so a small
ctypes layer over ``libseccomp.so.2`` (Debian package ``libseccomp2``) is enough. bubblewrap
loads the result with ``--seccomp FD`` just before it executes the interpreter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
from functools import cache

# Actions (seccomp.h).
SCMP_ACT_ALLOW = 0x7FFF0000


def SCMP_ACT_ERRNO(code: int) -> int:
    return 0x00050000 | (code & 0x0000FFFF)


# enum scmp_compare
SCMP_CMP_NE = 1
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


# Denied outright: debugging other processes, kernel attack surface the automations never need,
# and every way to change namespaces, mounts or the kernel's state.
DENIED_SYSCALLS: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "syslog", "quotactl", "quotactl_fd",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "fanotify_init",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
    "iopl", "ioperm", "vhangup", "nfsservctl", "uselib", "personality",
    # System V IPC and POSIX message queues outlive the process that made them: a run could
    # leave data for the next run of the same sandbox, and keep memory past its own limit.
    "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semtimedop", "semctl", "ipc",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    # Extended attributes (and so ACLs) on /tmp would outlive the run and its wipe: a default
    # ACL of mode 000 broke every later run, and a user.* attribute carried data to it.
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    # Kernel memory outside every rlimit: a run held 1 GiB in memfds at memory_mb=64. The host
    # makes the few memfds a run needs.
    "memfd_create", "memfd_secret",
    # Acting on another process of the same uid (the zygote): its limits, priority and memory
    # placement would pass to every later run. (The calls on the caller itself: below.)
    "ioprio_set", "migrate_pages", "move_pages", "process_madvise", "process_mrelease",
)

# Allowed only on the calling process itself (pid or `who` 0): run A changing the zygote's
# limits or scheduling with these made every later run fail, or succeed without running.
SELF_ONLY: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("prlimit64", ((0, 0),)),
    ("sched_setaffinity", ((0, 0),)),
    ("sched_setscheduler", ((0, 0),)),
    ("sched_setparam", ((0, 0),)),
    ("sched_setattr", ((0, 0),)),
    ("setpriority", ((0, 0), (1, 0))),  # which = PRIO_PROCESS and who = 0: PRIO_USER reaches the zygote
)


class SeccompError(RuntimeError):
    pass


@cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompError(f"libseccomp is not installed ({exc}); apt-get install libseccomp2") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.restype = None
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    return lib


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise SeccompError(f"{what}: {os.strerror(-rc)}")


@cache
def compile_filter() -> bytes:
    """The deny-list as a classic BPF program (the bytes bwrap's --seccomp FD expects).

    Default: allow. Denied calls fail with EPERM; ``socket`` fails for every family but AF_UNIX
    (the network namespace is empty anyway: this is a second wall). Syscalls of a foreign
    architecture (i386 ``int 0x80``, x32) kill the process: libseccomp's default bad-arch action.
    """
    lib = _lib()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompError("seccomp_init failed")
    try:
        deny = SCMP_ACT_ERRNO(errno.EPERM)
        for name in DENIED_SYSCALLS:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # unknown on this architecture / libseccomp version
                continue
            _check(lib.seccomp_rule_add_array(ctx, deny, nr, 0, None), f"deny {name}")
        for name, required in SELF_ONLY:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue
            for arg, value in required:  # each rule denies one way of naming another process
                cmp = (_ArgCmp * 1)(_ArgCmp(arg, SCMP_CMP_NE, value, 0))
                _check(lib.seccomp_rule_add_array(ctx, deny, nr, 1, cmp), f"deny {name} on others")
        nr = lib.seccomp_syscall_resolve_name(b"socket")
        cmp = (_ArgCmp * 1)(_ArgCmp(0, SCMP_CMP_NE, socket.AF_UNIX, 0))
        _check(lib.seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(errno.EAFNOSUPPORT), nr, 1, cmp), "socket rule")
        # A memfd gives export_bpf a real fd to write to without touching the disk.
        fd = os.memfd_create("itemflow-seccomp", os.MFD_CLOEXEC)
        try:
            _check(lib.seccomp_export_bpf(ctx, fd), "seccomp_export_bpf")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def filter_fd() -> int:
    """A fresh, readable, inheritable-on-demand fd holding the compiled filter (read from offset 0)."""
    data = compile_filter()
    fd = os.memfd_create("itemflow-seccomp", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
