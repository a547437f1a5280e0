"""The e-mail that delivers an invoice to the client's billing address: German subject and
text from the seller's data as it was at issue, and which document goes with it (the PDF/A-3
with the ZUGFeRD XML embedded; for a public-sector buyer with a Leitweg-ID the XRechnung XML
itself). Pure: no SMTP, no store."""

from __future__ import annotations

from dataclasses import dataclass

from heimbuero.billing.einvoice import CREDIT_NOTE, EInvoice
from heimbuero.billing.tariff import format_euro

MONTHS = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
          "Oktober", "November", "Dezember")  # fmt: skip


@dataclass(frozen=True, slots=True)
class InvoiceMail:
    subject: str
    text: str
    document: str  # "pdf" or "xml": the attachment
    reply_to: str  # the seller's e-mail address


def _month_name(month: str) -> str:
    year, mm = month.split("-")
    return f"{MONTHS[int(mm) - 1]} {year}"


def invoice_mail(inv: EInvoice) -> InvoiceMail:
    """Subject, text and attachment kind of the e-mail of `inv` (an invoice or, type code
    381, a cancellation invoice)."""
    s, b = inv.seller, inv.buyer
    storno = inv.type_code == CREDIT_NOTE
    what = "Stornorechnung" if storno else "Rechnung"
    subject = f"{what} {inv.number} von {s['name']}"
    lines = ["Guten Tag,", ""]
    period = _month_name(inv.month)
    if storno:
        lines.append(f"anbei erhalten Sie unsere Stornorechnung {inv.number} vom "
                     f"{inv.issued:%d.%m.%Y} zur Rechnung {inv.cancels} (Leistungszeitraum "
                     f"{period}) über {format_euro(inv.gross)}. Der Betrag wird Ihnen "
                     "gutgeschrieben.")  # fmt: skip
    else:
        lines.append(f"anbei erhalten Sie unsere Rechnung {inv.number} vom "
                     f"{inv.issued:%d.%m.%Y} für den Leistungszeitraum {period} über "
                     f"{format_euro(inv.gross)}.")  # fmt: skip
        bank = f"IBAN {s['iban']}" + (f", BIC {s['bic']}" if s.get("bic") else "")
        lines += ["", f"Bitte überweisen Sie den Betrag bis zum {inv.due:%d.%m.%Y} auf unser "
                  f"Konto {bank} unter Angabe der Rechnungsnummer {inv.number}."]  # fmt: skip
    lines.append("")
    if inv.xrechnung:
        lines.append(f"Die {what} ist als XRechnung (XML, UN/CEFACT CII) angehängt; "
                     f"Leitweg-ID: {b['leitweg_id']}.")  # fmt: skip
    else:
        lines.append(f"Die {what} ist als PDF angehängt (PDF/A-3, ZUGFeRD/Factur-X EN 16931: "
                     "die maschinenlesbaren Rechnungsdaten sind darin eingebettet).")  # fmt: skip
    lines += ["", "Bei Fragen zur Rechnung antworten Sie einfach auf diese E-Mail.", "",
              "Mit freundlichen Grüßen"]  # fmt: skip
    if s.get("contact"):
        lines.append(s["contact"])
    lines += [s["name"], f"{s['street']}, {s['postcode']} {s['city']}",
              f"Tel. {s['phone']} · {s['email']}"]  # fmt: skip
    if s.get("vat_id"):
        lines.append(f"USt-IdNr. {s['vat_id']}")
    elif s.get("tax_number"):
        lines.append(f"Steuernummer {s['tax_number']}")
    return InvoiceMail(subject, "\n".join(lines) + "\n", "xml" if inv.xrechnung else "pdf",
                       s["email"])  # fmt: skip
