"""The one place where errors become HTTP: RFC 9457 application/problem+json."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from itemflow.errors import DomainError, Invalid, OAuthError

log = logging.getLogger("itemflow.api")

PROBLEM = "application/problem+json"
# A 422 lists this many errors: one per bad field would let a request buy an answer ten times
# its size (60,000 unknown fields: 8 MB).
MAX_ERRORS = 50


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None
    errors_omitted: int | None = Field(
        default=None, description=f"Errors past the first {MAX_ERRORS}, counted but not listed.")


_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing or invalid credentials",
    403: "Missing scope",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large",
    422: f"Invalid input; `errors` names each field (the first {MAX_ERRORS}; `errors_omitted` "
         "counts the rest)",
    429: "Rate limit exceeded",
    503: "A dependency (database, sandbox) is unavailable",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations for the error responses a route can give."""
    ref = {"$ref": "#/components/schemas/Problem"}
    return {
        code: {"model": Problem, "description": _DESCRIPTIONS[code],
               "content": {PROBLEM: {"schema": ref}}}
        for code in codes
    }


# Every route can meet these: malformed or oversized bodies, bad input, a database that is down.
COMMON_ERRORS = (400, 413, 422, 503)
# Every route that needs credentials: missing/invalid ones, a missing scope, a rate limit.
AUTH_ERRORS = (401, 403, 429)


def problem(
    status: int, title: str, detail: str, request: Request | None = None,
    headers: dict[str, str] | None = None, **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
        # A rate-limited route reports its limit on errors too (set by auth.deps.rate_limit).
        if limit_headers := getattr(request.state, "rate_limit_headers", None):
            headers = {**limit_headers, **(headers or {})}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _loc(loc: tuple[Any, ...]) -> list[str | int]:
    return [p if isinstance(p, int) else str(p) for p in loc]


async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
    if isinstance(exc, OAuthError):  # the token endpoint speaks RFC 6749, section 5.2
        return JSONResponse({"error": exc.error, "error_description": exc.detail},
                            status_code=exc.status_code,
                            headers={**getattr(request.state, "rate_limit_headers", {}),
                                     "Cache-Control": "no-store", **exc.extra.get("headers", {})})
    errors = None
    if isinstance(exc, Invalid) and exc.field:
        errors = [{"loc": [exc.location, exc.field], "msg": exc.detail, "type": "invalid"}]
    headers = exc.extra.get("headers")
    if exc.status_code == 401 and not (headers and "WWW-Authenticate" in headers):
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return problem(exc.status_code, exc.title, exc.detail, request, headers=headers,
                   errors=errors)


def _short(part: str | int, limit: int = 100) -> str:
    text = str(part)
    return text if len(text) <= limit else text[:limit] + "..."


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    found = exc.errors()
    errors = [
        {"loc": _loc(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in found[:MAX_ERRORS]
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return problem(400, "Malformed JSON", "the request body is not valid JSON: "
                       + "; ".join(e["msg"] for e in errors), request)
    omitted = len(found) - len(errors)
    # `errors` names each field in full; the detail, for people, shortens what the client named.
    detail = "; ".join(f"{'.'.join(map(_short, e['loc']))}: {e['msg']}" for e in errors)
    if omitted:
        detail += f"; and {omitted} more errors"
    return problem(422, "Unprocessable content", detail or "invalid input", request,
                   errors=errors, errors_omitted=omitted or None)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    title = _DESCRIPTIONS.get(exc.status_code, "Error")
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names only the first route that matched the path; list them all.
        allowed = _allowed_methods(request)
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        detail = f"{request.method} is not allowed here; use {', '.join(allowed)}"
    return problem(exc.status_code, title, detail, request, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


async def _integrity_error(request: Request, exc: IntegrityError) -> JSONResponse:
    # A concurrent change won (e.g. the item an automation names was just deleted).
    log.info("integrity error: %s", exc.orig)
    return problem(409, "Conflict", "the change conflicts with a concurrent one; retry", request)


async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
    if exc.connection_invalidated or _is_unavailable(exc):
        log.warning("database unavailable: %s", exc.orig)
        return problem(503, "Service unavailable", "the database is unavailable; retry later",
                       request, headers={"Retry-After": "1"})
    raise exc


def _is_unavailable(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "Internal server error", "an unexpected error occurred", request)


async def error_response(request: Request, exc: Exception) -> Response:
    """The response the app's exception handlers give `exc`, for the code that answers outside
    FastAPI's routing (items/fast_read.py). An exception no handler answers propagates."""
    handlers = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is not Exception and (handler := handlers.get(cls)) is not None:
            return await handler(request, exc)
    raise exc  # the server error middleware answers it, as it does on a FastAPI route


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(IntegrityError, _integrity_error)  # type: ignore[arg-type]
    app.add_exception_handler(DBAPIError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
