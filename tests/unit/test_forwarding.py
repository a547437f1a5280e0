"""The portal's forwarding handlers through the HTTP API: the simulator with an unsaved draft
at a date and time, the Bundesland's holidays; another business's id is "not found"."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.app import Actor, App
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.web.app import WebContext, create_app


@pytest.fixture
def office(tmp_path: Path) -> Any:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, "office.example")
    ctx = WebContext(store, lambda: {"domain": "office.example", "registrations": 0}, lambda: [])
    with TestClient(create_app(ctx)) as client:
        yield client, passwords, store
    store.close()


def _draft(targets: list[str], timeout: int = 25) -> dict[str, Any]:
    rule = {"name": "Entwurf", "steps": [{"targets": targets, "timeout": timeout}]}
    return {"client": "mueller", "numbers": {"089 1234567": {"rules": [rule]}}}


def test_simulate_stored_plan_at_a_local_time(office: Any) -> None:
    http, pw, _ = office
    mueller = ("mueller", pw["mueller"])
    r = http.post("/api/clients/mueller/simulate", json={"at": "2026-03-03 09:00"}, auth=mueller)
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["number"] == "+49891234567" and plan["rule"] == "Werktag"
    assert plan["steps"][0] == {"targets": ["user:mueller"], "timeout": 15}
    assert "Tue 2026-03-03 09:00" in plan["reason"]
    christmas = {"at": "2026-12-25T09:00", "number": "089/1234567"}
    r = http.post("/api/clients/mueller/simulate", json=christmas, auth=mueller)
    assert r.status_code == 200 and r.json()["rule"] != "Werktag"  # Christmas Day


def test_simulate_unsaved_draft_changes_nothing(office: Any) -> None:
    http, pw, store = office
    mueller = ("mueller", pw["mueller"])
    before = store.get_rules_document("mueller")
    body = {"at": "2026-03-03T09:00", "draft": _draft(["group:team"], 40)}
    r = http.post("/api/clients/mueller/simulate", json=body, auth=mueller)
    assert r.status_code == 200, r.text
    assert r.json()["rule"] == "Entwurf"
    assert r.json()["steps"] == [{"targets": ["group:team"], "timeout": 40}]
    assert store.get_rules_document("mueller") == before


def test_invalid_draft_is_422_with_the_field_path(office: Any) -> None:
    http, pw, _ = office
    mueller = ("mueller", pw["mueller"])
    body = {"draft": _draft(["user:nobody", "external:0170 1x"])}
    r = http.post("/api/clients/mueller/simulate", json=body, auth=mueller)
    assert r.status_code == 422
    fields = {p["field"]: p["msg"] for p in r.json()["detail"]}
    assert any(f.endswith("steps[0].targets[0]") and "nobody" in m for f, m in fields.items())
    assert any(f.endswith("steps[0].targets[1]") and "phone number" in m for f, m in fields.items())
    for bad in ({"at": "gestern"}, {"number": "089 12x"}, {"number": "030 1234567"}):
        r = http.post("/api/clients/mueller/simulate", json=bad, auth=mueller)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["detail"][0]["field"] in ("body.at", "body.number"), r.json()


def test_holidays_of_the_bundesland(office: Any) -> None:
    http, pw, store = office
    r = http.get("/api/clients/mueller/holidays", params={"months": 24},
                 auth=("mueller", pw["mueller"]))  # fmt: skip
    assert r.status_code == 200, r.text
    days = r.json()
    assert days and all(d["date"] >= date.today().isoformat() for d in days)
    assert any(d["name"] for d in days)
    assert http.get("/api/clients/mueller/holidays", params={"months": 99},
                    auth=("mueller", pw["mueller"])).status_code == 422  # fmt: skip
    app = App.build(store, lambda: "office.example")
    bayern = app.forwarding.holidays(Actor.local_admin(), "mueller", 12, date(2026, 1, 1))
    assert (date(2026, 1, 6), "Heilige Drei Könige") in [(h.day, h.name) for h in bayern]
    assert len(bayern) >= 12 and all(h.day.year == 2026 for h in bayern)


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [("POST", "/api/clients/mueller/simulate", {}),
     ("POST", "/api/clients/mueller/simulate", {"draft": _draft(["group:team"])}),
     ("GET", "/api/clients/mueller/holidays", None)],
)  # fmt: skip
def test_another_business_gets_not_found(office: Any, method: str, url: str, body: Any) -> None:
    http, pw, _ = office
    r = http.request(method, url, json=body, auth=("schulz", pw["schulz"]))
    assert r.status_code == 404, r.text
    nosuch = http.request(method, url.replace("mueller", "nosuch"), json=body,
                          auth=("schulz", pw["schulz"]))  # fmt: skip
    assert nosuch.status_code == 404
    assert r.json()["detail"] == nosuch.json()["detail"].replace("nosuch", "mueller")


def test_closures_route_to_the_office_and_are_listed(office: Any) -> None:
    http, pw, store = office
    mueller = ("mueller", pw["mueller"])
    body = {"first": "2026-08-03", "last": "2026-08-14", "note": "Betriebsurlaub"}
    r = http.post("/api/clients/mueller/closures", json=body, auth=mueller)
    assert r.status_code == 201, r.text
    closure = r.json()
    assert closure["first"] == "2026-08-03" and closure["note"] == "Betriebsurlaub"
    assert http.get("/api/clients/mueller/closures", auth=mueller).json() == [closure]
    at = {"at": "2026-08-04 10:00"}  # a Tuesday in the closure: Werktag would ring mueller
    plan = http.post("/api/clients/mueller/simulate", json=at, auth=mueller).json()
    assert plan["rule"] is None and "closure day" in plan["reason"]
    assert plan["steps"] == [{"targets": ["group:team"], "timeout": 30}]  # the office
    after = http.post("/api/clients/mueller/simulate", json={"at": "2026-08-17 10:00"},
                      auth=mueller).json()  # fmt: skip
    assert after["rule"] == "Werktag"
    # a draft with a rule for closure days is the configurable plan
    rule = {"name": "Urlaub", "when": {"closures": "only"},
            "steps": [{"targets": ["user:mueller"], "timeout": 10}]}  # fmt: skip
    draft = {"client": "mueller", "numbers": {"089 1234567": {"rules": [rule]}}}
    r = http.post("/api/clients/mueller/simulate", json=at | {"draft": draft}, auth=mueller)
    assert r.json()["rule"] == "Urlaub"
    url = f"/api/clients/mueller/closures/{closure['id']}"
    assert http.delete(url, auth=mueller).status_code == 204
    assert http.delete(url, auth=mueller).status_code == 404
    assert http.get("/api/clients/mueller/closures", auth=mueller).json() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [({"first": "2026-08-14", "last": "2026-08-03"}, "body.last"),
     ({"first": "2026-01-01", "last": "2027-06-01"}, "body.last"),
     ({"first": "gestern"}, "body.first"),
     ({"first": "2026-08-03", "note": "a\nb"}, "body.note")],
)  # fmt: skip
def test_bad_closures_are_422(office: Any, body: dict[str, str], field: str) -> None:
    http, pw, _ = office
    r = http.post("/api/clients/mueller/closures", json=body, auth=("mueller", pw["mueller"]))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field, r.json()


def test_closures_authorization(office: Any) -> None:
    http, pw, store = office
    admin = ("admin", pw["admin"])
    cid = http.post("/api/clients/mueller/closures", json={"first": "2026-08-03"},
                    auth=admin).json()["id"]  # fmt: skip
    schulz = ("schulz", pw["schulz"])
    for method, url, body in [
        ("GET", "/api/clients/mueller/closures", None),
        ("POST", "/api/clients/mueller/closures", {"first": "2026-09-01"}),
        ("DELETE", f"/api/clients/mueller/closures/{cid}", None),
    ]:
        r = http.request(method, url, json=body, auth=schulz)
        assert r.status_code == 404 and r.json()["detail"] == "no such client: 'mueller'"
    # schulz cannot remove mueller's closure through its own client id either
    r = http.delete(f"/api/clients/schulz/closures/{cid}", auth=schulz)
    assert r.status_code == 404
    assert len(http.get("/api/clients/mueller/closures", auth=admin).json()) == 1


def test_week_grid(office: Any) -> None:
    http, pw, _ = office
    mueller = ("mueller", pw["mueller"])
    http.post("/api/clients/mueller/closures", json={"first": "2026-12-28"}, auth=mueller)
    r = http.get("/api/clients/mueller/week", params={"week": "2026-12-24", "slot": 30},
                 auth=mueller)  # fmt: skip
    assert r.status_code == 200, r.text
    grid = r.json()
    assert grid["number"] == "+49891234567" and grid["slot_minutes"] == 30
    days = {d["date"]: d for d in grid["days"]}
    assert list(days) == [f"2026-12-{n}" for n in range(21, 28)]  # Monday to Sunday
    monday = [(s["start"], s["end"], s["rule"]) for s in days["2026-12-21"]["spans"]]
    assert monday == [("00:00", "07:00", "Sonst"), ("07:00", "16:00", "Werktag"),
                      ("16:00", "24:00", "Sonst")]  # fmt: skip
    assert days["2026-12-25"]["holiday"] == "Erster Weihnachtstag"
    assert [s["rule"] for s in days["2026-12-25"]["spans"]] == ["Sonst"]
    nxt = http.get("/api/clients/mueller/week", params={"week": "2026-12-28"}, auth=mueller)
    closed = nxt.json()["days"][0]
    assert closed["closed"] is True and [s["rule"] for s in closed["spans"]] == [None]
    for bad in ({"slot": 7}, {"week": "KW52"}, {"number": "030 1234567"}):
        r = http.get("/api/clients/mueller/week", params=bad, auth=mueller)
        assert r.status_code == 422, (bad, r.text)
    r = http.get("/api/clients/mueller/week", auth=("schulz", pw["schulz"]))
    assert r.status_code == 404 and r.json()["detail"] == "no such client: 'mueller'"


def test_a_dictation_number_simulates_as_dictation_not_rules(office: Any) -> None:
    """A call to the client's dictation number starts dictation by phone (the SIP core does
    so before routing); the simulators say so instead of showing a rule's steps."""
    http, pw, store = office
    store.add_number("+49891239999", "mueller", dictation=True)
    mueller = ("mueller", pw["mueller"])
    body = {"at": "2026-03-03 09:00", "number": "089 1239999"}
    r = http.post("/api/clients/mueller/simulate", json=body, auth=mueller)
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["dictation"] is True and plan["steps"] == [] and plan["rule"] is None
    assert "dictation number" in plan["reason"]
    r = http.get("/api/route/simulate", params={"number": "+49891239999"}, auth=mueller)
    assert r.status_code == 200 and r.json()["dictation"] is True, r.text
    r = http.post("/api/clients/mueller/simulate", json={"at": "2026-03-03 09:00"}, auth=mueller)
    assert r.json()["dictation"] is False and r.json()["rule"] == "Werktag"


def test_week_grid_for_a_caller(office: Any) -> None:
    """The week grid for a given caller: a rule on the caller's number decides all week;
    without one the grid is the unknown caller's; a number routing refuses is a 422."""
    http, pw, store = office
    add_regular_caller_rule(store)
    mueller = ("mueller", pw["mueller"])
    week = {"week": "2026-12-21"}
    r = http.get("/api/clients/mueller/week", params={**week, "caller": "0171/5550000"},
                 auth=mueller)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["caller"] == "+491715550000"
    assert {s["rule"] for d in r.json()["days"] for s in d["spans"]} == {"Stammkunde"}
    r = http.get("/api/clients/mueller/week", params=week, auth=mueller)
    assert r.json()["caller"] is None
    assert "Stammkunde" not in {s["rule"] for d in r.json()["days"] for s in d["spans"]}
    r = http.get("/api/clients/mueller/week", params={**week, "caller": "abc"}, auth=mueller)
    assert r.status_code == 422 and "caller" in r.text


def add_regular_caller_rule(store: Store) -> None:
    """Müller's rules with a first rule "Stammkunde" for calls from 0171 5550000."""
    doc = store.get_rules_document("mueller")
    regular = {"name": "Stammkunde", "when": {"caller": {"numbers": ["0171 5550000"]}},
               "steps": [{"targets": ["user:mueller"], "timeout": 20}]}  # fmt: skip
    entry = doc["numbers"]["+49891234567"]
    entry["rules"] = [regular, *entry["rules"]]
    store.save_rules("mueller", doc)
