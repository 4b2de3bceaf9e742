"""Rate limits on the `limits` library: a fixed window per (class of route, caller).

The caller is the authenticated principal, else the client address. Counters live in memory
(one process) or in Redis (`ITEMFLOW_REDIS_URL`), where they hold across processes and replicas.
When Redis cannot be reached, `ITEMFLOW_RATE_LIMIT_FAIL_OPEN` chooses: serve without a limit
(true, the default) or answer 503 (false).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import storage_from_string

from itemflow.errors import RateLimited, Unavailable
from itemflow.observability import metrics
from itemflow.settings import Settings

log = logging.getLogger("itemflow.ratelimit")

LimitClass = Literal["reads", "writes", "automation_writes", "runs", "token"]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: float  # epoch seconds when the window ends

    def headers(self, now: float) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(max(0, math.ceil(self.reset - now)))}


class _CoalescedIncr:
    """Concurrent hits on one counter share one round trip to the storage.

    While an increment of a key is in flight, later hits on that key wait and then go
    together as one `incr(key, amount=n)`; each still gets its own count, exactly as if they
    had been sent one by one. A busy client's requests (the case a rate limit is for) then
    cost one Redis round trip per batch instead of one each: a redis-py round trip costs
    ~60-90 us of CPU, more than the rest of an authenticated read.
    """

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self._waiting: dict[str, list[asyncio.Future[int]]] = {}
        self._sending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def incr(self, key: str, expiry: int) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if key not in self._sending:
            self._sending.add(key)
            task = asyncio.create_task(self._send(key, expiry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _send(self, key: str, expiry: int) -> None:
        try:
            while waiters := self._waiting.pop(key, None):
                try:
                    count = await self.storage.incr(key, expiry, amount=len(waiters))
                except BaseException as exc:  # every waiter of the batch sees the failure
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                first = count - len(waiters) + 1
                for offset, waiter in enumerate(waiters):
                    if not waiter.done():
                        waiter.set_result(first + offset)
        finally:
            self._sending.discard(key)


class _LocalWindows:
    """Fixed-window counters of one process: the storage when there is no Redis.

    In place of the library's async memory storage, which starts a task on every hit to expire
    old keys and takes an asyncio lock per key: ~4 us of the ~70 us a GET /items/{id} costs
    at 64 concurrent requests (in-process, bench/inprocess.py). Expired windows are dropped
    when they grow many."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, count)

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        end, count = self._windows.get(key, (0.0, 0))
        if end <= now:
            if len(self._windows) >= 100_000:
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
            end, count = now + expiry, 0
        count += amount
        self._windows[key] = (end, count)
        return count

    async def get_expiry(self, key: str) -> float:
        return self._windows.get(key, (time.time(), 0))[0]


class _Strategy:
    """The library's fixed window (as its FixedWindowRateLimiter.hit counts it), answering the
    count and the window's end in one round trip in the steady state (the end is learnt once
    per window and remembered). On Redis, concurrent hits on a counter are coalesced (see
    _CoalescedIncr); in memory a hit costs less than the coalescing would."""

    def __init__(self, storage: Any, *, coalesce: bool) -> None:
        self.storage = storage
        self._incr = _CoalescedIncr(storage).incr if coalesce else storage.incr
        self._resets: dict[str, float] = {}

    async def hit_with_stats(self, item: RateLimitItem, *identifiers: str) -> Decision:
        key = item.key_for(*identifiers)
        expiry = item.get_expiry()
        count = await self._incr(key, expiry)  # FixedWindowRateLimiter.hit's call
        now = time.time()
        if count == 1:
            reset = now + expiry
            self._remember(key, reset, now)
        else:
            reset = self._resets.get(key, 0.0)
            if reset <= now:
                reset = await self.storage.get_expiry(key)
                self._remember(key, reset, now)
        return Decision(count <= item.amount, item.amount, max(0, item.amount - count), reset)

    def _remember(self, key: str, reset: float, now: float) -> None:
        if len(self._resets) >= 50_000:
            self._resets = {k: v for k, v in self._resets.items() if v > now}
            if len(self._resets) >= 50_000:
                self._resets.clear()
        self._resets[key] = reset


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.items: dict[str, RateLimitItem] = {
            "reads": parse(settings.rate_limit_reads),
            "writes": parse(settings.rate_limit_writes),
            "automation_writes": parse(settings.rate_limit_automation_writes),
            "runs": parse(settings.rate_limit_runs),
            "token": parse(settings.rate_limit_token),
        }
        self.fail_open = settings.rate_limit_fail_open
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        if settings.redis_url:
            uri = settings.redis_url
            if not uri.startswith("async+"):
                uri = "async+" + uri
            # redis-py's asyncio client (the `coredis` default would need limits[async-redis]);
            # short timeouts so that a Redis outage costs each request little.
            self.storage = storage_from_string(
                uri, implementation="redispy", wrap_exceptions=True, key_prefix=settings.rate_limit_redis_prefix,
                socket_timeout=settings.rate_limit_redis_timeout_seconds,
                socket_connect_timeout=settings.rate_limit_redis_timeout_seconds,
            )
        else:
            self.storage = _LocalWindows()
        self.strategy = _Strategy(self.storage, coalesce=bool(settings.redis_url))
        self._last_outage_log = 0.0

    async def hit(self, limit_class: str, identity: str) -> Decision | None:
        """Count one request; None when the storage is down and we fail open."""
        item = self.items[limit_class]
        try:
            return await self.strategy.hit_with_stats(item, limit_class, identity)
        except (StorageError, OSError, TimeoutError) as exc:
            self._log_outage(exc)
            if self.fail_open:
                return None
            raise Unavailable("the rate limiter's storage is unavailable; retry later",
                              headers={"Retry-After": "1"}) from None

    def _log_outage(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_outage_log > 10:
            self._last_outage_log = now
            cause = getattr(exc, "storage_error", exc)
            log.warning("rate limit storage unavailable (%s): failing %s", type(cause).__name__,
                        "open" if self.fail_open else "closed")

    async def check(self, limit_class: str, identity: str) -> dict[str, str]:
        """Hit the limit; the X-RateLimit-* headers to send; raises RateLimited when over."""
        decision = await self.hit(limit_class, identity)
        if decision is None:
            return {}
        now = time.time()
        headers = decision.headers(now)
        if not decision.allowed:
            retry_after = max(1, math.ceil(decision.reset - now))
            metrics.rate_limited.labels(limit_class).inc()
            raise RateLimited(
                f"rate limit of {decision.limit} requests per "
                f"{_window(self.items[limit_class])} exceeded; retry in {retry_after} s",
                headers={**headers, "Retry-After": str(retry_after)},
            )
        return headers

    async def close(self) -> None:
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


def parse_networks(values: Sequence[str]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _trusted(address: str, networks: tuple[IpNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str | None, forwarded_for: Sequence[str],
                   trusted: tuple[IpNetwork, ...]) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy; then the
    right-most X-Forwarded-For hop that is not a trusted proxy (hops to its left could have
    been written by anyone)."""
    peer = peer or "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer
