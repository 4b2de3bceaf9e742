"""The application factory: settings, database and routers are wired here, never at import."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

import itemflow
from itemflow import runtime
from itemflow.api import health
from itemflow.api.middleware import BodySizeLimit
from itemflow.api.problems import install_problem_handlers
from itemflow.auth.deps import AuthRuntime, bootstrap_admin
from itemflow.auth.ratelimit import RateLimiter
from itemflow.auth.router import router as auth_router
from itemflow.automations.router import router as automations_router
from itemflow.db import migrate
from itemflow.items.fast_read import FastItemRead
from itemflow.items.router import router as items_router
from itemflow.observability.logging import RequestId
from itemflow.observability.metrics import RequestMetrics
from itemflow.observability.router import router as metrics_router
from itemflow.runs.router import router as runs_router
from itemflow.runs.worker import RunEvents
from itemflow.settings import Settings

DESCRIPTION = """Store **items**; attach **automations** (short Python programs) that run in a
sandbox whenever an item is created, updated or deleted; read every **run**'s outcome.
Errors are `application/problem+json` (RFC 9457)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = runtime.build_database(settings)
        if database.is_sqlite:
            # The embedded default keeps itself migrated; a shared database is migrated
            # explicitly (`itemflow db upgrade`) before replicas roll out.
            await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
        app.state.database = database
        app.state.auth = AuthRuntime(settings, lambda: app.state.database)
        app.state.rate_limiter = RateLimiter(settings)
        if settings.bootstrap_admin:
            await bootstrap_admin(database, app.state.auth)
        app.state.run_events = RunEvents()
        app.state.sandbox = None
        worker = None
        if settings.embedded_worker:
            sandbox = runtime.build_sandbox(settings)
            await runtime.start_sandbox(sandbox)
            app.state.sandbox = sandbox
            worker = runtime.build_worker(settings, database, sandbox, app.state.run_events)
            worker.start()
        # Everything built so far lives as long as the process: move it out of the collector's
        # reach, so that a full collection walks only what requests allocate. Measured under
        # load: +9% requests/s on the in-memory rate limit, +23% with Redis.
        gc.freeze()
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            if app.state.sandbox is not None:
                await app.state.sandbox.close()
            await app.state.auth.drain()
            await app.state.rate_limiter.close()
            await database.dispose()

    app = FastAPIOffline(
        title="itemflow",
        version=itemflow.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_problem_handlers(app)
    app.add_middleware(FastItemRead)  # innermost: GET /items/{id} without FastAPI's overhead
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestId)  # outermost: every log line of the request carries its id
    app.include_router(health.router)
    app.include_router(items_router)
    app.include_router(automations_router)
    app.include_router(runs_router)
    app.include_router(metrics_router)
    app.include_router(auth_router)
    return app

