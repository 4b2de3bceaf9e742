"""The image, built from the Dockerfile by scripts/image and run here (issue 17).

Builds the image with buildah (a local Debian 12 stand-in base where the registry's cannot be
pulled), then starts `itemflow serve` from it with the image's own CMD, ENV, WORKDIR and USER,
only PORT set, as Cloud Run sets it, to a free port (tests/image/runtime.py says how it is run
without a container engine), and drives the README's flow against it over 127.0.0.1: create
an item, attach an automation, update the item, read the run's output. The automation runs in
the sandbox inside the image (bubblewrap as uid 10001).

Marked `image`: it needs root (buildah) and the package archive and index, and takes minutes
on a cold cache. `scripts/test` runs it when selected (`-m image`) or when
ITEMFLOW_TEST_IMAGE=1, which `.ci/run` sets; otherwise it is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.image.runtime import Container, children, status_fields
from tests.servers import free_port

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("ITEMFLOW_TEST_IMAGE_TAG", "itemflow:local")
UID = GID = 10001

AUTOMATION = """\
import os, socket
print(event["item"]["name"].upper())
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    inet = "allowed"
except OSError as exc:
    inet = type(exc).__name__
result = {
    "len": len(event["item"]["name"]),
    "previous": event["previous"]["name"],
    "inet": inet,
    "sees_venv": os.path.exists("/opt/venv"),
    "sees_data_dir": os.path.exists("/var/lib/itemflow"),
}
"""


@pytest.fixture(scope="module")
def image() -> str:
    """scripts/image, as a clean clone would run it (layers are reused when nothing changed)."""
    if os.geteuid() != 0:
        pytest.fail("the image test needs root (buildah's chroot isolation): sudo -E scripts/test -m image")
    start = time.monotonic()
    done = subprocess.run([str(ROOT / "scripts" / "image"), "--tag", IMAGE], cwd=ROOT, capture_output=True,
                          text=True, timeout=3000)
    took = time.monotonic() - start
    assert done.returncode == 0, (f"scripts/image failed after {took:.0f} s:\n"
                                  f"{done.stdout[-4000:]}\n{done.stderr[-8000:]}")
    print(f"\nscripts/image: {took:.0f} s; " + done.stderr.strip().splitlines()[-1])
    return IMAGE


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[Container]:
    c = Container(image)
    try:
        yield c
    finally:
        c.remove()


class Server:
    def __init__(self, container: Container, mask_proc: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Only PORT is set, as Cloud Run does; the command is the image's CMD.
        self.proc = container.start(container.cmd(), env={"PORT": str(self.port)}, mask_proc=mask_proc)
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        for stream, sink in ((self.proc.stderr, self.stderr), (self.proc.stdout, self.stdout)):
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _drain(stream, sink: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            sink.append(line)

    def output(self) -> str:
        return "".join(self.stdout[-50:]) + "".join(self.stderr[-100:])

    def pid(self) -> int:
        """The host pid of the container's PID 1 (the only child of unshare)."""
        found = children(self.proc.pid)
        assert len(found) == 1, f"expected one process under the runtime, found {found}"
        return found[0]

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        pytest.fail(f"the server did not answer /healthz within {timeout} s:\n{self.output()}")

    def admin_key(self) -> str:
        """The admin key the first start prints once on the console (README: the API)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            match = re.search(r"^\s+(itf_\S+)\s*$", "".join(self.stderr), re.MULTILINE)
            if match:
                return match.group(1)
            time.sleep(0.1)
        pytest.fail(f"no admin key on the console:\n{self.output()}")


@pytest.fixture(scope="module")
def server(container: Container) -> Iterator[Server]:
    s = Server(container)
    try:
        s.wait_healthy()
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": f"Bearer {server.admin_key()}"}) as client:
        yield client


# --- what the image is ------------------------------------------------------------------------------


def test_config_is_the_dockerfiles(container: Container) -> None:
    config = container.config
    assert config["User"] == "10001:10001"
    assert config["WorkingDir"] == "/var/lib/itemflow"
    env = container.env()
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["ITEMFLOW_DATA_DIR"] == "/var/lib/itemflow" and env["PORT"] == "8000"
    assert container.cmd() == ["sh", "-c", 'exec itemflow serve --host 0.0.0.0 --port "${PORT:-8000}"']
    assert config["Healthcheck"]["Test"][0] == "CMD"


def test_runs_as_10001_and_nothing_in_the_venv_is_writable(container: Container) -> None:
    uid = container.run(["id", "-u"], timeout=60)
    assert uid.returncode == 0 and uid.stdout.split() == ["10001"], uid.stdout + uid.stderr
    assert container.run(["id", "-G"]).stdout.split() == ["10001"]
    writable = container.run(["find", "/opt/venv", "-writable"], timeout=120)
    assert writable.returncode == 0, writable.stderr
    assert writable.stdout == "", f"writable by uid 10001 in /opt/venv:\n{writable.stdout[:2000]}"
    # Not vacuous: `find -writable` does find what the user may write.
    data = container.run(["find", "/var/lib/itemflow", "-maxdepth", "0", "-writable"])
    assert data.stdout.strip() == "/var/lib/itemflow", data.stdout + data.stderr


@pytest.mark.parametrize("command", ["worker", "runner"])
def test_worker_and_runner_commands(container: Container, command: str) -> None:
    done = container.run(["itemflow", command, "--help"], timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Usage: itemflow {command}" in done.stdout, done.stdout


def test_build_machine_settings_stay_out_of_the_image(container: Container) -> None:
    # scripts/image mounts a pip.conf and the machine's CA bundle for RUN steps only; buildah
    # leaves the pip.conf's mount point behind as an empty file, nothing more.
    pip_conf = container.rootfs / "etc" / "pip.conf"
    assert not pip_conf.exists() or pip_conf.stat().st_size == 0
    assert not (container.rootfs / "src").exists(), "the build stage's sources are in the runtime image"


# --- the running server -------------------------------------------------------------------------------


def test_server_process_is_pid_1_as_uid_10001_without_capabilities(server: Server, container: Container) -> None:
    pid = server.pid()
    status = status_fields(pid)
    assert status["Uid"].split() == [str(UID)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(GID)] * 4, status["Gid"]
    assert status["Groups"] in ("", str(GID)), status["Groups"]  # no other group
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, f"{caps}={status[caps]}"
    assert status["NSpid"].split()[-1] == "1", "`exec` in the CMD keeps the server as PID 1"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"serve" in cmdline and str(server.port).encode() in cmdline, cmdline
    env = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in e)
    assert env["ITEMFLOW_DATA_DIR"] == "/var/lib/itemflow" and env["PORT"] == str(server.port)
    assert os.stat(f"/proc/{pid}/cwd").st_ino == (container.rootfs / "var/lib/itemflow").stat().st_ino


def test_healthcheck_command(server: Server, container: Container) -> None:
    test = container.config["Healthcheck"]["Test"]
    assert test[0] == "CMD"
    ok = container.run(test[1:], env={"PORT": str(server.port)}, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Not vacuous: it fails where nothing listens.
    bad = container.run(test[1:], env={"PORT": str(free_port())}, timeout=60)
    assert bad.returncode != 0


def test_tutorial_flow_with_a_sandboxed_run(api: httpx.Client, server: Server) -> None:
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text  # the database and the sandbox

    item = api.post("/items", json={"name": "lamp", "description": "desk lamp"})
    assert item.status_code == 201, item.text
    item_id = item.json()["id"]

    automation = api.post("/automations", json={
        "name": "shout", "item_id": item_id, "events": ["item.updated"], "code": AUTOMATION,
        "timeout_seconds": 10, "memory_mb": 128})
    assert automation.status_code == 201, automation.text

    updated = api.patch(f"/items/{item_id}", json={"name": "big lamp"})
    assert updated.status_code == 200, updated.text
    run_ids = updated.headers.get("Itemflow-Run-Ids", "")
    assert run_ids.isdigit(), f"one run queued, got {run_ids!r}"

    deadline = time.monotonic() + 60
    while True:
        run = api.get(f"/runs/{run_ids}").json()
        if run["status"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert run["status"] == "succeeded", json.dumps(run, indent=1) + "\n" + server.output()
    assert run["stdout"] == "BIG LAMP\n"
    assert run["exit_code"] == 0
    # It ran in the sandbox: no AF_INET sockets, none of the image's files but the interpreter.
    assert run["result"] == {"len": 8, "previous": "lamp", "inet": "OSError", "sees_venv": False,
                             "sees_data_dir": False}, run["result"]

    listed = api.get(f"/items/{item_id}/runs").json()["data"]
    assert [r["id"] for r in listed] == [int(run_ids)]


def test_sigterm_stops_the_server_cleanly(server: Server) -> None:
    """Last: Cloud Run and Docker stop a container with SIGTERM to its PID 1."""
    os.kill(server.pid(), signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 30 s after SIGTERM:\n{server.output()}")
    assert code == 0, server.output()


def test_the_runtime_must_leave_proc_unmasked(container: Container) -> None:
    """The privilege docs/deploy.md names: one masked /proc path (Docker's default masks
    /proc/keys, among others) and the sandbox cannot mount its own /proc, so no run could start.
    That is Docker's `--security-opt systempaths=unconfined`."""
    s = Server(container, mask_proc="keys")
    try:
        s.wait_healthy()
        ready = httpx.get(f"{s.url}/readyz", timeout=30)
        assert ready.status_code == 503, ready.text
        assert "mount proc" in ready.json()["detail"], ready.text
    finally:
        s.proc.kill()
        s.proc.wait(timeout=30)
