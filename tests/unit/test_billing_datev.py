"""The DATEV Buchungsstapel (EXTF) as DATEV reads it: the file is parsed back here field by
field (csv with `;` and DATEV's quoting), the header's 31 fields, the 125 columns of format
version 13 on the column line and on every booking line, the totals; its bytes are
Windows-1252 with CRLF, and the numbers DATEV bounds are checked."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from decimal import Decimal

import pytest

from heimbuero.billing.datev import (
    COLUMNS,
    Booked,
    DatevError,
    Header,
    check_range,
    datev_csv,
    fiscal_year_start,
    header_line,
)

HEADER = Header(
    berater=1234567, mandant=42, fiscal_year_start=date(2027, 1, 1), account_length=4,
    date_from=date(2027, 1, 1), date_to=date(2027, 1, 31),
    created=datetime(2027, 2, 3, 14, 5, 6, 789000), label="Rechnungen 2027-01",
)  # fmt: skip
BOOKED = [
    Booked("RE-2027-000001", "müller", "invoice", date(2027, 1, 2),
           ((Decimal("19"), 2900, 551), (Decimal("7"), 1000, 70)), False, "2026-12"),
    Booked("RE-2027-000002", "müller", "storno", date(2027, 1, 31),
           ((Decimal("19"), -2900, -551),), False, "2026-12"),
]  # fmt: skip


def _parse(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("cp1252"), newline=""), delimiter=";"))


def test_the_extf_header_line_field_by_field() -> None:
    data = datev_csv(BOOKED, HEADER)
    head = _parse(data)[0]
    assert len(head) == 31
    expected = {
        1: "EXTF", 2: "700", 3: "21", 4: "Buchungsstapel", 5: "13",
        6: "20270203140506789",  # Erzeugt am: YYYYMMDDHHMMSSFFF
        7: "", 8: "", 9: "heimbuero", 10: "",
        11: "1234567", 12: "42",  # Berater, Mandant
        13: "20270101", 14: "4",  # WJ-Beginn, Sachkontenlänge
        15: "20270101", 16: "20270131",  # Datum vom, Datum bis
        17: "Rechnungen 2027-01", 18: "", 19: "1", 20: "0",  # Bezeichnung, Diktatkürzel, …
        21: "0", 22: "EUR",  # Festschreibung, WKZ
    }  # fmt: skip
    for pos, value in expected.items():
        assert head[pos - 1] == value, f"header field {pos}"
    assert all(v == "" for v in head[22:])
    # text quoted, numbers bare, as DATEV writes it
    raw = data.split(b"\r\n", 1)[0]
    assert raw.startswith(b'"EXTF";700;21;"Buchungsstapel";13;20270203140506789;;"";"heimbuero";')
    assert b';1234567;42;20270101;4;20270101;20270131;"Rechnungen 2027-01";"";1;0;0;"EUR";' in raw


def test_festschreibung_and_a_fiscal_year_from_july() -> None:
    h = Header(**{**_fields(HEADER), "locked": True,
                  "fiscal_year_start": fiscal_year_start(date(2027, 1, 1), 7)})  # fmt: skip
    head = _parse(header_line(h).encode("cp1252"))[0]
    assert (head[12], head[20]) == ("20260701", "1")
    assert fiscal_year_start(date(2027, 7, 1), 7) == date(2027, 7, 1)


# DATEV's column names at some positions (1-based) of the Buchungsstapel, format version 13,
# written out here by hand from the format description (not taken from COLUMNS)
AT = {
    1: "Umsatz (ohne Soll/Haben-Kz)", 2: "Soll/Haben-Kennzeichen", 3: "WKZ Umsatz", 7: "Konto",
    8: "Gegenkonto (ohne BU-Schlüssel)", 9: "BU-Schlüssel", 10: "Belegdatum",
    11: "Belegfeld 1", 14: "Buchungstext", 15: "Postensperre", 20: "Beleglink",
    21: "Beleginfo - Art 1", 36: "Beleginfo - Inhalt 8", 37: "KOST1 - Kostenstelle",
    40: "EU-Land u. UStID (Bestimmung)", 47: "BU 49 Funktionsergänzung",
    48: "Zusatzinformation - Art 1", 49: "Zusatzinformation- Inhalt 1",
    86: "Zusatzinformation - Art 20", 87: "Zusatzinformation- Inhalt 20", 88: "Stück",
    96: "Buchungstyp", 102: "Herkunft-Kz", 103: "Buchungs GUID", 114: "Festschreibung",
    115: "Leistungsdatum", 116: "Datum Zuord. Steuerperiode", 117: "Fälligkeit",
    118: "Generalumkehr (GU)", 119: "Steuersatz", 120: "Land", 125: "Abw. Skontokonto",
}  # fmt: skip


def test_the_column_line_names_the_125_columns_of_format_version_13() -> None:
    columns = _parse(datev_csv([], HEADER))[1]
    assert len(columns) == 125 and len(set(columns)) == 125
    for pos, name in AT.items():
        assert columns[pos - 1] == name, f"column {pos}"
    # bare names, as in DATEV's sample file
    line = datev_csv([], HEADER).split(b"\r\n")[1]
    assert line.startswith(b"Umsatz (ohne Soll/Haben-Kz);Soll/Haben-Kennzeichen;WKZ Umsatz;")
    assert line.endswith(b";EU-Steuersatz (Ursprung);Abw. Skontokonto") and b'"' not in line


def test_the_booking_lines() -> None:
    data = datev_csv(BOOKED, HEADER)
    assert data.endswith(b"\r\n") and data.count(b"\r\n") == 5  # header, columns, 3 bookings
    assert b"\n" not in data.replace(b"\r\n", b"")
    head, columns, *rows = _parse(data)
    assert columns == list(COLUMNS)
    assert [len(r) for r in rows] == [125, 125, 125]
    assert all(len(line.split(b";")) == 125 for line in data.split(b"\r\n")[1:-1])
    filled = {c: v for c, v in zip(columns, rows[0], strict=True) if v}
    assert filled == {
        "Umsatz (ohne Soll/Haben-Kz)": "34,51", "Soll/Haben-Kennzeichen": "S",
        "WKZ Umsatz": "EUR", "Konto": "10000", "Gegenkonto (ohne BU-Schlüssel)": "8400",
        "Belegdatum": "0201", "Belegfeld 1": "RE-2027-000001",
        "Buchungstext": "Rechnung RE-2027-000001 müller", "Festschreibung": "0",
        "Leistungsdatum": "31122026",  # the last day of the month it bills (TTMMJJJJ)
    }  # fmt: skip
    assert [r[:8] for r in rows[1:]] == [
        ["10,70", "S", "EUR", "", "", "", "10000", "8300"],
        ["34,51", "H", "EUR", "", "", "", "10000", "8400"],  # the Storno: Haben
    ]
    assert rows[2][9] == "3101" and rows[2][13] == "Storno RE-2027-000002 müller"
    assert rows[2][114] == "31122026"
    # text quoted (empty BU-Schlüssel and Belegfeld 2 too), numbers bare, the rest empty
    raw = data.split(b"\r\n")[2]
    assert raw.startswith(b'34,51;"S";"EUR";;;;10000;8400;"";0201;"RE-2027-000001";"";;"Rechnung')
    assert raw.endswith(b";" * 99 + b"0;31122026;;;;;;;;;;")
    # Windows-1252: ü is one byte 0xFC, and no UTF-8 anywhere
    assert "Schlüssel".encode("cp1252") in data and "ü".encode() not in data
    assert b"m\xfcller" in data


def test_the_totals_read_back_match_the_invoices() -> None:
    """Parsed back: S minus H over the booking lines is the invoices' gross total, per
    revenue account too."""
    head, columns, *rows = _parse(datev_csv(BOOKED, HEADER))
    col = {c: i for i, c in enumerate(columns)}

    def signed(r: list[str]) -> Decimal:
        amount = Decimal(r[col["Umsatz (ohne Soll/Haben-Kz)"]].replace(",", "."))
        return amount if r[col["Soll/Haben-Kennzeichen"]] == "S" else -amount

    gross = sum(net + vat for b in BOOKED for _, net, vat in b.vat)
    assert sum(signed(r) for r in rows) * 100 == gross == 1070
    per_account: dict[str, Decimal] = {}
    for r in rows:
        account = r[col["Gegenkonto (ohne BU-Schlüssel)"]]
        per_account[account] = per_account.get(account, Decimal(0)) + signed(r)
    assert per_account == {"8400": Decimal("0.00"), "8300": Decimal("10.70")}


def test_festschreibung_on_every_line_and_text_without_control_characters() -> None:
    odd = Booked('RE-"1"', "a\r\nb;c", "invoice", date(2027, 1, 5),
                 ((Decimal("19"), 100, 19),), False, "2027-01")  # fmt: skip
    data = datev_csv([odd], Header(**{**_fields(HEADER), "locked": True}))
    assert data.count(b"\r\n") == 3
    *_, row = _parse(data)
    assert len(row) == 125
    assert (row[10], row[13]) == ('RE-"1"', 'Rechnung RE-"1" a  b;c')
    assert (row[113], row[114]) == ("1", "31012027")
    # Kleinunternehmer: its own revenue account, whatever the rate
    klein = Booked("RE-2", "x", "invoice", date(2027, 1, 5), ((Decimal("0"), 500, 0),), True)
    *_, row = _parse(datev_csv([klein], HEADER))
    assert (row[0], row[7], row[114]) == ("5,00", "8195", "")  # (no month: no Leistungsdatum)


def test_an_empty_month_is_the_two_header_lines() -> None:
    data = datev_csv([], HEADER)
    assert len(_parse(data)) == 2 and data.count(b"\r\n") == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("berater", 1000), ("berater", 10_000_000), ("mandant", 0), ("mandant", 100_000),
     ("account_length", 3), ("account_length", 9)],
)  # fmt: skip
def test_numbers_out_of_range_are_refused(field: str, value: int) -> None:
    h = Header(**{**_fields(HEADER), field: value})
    with pytest.raises(DatevError, match="number"):
        datev_csv([], h)


def test_range_edges_and_settings_text() -> None:
    for berater, mandant in ((1001, 1), (9_999_999, 99_999)):
        datev_csv([], Header(**{**_fields(HEADER), "berater": berater, "mandant": mandant}))
    assert check_range("datev_mandant", "99999", "Mandantennummer", (1, 99_999)) == 99_999
    with pytest.raises(DatevError):
        check_range("datev_mandant", "12a", "Mandantennummer", (1, 99_999))


def test_a_revenue_account_longer_than_the_sachkontenlaenge_is_refused() -> None:
    with pytest.raises(DatevError, match="Sachkontenlänge"):
        datev_csv(BOOKED, HEADER, {"datev_revenue_19": "840000"})


def test_a_debtor_account_longer_than_the_sachkontenlaenge_plus_one_is_refused() -> None:
    """DATEV: a personal account (the debtor) is at most one digit longer than the
    Sachkonten."""
    datev_csv(BOOKED, HEADER, {"datev_debtor": "99999"})
    with pytest.raises(DatevError, match="plus one") as refused:
        datev_csv(BOOKED, HEADER, {"datev_debtor": "100000"})
    assert refused.value.field == "datev_debtor"
    datev_csv(BOOKED, Header(**{**_fields(HEADER), "account_length": 5}),
              {"datev_debtor": "100000"})  # fmt: skip


def test_an_invoice_outside_the_period_is_refused() -> None:
    late = Booked("RE-9", "x", "invoice", date(2027, 2, 1), ((Decimal("19"), 100, 19),), False)
    with pytest.raises(DatevError, match="not of 2027-01"):
        datev_csv([late], HEADER)


def _fields(h: Header) -> dict[str, object]:
    return {f: getattr(h, f) for f in Header.__slots__}
