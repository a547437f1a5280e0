"""E-invoices end to end: the real `heimbuero serve` with the demo office. The admin sets a
tariff and the provider's invoice data over the HTTP API (a run refuses with 422 before), runs
last month's invoices, and the client's owner downloads the PDF/A-3 and the XML: the XML
embedded in the PDF is the one the API serves. Another business's user gets 404 for both; the
admin reads them and the month's DATEV-style booking lines."""

from __future__ import annotations

import contextlib
import csv
import io
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import facturx
import httpx
import pytest

from tests.billing_data import SELLER

from .harness import Server

pytestmark = pytest.mark.e2e

TARIFF = {"name": "Handwerk S", "base_fee": "2900", "per_answered_call": "85"}


def test_the_owner_downloads_the_invoice_pdf_another_client_cannot(tmp_path: Path) -> None:
    server = Server(tmp_path / "server", demo=True, http=True)
    server.prepare()
    pw = server.demo_passwords
    today = datetime.now(ZoneInfo("Europe/Berlin")).date()
    last_month = (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)

        def client(user: str) -> httpx.Client:
            return stack.enter_context(
                httpx.Client(base_url=server.http_url, auth=(user, pw[user]), timeout=30)
            )

        admin, owner, other = client("admin"), client("mueller"), client("schulz")
        assert admin.put("/api/billing/tariffs", json=TARIFF).status_code == 200
        r = admin.post("/api/billing/clients/mueller/tariffs",
                       json={"tariff": "Handwerk S", "valid_from": "2020-01-01"})  # fmt: skip
        assert r.status_code == 204, r.text
        r = admin.post("/api/billing/invoices/run", params={"month": last_month})
        assert r.status_code == 422 and "invoice data is incomplete" in r.text, r.text
        assert owner.patch("/api/billing/seller", json=SELLER).status_code == 403
        r = admin.patch("/api/billing/seller", json={**SELLER, "iban": "DE00 1234"})
        assert r.status_code == 422, r.text
        r = admin.patch("/api/billing/seller", json=SELLER)
        assert r.status_code == 200 and r.json()["missing"] == [], r.text
        address = {"street": "Gartenweg 2", "postcode": "80333", "city": "München"}
        r = admin.patch("/api/billing/clients/mueller/buyer", json=address)
        assert r.status_code == 200, r.text
        assert owner.get("/api/billing/clients/mueller/buyer").json()["city"] == "München"
        assert other.get("/api/billing/clients/mueller/buyer").status_code == 404

        r = admin.post("/api/billing/invoices/run", params={"month": last_month})
        assert r.status_code == 200, r.text
        (inv,) = r.json()
        number = inv["number"]
        assert (inv["client"], inv["net"]) == ("mueller", 2900)

        pdf = owner.get(f"/api/billing/invoices/{number}/pdf")
        assert pdf.status_code == 200, pdf.text
        assert pdf.headers["content-type"] == "application/pdf"
        assert f'filename="{number}.pdf"' in pdf.headers["content-disposition"]
        assert pdf.content.startswith(b"%PDF-")
        xml = owner.get(f"/api/billing/invoices/{number}/xml")
        assert xml.status_code == 200 and xml.headers["content-type"].startswith("application/xml")
        name, embedded = facturx.get_xml_from_pdf(pdf.content, check_xsd=True)
        assert name == "factur-x.xml" and embedded == xml.content
        assert b"<ram:GrandTotalAmount>34.51</ram:GrandTotalAmount>" in xml.content

        # another business: exactly like an invoice that does not exist
        for kind in ("pdf", "xml"):
            assert other.get(f"/api/billing/invoices/{number}/{kind}").status_code == 404
            assert other.get(f"/api/billing/invoices/RE-0000-000000/{kind}").status_code == 404
            assert admin.get(f"/api/billing/invoices/{number}/{kind}").status_code == 200
        assert httpx.get(f"{server.http_url}/api/billing/invoices/{number}/pdf").status_code == 401

        # the tax advisor's booking lines of the month the invoice was issued in
        issued = datetime.fromisoformat(inv["issued_at"]).astimezone(ZoneInfo("Europe/Berlin"))
        params = {"month": issued.strftime("%Y-%m")}
        assert owner.get("/api/billing/datev.csv", params=params).status_code == 403
        r = admin.get("/api/billing/datev.csv", params=params)
        assert r.status_code == 422 and "Beraternummer" in r.text, r.text
        numbers = {"datev_berater": 1001, "datev_mandant": 7}
        assert admin.patch("/api/billing/settings", json={"datev_mandant": 0}).status_code == 422
        assert admin.patch("/api/billing/settings", json=numbers).status_code == 200
        r = admin.get("/api/billing/datev.csv", params=params)
        assert r.status_code == 200, r.text
        extf, _columns, row = csv.reader(io.StringIO(r.content.decode("cp1252"), newline=""),
                                         delimiter=";")  # fmt: skip
        assert extf[:5] + extf[10:12] == ["EXTF", "700", "21", "Buchungsstapel", "13", "1001", "7"]
        assert row[:11] == ["34,51", "S", "EUR", "", "", "", "10000", "8400", "",
                            issued.strftime("%d%m"), number]  # fmt: skip
