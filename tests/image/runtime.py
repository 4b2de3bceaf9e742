"""Run a built image here, without Docker or podman: buildah's store, unshare and pivot_root.

`buildah run --isolation chroot` runs the image's files, user, ENV and WORKDIR, but its root
is a chroot(2), and the kernel refuses to create a user namespace inside a chroot (EPERM), so
the sandbox (bubblewrap, as the image's uid) cannot start there. Its /proc is also the host's
with paths masked, and then no fresh /proc may be mounted in a new user namespace. A container
runtime pivot_roots and mounts a fresh /proc instead, so this does what such a runtime does,
with util-linux run as root (LAUNCH below): the working container's root file system
(`buildah mount`) as `/` through pivot_root in a new mount namespace, its own PID (the command
is PID 1, as in a container), IPC and UTS namespaces, a fresh /proc with nothing masked, a
minimal /dev, /sys read-only, the host's network namespace (a port on 127.0.0.1 is reachable
from here), the image's ENV and WORKDIR, then the image's USER through the image's `setpriv`
with every capability gone from every set. No seccomp filter or AppArmor profile is applied
from outside: what Docker grants with `--security-opt seccomp=unconfined --security-opt
apparmor=unconfined --security-opt systempaths=unconfined` (docs/deploy.md).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# $1 root file system, $2 working directory, $3 uid, $4 gid, $5 a /proc path to mask (as
# Docker's default masks /proc/keys and others) or ""; then the command (through env -i).
LAUNCH = r"""
set -eu
root=$1 workdir=$2 uid=$3 gid=$4 mask=$5; shift 5
mount --bind "$root" "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
[ -z "$mask" ] || mount --bind /dev/null "$root/proc/$mask"
mount --rbind /sys "$root/sys"
mount -o remount,bind,ro "$root/sys"
mount -t tmpfs -o nosuid,noexec,mode=755,size=65536k tmpfs "$root/dev"
for d in null zero full random urandom tty; do
  touch "$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"
done
mkdir "$root/dev/shm" "$root/dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"; ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
hostname itemflow
cd "$root"
pivot_root . .
umount -l .
cd "$workdir"
exec /usr/bin/setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all \
  --bounding-set=-all -- "$@"
"""
_names = itertools.count()


def buildah(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def image_config(image: str) -> dict:
    """The image's Docker-format config (Env, Cmd, WorkingDir, User, Healthcheck, ...)."""
    info = json.loads(buildah("inspect", "--type", "image", image))
    return info["Docker"]["config"]


@dataclass
class Container:
    """A working container of `image`, its root file system mounted on the host."""

    image: str
    name: str = field(default_factory=lambda: f"itemflow-imagetest-{os.getpid()}-{next(_names)}")
    rootfs: Path = field(init=False)
    config: dict = field(init=False)

    def __post_init__(self) -> None:
        for tool in ("buildah", "unshare", "pivot_root"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"needs {tool} on the host (scripts/image installs buildah; util-linux)")
        self.config = image_config(self.image)
        buildah("from", "--pull=never", "--name", self.name, self.image)
        self.rootfs = Path(buildah("mount", self.name).strip())

    def remove(self) -> None:
        subprocess.run(["buildah", "umount", self.name], capture_output=True, timeout=60)
        subprocess.run(["buildah", "rm", self.name], capture_output=True, timeout=60)

    # --- the image's own settings ---------------------------------------------------------------

    def user(self) -> tuple[int, int]:
        """USER as numeric uid and gid (names looked up in the image's /etc/passwd and group)."""
        spec = self.config.get("User") or "0"
        name, _, group = spec.partition(":")
        uid, gid = self._lookup("passwd", name), None
        if group:
            gid = self._lookup("group", group)
        elif not name.isdigit():
            gid = int(self._entry("passwd", name)[3])
        else:
            entry = next((e for e in self._entries("passwd") if e[2] == name), None)
            gid = int(entry[3]) if entry else uid
        return uid, gid

    def _entries(self, db: str) -> list[list[str]]:
        return [line.split(":") for line in (self.rootfs / "etc" / db).read_text().splitlines() if line]

    def _entry(self, db: str, name: str) -> list[str]:
        return next(e for e in self._entries(db) if e[0] == name)

    def _lookup(self, db: str, name: str) -> int:
        return int(name) if name.isdigit() else int(self._entry(db, name)[2])

    def env(self) -> dict[str, str]:
        env = dict(item.split("=", 1) for item in self.config.get("Env") or [])
        if "HOME" not in env:  # as Docker does: the user's home from the image's passwd
            uid = str(self.user()[0])
            entry = next((e for e in self._entries("passwd") if e[2] == uid), None)
            env["HOME"] = entry[5] if entry else "/"
        return env

    def workdir(self) -> str:
        return self.config.get("WorkingDir") or "/"

    def cmd(self) -> list[str]:
        return [*(self.config.get("Entrypoint") or []), *(self.config.get("Cmd") or [])]

    # --- running ----------------------------------------------------------------------------------

    def command(self, argv: list[str], *, env: dict[str, str] | None = None, mask_proc: str = "") -> list[str]:
        """The host command line that runs `argv` in the container as the image's USER."""
        uid, gid = self.user()
        full_env = {**self.env(), **(env or {})}
        return ["unshare", "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--propagation", "private",
                "--", "/bin/sh", "-c", LAUNCH, "launch", str(self.rootfs), self.workdir(), str(uid), str(gid),
                mask_proc, "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in full_env.items()), *argv]

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120,
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv, env=env), capture_output=True, text=True, timeout=timeout)

    def start(self, argv: list[str], *, env: dict[str, str] | None = None, mask_proc: str = "",
              ) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(argv, env=env, mask_proc=mask_proc), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


def children(pid: int) -> list[int]:
    """Host pids whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == pid:
                found.append(int(entry.name))
    return found


def status_fields(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out
