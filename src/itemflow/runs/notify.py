"""Cross-process wake-ups on PostgreSQL: LISTEN for the NOTIFY sent when runs are queued."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from itemflow.runs.triggers import RUNS_CHANNEL

log = logging.getLogger("itemflow.worker")


def _libpq_url(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen_for_runs(database_url: str, wake: Callable[[], None], retry_seconds: float = 2.0) -> None:
    """Call `wake` on every notification; reconnect when the connection drops. Polling in the
    worker covers whatever is missed while disconnected."""
    url = _libpq_url(database_url)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {RUNS_CHANNEL}")
                wake()  # anything queued while we were not listening
                async for _ in conn.notifies():
                    wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("LISTEN connection lost (%s); retrying in %.0fs", exc, retry_seconds)
            await asyncio.sleep(retry_seconds)
