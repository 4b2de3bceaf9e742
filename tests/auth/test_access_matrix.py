"""Every protected route, over real HTTP, against every kind of bad credential: each is
answered 401 (with WWW-Authenticate) or 403 (naming the scope), and nothing in the database
changes."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import create_engine, text, update

from itemflow.api.app import create_app
from itemflow.auth import crypto
from itemflow.auth.models import ApiKey
from itemflow.auth.scopes import SCOPES
from itemflow.settings import Settings
from tests.credentials import bearer, make_key
from tests.servers import serve_in_thread

PUBLIC = {("GET", "/"), ("GET", "/healthz"), ("GET", "/readyz"), ("POST", "/auth/token")}
TABLES = ("items", "automations", "runs", "api_keys", "users")

# A request that would succeed with the right credential (so a refusal is the guard's doing).
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/items"): {"name": "new"},
    ("PUT", "/items/{item_id}"): {"name": "changed"},
    ("PATCH", "/items/{item_id}"): {"name": "changed"},
    ("POST", "/automations"): {"code": "print('hi')", "item_id": 1},
    ("PUT", "/automations/{automation_id}"): {"code": "pass"},
    ("PATCH", "/automations/{automation_id}"): {"code": "pass"},
    ("POST", "/automations/{automation_id}/run"): {},
    ("POST", "/keys"): {"name": "k", "scopes": ["admin"]},
    ("POST", "/users"): {"username": "mallory", "password": "long enough pw", "scopes": ["admin"]},
}


def _sync_url(url: str) -> str:
    return url.replace("+aiosqlite", "").replace("+psycopg", "+psycopg")


def snapshot(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(_sync_url(database_url))
    try:
        with engine.connect() as conn:
            return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY id"))]
                    for t in TABLES}
    finally:
        engine.dispose()


def protected_routes(app: Any) -> list[tuple[str, str, list[str]]]:
    routes = []
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            if (method.upper(), path) in PUBLIC:
                assert "security" not in op, f"{method} {path} is public but declares security"
                continue
            security = op.get("security")
            assert security, f"{method.upper()} {path} declares no security requirement"
            routes.append((method.upper(), path, security[0]["Bearer"]))
    return routes


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_openapi_lists_exactly_the_public_routes(settings: Settings) -> None:
    app = create_app(settings)
    routes = protected_routes(app)
    assert len(routes) >= 26
    for method, path, scopes in routes:
        responses = app.openapi()["paths"][path][method.lower()]["responses"]
        assert {"401", "403", "429"} <= set(responses), (method, path)
        assert all(s in SCOPES for s in scopes)


@pytest.fixture
def world(settings: Settings, admin_key: str) -> dict[str, Any]:
    """An item, an automation, a run, a user; and every kind of bad credential."""
    keys = crypto.Keys.derive(settings.resolved_secret_key())
    app = create_app(settings)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers=bearer(admin_key)) as c:
        item = c.post("/items", json={"name": "seed"})
        assert item.status_code == 201
        assert c.post("/automations", json={"code": "pass", "item_id": 1}).status_code == 201
        assert c.post("/automations/1/run").status_code in (200, 202)
        assert c.post("/users", json={"username": "ann", "password": "correct horse",
                                      "scopes": ["items:read"]}).status_code == 201
        user_token = c.post("/auth/token", data={"grant_type": "password", "username": "ann",
                                                   "password": "correct horse"}).json()["access_token"]
    revoked = make_key(settings, ["admin"], name="revoked")
    expired = make_key(settings, ["admin"], name="expired")
    engine = create_engine(_sync_url(settings.resolved_database_url))
    with engine.begin() as conn:
        now = datetime.now(UTC)
        conn.execute(update(ApiKey).where(ApiKey.id == revoked.id).values(revoked_at=now))
        conn.execute(update(ApiKey).where(ApiKey.id == expired.id).values(expires_at=now - timedelta(seconds=1)))
    engine.dispose()
    claims = {"iss": crypto.JWT_ISSUER, "aud": crypto.JWT_AUDIENCE, "sub": "user:1", "scope": "admin",
              "iat": datetime.now(UTC), "exp": datetime.now(UTC) + timedelta(minutes=5)}
    unsigned = {**claims, "iat": int(claims["iat"].timestamp()), "exp": int(claims["exp"].timestamp())}
    # One narrow key per scope: it holds every scope but that one (and not admin).
    lacking = {scope: make_key(settings, [s for s in SCOPES if s not in (scope, "admin")], name=f"no {scope}").key
               for scope in SCOPES}
    a_key = crypto.new_api_key()
    bad_credentials = {
        "no credentials": None,
        "not bearer": "Basic YWRtaW46YWRtaW4=",
        "malformed token": "Bearer not-a-token",
        "api key with a typo": "Bearer " + admin_key[:-3] + ("aaa" if admin_key[-3:] != "aaa" else "bbb"),
        "unknown api key": "Bearer " + a_key,
        "jwt signed with another key": "Bearer " + jwt.encode(claims, "another-key-entirely-0123456789abcdef",
                                                              algorithm="HS256"),
        "jwt alg none": "Bearer " + _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(unsigned) + ".",
        "jwt alg none, admin's signature kept": "Bearer " + _b64({"alg": "none", "typ": "JWT"}) + "."
        + _b64(unsigned) + "." + user_token.rsplit(".", 1)[1],
        "expired jwt": "Bearer " + keys.issue_jwt("user:1", ["admin"], timedelta(seconds=-60)),
        "jwt for another audience": "Bearer " + jwt.encode({**claims, "aud": "elsewhere"}, keys.jwt,
                                                           algorithm="HS256"),
        "jwt of a user that does not exist": "Bearer " + keys.issue_jwt("user:999", ["admin"],
                                                                        timedelta(minutes=5)),
        "revoked key": "Bearer " + revoked.key,
        "expired key": "Bearer " + expired.key,
    }
    return {"bad": bad_credentials, "lacking": lacking, "user_token": user_token, "app": app}


def test_every_route_refuses_every_bad_credential(settings: Settings, world: dict[str, Any]) -> None:
    before = snapshot(settings.resolved_database_url)
    app = world["app"]
    routes = protected_routes(app)
    checked = 0
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as c:
        for method, template, scopes in routes:
            path = re.sub(r"\{[a-z_]+\}", "1", template)
            body = BODIES.get((method, template))
            for label, header in world["bad"].items():
                headers = {"Authorization": header} if header else {}
                r = c.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, template, label, r.status_code, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert r.headers["content-type"] == "application/problem+json"
                if header:
                    assert header.split(" ", 1)[1] not in r.text  # the credential is not echoed
                checked += 1
            for scope in scopes:  # a valid credential lacking the scope
                r = c.request(method, path, json=body, headers=bearer(world["lacking"][scope]))
                assert r.status_code == 403, (method, template, scope, r.status_code, r.text)
                assert scope in r.json()["detail"]
                assert f'scope="{scope}"' in r.headers["www-authenticate"]
                checked += 1
            if "items:read" not in scopes and scopes:  # the user's token holds items:read only
                r = c.request(method, path, json=body, headers=bearer(world["user_token"]))
                assert r.status_code == 403, (method, template, "user token", r.text)
                checked += 1
    assert checked > 26 * 14
    after = snapshot(settings.resolved_database_url)
    for table in TABLES:  # not a row, not even a refused key's last_used_at
        assert before[table] == after[table], table


def test_the_right_credential_passes_the_same_requests(settings: Settings, world: dict[str, Any],
                                                      admin_key: str) -> None:
    """The matrix above is not vacuous: with a credential holding exactly the scope, reads pass."""
    app = world["app"]
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as c:
        for method, template, scopes in protected_routes(app):
            if method != "GET":
                continue
            key = make_key(settings, scopes or ["metrics"], name="exact").key
            r = c.get(re.sub(r"\{[a-z_]+\}", "1", template), headers=bearer(key))
            assert r.status_code == 200, (template, r.text)
