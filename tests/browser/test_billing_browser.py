"""The billing pages in a real browser (chromium via Playwright) on a phone-sized screen against
the real `heimbuero serve` with the demo office: the admin gives Tischlerei Müller its invoice
recipient (a wrong e-mail first: shown at its field, nothing stored) and its tariff through the
client's billing page, saves the provider's invoice data through the form (a wrong IBAN first),
runs last month's invoices (one call of Tischlerei Müller last month), sees the invoice and
downloads its PDF; a tariff from a day of that invoiced month is then refused with the reason
at the date. The owner sees the same invoice and this month's usage (a call note taken by an
agent), which follows a second note and then a new tariff the admin assigns without reload
over the console's event stream, while the open page of another business (Schulz) gets no
event of either."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import expect

from heimbuero.store import Store
from tests.billing_data import SELLER
from tests.e2e.harness import Server, wait_until

from .conftest import login

pytestmark = [pytest.mark.e2e]

SHOTS = os.environ.get("HEIMBUERO_SCREENSHOTS", "")
BERLIN = ZoneInfo("Europe/Berlin")
TARIFF = {"name": "Handwerk S", "base_fee": "2900", "per_answered_call": "85",
          "per_talk_unit": "20", "increment": "60/60", "per_note": "50"}  # fmt: skip
LABELS = {"name": "Name", "street": "Straße", "postcode": "Postleitzahl", "city": "Ort",
          "country": "Land (zwei Buchstaben, z. B. DE)", "vat_id": "USt-IdNr.",
          "iban": "IBAN", "bic": "BIC", "contact": "Ansprechpartner", "email": "E-Mail",
          "phone": "Telefon"}  # fmt: skip


BUYER = {"Name": "Tischlerei Müller GmbH", "Straße": "Hobelweg 3", "Postleitzahl": "80331",
         "Ort": "München", "E-Mail für Rechnungen": "buchhaltung@mueller.example"}  # fmt: skip
WAIT = 30_000  # ms an expectation may wait (a run builds PDFs; the machine may be busy)


def _fits(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


def test_admin_invoices_a_month_and_the_owner_sees_it(browser: Any, tmp_path: Path) -> None:
    today = datetime.now(BERLIN).date()
    last_day = today.replace(day=1) - timedelta(days=1)
    last_month = last_day.strftime("%Y-%m")
    srv = Server(tmp_path / "server", demo=True, http=True)
    srv.prepare()
    # last month: one answered call of Tischlerei Müller (90 s: two talk units), as the
    # server's call records keep it; the run rates it
    store = Store(srv.database_url or f"sqlite:///{srv.data_dir / 'heimbuero.db'}")
    try:
        at = datetime(last_day.year, last_day.month, last_day.day, 9, 0, tzinfo=UTC)
        rid = store.add_call_record("lastmonth-1", "+49891234567", "+4930999", at, "mueller")
        store.update_call_record(rid, answered_by="user:anna", talk_seconds=90.0,
                                 result="answered")  # fmt: skip
    finally:
        store.close()
    with srv, httpx.Client(base_url=srv.http_url, auth=("admin", srv.users["admin"]),
                           timeout=30) as api:  # fmt: skip
        assert api.put("/api/billing/tariffs", json=TARIFF).status_code == 200
        # this month: a call note an agent takes for the business (0,50 € once it has a tariff)
        r = httpx.post(f"{srv.http_url}/api/notes", auth=("anna", srv.users["anna"]),
                       json={"client": "mueller", "caller_name": "Frau Berg",
                             "text": "Bitte um Rückruf"}, timeout=30)  # fmt: skip
        assert r.status_code == 201, r.text

        context = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 900},
                                      accept_downloads=True)  # fmt: skip
        context.set_default_timeout(WAIT)
        page = context.new_page()
        login(page, srv, "admin")
        page.get_by_role("link", name="Abrechnung").click()
        page.wait_for_url(re.compile(r"/admin/billing$"))

        # the client's invoice recipient: a wrong e-mail is shown at its field, nothing stored
        page.locator("#billing-clients").get_by_role("link", name="Tischlerei Müller").click()
        page.wait_for_url(re.compile(r"/admin/billing/clients/mueller$"))
        expect(page.locator("#tariff-current")).to_have_text(
            "Kein Tarif in Kraft: es wird nichts abgerechnet.", timeout=WAIT
        )
        _fits(page)
        for label, value in BUYER.items():
            page.get_by_label(label, exact=True).fill(value)
        page.get_by_label("E-Mail für Rechnungen", exact=True).fill("buchhaltung")
        page.get_by_role("button", name="Rechnungsempfänger speichern").click()
        expect(page.locator("#buyer-email-error")).to_have_text("an e-mail address", timeout=WAIT)
        assert api.get("/api/billing/clients/mueller/buyer").json()["street"] == ""
        _fits(page)
        page.get_by_label("E-Mail für Rechnungen", exact=True).fill(BUYER["E-Mail für Rechnungen"])
        page.get_by_role("button", name="Rechnungsempfänger speichern").click()
        expect(page.get_by_role("status")).to_have_text("Rechnungsempfänger gespeichert.",
                                                        timeout=WAIT)  # fmt: skip
        buyer = api.get("/api/billing/clients/mueller/buyer").json()
        assert (buyer["street"], buyer["email"]) == ("Hobelweg 3", "buchhaltung@mueller.example")
        # its tariff, from long ago: the call and the note are rated under it at once
        page.get_by_label("Tarifvorlage").select_option("Handwerk S")
        page.get_by_label("Gültig ab").fill("2020-01-01")
        page.get_by_role("button", name="Tarif zuweisen").click()
        expect(page.get_by_role("status")).to_have_text(
            "Tarif Handwerk S ab 01.01.2020 zugewiesen.", timeout=WAIT
        )
        expect(page.locator("#tariff-current")).to_have_text(
            "Aktueller Tarif: Handwerk S (seit 01.01.2020)", timeout=WAIT
        )
        expect(page.locator("#tariff-history")).to_contain_text("Handwerk S", timeout=WAIT)
        (assigned,) = api.get("/api/billing/clients/mueller/tariffs").json()
        assert assigned["valid_from"] == "2020-01-01"
        _fits(page)
        # the server rates call records in its persistence round (about a second after they
        # end, here: after its start); the page shows usage once it is rated
        wait_until(
            lambda: api.get("/api/billing/usage", params={"month": last_month}).json().get(
                "mueller"
            ),
            10, interval=0.2, what="last month's call rated",
        )  # fmt: skip
        page.get_by_role("link", name="Zurück").click()
        page.wait_for_url(re.compile(r"/admin/billing$"))
        expect(page.locator("#month")).to_have_value(last_month, timeout=WAIT)
        expect(page.locator("#provider-usage")).to_contain_text("Tischlerei Müller", timeout=WAIT)
        _fits(page)

        # the provider's data: a wrong IBAN is shown at its field, nothing is stored
        for field, label in LABELS.items():
            page.get_by_label(label, exact=True).fill(SELLER[field])
        page.get_by_label("IBAN", exact=True).fill("DE00 1234")
        page.get_by_role("button", name="Rechnungsdaten speichern").click()
        expect(page.locator("#seller-iban-error")).to_have_text("not a valid IBAN", timeout=WAIT)
        assert api.get("/api/billing/seller").json()["name"] == ""
        _fits(page)
        page.get_by_label("IBAN", exact=True).fill(SELLER["iban"])
        page.get_by_role("button", name="Rechnungsdaten speichern").click()
        expect(page.get_by_role("status")).to_have_text("Rechnungsdaten gespeichert.", timeout=WAIT)
        assert api.get("/api/billing/seller").json()["missing"] == []

        # the run, after its confirmation
        page.get_by_role("button", name=f"Rechnungen für {last_month} erstellen").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(
            f"Rechnungen für {last_month} erstellen?", timeout=WAIT
        )
        _fits(page)
        page.get_by_role("button", name="Rechnungen erstellen").click()
        expect(page.get_by_role("status")).to_have_text("1 Rechnung erstellt.", timeout=WAIT)
        (inv,) = api.get("/api/billing/invoices").json()
        number = inv["number"]
        assert inv["gross"] == round((2900 + 85 + 2 * 20) * 1.19)  # 36,00 €
        row = page.locator(f'#invoices tr[data-number="{number}"]')
        expect(row).to_contain_text("36,00\xa0€", timeout=WAIT)
        expect(row).to_contain_text("ausgestellt", timeout=WAIT)
        _fits(page)
        if SHOTS:
            page.screenshot(path=str(Path(SHOTS) / "console-billing-admin.png"), full_page=True)
        with page.expect_download() as got:
            row.get_by_role("link", name="PDF").click()
        pdf = Path(got.value.path()).read_bytes()
        assert pdf.startswith(b"%PDF-") and got.value.suggested_filename == f"{number}.pdf"
        # last month is invoiced now: a tariff from one of its days is refused, with the reason
        page.goto(f"{srv.http_url}/admin/billing/clients/mueller")
        page.get_by_label("Gültig ab").fill(last_day.isoformat())
        page.get_by_role("button", name="Tarif zuweisen").click()
        expect(page.locator("#assign-valid_from-error")).to_contain_text(number, timeout=WAIT)
        assert len(api.get("/api/billing/clients/mueller/tariffs").json()) == 1
        page.get_by_role("button", name="Abmelden").click()
        page.wait_for_url(re.compile(r"/$"))

        # the owner: the same invoice, and this month's call note as usage
        login(page, srv, "mueller")
        page.get_by_role("link", name="Verbrauch und Rechnungen").click()
        page.wait_for_url(re.compile(r"/portal/billing$"))
        expect(page.locator("#usage-lines")).to_contain_text("Telefonnotiz", timeout=WAIT)
        expect(page.locator("#usage-lines")).to_contain_text("0,50\xa0€", timeout=WAIT)
        # base fee + the note
        expect(page.locator("#total-net")).to_have_text("29,50\xa0€", timeout=WAIT)
        mine = page.locator(f'#invoices tr[data-number="{number}"]')
        expect(mine).to_contain_text("36,00\xa0€", timeout=WAIT)
        _fits(page)
        if SHOTS:
            page.screenshot(path=str(Path(SHOTS) / "console-billing-portal.png"), full_page=True)
        with page.expect_download() as got:
            mine.get_by_role("link", name="PDF").click()
        assert Path(got.value.path()).read_bytes() == pdf
        # another business's owner has its billing page open too, on its own stream
        other = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 900})
        other.set_default_timeout(WAIT)
        schulz = other.new_page()
        login(schulz, srv, "schulz")
        schulz.goto(f"{srv.http_url}/portal/billing")
        root = "html[data-usage-stream=open]"
        expect(schulz.locator(root)).to_have_count(1, timeout=WAIT)
        # a second note while the page is open: the usage follows without reload, carried by
        # the event stream (the page has no timer while its stream is open)
        expect(page.locator(root)).to_have_count(1, timeout=WAIT)
        r = httpx.post(f"{srv.http_url}/api/notes", auth=("anna", srv.users["anna"]),
                       json={"client": "mueller", "text": "Noch ein Anruf"},
                       timeout=30)  # fmt: skip
        assert r.status_code == 201, r.text
        expect(page.locator("#total-net")).to_have_text("30,00\xa0€", timeout=WAIT)
        assert page.locator("#usage-lines tbody tr").count() == 2
        assert page.evaluate("document.documentElement.dataset.usageEvents") == "1"
        # the admin assigns another tariff from the first of this month (the API, as the
        # client's billing page does): the open page follows it too (UsageRecomputed)
        r = api.put(
            "/api/billing/tariffs",
            json={**TARIFF, "name": "Handwerk M", "base_fee": "3900", "per_note": "100"},
        )
        assert r.status_code == 200, r.text
        r = api.post(
            "/api/billing/clients/mueller/tariffs",
            json={"tariff": "Handwerk M", "valid_from": today.replace(day=1).isoformat()},
        )
        assert r.status_code == 204, r.text
        expect(page.locator("#total-net")).to_have_text("41,00\xa0€", timeout=WAIT)
        expect(page.locator("#usage")).to_contain_text("Tarif: Handwerk M", timeout=WAIT)
        assert page.evaluate("document.documentElement.dataset.usageEvents") == "2"
        # Schulz's stream got nothing of either (both streams are fed in the same dispatch)
        assert schulz.evaluate("document.documentElement.dataset.usageEvents") is None
        assert schulz.evaluate("document.documentElement.dataset.usageStream") == "open"
        other.close()
        # an earlier month through the picker: last month's call
        page.locator("#month").fill(last_month)
        page.get_by_role("button", name="Anzeigen").click()
        expect(page.locator("#usage-lines")).to_contain_text("Angenommener Anruf", timeout=WAIT)
        context.close()
