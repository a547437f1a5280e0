"""The console's billing pages (FastAPI TestClient, real SQLite store, demo office): the
portal's usage and invoices of one's own business (German amounts, a month picker, the PDF and
XML through the session), another business's ids as "not found", the admin's month (usage per
client, CSV, run, send, cancel with their confirmation steps, DATEV, the seller form), and
every POST's CSRF token; a client's invoice recipient and tariff (admin only); the portal's
usage following the event stream, and that stream's usage events going to the business's own
users and staff only; the DATEV form; and the authorization sweep of every /api/billing route
with another business's ids."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from heimbuero.app import App
from heimbuero.app.policy import Actor, Role
from heimbuero.office import accounts
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.web.app import WebContext, create_app
from tests.billing_data import SELLER

REALM = "office.example"
ADMIN = Actor("admin", Role.ADMIN)
TARIFF = {"name": "Handwerk S", "base_fee": "2900", "per_answered_call": "85",
          "per_talk_unit": "20", "increment": "60/60"}  # fmt: skip
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime.now(UTC)
THIS_MONTH = NOW.astimezone(BERLIN).strftime("%Y-%m")
LAST_DAY = NOW.astimezone(BERLIN).date().replace(day=1) - timedelta(days=1)
LAST_MONTH = LAST_DAY.strftime("%Y-%m")


def _call(store: Store, at: datetime, talk: float, client: str = "mueller") -> int:
    rid = store.add_call_record(f"c{at.timestamp()}{client}", "+49891234567", "+4930999", at,
                                client)  # fmt: skip
    store.update_call_record(rid, answered_by="user:anna", talk_seconds=talk, result="answered")
    return rid


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str], App, list[Any]]]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, REALM)
    handlers = App.build(store, lambda: REALM)
    handlers.billing.put_tariff(ADMIN, TARIFF)
    for client in ("mueller", "schulz"):
        handlers.billing.assign(ADMIN, client, "Handwerk S", date(2020, 1, 1))
        handlers.billing.set_buyer(ADMIN, client, email=f"buchhaltung@{client}.example")
    _call(store, datetime.combine(LAST_DAY, datetime.min.time(), UTC) + timedelta(hours=10), 90)
    _call(store, NOW, 90)  # this month: one call, two talk units
    handlers.billing.meter_calls()
    sent: list[Any] = []

    def mail(to: str, subject: str, text: str, files: Any, reply_to: str | None) -> None:
        sent.append((to, subject, [f.filename for f in files]))

    def app() -> Any:
        ctx = WebContext(store, lambda: {"domain": REALM, "registrations": 0}, lambda: [],
                         secret=bytes(32), invoice_mail=mail)  # fmt: skip
        return create_app(ctx)

    yield app, passwords, handlers, sent
    store.close()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _login(http: TestClient, name: str, password: str) -> None:
    page = http.get("/")
    r = http.post("/login", data={"csrf": _csrf(page.text), "name": name, "password": password},
                  follow_redirects=False)  # fmt: skip
    assert r.status_code == 303, r.text


def _run(handlers: App) -> str:
    handlers.billing.set_seller(ADMIN, **SELLER)
    made = handlers.invoices.run(ADMIN, LAST_MONTH)
    (mine,) = [i["number"] for i in made if i["client"] == "mueller"]
    return str(mine)


def test_the_portal_shows_this_months_usage_in_german_and_earlier_months(office: Any) -> None:
    app, pw, handlers, _ = office
    with TestClient(app()) as http:
        _login(http, "mueller", pw["mueller"])
        assert "/portal/billing" in http.get("/portal").text
        page = http.get("/portal/billing")
        assert page.status_code == 200
        text = page.text
        assert f'value="{THIS_MONTH}"' in text and "Verbrauch diesen Monat" in text
        # base fee 29,00 + one answered call 0,85 + two talk units 0,40 = 30,25 net
        net = re.search(r'id="total-net">([^<]+)<', text)
        gross = re.search(r'id="total-gross">([^<]+)<', text)
        assert net and net.group(1) == "30,25\xa0€", text
        assert gross and gross.group(1) == "36,00\xa0€"
        assert re.search(r'id="total-vat">5,75\xa0€<', text)
        rows = re.findall(r"<tr><td>([^<]+)</td><td>(Angenommener Anruf|Gesprächszeit)", text)
        assert len(rows) == 2
        assert "Anruf Nr." in text and "0,85\xa0€" in text and "0,40\xa0€" in text
        earlier = http.get("/portal/billing", params={"month": LAST_MONTH})
        assert earlier.status_code == 200 and "Verbrauch diesen Monat" not in earlier.text
        assert f"Verbrauch {LAST_MONTH}" in earlier.text and "Angenommener Anruf" in earlier.text
        bad = http.get("/portal/billing", params={"month": "2026-13"})
        assert bad.status_code == 422 and "YYYY-MM" in bad.text
        # in English: the English amounts
        http.cookies.set("hb_lang", "en")
        en = http.get("/portal/billing")
        assert "€30.25" in en.text and "Usage this month" in en.text


def test_the_portal_lists_own_invoices_and_serves_their_documents(office: Any) -> None:
    app, pw, handlers, _ = office
    number = _run(handlers)
    with TestClient(app()) as http:
        _login(http, "mueller", pw["mueller"])
        page = http.get("/portal/billing")
        assert number in page.text and "ausgestellt" in page.text
        assert "36,00\xa0€" in page.text  # the invoice's gross (last month: same call, fee)
        schulz = [i["number"] for i in handlers.invoices.list(ADMIN, "schulz")]
        assert schulz and schulz[0] not in page.text
        pdf = http.get(f"/portal/billing/invoices/{number}/pdf")
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
        assert pdf.headers["content-type"] == "application/pdf"
        assert f'filename="{number}.pdf"' in pdf.headers["content-disposition"]
        xml = http.get(f"/portal/billing/invoices/{number}/xml")
        assert xml.status_code == 200 and b"CrossIndustryInvoice" in xml.content
        assert http.get(f"/portal/billing/invoices/{number}/exe").status_code == 404
        # another business's invoice: exactly like one that does not exist
        for kind in ("pdf", "xml"):
            other = http.get(f"/portal/billing/invoices/{schulz[0]}/{kind}")
            missing = http.get(f"/portal/billing/invoices/RE-0000-000000/{kind}")
            assert other.status_code == missing.status_code == 404
            assert b"%PDF" not in other.content and "Diese Seite gibt es nicht" in other.text
        foreign = http.get("/portal/billing", params={"client": "schulz"})
        assert foreign.status_code == 404 and "Sanitär" not in foreign.text
    with TestClient(app()) as anon:  # no session: the login page, never a document
        r = anon.get(f"/portal/billing/invoices/{number}/pdf", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_agents_read_a_clients_billing_but_not_the_admin_page(office: Any) -> None:
    app, pw, handlers, _ = office
    number = _run(handlers)
    with TestClient(app()) as http:
        _login(http, "anna", pw["anna"])
        assert http.get("/admin/billing").status_code == 404
        assert http.get("/admin/billing/datev.csv").status_code == 404
        assert http.get("/admin/billing/usage.csv").status_code == 404
        picker = http.get("/portal/billing")
        assert picker.status_code == 200 and 'name="client"' in picker.text
        page = http.get("/portal/billing", params={"client": "mueller"})
        assert page.status_code == 200 and number in page.text  # as the API lets staff
        assert http.get("/portal/billing", params={"client": "nobody"}).status_code == 404
        csrf = _csrf(page.text)
        for path in (
            "/admin/billing/run",
            f"/admin/billing/invoices/{number}/cancel",
            f"/admin/billing/invoices/{number}/send",
            "/admin/billing/seller",
        ):
            r = http.post(path, data={"csrf": csrf, "confirm": "1", "month": LAST_MONTH,
                                      "name": "X"})  # fmt: skip
            assert r.status_code == 404, path
    with TestClient(app()) as http:
        _login(http, "mueller", pw["mueller"])
        assert http.get("/admin/billing").status_code == 404
        csrf = _csrf(http.get("/portal/billing").text)
        r = http.post(f"/admin/billing/invoices/{number}/cancel",
                      data={"csrf": csrf, "confirm": "1"})  # fmt: skip
        assert r.status_code == 404
    assert not handlers.invoices.get(ADMIN, number)["cancelled"]


def test_the_admin_runs_sends_and_cancels_after_confirming(office: Any) -> None:
    app, pw, handlers, sent = office
    handlers.billing.set_seller(ADMIN, **SELLER)
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        assert "/admin/billing" in http.get("/admin").text
        page = http.get("/admin/billing")
        assert page.status_code == 200 and f'value="{LAST_MONTH}"' in page.text
        assert "Tischlerei Müller" in page.text and "1,25\xa0€" in page.text  # 0,85 + 0,40
        csv = http.get("/admin/billing/usage.csv", params={"month": LAST_MONTH})
        assert csv.status_code == 200
        assert csv.text.splitlines()[1:] == [f"{LAST_MONTH};mueller;125"]
        csrf = _csrf(page.text)

        # the run: no token, no run; then a confirmation; then the invoices
        r = http.post("/admin/billing/run", data={"month": LAST_MONTH, "confirm": "1"})
        assert r.status_code == 403 and handlers.invoices.list(ADMIN) == []
        r = http.post("/admin/billing/run", data={"csrf": "x" * 43, "month": LAST_MONTH,
                                                  "confirm": "1"})  # fmt: skip
        assert r.status_code == 403 and handlers.invoices.list(ADMIN) == []
        r = http.post("/admin/billing/run", data={"csrf": csrf, "month": LAST_MONTH})
        assert r.status_code == 200 and 'name="confirm" value="1"' in r.text
        assert handlers.invoices.list(ADMIN) == []
        r = http.post("/admin/billing/run", data={"csrf": csrf, "month": THIS_MONTH,
                                                  "confirm": "1"})  # fmt: skip
        assert r.status_code == 422 and "has not ended yet" in r.text
        r = http.post("/admin/billing/run", data={"csrf": csrf, "month": LAST_MONTH,
                                                  "confirm": "1"})  # fmt: skip
        assert r.status_code == 200 and "2 Rechnungen erstellt." in r.text
        again = http.post("/admin/billing/run", data={"csrf": csrf, "month": LAST_MONTH,
                                                      "confirm": "1"})  # fmt: skip
        assert "Keine neuen Rechnungen" in again.text and len(handlers.invoices.list(ADMIN)) == 2
        (number,) = [i["number"] for i in handlers.invoices.list(ADMIN, "mueller")]
        assert number in r.text and "Senden" in r.text and "Stornieren" in r.text

        # sending: once at a click, a second time only after confirming
        r = http.post(f"/admin/billing/invoices/{number}/send", data={"month": LAST_MONTH})
        assert r.status_code == 403 and sent == []
        r = http.post(f"/admin/billing/invoices/{number}/send",
                      data={"csrf": csrf, "month": LAST_MONTH})  # fmt: skip
        assert r.status_code == 200 and "an buchhaltung@mueller.example gesendet" in r.text
        assert sent == [("buchhaltung@mueller.example", sent[0][1], [f"{number}.pdf"])]
        r = http.post(f"/admin/billing/invoices/{number}/send",
                      data={"csrf": csrf, "month": LAST_MONTH})  # fmt: skip
        assert r.status_code == 200 and "erneut senden?" in r.text and len(sent) == 1
        assert 'name="confirm" value="1"' in r.text
        r = http.post(f"/admin/billing/invoices/{number}/send",
                      data={"csrf": csrf, "month": LAST_MONTH, "confirm": "1"})  # fmt: skip
        assert r.status_code == 200 and len(sent) == 2
        missing = http.post("/admin/billing/invoices/RE-0000-000000/send",
                            data={"csrf": csrf, "month": LAST_MONTH})  # fmt: skip
        assert missing.status_code == 404

        # cancelling: a confirmation first (irreversible), then the Storno
        r = http.post(f"/admin/billing/invoices/{number}/cancel",
                      data={"csrf": csrf, "month": LAST_MONTH})  # fmt: skip
        assert r.status_code == 200 and "nicht rückgängig" in r.text
        assert not handlers.invoices.get(ADMIN, number)["cancelled"]
        r = http.post(f"/admin/billing/invoices/{number}/cancel",
                      data={"csrf": csrf, "month": LAST_MONTH, "confirm": "1"})  # fmt: skip
        assert r.status_code == 200 and "storniert (Storno" in r.text
        assert handlers.invoices.get(ADMIN, number)["cancelled"]
        stornos = [i for i in handlers.invoices.list(ADMIN, "mueller") if i["kind"] == "storno"]
        assert len(stornos) == 1 and stornos[0]["number"] in r.text
        r = http.post(f"/admin/billing/invoices/{number}/cancel",
                      data={"csrf": csrf, "month": LAST_MONTH, "confirm": "1"})  # fmt: skip
        assert r.status_code == 422 and "cancelled already" in r.text
        missing = http.post("/admin/billing/invoices/RE-0000-000000/cancel",
                            data={"csrf": csrf, "month": LAST_MONTH, "confirm": "1"})  # fmt: skip
        assert missing.status_code == 404


def test_the_seller_form_shows_each_problem_and_stores_nothing_on_error(office: Any) -> None:
    app, pw, handlers, _ = office
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        page = http.get("/admin/billing")
        assert 'id="seller-missing"' in page.text
        csrf = _csrf(page.text)
        bad = {**SELLER, "name": "Neuer Name", "iban": "DE00 1234", "country": "Deutschland"}
        r = http.post("/admin/billing/seller", data={"csrf": csrf, **bad})
        assert r.status_code == 422
        assert re.search(r'id="seller-iban-error">not a valid IBAN<', r.text)
        assert re.search(r'id="seller-country-error">a two-letter country code', r.text)
        assert 'value="Neuer Name"' in r.text  # the entries stay in the form
        assert handlers.billing.seller(ADMIN)["name"] == ""  # nothing stored
        too_long = {**SELLER, "name": "x" * 201}
        r = http.post("/admin/billing/seller", data={"csrf": csrf, **too_long})
        assert r.status_code == 422 and handlers.billing.seller(ADMIN)["name"] == ""
        r = http.post("/admin/billing/seller", data={"month": LAST_MONTH, **SELLER})
        assert r.status_code == 403 and handlers.billing.seller(ADMIN)["name"] == ""
        r = http.post("/admin/billing/seller", data={"csrf": csrf, **SELLER})
        assert r.status_code == 200 and "Rechnungsdaten gespeichert." in r.text
        assert 'id="seller-missing"' not in r.text
        seller = handlers.billing.seller(ADMIN)
        assert seller["missing"] == [] and seller["iban"] == "DE02120300000000202051"


def test_the_datev_export_needs_its_numbers(office: Any) -> None:
    app, pw, handlers, _ = office
    number = _run(handlers)
    issued = datetime.fromisoformat(handlers.invoices.get(ADMIN, number)["issued_at"])
    month = issued.astimezone(BERLIN).strftime("%Y-%m")
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        r = http.get("/admin/billing/datev.csv", params={"month": month})
        assert r.status_code == 422 and "Beraternummer" in r.text
        handlers.billing.set_settings(ADMIN, datev_berater=1001, datev_mandant=7)
        r = http.get("/admin/billing/datev.csv", params={"month": month})
        assert r.status_code == 200 and r.content.startswith(b'"EXTF"')
        assert number.encode() in r.content
        assert f'filename="EXTF_Buchungsstapel_{month}.csv"' in r.headers["content-disposition"]
        assert http.get("/admin/billing", params={"month": "13-2026"}).status_code == 422


def test_the_datev_form_sets_the_numbers_and_shows_each_problem(office: Any) -> None:
    app, pw, handlers, _ = office
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        page = http.get("/admin/billing")
        assert 'id="datev-missing"' in page.text
        assert 'id="datev_debtor" name="datev_debtor" value="10000"' in page.text  # SKR03
        assert 'id="datev_revenue_19" name="datev_revenue_19" value="8400"' in page.text
        csrf = _csrf(page.text)
        bad = {"datev_berater": "1000", "datev_mandant": "7", "datev_revenue_7": "83a",
               "datev_account_length": "9"}  # fmt: skip
        r = http.post("/admin/billing/datev", data={"csrf": csrf, **bad})
        assert (
            r.status_code == 422 and "Die DATEV-Einstellungen wurden nicht gespeichert." in r.text
        )
        assert re.search(r'id="datev_berater-error">the Beraternummer is a number 1001', r.text)
        assert re.search(r'id="datev_revenue_7-error">an account number', r.text)
        assert re.search(r'id="datev_account_length-error">the Sachkontenlänge', r.text)
        assert 'id="datev_mandant-error"' not in r.text and 'value="1000"' in r.text
        assert handlers.billing.settings(ADMIN)["datev_mandant"] is None  # nothing stored
        r = http.post("/admin/billing/datev", data={"datev_berater": "29098"})  # no token
        assert r.status_code == 403 and handlers.billing.settings(ADMIN)["datev_berater"] is None
        good = {"datev_berater": "29098", "datev_mandant": "55003", "datev_revenue_7": "8310",
                "datev_festschreibung": "1"}  # fmt: skip
        r = http.post("/admin/billing/datev", data={"csrf": csrf, **good})
        assert r.status_code == 200 and "DATEV-Einstellungen gespeichert." in r.text
        assert 'id="datev-missing"' not in r.text
        s = handlers.billing.settings(ADMIN)
        assert (s["datev_berater"], s["datev_mandant"], s["datev_revenue_7"]) == (
            29098, 55003, "8310")  # fmt: skip
        assert (s["datev_festschreibung"], s["datev_revenue_19"]) == (True, "8400")
        # an empty field stays as stored; the unticked box turns the Festschreibung off
        r = http.post("/admin/billing/datev", data={"csrf": csrf, "datev_berater": ""})
        s = handlers.billing.settings(ADMIN)
        assert (s["datev_berater"], s["datev_festschreibung"]) == (29098, False)
    with TestClient(app()) as http:  # not an admin: not found, nothing stored
        _login(http, "anna", pw["anna"])
        csrf = _csrf(http.get("/portal/billing").text)
        r = http.post("/admin/billing/datev", data={"csrf": csrf, "datev_berater": "1001"})
        assert r.status_code == 404 and handlers.billing.settings(ADMIN)["datev_berater"] == 29098


def test_an_employee_sees_the_business_s_billing_but_nothing_else(office: Any) -> None:
    app, _, handlers, _ = office
    number = _run(handlers)
    store = handlers.billing.store
    accounts.add_user(store, REALM, "lehrling", "Hobelbank-Lehrjahr-1", "employee")
    store.user_update("lehrling", client="mueller")
    with TestClient(app()) as http:
        _login(http, "lehrling", "Hobelbank-Lehrjahr-1")
        page = http.get("/portal/billing")
        assert page.status_code == 200 and number in page.text and "Angenommener Anruf" in page.text
        pdf = http.get(f"/portal/billing/invoices/{number}/pdf")
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
        assert http.get("/portal/billing", params={"client": "schulz"}).status_code == 404
        assert http.get("/admin/billing").status_code == 404


def test_the_seller_api_lists_every_refused_field_and_stores_none(office: Any) -> None:
    app, pw, handlers, _ = office
    with TestClient(app()) as http:
        bad = {**SELLER, "iban": "DE00 1234", "country": "Deutschland", "email": "nope"}
        r = http.patch("/api/billing/seller", json=bad, auth=("admin", pw["admin"]))
        assert r.status_code == 422, r.text
        fields = sorted(p["field"] for p in r.json()["detail"])
        assert fields == ["body.country", "body.email", "body.iban"]
        assert handlers.billing.seller(ADMIN)["name"] == ""


# -- one client's invoice recipient and tariff (/admin/billing/clients/ID) --------------------

BUYER = {"name": "Stadtwerke Musterstadt", "street": "Rathausplatz 1", "postcode": "12345",
         "city": "Musterstadt", "country": "de", "vat_id": "DE123456789",
         "leitweg_id": "991-12345-06", "email": "rechnung@stadtwerke.example"}  # fmt: skip


def test_the_admin_sets_a_clients_invoice_recipient_and_nothing_on_error(office: Any) -> None:
    app, pw, handlers, _ = office
    before = handlers.billing.buyer(ADMIN, "mueller")
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        assert "/admin/billing/clients/mueller" in http.get("/admin/billing").text
        assert "/admin/billing/clients/mueller" in http.get("/admin/clients/mueller").text
        page = http.get("/admin/billing/clients/mueller")
        assert page.status_code == 200 and "Tischlerei Müller" in page.text
        assert 'value="buchhaltung@mueller.example"' in page.text
        http.cookies.set("hb_lang", "en")
        en = http.get("/admin/billing/clients/mueller").text
        assert "Invoice recipient" in en and "Assign tariff" in en and "Valid from" in en
        http.cookies.set("hb_lang", "de")
        csrf = _csrf(page.text)
        url = "/admin/billing/clients/mueller/buyer"
        # every refused field at its field; the entries stay; nothing is stored
        bad = {**BUYER, "email": "kein-at", "country": "Deutschland", "street": "",
               "name": "x" * 201}  # fmt: skip
        r = http.post(url, data={"csrf": csrf, **bad})
        assert r.status_code == 422
        assert re.search(r'id="buyer-email-error">an e-mail address<', r.text)
        assert re.search(r'id="buyer-country-error">a two-letter country code', r.text)
        assert re.search(r'id="buyer-name-error">at most 200 characters', r.text)
        assert re.search(r'id="buyer-street-error">an XRechnung buyer', r.text)  # Leitweg-ID
        assert 'value="991-12345-06"' in r.text and "nicht gespeichert" in r.text
        assert handlers.billing.buyer(ADMIN, "mueller") == before
        # no token, a wrong token, a form too large to read: refused, nothing stored
        assert http.post(url, data=BUYER).status_code == 403
        assert http.post(url, data={"csrf": "x" * 43, **BUYER}).status_code == 403
        huge = http.post(url, data={"csrf": csrf, **BUYER, "city": "x" * 20_000})
        assert huge.status_code == 403
        assert handlers.billing.buyer(ADMIN, "mueller") == before
        # saved: back on the page with the stored values
        r = http.post(url, data={"csrf": csrf, **BUYER})
        assert r.status_code == 200 and "Rechnungsempfänger gespeichert." in r.text
        stored = handlers.billing.buyer(ADMIN, "mueller")
        assert stored == {**BUYER, "country": "DE"}
        assert 'value="Stadtwerke Musterstadt"' in r.text and 'id="buyer-missing"' not in r.text
        # an empty field clears it (the name falls back to the client's name)
        r = http.post(url, data={"csrf": csrf, **BUYER, "leitweg_id": "", "vat_id": ""})
        assert r.status_code == 200 and handlers.billing.buyer(ADMIN, "mueller")["vat_id"] == ""


def test_the_admin_assigns_a_tariff_but_never_in_an_invoiced_month(office: Any) -> None:
    app, pw, handlers, _ = office
    number = _run(handlers)  # last month is invoiced
    handlers.billing.put_tariff(ADMIN, {**TARIFF, "name": "Handwerk M", "base_fee": "4900"})
    first = NOW.astimezone(BERLIN).date().replace(day=1)
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        page = http.get("/admin/billing/clients/mueller")
        assert "Aktueller Tarif: Handwerk S (seit 01.01.2020)" in page.text
        assert '<option value="Handwerk M">' in page.text
        csrf = _csrf(page.text)
        url = "/admin/billing/clients/mueller/tariff"
        # a month already invoiced never changes: the handler's refusal, at the date
        r = http.post(url, data={"csrf": csrf, "tariff": "Handwerk M",
                                 "valid_from": LAST_DAY.replace(day=1).isoformat()})  # fmt: skip
        assert r.status_code == 409
        assert re.search(rf'id="assign-valid_from-error">[^<]*{number}', r.text)
        assert len(handlers.billing.client_tariffs(ADMIN, "mueller")) == 1
        # no date, no such tariff, no token
        r = http.post(url, data={"csrf": csrf, "tariff": "Handwerk M", "valid_from": "morgen"})
        assert r.status_code == 422 and 'id="assign-valid_from-error"' in r.text
        r = http.post(url, data={"csrf": csrf, "tariff": "Gold" * 100,
                                 "valid_from": first.isoformat()})  # fmt: skip
        assert r.status_code == 422 and 'id="assign-tariff-error">no such tariff' in r.text
        r = http.post(url, data={"tariff": "Handwerk M", "valid_from": first.isoformat()})
        assert r.status_code == 403
        assert len(handlers.billing.client_tariffs(ADMIN, "mueller")) == 1
        # this month (not invoiced): assigned; this month's usage is rated again at once
        r = http.post(url, data={"csrf": csrf, "tariff": "Handwerk M",
                                 "valid_from": first.isoformat()})  # fmt: skip
        assert r.status_code == 200 and "Tarif Handwerk M ab" in r.text
        assert f"Aktueller Tarif: Handwerk M (seit {first:%d.%m.%Y})" in r.text
        history = re.findall(r"<tr(?: class=\"current\")?><td>([0-9.]+)</td><td>([^<]+)<",
                             r.text)  # fmt: skip
        assert history == [(f"{first:%d.%m.%Y}", "Handwerk M "), ("01.01.2020", "Handwerk S")]
        names = [a["tariff"]["name"] for a in handlers.billing.client_tariffs(ADMIN, "mueller")]
        assert names == ["Handwerk S", "Handwerk M"]
        assert handlers.billing.usage(ADMIN, "mueller")["tariff"] == "Handwerk M"
        # once cancelled, the month is open again
        handlers.invoices.cancel(ADMIN, number)
        r = http.post(url, data={"csrf": csrf, "tariff": "Handwerk M",
                                 "valid_from": LAST_DAY.replace(day=1).isoformat()})  # fmt: skip
        assert r.status_code == 200 and len(handlers.billing.client_tariffs(ADMIN, "mueller")) == 3


def test_the_client_billing_page_is_the_admins_only(office: Any) -> None:
    app, pw, handlers, _ = office
    before = (handlers.billing.buyer(ADMIN, "mueller"),
              handlers.billing.client_tariffs(ADMIN, "mueller"))  # fmt: skip
    for name in ("anna", "mueller", "schulz"):
        with TestClient(app()) as http:
            _login(http, name, pw[name])
            csrf = _csrf(http.get("/portal/billing" if name != "anna" else "/console").text)
            assert http.get("/admin/billing/clients/mueller").status_code == 404, name
            r = http.post("/admin/billing/clients/mueller/buyer",
                          data={"csrf": csrf, **BUYER})  # fmt: skip
            assert r.status_code == 404 and "Diese Seite gibt es nicht" in r.text, name
            r = http.post("/admin/billing/clients/mueller/tariff",
                          data={"csrf": csrf, "tariff": "Handwerk S",
                                "valid_from": "2026-01-01"})  # fmt: skip
            assert r.status_code == 404, name
    with TestClient(app()) as http:  # the admin: an id that does not exist is not found
        _login(http, "admin", pw["admin"])
        csrf = _csrf(http.get("/admin/billing").text)
        for cid in ("nobody", "x" * 300, "mueller%2F..%2Fschulz"):
            assert http.get(f"/admin/billing/clients/{cid}").status_code == 404, cid
            r = http.post(f"/admin/billing/clients/{cid}/buyer", data={"csrf": csrf, **BUYER})
            assert r.status_code == 404, cid
            r = http.post(f"/admin/billing/clients/{cid}/tariff",
                          data={"csrf": csrf, "tariff": "Handwerk S",
                                "valid_from": "2026-01-01"})  # fmt: skip
            assert r.status_code == 404, cid
    with TestClient(app()) as anon:
        r = anon.get("/admin/billing/clients/mueller", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
    assert (handlers.billing.buyer(ADMIN, "mueller"),
            handlers.billing.client_tariffs(ADMIN, "mueller")) == before  # fmt: skip


def test_the_portal_page_follows_the_event_stream_not_a_timer(office: Any) -> None:
    app, pw, _, _ = office
    with TestClient(app()) as http:
        _login(http, "mueller", pw["mueller"])
        page = http.get("/portal/billing")
        assert 'data-client="mueller"' in page.text and f'data-month="{THIS_MONTH}"' in page.text
        js = http.get("/static/billing.js").text
        assert 'new EventSource("/events")' in js and '"usage"' in js
        assert "every = 20000" not in js
        assert '"until" in d' in js  # a recompute covers its month, a tariff every later one
        # an earlier month follows too (a tariff assigned or a month recomputed changes it)
        page = http.get("/portal/billing", params={"month": "2020-01"})
        assert 'data-month="2020-01" data-live="1"' in page.text
    with TestClient(app()) as http:  # the provider's page: every client's usage of its month
        _login(http, "admin", pw["admin"])
        page = http.get("/admin/billing", params={"month": "2020-01"})
        assert 'id="usage" data-client="" data-month="2020-01" data-live="1"' in page.text
        assert '<script src="/static/billing.js"' in page.text


# -- the live usage: a business's users' streams get their own client's usage only -----------


def test_usage_reaches_the_own_clients_streams_and_staff_only(tmp_path: Path) -> None:
    import asyncio

    from heimbuero.app.billing import Billing
    from heimbuero.events import CallNoteTaken, EventBus, UsageMetered
    from heimbuero.web.console.feeds import Feeds

    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    try:
        seed_demo(store, REALM)
        bus = EventBus()
        handlers = App.build(store, lambda: REALM,
                             usage_watch=lambda fn: bus.subscribe(UsageMetered, fn))  # fmt: skip
        handlers.billing.put_tariff(ADMIN, {**TARIFF, "per_note": "50"})
        for client in ("mueller", "schulz"):
            handlers.billing.assign(ADMIN, client, "Handwerk S", date(2020, 1, 1))
        meter = Billing(store, events=bus)  # as the server's: publishes after its commits
        feeds = Feeds(handlers)
        mueller = Actor("mueller", Role.CLIENT, "mueller")
        schulz = Actor("schulz", Role.CLIENT, "schulz")
        anna = Actor("anna", Role.AGENT)

        async def first_usage(actor: Actor, stopping: asyncio.Event) -> dict[str, Any]:
            async def connected() -> bool:
                return False

            stream = feeds.stream(actor, "", connected, stopping)
            assert stream is not None
            async for frame in stream:
                if frame.startswith("id:") and "event: usage\n" in frame:
                    data: dict[str, Any] = json.loads(frame.split("data: ")[1])
                    await stream.aclose()
                    return data
            raise AssertionError("the stream ended")

        async def scenario() -> list[dict[str, Any]]:
            stopping = asyncio.Event()
            readers = [asyncio.ensure_future(first_usage(a, stopping))
                       for a in (mueller, schulz, anna)]  # fmt: skip
            await asyncio.sleep(0.1)  # (the streams are open)
            when = NOW.timestamp()
            meter.on_note(CallNoteTaken(when, "mueller", 901, "anna", None))
            # then one of schulz's own: schulz's stream must give that one first
            meter.on_note(CallNoteTaken(when, "schulz", 902, "anna", None))
            got = await asyncio.wait_for(asyncio.gather(*readers), 30)
            stopping.set()
            return list(got)

        got_mueller, got_schulz, got_anna = asyncio.run(scenario())
        assert got_mueller == {"client": "mueller", "month": THIS_MONTH, "lines": 1}
        assert got_schulz == {"client": "schulz", "month": THIS_MONTH, "lines": 1}
        assert got_anna["client"] == "mueller"  # staff: every client's
        seen = {a: [d["client"] for _, e, d in feeds.feeds[a].buffer if e == "usage"]
                for a in ("mueller", "schulz", "anna")}  # fmt: skip
        assert seen == {"mueller": ["mueller"], "schulz": ["schulz"],
                        "anna": ["mueller", "schulz"]}  # fmt: skip
        # a user of no business follows nothing
        with pytest.raises(Exception, match="staff and a client's users"):
            handlers.billing.watch(Actor("x", Role.EMPLOYEE, None), lambda d: None)
    finally:
        store.close()


# -- the authorization sweep of the billing API: another business's ids on every route -------


def test_every_billing_route_refuses_another_business_and_leaks_nothing(office: Any) -> None:
    """Every /api/billing route of the OpenAPI document, each method, called by schulz's
    owner with Tischlerei Müller's client id and invoice number (and by an id too long to
    exist): refused (403/404) or, where a route lists the reader's own, nothing of Müller's
    in the answer; nothing changed afterwards."""
    app, pw, handlers, _ = office
    number = _run(handlers)
    before = (handlers.invoices.get(ADMIN, number), handlers.billing.settings(ADMIN),
              handlers.billing.client_tariffs(ADMIN, "mueller"),
              handlers.billing.buyer(ADMIN, "mueller"), handlers.billing.seller(ADMIN))  # fmt: skip
    secret = ("buchhaltung@mueller.example", number, str(before[0]["gross"]))
    bodies: dict[str, Any] = {
        "put": {"name": "Handwerk S", "base_fee": "1"},
        "patch": {"email": "x@evil.example", "datev_berater": 1001, "name": "X"},
        "post": {"tariff": "Handwerk S", "valid_from": "2020-01-01"},
    }
    with TestClient(app()) as http:
        spec = http.get("/api/openapi.json").json()
        routes = [(path, method) for path, ops in spec["paths"].items()
                  if path.startswith("/api/billing") for method in ops]  # fmt: skip
        assert len(routes) >= 20, routes
        schulz = ("schulz", pw["schulz"])
        for client in ("mueller", "x" * 300):
            for path, method in routes:
                url = path.replace("{client}", client).replace("{number}", number)
                r = http.request(method.upper(), url, params={"month": LAST_MONTH},
                                 json=bodies.get(method), auth=schulz)  # fmt: skip
                what = f"{method.upper()} {url[:60]}"
                if r.status_code < 400:  # a list of the reader's own: none of Müller's
                    assert method == "get" and "{" not in path, (what, r.status_code)
                    assert not any(s in r.text for s in secret), what
                else:
                    assert r.status_code in (403, 404), (what, r.status_code, r.text)
    after = (handlers.invoices.get(ADMIN, number), handlers.billing.settings(ADMIN),
             handlers.billing.client_tariffs(ADMIN, "mueller"),
             handlers.billing.buyer(ADMIN, "mueller"), handlers.billing.seller(ADMIN))  # fmt: skip
    assert after == before
