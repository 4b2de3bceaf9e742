"""Domain errors. Operations raise these; the API maps them to problem+json in one place."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code = 400
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    status_code = 404
    title = "Not found"


class Conflict(DomainError):
    status_code = 409
    title = "Conflict"


class Invalid(DomainError):
    """Input that is well-formed but refers to something impossible (422, names the field)."""

    status_code = 422
    title = "Unprocessable content"

    def __init__(
        self, detail: str, *, field: str | None = None, location: str = "body", **extra: Any
    ) -> None:
        super().__init__(detail, **extra)
        self.field = field
        self.location = location


class Unauthorized(DomainError):
    status_code = 401
    title = "Unauthorized"


class Forbidden(DomainError):
    status_code = 403
    title = "Forbidden"


class Unavailable(DomainError):
    status_code = 503
    title = "Service unavailable"


class RateLimited(DomainError):
    status_code = 429
    title = "Too many requests"


class OAuthError(DomainError):
    """An OAuth 2.0 token endpoint error, answered as RFC 6749 section 5.2 says (not problem+json)."""

    def __init__(self, error: str, detail: str, *, status_code: int = 400, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.error = error
        self.status_code = status_code
