"""The web console's shell (FastAPI TestClient, real SQLite store, demo office): login through
the API's LoginGate, sessions in the database, CSRF tokens, logout, password change, and each
role's landing page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_forwarding import add_regular_caller_rule

from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.web.app import WebContext, create_app

REALM = "office.example"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str], Store]]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, REALM)

    def app() -> Any:
        ctx = WebContext(store, lambda: {"domain": REALM, "registrations": 0}, lambda: [])
        return create_app(ctx)

    yield app, passwords, store
    store.close()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _login(http: TestClient, name: str, password: str) -> Any:
    page = http.get("/")
    return http.post(
        "/login",
        data={"csrf": _csrf(page.text), "name": name, "password": password},
        follow_redirects=False,
    )


def test_login_page_is_german_html(office: Any) -> None:
    app, _, _ = office
    with TestClient(app()) as http:
        r = http.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<html lang="de">' in r.text and "Anmelden" in r.text
        assert http.get("/static/console.css").status_code == 200


@pytest.mark.parametrize(
    ("name", "area", "shows"),
    [
        ("anna", "/console", "Tischlerei Müller"),
        ("mueller", "/portal", "Letzte Anrufe"),
        ("admin", "/admin", "Tischlerei Müller"),
    ],
)
def test_each_role_lands_on_its_area(office: Any, name: str, area: str, shows: str) -> None:
    app, pw, _ = office
    with TestClient(app()) as http:
        r = _login(http, name, pw[name])
        assert r.status_code == 303 and r.headers["location"] == area
        cookie = r.headers["set-cookie"]
        assert "hb_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # plain HTTP here
        page = http.get(area)
        assert page.status_code == 200 and shows in page.text
        assert http.get("/", follow_redirects=False).headers["location"] == area


def test_other_roles_areas_look_not_found(office: Any) -> None:
    app, pw, _ = office
    with TestClient(app()) as http:
        _login(http, "mueller", pw["mueller"])
        for path in ("/console", "/admin"):
            r = http.get(path)
            assert r.status_code == 404 and "Nicht gefunden" in r.text
            assert "Schulz" not in r.text
        assert "Schulz" not in http.get("/portal").text  # another business's name


def test_pages_need_a_session(office: Any) -> None:
    app, _, _ = office
    with TestClient(app()) as http:
        for path in ("/console", "/portal", "/admin", "/password"):
            r = http.get(path, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/"
        http.cookies.set("hb_session", "forged-session-id")
        assert http.get("/console", follow_redirects=False).status_code == 303


def test_login_without_its_token_is_refused(office: Any) -> None:
    app, pw, _ = office
    with TestClient(app()) as http:
        http.get("/")
        r = http.post("/login", data={"csrf": "x" * 43, "name": "anna", "password": pw["anna"]},
                      follow_redirects=False)  # fmt: skip
        assert r.status_code == 403 and "hb_session" not in r.headers.get("set-cookie", "")


def test_wrong_passwords_count_toward_the_api_limits(office: Any) -> None:
    app, pw, _ = office
    with TestClient(app()) as http:
        first = _login(http, "anna", "wrong-password-1")
        assert first.status_code == 401 and "falsch" in first.text
        statuses = [_login(http, "anna", "wrong-password-1").status_code for _ in range(10)]
        assert statuses[-1] == 429 and "Zu viele" in _login(http, "ben", "nope-nope-1").text
        # the same address is now refused on the JSON API too: one gate, one count
        assert http.get("/api/clients", auth=("anna", pw["anna"])).status_code == 429
        assert _login(http, "anna", pw["anna"]).status_code == 429


def test_sessions_survive_a_restart_and_end_at_logout(office: Any) -> None:
    app, pw, _ = office
    with TestClient(app()) as http:
        _login(http, "anna", pw["anna"])
        sid = http.cookies["hb_session"]
    with TestClient(app()) as http:  # a new app over the same database: the session holds
        http.cookies.set("hb_session", sid)
        page = http.get("/console")
        assert page.status_code == 200
        # logout needs the session's token
        r = http.post("/logout", data={"csrf": "wrong"}, follow_redirects=False)
        assert r.status_code == 403 and http.get("/console").status_code == 200
        r = http.post("/logout", data={"csrf": _csrf(page.text)}, follow_redirects=False)
        assert r.status_code == 303
    with TestClient(app()) as http:
        http.cookies.set("hb_session", sid)
        assert http.get("/console", follow_redirects=False).status_code == 303


def test_change_password_needs_the_old_one(office: Any) -> None:
    app, pw, _ = office
    with TestClient(app()) as http:
        _login(http, "mueller", pw["mueller"])
        token = _csrf(http.get("/password").text)
        new = "Neu-Passwort-2026!"
        r = http.post("/password", data={"csrf": token, "old": "wrong-one-1", "new": new,
                                         "repeat": new})  # fmt: skip
        assert r.status_code == 403 and "stimmt nicht" in r.text
        r = http.post("/password", data={"csrf": "bad", "old": pw["mueller"], "new": new,
                                         "repeat": new})  # fmt: skip
        assert r.status_code == 403
        r = http.post("/password", data={"csrf": token, "old": pw["mueller"], "new": new,
                                         "repeat": new})  # fmt: skip
        assert r.status_code == 200 and "wurde geändert" in r.text
        assert http.get("/api/me", auth=("mueller", new)).status_code == 200
        assert http.get("/api/me", auth=("mueller", pw["mueller"])).status_code == 401


def test_api_docs_behind_the_login_and_offline(office: Any) -> None:
    app, pw, _ = office
    with TestClient(app()) as http:
        assert http.get("/api/docs", follow_redirects=False).headers["location"] == "/"
        _login(http, "anna", pw["anna"])
        page = http.get("/api/docs")
        assert page.status_code == 200 and "/api/clients/{client_id}/rules" in page.text
        # nothing from another host (no CDN): every src/href is a path on this server
        assert not re.findall(r'(?:src|href)="(?!/)[^"]*"', page.text)
        assert "bearer" in page.text


def test_event_stream_needs_a_session(office: Any) -> None:
    app, _, _ = office
    with TestClient(app()) as http:
        assert http.get("/events").status_code == 401
        http.cookies.set("hb_session", "forged")
        assert http.get("/events").status_code == 401


def test_german_by_default_english_by_browser_or_switch(office: Any) -> None:
    app, pw, _ = office
    with TestClient(app()) as http:
        de = http.get("/", headers={"Accept-Language": "fr, de;q=0.5"})
        assert '<html lang="de">' in de.text and "Benutzername" in de.text
        en = http.get("/", headers={"Accept-Language": "en-GB,en;q=0.9"})
        assert (
            '<html lang="en">' in en.text and "User name" in en.text and "Anmelden" not in en.text
        )
        r = http.get("/lang/en?next=/password", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/password"
        assert "hb_lang=en" in r.headers["set-cookie"]
        assert '<html lang="en">' in http.get("/", headers={"Accept-Language": "de"}).text
        assert http.get("/lang/xx").status_code == 404
        # an open redirect is not possible: only paths of this server
        r = http.get("/lang/de?next=//evil.example/", follow_redirects=False)
        assert r.headers["location"] == "/"
        wrong = _login(http, "anna", "wrong-password-1")  # German again (cookie de)
        assert "Benutzername oder Passwort ist falsch." in wrong.text


def test_dates_in_the_users_language_and_the_clients_zone() -> None:
    from datetime import UTC, datetime

    from heimbuero.web.console import i18n

    moment = datetime(2026, 12, 24, 13, 0, tzinfo=UTC)
    assert i18n.when("de", moment, "Europe/Berlin") == "24.12.26, 14:00"
    assert i18n.when("en", moment, "Europe/Berlin").startswith("12/24/26, 2:00")


def test_the_agent_sets_their_status_in_the_console(office: Any) -> None:
    """The status control on the console: labelled, German, CSRF-checked; the choice is stored
    and shown selected; a client's user has no such control (its POST looks not found)."""
    app, pw, store = office
    with TestClient(app()) as http:
        _login(http, "anna", pw["anna"])
        page = http.get("/console")
        assert '<label for="status">Status</label>' in page.text and ">Pause<" in page.text
        r = http.post("/console/status", data={"csrf": "x" * 43, "status": "break"},
                      follow_redirects=False)  # fmt: skip
        assert r.status_code == 403 and store.get_user("anna").status == "available"
        r = http.post("/console/status", data={"csrf": _csrf(page.text), "status": "break"},
                      follow_redirects=False)  # fmt: skip
        assert r.status_code == 303 and store.get_user("anna").status == "break"
        assert '<option value="break" selected>' in http.get("/console").text
    with TestClient(app()) as http:
        _login(http, "mueller", pw["mueller"])
        page = http.get("/portal")
        r = http.post("/console/status", data={"csrf": _csrf(page.text), "status": "off"},
                      follow_redirects=False)  # fmt: skip
        assert r.status_code == 404 and store.get_user("mueller").status == "available"


def test_portal_shows_a_transferred_call_and_the_call_it_became(office: Any) -> None:
    from datetime import UTC, datetime

    app, pw, store = office
    start = {"number": "+49891234567", "caller": "sip:+4930555@carrier", "client": "mueller",
             "started_at": datetime.now(UTC)}  # fmt: skip
    store.apply_call_log([
        ("start", 1, {**start, "call_id": "c1", "rule": "Sonst"}),
        ("update", 1, {"answered_by": "user:anna", "result": "answered"}),
        ("start", 2, {**start, "call_id": "c2", "rule": "transfer"}),
        ("update", 2, {"answered_by": "external:+491701111111"}),
        ("transfer", 0, {"call_id": "c2", "from_call_id": "c1"}),
    ], {})  # fmt: skip
    with TestClient(app()) as http:
        _login(http, "mueller", pw["mueller"])
        page = http.get("/portal").text
        assert "user:anna (weiterverbunden)" in page
        assert "external:+491701111111 (durch Weiterverbindung)" in page
        http.cookies.set("hb_lang", "en")
        page = http.get("/portal").text
        assert "user:anna (transferred)" in page and "(by a transfer)" in page


def test_the_step_editor_offers_a_client_the_offices_group(office: Any) -> None:
    """A client whose rules ring no group still finds the office's group (the one the
    provider's default plan rings) among the targets; never another business's users."""
    app, pw, store = office
    only_me = {"name": "Immer", "steps": [{"targets": ["user:schulz"], "timeout": 20}]}
    store.save_rules("schulz", {"client": "schulz", "numbers": {"+49301234567": {
        "rules": [only_me]}}})  # fmt: skip
    with TestClient(app()) as http:
        assert _login(http, "schulz", pw["schulz"]).status_code == 303
        page = http.get("/portal/forwarding/edit")
        assert page.status_code == 200, page.text
        values = set(re.findall(r'<option value="([^"]*)"', page.text))
        assert {"group:team", "user:schulz", "voicemail:schulz"} <= values
        assert not {"user:mueller", "voicemail:mueller", "user:anna"} & values


def test_the_week_grid_follows_the_simulators_caller(office: Any) -> None:
    app, pw, store = office
    add_regular_caller_rule(store)
    with TestClient(app()) as http:
        assert _login(http, "mueller", pw["mueller"]).status_code == 303
        plain = http.get("/portal/forwarding").text
        assert "unbekannten Anrufer" in plain
        assert "Stammkunde" not in re.findall(r"<dd><strong>([^<]*)</strong>", plain)
        page = http.get("/portal/forwarding", params={"sim_caller": "0171 5550000"}).text
        assert "Für einen Anruf von +491715550000" in page
        legend = re.findall(r"<dd><strong>([^<]*)</strong>", page)
        assert legend == ["Stammkunde"], legend
        bad = http.get("/portal/forwarding", params={"sim_caller": "abc"})
        assert bad.status_code == 200 and "unbekannten Anrufer" in bad.text


def _form_fields(html: str, form_id: str) -> dict[str, str]:
    """The values a browser would submit from the form `form_id` (inputs, selected options)."""
    from html.parser import HTMLParser

    fields: dict[str, str] = {}

    class Form(HTMLParser):
        inside, select = False, ""

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if tag == "form":
                self.inside = a.get("id") == form_id
            elif self.inside and tag == "input" and a.get("name") and a.get("type") != "submit":
                fields[a["name"]] = a.get("value", "")
            elif self.inside and tag == "select":
                self.select = a.get("name", "")
                fields.setdefault(self.select, "")
            elif self.inside and tag == "option" and "selected" in a and self.select:
                fields[self.select] = a.get("value", "")

    Form().feed(html)
    return fields


def test_the_draft_preview_takes_a_caller(office: Any) -> None:
    """The step editor's preview shows where the unsaved draft sends a given caller; a
    number routing refuses is explained at the caller field."""
    app, pw, store = office
    add_regular_caller_rule(store)
    with TestClient(app()) as http:
        assert _login(http, "mueller", pw["mueller"]).status_code == 303
        form = _form_fields(http.get("/portal/forwarding/edit").text, "editor")
        assert "sim_caller" in form and "csrf" in form
        base = {**form, "action": "preview", "format": "json", "sim_date": "2026-12-22",
                "sim_time": "10:00"}  # fmt: skip
        r = http.post("/portal/forwarding/edit", data={**base, "sim_caller": "0171 5550000"})
        assert r.status_code == 200 and r.json()["rule"] == "Stammkunde", r.text
        r = http.post("/portal/forwarding/edit", data=base)
        assert r.status_code == 200 and r.json()["rule"] == "Werktag", r.text
        r = http.post("/portal/forwarding/edit", data={**base, "sim_caller": "abc"})
        assert r.status_code == 422 and list(r.json()["errors"]) == ["draft-caller"], r.text
        page = http.post("/portal/forwarding/edit", data={**base, "format": "",
                                                           "sim_caller": "abc"})  # fmt: skip
        assert page.status_code == 422 and 'id="draft-caller-error"' in page.text
