"""The console's billing pages (FastAPI TestClient, real SQLite store, demo office): the
portal's usage and invoices of one's own business (German amounts, a month picker, the PDF and
XML through the session), another business's ids as "not found", the admin's month (usage per
client, CSV, run, send, cancel with their confirmation steps, DATEV, the seller form), and
every POST's CSRF token."""

from __future__ import annotations

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
        assert f'filename="datev-{month}.csv"' in r.headers["content-disposition"]
        assert http.get("/admin/billing", params={"month": "13-2026"}).status_code == 422


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
