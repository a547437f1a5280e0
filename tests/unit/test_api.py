"""The HTTP API (FastAPI TestClient) against a real SQLite store with the demo office."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.web.app import WebContext, create_app

REALM = "office.example"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Store]]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, REALM)
    ctx = WebContext(store, lambda: {"domain": REALM, "registrations": 0}, lambda: [])
    with TestClient(create_app(ctx)) as client:
        yield client, passwords, store
    store.close()


def _auth(passwords: dict[str, str], name: str) -> tuple[str, str]:
    return (name, passwords[name])


def test_login_required_and_healthz(office: Any) -> None:
    http, pw, _ = office
    assert http.get("/healthz").json() == {"status": "ok"}
    r = http.get("/api/clients")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    assert http.get("/api/clients", auth=("anna", "wrong-password-1")).status_code == 401
    assert http.get("/api/clients", auth=("nobody", "wrong-password-1")).status_code == 401
    assert http.get("/api/clients", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert http.get("/api/status", auth=_auth(pw, "mueller")).status_code == 403
    assert http.get("/api/status", auth=_auth(pw, "anna")).json()["domain"] == REALM


def test_openapi_and_docs_reachable(office: Any) -> None:
    http, _, _ = office
    spec = http.get("/api/openapi.json").json()
    assert "/api/clients/{client_id}/rules" in spec["paths"]
    assert "/api/route/simulate" in spec["paths"]
    # the docs page is the console's, behind its login, and loads nothing from elsewhere
    assert http.get("/api/docs", follow_redirects=False).status_code == 303
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["components"]["securitySchemes"]["basic"]["scheme"] == "basic"
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_client_user_sees_only_its_own_business(office: Any) -> None:
    http, pw, _ = office
    mueller = _auth(pw, "mueller")
    assert http.get("/api/clients/mueller/rules", auth=mueller).status_code == 200
    # another business looks exactly like a missing one: no probing for client ids
    other = http.get("/api/clients/schulz/rules", auth=mueller)
    assert other.status_code == 404 and other.json() == {"detail": "no such client: 'schulz'"}
    missing = http.get("/api/clients/nobody/rules", auth=mueller)
    assert missing.status_code == 404 and missing.json() == {"detail": "no such client: 'nobody'"}
    assert [c["id"] for c in http.get("/api/clients", auth=mueller).json()] == ["mueller"]
    assert http.put("/api/clients/schulz/override", json={"target": "office"},
                    auth=mueller).status_code == 404  # fmt: skip
    assert http.get("/api/calls?client=schulz", auth=mueller).status_code == 404
    assert http.post("/api/clients", json={"id": "x", "name": "X"}, auth=mueller).status_code == 403
    # agents read everything and may set overrides, but not change rules
    anna = _auth(pw, "anna")
    assert len(http.get("/api/clients", auth=anna).json()) == 2
    doc = http.get("/api/clients/schulz/rules", auth=anna).json()
    assert http.put("/api/clients/schulz/rules", json=doc, auth=anna).status_code == 403
    r = http.put("/api/clients/schulz/override", json={"target": "office"}, auth=anna)
    assert r.status_code == 200 and r.json()["active"] is True
    assert http.delete("/api/clients/schulz/override", auth=anna).status_code == 204


def test_rules_round_trip_and_422_with_loc_and_msg(office: Any) -> None:
    http, pw, store = office
    mueller = _auth(pw, "mueller")
    doc = http.get("/api/clients/mueller/rules", auth=mueller).json()
    assert doc["client"] == "mueller"
    r = http.put("/api/clients/mueller/rules", json=doc, auth=mueller)
    assert r.status_code == 200 and r.json() == doc
    bad = {
        "client": "mueller",
        "numbers": {
            "+49891234567": {
                "rules": [{"name": "Kaputt", "steps": [{"targets": ["group:nope"], "timeout": 0}]}]
            }
        },
    }
    r = http.put("/api/clients/mueller/rules", json=bad, auth=mueller)
    assert r.status_code == 422
    problems = r.json()["detail"]
    assert problems and all({"loc", "msg"} <= set(p) for p in problems)
    assert any("rules[0]" in p["loc"] and "group" in p["msg"] for p in problems)
    assert store.get_rules_document("mueller")["numbers"]["+49891234567"]["rules"][0]["name"] == (
        "Override"
    )  # nothing changed


def test_validation_errors_name_the_field(office: Any) -> None:
    http, pw, _ = office
    admin = _auth(pw, "admin")
    r = http.post("/api/clients", json={"id": "bäcker", "name": "B", "bundesland": "XX"},
                  auth=admin)  # fmt: skip
    assert r.status_code == 422
    fields = {p["field"]: p["msg"] for p in r.json()["detail"]}
    assert "body.id" in fields and "body.bundesland" in fields
    r = http.post("/api/users", json={"name": "carla", "password": "short"}, auth=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.password"
    r = http.post("/api/clients", json={"id": "baecker", "name": "Bäckerei", "bundesland": "HH"},
                  auth=admin)  # fmt: skip
    assert r.status_code == 201 and r.json()["bundesland"] == "HH"
    assert http.post("/api/clients", json={"id": "baecker", "name": "B"},
                     auth=admin).status_code == 409  # fmt: skip


def test_simulate_endpoint(office: Any) -> None:
    http, pw, _ = office
    anna = _auth(pw, "anna")
    at = "2026-03-03T09:00:00+01:00"
    r = http.get("/api/route/simulate", params={"number": "+49891234567", "at": at}, auth=anna)
    assert r.status_code == 200
    plan = r.json()
    assert plan["client"] == "mueller" and plan["rule"] == "Werktag"
    assert plan["steps"] == [
        {"targets": ["user:mueller"], "timeout": 15},
        {"targets": ["group:team"], "timeout": 30},
    ]
    r = http.get("/api/route/simulate", params={"number": "089 12x"}, auth=anna)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "query.number"
    # the override set over the API wins the next simulated call
    assert http.put("/api/clients/mueller/override", json={"target": "mobile"},
                    auth=_auth(pw, "mueller")).status_code == 200  # fmt: skip
    plan = http.get("/api/route/simulate", params={"number": "+49891234567"}, auth=anna).json()
    assert plan["rule"] == "Override Handy"
    mueller = _auth(pw, "mueller")
    assert http.get("/api/route/simulate", params={"number": "+49301234567"},
                    auth=mueller).status_code == 403  # fmt: skip


def test_bearer_token(office: Any) -> None:
    http, pw, store = office
    _meta, token = store.create_token("mueller", "ci")
    r = http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["client"] == "mueller"
    assert store.list_tokens("mueller")[0].last_used is not None
    assert store.revoke_token("mueller", "ci")
    assert http.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_trunk_password_never_returned_and_calls_filtered(office: Any) -> None:
    http, pw, store = office
    admin = _auth(pw, "admin")
    r = http.patch("/api/trunks/carrier", json={"username": "u1", "password": "geheim-123"},
                   auth=admin)  # fmt: skip
    assert r.status_code == 200 and r.json()["has_password"] is True
    assert "geheim-123" not in http.get("/api/trunks", auth=admin).text
    from datetime import UTC, datetime

    store.add_call_record("c1", "+49891234567", "+4915112345", datetime.now(UTC), client="mueller")
    store.add_call_record("c2", "+49301234567", "+4915112345", datetime.now(UTC), client="schulz")
    mine = http.get("/api/calls", auth=_auth(pw, "mueller")).json()
    assert [c["call_id"] for c in mine] == ["c1"]
    assert len(http.get("/api/calls", auth=admin).json()) == 2
    # the admin's page and the API share the handler's date range and paging
    newer = http.get("/api/calls", params={"since": "2020-01-01T00:00:00", "offset": 1},
                     auth=admin).json()  # fmt: skip
    assert len(newer) == 1
    assert http.get("/api/calls", params={"until": "2020-01-01"}, auth=admin).json() == []
    assert http.get("/api/calls", params={"offset": -1}, auth=admin).status_code == 422
    # oversize paging and moments UTC has no room for: 422, not a database error
    assert http.get("/api/calls", params={"offset": 10**20}, auth=admin).status_code == 422
    for edge in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"):
        for field in ("since", "until"):
            r = http.get("/api/calls", params={field: edge}, auth=admin)
            assert r.status_code == 422 and field in r.text, (field, edge)
