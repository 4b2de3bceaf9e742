"""CPU per request with no sockets: the ASGI app called directly, on its embedded default.

    .venv/bin/python bench/inprocess.py get|post|patch|healthz [--requests 20000]
        [--concurrency 1] [--redis redis://127.0.0.1:6379/5] [--profile]

For finding where a request's time goes (repeatable within ~5%, unlike HTTP runs): uvicorn
and the socket are left out, everything from the app's outermost middleware in is measured.
`--profile` prints cProfile's top functions (cProfile inflates Python-heavy code: use it for
where, and the plain run for how much). Not a target's benchmark: http_bench.py is.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time
from collections import Counter
from typing import Any

import uvloop

REQUESTS = {
    "get": ("GET", "/items/1", b""),
    "post": ("POST", "/items", b'{"name": "bench", "description": "in-process"}'),
    "patch": ("PATCH", "/items/1", b'{"name": "renamed"}'),
    "healthz": ("GET", "/healthz", b""),
}


async def call(app: Any, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    if body:
        headers = [*headers, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"bench"), *headers], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "state": {}}
    messages: list[dict[str, Any]] = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def main(args: argparse.Namespace) -> None:
    from itemflow.api.app import create_app
    from itemflow.auth import service
    from itemflow.auth.schemas import CLI, KeyCreate
    from itemflow.settings import Settings

    app = create_app(Settings(bootstrap_admin=False))
    async with app.router.lifespan_context(app):  # type: ignore[attr-defined]
        state = app.state
        async with state.database.session(write=True) as session:
            created = await service.create_key(session, KeyCreate(name="bench", scopes=["admin"]),
                                               CLI, state.auth.keys)
        auth = [(b"authorization", f"Bearer {created.key}".encode())]
        assert await call(app, "POST", "/items", b'{"name": "first"}', auth) == 201
        request = REQUESTS[args.kind]
        headers = [] if args.kind == "healthz" else auth
        statuses: Counter[int] = Counter()

        async def client(n: int) -> None:
            for _ in range(n):
                statuses[await call(app, *request, headers)] += 1

        await client(500)  # warm-up
        statuses.clear()
        profile = cProfile.Profile() if args.profile else None
        each = args.requests // args.concurrency
        if profile:
            profile.enable()
        start = time.perf_counter()
        await asyncio.gather(*(client(each) for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - start
        if profile:
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        total = each * args.concurrency
        print(f"{args.kind}: {elapsed / total * 1e6:.1f} us a request over {total} "
              f"(concurrency {args.concurrency}); statuses {dict(statuses)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(REQUESTS))
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--redis", help="count the rate limit in this Redis (default: in memory)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    # The app's defaults, in a fresh data directory, with limits a run cannot reach.
    for name in [k for k in os.environ if k.startswith("ITEMFLOW_")]:
        del os.environ[name]
    os.environ.update(ITEMFLOW_DATA_DIR=tempfile.mkdtemp(prefix="itemflow-inprocess-"),
                      ITEMFLOW_LOG_LEVEL="warning", ITEMFLOW_EMBEDDED_WORKER="false",
                      ITEMFLOW_RATE_LIMIT_READS="100000000/minute", ITEMFLOW_RATE_LIMIT_WRITES="100000000/minute")
    if args.redis:
        os.environ["ITEMFLOW_REDIS_URL"] = args.redis
    uvloop.run(main(args))
