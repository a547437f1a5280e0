"""Call notes over the JSON API and the console's pages (TestClient, real SQLite store, demo
office): agents take them, the business's users read and mark them, another business's user
gets "not found", and `CallNoteTaken` is published once the note is stored."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.events import CallNoteTaken
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.web.app import WebContext, create_app

REALM = "office.example"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], list[Any]]]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, REALM)
    published: list[Any] = []
    ctx = WebContext(
        store,
        lambda: {"domain": REALM, "registrations": 0},
        lambda: [],
        publish=published.append,
    )
    with TestClient(create_app(ctx)) as http:
        yield http, passwords, published
    store.close()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m
    return m.group(1)


def _login(http: TestClient, name: str, password: str) -> None:
    page = http.get("/")
    r = http.post("/login", data={"csrf": _csrf(page.text), "name": name, "password": password})
    assert r.status_code == 200


NOTE = {"client": "mueller", "caller_name": "Frau Huber", "caller_number": "089 555123",
        "concern": "Angebot Einbauschrank", "callback": True, "urgent": True,
        "text": "Bitte bis Freitag zurückrufen."}  # fmt: skip


def test_agent_takes_a_note_the_client_reads_it(office: Any) -> None:
    http, pw, published = office
    anna, mueller = ("anna", pw["anna"]), ("mueller", pw["mueller"])
    r = http.post("/api/notes", json=NOTE, auth=anna)
    assert r.status_code == 201, r.text
    note = r.json()
    assert note["agent"] == "anna" and note["read_at"] is None and note["urgent"] is True
    assert [type(e) for e in published] == [CallNoteTaken]
    assert (published[0].client, published[0].note_id, published[0].agent) == (
        "mueller", note["id"], "anna")  # fmt: skip
    listed = http.get("/api/notes", auth=mueller).json()
    assert [n["id"] for n in listed] == [note["id"]]
    assert http.post(f"/api/notes/{note['id']}/read", auth=mueller).json()["read_at"]
    done = http.post(f"/api/notes/{note['id']}/done", auth=mueller).json()
    assert done["done_at"] and done["read_at"]


def test_notes_of_another_business_look_not_found(office: Any) -> None:
    http, pw, _ = office
    note = http.post("/api/notes", json=NOTE, auth=("anna", pw["anna"])).json()
    schulz = ("schulz", pw["schulz"])
    assert http.get("/api/notes", auth=schulz).json() == []
    for r in (
        http.get(f"/api/notes/{note['id']}", auth=schulz),
        http.post(f"/api/notes/{note['id']}/read", auth=schulz),
        http.get("/api/notes/99999", auth=schulz),
        http.get("/api/notes?client=mueller", auth=schulz),
    ):
        assert r.status_code == 404, r.text
    # clients do not take notes; a note needs a concern; an unknown client is not found
    assert http.post("/api/notes", json=NOTE, auth=schulz).status_code == 403
    empty = dict(NOTE, concern="", text="")
    assert http.post("/api/notes", json=empty, auth=("anna", pw["anna"])).status_code == 422
    other = dict(NOTE, client="nobody")
    assert http.post("/api/notes", json=other, auth=("anna", pw["anna"])).status_code == 404
    assert http.get("/api/notes").status_code == 401


def test_note_form_on_the_console_and_the_portal(office: Any) -> None:
    http, pw, _ = office
    _login(http, "anna", pw["anna"])
    page = http.get("/console")
    form = {k: v for k, v in NOTE.items() if k not in ("callback", "urgent")}
    r = http.post("/console/notes", data=dict(form, csrf="bad"))
    assert r.status_code == 403
    r = http.post("/console/notes", data=dict(form, csrf=_csrf(page.text), urgent="on"))
    assert r.status_code == 200 and "wurde gespeichert" in r.text
    http.cookies.clear()
    _login(http, "mueller", pw["mueller"])
    portal = http.get("/portal")
    assert "Dringend: Angebot Einbauschrank" in portal.text and "ungelesen" in portal.text
    note_id = re.search(r'data-note="(\d+)"', portal.text).group(1)  # type: ignore[union-attr]
    r = http.post(f"/portal/notes/{note_id}/done", data={"csrf": _csrf(portal.text)})
    assert r.status_code == 200 and "erledigt" in r.text
    http.cookies.clear()
    _login(http, "schulz", pw["schulz"])
    portal = http.get("/portal")
    assert "Einbauschrank" not in portal.text
    r = http.post(f"/portal/notes/{note_id}/read", data={"csrf": _csrf(portal.text)})
    assert r.status_code == 404
    assert http.post("/console/notes", data=dict(form, csrf=_csrf(portal.text))).status_code == 404


def test_client_email_is_checked_and_shown(office: Any) -> None:
    http, pw, _ = office
    admin = ("admin", pw["admin"])
    r = http.patch("/api/clients/mueller", json={"email": "not an address"}, auth=admin)
    assert r.status_code == 422 and "e-mail" in r.text
    r = http.patch("/api/clients/mueller", json={"email": "info@mueller.test"}, auth=admin)
    assert r.status_code == 200 and r.json()["email"] == "info@mueller.test"
    mueller = ("mueller", pw["mueller"])
    assert (
        http.patch("/api/clients/mueller", json={"email": "x@y.de"}, auth=mueller).status_code
        == 403
    )
