"""The HTTP server under hostile connections (issue 10): real uvicorn servers, raw sockets.

Oversized heads get 431, heads that never finish and idle connections are dropped on time, and
a normal client is answered fast while hundreds of slow connections are open.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from itemflow.api.app import create_app
from itemflow.api.server import uvicorn_options
from itemflow.db import migrate
from itemflow.settings import Settings
from tests.servers import free_port, serve_in_thread

REQUEST_LINE = b"GET /healthz HTTP/1.1\r\nHost: t\r\n"


@contextmanager
def server(tmp_path: Path, **overrides: Any) -> Iterator[int]:
    """The API served as `itemflow serve` serves it; yields its port."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "data",  # type: ignore[call-arg]
                        secret_key="hostile-test", bootstrap_admin=False, **overrides)
    migrate.upgrade(settings.resolved_database_url)
    with serve_in_thread(create_app(settings), **uvicorn_options(settings)) as url:
        yield int(url.rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (needs Content-Length, as all of ours have): status, headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data[:200]!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def get(port: int, extra: bytes = b"") -> int:
    with connect(port) as sock:
        sock.sendall(REQUEST_LINE + extra + b"\r\n")
        return read_response(sock)[0]


def closed_after(sock: socket.socket, limit: float, *, poke: bytes | None = None,
                 every: float = 0.2) -> float | None:
    """Seconds until the server closes `sock` (None: still open after `limit`), sending `poke`
    every `every` seconds meanwhile. Any byte the server sends first is a failure."""
    start = time.monotonic()
    sock.settimeout(every)
    while time.monotonic() - start < limit:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if poke is not None:
                try:
                    sock.sendall(poke)
                except OSError:
                    return time.monotonic() - start
            continue
        except ConnectionResetError:
            return time.monotonic() - start
        assert data == b"", f"the server answered instead of closing: {data[:200]!r}"
        return time.monotonic() - start
    return None


def test_an_oversized_head_gets_431_and_the_server_stays_healthy(tmp_path: Path) -> None:
    with server(tmp_path) as port:  # the production default: 64 KiB
        with connect(port) as sock:
            try:
                sock.sendall(REQUEST_LINE + b"X-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused while still sending: the answer is already on its way
            status, headers, body = read_response(sock)
        assert status == 431
        assert headers["content-type"] == "application/problem+json"
        assert headers["connection"] == "close"
        assert json.loads(body)["status"] == 431
        # A head just under the limit is served, and so is everyone after the refusal.
        assert get(port, b"X-Big: " + b"a" * (60 * 1024) + b"\r\n") == 200
        assert get(port) == 200


def test_the_head_limit_is_configurable_and_counts_every_header(tmp_path: Path) -> None:
    with server(tmp_path, max_header_bytes=4096) as port:
        assert get(port, b"X-A: " + b"a" * 3000 + b"\r\n") == 200
        assert get(port, b"X-A: " + b"a" * 5000 + b"\r\n") == 431
        many = b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(60))  # ~6.5 KB in all
        assert get(port, many) == 431
        assert get(port) == 200


def test_a_head_that_keeps_growing_is_cut_off_early(tmp_path: Path) -> None:
    """16 such requests of 4 MiB each used to add 60 MiB to the server; now each is refused
    once it passes the limit, long before it is all sent."""
    with server(tmp_path) as port, connect(port) as sock:
        sock.sendall(REQUEST_LINE + b"X-Big: ")
        sent, refused = 0, False
        try:
            while sent < 4 << 20:
                sock.sendall(b"a" * 16384)
                sent += 16384
                time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            refused = True
        assert refused, "the server took a 4 MiB header"
        assert sent < 1 << 20


def test_a_head_sent_too_slowly_is_dropped(tmp_path: Path) -> None:
    with server(tmp_path, header_timeout_seconds=1, keep_alive_timeout_seconds=30) as port:
        # A complete head sent in pieces within the deadline is served.
        with connect(port) as sock:
            for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: t\r\n", b"X-A: b\r\n", b"\r\n"):
                sock.sendall(piece)
                time.sleep(0.2)
            assert read_response(sock)[0] == 200
        # One header line every 0.2 s: each byte arrives on time, but the head never ends.
        with connect(port) as sock:
            sock.sendall(REQUEST_LINE)
            elapsed = closed_after(sock, 6, poke=b"X-A: b\r\n")
            assert elapsed is not None and 0.8 < elapsed < 3, elapsed
        # Bare CRLFs between requests, which the parser skips, do not keep a connection either.
        with connect(port) as sock:
            sock.sendall(REQUEST_LINE + b"\r\n")
            assert read_response(sock)[0] == 200
            elapsed = closed_after(sock, 6, poke=b"\r\n")
            assert elapsed is not None and elapsed < 3, elapsed


def test_idle_connections_are_closed_after_the_keep_alive_timeout(tmp_path: Path) -> None:
    with server(tmp_path, keep_alive_timeout_seconds=1, header_timeout_seconds=30) as port:
        with connect(port) as sock:  # after a response
            sock.sendall(REQUEST_LINE + b"\r\n")
            assert read_response(sock)[0] == 200
            elapsed = closed_after(sock, 6)
            assert elapsed is not None and 0.8 < elapsed < 3, elapsed
        with connect(port) as sock:  # never a byte
            elapsed = closed_after(sock, 6)
            assert elapsed is not None and 0.8 < elapsed < 3, elapsed


def test_a_normal_client_is_served_fast_while_300_slow_connections_are_open(tmp_path: Path) -> None:
    slow = 300
    with server(tmp_path, header_timeout_seconds=3) as port:
        socks = []
        for _ in range(slow):
            sock = connect(port)
            sock.sendall(REQUEST_LINE)
            socks.append(sock)
        stop = threading.Event()

        def dribble() -> None:  # one more header line on every connection, every 0.5 s
            while not stop.wait(0.5):
                for sock in socks:
                    try:
                        sock.send(b"X-A: b\r\n")
                    except OSError:
                        pass

        thread = threading.Thread(target=dribble, daemon=True)
        thread.start()
        try:
            latencies = []
            for _ in range(20):
                start = time.monotonic()
                assert get(port) == 200
                latencies.append(time.monotonic() - start)
                time.sleep(0.05)
            assert statistics.median(latencies) < 0.1 and max(latencies) < 1, latencies
            # ... and the slow connections do not stay: all dropped at the head deadline.
            selector = selectors.DefaultSelector()
            for sock in socks:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            open_ = set(socks)
            deadline = time.monotonic() + 6
            while open_ and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.5):
                    selector.unregister(key.fileobj)
                    open_.discard(key.fileobj)  # type: ignore[arg-type]
            assert not open_, f"{len(open_)} of {slow} slow connections still open"
            assert get(port) == 200
        finally:
            stop.set()
            thread.join()
            for sock in socks:
                sock.close()


def test_itemflow_serve_applies_the_limits(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITEMFLOW_")}
    env.update(ITEMFLOW_DATA_DIR=str(tmp_path), ITEMFLOW_BOOTSTRAP_ADMIN="false",
               ITEMFLOW_LOG_LEVEL="warning", ITEMFLOW_MAX_HEADER_BYTES="2048",
               ITEMFLOW_KEEP_ALIVE_TIMEOUT_SECONDS="1")
    proc = subprocess.Popen([sys.executable, "-m", "itemflow", "serve", "--port", str(port)],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert get(port) == 200
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "itemflow serve did not start"
                time.sleep(0.1)
        assert get(port, b"X-A: " + b"a" * 3000 + b"\r\n") == 431
        with connect(port) as sock:
            elapsed = closed_after(sock, 6)
            assert elapsed is not None and elapsed < 3, elapsed
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
