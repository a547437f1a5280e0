"""A DATEV-style booking export of issued invoices for the provider's tax advisor: one booking
line per invoice and VAT rate, in the column layout of DATEV's "Buchungsstapel" (Umsatz,
Soll/Haben-Kennzeichen, WKZ, Konto, Gegenkonto, BU-Schlüssel, Belegdatum, Belegfeld 1,
Buchungstext), semicolon-separated, decimal comma, Windows-1252 as DATEV reads it.

The debtor account is debited with the gross amount against the revenue account of the rate
(an "automatic" SKR03 account that books the VAT itself, so no BU key); a cancellation invoice
(Storno) is the same booking the other way round (Haben). The accounts default to SKR03 and
are provider settings. Not (yet) written: the EXTF header line with the advisor's and
client's DATEV numbers; the advisor's import maps the columns.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

COLUMNS = (
    "Umsatz (ohne Soll/Haben-Kz)", "Soll/Haben-Kennzeichen", "WKZ Umsatz", "Konto",
    "Gegenkonto (ohne BU-Schlüssel)", "BU-Schlüssel", "Belegdatum", "Belegfeld 1",
    "Buchungstext",
)  # fmt: skip

# SKR03: 10000 a collective debtor; 8400 revenue 19 % VAT, 8300 revenue 7 % VAT, 8195
# revenue of a Kleinunternehmer (§ 19 UStG), 8120 tax-free revenue.
DEFAULT_ACCOUNTS = {
    "datev_debtor": "10000",
    "datev_revenue_19": "8400",
    "datev_revenue_7": "8300",
    "datev_revenue_0": "8120",
    "datev_revenue_kleinunternehmer": "8195",
}


@dataclass(frozen=True, slots=True)
class Booked:
    """An issued invoice as the export needs it (amounts in cents as stored: negative for a
    Storno)."""

    number: str
    client: str
    kind: str
    issued: date
    vat: tuple[tuple[Decimal, int, int], ...]  # (rate, net, vat)
    kleinunternehmer: bool


def _amount(cents: int) -> str:
    return f"{Decimal(abs(cents)) / 100:.2f}".replace(".", ",")


def revenue_account(rate: Decimal, kleinunternehmer: bool, accounts: dict[str, str]) -> str:
    if kleinunternehmer:
        return accounts["datev_revenue_kleinunternehmer"]
    if rate == 0:
        return accounts["datev_revenue_0"]
    key = f"datev_revenue_{rate.normalize():f}"
    if key not in accounts:
        raise ValueError(f"no revenue account for VAT {rate} % (setting {key})")
    return accounts[key]


def datev_csv(invoices: Iterable[Booked], accounts: dict[str, str] | None = None) -> bytes:
    """The booking lines as CSV bytes (Windows-1252; characters it lacks become '?')."""
    acc = {**DEFAULT_ACCOUNTS, **(accounts or {})}
    out = io.StringIO()
    w = csv.writer(out, delimiter=";", lineterminator="\r\n")
    w.writerow(COLUMNS)
    for inv in invoices:
        for rate, net, vat in inv.vat:
            gross = net + vat
            if gross == 0:
                continue
            debit = gross > 0  # a Storno's amounts are stored negative: Haben
            text = f"{'Storno' if inv.kind == 'storno' else 'Rechnung'} {inv.number} {inv.client}"
            w.writerow([
                _amount(gross), "S" if debit else "H", "EUR", acc["datev_debtor"],
                revenue_account(rate, inv.kleinunternehmer, acc), "",
                inv.issued.strftime("%d%m"), inv.number[:36], text[:60],
            ])  # fmt: skip
    return out.getvalue().encode("cp1252", errors="replace")
