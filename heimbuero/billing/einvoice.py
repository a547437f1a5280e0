"""E-invoices: the EN 16931 CII XML of an issued invoice (Factur-X/ZUGFeRD profile EN 16931, or
XRechnung 3.0 for a public-sector buyer with a Leitweg-ID), built with `drafthorse`, and the
visible PDF (fpdf2) made a PDF/A-3 with that XML embedded by `factur-x`.

Pure: everything comes from the invoice's stored `doc` (lines, VAT, the seller and buyer as
they were at issue), so the same invoice always gives the same XML. Amounts are integer cents
and Decimal; the XML carries euros with two decimals, unit prices as exact as the tariff's
(1.5 ct = 0.015 €).

A cancellation invoice (Storno, doc["cancels"] = the original's number) is a credit note, type
code 381: its quantities and amounts are *positive* (the type code says the money goes back
to the buyer), and it refers to the original invoice (BG-3, BT-25) in a note and in the
preceding-invoice reference. The store keeps a Storno's amounts negative (so sums over
invoices net out); the documents flip them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from heimbuero.fonts import font_file

FACTURX_EN16931 = "urn:cen.eu:en16931:2017"
XRECHNUNG_3 = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
BUSINESS_PROCESS = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
INVOICE, CREDIT_NOTE = "380", "381"
PAYMENT_DAYS = 14

SELLER_FIELDS = (
    "name", "street", "postcode", "city", "country", "vat_id", "tax_number", "iban", "bic",
    "contact", "email", "phone",
)  # fmt: skip
SELLER_REQUIRED = ("name", "street", "postcode", "city", "country", "iban", "email", "phone")
BUYER_FIELDS = ("name", "street", "postcode", "city", "country", "vat_id", "leitweg_id", "email")
UNITS = {"dictation_minutes": "MIN"}  # UN/ECE rec. 20 unit codes; the rest C62 (one)


class EInvoiceError(Exception):
    """The invoice cannot be made into an e-invoice (missing party data)."""


def missing_seller(seller: dict[str, str]) -> list[str]:
    """The seller fields EN 16931 (and the BR-DE rules) need that are empty; a VAT ID or a
    tax number is needed (one of them)."""
    missing = [f for f in SELLER_REQUIRED if not str(seller.get(f) or "").strip()]
    if not (seller.get("vat_id") or "").strip() and not (seller.get("tax_number") or "").strip():
        missing.append("vat_id or tax_number")
    return missing


def missing_buyer(buyer: dict[str, str]) -> list[str]:
    """The buyer fields needed: name and country (EN 16931), and for XRechnung (a Leitweg-ID)
    also street, postcode and city (BR-DE-3, BR-DE-4)."""
    need = ["name", "country"]
    if buyer.get("leitweg_id"):
        need += ["street", "postcode", "city"]
    return [f for f in need if not str(buyer.get(f) or "").strip()]


def is_xrechnung(doc: dict[str, Any]) -> bool:
    return bool((doc.get("buyer") or {}).get("leitweg_id"))


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    kind: str
    quantity: Decimal
    unit_price: Decimal  # cents, may have fractions
    vat_rate: Decimal
    net: int  # cents


@dataclass(frozen=True, slots=True)
class EInvoice:
    """What the documents say: an invoice or credit note with positive amounts."""

    number: str
    type_code: str
    issued: date
    month: str
    cancels: str | None
    seller: dict[str, str]
    buyer: dict[str, str]
    client: str
    lines: tuple[Line, ...]
    vat: tuple[tuple[Decimal, int, int], ...]  # (rate, net, vat) in cents
    net: int
    vat_total: int
    gross: int
    kleinunternehmer: bool

    @property
    def xrechnung(self) -> bool:
        return bool(self.buyer.get("leitweg_id"))

    @property
    def period(self) -> tuple[date, date]:
        first = date.fromisoformat(f"{self.month}-01")
        return first, (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)

    @property
    def due(self) -> date:
        return self.issued + timedelta(days=PAYMENT_DAYS)


def einvoice_of(number: str, kind: str, issued: datetime | date, month: str, client: str,
                doc: dict[str, Any]) -> EInvoice:  # fmt: skip
    """The e-invoice of a stored invoice (its number, kind, issue time, month and `doc`)."""
    seller = {k: str(v) for k, v in (doc.get("seller") or {}).items() if v is not None}
    buyer = {k: str(v) for k, v in (doc.get("buyer") or {}).items() if v is not None}
    if missing := missing_seller(seller):
        raise EInvoiceError(f"invoice {number}: seller data missing: {', '.join(missing)}")
    if missing := missing_buyer(buyer):
        raise EInvoiceError(f"invoice {number}: buyer data missing: {', '.join(missing)}")
    sign = -1 if kind == "storno" else 1
    lines = tuple(
        Line(ln["label"], ln["kind"], sign * Decimal(ln["quantity"]), Decimal(ln["unit_price"]),
             Decimal(ln["vat_rate"]), sign * int(ln["net"]))
        for ln in doc["lines"]
    )  # fmt: skip
    vat = tuple(
        (Decimal(v["rate"]), sign * int(v["net"]), sign * int(v["vat"])) for v in doc["vat"]
    )
    day = issued.date() if isinstance(issued, datetime) else issued
    return EInvoice(
        number=number, type_code=CREDIT_NOTE if kind == "storno" else INVOICE, issued=day,
        month=month, cancels=doc.get("cancels"), seller=seller,
        buyer=buyer, client=client, lines=lines, vat=vat, net=sign * int(doc["net"]),
        vat_total=sign * int(doc["vat_total"]), gross=sign * int(doc["gross"]),
        kleinunternehmer=bool(doc.get("kleinunternehmer")),
    )  # fmt: skip


def euro(cents: int | Decimal, places: int = 2) -> Decimal:
    """Cents as euros with `places` decimals (exact: cents never have more than 2 more)."""
    return (Decimal(cents) / 100).quantize(Decimal(1).scaleb(-places))


def _unit_price(cents: Decimal) -> Decimal:
    d = Decimal(cents) / 100
    return d.quantize(Decimal("0.01")) if d == d.quantize(Decimal("0.01")) else d.normalize()


def _category(inv: EInvoice, rate: Decimal) -> tuple[str, str | None]:
    """The VAT category code (UNTDID 5305) of a rate, and the exemption reason."""
    if inv.kleinunternehmer:
        return "E", "Kein Ausweis von Umsatzsteuer, da Kleinunternehmer gemäß § 19 UStG"
    if rate == 0:
        return "Z", None
    return "S", None


# ------------------------------------------------------------------ the CII XML


def build_xml(inv: EInvoice) -> bytes:
    """The CII XML (Factur-X EN 16931, or XRechnung 3.0 when the buyer has a Leitweg-ID)."""
    from drafthorse.models.accounting import ApplicableTradeTax  # type: ignore[import-untyped,unused-ignore]
    from drafthorse.models.document import Document  # type: ignore[import-untyped,unused-ignore]
    from drafthorse.models.note import IncludedNote  # type: ignore[import-untyped,unused-ignore]
    from drafthorse.models.party import TaxRegistration  # type: ignore[import-untyped,unused-ignore]
    from drafthorse.models.payment import PaymentMeans, PaymentTerms  # type: ignore[import-untyped,unused-ignore]
    from drafthorse.models.tradelines import LineItem  # type: ignore[import-untyped,unused-ignore]

    s, b = inv.seller, inv.buyer
    doc = Document()
    doc.context.guideline_parameter.id = XRECHNUNG_3 if inv.xrechnung else FACTURX_EN16931
    if inv.xrechnung:
        doc.context.business_parameter.id = BUSINESS_PROCESS
    doc.header.id = inv.number
    doc.header.type_code = inv.type_code
    doc.header.issue_date_time = inv.issued
    if inv.cancels:
        doc.header.notes.add(IncludedNote(content=f"Storno der Rechnung {inv.cancels}"))
    if inv.kleinunternehmer:
        doc.header.notes.add(IncludedNote(content=_category(inv, Decimal(0))[1]))

    agreement = doc.trade.agreement
    agreement.buyer_reference = b.get("leitweg_id") or inv.client
    seller = agreement.seller
    if not s.get("vat_id"):  # BR-CO-26: without a VAT ID the tax number identifies the seller
        seller.id = s["tax_number"]
    seller.name = s["name"]
    seller.address.line_one = s["street"]
    seller.address.postcode = s["postcode"]
    seller.address.city_name = s["city"]
    seller.address.country_id = s["country"]
    seller.contact.person_name = s.get("contact") or s["name"]
    seller.contact.telephone.number = s["phone"]
    seller.contact.email.address = s["email"]
    seller.electronic_address.uri_ID = ("EM", s["email"])
    if s.get("vat_id"):
        seller.tax_registrations.add(TaxRegistration(id=("VA", s["vat_id"])))
    if s.get("tax_number"):
        seller.tax_registrations.add(TaxRegistration(id=("FC", s["tax_number"])))
    buyer = agreement.buyer
    buyer.id = inv.client
    buyer.name = b["name"]
    if b.get("street"):
        buyer.address.line_one = b["street"]
    if b.get("postcode"):
        buyer.address.postcode = b["postcode"]
    if b.get("city"):
        buyer.address.city_name = b["city"]
    buyer.address.country_id = b["country"]
    if inv.xrechnung:  # XRechnung needs the buyer's electronic address (BT-49)
        buyer.electronic_address.uri_ID = ("0204", b["leitweg_id"])  # the Leitweg-ID scheme
    elif b.get("email"):
        buyer.electronic_address.uri_ID = ("EM", b["email"])
    if b.get("vat_id"):
        buyer.tax_registrations.add(TaxRegistration(id=("VA", b["vat_id"])))

    first, last = inv.period
    doc.trade.delivery.event.occurrence = last

    st = doc.trade.settlement
    st.currency_code = "EUR"
    st.payment_reference = inv.number
    means = PaymentMeans()
    means.type_code = "58"  # SEPA credit transfer
    means.payee_account.iban = s["iban"].replace(" ", "")
    if s.get("bic"):
        means.payee_institution.bic = s["bic"]
    st.payment_means.add(means)
    st.period.start = first
    st.period.end = last
    if inv.cancels:
        st.invoice_referenced_document.issuer_assigned_id = inv.cancels
    terms = PaymentTerms()
    if inv.type_code == INVOICE:
        terms.description = f"Zahlbar ohne Abzug bis {inv.due:%d.%m.%Y}"
        terms.due = inv.due
    else:
        terms.description = "Der Betrag wird Ihnen gutgeschrieben."
    st.terms.add(terms)

    for i, ln in enumerate(inv.lines, 1):
        item = LineItem()
        item.document.line_id = str(i)
        item.product.name = ln.label
        item.agreement.net.amount = _unit_price(ln.unit_price)
        item.delivery.billed_quantity = (ln.quantity, UNITS.get(ln.kind, "C62"))
        cat, _ = _category(inv, ln.vat_rate)
        item.settlement.trade_tax.type_code = "VAT"
        item.settlement.trade_tax.category_code = cat
        item.settlement.trade_tax.rate_applicable_percent = _rate(inv, ln.vat_rate)
        item.settlement.monetary_summation.total_amount = euro(ln.net)
        doc.trade.items.add(item)

    for rate, net, vat in inv.vat:
        cat, reason = _category(inv, rate)
        tax = ApplicableTradeTax()
        tax.calculated_amount = euro(vat)
        tax.basis_amount = euro(net)
        tax.type_code = "VAT"
        tax.category_code = cat
        if reason:
            tax.exemption_reason = reason
        tax.rate_applicable_percent = _rate(inv, rate)
        st.trade_tax.add(tax)

    sums = st.monetary_summation
    sums.line_total = euro(sum(ln.net for ln in inv.lines))
    sums.charge_total = Decimal("0.00")
    sums.allowance_total = Decimal("0.00")
    sums.tax_basis_total = euro(inv.net)
    sums.tax_total = (euro(inv.vat_total), "EUR")
    sums.grand_total = euro(inv.gross)
    sums.due_amount = euro(inv.gross)
    out: bytes = doc.serialize(schema="FACTUR-X_EN16931")
    return out


def _rate(inv: EInvoice, rate: Decimal) -> Decimal:
    return Decimal("0.00") if inv.kleinunternehmer else rate.quantize(Decimal("0.01"))


# ------------------------------------------------------------------ the PDF


def format_cents(cents: int | Decimal) -> str:
    d = Decimal(cents) / 100
    q: Decimal = d.quantize(Decimal("0.01")) if d == d.quantize(Decimal("0.01")) else d.normalize()
    sign = "-" if q < 0 else ""
    whole, _, frac = f"{abs(q):f}".partition(".")
    return f"{sign}{int(whole):,}".replace(",", ".") + f",{(frac or '00').ljust(2, '0')} €"


def _qty(q: Decimal) -> str:
    return f"{q.normalize():f}".replace(".", ",")


def build_visible_pdf(inv: EInvoice) -> bytes:
    """The invoice as people read it (A4, German), fonts embedded (PDF/A needs them)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4", enforce_compliance="PDFA_3B")  # fonts embedded, sRGB intent
    regular, bold = font_file(False), font_file(True)
    if regular is None or bold is None:  # PDF/A embeds its fonts: no built-in Helvetica
        raise EInvoiceError("the invoice PDF needs the DejaVu Sans fonts "
                            "(Debian: apt-get install fonts-dejavu-core)")  # fmt: skip
    pdf.add_font("Body", "", str(regular))
    pdf.add_font("Body", "B", str(bold))
    family = "Body"
    pdf.set_title(f"{'Stornorechnung' if inv.cancels else 'Rechnung'} {inv.number}")
    pdf.set_author(inv.seller["name"])
    pdf.set_lang("de-DE")
    pdf.add_page()
    s, b = inv.seller, inv.buyer
    pdf.set_font(family, "", 8)
    pdf.cell(0, 5, f"{s['name']} · {s['street']} · {s['postcode']} {s['city']}",
             new_x="LMARGIN", new_y="NEXT")  # fmt: skip
    pdf.ln(3)
    pdf.set_font(family, "", 11)
    for text in (b["name"], b.get("street", ""),
                 f"{b.get('postcode', '')} {b.get('city', '')}".strip(),
                 "" if b["country"] == s["country"] else b["country"]):  # fmt: skip
        if text:
            pdf.cell(0, 5.5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(12)
    pdf.set_font(family, "B", 15)
    title = "Stornorechnung" if inv.type_code == CREDIT_NOTE else "Rechnung"
    pdf.cell(0, 8, f"{title} {inv.number}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 10)
    first, last = inv.period
    facts = [
        f"Rechnungsdatum: {inv.issued:%d.%m.%Y}",
        f"Leistungszeitraum: {first:%d.%m.%Y} – {last:%d.%m.%Y}",
        f"Kundennummer: {inv.client}",
    ]
    if b.get("leitweg_id"):
        facts.append(f"Leitweg-ID: {b['leitweg_id']}")
    if inv.cancels:
        facts.append(f"Storno der Rechnung {inv.cancels} (Gutschrift der Beträge)")
    for text in facts:
        pdf.cell(0, 5.5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    widths = (82, 22, 30, 16, 30)
    pdf.set_font(family, "B", 9)
    for w, head, align in zip(widths, ("Leistung", "Menge", "Einzelpreis", "USt", "Netto"),
                              "LRRRR", strict=True):  # fmt: skip
        pdf.cell(w, 7, head, border="B", align=align)
    pdf.ln()
    pdf.set_font(family, "", 9)
    for ln in inv.lines:
        pct = "0 %" if inv.kleinunternehmer else f"{ln.vat_rate.normalize():f} %"
        cells = (ln.label, _qty(ln.quantity), format_cents(ln.unit_price), pct,
                 format_cents(ln.net))  # fmt: skip
        for w, text, align in zip(widths, cells, "LRRRR", strict=True):
            pdf.cell(w, 6, text, align=align)
        pdf.ln()
    pdf.ln(3)
    total_w = sum(widths[:-1])

    def total(label: str, cents: int, style: str = "") -> None:
        pdf.set_font(family, style, 10)
        pdf.cell(total_w, 6.5, label, align="R")
        pdf.cell(widths[-1], 6.5, format_cents(cents), align="R", new_x="LMARGIN", new_y="NEXT")

    total("Summe netto", inv.net)
    for rate, _net, vat in inv.vat:
        if not inv.kleinunternehmer:
            total(f"Umsatzsteuer {rate.normalize():f} %", vat)
    total("Gutschriftbetrag" if inv.type_code == CREDIT_NOTE else "Rechnungsbetrag",
          inv.gross, "B")  # fmt: skip
    pdf.ln(8)
    pdf.set_font(family, "", 9)
    notes = []
    if inv.kleinunternehmer:
        notes.append(_category(inv, Decimal(0))[1] or "")
    if inv.type_code == INVOICE:
        notes.append(f"Bitte überweisen Sie den Betrag bis {inv.due:%d.%m.%Y} unter Angabe der "
                     f"Rechnungsnummer {inv.number}.")  # fmt: skip
    else:
        notes.append("Der Betrag wird Ihnen gutgeschrieben.")
    for text in notes:
        pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font(family, "", 8)
    tax = f"USt-IdNr. {s['vat_id']}" if s.get("vat_id") else f"Steuernummer {s['tax_number']}"
    bank = f"IBAN {s['iban']}" + (f" · BIC {s['bic']}" if s.get("bic") else "")
    for text in (f"{s['name']} · {s['street']} · {s['postcode']} {s['city']}",
                 f"{tax} · {bank}", f"Telefon {s['phone']} · {s['email']}"):  # fmt: skip
        pdf.cell(0, 4.5, text, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def build_pdf(inv: EInvoice, xml: bytes) -> bytes:
    """The visible invoice as PDF/A-3 with the XML embedded (factur-x.xml, AFRelationship
    Data; factur-x checks the XML against its XSD first)."""
    from facturx import generate_from_binary  # type: ignore[import-untyped,unused-ignore]

    title = f"{'Stornorechnung' if inv.cancels else 'Rechnung'} {inv.number}"
    meta = {"author": inv.seller["name"], "keywords": "Factur-X, ZUGFeRD, Rechnung",
            "title": title, "subject": f"{title} vom {inv.issued:%d.%m.%Y}"}  # fmt: skip
    out: bytes = generate_from_binary(build_visible_pdf(inv), xml, flavor="factur-x",
                                      level="en16931", check_xsd=True, pdf_metadata=meta,
                                      lang="de-DE")  # fmt: skip
    return out


def build_documents(inv: EInvoice) -> tuple[bytes, bytes]:
    """(PDF/A-3, XML) of an invoice."""
    xml = build_xml(inv)
    return build_pdf(inv, xml), xml
