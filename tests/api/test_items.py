from __future__ import annotations

from datetime import datetime

PROBLEM = "application/problem+json"


def make_item(client, name="lamp", description=None):
    body = {"name": name} if description is None else {"name": name, "description": description}
    r = client.post("/items", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_returns_201_location_and_item(client):
    r = client.post("/items", json={"name": "lamp", "description": "a desk lamp"})
    assert r.status_code == 201
    item = r.json()
    assert r.headers["location"] == f"/items/{item['id']}"
    assert item["name"] == "lamp" and item["description"] == "a desk lamp"
    created = datetime.fromisoformat(item["created_at"])
    assert created.tzinfo is not None
    assert client.get(r.headers["location"]).json() == item


def test_get_unknown_item_is_404_problem(client):
    r = client.get("/items/999999")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == 404 and "999999" in body["detail"]


def test_ids_out_of_range_are_422(client):
    for bad in ("0", "-1", str(2**63), "abc"):
        r = client.get(f"/items/{bad}")
        assert r.status_code == 422, bad
        assert r.json()["errors"][0]["loc"] == ["path", "item_id"]


def test_put_and_patch_are_partial_updates(client):
    item = make_item(client, "lamp", "old")
    for method in ("put", "patch"):
        r = client.request(method, f"/items/{item['id']}", json={"description": method})
        assert r.status_code == 200
        assert r.json()["name"] == "lamp" and r.json()["description"] == method
    r = client.patch(f"/items/{item['id']}", json={"description": None})
    assert r.json()["description"] is None
    assert r.json()["updated_at"] >= item["updated_at"]


def test_null_for_required_field_is_422_and_nothing_changes(client):
    item = make_item(client, "lamp")
    r = client.patch(f"/items/{item['id']}", json={"name": None})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "name"]
    assert client.get(f"/items/{item['id']}").json()["name"] == "lamp"


def test_validation_errors_name_the_field(client):
    cases = [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "ok", "description": "d" * 10_001}, "description"),
        ({"name": "ok", "colour": "red"}, "colour"),
        ({}, "name"),
    ]
    for body, field in cases:
        r = client.post("/items", json=body)
        assert r.status_code == 422, body
        assert r.headers["content-type"] == PROBLEM
        assert field in r.json()["detail"]
    assert client.get("/items").json()["data"] == []


def test_malformed_json_is_a_clear_client_error(client):
    r = client.post("/items", content=b'{"name": ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in r.json()["detail"]


def test_body_over_one_mebibyte_is_413(client):
    big = {"name": "x", "description": "y" * (1024 * 1024)}
    r = client.post("/items", json=big)
    assert r.status_code == 413
    assert r.headers["content-type"] == PROBLEM


def test_streamed_body_over_limit_is_413(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = client.post("/items", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_delete_removes_item_and_its_automations(client):
    item = make_item(client)
    other = make_item(client, "other")
    own = client.post("/automations", json={"item_id": item["id"], "code": "pass"}).json()
    glob = client.post("/automations", json={"code": "pass"}).json()
    kept = client.post("/automations", json={"item_id": other["id"], "code": "pass"}).json()
    assert client.delete(f"/items/{item['id']}").status_code == 204
    assert client.get(f"/items/{item['id']}").status_code == 404
    assert client.get(f"/automations/{own['id']}").status_code == 404
    assert client.get(f"/automations/{glob['id']}").status_code == 200
    assert client.get(f"/automations/{kept['id']}").status_code == 200
    assert client.delete(f"/items/{item['id']}").status_code == 404


def test_list_paginates_in_stable_order(client):
    ids = [make_item(client, f"item {i}")["id"] for i in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/items", params=params).json()
        seen += [i["id"] for i in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


def test_list_limit_bounds_and_bad_cursor(client):
    assert client.get("/items", params={"limit": 0}).status_code == 422
    assert client.get("/items", params={"limit": 101}).status_code == 422
    r = client.get("/items", params={"cursor": "not-a-cursor"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["query", "cursor"]


def test_search_matches_name_and_description_literally(client):
    make_item(client, "red lamp")
    make_item(client, "chair", "a RED chair")
    make_item(client, "100% cotton")
    make_item(client, "table")
    names = lambda q: sorted(i["name"] for i in client.get("/items", params={"q": q}).json()["data"])  # noqa: E731
    assert names("red") == ["chair", "red lamp"]
    assert names("%") == ["100% cotton"]
    assert names("_") == []


def test_item_automations_lists_only_attached(client):
    item = make_item(client)
    own = client.post("/automations", json={"item_id": item["id"], "code": "pass"}).json()
    client.post("/automations", json={"code": "pass"})
    page = client.get(f"/items/{item['id']}/automations").json()
    assert [a["id"] for a in page["data"]] == [own["id"]]
    assert client.get("/items/424242/automations").status_code == 404


def test_text_no_database_can_store_is_refused_alike(client):
    json_header = {"content-type": "application/json"}
    for raw in (rb'{"name": "a\u0000b"}', rb'{"name": "ok", "description": "\ud800"}'):
        r = client.post("/items", content=raw, headers=json_header)
        assert r.status_code == 422, r.text
    assert client.get("/items", params={"q": "x\x00"}).status_code == 422
    r = client.post("/automations", content=rb'{"code": "x = \"\udbcb\""}', headers=json_header)
    assert r.status_code == 422, r.text
    assert client.get("/items").json()["data"] == []
