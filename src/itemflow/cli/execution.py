"""Commands that execute code: the worker, the code-runner service, trying code, doctor.

The sandbox and worker are imported inside the commands: the other commands start faster
without them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from itemflow.cli.common import fail, open_database, settings, to_json
from itemflow.observability.logging import configure_logging
from itemflow.runs.schemas import ManualRun, RunRead

sandbox_app = typer.Typer(help="Try code in the sandbox.", no_args_is_help=True)


def worker() -> None:
    """Execute queued runs (scale-out: run many against PostgreSQL). Stops cleanly on SIGTERM."""

    from itemflow import runtime
    from itemflow.runs.notify import listen_for_runs

    configure_logging(settings().log_level)

    async def main() -> None:
        s = settings()
        database = open_database()
        sandbox = runtime.build_sandbox(s)
        reason = await runtime.start_sandbox(sandbox)
        if reason:
            typer.echo(f"warning: sandbox unavailable, runs will fail: {reason}", err=True)
        w = runtime.build_worker(s, database, sandbox)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        listener = None
        if not database.is_sqlite:
            listener = asyncio.create_task(listen_for_runs(s.resolved_database_url, w.wake))
        w.start()
        typer.echo(f"worker {w.worker_id} started ({w.concurrency} at a time)", err=True)
        await stop.wait()
        typer.echo("stopping: finishing runs in progress", err=True)
        if listener:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await w.stop()
        await sandbox.close()
        await database.dispose()

    asyncio.run(main())


def runner(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Default: $PORT, else 8000.")] = None,
) -> None:
    """The private code-runner service: POST /run executes code in this machine's sandbox."""
    import uvicorn

    from itemflow.cli.main import default_port
    from itemflow.sandbox import LocalSandbox
    from itemflow.sandbox.runner import create_runner_app

    s = settings()
    if s.runner_token is None:
        fail("ITEMFLOW_RUNNER_TOKEN must be set: the runner executes code for whoever holds it", code=2)
    sandbox = LocalSandbox(pool_size=s.sandbox_pool_size or None)  # type: ignore[arg-type]
    app = create_runner_app(sandbox, s.runner_token.get_secret_value())
    uvicorn.run(app, host=host, port=port or default_port(), log_level=s.log_level)


def doctor() -> None:
    """Check the database and the sandbox; say exactly what is wrong."""
    from itemflow import runtime
    from itemflow.sandbox import Limits

    async def main() -> list[tuple[str, str | None]]:
        s = settings()
        checks: list[tuple[str, str | None]] = []
        database = runtime.build_database(s)
        try:
            await database.ping()
            checks.append(("database", None))
        except Exception as exc:
            checks.append(("database", f"{type(exc).__name__}: {exc}"))
        finally:
            await database.dispose()
        sandbox = runtime.build_sandbox(s)
        reason = await runtime.start_sandbox(sandbox) or await sandbox.check()
        if reason is None:
            try:
                result = await sandbox.run("print('ok')", {}, Limits(timeout_seconds=5))
            except Exception as exc:  # report it, whatever it is
                reason = f"a trivial run raised {type(exc).__name__}: {exc}"
            else:
                if result.status != "succeeded" or result.stdout != "ok\n":
                    reason = f"a trivial run gave {result.status}: {result.error or result.stderr}"
        checks.append(("sandbox", reason))
        await sandbox.close()
        return checks

    problems = 0
    for name, reason in asyncio.run(main()):
        typer.echo(f"{name:10} {'ok' if reason is None else 'FAIL: ' + reason}")
        problems += reason is not None
    raise typer.Exit(1 if problems else 0)


@sandbox_app.command("run")
def sandbox_run(
    file: Annotated[Path, typer.Argument(help="Python file; '-' reads stdin.")],
    input: Annotated[str, typer.Option("--input", help="JSON given to the code as `event`.")] = "{}",
    timeout: Annotated[float, typer.Option("--timeout")] = 5,
    memory: Annotated[int, typer.Option("--memory")] = 128,
) -> None:
    """Run code through the same sandbox automations use, and print the outcome as JSON."""
    from itemflow import runtime
    from itemflow.sandbox import Limits, SandboxUnavailable

    code = sys.stdin.read() if str(file) == "-" else _read(file)
    try:
        event = json.loads(input)
    except json.JSONDecodeError as exc:
        fail(f"--input is not JSON: {exc}", code=2)

    async def main() -> dict[str, Any]:
        sandbox = runtime.build_sandbox(settings())
        try:
            await sandbox.start()
            result = await sandbox.run(code, event, Limits(timeout_seconds=timeout, memory_mb=memory))
        except SandboxUnavailable as exc:
            fail(f"sandbox unavailable: {exc}")
        finally:
            await sandbox.close()
        return {k: getattr(result, k) for k in (
            "status", "exit_code", "stdout", "stderr", "stdout_truncated", "stderr_truncated",
            "result", "error", "duration_ms")}

    outcome = asyncio.run(main())
    typer.echo(to_json(outcome))
    raise typer.Exit(0 if outcome["status"] == "succeeded" else 1)


def _read(file: Path) -> str:
    try:
        return file.read_text()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", code=2)


def run_now(automation_id: int, item_id: int | None, wait: float) -> RunRead:
    """Queue a manual run; with `wait`, execute it here unless a running server takes it first."""
    from itemflow import runtime
    from itemflow.runs.waiting import run_automation, wait_for_run
    from itemflow.runs.worker import RunEvents

    async def main() -> RunRead:
        s = settings()
        database = open_database()
        events = RunEvents()
        try:
            run = await run_automation(database, events, automation_id, ManualRun(item_id=item_id), 0)
            if wait <= 0:
                return run
            if s.embedded_worker:
                sandbox = runtime.build_sandbox(s)
                await runtime.start_sandbox(sandbox)
                try:
                    w = runtime.build_worker(s, database, sandbox, events)
                    await asyncio.wait_for(w.run_one(run.id), wait)
                except TimeoutError:
                    pass
                finally:
                    await sandbox.close()
            return await wait_for_run(database, events, run.id, wait)
        finally:
            await database.dispose()

    return asyncio.run(main())
