"""Prometheus metrics. The collectors live in one registry of their own (not the global
default), so that several apps in one process (tests, bench) never collide."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from itemflow.db.base import utcnow
from itemflow.runs.models import Run

REGISTRY = CollectorRegistry(auto_describe=True)

http_requests = Counter("itemflow_http_requests_total", "HTTP requests by route and status",
                        ["method", "route", "status"], registry=REGISTRY)
http_latency = Histogram("itemflow_http_request_duration_seconds", "HTTP request latency",
                         ["method", "route"], registry=REGISTRY,
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
runs_finished = Counter("itemflow_runs_finished_total", "Runs finished by this process, by status",
                        ["status"], registry=REGISTRY)
sandbox_latency = Histogram("itemflow_sandbox_run_seconds", "Sandbox run wall time",
                            registry=REGISTRY,
                            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 15, 60))
rate_limited = Counter("itemflow_rate_limit_rejections_total", "Requests refused with 429",
                       ["limit"], registry=REGISTRY)
runs_by_status = Gauge("itemflow_runs", "Runs in the database by status", ["status"],
                       registry=REGISTRY)
queue_depth = Gauge("itemflow_queue_depth", "Runs waiting to be executed", registry=REGISTRY)
queue_age = Gauge("itemflow_queue_oldest_age_seconds", "Age of the oldest queued run",
                  registry=REGISTRY)

STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "dead")


async def render(session: AsyncSession) -> bytes:
    """The exposition text, with the database-wide gauges read now."""
    counts = dict((await session.execute(select(Run.status, func.count()).group_by(Run.status))).all())
    for status in STATUSES:
        runs_by_status.labels(status).set(counts.get(status, 0))
    queue_depth.set(counts.get("queued", 0))
    # func.min() loses the column's type on SQLite: ask for it back, so the value is aware UTC.
    oldest = await session.scalar(
        select(func.min(Run.queued_at, type_=Run.queued_at.type)).where(Run.status == "queued"))
    queue_age.set((utcnow() - oldest).total_seconds() if oldest else 0)
    return generate_latest(REGISTRY)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Pure ASGI middleware: count and time requests by route template (not raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The labelled children, looked up once per (method, route, status): labels() costs
        # more than the observation. Bounded: templates, methods and statuses are few.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            key = (method, template, status)
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    http_requests.labels(method, template, str(status)),
                    http_latency.labels(method, template),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - start)
