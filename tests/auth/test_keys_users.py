"""API keys, users and access tokens: the API, the CLI and the first start."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from itemflow.api.app import create_app
from itemflow.auth import crypto, service
from itemflow.auth.schemas import KeyCreate, Principal
from itemflow.errors import Forbidden
from itemflow.settings import Settings
from tests.auth.conftest import SECRET
from tests.credentials import bearer, run_sync


def _rows(settings: Settings, sql: str) -> list[Any]:
    engine = create_engine(settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def test_key_format_and_checksum() -> None:
    key = crypto.new_api_key()
    assert key.startswith("itf_") and len(key) == crypto.KEY_LENGTH
    assert crypto.well_formed_api_key(key)
    for i in range(4, len(key)):  # every single-character typo is caught by the checksum
        typo = key[:i] + ("a" if key[i] != "a" else "b") + key[i + 1:]
        assert not crypto.well_formed_api_key(typo)
    assert not crypto.well_formed_api_key(key[:-1])


def test_a_typo_is_rejected_without_a_database_lookup() -> None:
    async def no_db(*_: Any) -> None:
        raise AssertionError("the database was asked")

    key = crypto.new_api_key()
    with pytest.raises(Exception, match="malformed"):
        run_sync(service.authenticate(no_db, key[:-1] + "!", crypto.Keys.derive("s")))


def test_create_list_revoke_key(client: TestClient, settings: Settings) -> None:
    r = client.post("/keys", json={"name": "ci", "scopes": ["items:write", "items:read"]})
    assert r.status_code == 201
    created = r.json()
    assert set(created) == {"id", "name", "scopes", "prefix", "key", "created_at", "expires_at", "last_used_at"}
    assert created["scopes"] == ["items:read", "items:write"]
    assert created["key"].startswith(created["prefix"]) and r.headers["cache-control"] == "no-store"
    key = created["key"]
    # Stored only as an HMAC-SHA256 under the server secret.
    stored = _rows(settings, f"SELECT key_hash, prefix FROM api_keys WHERE id = {created['id']}")[0]
    assert stored[0] == crypto.Keys.derive(settings.resolved_secret_key()).hash_api_key(key)
    assert key not in json.dumps([list(r) for r in _rows(settings, "SELECT * FROM api_keys")], default=str)
    # Never shown again.
    listing = client.get("/keys")
    assert listing.status_code == 200 and key not in listing.text
    assert set(listing.json()) == {"data", "next_cursor"}
    assert created["id"] in [k["id"] for k in listing.json()["data"]]
    assert all("key" not in k for k in listing.json()["data"])
    page = client.get("/keys", params={"limit": 1}).json()
    assert len(page["data"]) == 1 and page["next_cursor"]
    # Works; last_used_at recorded once, not on every request.
    with TestClient(client.app, headers=bearer(key)) as other:
        assert other.post("/items", json={"name": "x"}).status_code == 201
        time.sleep(0.2)
        first = next(k for k in client.get("/keys").json()["data"] if k["id"] == created["id"])["last_used_at"]
        assert first is not None
        assert other.get("/items").status_code == 200
        time.sleep(0.2)
        again = next(k for k in client.get("/keys").json()["data"] if k["id"] == created["id"])["last_used_at"]
        assert again == first
        # Revoked: refused on the very next request.
        assert client.delete(f"/keys/{created['id']}").status_code == 204
        refused = other.get("/items")
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert client.delete(f"/keys/{created['id']}").status_code == 404
    assert created["id"] not in [k["id"] for k in client.get("/keys").json()["data"]]


def test_key_expiry(client: TestClient) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert client.post("/keys", json={"name": "old", "scopes": ["items:read"], "expires_at": past}).status_code == 422
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    key = client.post("/keys", json={"name": "soon", "scopes": ["items:read"], "expires_at": soon}).json()["key"]
    assert client.get("/items", headers=bearer(key)).status_code == 200
    time.sleep(1.1)
    r = client.get("/items", headers=bearer(key))
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_a_key_grants_only_scopes_its_creator_holds(settings: Settings) -> None:
    narrow = Principal(kind="key", id=1, name="narrow", scopes=frozenset({"items:read"}))

    async def create(scopes: list[str]) -> Any:
        from itemflow import runtime

        database = runtime.build_database(settings)
        try:
            async with database.session(write=True) as session:
                return await service.create_key(session, KeyCreate(name="k", scopes=scopes), narrow,  # type: ignore[arg-type]
                                                crypto.Keys.derive("s"))
        finally:
            await database.dispose()

    assert run_sync(create(["items:read"])).scopes == ["items:read"]
    with pytest.raises(Forbidden, match="items:write"):
        run_sync(create(["items:read", "items:write"]))
    with pytest.raises(Forbidden, match="admin"):
        run_sync(create(["admin"]))


def test_invalid_key_input(client: TestClient) -> None:
    assert client.post("/keys", json={"name": "x", "scopes": ["root"]}).status_code == 422
    assert client.post("/keys", json={"name": "x", "scopes": []}).status_code == 422
    assert client.post("/keys", json={"name": "x"}).status_code == 422
    # Found by the fuzz as a 500 on PostgreSQL, which cannot store NUL in text.
    r = client.post("/keys", json={"name": "a\u0000b", "scopes": ["items:read"]})
    assert r.status_code == 422 and "NUL" in r.json()["detail"]


def test_users_and_password_tokens(client: TestClient, settings: Settings) -> None:
    r = client.post("/users", json={"username": "ann", "password": "correct horse",
                                    "scopes": ["items:read", "runs:read"]})
    assert r.status_code == 201 and "password" not in r.text and "correct horse" not in r.text
    user = r.json()
    again = {"username": "ann", "password": "another one", "scopes": ["items:read"]}
    assert client.post("/users", json=again).status_code == 409
    assert [u["username"] for u in client.get("/users").json()["data"]] == ["ann"]
    stored = _rows(settings, "SELECT password_hash FROM users")[0][0]
    assert stored.startswith("$argon2id$")

    def token(**form: str) -> httpx.Response:
        return client.post("/auth/token", data=form, headers={"Authorization": ""})

    assert token(grant_type="password", username="ann", password="wrong horse").json() == {
        "error": "invalid_grant", "error_description": "the username or password is wrong"}
    assert token(grant_type="password", username="bob", password="correct horse").json()["error"] == "invalid_grant"
    nul = token(grant_type="password", username="ann\u0000", password="correct horse")
    assert nul.status_code == 400 and nul.json()["error"] == "invalid_grant"
    other_grant = token(grant_type="client_credentials", username="ann", password="x")
    assert other_grant.json()["error"] == "unsupported_grant_type"
    assert token(username="ann", password="correct horse").json()["error"] == "invalid_request"
    r = token(grant_type="password", username="ann", password="correct horse", scope="items:write")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = token(grant_type="password", username="ann", password="correct horse", scope="items:read")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "bearer" and body["scope"] == "items:read"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == f"user:{user['id']}" and claims["exp"] - claims["iat"] == settings.access_token_ttl_seconds
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    me = client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.json() == {"kind": "user", "id": user["id"], "name": "ann", "scopes": ["items:read"]}
    # Only the scopes asked for: runs:read is the user's but not in this token.
    assert client.get("/runs", headers=bearer(body["access_token"])).status_code == 403
    everything = token(grant_type="password", username="ann", password="correct horse").json()
    assert everything["scope"] == "items:read runs:read"
    # Deleting the user ends their tokens at once.
    assert client.delete(f"/users/{user['id']}").status_code == 204
    assert client.get("/items", headers=bearer(body["access_token"])).status_code == 401
    assert client.delete(f"/users/{user['id']}").status_code == 404
    assert client.get("/auth/me").json()["kind"] == "key"


def test_first_start_prints_an_admin_key_once_on_stderr_and_never_logs_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", secret_key=SECRET)  # type: ignore[call-arg]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), TestClient(create_app(settings)) as c:
        printed = err.getvalue()
        keys = [line.strip() for line in printed.splitlines() if line.strip().startswith("itf_")]
        assert len(keys) == 1
        assert c.get("/auth/me", headers=bearer(keys[0])).json()["scopes"] == ["admin"]
    assert keys[0] not in caplog.text and "created admin API key" in caplog.text
    err2 = io.StringIO()
    with contextlib.redirect_stderr(err2), TestClient(create_app(settings)):
        pass
    assert "itf_" not in err2.getvalue()  # never again


def test_cli_keys_and_users(tmp_path: Path, client: TestClient, settings: Settings) -> None:
    env = {"ITEMFLOW_DATA_DIR": str(settings.data_dir), "ITEMFLOW_DATABASE_URL": settings.resolved_database_url,
           "ITEMFLOW_SECRET_KEY": settings.resolved_secret_key(), "PATH": "/usr/bin:/bin"}

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "itemflow", *args], env=env, input=stdin,
                              capture_output=True, text=True, timeout=60)

    r = cli("keys", "create", "--name", "deploy", "--scope", "items:read", "--scope", "metrics",
            "--expires-at", "2099-01-01T00:00:00+00:00")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert crypto.well_formed_api_key(key) and key not in r.stderr
    assert client.get("/auth/me", headers=bearer(key)).json()["scopes"] == ["items:read", "metrics"]
    listed = json.loads(cli("keys", "list", "--json").stdout)
    assert key not in json.dumps(listed)
    key_id = next(k["id"] for k in listed["data"] if k["name"] == "deploy")
    assert cli("keys", "revoke", str(key_id)).returncode == 0
    assert client.get("/items", headers=bearer(key)).status_code == 401
    assert cli("keys", "revoke", str(key_id)).returncode == 3
    r = cli("users", "create", "--username", "carol", "--scope", "items:read", "--password-stdin", "--json",
            stdin="a good password\n")
    assert r.returncode == 0, r.stderr
    assert "a good password" not in r.stdout + r.stderr
    user = json.loads(r.stdout)
    token = client.post("/auth/token", data={"grant_type": "password", "username": "carol",
                                             "password": "a good password"})
    assert token.status_code == 200
    assert [u["username"] for u in json.loads(cli("users", "list", "--json").stdout)["data"]] == ["carol"]
    assert cli("users", "delete", str(user["id"])).returncode == 0
    assert client.get("/items", headers=bearer(token.json()["access_token"])).status_code == 401
    assert cli("keys", "create", "--name", "x", "--scope", "root").returncode == 2


def test_secrets_never_reach_the_logs(start_server: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server({"ITEMFLOW_BOOTSTRAP_ADMIN": "true", "ITEMFLOW_LOG_LEVEL": "debug"}, data_dir=data_dir)
    deadline = time.monotonic() + 10
    while not (found := [w for w in server.output().split() if crypto.well_formed_api_key(w)]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    admin = found[0]
    secrets = [admin]
    with httpx.Client(base_url=server.url, headers=bearer(admin)) as c:
        key = c.post("/keys", json={"name": "k", "scopes": ["items:read"]}).json()["key"]
        secrets.append(key)
        c.post("/users", json={"username": "dan", "password": "s3cret-password-xyz", "scopes": ["items:read"]})
        secrets.append("s3cret-password-xyz")
        tok = c.post("/auth/token", data={"grant_type": "password", "username": "dan",
                                          "password": "s3cret-password-xyz"}).json()["access_token"]
        secrets.append(tok)
        for credential in (key, tok, key[:-2] + "zz", tok + "x", "itf_" + "A" * 46):
            c.get("/items", headers=bearer(credential))
            c.post("/items", json={"name": "x"}, headers=bearer(credential))
        c.post("/auth/token", data={"grant_type": "password", "username": "dan", "password": "s3cret-wrong"})
        secrets.append("s3cret-wrong")
        listings = c.get("/keys").text + c.get("/users").text + c.get("/auth/me").text
    server.proc.terminate()
    server.proc.wait(timeout=15)
    output = server.output()
    log_lines = [line for line in output.splitlines() if line.startswith("{")]
    assert log_lines, "the server logged nothing"
    logs = "\n".join(log_lines)
    for secret in secrets:
        assert secret not in logs
        assert secret not in listings
    assert SECRET not in output
    assert output.count(admin) == 1  # the console banner, once
