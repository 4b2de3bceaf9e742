"""The worker: claims queued runs, executes them in the sandbox, records the outcome.

The same class runs inside the API process (embedded default, SQLite) and as `itemflow worker`
processes (PostgreSQL). Claims are leases renewed by a heartbeat; a reaper re-queues runs whose
lease expired, so a run is executed at least once and never stays `running` forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

from structlog.contextvars import bind_contextvars

from itemflow.db import Database
from itemflow.observability import metrics
from itemflow.runs import service
from itemflow.runs.models import Run
from itemflow.sandbox import Limits, Sandbox, SandboxResult, SandboxUnavailable

log = logging.getLogger("itemflow.worker")

MAX_RESULT_BYTES = 64 * 1024


class RunEvents:
    """In-process notifications that a run finished, for `?wait=` without busy polling."""

    def __init__(self) -> None:
        self._waiters: dict[int, list[asyncio.Future[None]]] = defaultdict(list)

    def finished(self, run_id: int) -> None:
        for future in self._waiters.pop(run_id, []):
            if not future.done():
                future.set_result(None)

    async def wait(self, run_id: int, timeout: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[run_id].append(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(run_id)
            if waiters and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[run_id]


def outcome_of(result: SandboxResult) -> dict[str, Any]:
    error = result.error
    value = result.result
    if value is not None:
        size = len(json.dumps(value))
        if size > MAX_RESULT_BYTES:
            value = None
            error = (error + "; " if error else "") + (
                f"result dropped: {size} bytes of JSON is over the {MAX_RESULT_BYTES} byte limit")
    return {
        "status": result.status,
        "exit_code": result.exit_code,
        "stdout": result.stdout,  # the columns' types make all of these storable
        "stderr": result.stderr,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "result": value,
        "error": error or None,
        "duration_ms": round(result.duration_ms, 3),
    }


class Worker:
    def __init__(
        self,
        database: Database,
        sandbox: Sandbox,
        *,
        concurrency: int,
        max_attempts: int = 3,
        lease: timedelta = timedelta(seconds=15),
        poll_interval: float = 1.0,
        events: RunEvents | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.database = database
        self.sandbox = sandbox
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.lease = lease
        self.poll_interval = poll_interval
        self.events = events or RunEvents()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._executor(i), name=f"executor-{i}")
                       for i in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._reaper(), name="reaper"))
        self.wake()

    def wake(self) -> None:
        self._wakeup.set()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let runs in progress finish within `grace`, else release them."""
        self._stopping.set()
        self.wake()
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=grace)
            for task in pending:
                task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._running, return_exceptions=True)

    # --- loops --------------------------------------------------------------------------

    async def _executor(self, index: int) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                run = await self._claim()
            except Exception:
                log.exception("claiming a run failed; retrying")
                run = None
                await self._sleep(self.poll_interval)
            if run is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.poll_interval)
                continue
            task = asyncio.create_task(self.execute(run))
            self._running.add(task)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    raise
            finally:
                self._running.discard(task)

    async def _reaper(self) -> None:
        interval = max(1.0, self.lease.total_seconds() / 3)
        while not self._stopping.is_set():
            try:
                async with self.database.session(write=True) as session:
                    reaped = await service.reap_expired(session, self.max_attempts)
                if reaped:
                    log.warning("reaped %d runs whose worker was lost", reaped)
            except Exception:
                log.exception("reaping expired leases failed")
            await self._sleep(interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # --- one run ------------------------------------------------------------------------

    async def _claim(self, run_id: int | None = None) -> Run | None:
        async with self.database.session(write=True) as session:
            return await service.claim(session, self.worker_id, self.lease, run_id=run_id)

    async def run_one(self, run_id: int) -> bool:
        """Claim and execute this run here, if nobody else has (used by the CLI's --wait)."""
        run = await self._claim(run_id)
        if run is None:
            return False
        await self.execute(run)
        return True

    async def execute(self, run: Run) -> None:
        # This task's log lines carry the run id (contextvars are per task).
        bind_contextvars(run_id=run.id, attempt=run.attempt)
        payload = {**run.input, "automation_id": run.automation_id, "run_id": run.id}
        limits = Limits(timeout_seconds=run.timeout_seconds, memory_mb=run.memory_mb)
        heartbeat = asyncio.create_task(self._heartbeat(run.id))
        outcome: dict[str, Any] | None
        error: str | None = None
        started = time.perf_counter()
        try:
            outcome = outcome_of(await self.sandbox.run(run.code, payload, limits))
        except asyncio.CancelledError:
            # Shutting down past the grace period: hand the run back for another worker.
            async with self.database.session(write=True) as session:
                await service.release(session, run.id, self.worker_id)
            raise
        except SandboxUnavailable as exc:
            if exc.transient:  # e.g. the code-runner is unreachable for now: try again later
                outcome, error = None, f"sandbox unavailable: {exc}"
            else:  # the host cannot sandbox at all: retrying cannot help until an operator acts
                outcome = {"status": "failed", "error": f"sandbox unavailable: {exc}"}
        except Exception as exc:  # a transient fault of the runner, not of the user's code
            log.warning("run %s attempt %s: sandbox error: %r", run.id, run.attempt, exc)
            outcome, error = None, f"sandbox error: {type(exc).__name__}: {exc}"
        finally:
            heartbeat.cancel()
        async with self.database.session(write=True) as session:
            if outcome is not None:
                if not await service.finish(session, run.id, self.worker_id, outcome):
                    log.warning("run %s: lease lost before it finished; outcome discarded", run.id)
            else:
                await service.retry_or_bury(session, run, self.worker_id, error or "", self.max_attempts)
        if outcome is not None:
            metrics.sandbox_latency.observe(time.perf_counter() - started)
            metrics.runs_finished.labels(outcome["status"]).inc()
            log.info("run finished: %s", outcome["status"])
        self.events.finished(run.id)

    async def _heartbeat(self, run_id: int) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.database.session(write=True) as session:
                    if not await service.renew_lease(session, run_id, self.worker_id, self.lease):
                        log.warning("run %s: lease lost", run_id)
                        return
            except Exception:
                log.exception("run %s: renewing the lease failed", run_id)
