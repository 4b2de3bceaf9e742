"""The composition root: build the database, sandbox and worker from settings, once per edge
(the API's lifespan, a CLI command, the `worker` process)."""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from itemflow.db import Database
from itemflow.runs.worker import RunEvents, Worker
from itemflow.sandbox import LocalSandbox, RemoteSandbox, Sandbox, SandboxUnavailable
from itemflow.settings import Settings

log = logging.getLogger("itemflow")


def build_database(settings: Settings) -> Database:
    return Database(settings.resolved_database_url, pool_size=settings.database_pool_size,
                    busy_timeout_ms=settings.sqlite_busy_timeout_ms)


def build_sandbox(settings: Settings) -> Sandbox:
    if settings.sandbox_url:
        token = settings.runner_token.get_secret_value() if settings.runner_token else ""
        return RemoteSandbox(settings.sandbox_url, token, google_id_token=settings.sandbox_google_id_token)
    return LocalSandbox(pool_size=settings.sandbox_pool_size or os.cpu_count() or 1,
                        python=settings.sandbox_python)


async def start_sandbox(sandbox: Sandbox) -> str | None:
    """Start it; if it cannot start, say why (the API keeps serving; runs fail with the reason)."""
    try:
        await sandbox.start()
    except SandboxUnavailable as exc:
        log.error("sandbox unavailable: %s", exc)
        return str(exc)
    return None


def build_worker(settings: Settings, database: Database, sandbox: Sandbox,
                 events: RunEvents | None = None) -> Worker:
    worker = Worker(database, sandbox, concurrency=settings.sandbox_pool_size or os.cpu_count() or 1,
                    max_attempts=settings.max_attempts, events=events,
                    lease=timedelta(seconds=settings.worker_lease_seconds),
                    poll_interval=settings.worker_poll_seconds)
    database.on_runs_queued(worker.wake)
    return worker
