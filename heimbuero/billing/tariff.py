"""Money, tariffs and how each billable event is rated: the domain of billing.

No SQL, no HTTP, no SIP. Amounts are integer euro cents; unit prices are `Decimal` cents (a
per-second price may be a fraction of a cent); a line's amount is rounded half-up to whole
cents once, per line. Never float.

How a call bills (by its stored result and `answered_by`):

- answered by the office (a user or group of ours answered): one "call" line
  (`per_answered_call`) plus one "talk" line for the started talk units (see `talk_units`),
  both with the time surcharge of the call's start (evening, weekend, holiday of the client's
  Bundesland; the highest one applies, surcharges do not add up);
- forwarded to the owner's mobile (`answered_by` is `external:…`): not answered by the office.
  Only a "forwarding" line (`forwarding_fee` per call, 0 by default: then no line at all); no
  per-call price, no talk units;
- a caller who left a voicemail: the call itself is not answered (no call line); the
  voicemail bills through its own event (`per_voicemail`);
- busy, no answer, failed, cancelled: nothing.

Notes, voicemails and dictations carry no time surcharge. Included volumes ("50 calls
included") are applied per month to the earliest lines of a kind (see `month_statement`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import holidays as holidays_lib

VAT_RATES = (Decimal("19"), Decimal("7"), Decimal("0"))
# German states as the `holidays` package names them (a client's Bundesland or the default).
BUNDESLAENDER_DEFAULT = (
    "BB", "BE", "BW", "BY", "HB", "HE", "HH", "MV", "NI", "NW", "RP", "SH", "SL", "SN", "ST", "TH",
)  # fmt: skip
KINDS = ("call", "talk", "forwarding", "note", "voicemail", "dictation_minutes", "normzeilen")
SOURCE_KINDS = ("call_record", "call_note", "voicemail", "dictation_job")
KIND_LABELS = {
    "base": "Grundgebühr",
    "call": "Angenommene Anrufe",
    "talk": "Gesprächseinheiten",
    "forwarding": "Weiterleitungen auf Mobil",
    "note": "Telefonnotizen",
    "voicemail": "Sprachnachrichten",
    "dictation_minutes": "Diktat-Audiominuten",
    "normzeilen": "Normzeilen",
    "minimum": "Aufstockung Mindestbetrag",
}


class TariffError(ValueError):
    """A tariff or an amount that cannot be right; `field` names what is wrong."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def cents(value: Decimal | int) -> int:
    """Round a Decimal amount of cents half-up to whole cents."""
    if isinstance(value, float):  # never
        raise TypeError("money is never float")
    return int(Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def parse_euro(text: str) -> Decimal:
    """'0,85' or '0.85' or '12' (euro) -> Decimal cents (85, 1200); fractions of a cent kept."""
    t = text.strip().replace("€", "").replace(" ", "")
    if "," in t:
        t = t.replace(".", "").replace(",", ".")
    try:
        value = Decimal(t) * 100
    except ArithmeticError as e:
        raise TariffError("amount", f"not an amount in euro: {text!r}") from e
    if not value.is_finite():
        raise TariffError("amount", f"not an amount in euro: {text!r}")
    return value.normalize() if value == value.to_integral() else value


def format_euro(amount_cents: int | Decimal) -> str:
    """1234 -> '12,34 €' (German notation; fractions of a cent shown when there are)."""
    d = Decimal(amount_cents) / 100
    q = d.quantize(Decimal("0.01")) if d == d.quantize(Decimal("0.01")) else d
    sign = "-" if q < 0 else ""
    whole, _, frac = f"{abs(q):f}".partition(".")
    groups = f"{int(whole):,}".replace(",", ".")
    return f"{sign}{groups},{frac or '00'} €"


def vat_of(net_cents: int, rate: Decimal) -> int:
    return cents(Decimal(net_cents) * rate / 100)


@dataclass(frozen=True, slots=True)
class Increment:
    """Talk units: the first unit is `first` seconds, every further one `next` seconds (60/60,
    30/30, 60/30, 1/1 = per second). `free` seconds at the start are not billed at all."""

    first: int = 60
    next: int = 60
    free: int = 0

    def __post_init__(self) -> None:
        if self.first < 1 or self.next < 1 or self.free < 0:
            raise TariffError("increment", "units are whole seconds >= 1, free >= 0")

    @classmethod
    def parse(cls, text: str, free: int = 0) -> Increment:
        """'60/60', '30/30', '1/1' or 'second'."""
        if text.strip() in ("second", "1"):
            return cls(1, 1, free)
        a, sep, b = text.strip().partition("/")
        try:
            return cls(int(a), int(b) if sep else int(a), free)
        except ValueError as e:
            raise TariffError("increment", f"expected e.g. 60/60 or 30/30, not {text!r}") from e

    def units(self, talk_seconds: float) -> int:
        """The started units of a call that lasted `talk_seconds` (a started unit counts)."""
        billed = max(0.0, talk_seconds - self.free)
        if billed <= 0:
            return 0
        if billed <= self.first:
            return 1
        return 1 + math.ceil(round(billed - self.first, 6) / self.next)

    def text(self) -> str:
        return f"{self.first}/{self.next}"


@dataclass(frozen=True, slots=True)
class Surcharges:
    """Percent surcharges on calls by the local time of the call's start; the highest of the
    ones that apply counts (a holiday evening is a holiday, not holiday + evening)."""

    evening_pct: Decimal = Decimal(0)
    evening_from: time = time(18, 0)
    evening_until: time = time(8, 0)  # the next morning; also before it in the morning
    weekend_pct: Decimal = Decimal(0)
    holiday_pct: Decimal = Decimal(0)

    def applying(self, local: datetime, bundesland: str) -> tuple[str, Decimal]:
        """('holiday'|'weekend'|'evening'|'', percent) for a call starting at `local`."""
        found: list[tuple[Decimal, str]] = []
        if self.holiday_pct and local.date() in holidays_lib.country_holidays(
            "DE", subdiv=bundesland, years=local.year
        ):
            found.append((self.holiday_pct, "holiday"))
        if self.weekend_pct and local.weekday() >= 5:
            found.append((self.weekend_pct, "weekend"))
        if self.evening_pct:
            t = local.time()
            if self.evening_from <= self.evening_until:
                evening = self.evening_from <= t < self.evening_until
            else:
                evening = t >= self.evening_from or t < self.evening_until
            if evening:
                found.append((self.evening_pct, "evening"))
        if not found:
            return "", Decimal(0)
        pct, name = max(found, key=lambda f: f[0])
        return name, pct


@dataclass(frozen=True, slots=True)
class Tariff:
    """A price list. Prices are Decimal cents; `included` maps a usage kind to a free monthly
    quantity; `vat` maps a kind (or 'base') to its VAT rate (default 19 %)."""

    name: str
    base_fee: Decimal = Decimal(0)
    per_answered_call: Decimal = Decimal(0)
    per_talk_unit: Decimal = Decimal(0)
    increment: Increment = field(default_factory=Increment)
    forwarding_fee: Decimal = Decimal(0)
    per_note: Decimal = Decimal(0)
    per_voicemail: Decimal = Decimal(0)
    per_dictation_minute: Decimal = Decimal(0)
    per_normzeile: Decimal = Decimal(0)
    included: tuple[tuple[str, Decimal], ...] = ()
    surcharges: Surcharges = field(default_factory=Surcharges)
    minimum_monthly: Decimal = Decimal(0)
    vat: tuple[tuple[str, Decimal], ...] = ()

    def __post_init__(self) -> None:
        for f in (
            "base_fee", "per_answered_call", "per_talk_unit", "forwarding_fee", "per_note",
            "per_voicemail", "per_dictation_minute", "per_normzeile", "minimum_monthly",
        ):  # fmt: skip
            v = getattr(self, f)
            if isinstance(v, float) or not isinstance(v, (Decimal, int)):
                raise TariffError(f, "prices are Decimal cents, never float")
            if Decimal(v) < 0:
                raise TariffError(f, "a price is never negative")
        for kind, qty in self.included:
            if kind not in KINDS:
                raise TariffError("included", f"unknown usage kind {kind!r}")
            if Decimal(qty) < 0:
                raise TariffError("included", "an included volume is never negative")
        for kind, rate in self.vat:
            if kind not in (*KINDS, "base", "minimum"):
                raise TariffError("vat", f"unknown usage kind {kind!r}")
            if Decimal(rate) not in VAT_RATES:
                raise TariffError("vat", "VAT is 19, 7 or 0 percent")
        for f in ("evening_pct", "weekend_pct", "holiday_pct"):
            if not 0 <= getattr(self.surcharges, f) <= 1000:
                raise TariffError(f, "a surcharge is 0 to 1000 percent")

    def vat_rate(self, kind: str) -> Decimal:
        return Decimal(dict(self.vat).get(kind, Decimal(19)))

    def included_of(self, kind: str) -> Decimal:
        return Decimal(dict(self.included).get(kind, Decimal(0)))


@dataclass(frozen=True, slots=True)
class TariffAssignment:
    """A client's tariff from `valid_from` (a local date) until the next assignment."""

    client: str
    tariff: Tariff
    valid_from: date


def tariff_on(assignments: Iterable[TariffAssignment], day: date) -> Tariff | None:
    """The tariff in force on `day`: the assignment with the latest valid_from <= day."""
    best: TariffAssignment | None = None
    for a in assignments:
        if a.valid_from <= day and (best is None or a.valid_from >= best.valid_from):
            best = a
    return None if best is None else best.tariff


@dataclass(frozen=True, slots=True)
class Usage:
    """One usage line: what happened, its source, and its price as rated."""

    kind: str
    source_kind: str
    source_id: str
    at: datetime  # UTC
    quantity: Decimal
    unit_price: Decimal  # cents, surcharge included
    surcharge: str  # '', 'evening', 'weekend', 'holiday'
    surcharge_pct: Decimal
    vat_rate: Decimal
    description: str = ""

    @property
    def amount(self) -> int:
        return cents(self.quantity * self.unit_price)


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What rating needs of a finished call record."""

    record_id: int
    started_at: datetime  # UTC
    result: str | None
    answered_by: str | None
    talk_seconds: float


@dataclass(frozen=True, slots=True)
class Billing:
    """Provider-wide billing settings that change the rating."""

    kleinunternehmer: bool = False  # §19 UStG: no VAT on any line
    default_bundesland: str = "BY"


def _with_pct(price: Decimal, pct: Decimal) -> Decimal:
    return price * (100 + pct) / 100


def _usage(
    tariff: Tariff,
    settings: Billing,
    kind: str,
    source: tuple[str, str],
    at: datetime,
    qty: Decimal,
    price: Decimal,
    surcharge: tuple[str, Decimal] = ("", Decimal(0)),
    description: str = "",
) -> Usage:
    vat = Decimal(0) if settings.kleinunternehmer else tariff.vat_rate(kind)
    return Usage(
        kind, source[0], source[1], at, qty, _with_pct(Decimal(price), surcharge[1]),
        surcharge[0], surcharge[1], vat, description,
    )  # fmt: skip


def rate_call(
    call: CallFacts,
    tariff: Tariff,
    bundesland: str,
    timezone: str,
    settings: Billing = Billing(),
) -> list[Usage]:
    """The usage lines of one finished call (see the module text for each result)."""
    if call.result != "answered" or not call.answered_by:
        return []
    source = ("call_record", str(call.record_id))
    if call.answered_by.startswith("external:"):
        if not tariff.forwarding_fee:
            return []
        return [
            _usage(tariff, settings, "forwarding", source, call.started_at, Decimal(1),
                   tariff.forwarding_fee, description=call.answered_by)
        ]  # fmt: skip
    local = call.started_at.astimezone(ZoneInfo(timezone))
    sur = tariff.surcharges.applying(local, bundesland)
    lines = []
    if tariff.per_answered_call:
        lines.append(
            _usage(tariff, settings, "call", source, call.started_at, Decimal(1),
                   tariff.per_answered_call, sur, call.answered_by)
        )  # fmt: skip
    units = tariff.increment.units(call.talk_seconds)
    if units and tariff.per_talk_unit:
        lines.append(
            _usage(tariff, settings, "talk", source, call.started_at, Decimal(units),
                   tariff.per_talk_unit, sur,
                   f"{call.talk_seconds:.0f} s, Takt {tariff.increment.text()}")
        )  # fmt: skip
    return lines


def rate_note(
    note_id: int, at: datetime, tariff: Tariff, settings: Billing = Billing()
) -> list[Usage]:
    if not tariff.per_note:
        return []
    return [_usage(tariff, settings, "note", ("call_note", str(note_id)), at, Decimal(1),
                   tariff.per_note)]  # fmt: skip


def rate_voicemail(
    voicemail_id: int, at: datetime, tariff: Tariff, settings: Billing = Billing()
) -> list[Usage]:
    if not tariff.per_voicemail:
        return []
    return [_usage(tariff, settings, "voicemail", ("voicemail", str(voicemail_id)), at,
                   Decimal(1), tariff.per_voicemail)]  # fmt: skip


def dictation_minutes(audio_seconds: float) -> Decimal:
    """Started audio minutes (a dictation of 61 s is 2 minutes)."""
    return Decimal(max(0, math.ceil(round(audio_seconds, 6) / 60)))


def rate_dictation(
    job_id: int,
    at: datetime,
    normzeilen: int,
    audio_seconds: float,
    tariff: Tariff,
    settings: Billing = Billing(),
) -> list[Usage]:
    source = ("dictation_job", str(job_id))
    lines = []
    minutes = dictation_minutes(audio_seconds)
    if tariff.per_dictation_minute and minutes:
        lines.append(_usage(tariff, settings, "dictation_minutes", source, at, minutes,
                            tariff.per_dictation_minute))  # fmt: skip
    if tariff.per_normzeile and normzeilen > 0:
        lines.append(_usage(tariff, settings, "normzeilen", source, at, Decimal(normzeilen),
                            tariff.per_normzeile))  # fmt: skip
    return lines


# ------------------------------------------------------------------ month statement


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One invoice line: a group of usage lines of one kind, unit price and VAT rate (or the
    base fee / minimum top-up, which have no usage lines). `usage_ids` are the indexes (or
    store ids) of the usage lines behind it."""

    kind: str
    label: str
    quantity: Decimal
    unit_price: Decimal  # cents
    vat_rate: Decimal
    net: int  # cents
    usage_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Statement:
    lines: tuple[StatementLine, ...]
    net: int
    vat: tuple[tuple[Decimal, int, int], ...]  # (rate, net of the rate, VAT)
    vat_total: int
    gross: int
    kleinunternehmer: bool = False


def month_statement(
    tariff: Tariff,
    usage: Sequence[tuple[int, Usage]],
    settings: Billing = Billing(),
) -> Statement:
    """The month's invoice lines from its usage lines ((id, usage) pairs, any order).

    Included volumes are taken from the earliest lines of a kind (by time, then id); an
    included line appears with unit price 0. Lines are grouped by kind, unit price and VAT
    rate. The base fee comes first; if the net total stays below `minimum_monthly`, a
    top-up line makes up the difference. VAT is computed per rate on the rate's net sum
    (EN 16931 BT-117), each rounded half-up."""
    base_vat = Decimal(0) if settings.kleinunternehmer else tariff.vat_rate("base")
    lines: list[StatementLine] = []
    if tariff.base_fee:
        lines.append(StatementLine("base", KIND_LABELS["base"], Decimal(1), tariff.base_fee,
                                   base_vat, cents(tariff.base_fee)))  # fmt: skip
    groups: dict[tuple[str, Decimal, Decimal, str], list[tuple[int, Decimal]]] = {}
    left = {k: tariff.included_of(k) for k in KINDS}
    for uid, u in sorted(usage, key=lambda p: (p[1].at, p[0])):
        qty = u.quantity
        free = min(qty, left[u.kind])
        if free > 0:
            left[u.kind] -= free
            groups.setdefault((u.kind, Decimal(0), u.vat_rate, "inkl."), []).append((uid, free))
        if qty - free > 0:
            key = (u.kind, u.unit_price, u.vat_rate, u.surcharge)
            groups.setdefault(key, []).append((uid, qty - free))
    order = {k: i for i, k in enumerate(KINDS)}
    for (kind, price, vat, tag), members in sorted(
        groups.items(), key=lambda g: (order[g[0][0]], g[0][3] != "inkl.", g[0][1])
    ):
        qty = sum((q for _, q in members), Decimal(0))
        label = KIND_LABELS[kind]
        if tag == "inkl.":
            label += " (inklusive)"
        elif tag:
            label += {"evening": " (Abend)", "weekend": " (Wochenende)",
                      "holiday": " (Feiertag)"}[tag]  # fmt: skip
        ids = tuple(dict.fromkeys(uid for uid, _ in members))
        lines.append(StatementLine(kind, label, qty, price, vat, cents(qty * price), ids))
    net = sum(ln.net for ln in lines)
    if tariff.minimum_monthly and net < cents(tariff.minimum_monthly):
        top = cents(tariff.minimum_monthly) - net
        mvat = Decimal(0) if settings.kleinunternehmer else tariff.vat_rate("minimum")
        lines.append(StatementLine("minimum", KIND_LABELS["minimum"], Decimal(1),
                                   Decimal(top), mvat, top))  # fmt: skip
        net += top
    by_rate: dict[Decimal, int] = {}
    for ln in lines:
        by_rate[ln.vat_rate] = by_rate.get(ln.vat_rate, 0) + ln.net
    per_rate = tuple(
        (rate, n, vat_of(n, rate)) for rate, n in sorted(by_rate.items(), reverse=True)
    )
    vat_total = sum(v for _, _, v in per_rate)
    return Statement(tuple(lines), net, per_rate, vat_total, net + vat_total,
                     settings.kleinunternehmer)  # fmt: skip


# ------------------------------------------------------------------ JSON form

_PRICES = (
    "base_fee", "per_answered_call", "per_talk_unit", "forwarding_fee", "per_note",
    "per_voicemail", "per_dictation_minute", "per_normzeile", "minimum_monthly",
)  # fmt: skip


def tariff_to_json(t: Tariff) -> dict[str, object]:
    """The tariff as JSON (Decimals as strings, exact)."""
    s = t.surcharges
    return {
        "name": t.name,
        **{f: str(getattr(t, f)) for f in _PRICES},
        "increment": {
            "first": t.increment.first,
            "next": t.increment.next,
            "free": t.increment.free,
        },  # fmt: skip
        "included": {k: str(v) for k, v in t.included},
        "surcharges": {
            "evening_pct": str(s.evening_pct),
            "evening_from": s.evening_from.strftime("%H:%M"),
            "evening_until": s.evening_until.strftime("%H:%M"),
            "weekend_pct": str(s.weekend_pct),
            "holiday_pct": str(s.holiday_pct),
        },  # fmt: skip
        "vat": {k: str(v) for k, v in t.vat},
    }


def _dec(value: object, name: str) -> Decimal:
    if isinstance(value, (float, bool)):
        raise TariffError(name, "give amounts as strings or integers of cents, never float")
    try:
        d = Decimal(str(value))
    except ArithmeticError as e:
        raise TariffError(name, f"not a number: {value!r}") from e
    if not d.is_finite():
        raise TariffError(name, f"not a number: {value!r}")
    return d


def _time(value: object, name: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError as e:
        raise TariffError(name, f"expected HH:MM, not {value!r}") from e


def tariff_from_json(doc: object) -> Tariff:
    """A tariff from its JSON form (prices in cents); TariffError names the bad field."""
    if not isinstance(doc, dict):
        raise TariffError("tariff", "expected an object")
    known = {"name", *_PRICES, "increment", "included", "surcharges", "vat"}
    unknown = set(doc) - known
    if unknown:
        raise TariffError(sorted(unknown)[0], "unknown field")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise TariffError("name", "a name of 1 to 64 characters")
    inc = doc.get("increment") or {}
    if isinstance(inc, str):
        increment = Increment.parse(inc)
    elif isinstance(inc, dict):
        try:
            increment = Increment(int(inc.get("first", 60)), int(inc.get("next", 60)),
                                  int(inc.get("free", 0)))  # fmt: skip
        except (TypeError, ValueError) as e:
            raise TariffError("increment", "whole seconds") from e
    else:
        raise TariffError("increment", "expected '60/60' or an object")
    sur = doc.get("surcharges") or {}
    if not isinstance(sur, dict):
        raise TariffError("surcharges", "expected an object")
    surcharges = Surcharges(
        evening_pct=_dec(sur.get("evening_pct", 0), "evening_pct"),
        evening_from=_time(sur.get("evening_from", "18:00"), "evening_from"),
        evening_until=_time(sur.get("evening_until", "08:00"), "evening_until"),
        weekend_pct=_dec(sur.get("weekend_pct", 0), "weekend_pct"),
        holiday_pct=_dec(sur.get("holiday_pct", 0), "holiday_pct"),
    )
    included = doc.get("included") or {}
    vat = doc.get("vat") or {}
    if not isinstance(included, dict) or not isinstance(vat, dict):
        raise TariffError("included" if not isinstance(included, dict) else "vat", "an object")
    return Tariff(
        name=name.strip(),
        **{f: _dec(doc.get(f, 0), f) for f in _PRICES},
        increment=increment,
        included=tuple((str(k), _dec(v, "included")) for k, v in included.items()),
        surcharges=surcharges,
        vat=tuple((str(k), _dec(v, "vat")) for k, v in vat.items()),
    )


def usage_to_json(u: Usage) -> dict[str, object]:
    return {
        "kind": u.kind, "source_kind": u.source_kind, "source_id": u.source_id,
        "at": u.at.isoformat(), "quantity": str(u.quantity), "unit_price": str(u.unit_price),
        "surcharge": u.surcharge, "surcharge_pct": str(u.surcharge_pct),
        "vat_rate": str(u.vat_rate), "amount": u.amount, "description": u.description,
    }  # fmt: skip
