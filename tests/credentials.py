"""API keys for tests, made with the same operation as `POST /keys` and `itemflow keys create`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import Any, TypeVar

from itemflow import runtime
from itemflow.auth import crypto, service
from itemflow.auth.schemas import CLI, KeyCreate, KeyCreated
from itemflow.settings import Settings

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even if this thread has a running loop."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def make_key(settings: Settings, scopes: Sequence[str] = ("admin",), *, name: str = "test",
             expires_at: datetime | None = None) -> KeyCreated:
    """Create an API key in the (migrated) database of `settings`."""

    async def main() -> KeyCreated:
        database = runtime.build_database(settings)
        try:
            async with database.session(write=True) as session:
                data = KeyCreate(name=name, scopes=list(scopes), expires_at=expires_at)  # type: ignore[arg-type]
                return await service.create_key(session, data, CLI,
                                                crypto.Keys.derive(settings.resolved_secret_key()))
        finally:
            await database.dispose()

    return run_sync(main())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
