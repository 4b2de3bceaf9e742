"""Key, user and token operations. Each takes a session and schemas and returns schemas."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import bindparam, delete, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from itemflow.auth import crypto
from itemflow.auth.models import ApiKey, User
from itemflow.auth.schemas import (
    USERNAME_PATTERN,
    KeyCreate,
    KeyCreated,
    KeyRead,
    Principal,
    Token,
    TokenRequest,
    UserCreate,
    UserRead,
)
from itemflow.auth.scopes import ADMIN, SCOPES, grants, normalise
from itemflow.errors import Conflict, Forbidden, Invalid, NotFound, OAuthError, Unauthorized
from itemflow.pagination import Page, PageParams, paginate

# last_used_at is written at most this often per key (not on every request).
LAST_USED_RESOLUTION = timedelta(seconds=60)

# One read statement, outside a unit of work: `fetch(statement, params) -> row mapping | None`.
Fetch = Callable[[Any, dict[str, Any]], Awaitable[Any]]

_keys = ApiKey.__table__.c
_users = User.__table__.c
_KEY_BY_HASH = select(_keys.id, _keys.name, _keys.scopes, _keys.expires_at, _keys.revoked_at,
                      _keys.last_used_at).where(_keys.key_hash == bindparam("key_hash"))
_USER_BY_ID = select(_users.id, _users.username, _users.scopes).where(_users.id == bindparam("user_id"))

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def unauthorized(detail: str) -> Unauthorized:
    return Unauthorized(detail, headers={**CHALLENGE})


def _now() -> datetime:
    return datetime.now(UTC)


def _check_grantable(scopes: list[str], creator: Principal) -> None:
    for scope in scopes:
        if not creator.has(scope):
            raise Forbidden(f"you cannot grant the scope {scope!r}: you do not hold it",
                            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})


# --- API keys -------------------------------------------------------------------------------
async def create_key(session: AsyncSession, data: KeyCreate, creator: Principal,
                     keys: crypto.Keys) -> KeyCreated:
    _check_grantable(data.scopes, creator)
    if data.expires_at is not None:
        if data.expires_at.tzinfo is None:
            raise Invalid("expires_at needs a timezone (e.g. 2030-01-01T00:00:00Z)", field="expires_at")
        if data.expires_at <= _now():
            raise Invalid("expires_at is in the past", field="expires_at")
    secret = crypto.new_api_key()
    row = ApiKey(name=data.name, prefix=crypto.shown_prefix(secret), key_hash=keys.hash_api_key(secret),
                 scopes=normalise(data.scopes), expires_at=data.expires_at, created_by=creator.ref)
    session.add(row)
    await session.flush()
    return KeyCreated(**KeyRead.model_validate(row).model_dump(), key=secret)


async def list_keys(session: AsyncSession, params: PageParams) -> Page[KeyRead]:
    """Keys not revoked (expired ones included, with their expires_at); never the secret."""
    stmt = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    return await paginate(session, stmt, ApiKey.id, params, KeyRead)


async def revoke_key(session: AsyncSession, key_id: int) -> None:
    """From the moment this commits, the key authenticates nothing (no cache holds it)."""
    result = await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=_now())
    )
    if result.rowcount == 0:
        raise NotFound(f"API key {key_id} does not exist")


async def touch_key(session: AsyncSession, key_id: int, now: datetime) -> None:
    await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None),
                                                       ApiKey.last_used_at < now - LAST_USED_RESOLUTION))
        .values(last_used_at=now)
    )


async def bootstrap_admin_key(session: AsyncSession, keys: crypto.Keys) -> KeyCreated | None:
    """If no usable admin credential exists, create an admin key (shown once by the caller)."""
    if session.bind.dialect.name == "postgresql":
        # Replicas starting together: one creates the key, the others then see it.
        await session.execute(text("SELECT pg_advisory_xact_lock(7407011)"))
    now = _now()
    active = await session.execute(
        select(ApiKey.scopes, ApiKey.expires_at).where(ApiKey.revoked_at.is_(None))
    )
    for scopes, expires_at in active:
        if ADMIN in scopes and (expires_at is None or expires_at > now):
            return None
    for (scopes,) in await session.execute(select(User.scopes)):
        if ADMIN in scopes:
            return None
    bootstrap = Principal(kind="cli", id=0, name="bootstrap", scopes=frozenset({ADMIN}))
    return await create_key(session, KeyCreate(name="bootstrap admin", scopes=[ADMIN]), bootstrap, keys)


# --- users ----------------------------------------------------------------------------------
async def create_user(session: AsyncSession, data: UserCreate, creator: Principal) -> UserRead:
    _check_grantable(data.scopes, creator)
    if await session.scalar(select(User.id).where(User.username == data.username)) is not None:
        raise Conflict(f"the username {data.username!r} is taken")
    # Argon2 is deliberately slow (~50 ms of CPU): keep it off the event loop.
    password_hash = await asyncio.to_thread(crypto.hash_password, data.password)
    user = User(username=data.username, password_hash=password_hash, scopes=normalise(data.scopes))
    session.add(user)
    await session.flush()
    return UserRead.model_validate(user)


async def list_users(session: AsyncSession, params: PageParams) -> Page[UserRead]:
    return await paginate(session, select(User), User.id, params, UserRead)


async def delete_user(session: AsyncSession, user_id: int) -> None:
    """The user's access tokens stop working at once (each request checks the user exists)."""
    result = await session.execute(delete(User).where(User.id == user_id))
    if result.rowcount == 0:
        raise NotFound(f"user {user_id} does not exist")


# --- tokens ---------------------------------------------------------------------------------
async def issue_token(session: AsyncSession, form: TokenRequest, keys: crypto.Keys,
                      ttl: timedelta) -> Token:
    """OAuth 2.0 resource owner password grant; errors as RFC 6749 section 5.2 names them."""
    if form.grant_type is None or not form.username or form.password is None:
        raise OAuthError("invalid_request", "grant_type, username and password are required")
    if form.grant_type != "password":
        raise OAuthError("unsupported_grant_type", "only the password grant is supported")
    # A name no user can have (NUL and the like) is not looked up: no database could store it.
    user = None
    if re.fullmatch(USERNAME_PATTERN, form.username):
        user = (await session.execute(select(User).where(User.username == form.username))).scalar_one_or_none()
    valid = await asyncio.to_thread(crypto.verify_password, form.password,
                                    user.password_hash if user else None)
    if user is None or not valid:
        raise OAuthError("invalid_grant", "the username or password is wrong")
    asked = form.scope.split()
    unknown = [s for s in asked if s not in SCOPES]
    if unknown:
        raise OAuthError("invalid_scope", f"unknown scope(s): {' '.join(unknown)}")
    refused = [s for s in asked if not grants(user.scopes, s)]
    if refused:
        raise OAuthError("invalid_scope", f"the user does not hold: {' '.join(refused)}")
    granted = normalise(asked) if asked else normalise(user.scopes)
    token = keys.issue_jwt(f"user:{user.id}", granted, ttl)
    return Token(access_token=token, expires_in=int(ttl.total_seconds()), scope=" ".join(granted))


# --- authentication (the hot path: one indexed read, no unit of work) -----------------------
class KeyUsage:
    """Decides when last_used_at is due a write: at most once per LAST_USED_RESOLUTION per key
    (per process), instead of a write on every request."""

    def __init__(self) -> None:
        self._written: dict[int, float] = {}

    def due(self, key_id: int, last_used_at: datetime | None, now: datetime) -> bool:
        if last_used_at is not None and now - last_used_at < LAST_USED_RESOLUTION:
            return False
        mono = time.monotonic()
        if mono - self._written.get(key_id, -1e9) < LAST_USED_RESOLUTION.total_seconds():
            return False
        if len(self._written) > 10_000:
            self._written.clear()
        self._written[key_id] = mono
        return True


async def authenticate(fetch: Fetch, token: str | None, keys: crypto.Keys,
                       usage: KeyUsage | None = None) -> tuple[Principal, int | None]:
    """The principal a bearer token stands for, and the id of an API key whose last_used_at
    is due a write (else None). Raises Unauthorized (with WWW-Authenticate) otherwise."""
    if not token:
        raise unauthorized("credentials are required: Authorization: Bearer <API key or access token>")
    if crypto.looks_like_api_key(token):
        return await _authenticate_key(fetch, token, keys, usage)
    try:
        claims = keys.verify_jwt(token)
    except jwt.ExpiredSignatureError:
        raise unauthorized("the access token has expired") from None
    except jwt.InvalidTokenError:
        raise unauthorized("the bearer token is neither a valid API key nor a valid access token") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith("user:") or not sub[5:].isdigit():
        raise unauthorized("the access token names no user")
    row = await fetch(_USER_BY_ID, {"user_id": int(sub[5:])})
    if row is None:
        raise unauthorized("the access token's user no longer exists")
    asked = claims.get("scope", "")
    held = row["scopes"]
    scopes = frozenset(s for s in (asked.split() if isinstance(asked, str) else ()) if grants(held, s))
    return Principal(kind="user", id=row["id"], name=row["username"], scopes=scopes), None


async def _authenticate_key(fetch: Fetch, token: str, keys: crypto.Keys,
                            usage: KeyUsage | None) -> tuple[Principal, int | None]:
    if not crypto.well_formed_api_key(token):
        raise unauthorized("the API key is malformed (checksum mismatch): check it was copied whole")
    row = await fetch(_KEY_BY_HASH, {"key_hash": keys.hash_api_key(token)})
    if row is None:
        raise unauthorized("the API key is unknown")
    if row["revoked_at"] is not None:
        raise unauthorized("the API key has been revoked")
    now = _now()
    expires_at = _aware(row["expires_at"])
    if expires_at is not None and expires_at <= now:
        raise unauthorized("the API key has expired")
    touch = None
    if usage is not None and usage.due(row["id"], _aware(row["last_used_at"]), now):
        touch = row["id"]
    return Principal(kind="key", id=row["id"], name=row["name"], scopes=frozenset(row["scopes"])), touch


def _aware(value: datetime | None) -> datetime | None:
    # Core reads of UTCDateTime columns already come back aware; SQLite text is re-tagged here.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
