from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from itemflow.auth.scopes import Scope, grants, normalise
from itemflow.schemas import InputSchema, OutputSchema, Text

Scopes = Annotated[list[Scope], Field(min_length=1, max_length=16), AfterValidator(normalise)]
USERNAME_PATTERN = r"^[A-Za-z0-9._@-]{1,100}$"
Username = Annotated[str, Field(min_length=1, max_length=100, pattern=USERNAME_PATTERN)]
Password = Annotated[str, Field(min_length=8, max_length=1024)]


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do."""

    kind: Literal["key", "user", "cli"]
    id: int
    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def ref(self) -> str:
        """A stable, non-secret identifier (rate-limit key, audit `created_by`)."""
        return f"{self.kind}:{self.id}"

    def has(self, scope: str) -> bool:
        return grants(self.scopes, scope)


CLI = Principal(kind="cli", id=0, name="command line", scopes=frozenset({"admin"}))


class KeyCreate(InputSchema):
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    scopes: Scopes
    expires_at: datetime | None = Field(default=None, description="Timezone-aware; default: never.")


class KeyRead(OutputSchema):
    id: int
    name: str
    scopes: list[str]
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyRead):
    key: str = Field(description="The key itself. Shown this once: it is stored only as a hash.")


class UserCreate(InputSchema):
    username: Username
    password: Password
    scopes: Scopes


class UserRead(OutputSchema):
    id: int
    username: str
    scopes: list[str]
    created_at: datetime


class TokenRequest(InputSchema):
    grant_type: str | None = None
    username: str | None = None
    password: str | None = None
    scope: str = ""


class Token(OutputSchema):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth 2.0 token type)
    expires_in: int = Field(description="Seconds.")
    scope: str = Field(description="The granted scopes, space-separated.")


class Me(OutputSchema):
    kind: Literal["key", "user", "cli"]
    id: int
    name: str
    scopes: list[str]
