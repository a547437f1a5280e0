"""The provider admin's pages in a real browser (chromium via Playwright) against the real
`heimbuero serve` with the demo office: a phone registered over SIP shows on /admin/users, a
carrier call leaves a record that /admin/calls lists and /admin/calls.csv exports (the
caller's number, chosen by the caller, neutralised for spreadsheets), /admin/health counts
the registration. Agents, client owners and employees get the 404 page on every admin page."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Server, SipClient, free_port, next_request, reply, wait_until

from .conftest import login

pytestmark = [pytest.mark.e2e]

NUMBER = "+49891234567"  # the demo client mueller's number
EVIL = "=1+2"  # the user part of the caller's SIP URI: a formula to a spreadsheet
PAGES = ("/admin", "/admin/users", "/admin/calls", "/admin/calls.csv", "/admin/health")
EMPLOYEE = ("emma", "Kanzlei-Zugang-2026")
# a client whose id (64 characters), name and greeting do not break at a blank
LONG_ID = "k" * 64
LONG_NAME = "Rechtsanwaltskanzlei" + "Ä" * 100
EXTRA = 60  # clients added for a second page of the admin's client list (50 a page)


def _width(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _session(srv: Server, name: str) -> httpx.Client:
    http = httpx.Client(base_url=srv.http_url, timeout=10, follow_redirects=True)
    page = http.get("/")
    r = http.post("/login", data={"csrf": _csrf(page.text), "name": name,
                                  "password": srv.users[name]})  # fmt: skip
    assert r.status_code == 200, r.text
    return http


def _unlinked(html: str) -> str:
    """The page without the path its language links lead back to."""
    return re.sub(r"next=[^\"]*", "next=", html)


def test_admin_sees_devices_calls_export_and_health(browser: Any, tmp_path: Path) -> None:
    carrier_port = free_port()
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"client": "mueller", "numbers": {NUMBER: {"rules": [
        {"name": "Immer", "steps": [{"targets": ["user:anna"], "timeout": 30}]},
    ]}}}), encoding="utf-8")  # fmt: skip
    srv = Server(tmp_path / "server", demo=True, http=True)
    srv.prepare()
    data = ["--data", str(srv.data_dir)]
    srv.cli("trunk", "set", "carrier", "--address", f"127.0.0.1:{carrier_port}", *data)
    srv.cli("rules", "import", "mueller", str(rules), *data)
    srv.add_user(*EMPLOYEE, role="employee")
    srv.cli("client", "add", LONG_ID, "--name", LONG_NAME, "--greeting", "G" * 300,
            "--notes", "N" * 500, "--contact", "C" * 200, *data)  # fmt: skip
    with srv, SipClient(srv.port) as phone, SipClient(srv.port, local_port=carrier_port) as pstn:
        aor = f"sip:anna@{srv.domain}"
        contact = f"sip:anna@127.0.0.1:{phone.local_port}"
        _, ok = phone.authenticated_request(
            "REGISTER", f"sip:{srv.domain}", username="anna", password=srv.users["anna"],
            from_uri=aor, to_uri=aor, headers=[("Contact", f"<{contact}>")],
        )  # fmt: skip
        assert ok.status == 200, ok.summary()
        r = httpx.post(f"{srv.http_url}/api/tokens", json={"name": "wallboard"},
                       auth=("anna", srv.users["anna"]), timeout=10)  # fmt: skip
        assert r.status_code == 201, r.text
        secret = r.json()["token"]
        # a carrier call from a caller whose number is a formula; anna's phone is busy
        invite = pstn.request(
            "INVITE", f"sip:{NUMBER}@{srv.domain}", from_uri=f"sip:{EVIL}@127.0.0.1",
            to_uri=f"sip:{NUMBER}@{srv.domain}",
            headers=[("Contact", f"<sip:carrier@127.0.0.1:{carrier_port}>")],
        )  # fmt: skip
        rung = next_request(phone, "INVITE", timeout=10)
        reply(phone, rung, "486 Busy Here")
        final = pstn.final_response(invite, timeout=10)
        pstn.ack_non_2xx(invite, final)
        assert final.status == 486, final.summary()

        # enough clients for two pages of the admin's list (after the demo's, by id)
        with httpx.Client(base_url=srv.http_url, timeout=10,
                          auth=("admin", srv.users["admin"])) as api:  # fmt: skip
            for k in range(EXTRA):
                r = api.post("/api/clients", json={"id": f"zz{k:02d}", "name": f"Bau {k} KG"})
                assert r.status_code == 201, r.text

        ctx = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 740})
        page = ctx.new_page()
        login(page, srv, "admin")
        assert page.url.endswith("/admin")
        for text in ("Tischlerei Müller", "Schulz", "Europe/Berlin", "BY"):
            assert text in page.locator("main").inner_text(), text
        assert _width(page) <= 360
        # the client list by keyboard alone, no script needed: the pager, then a search
        table = page.locator("table.clients tbody tr")
        assert table.count() == 50 and "Seite 1 von 2" in page.locator("nav.pages").inner_text()
        page.get_by_role("link", name="Nächste").focus()
        page.keyboard.press("Enter")
        page.wait_for_url("**/admin?page=2#clients-h")
        assert table.count() == 3 + EXTRA - 50 and "Bau 59 KG" in table.last.inner_text()
        assert _width(page) <= 360
        page.get_by_label("Suche nach Name, Kennung oder Nummer").focus()
        page.keyboard.type("089 1234567")
        page.keyboard.press("Enter")
        page.wait_for_url("**/admin?q=089+1234567&per_page=50#clients-h")
        assert table.count() == 1 and "Tischlerei Müller" in table.inner_text()
        page.goto(srv.http_url + "/admin?per_page=100000")
        assert "von 1 bis 200" in page.get_by_role("alert").inner_text()
        page.get_by_role("link", name="Benutzer und Geräte").click()
        page.wait_for_load_state()
        main = page.locator("main").inner_text()
        for text in ("mueller", "schulz", "emma", "team", "anna, ben", "carrier", "wallboard",
                     contact, "UDP 127.0.0.1"):  # fmt: skip
            assert text in main, text
        assert _width(page) <= 360
        # the record is written a moment after the call ended
        calls = page.get_by_role("link", name="Anrufe", exact=True)
        calls.click()
        page.wait_for_load_state()

        def listed() -> bool:
            page.reload()
            return EVIL in page.locator("main").inner_text()

        wait_until(listed, timeout=10, interval=0.5, what="the call on /admin/calls")
        assert "besetzt" in page.locator("table.calls").inner_text()
        assert _width(page) <= 360
        page.get_by_label("Mandant", exact=True).select_option("mueller")
        page.get_by_label("von", exact=True).fill("2020-01-01")
        page.get_by_role("button", name="Anzeigen").click()
        page.wait_for_load_state()
        assert "client=mueller" in page.url and EVIL in page.locator("main").inner_text()
        with page.expect_download() as got:
            page.get_by_role("link", name="Als CSV herunterladen").click()
        download = got.value
        assert download.suggested_filename == "anrufe-mueller.csv"
        text = Path(download.path()).read_bytes().decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text)))
        head, row = rows[0], rows[1]
        assert len(rows) == 2 and head[0] == "ID"
        assert row[head.index("Anrufer")] == f"sip:{EVIL}@127.0.0.1"
        assert row[head.index("Rufnummer des Anrufers")] == "'" + EVIL
        assert row[head.index("Ergebnis")] == "busy"
        page.get_by_role("link", name="Serverzustand").click()
        page.wait_for_load_state()
        assert _width(page) <= 360
        assert int(page.locator("#h-registrations").inner_text()) >= 1
        assert page.locator("#h-calls").inner_text() == "0"
        assert int(page.locator("#h-streams").inner_text()) >= 0
        assert re.fullmatch(r"[\d,.]+ (B|kB|MB)", page.locator("#h-store").inner_text())
        page.goto(srv.http_url + f"/admin/clients/{LONG_ID}")
        assert LONG_NAME in page.get_by_label("Name").input_value()
        assert _width(page) <= 360
        page.goto(srv.http_url + "/console")  # the long name in the call note's client list
        assert _width(page) <= 360
        page.goto(srv.http_url + "/admin/clients/mueller")
        assert _width(page) <= 360
        page.get_by_label("Begrüßung").fill("Tischlerei Müller, Grüß Gott")
        page.get_by_role("button", name="Speichern").click()
        page.wait_for_load_state()
        assert "Mandant mueller gespeichert." in page.get_by_role("status").inner_text()
        assert "Grüß Gott" in page.locator("table.clients").inner_text()
        shown = ""
        for path in PAGES[:-1] + ("/admin/calls.csv",):
            shown += page.request.get(srv.http_url + path).text()
        assert secret not in shown
        ctx.close()

        # abuse: every other role gets the 404 page another role's area gives
        for who, area in (("anna", "/portal"), ("mueller", "/console"), ("emma", "/console")):
            with contextlib.closing(_session(srv, who)) as http:
                foreign = http.get(area)
                assert foreign.status_code == 404 and "Nicht gefunden" in foreign.text
                for path in PAGES:
                    r = http.get(path, params={"client": "mueller"})
                    assert r.status_code == 404, (who, path)
                    assert _unlinked(r.text) == _unlinked(foreign.text), (who, path)
                    assert EVIL not in r.text and secret not in r.text
