"""FastAPI side of access control: the bearer scheme, scope checks and rate limits.

Every protected route declares `dependencies=access("<scope>")`: authenticate (API key or JWT),
check the scope, then count the request against its rate limit. The scopes show in OpenAPI.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request, Response, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from fastapi.security.utils import get_authorization_scheme_param

from itemflow.auth import crypto, service
from itemflow.auth.ratelimit import RateLimiter, client_address
from itemflow.auth.schemas import Principal
from itemflow.auth.scopes import SCOPES
from itemflow.db import Database
from itemflow.errors import Forbidden
from itemflow.settings import Settings

log = logging.getLogger("itemflow.auth")


class AuthRuntime:
    """What authentication needs at request time; built once per app."""

    def __init__(self, settings: Settings, database_getter: Any) -> None:
        self.keys = crypto.Keys.derive(settings.resolved_secret_key())
        self.token_ttl = timedelta(seconds=settings.access_token_ttl_seconds)
        self.usage = service.KeyUsage()
        self._database = database_getter
        self._tasks: set[asyncio.Task[None]] = set()

    async def fetch(self, statement: Any, params: dict[str, Any]) -> Any:
        database: Database = self._database()
        return await database.fetch_one_unless_changed(statement, params)

    def touch_later(self, key_id: int) -> None:
        """Record last_used_at off the request path, in its own unit of work."""
        task = asyncio.get_running_loop().create_task(self._touch(key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch(self, key_id: int) -> None:
        try:
            async with self._database().session(write=True) as session:
                await service.touch_key(session, key_id, datetime.now(UTC))
        except Exception as exc:  # best effort: a missed last_used_at is not worth a failure
            log.warning("could not record last_used_at of key %s: %s", key_id, type(exc).__name__)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Guard(OAuth2PasswordBearer):
    """The bearer scheme, as OpenAPI shows it, doing the whole check in one dependency (one
    rather than three: FastAPI's dependency solving cost more per request than the checks)."""

    async def __call__(  # type: ignore[override]
        self, request: Request, security_scopes: SecurityScopes, response: Response
    ) -> Principal:
        state = request.app.state
        token = bearer_token(request.headers.get("Authorization"))
        principal, headers = await admit(state.auth, state.rate_limiter, token,
                                         security_scopes.scopes, request.method)
        request.state.principal = principal
        # A later error of the request (a 404, say) carries the X-RateLimit-* headers too.
        request.state.rate_limit_headers = headers
        response.headers.update(headers)
        return principal


guard = Guard(
    tokenUrl="/auth/token", scopes=SCOPES, auto_error=False, scheme_name="Bearer",
    description="`Authorization: Bearer <token>`, where the token is an API key (`itf_...`, "
    "from `POST /keys` or `itemflow keys create`) or an access token from `POST /auth/token`.",
)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header, read as the OAuth2 scheme reads it."""
    scheme, token = get_authorization_scheme_param(authorization)
    return token if authorization and scheme.lower() == "bearer" else None


async def admit(auth: AuthRuntime, limiter: RateLimiter, token: str | None,
                scopes: Sequence[str], method: str) -> tuple[Principal, dict[str, str]]:
    """What every protected request goes through: authenticate the token (API key or JWT),
    check the route's scopes, then count the request against its class's rate limit.
    The principal and the X-RateLimit-* headers to send; raises Unauthorized, Forbidden or
    RateLimited."""
    principal, touch = await service.authenticate(auth.fetch, token, auth.keys, auth.usage)
    for scope in scopes:
        if not principal.has(scope):
            raise Forbidden(
                f"this needs the scope {scope!r}, which the credential does not hold",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
    if touch is not None:  # a refused request changes nothing, not even last_used_at
        auth.touch_later(touch)
    return principal, await limiter.check(_limit_class(method, scopes), principal.ref)


def _limit_class(method: str, scopes: Sequence[str]) -> str:
    if "automations:write" in scopes:
        return "automation_writes"
    if "runs:write" in scopes:
        return "runs"
    return "reads" if method in ("GET", "HEAD") else "writes"


async def token_rate_limit(request: Request, response: Response) -> None:
    """The strict limit on password attempts, per client address."""
    limiter: RateLimiter = request.app.state.rate_limiter
    headers = await limiter.check("token", "ip:" + _address(request, limiter))
    request.state.rate_limit_headers = headers  # the token endpoint's errors carry them too
    response.headers.update(headers)


def _address(request: Request, limiter: RateLimiter) -> str:
    peer = request.client.host if request.client else None
    forwarded = request.headers.getlist("x-forwarded-for") if limiter.trusted_proxies else []
    return client_address(peer, forwarded, limiter.trusted_proxies)


def access(scope: str | None = None) -> list[Any]:
    """The dependencies of a route that needs `scope` (None: any valid credential)."""
    return [Security(guard, scopes=[scope] if scope else [])]


async def _current_principal(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # a route that forgot `dependencies=access(...)`: refuse, loudly
        raise RuntimeError("the route reads the principal without declaring access()")
    return principal


# For routes that declared `dependencies=access(...)`: the principal it authenticated.
CurrentPrincipal = Annotated[Principal, Depends(_current_principal)]


async def get_auth(request: Request) -> AuthRuntime:
    return request.app.state.auth


def announce_bootstrap_key(key: str) -> None:
    """Print the first admin key once, on the console (stderr), never through logging."""
    sys.stderr.write(
        "\n"
        "itemflow: no admin credential existed, so an admin API key was created.\n"
        "It is shown this once and stored only as a hash:\n\n"
        f"    {key}\n\n"
        "Keep it in a secret manager. Make narrower keys with `POST /keys` or "
        "`itemflow keys create`.\n\n"
    )
    sys.stderr.flush()


async def bootstrap_admin(database: Database, runtime: AuthRuntime) -> None:
    """First start: if no admin credential exists, create an admin key and show it once."""
    from sqlalchemy.exc import DBAPIError

    try:
        async with database.session(write=True) as session:
            created = await service.bootstrap_admin_key(session, runtime.keys)
    except DBAPIError as exc:  # not migrated yet, or down: the API still starts (readyz says why)
        log.warning("could not check for an admin credential: %s", type(exc).__name__)
        return
    if created is not None:
        log.warning("no admin credential existed: created admin API key %s (id %s), shown on "
                    "the console once", created.prefix, created.id)
        announce_bootstrap_key(created.key)
