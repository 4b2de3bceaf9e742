"""GET /items/{id} is answered by items/fast_read.py, outside FastAPI's routing: it must give
the same answer, byte for byte, as the FastAPI route it stands in for, whatever the credential,
the item or the rate limit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi import Request, Response
from fastapi.security import SecurityScopes
from fastapi.testclient import TestClient

from itemflow.api.app import create_app
from itemflow.auth.deps import Guard
from itemflow.auth.schemas import Principal
from itemflow.items.fast_read import FastItemRead
from itemflow.observability import metrics
from itemflow.settings import Settings
from tests.credentials import bearer, make_key

# Differ by nature from one response to the next.
_VOLATILE = {"x-request-id", "x-ratelimit-reset"}


@contextmanager
def two_apps(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """The app as built, and the same app with its fast read taken out (FastAPI answers all)."""
    fast_app, routed_app = create_app(settings), create_app(settings)
    routed_app.user_middleware = [m for m in routed_app.user_middleware if m.cls is not FastItemRead]
    with TestClient(fast_app) as fast, TestClient(routed_app) as routed:
        yield fast, routed


@pytest.fixture
def guard_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the FastAPI guard's calls: a request the fast read answered makes none."""
    calls: list[str] = []
    original = Guard.__call__

    # Annotated: FastAPI reads this signature to solve the dependency.
    async def counting(self: Guard, request: Request, security_scopes: SecurityScopes,
                       response: Response) -> Principal:
        calls.append(request.url.path)
        return await original(self, request, security_scopes, response)

    monkeypatch.setattr(Guard, "__call__", counting)
    return calls


def assert_same(fast, routed) -> None:  # type: ignore[no-untyped-def]
    assert (fast.status_code, fast.content) == (routed.status_code, routed.content)
    fast_headers = {k: v for k, v in fast.headers.items() if k not in _VOLATILE}
    routed_headers = {k: v for k, v in routed.headers.items() if k not in _VOLATILE}
    assert fast_headers == routed_headers
    assert ("x-ratelimit-reset" in fast.headers) == ("x-ratelimit-reset" in routed.headers)
    if "x-ratelimit-reset" in fast.headers:  # seconds to the window's end: a second apart at most
        assert abs(int(fast.headers["x-ratelimit-reset"]) - int(routed.headers["x-ratelimit-reset"])) <= 1


def _token(client: TestClient, admin: str) -> str:
    r = client.post("/users", json={"username": "reader", "password": "correct horse battery",
                                    "scopes": ["items:read"]}, headers=bearer(admin))
    assert r.status_code == 201, r.text
    r = client.post("/auth/token", data={"grant_type": "password", "username": "reader",
                                         "password": "correct horse battery", "scope": "items:read"})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_same_answers_as_the_fastapi_route(settings, admin_key, guard_calls):
    reader = make_key(settings, ["items:read"], name="reader").key
    writer_only = make_key(settings, ["items:write"], name="writer").key
    revoked = make_key(settings, ["items:read"], name="revoked")
    unknown = reader[:-10] + ("A" if reader[-10] != "A" else "B") + reader[-9:]  # checksum breaks
    with two_apps(settings) as (fast, routed):
        item = fast.post("/items", json={"name": "lamp", "description": "desk"},
                         headers=bearer(admin_key)).json()
        r = fast.delete(f"/keys/{revoked.id}", headers=bearer(admin_key))
        assert r.status_code == 204, r.text
        token = _token(fast, admin_key)
        cases = {
            "admin key": bearer(admin_key),
            "reader key": bearer(reader),
            "access token": bearer(token),
            "lower-case scheme": {"Authorization": f"bearer {reader}"},
            "no credential": {},
            "another scheme": {"Authorization": f"Basic {reader}"},
            "empty bearer": {"Authorization": "Bearer "},
            "malformed key": bearer("itf_tooshort"),
            "unknown key": bearer(unknown),
            "revoked key": bearer(revoked.key),
            "missing scope": bearer(writer_only),
            "garbage token": bearer("not.a.jwt"),
        }
        paths = [f"/items/{item['id']}", "/items/999999999"]
        guard_calls.clear()
        for name, headers in cases.items():
            for path in paths:
                r_fast, r_routed = fast.get(path, headers=headers), routed.get(path, headers=headers)
                try:
                    assert_same(r_fast, r_routed)
                except AssertionError as exc:
                    raise AssertionError(f"{name}, {path}: {exc}") from None
        # Every request above went through the guard on the routed app only.
        assert len(guard_calls) == len(cases) * len(paths)
        assert fast.get(paths[0], headers=bearer(reader)).json() == item


def test_rate_limit_answers_match(settings, admin_key, guard_calls):
    limited = settings.model_copy(update={"rate_limit_reads": "3/minute"})
    with two_apps(limited) as (fast, routed):
        item = fast.post("/items", json={"name": "lamp"}, headers=bearer(admin_key)).json()
        statuses = []
        for _ in range(5):
            r_fast = fast.get(f"/items/{item['id']}", headers=bearer(admin_key))
            r_routed = routed.get(f"/items/{item['id']}", headers=bearer(admin_key))
            assert_same(r_fast, r_routed)
            statuses.append(r_fast.status_code)
        assert statuses == [200, 200, 200, 429, 429]
        assert "retry-after" in r_fast.headers


def test_other_spellings_and_methods_go_to_fastapi(client, guard_calls):
    item = client.post("/items", json={"name": "lamp"}).json()
    guard_calls.clear()
    # A leading zero, a trailing slash, HEAD: FastAPI's to answer (here: the item, a
    # redirect, a 405), exactly as before the fast read existed.
    r = client.get(f"/items/0{item['id']}")
    assert r.status_code == 200 and r.json() == item
    assert client.get(f"/items/{item['id']}/", follow_redirects=False).status_code == 307
    assert client.head(f"/items/{item['id']}").status_code == 405
    assert len(guard_calls) == 1  # the leading-zero read; the others fail before the guard
    assert client.get(f"/items/{item['id']}").status_code == 200
    assert len(guard_calls) == 1  # answered by the fast read


def test_fast_reads_are_counted_and_carry_a_request_id(client):
    def served(status: int) -> float:
        labels = {"method": "GET", "route": "/items/{item_id}", "status": str(status)}
        return metrics.REGISTRY.get_sample_value("itemflow_http_requests_total", labels) or 0.0

    item = client.post("/items", json={"name": "lamp"}).json()
    before = served(200), served(404)
    r = client.get(f"/items/{item['id']}", headers={"X-Request-ID": "fast-read-1"})
    assert r.headers["x-request-id"] == "fast-read-1"
    assert client.get("/items/999999999").status_code == 404
    assert (served(200), served(404)) == (before[0] + 1, before[1] + 1)
