"""Requests built to hurt: forged cursors past every id, bodies that ask for huge errors."""

from __future__ import annotations

import base64
import json

LISTS = ["/items", "/automations", "/runs", "/keys", "/users", "/items/{item}/automations",
         "/items/{item}/runs", "/automations/{automation}/runs"]


def cursor(after: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def test_cursor_past_the_largest_id_is_422_on_every_list(client):
    item = client.post("/items", json={"name": "i"}).json()
    automation = client.post("/automations", json={"code": "pass"}).json()
    for path in LISTS:
        path = path.format(item=item["id"], automation=automation["id"])
        for after in (2**63, 2**64, 10**30):
            r = client.get(path, params={"cursor": cursor(after)})
            assert r.status_code == 422, (path, after, r.text)
            assert r.json()["errors"][0]["loc"] == ["query", "cursor"]
        # The largest id is still a cursor this API could return: an empty page after it.
        r = client.get(path, params={"cursor": cursor(2**63 - 1)})
        assert r.status_code == 200 and r.json()["data"] == [], (path, r.text)


def test_sixty_thousand_unknown_fields_get_a_bounded_error(client):
    body = json.dumps({"name": "x", **{f"field{i}": 1 for i in range(60_000)}})
    r = client.post("/items", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    problem = r.json()
    assert len(problem["errors"]) == 50 and problem["errors_omitted"] == 59_950
    assert problem["errors"][0] == {"loc": ["body", "field0"], "msg": "Extra inputs are not permitted",
                                    "type": "extra_forbidden"}
    assert problem["detail"].endswith("; and 59950 more errors")
    assert len(r.content) < 10_000  # was 8 MB for a 769 KB request
    assert client.get("/items").json()["data"] == []


def test_an_error_is_never_much_larger_than_its_request(client):
    body = json.dumps({"name": "x", "k" * 1_000_000: 1})  # one unknown field, 1 MB of name
    r = client.post("/items", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "k" * 1_000_000]  # named in full, once
    assert len(r.content) < len(body) + 1_000
    assert "errors_omitted" not in r.json()
