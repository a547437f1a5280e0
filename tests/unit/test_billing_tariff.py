"""Billing domain: money, talk units, surcharges, how each call result bills, month
statements with included volumes, minimum amount and VAT per rate."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest

from heimbuero.billing.tariff import (
    Billing,
    CallFacts,
    Increment,
    Surcharges,
    Tariff,
    TariffAssignment,
    TariffError,
    format_euro,
    month_statement,
    parse_euro,
    rate_call,
    rate_dictation,
    rate_note,
    rate_voicemail,
    tariff_on,
)

T = Tariff(
    name="Standard",
    base_fee=D(2900),
    per_answered_call=D(85),
    per_talk_unit=D(20),
    increment=Increment(60, 60),
    per_note=D(50),
    per_voicemail=D(30),
    per_dictation_minute=D(120),
    per_normzeile=D("1.5"),
    included=(("call", D(2)),),
    surcharges=Surcharges(evening_pct=D(20), weekend_pct=D(50), holiday_pct=D(100)),
)


def call(at: datetime, result: str | None = "answered", by: str | None = "user:anna",
         talk: float = 90.0, rid: int = 1) -> CallFacts:  # fmt: skip
    return CallFacts(rid, at, result, by, talk)


def test_money_is_decimal_cents_and_never_float() -> None:
    assert parse_euro("0,85") == D(85)
    assert parse_euro("1.234,50 €") == D(123450)
    assert parse_euro("0.005") == D("0.5")
    assert format_euro(123450) == "1.234,50 €"
    assert format_euro(-85) == "-0,85 €"
    with pytest.raises(TariffError):
        parse_euro("zwölf")
    with pytest.raises(TariffError):
        Tariff(name="x", per_note=0.5)  # type: ignore[arg-type]
    with pytest.raises(TariffError):
        Tariff(name="x", vat=(("note", D(16)),))


@pytest.mark.parametrize(
    ("inc", "talk", "units"),
    [
        (Increment(60, 60), 0, 0),
        (Increment(60, 60), 1, 1),
        (Increment(60, 60), 60, 1),
        (Increment(60, 60), 60.5, 2),
        (Increment(30, 30), 61, 3),
        (Increment(60, 30), 91, 3),
        (Increment(1, 1), 89.2, 90),
        (Increment(60, 60, free=30), 30, 0),
        (Increment(60, 60, free=30), 91, 2),
    ],
)
def test_talk_units(inc: Increment, talk: float, units: int) -> None:
    assert inc.units(talk) == units


def test_increment_parse() -> None:
    assert Increment.parse("30/30") == Increment(30, 30)
    assert Increment.parse("second") == Increment(1, 1)
    with pytest.raises(TariffError):
        Increment.parse("abc")


def test_answered_by_the_office_bills_call_and_talk_units() -> None:
    # Tuesday 2026-12-01 10:00 Berlin = 09:00 UTC: no surcharge
    lines = rate_call(call(datetime(2026, 12, 1, 9, 0, tzinfo=UTC)), T, "BY", "Europe/Berlin")
    assert [(u.kind, u.quantity, u.unit_price, u.amount) for u in lines] == [
        ("call", 1, D(85), 85),
        ("talk", 2, D(20), 40),
    ]
    assert all(u.source_kind == "call_record" and u.source_id == "1" for u in lines)
    assert all(u.vat_rate == 19 for u in lines)


def test_forwarded_to_mobile_is_not_answered_by_the_office() -> None:
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    fwd = call(at, by="external:+491701234567", talk=300)
    assert rate_call(fwd, T, "BY", "Europe/Berlin") == []
    with_fee = Tariff(name="f", per_answered_call=D(85), forwarding_fee=D(10))
    lines = rate_call(fwd, with_fee, "BY", "Europe/Berlin")
    assert [(u.kind, u.amount) for u in lines] == [("forwarding", 10)]


@pytest.mark.parametrize("result", ["busy", "no_answer", "failed", "cancelled", None])
def test_unanswered_calls_cost_nothing(result: str | None) -> None:
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert rate_call(call(at, result=result, by=None), T, "BY", "Europe/Berlin") == []


def test_surcharges_evening_weekend_holiday_highest_wins() -> None:
    tz = "Europe/Berlin"
    evening = rate_call(call(datetime(2026, 12, 1, 18, 30, tzinfo=UTC)), T, "BY", tz)
    assert (evening[0].surcharge, evening[0].unit_price) == ("evening", D(102))
    saturday = rate_call(call(datetime(2026, 12, 5, 10, 0, tzinfo=UTC)), T, "BY", tz)
    assert (saturday[0].surcharge, saturday[0].unit_price) == ("weekend", D("127.5"))
    assert saturday[0].amount == 128  # half-up, per line
    # 2026-12-25 is a Friday and a holiday everywhere; the evening would be 20 %, holiday wins
    xmas = rate_call(call(datetime(2026, 12, 25, 19, 0, tzinfo=UTC)), T, "BY", tz)
    assert (xmas[0].surcharge, xmas[0].unit_price) == ("holiday", D(170))
    # Buß- und Bettag 2026-11-18 (Wednesday) is a holiday in Saxony only
    day = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
    assert rate_call(call(day), T, "SN", tz)[0].surcharge == "holiday"
    assert rate_call(call(day), T, "BY", tz)[0].surcharge == ""


def test_notes_voicemail_dictation() -> None:
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert [(u.kind, u.source_kind, u.amount) for u in rate_note(7, at, T)] == [
        ("note", "call_note", 50)
    ]
    assert [(u.kind, u.source_kind, u.amount) for u in rate_voicemail(3, at, T)] == [
        ("voicemail", "voicemail", 30)
    ]
    lines = rate_dictation(9, at, normzeilen=41, audio_seconds=61, tariff=T)
    assert [(u.kind, u.quantity, u.amount) for u in lines] == [
        ("dictation_minutes", 2, 240),
        ("normzeilen", 41, 62),  # 61.5 -> 62 half-up
    ]


def test_kleinunternehmer_has_no_vat() -> None:
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    ku = Billing(kleinunternehmer=True)
    lines = rate_note(1, at, T, ku)
    st = month_statement(T, list(enumerate(lines)), ku)
    assert st.vat_total == 0 and st.gross == st.net == 2900 + 50
    assert all(ln.vat_rate == 0 for ln in st.lines)


def test_tariff_changes_from_a_date() -> None:
    cheap = Tariff(name="cheap")
    plan = [
        TariffAssignment("m", T, date(2026, 1, 1)),
        TariffAssignment("m", cheap, date(2026, 12, 15)),
    ]
    assert tariff_on(plan, date(2025, 12, 31)) is None
    assert tariff_on(plan, date(2026, 12, 14)) is T
    assert tariff_on(plan, date(2026, 12, 15)) is cheap


def test_month_statement_included_volumes_grouping_and_vat() -> None:
    tz = "Europe/Berlin"
    usage = []
    for i, h in enumerate([9, 10, 11, 12]):  # four weekday calls of 90 s: 2 units each
        usage += rate_call(call(datetime(2026, 12, 1, h, 0, tzinfo=UTC), rid=i + 1), T, "BY", tz)
    usage += rate_call(call(datetime(2026, 12, 1, 19, 0, tzinfo=UTC), rid=9), T, "BY", tz)
    usage += rate_dictation(1, datetime(2026, 12, 2, 9, tzinfo=UTC), 100, 120, T)
    seven = Tariff(name="x", vat=(("normzeilen", D(7)),), per_normzeile=D("1.5"))
    usage += rate_dictation(2, datetime(2026, 12, 2, 9, tzinfo=UTC), 10, 0, seven)
    st = month_statement(T, list(enumerate(usage)))
    table = [(ln.label, ln.quantity, ln.unit_price, ln.vat_rate, ln.net) for ln in st.lines]
    assert table == [
        ("Grundgebühr", 1, D(2900), 19, 2900),
        ("Angenommene Anrufe (inklusive)", 2, D(0), 19, 0),
        ("Angenommene Anrufe", 2, D(85), 19, 170),
        ("Angenommene Anrufe (Abend)", 1, D(102), 19, 102),
        ("Gesprächseinheiten", 8, D(20), 19, 160),
        ("Gesprächseinheiten (Abend)", 2, D(24), 19, 48),
        ("Diktat-Audiominuten", 2, D(120), 19, 240),
        ("Normzeilen", 100, D("1.5"), 19, 150),
        ("Normzeilen", 10, D("1.5"), 7, 15),
    ]
    assert st.net == 2900 + 170 + 102 + 160 + 48 + 240 + 150 + 15
    at19 = st.net - 15
    assert st.vat == ((D(19), at19, (at19 * 19 + 50) // 100), (D(7), 15, 1))
    assert st.gross == st.net + st.vat_total
    # every usage line is behind exactly one invoice line (two for a split included one)
    behind = {uid for ln in st.lines for uid in ln.usage_ids}
    assert behind == set(range(len(usage)))


def test_minimum_monthly_amount_tops_up() -> None:
    t = Tariff(name="min", per_note=D(50), minimum_monthly=D(1000))
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    st = month_statement(t, list(enumerate(rate_note(1, at, t))))
    assert [(ln.kind, ln.net) for ln in st.lines] == [("note", 50), ("minimum", 950)]
    assert (st.net, st.vat_total, st.gross) == (1000, 190, 1190)
