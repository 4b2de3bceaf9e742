"""Secrets: API key format and HMAC, JWT access tokens, password hashes. No database here."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import jwt
from pwdlib import PasswordHash

KEY_PREFIX = "itf_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SECRET_CHARS = 40  # base62: ~238 bits of randomness
_CHECKSUM_CHARS = 6  # CRC32 in base62
KEY_LENGTH = len(KEY_PREFIX) + _SECRET_CHARS + _CHECKSUM_CHARS
SHOWN_PREFIX_CHARS = len(KEY_PREFIX) + 8

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "itemflow"
JWT_AUDIENCE = "itemflow-api"


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_CHARS)


def new_api_key() -> str:
    """`itf_` + 40 random base62 characters + a 6-character CRC32 of the first part."""
    body = KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_CHARS))
    return body + _checksum(body)


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


_WELL_FORMED = re.compile(rf"{KEY_PREFIX}[0-9A-Za-z]{{{_SECRET_CHARS + _CHECKSUM_CHARS}}}")


def well_formed_api_key(key: str) -> bool:
    """Length, alphabet and checksum: rejects typos and garbage without a database lookup."""
    if not _WELL_FORMED.fullmatch(key):
        return False
    body, check = key[:-_CHECKSUM_CHARS], key[-_CHECKSUM_CHARS:]
    return hmac.compare_digest(_checksum(body), check)


def shown_prefix(key: str) -> str:
    return key[:SHOWN_PREFIX_CHARS]


@dataclass(frozen=True)
class Keys:
    """Purpose-specific keys derived from the server secret (one secret, no key reuse)."""

    api_key_hmac: bytes
    jwt: bytes

    @classmethod
    def derive(cls, server_secret: str) -> Keys:
        root = server_secret.encode()
        return cls(
            api_key_hmac=hmac.new(root, b"itemflow/api-key-hmac/v1", hashlib.sha256).digest(),
            jwt=hmac.new(root, b"itemflow/jwt-hs256/v1", hashlib.sha256).digest(),
        )

    def hash_api_key(self, key: str) -> str:
        return hmac.new(self.api_key_hmac, key.encode(), hashlib.sha256).hexdigest()

    def issue_jwt(self, subject: str, scopes: list[str], ttl: timedelta) -> str:
        now = datetime.now(UTC)
        claims = {"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": subject, "iat": now,
                  "nbf": now, "exp": now + ttl, "scope": " ".join(scopes),
                  "jti": secrets.token_urlsafe(12)}
        return jwt.encode(claims, self.jwt, algorithm=JWT_ALGORITHM)

    def verify_jwt(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; raises jwt.InvalidTokenError otherwise."""
        return jwt.decode(
            token, self.jwt, algorithms=[JWT_ALGORITHM], audience=JWT_AUDIENCE, issuer=JWT_ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]}, leeway=5,
        )


_password_hash = PasswordHash.recommended()  # Argon2id


@cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so timing does not reveal usernames."""
    return _password_hash.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _password_hash.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        _password_hash.verify(password, _dummy_hash())
        return False
    return _password_hash.verify(password, password_hash)
