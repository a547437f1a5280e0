"""DATEV's booking export of issued invoices for the provider's tax advisor: a Buchungsstapel
in DATEV's ASCII format (EXTF, header version 700, format category 21, format version 13),
as DATEV Rechnungswesen imports it: the EXTF header line (who: Berater- and Mandantennummer;
which period; Sachkontenlänge; WKZ EUR), the column header line, then one booking line per
invoice and VAT rate. `;`-separated, text in double quotes, decimal comma, CRLF,
Windows-1252.

The debtor account is debited with the gross amount against the revenue account of the rate
(an "automatic" SKR03 account that books the VAT itself, so no BU key); a cancellation invoice
(Storno) is the same booking the other way round (Haben). The accounts default to SKR03 and
are provider settings.

The column header line names all 125 columns of the Buchungsstapel in format version 13, in
DATEV's order and spelling (bare, as in DATEV's sample file); every booking line has all 125
fields: Umsatz to Buchungstext, Festschreibung and Leistungsdatum (the invoice month's last
day) filled, the rest empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

# The EXTF header line's fixed values (DATEV format description, "Header").
EXTF, HEADER_VERSION, CATEGORY, FORMAT_NAME, FORMAT_VERSION = (
    "EXTF", 700, 21, "Buchungsstapel", 13,
)  # fmt: skip
HEADER_FIELDS = 31  # fields of a version 700 header line

# The Buchungsstapel's columns (format version 13), as DATEV's format description names them;
# the two repeated blocks (8 Beleginfo pairs, 20 Zusatzinformation pairs: "Inhalt" without the
# space before its hyphen, as DATEV spells it) are generated.
COLUMNS = (
    "Umsatz (ohne Soll/Haben-Kz)", "Soll/Haben-Kennzeichen", "WKZ Umsatz", "Kurs",
    "Basis-Umsatz", "WKZ Basis-Umsatz", "Konto", "Gegenkonto (ohne BU-Schlüssel)",
    "BU-Schlüssel", "Belegdatum", "Belegfeld 1", "Belegfeld 2", "Skonto", "Buchungstext",
    "Postensperre", "Diverse Adressnummer", "Geschäftspartnerbank", "Sachverhalt",
    "Zinssperre", "Beleglink",
    *(c for n in range(1, 9) for c in (f"Beleginfo - Art {n}", f"Beleginfo - Inhalt {n}")),
    "KOST1 - Kostenstelle", "KOST2 - Kostenstelle", "Kost-Menge",
    "EU-Land u. UStID (Bestimmung)", "EU-Steuersatz (Bestimmung)", "Abw. Versteuerungsart",
    "Sachverhalt L+L", "Funktionsergänzung L+L", "BU 49 Hauptfunktionstyp",
    "BU 49 Hauptfunktionsnummer", "BU 49 Funktionsergänzung",
    *(c for n in range(1, 21)
      for c in (f"Zusatzinformation - Art {n}", f"Zusatzinformation- Inhalt {n}")),
    "Stück", "Gewicht", "Zahlweise", "Forderungsart", "Veranlagungsjahr",
    "Zugeordnete Fälligkeit", "Skontotyp", "Auftragsnummer", "Buchungstyp",
    "USt-Schlüssel (Anzahlungen)", "EU-Land (Anzahlungen)", "Sachverhalt L+L (Anzahlungen)",
    "EU-Steuersatz (Anzahlungen)", "Erlöskonto (Anzahlungen)", "Herkunft-Kz", "Buchungs GUID",
    "KOST-Datum", "SEPA-Mandatsreferenz", "Skontosperre", "Gesellschaftername",
    "Beteiligtennummer", "Identifikationsnummer", "Zeichnernummer", "Postensperre bis",
    "Bezeichnung SoBil-Sachverhalt", "Kennzeichen SoBil-Buchung", "Festschreibung",
    "Leistungsdatum", "Datum Zuord. Steuerperiode", "Fälligkeit", "Generalumkehr (GU)",
    "Steuersatz", "Land", "Abrechnungsreferenz", "BVV-Position", "EU-Land u. UStID (Ursprung)",
    "EU-Steuersatz (Ursprung)", "Abw. Skontokonto",
)  # fmt: skip
assert len(COLUMNS) == 125 and len(set(COLUMNS)) == 125

# SKR03: 10000 a collective debtor; 8400 revenue 19 % VAT, 8300 revenue 7 % VAT, 8195
# revenue of a Kleinunternehmer (§ 19 UStG), 8120 tax-free revenue.
DEFAULT_ACCOUNTS = {
    "datev_debtor": "10000",
    "datev_revenue_19": "8400",
    "datev_revenue_7": "8300",
    "datev_revenue_0": "8120",
    "datev_revenue_kleinunternehmer": "8195",
}
BERATER_RANGE = (1001, 9_999_999)
MANDANT_RANGE = (1, 99_999)
ACCOUNT_LENGTH_RANGE = (4, 8)


class DatevError(ValueError):
    """The export cannot be written as DATEV reads it (a number out of range, an account
    longer than the Sachkontenlänge, a rate without a revenue account)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


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
    month: str = ""  # the month it bills (YYYY-MM): the Leistungsdatum is its last day


@dataclass(frozen=True, slots=True)
class Header:
    """What the EXTF header line says about the batch."""

    berater: int  # Beraternummer, 1001 to 9999999
    mandant: int  # Mandantennummer, 1 to 99999
    fiscal_year_start: date  # Wirtschaftsjahresbeginn
    account_length: int  # Sachkontenlänge, 4 to 8
    date_from: date  # Datum vom
    date_to: date  # Datum bis (the same fiscal year)
    created: datetime  # Erzeugt am (local time)
    label: str = ""  # Bezeichnung, at most 30 characters
    locked: bool = False  # Festschreibung
    exported_by: str = "heimbuero"  # Exportiert von

    def check(self) -> None:
        _in_range("datev_berater", "Beraternummer", self.berater, BERATER_RANGE)
        _in_range("datev_mandant", "Mandantennummer", self.mandant, MANDANT_RANGE)
        _in_range("datev_account_length", "Sachkontenlänge", self.account_length,
                  ACCOUNT_LENGTH_RANGE)  # fmt: skip
        if not self.fiscal_year_start <= self.date_from <= self.date_to:
            raise DatevError("month", "Datum vom/bis must lie in one fiscal year, in order")


def check_range(field: str, value: str, what: str, bounds: tuple[int, int]) -> int:
    """A DATEV number setting as text, checked: its integer value."""
    if not value.isdigit():
        raise DatevError(field, f"the {what} is a number {bounds[0]} to {bounds[1]}")
    _in_range(field, what, int(value), bounds)
    return int(value)


def _in_range(field: str, what: str, value: int, bounds: tuple[int, int]) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise DatevError(field, f"the {what} is a number {bounds[0]} to {bounds[1]}, not {value}")


def fiscal_year_start(day: date, first_month: int) -> date:
    """The first day of the fiscal year (beginning in `first_month`) that holds `day`."""
    year = day.year if day.month >= first_month else day.year - 1
    return date(year, first_month, 1)


def _text(value: str) -> str:
    """A text field: quoted, quotes doubled, no control characters (DATEV refuses them)."""
    clean = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in value)
    return '"' + clean.replace('"', '""') + '"'


def _line(fields: Sequence[str]) -> str:
    return ";".join(fields) + "\r\n"


def header_line(h: Header) -> str:
    """The EXTF header line (31 fields; text in quotes, numbers and dates bare)."""
    h.check()
    fields = [
        _text(EXTF), str(HEADER_VERSION), str(CATEGORY), _text(FORMAT_NAME),
        str(FORMAT_VERSION),
        h.created.strftime("%Y%m%d%H%M%S") + f"{h.created.microsecond // 1000:03d}",  # Erzeugt am
        "",  # Importiert (DATEV fills it)
        _text(""),  # Herkunft
        _text(h.exported_by[:25]),  # Exportiert von
        _text(""),  # Importiert von
        str(h.berater), str(h.mandant), h.fiscal_year_start.strftime("%Y%m%d"),
        str(h.account_length), h.date_from.strftime("%Y%m%d"), h.date_to.strftime("%Y%m%d"),
        _text(h.label[:30]),  # Bezeichnung
        _text(""),  # Diktatkürzel
        "1",  # Buchungstyp: 1 Finanzbuchführung
        "0",  # Rechnungslegungszweck: 0 unabhängig
        "1" if h.locked else "0",  # Festschreibung
        _text("EUR"),  # WKZ
        "", _text(""), "", "",  # reserviert, Derivatskennzeichen, reserviert, reserviert
        _text(""), "",  # SKR, Branchen-Lösungs-ID
        "", _text(""), _text(""),  # reserviert, reserviert, Anwendungsinformation
    ]  # fmt: skip
    assert len(fields) == HEADER_FIELDS
    return _line(fields)


def _amount(cents: int) -> str:
    return f"{Decimal(abs(cents)) / 100:.2f}".replace(".", ",")


def revenue_account(rate: Decimal, kleinunternehmer: bool, accounts: dict[str, str]) -> str:
    if kleinunternehmer:
        return accounts["datev_revenue_kleinunternehmer"]
    if rate == 0:
        return accounts["datev_revenue_0"]
    key = f"datev_revenue_{rate.normalize():f}"
    if key not in accounts:
        raise DatevError("month", f"no revenue account for VAT {rate} % (setting {key})")
    return accounts[key]


def _last_day(month: str) -> date | None:
    if not month:
        return None
    first = date.fromisoformat(f"{month}-01")
    return (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)


def booking_line(fields: dict[str, str]) -> str:
    """A booking line of all 125 columns: `fields` by column name, the rest empty."""
    unknown = set(fields) - set(COLUMNS)
    assert not unknown, unknown
    return _line([fields.get(c, "") for c in COLUMNS])


def datev_csv(invoices: Iterable[Booked], header: Header,
              accounts: dict[str, str] | None = None) -> bytes:  # fmt: skip
    """The Buchungsstapel as bytes (Windows-1252; characters it lacks become '?')."""
    acc = {**DEFAULT_ACCOUNTS, **(accounts or {})}
    out = [header_line(header), _line(COLUMNS)]
    if len(acc["datev_debtor"]) > header.account_length + 1:  # a personal account: one more
        raise DatevError("datev_debtor", f"the debtor account {acc['datev_debtor']} is longer "
                         f"than the Sachkontenlänge {header.account_length} plus one")  # fmt: skip
    for inv in invoices:
        if not header.date_from <= inv.issued <= header.date_to:
            raise DatevError("month", f"invoice {inv.number} is not of {header.date_from:%Y-%m}")
        for rate, net, vat in inv.vat:
            gross = net + vat
            if gross == 0:
                continue
            revenue = revenue_account(rate, inv.kleinunternehmer, acc)
            if len(revenue) > header.account_length:
                raise DatevError("datev_account_length", f"revenue account {revenue} is longer "
                                 f"than the Sachkontenlänge {header.account_length}")  # fmt: skip
            debit = gross > 0  # a Storno's amounts are stored negative: Haben
            text = f"{'Storno' if inv.kind == 'storno' else 'Rechnung'} {inv.number} {inv.client}"
            served = _last_day(inv.month)
            out.append(booking_line({
                "Umsatz (ohne Soll/Haben-Kz)": _amount(gross),
                "Soll/Haben-Kennzeichen": _text("S" if debit else "H"),
                "WKZ Umsatz": _text("EUR"),
                "Konto": acc["datev_debtor"],
                "Gegenkonto (ohne BU-Schlüssel)": revenue,
                "BU-Schlüssel": _text(""),  # automatic revenue accounts book the VAT
                "Belegdatum": inv.issued.strftime("%d%m"),
                "Belegfeld 1": _text(inv.number[:36]),
                "Belegfeld 2": _text(""),
                "Buchungstext": _text(text[:60]),
                "Festschreibung": "1" if header.locked else "0",
                "Leistungsdatum": "" if served is None else served.strftime("%d%m%Y"),
            }))  # fmt: skip
    return "".join(out).encode("cp1252", errors="replace")
