"""Rate limits on real Redis and real servers: shared across processes, keyed so a client
cannot spoof its way out, the right headers, and the documented choice when Redis is down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from itemflow.auth.ratelimit import client_address, parse_networks
from itemflow.db import migrate
from itemflow.settings import Settings
from tests.auth.conftest import REDIS_URL, SECRET
from tests.credentials import bearer, make_key

pytestmark = pytest.mark.redis


def _admin_key(data_dir: Path) -> str:
    migrate.upgrade(f"sqlite:///{data_dir / 'itemflow.db'}")
    settings = Settings(_env_file=None, data_dir=data_dir, secret_key=SECRET)  # type: ignore[call-arg]
    return make_key(settings, ["admin"]).key


def test_two_server_processes_on_one_redis_share_one_limit(start_server: Any, redis_prefix: str,
                                                          tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    key = _admin_key(data_dir)
    env = {"ITEMFLOW_REDIS_URL": REDIS_URL, "ITEMFLOW_RATE_LIMIT_REDIS_PREFIX": redis_prefix,
           "ITEMFLOW_RATE_LIMIT_READS": "6/minute"}
    a = start_server(env, data_dir=data_dir)
    b = start_server(env, data_dir=data_dir)
    statuses, remaining = [], []
    for n in range(8):
        r = httpx.get((a if n % 2 == 0 else b).url + "/items", headers=bearer(key))
        statuses.append(r.status_code)
        remaining.append(r.headers.get("x-ratelimit-remaining"))
    assert statuses == [200] * 6 + [429] * 2
    assert remaining == ["5", "4", "3", "2", "1", "0", "0", "0"]
    # Another principal has its own budget, on either server.
    other = _admin_key(data_dir)
    assert httpx.get(b.url + "/items", headers=bearer(other)).status_code == 200


def test_429_headers(start_server: Any, redis_prefix: str, tmp_path: Path) -> None:
    key = _admin_key(tmp_path / "data")
    server = start_server({"ITEMFLOW_REDIS_URL": REDIS_URL, "ITEMFLOW_RATE_LIMIT_REDIS_PREFIX": redis_prefix,
                           "ITEMFLOW_RATE_LIMIT_WRITES": "2/minute"})
    with httpx.Client(base_url=server.url, headers=bearer(key)) as c:
        first = c.post("/items", json={"name": "a"})
        assert first.status_code == 201
        assert first.headers["x-ratelimit-limit"] == "2"
        assert first.headers["x-ratelimit-remaining"] == "1"
        assert 55 <= int(first.headers["x-ratelimit-reset"]) <= 60
        assert c.post("/items", json={"name": "b"}).headers["x-ratelimit-remaining"] == "0"
        refused = c.post("/items", json={"name": "c"})
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["status"] == 429 and "2 requests per minute" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-ratelimit-limit"] == "2"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert abs(int(refused.headers["x-ratelimit-reset"]) - int(refused.headers["retry-after"])) <= 1
        assert len(c.get("/items").json()["data"]) == 2  # the refused write did not happen
        # Reads are a class of their own, with their own headers (and errors carry them too).
        missing = c.get("/items/999")
        assert missing.status_code == 404 and "x-ratelimit-limit" in missing.headers
        # Unlimited routes carry none.
        assert "x-ratelimit-limit" not in c.get("/healthz").headers


def test_token_endpoint_is_limited_per_address_and_spoofed_forwarded_for_does_not_help(
        start_server: Any, redis_prefix: str) -> None:
    server = start_server({"ITEMFLOW_REDIS_URL": REDIS_URL, "ITEMFLOW_RATE_LIMIT_REDIS_PREFIX": redis_prefix})
    form = {"grant_type": "password", "username": "nobody", "password": "wrong password"}
    statuses = [httpx.post(server.url + "/auth/token", data=form,
                           headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code for n in range(12)]
    assert statuses == [400] * 10 + [429] * 2  # default: 10 attempts a minute per address


def test_trusted_proxy_forwarded_for_uses_the_right_most_untrusted_hop(start_server: Any,
                                                                      redis_prefix: str) -> None:
    server = start_server({"ITEMFLOW_REDIS_URL": REDIS_URL, "ITEMFLOW_RATE_LIMIT_REDIS_PREFIX": redis_prefix,
                           "ITEMFLOW_TRUSTED_PROXIES": '["127.0.0.1/32"]', "ITEMFLOW_RATE_LIMIT_TOKEN": "2/minute"})
    form = {"grant_type": "password", "username": "nobody", "password": "wrong password"}

    def attempt(forwarded: str) -> int:
        return httpx.post(server.url + "/auth/token", data=form,
                          headers={"X-Forwarded-For": forwarded}).status_code

    # The client 198.51.100.7 forges a left-most hop each time: its bucket is still its own.
    assert [attempt(f"10.9.9.{n}, 198.51.100.7") for n in range(3)] == [400, 400, 429]
    # Another client behind the same proxy has its own bucket.
    assert attempt("198.51.100.8") == 400


def test_client_address_rules() -> None:
    trusted = parse_networks(["10.0.0.0/8", "127.0.0.1"])
    assert client_address("203.0.113.5", ["1.2.3.4"], trusted) == "203.0.113.5"  # untrusted peer
    assert client_address("127.0.0.1", ["6.6.6.6, 1.2.3.4, 10.1.1.1"], trusted) == "1.2.3.4"
    assert client_address("127.0.0.1", ["6.6.6.6", "1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", ["10.1.1.1"], trusted) == "10.1.1.1"  # all trusted: left-most
    assert client_address("127.0.0.1", ["1.2.3.4"], ()) == "127.0.0.1"  # no proxies configured


@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_down(start_server: Any, tmp_path: Path, fail_open: bool) -> None:
    key = _admin_key(tmp_path / "data")
    with __import__("socket").socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    server = start_server({"ITEMFLOW_REDIS_URL": dead, "ITEMFLOW_RATE_LIMIT_FAIL_OPEN": str(fail_open).lower()})
    started = time.monotonic()
    r = httpx.get(server.url + "/items", headers=bearer(key))
    assert time.monotonic() - started < 2
    if fail_open:
        assert r.status_code == 200
        assert "x-ratelimit-limit" not in r.headers
    else:
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["retry-after"] == "1"
        assert "rate limiter" in r.json()["detail"]
    # Authentication still comes first: no credentials is 401 either way.
    assert httpx.get(server.url + "/items").status_code == 401
    assert "rate limit storage unavailable" in server.output()


def test_memory_storage_by_default(client: Any, settings: Settings) -> None:
    assert settings.redis_url is None
    r = client.get("/items")
    assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "100000"


async def test_concurrent_hits_on_redis_are_each_counted_once(redis_prefix: str) -> None:
    """Concurrent hits on one counter share round trips (coalesced) but are counted exactly:
    two limiters (two processes, say) firing 30 hits each at a limit of 50 let exactly 50
    through, each allowed hit with its own remaining count."""
    from itemflow.auth.ratelimit import RateLimiter
    from itemflow.errors import RateLimited

    settings = Settings(redis_url=REDIS_URL, rate_limit_redis_prefix=redis_prefix,
                        rate_limit_reads="50/minute", secret_key=SECRET)
    limiters = [RateLimiter(settings), RateLimiter(settings)]
    try:
        results = await asyncio.gather(
            *(limiter.check("reads", "key:1") for limiter in limiters for _ in range(30)),
            return_exceptions=True,
        )
    finally:
        for limiter in limiters:
            await limiter.close()
    allowed = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(allowed) == 50 and len(refused) == 10, results
    assert sorted(int(h["X-RateLimit-Remaining"]) for h in allowed) == list(range(50))


async def test_memory_windows_count_reset_and_refuse() -> None:
    """Without Redis: each hit counted in its class and caller's window, refused past the
    limit with the time to wait, and counted from zero again in the next window."""
    import asyncio

    from itemflow.auth.ratelimit import RateLimiter
    from itemflow.errors import RateLimited

    limiter = RateLimiter(Settings(rate_limit_reads="2/second", secret_key=SECRET))
    first = await limiter.check("reads", "key:1")
    assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"]) == ("2", "1")
    assert (await limiter.check("reads", "key:1"))["X-RateLimit-Remaining"] == "0"
    assert (await limiter.check("reads", "key:2"))["X-RateLimit-Remaining"] == "1"  # its own window
    assert (await limiter.check("writes", "key:1"))["X-RateLimit-Limit"] != "2"  # another class
    with pytest.raises(RateLimited) as refused:
        await limiter.check("reads", "key:1")
    assert refused.value.extra["headers"]["Retry-After"] == "1"
    await asyncio.sleep(1.05)
    assert (await limiter.check("reads", "key:1"))["X-RateLimit-Remaining"] == "1"
