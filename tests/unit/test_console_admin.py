"""The provider admin's pages (web/console/admin.py) in process: FastAPI TestClient, real
SQLite store with the demo office, the server's status and registrations faked in the
WebContext. The CSV cell guard as a pure function."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.domain.model import Client, Trunk, VipCaller
from heimbuero.office import accounts
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.web.app import WebContext, create_app
from heimbuero.web.console.admin import calls_csv, csv_safe, day_bounds

REALM = "office.example"
PAGES = ("/admin", "/admin/users", "/admin/calls", "/admin/calls.csv", "/admin/health")
DEVICE = {
    "user": "anna",
    "contact": "<sip:anna@127.0.0.1:5071;transport=udp>",
    "source": "udp:127.0.0.1:5071",
    "expires_in": 3541,
    "user_agent": "Test-Phone/1.0",
}
EVIL = '=HYPERLINK("http://evil.example","klick")'


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str], Store]]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, REALM)
    passwords["emma"] = "Kanzlei-Zugang-2026"
    accounts.add_user(store, REALM, "emma", passwords["emma"], "employee")
    store.user_update("emma", client="mueller")

    def status() -> dict[str, Any]:
        return {"domain": REALM, "uptime_s": 93784.0, "registrations": 1, "calls_active": 2,
                "trunks": {"carrier": "registered"}, "version": "0.1.0"}  # fmt: skip

    def app() -> Any:
        return create_app(WebContext(store, status, lambda: [dict(DEVICE)]))

    yield app, passwords, store
    store.close()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _unlinked(html: str) -> str:
    """The page without the path its language links lead back to."""
    return re.sub(r"next=[^\"]*", "next=", html)


def _login(http: TestClient, name: str, password: str) -> None:
    page = http.get("/")
    r = http.post("/login", data={"csrf": _csrf(page.text), "name": name, "password": password},
                  follow_redirects=False)  # fmt: skip
    assert r.status_code == 303, r.text


def http_odd_name(app: Any, pw: dict[str, str]) -> Any:
    """The export asked for a client id no header may carry (no such client)."""
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        return http.get("/admin/calls.csv", params={"client": "müller\r\nX-Evil: 1"})


def _calls(store: Store, caller: str = EVIL) -> None:
    now = datetime.now(UTC)
    store.apply_call_log([
        ("start", 1, {"call_id": "c1", "number": "+49891234567", "caller": caller,
                      "client": "mueller", "started_at": now - timedelta(minutes=5),
                      "rule": "Sonst"}),
        ("update", 1, {"answered_by": "user:anna", "result": "answered"}),
        ("start", 2, {"call_id": "c2", "number": "+49301234567", "caller": "sip:+4930555@c",
                      "client": "schulz", "started_at": now - timedelta(days=40)}),
        ("update", 2, {"result": "no_answer", "end_reason": "unreachable",
                       "ended_at": now - timedelta(days=40)}),
    ], {})  # fmt: skip


# -- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("=1+1", "'=1+1"),
        ("+4930555", "'+4930555"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("  =1+1", "'  =1+1"),
        ("sip:+4930555@carrier", "sip:+4930555@carrier"),
        ('"Meier" <sip:1@x>', '"Meier" <sip:1@x>'),
        ("", ""),
    ],
)
def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote(value: str, shown: str) -> None:
    assert csv_safe(value) == shown


def test_calls_csv_guards_callers_and_quotes_by_the_csv_module(office: Any) -> None:
    _, _, store = office
    _calls(store, caller='=cmd|"/c calc"!A1, "x"')
    rows = list(csv.reader(io.StringIO(calls_csv(store.list_call_records(), ["a"] * 18))))
    assert rows[0] == ["a"] * 18 and len(rows) == 3
    newest = rows[1]
    assert newest[6] == '\'=cmd|"/c calc"!A1, "x"'  # caller: one cell, neutralised
    assert newest[5] == "+49891234567"  # our own number stays a number
    assert newest[7] == '\'=cmd|"/c calc"!A1, "x"'  # its number part: the same
    assert newest[10] == "user:anna" and newest[13] == "answered"


def test_day_bounds_are_whole_local_days() -> None:
    start, end, bad = day_bounds("2026-12-24", "2026-12-24", "Europe/Berlin")
    assert bad == [] and start is not None and end is not None
    assert start.astimezone(UTC) == datetime(2026, 12, 23, 23, 0, tzinfo=UTC)
    assert end - start == timedelta(days=1)
    assert day_bounds("24.12.", "", "Europe/Berlin")[2] == ["from"]
    # days a date field takes but UTC has no whole day for (year 1 in Berlin, after 9999)
    assert day_bounds("0001-01-01", "9999-12-31", "Europe/Berlin")[2] == ["from", "to"]
    assert day_bounds("0001-01-02", "9999-12-30", "Europe/Berlin")[2] == []


# -- the pages --------------------------------------------------------------------------------


def test_admin_overview_lists_clients_with_their_office_fields(office: Any) -> None:
    app, pw, _ = office
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        page = http.get("/admin")
        assert page.status_code == 200
        for text in ("Tischlerei Müller", "+49891234567", "Europe/Berlin", "VIP-Anrufer",
                     'href="/admin/users"', 'href="/admin/calls"', 'href="/admin/health"',
                     "table-wrap"):  # fmt: skip
            assert text in page.text, text


def _client_links(html: str) -> list[str]:
    return re.findall(r'href="/admin/clients/([^"]+)"', html)


def _many(store: Store, count: int = 300) -> None:
    for k in range(count):
        store.add_client(Client(id=f"c{k:04d}", name=f"Betrieb {k} GmbH", timezone="Europe/Berlin"))
        store.add_number(f"+4930555{k:05d}", f"c{k:04d}")


def test_admin_client_list_is_paged_in_the_store(office: Any) -> None:
    """300 clients (and the demo's two): 50 a page in id order with their numbers, a pager
    whose links keep the page size, a page size up to 200, a page after the last shows the
    last; a saved client is announced on any page, a missing one never."""
    app, pw, store = office
    _many(store)
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        page = http.get("/admin", params={"saved": "c0299"})
        assert page.status_code == 200
        assert _client_links(page.text) == [f"c{k:04d}" for k in range(50)]
        assert "+493055500049" in page.text and "+493055500050" not in page.text
        assert "Mandanten 1–50 von 302." in page.text and "Seite 1 von 7" in page.text
        assert 'href="/admin?page=2#clients-h" rel="next"' in page.text
        assert 'href="/admin?page=7#clients-h"' in page.text and 'rel="prev"' not in page.text
        assert "Mandant c0299 gespeichert." in page.text
        other = http.get("/admin", params={"saved": "c9999"})
        assert other.status_code == 200 and "gespeichert." not in other.text

        third = http.get("/admin", params={"page": "3", "per_page": "100"})
        assert _client_links(third.text) == [f"c{k:04d}" for k in range(200, 300)]
        assert 'href="/admin?per_page=100&amp;page=2#clients-h" rel="prev"' in third.text
        assert 'href="/admin?per_page=100&amp;page=4#clients-h" rel="next"' in third.text
        assert "Mandanten 201–300 von 302." in third.text and "Seite 3 von 4" in third.text
        biggest = http.get("/admin", params={"per_page": "200"})
        assert len(_client_links(biggest.text)) == 200
        past = http.get("/admin", params={"page": "999999999"})
        assert past.status_code == 200 and "Seite 7 von 7" in past.text
        assert _client_links(past.text) == ["mueller", "schulz"]


def test_admin_client_search_by_name_id_and_number(office: Any) -> None:
    app, pw, store = office
    _many(store)
    store.add_client(Client(id="bau_1", name="100% Bau", timezone="Europe/Berlin"))
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        by_name = http.get("/admin", params={"q": "betrieb 1"})  # 1, 10-19, 100-199
        assert by_name.status_code == 200
        assert "111 Treffer für „betrieb 1“, hier 1–50." in by_name.text
        assert _client_links(by_name.text)[:3] == ["c0001", "c0010", "c0011"]
        assert 'href="/admin?q=betrieb+1&amp;page=3#clients-h"' in by_name.text
        assert 'value="betrieb 1"' in by_name.text
        assert _client_links(http.get("/admin", params={"q": "MÜLLER"}).text) == ["mueller"]
        assert _client_links(http.get("/admin", params={"q": "C0299"}).text) == ["c0299"]
        # numbers as Germans type them, and a piece of one
        for typed in ("030 555 00150", "+49 30 55500150", "004930/55500150", "5550015"):
            assert _client_links(http.get("/admin", params={"q": typed}).text)[0] == "c0150"
        assert _client_links(http.get("/admin", params={"q": "5550015"}).text) == [
            "c0150", "c0151", "c0152", "c0153", "c0154", "c0155", "c0156", "c0157",
            "c0158", "c0159"]  # fmt: skip
        # LIKE's wildcards are letters here
        assert _client_links(http.get("/admin", params={"q": "%"}).text) == ["bau_1"]
        assert _client_links(http.get("/admin", params={"q": "_"}).text) == ["bau_1"]
        none = http.get("/admin", params={"q": "<b>Zimmerei</b>"})
        assert none.status_code == 200 and _client_links(none.text) == []
        assert "Kein Mandant passt zu „&lt;b&gt;Zimmerei&lt;/b&gt;“." in none.text
        assert "<b>Zimmerei" not in none.text


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"q": "x" * 10_000}, "Der Suchbegriff ist zu lang (höchstens 100 Zeichen)"),
        ({"q": "Müller\x00"}, "enthält Steuerzeichen"),
        ({"page": "-1"}, "Die Seite ist eine ganze Zahl ab 1."),
        ({"page": "abc"}, "Die Seite ist eine ganze Zahl ab 1."),
        ({"page": "0"}, "Die Seite ist eine ganze Zahl ab 1."),
        ({"page": "1" * 40}, "Die Seite ist eine ganze Zahl ab 1."),
        ({"per_page": "100000"}, "Mandanten pro Seite: eine ganze Zahl von 1 bis 200."),
        ({"per_page": "0"}, "Mandanten pro Seite: eine ganze Zahl von 1 bis 200."),
        ({"per_page": "²"}, "Mandanten pro Seite: eine ganze Zahl von 1 bis 200."),
    ],
)
def test_admin_client_list_refuses_a_search_it_cannot_run(
    office: Any, params: dict[str, str], says: str
) -> None:
    """400 with the reason next to the search form; no clients listed, the rest of the page
    (provider, second factor) still there."""
    app, pw, _ = office
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        r = http.get("/admin", params=params)
        assert r.status_code == 400 and says in r.text
        assert 'role="alert" id="client-q-error"' in r.text and 'aria-invalid="true"' in r.text
        assert _client_links(r.text) == [] and "Zweiter Faktor" in r.text
        if "q" in params:  # the form shows at most what a search may be
            assert 'value="' + "x" * 101 not in r.text
        http.cookies.set("hb_lang", "en")
        assert "Clients per page" in http.get("/admin", params={"per_page": "0"}).text


def test_admin_users_shows_users_devices_groups_trunks_numbers_tokens(office: Any) -> None:
    app, pw, store = office
    _token, secret = store.create_token("anna", "wallboard")
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        page = http.get("/admin/users").text
    for text in ("mueller", "emma", "employee", "team", "alle gleichzeitig", "anna, ben",
                 "carrier", "registered", "+49301234567", "wallboard",
                 "sip:anna@127.0.0.1:5071", "Test-Phone/1.0", "UDP 127.0.0.1:5071"):  # fmt: skip
        assert text in page.replace("&lt;", "<").replace("&gt;", ">"), text
    assert secret not in page


def test_admin_users_writes_an_ipv6_trunk_address_in_brackets(office: Any) -> None:
    app, pw, store = office
    store.add_trunk(Trunk(name="carrier6", host="2001:db8::7", port=5060, transport="udp",
                          prefixes=("+49",)))  # fmt: skip
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        page = http.get("/admin/users").text
    assert "UDP [2001:db8::7]:5060" in page and "UDP 127.0.0.1:5090" in page


def test_admin_calls_filter_page_and_export(office: Any) -> None:
    app, pw, store = office
    _calls(store)
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        page = http.get("/admin/calls").text
        assert "HYPERLINK" in page and "+4930555" in page and 'for="f-client"' in page
        only = http.get("/admin/calls", params={"client": "schulz"}).text
        assert "+4930555" in only and "HYPERLINK" not in only
        # why it ended, in the page's words (the running call has none yet)
        assert "Grund des Endes" in only
        assert '<td class="end-reason">Telefon nicht erreichbar</td>' in only
        assert '<td class="end-reason">–</td>' in page
        english = http.get(
            "/admin/calls", params={"client": "schulz"}, headers={"Accept-Language": "en"}
        ).text
        assert '<td class="end-reason">phone unreachable</td>' in english
        today = datetime.now(UTC).date()
        recent = http.get("/admin/calls", params={"from": str(today - timedelta(days=2))}).text
        assert "HYPERLINK" in recent and "+4930555@c" not in recent
        bad = http.get("/admin/calls", params={"from": "gestern"})
        assert bad.status_code == 422 and "2026-12-24" in bad.text
        for edge in ({"from": "0001-01-01"}, {"to": "9999-12-31"}):
            page = http.get("/admin/calls", params=edge)
            assert page.status_code == 422 and "2026-12-24" in page.text, edge
            assert http.get("/admin/calls.csv", params=edge).status_code == 422, edge
        # a client that neither exists nor has records: the 404 page, as in the API
        for path in ("/admin/calls", "/admin/calls.csv"):
            gone = http.get(path, params={"client": "nobody"})
            assert gone.status_code == 404 and "Nicht gefunden" in gone.text, path
        export = http.get("/admin/calls.csv", params={"client": "mueller"})
    assert export.status_code == 200
    assert export.headers["content-type"] == "text/csv; charset=utf-8"
    assert export.headers["content-disposition"] == 'attachment; filename="anrufe-mueller.csv"'
    odd = http_odd_name(app, pw)
    assert odd.status_code == 404 and "content-disposition" not in odd.headers
    assert "x-evil" not in odd.headers
    text = export.content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:2] == ["ID", "Beginn (UTC)"] and "Anrufer" in rows[0]
    assert len(rows) == 2 and rows[1][6] == "'" + EVIL


def test_admin_calls_are_paged_newest_first(office: Any) -> None:
    app, pw, store = office
    now = datetime.now(UTC)
    store.apply_call_log([
        ("start", i, {"call_id": f"p{i}", "number": "+49891234567", "caller": f"sip:{i}@x",
                      "client": "mueller", "started_at": now - timedelta(minutes=i)})
        for i in range(1, 106)
    ], {})  # fmt: skip
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        first = http.get("/admin/calls").text
        second = http.get("/admin/calls", params={"page": "2"}).text
    assert "sip:1@x" in first and "sip:100@x" in first and "sip:101@x" not in first
    assert 'rel="next"' in first and "sip:105@x" in second and 'rel="next"' not in second
    assert first.index("sip:1@x") < first.index("sip:2@x")


def test_admin_health_shows_the_servers_numbers(office: Any) -> None:
    app, pw, _ = office
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        page = http.get("/admin/health").text
    assert re.search(r'id="h-registrations">1<', page)
    assert re.search(r'id="h-calls">2<', page)
    assert re.search(r'id="h-streams">0<', page)
    assert re.search(r'id="h-store">\d+(,\d)? (kB|MB|B)<', page)
    assert re.search(r'id="h-uptime">1 d 02:03:04<', page)


@pytest.mark.parametrize("who", ["anna", "mueller", "emma"])
def test_admin_pages_look_missing_to_other_roles(office: Any, who: str) -> None:
    app, pw, store = office
    _calls(store)
    with TestClient(app()) as http:
        _login(http, who, pw[who])
        area = "/portal" if who == "anna" else "/console"  # another role's area
        foreign = http.get(area)
        assert foreign.status_code == 404
        for path in PAGES:
            r = http.get(path, params={"client": "mueller"})
            assert r.status_code == 404, path
            # the same page, but for the path in the language links
            assert _unlinked(r.text) == _unlinked(foreign.text), path
            assert "HYPERLINK" not in r.text


def test_admin_pages_need_a_session(office: Any) -> None:
    app, _, store = office
    with TestClient(app()) as http:
        for path in (*PAGES, "/admin/clients/mueller", "/admin/clients/nobody"):
            r = http.get(path, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/", path
        r = http.post("/admin/clients/mueller", data={"name": "Gekapert"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
    c = store.get_client("mueller")
    assert c is not None and c.name == "Tischlerei Müller"


def test_admin_pages_in_english(office: Any) -> None:
    app, pw, store = office
    _calls(store)
    with TestClient(app()) as http:
        http.cookies.set("hb_lang", "en")
        _login(http, "admin", pw["admin"])
        assert "Users and devices" in http.get("/admin").text
        assert "ring all at once" in http.get("/admin/users").text
        assert "Download as CSV" in http.get("/admin/calls").text
        assert "Caller" in http.get("/admin/calls.csv").text
        assert "Event streams open" in http.get("/admin/health").text


def test_admin_edits_a_client_and_sees_what_is_wrong(office: Any) -> None:
    app, pw, store = office
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        with store.unit_of_work() as uow:
            uow.clients.update("mueller", vip_callers=(VipCaller("+4930555123", "Herr Meier"),))
        form = http.get("/admin/clients/mueller")
        assert form.status_code == 200 and 'for="c-greeting"' in form.text
        assert "Herr Meier" in form.text and "+4930555123" in form.text
        fields = {"csrf": _csrf(form.text), "name": "Tischlerei Müller GmbH", "trade": "Holz",
                  "contact_person": "Martin Müller", "greeting": "Tischlerei Müller, Grüß Gott",
                  "notes": "Zeile 1\r\nZeile 2", "timezone": "Europe/Berlin",
                  "bundesland": "BW", "email": ""}  # fmt: skip
        bad = http.post("/admin/clients/mueller", data={**fields, "timezone": "Mars/Olympus"})
        assert bad.status_code == 422 and "Mars/Olympus" in bad.text
        assert 'aria-invalid="true" aria-describedby="p-timezone"' in bad.text
        c = store.get_client("mueller")
        assert c is not None and c.bundesland == "BY"  # nothing stored
        assert http.post("/admin/clients/mueller", data={**fields, "name": ""}).status_code == 422
        forged = http.post("/admin/clients/mueller", data={**fields, "csrf": "x" * 43})
        assert forged.status_code == 403
        ok = http.post("/admin/clients/mueller", data=fields, follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"].startswith("/admin?saved=mueller")
        assert ok.headers["location"] == "/admin?saved=mueller&q=mueller#clients-h"
        listed = http.get(ok.headers["location"]).text
        assert "Mandant mueller gespeichert." in listed and _client_links(listed) == ["mueller"]
        assert "gespeichert." not in http.get("/admin", params={"saved": "Konto gesperrt"}).text
        assert http.get("/admin/clients/nobody").status_code == 404
        for odd in ("M%C3%BCller", "x" * 300, "mueller%0D%0AX-Evil:%201"):
            assert http.get("/admin/clients/" + odd).status_code == 404, odd
        gone = http.post("/admin/clients/nobody", data=fields)
        assert gone.status_code == 404 and "Nicht gefunden" in gone.text
        assert store.get_client("nobody") is None
    c = store.get_client("mueller")
    assert c is not None and (c.name, c.bundesland, c.notes) == (
        "Tischlerei Müller GmbH", "BW", "Zeile 1\nZeile 2")  # fmt: skip


@pytest.mark.parametrize("who", ["anna", "mueller", "emma"])
def test_only_admins_edit_clients(office: Any, who: str) -> None:
    app, pw, store = office
    with TestClient(app()) as http:
        _login(http, who, pw[who])
        csrf = _csrf(http.get("/password").text)
        for client_id in ("mueller", "nobody"):  # no hint whether a client exists
            assert http.get(f"/admin/clients/{client_id}").status_code == 404
            r = http.post(f"/admin/clients/{client_id}", data={"csrf": csrf, "name": "Gekapert"})
            assert r.status_code == 404
    c = store.get_client("mueller")
    assert c is not None and c.name == "Tischlerei Müller"
