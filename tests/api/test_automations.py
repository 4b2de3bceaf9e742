from __future__ import annotations

PROBLEM = "application/problem+json"


def test_create_with_defaults(client):
    r = client.post("/automations", json={"code": "print('hi')"})
    assert r.status_code == 201
    a = r.json()
    assert r.headers["location"] == f"/automations/{a['id']}"
    assert a["events"] == ["item.updated"]
    assert (a["enabled"], a["timeout_seconds"], a["memory_mb"], a["item_id"]) == (True, 5, 128, None)


def test_syntax_error_gives_line_and_column(client):
    r = client.post("/automations", json={"code": "x = 1\nif x\n    pass\n"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "line 2" in detail and "column" in detail
    assert r.json()["errors"][0]["loc"] == ["body", "code"]


def test_unknown_item_is_422_naming_item_id(client):
    r = client.post("/automations", json={"code": "pass", "item_id": 12345})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "item_id"]
    assert client.get("/automations").json()["data"] == []


def test_field_bounds(client):
    bad = [
        {"code": "pass", "events": []},
        {"code": "pass", "events": ["item.exploded"]},
        {"code": "pass", "timeout_seconds": 0},
        {"code": "pass", "timeout_seconds": 61},
        {"code": "pass", "memory_mb": 31},
        {"code": "pass", "memory_mb": 1025},
        {"code": ""},
        {"code": "x = 1\n" * 20000},
        {"code": "pass", "surprise": True},
        {"code": "\x00"},
    ]
    for body in bad:
        r = client.post("/automations", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == PROBLEM
    assert client.get("/automations").json()["data"] == []


def test_duplicate_events_are_collapsed(client):
    r = client.post("/automations", json={"code": "pass", "events": ["item.created", "item.created"]})
    assert r.json()["events"] == ["item.created"]


def test_partial_update_and_clearing_optional_fields(client):
    item = client.post("/items", json={"name": "i"}).json()
    a = client.post("/automations", json={"code": "pass", "name": "n", "item_id": item["id"]}).json()
    r = client.patch(f"/automations/{a['id']}", json={"enabled": False})
    assert r.json()["enabled"] is False and r.json()["code"] == "pass" and r.json()["name"] == "n"
    r = client.put(f"/automations/{a['id']}", json={"name": None, "item_id": None})
    assert r.json()["name"] is None and r.json()["item_id"] is None
    for field in ("code", "events", "enabled", "timeout_seconds", "memory_mb"):
        r = client.patch(f"/automations/{a['id']}", json={field: None})
        assert r.status_code == 422, field
    r = client.patch(f"/automations/{a['id']}", json={"item_id": 999999})
    assert r.status_code == 422
    assert client.get(f"/automations/{a['id']}").json()["item_id"] is None


def test_filters_and_delete(client):
    item = client.post("/items", json={"name": "i"}).json()
    a1 = client.post("/automations", json={"code": "pass", "item_id": item["id"]}).json()
    a2 = client.post("/automations", json={"code": "pass", "enabled": False}).json()
    ids = lambda **p: [a["id"] for a in client.get("/automations", params=p).json()["data"]]  # noqa: E731
    assert ids() == [a1["id"], a2["id"]]
    assert ids(item_id=item["id"]) == [a1["id"]]
    assert ids(enabled="false") == [a2["id"]]
    assert client.delete(f"/automations/{a2['id']}").status_code == 204
    assert client.get(f"/automations/{a2['id']}").status_code == 404
    assert client.delete(f"/automations/{a2['id']}").status_code == 404
