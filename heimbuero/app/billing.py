"""Billing handlers: tariffs (admin), the usage meter (fed by the office's events) and the
month's usage so far (the client sees its own, staff every client's).

The meter stores each billable event as a *reading* (its facts: a call's start, result,
answered_by and talk time; a dictation's Normzeilen and audio seconds) and rates it into
usage lines with the client's tariff in force on the event's local date. `recompute(month)`
rates an open month's readings again after a tariff correction; lines an invoice took are
never touched (a reading with invoiced lines is skipped).
"""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from heimbuero.app import policy
from heimbuero.app.errors import Conflict, Forbidden, Invalid, NotFound, Problem, Unavailable
from heimbuero.app.policy import Actor
from heimbuero.billing.datev import (
    ACCOUNT_LENGTH_RANGE,
    BERATER_RANGE,
    DEFAULT_ACCOUNTS,
    MANDANT_RANGE,
    Booked,
    DatevError,
    Header,
    check_range,
    datev_csv,
    fiscal_year_start,
)
from heimbuero.billing.einvoice import (
    BUYER_FIELDS,
    SELLER_FIELDS,
    EInvoiceError,
    build_documents,
    einvoice_of,
    is_xrechnung,
    missing_buyer,
    missing_seller,
)
from heimbuero.billing.invoicemail import invoice_mail
from heimbuero.billing.tariff import (
    BUNDESLAENDER_DEFAULT,
    CallFacts,
    Tariff,
    TariffAssignment,
    TariffError,
    Usage,
    month_statement,
    rate_call,
    rate_dictation,
    rate_note,
    rate_voicemail,
    tariff_from_json,
    tariff_on,
    tariff_to_json,
    usage_to_json,
)
from heimbuero.billing.tariff import (
    Billing as BillingSettings,
)
from heimbuero.events import (
    CallNoteTaken,
    DictationDelivered,
    Event,
    EventBus,
    EventSink,
    UsageChanged,
    UsageMetered,
    UsageRecomputed,
    VoicemailLeft,
)
from heimbuero.net.mail import Attachment, MailError
from heimbuero.store import Store
from heimbuero.store.billing import BillingRepository, Reading
from heimbuero.store.models import InvoiceMailRow, InvoiceRow, as_utc
from heimbuero.store.uow import UnitOfWork

log = logging.getLogger("heimbuero.billing")

# the DATEV export's EXTF header: Berater- and Mandantennummer (no default: the export
# refuses without them), Sachkontenlänge, the fiscal year's first month, Festschreibung
DATEV_NUMBERS = {
    "datev_berater": ("Beraternummer", BERATER_RANGE),
    "datev_mandant": ("Mandantennummer", MANDANT_RANGE),
    "datev_account_length": ("Sachkontenlänge", ACCOUNT_LENGTH_RANGE),
    "datev_fiscal_year_start": ("first month of the fiscal year", (1, 12)),
}
DATEV_DEFAULTS = {"datev_account_length": "4", "datev_fiscal_year_start": "1"}
SETTINGS = ("kleinunternehmer", "default_bundesland", "invoice_number_format",
            *DEFAULT_ACCOUNTS, *DATEV_NUMBERS, "datev_festschreibung")  # fmt: skip
DEFAULT_NUMBER_FORMAT = "RE-{year}-{seq:06d}"
SELLER_PREFIX = "seller_"  # the provider's own data: billing_settings keys seller_name, …
_LEITWEG_ID = re.compile(r"^[0-9]{2,12}(-[0-9A-Z]{1,30})?-[0-9A-Z]{2}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")

# deliver one e-mail (to, subject, text, attachments, reply-to), blocking until the mail server
# took it; MailError when it did not (heimbuero.net.mail.Mailer.deliver)
SendMail = Callable[[str, str, str, tuple[Attachment, ...], str | None], None]

# subscribe a function to the UsageChanged events (UsageMetered, UsageRecomputed) of the running
# server (its event bus); returns the function that ends the subscription
UsageWatch = Callable[[Callable[[UsageChanged], None]], Callable[[], None]]


def invoice_number(fmt: str, seq: int, year: int) -> str:
    """The invoice number of sequence `seq` in format `fmt` ({seq} and optional {year})."""
    return fmt.format(seq=seq, year=year)


def check_number_format(fmt: str) -> None:
    if "{seq" not in fmt or len(fmt) > 40:
        raise Invalid("invoice_number_format", "must contain {seq} (e.g. RE-{year}-{seq:06d})")
    try:
        invoice_number(fmt, 1, 2026)
    except (KeyError, ValueError, IndexError) as e:
        raise Invalid("invoice_number_format", f"not a valid format: {e}") from None


def _month_of(at: datetime, tz: str) -> str:
    return at.astimezone(ZoneInfo(tz)).strftime("%Y-%m")


def parse_month(text: str) -> str:
    try:
        d = datetime.strptime(text.strip(), "%Y-%m")
    except ValueError as e:
        raise Invalid("month", f"expected YYYY-MM, not {text!r}") from e
    return d.strftime("%Y-%m")


@dataclass(frozen=True, slots=True)
class _ClientInfo:
    id: str
    timezone: str
    bundesland: str


@dataclass(frozen=True, slots=True)
class _Rating:
    """What rating a client's readings needs, read once per unit of work: the billing
    settings, the client's time zone and Bundesland, and its tariff assignments."""

    client: str
    settings: BillingSettings
    info: _ClientInfo
    assignments: list[TariffAssignment]


class Billing:
    """Handlers of billing (see the module text)."""

    def __init__(
        self,
        store: Store,
        events: EventSink | None = None,
        watch: UsageWatch | None = None,
        publish: Callable[[Event], None] | None = None,
    ) -> None:
        """`events` (or `publish`, its `publish`): where UsageMetered and UsageRecomputed
        are published after each commit that rated usage (from the committing thread: the
        server passes a sink that hands them to its event loop); `watch`: how `watch` follows
        them (the web app's handlers get the server's bus)."""
        self.store, self.watch_fn = store, watch
        self.publish = publish if publish is not None else (
            None if events is None else events.publish)  # fmt: skip

    def _after_commit(self, uow: UnitOfWork, event: Event) -> None:
        """Publish `event` once `uow` committed (never when it rolls back)."""
        publish = self.publish
        if publish is not None:
            uow.after_commit(lambda: publish(event))

    # ------------------------------------------------------------------ settings, tariffs

    def settings(self, actor: Actor) -> dict[str, Any]:
        policy.require_admin(actor)
        with self.store.unit_of_work(write=False) as uow:
            return self._settings_json(uow.billing)

    def _settings(self, repo: BillingRepository) -> BillingSettings:
        s = repo.settings()
        return BillingSettings(
            kleinunternehmer=s.get("kleinunternehmer", "false") == "true",
            default_bundesland=s.get("default_bundesland", "BY"),
        )

    def _settings_json(self, repo: BillingRepository) -> dict[str, Any]:
        s = self._settings(repo)
        return {"kleinunternehmer": s.kleinunternehmer,
                "default_bundesland": s.default_bundesland,
                "invoice_number_format": repo.settings().get("invoice_number_format",
                                                             DEFAULT_NUMBER_FORMAT),
                **datev_accounts(repo), **datev_numbers(repo),
                "datev_festschreibung":
                    repo.settings().get("datev_festschreibung") == "true"}  # fmt: skip

    def set_settings(self, actor: Actor, **changes: Any) -> dict[str, Any]:
        """Change billing settings (SETTINGS). Any value refused: nothing is stored, and
        Invalid lists every refused setting (each shown at its field by the console)."""
        policy.require_admin(actor)
        problems: list[Problem] = []
        for key, value in changes.items():
            try:
                changes[key] = _setting_value(key, value)
            except Invalid as e:
                problems.extend(e.problems)
        if problems:
            raise Invalid.many(problems, document=False)
        with self.store.unit_of_work() as uow:
            for key, value in changes.items():
                uow.billing.set_setting(key, "true" if value is True else
                                        "false" if value is False else str(value))  # fmt: skip
            return self._settings_json(uow.billing)

    def put_tariff(self, actor: Actor, doc: Any) -> dict[str, Any]:
        """Create or replace a tariff template (prices in cents, as strings or integers)."""
        policy.require_admin(actor)
        try:
            tariff = tariff_from_json(doc)
        except TariffError as e:
            raise Invalid(e.field, str(e)) from e
        with self.store.unit_of_work() as uow:
            uow.billing.put_template(tariff)
        return tariff_to_json(tariff)

    def tariffs(self, actor: Actor) -> list[dict[str, Any]]:
        policy.require_staff(actor)
        with self.store.unit_of_work(write=False) as uow:
            return [tariff_to_json(t) for t in uow.billing.templates()]

    def assign(self, actor: Actor, client: str, template: str, valid_from: date) -> None:
        """The client's tariff from a date: a copy of the template as it is now. A date in a
        month the client has an invoice of (not cancelled) is refused: Conflict (that month
        never changes; invoiced lines of other months keep their prices too). What was metered
        from that date on and not invoiced is rated again under it, in the same transaction
        (calls taken before the tariff was set up bill from its first day)."""
        policy.require_admin(actor)
        with self.store.unit_of_work() as uow:
            if uow.clients.get(client) is None:
                raise NotFound("client", client)
            tariff = uow.billing.template(template)
            if tariff is None:
                raise NotFound("tariff", template)
            uow.billing.lock_client(client)
            month = valid_from.strftime("%Y-%m")
            invoiced = uow.billing.invoice_of(client, month)
            if invoiced is not None:
                raise Conflict(
                    f"{month} is invoiced for client {client} already (invoice "
                    f"{invoiced.number}): a tariff from {valid_from.isoformat()} would change "
                    "it; choose a date in a month not invoiced (or cancel the invoice first)"
                )
            uow.billing.assign(client, tariff, valid_from)
            info = self._client(uow, client, self._settings(uow.billing))
            since = datetime.combine(valid_from, time.min, ZoneInfo(info.timezone))
            readings = uow.billing.open_readings_since(client, since.astimezone(UTC))
            for reading in readings:
                uow.billing.replace_usage(reading, self._rate(uow, reading))
            self._after_commit(
                uow,
                UsageRecomputed(
                    datetime.now(UTC).timestamp(), client, month, None, "tariff", len(readings)
                ),
            )

    def client_tariffs(self, actor: Actor, client: str) -> list[dict[str, Any]]:
        policy.require_client_visible(actor, client)
        with self.store.unit_of_work(write=False) as uow:
            if uow.clients.get(client) is None:
                raise NotFound("client", client)
            return [{"valid_from": a.valid_from.isoformat(), "tariff": tariff_to_json(a.tariff)}
                    for a in uow.billing.assignments(client)]  # fmt: skip

    # ------------------------------------------------------------------ seller and buyers

    def seller(self, actor: Actor) -> dict[str, Any]:
        """The provider's data for its invoices, and what EN 16931 still misses of it."""
        policy.require_admin(actor)
        with self.store.unit_of_work(write=False) as uow:
            seller = seller_of(uow.billing)
        return {**seller, "missing": missing_seller(seller)}

    def set_seller(self, actor: Actor, **changes: Any) -> dict[str, Any]:
        """Change the provider's data (name, street, postcode, city, country, vat_id,
        tax_number, iban, bic, contact, email, phone); an empty string clears a field. Any
        field refused: nothing is stored, and Invalid lists every refused field."""
        policy.require_admin(actor)
        clean: dict[str, str] = {}
        problems: list[Problem] = []  # every refused field at once (each shown at its field)
        for key, value in changes.items():
            try:
                clean[key] = _party_value(key, value, SELLER_FIELDS)
            except Invalid as e:
                problems.extend(e.problems)
        if problems:
            raise Invalid.many(problems, document=False)
        with self.store.unit_of_work() as uow:
            for key, value in clean.items():
                uow.billing.set_setting(SELLER_PREFIX + key, value)
            seller = seller_of(uow.billing)
        return {**seller, "missing": missing_seller(seller)}

    def buyer(self, actor: Actor, client: str) -> dict[str, Any]:
        """A client's invoice address (the client's own user may read it)."""
        policy.require_client_visible(actor, client)
        with self.store.unit_of_work(write=False) as uow:
            return buyer_of(uow, client)

    def set_buyer(self, actor: Actor, client: str, **changes: Any) -> dict[str, Any]:
        """Change a client's invoice address (name, street, postcode, city, country, vat_id,
        leitweg_id, email); an empty string clears a field. A Leitweg-ID makes its invoices
        XRechnung; XRechnung needs the street, postcode and city (BR-DE-3, BR-DE-4). Any field
        refused: nothing is stored, and Invalid lists every refused field."""
        policy.require_admin(actor)
        clean: dict[str, str] = {}
        problems: list[Problem] = []  # every refused field at once (each shown at its field)
        for key, value in changes.items():
            try:
                clean[key] = _party_value(key, value, BUYER_FIELDS)
            except Invalid as e:
                problems.extend(e.problems)
        with self.store.unit_of_work() as uow:
            if uow.clients.get(client) is None:
                raise NotFound("client", client)
            merged = {**buyer_of(uow, client), **clean}
            if merged["leitweg_id"] and "leitweg_id" not in {p.field for p in problems}:
                problems.extend(
                    Problem(f, "an XRechnung buyer (with a Leitweg-ID) needs it")
                    for f in ("street", "postcode", "city")
                    if not merged[f] and f not in {p.field for p in problems}
                )  # fmt: skip
            if problems:
                raise Invalid.many(problems, document=False)
            uow.billing.set_buyer(client, clean)
            return buyer_of(uow, client)

    # ------------------------------------------------------------------ the meter

    def _client(self, uow: UnitOfWork, client_id: str, settings: BillingSettings) -> _ClientInfo:
        c = uow.clients.get(client_id)
        if c is None:
            return _ClientInfo(client_id, "Europe/Berlin", settings.default_bundesland)
        bl = getattr(c, "bundesland", None) or settings.default_bundesland
        return _ClientInfo(c.id, getattr(c, "timezone", None) or "Europe/Berlin", bl)

    def _rating(self, uow: UnitOfWork, client: str) -> _Rating:
        settings = self._settings(uow.billing)
        return _Rating(
            client, settings, self._client(uow, client, settings), uow.billing.assignments(client)
        )

    def _rate(
        self, uow: UnitOfWork, reading: Reading, rating: _Rating | None = None
    ) -> list[Usage]:
        r = rating if rating is not None else self._rating(uow, reading.client)
        local_day = reading.at.astimezone(ZoneInfo(r.info.timezone)).date()
        tariff = tariff_on(r.assignments, local_day)
        if tariff is None:
            return []
        return rate_reading(reading, tariff, r.info.bundesland, r.info.timezone, r.settings)

    def _meter_rating(self, uow: UnitOfWork, client: str) -> _Rating:
        """Lock the client for this unit of work, then read what rating its readings needs
        (a tariff assigned meanwhile waits for the lock, so none is missed)."""
        uow.billing.lock_client(client)
        return self._rating(uow, client)

    def _meter(self, uow: UnitOfWork, rating: _Rating, source_kind: str, source_id: str,
               at: datetime, facts: dict[str, Any], *, unread: bool = False) -> int:  # fmt: skip
        """Store a reading of the client of `rating` (from `_meter_rating` in this unit of
        work) and rate it (unless an invoice took it); the number of lines. `unread`: this
        unit of work found that the source has no reading yet (so it is not looked up)."""
        client, info = rating.client, rating.info
        old = None if unread else uow.billing.reading(source_kind, source_id)
        if old is not None and uow.billing.invoiced(old.id):
            log.warning("billing: %s %s is invoiced already; new facts ignored",
                        source_kind, source_id)  # fmt: skip
            return 0
        month = _month_of(at, info.timezone)
        new = old is None
        reading = uow.billing.record(client, month, source_kind, source_id, as_utc(at), facts,
                                     new=new)  # fmt: skip
        usage = self._rate(uow, reading, rating)
        lines = len(uow.billing.replace_usage(reading, usage, new=new))
        self._after_commit(
            uow,
            UsageMetered(
                datetime.now(UTC).timestamp(), client, month, source_kind, source_id, lines
            ),
        )
        return lines

    def meter_calls(self, limit: int = 1000) -> int:
        """Rate every ended call record of a client not rated yet; the number rated."""
        with self.store.unit_of_work() as uow:
            rows = uow.billing.unmetered_calls(limit)
            # clients locked in one order (their records' order kept within each): two nodes
            # metering at once wait for each other instead of deadlocking. Each client is
            # locked, and its settings, time zone and tariffs read, once for all its records:
            # this runs in the server's writer thread, and every query costs the event loop
            # time (the GIL), where an SQLite query is all CPU. The records have no reading:
            # unmetered_calls read that in this unit of work, which holds the write lock.
            rating: _Rating | None = None
            for r in sorted(rows, key=lambda r: r.client or ""):
                facts = {"result": r.result, "answered_by": r.answered_by,
                         "talk_seconds": float(r.talk_seconds or 0.0)}  # fmt: skip
                assert r.client is not None
                if rating is None or rating.client != r.client:
                    rating = self._meter_rating(uow, r.client)
                self._meter(uow, rating, "call_record", str(r.id), as_utc(r.started_at), facts,
                            unread=True)  # fmt: skip
            return len(rows)

    def on_note(self, event: CallNoteTaken) -> None:
        self._meter_event(event.client, "call_note", str(event.note_id), event.at,
                          {"agent": event.agent, "call_id": event.call_id})  # fmt: skip

    def on_voicemail(self, event: VoicemailLeft) -> None:
        self._meter_event(event.client, "voicemail", str(event.voicemail_id), event.at,
                          {"seconds": event.seconds, "call_id": event.call_id})  # fmt: skip

    def on_dictation(self, event: DictationDelivered) -> None:
        self._meter_event(event.client, "dictation_job", str(event.job_id), event.at,
                          {"normzeilen": event.normzeilen,
                           "audio_seconds": event.audio_seconds})  # fmt: skip

    def _meter_event(self, client: str, kind: str, sid: str, at: float,
                     facts: dict[str, Any]) -> None:  # fmt: skip
        with self.store.unit_of_work() as uow:
            rating = self._meter_rating(uow, client)
            self._meter(uow, rating, kind, sid, datetime.fromtimestamp(at, UTC), facts)

    def meters(self) -> list[tuple[type[Event], Callable[[Any], None]]]:
        """The billable events and the handler that rates each (blocking: store writes)."""
        return [
            (CallNoteTaken, self.on_note),
            (VoicemailLeft, self.on_voicemail),
            (DictationDelivered, self.on_dictation),
        ]

    def watch(self, actor: Actor, on_usage: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `on_usage(…)` each time usage the actor may see changed (staff: every
        client's; a client's users: their business's only): `{"client", "month", "lines"}`
        when a usage reading was rated; `{"client", "month", "until", "reason", "readings"}`
        when open usage was rated again (a tariff assigned from a day of `month`: `until`
        None, every later month too; a month recomputed: `until` == `month`). Returns the
        function that ends the watch."""
        if not actor.staff and not actor.client:
            raise Forbidden("only staff and a client's users follow usage")
        if self.watch_fn is None:
            raise Unavailable("live usage is not available")
        own = actor.client

        def listener(event: UsageChanged) -> None:
            if not actor.staff and event.client != own:
                return
            if isinstance(event, UsageMetered):
                on_usage({"client": event.client, "month": event.month, "lines": event.lines})
            elif isinstance(event, UsageRecomputed):
                on_usage({"client": event.client, "month": event.month, "until": event.until,
                          "reason": event.reason, "readings": event.readings})  # fmt: skip

        return self.watch_fn(listener)

    def subscribe(self, bus: EventBus) -> None:
        """Rate the billable events as they are published (the server instead runs the
        handlers of `meters()` in its writer thread)."""
        for kind, fn in self.meters():
            bus.subscribe(kind, fn)

    def recompute(self, actor: Actor, client: str, month: str) -> int:
        """Rate an open month's readings of a client again (after a tariff correction);
        readings an invoice took stay as they are. The number of readings rated again."""
        policy.require_admin(actor)
        month = parse_month(month)
        n = 0
        with self.store.unit_of_work() as uow:
            if uow.clients.get(client) is None:
                raise NotFound("client", client)
            for reading in uow.billing.readings(client, month):
                if uow.billing.invoiced(reading.id):
                    continue
                uow.billing.replace_usage(reading, self._rate(uow, reading))
                n += 1
            self._after_commit(
                uow,
                UsageRecomputed(
                    datetime.now(UTC).timestamp(), client, month, month, "recompute", n
                ),
            )
        return n

    # ------------------------------------------------------------------ reading usage

    def usage(self, actor: Actor, client: str, month: str | None = None) -> dict[str, Any]:
        """The month's usage lines and what they cost so far (the statement as it would be
        invoiced now). A client sees only its own (another client: not found)."""
        policy.require_client_visible(actor, client)
        with self.store.unit_of_work(write=False) as uow:
            if uow.clients.get(client) is None:
                raise NotFound("client", client)
            settings = self._settings(uow.billing)
            info = self._client(uow, client, settings)
            if month is None:
                month = datetime.now(ZoneInfo(info.timezone)).strftime("%Y-%m")
            month = parse_month(month)
            usage = uow.billing.usage(client, month)
            first = date.fromisoformat(f"{month}-01")
            tariff = tariff_on(uow.billing.assignments(client), first)
        lines = [{"id": uid, **usage_to_json(u)} for uid, u in usage]
        out: dict[str, Any] = {"client": client, "month": month, "lines": lines,
                               "tariff": None if tariff is None else tariff.name}  # fmt: skip
        if tariff is not None:
            st = month_statement(tariff, usage, settings)
            out["statement"] = {
                "lines": [{"kind": ln.kind, "label": ln.label, "quantity": str(ln.quantity),
                           "unit_price": str(ln.unit_price), "vat_rate": str(ln.vat_rate),
                           "net": ln.net, "usage_ids": list(ln.usage_ids)}
                          for ln in st.lines],
                "net": st.net, "vat": st.vat_total, "gross": st.gross,
                "kleinunternehmer": st.kleinunternehmer,
            }  # fmt: skip
        return out

    def provider_usage(self, actor: Actor, month: str) -> dict[str, int]:
        """Staff: per client, the month's usage so far in cents (usage lines only)."""
        policy.require_staff(actor)
        month = parse_month(month)
        with self.store.unit_of_work(write=False) as uow:
            return uow.billing.usage_months(month)


def due_month(now: datetime, day: int, hour: int, timezone: str) -> str | None:
    """The month the scheduled run invoices at `now` (the previous one, from `day` at `hour`
    local time on), or None (off, or not yet this month)."""
    if day <= 0:
        return None
    local = now.astimezone(ZoneInfo(timezone))
    if (local.day, local.hour) < (day, hour):
        return None
    prev = local.date().replace(day=1) - timedelta(days=1)
    return prev.strftime("%Y-%m")


class InvoiceSchedule:
    """When the scheduled run (`serve`) makes a month's invoices and e-mails them (sans-IO:
    the caller gives the times and does the work). A month is invoiced once per process (the
    run itself is idempotent); with `send` its unsent invoices are e-mailed right after, and
    while some could not be sent, again every `retry` seconds until they are."""

    def __init__(self, send: bool, retry: float) -> None:
        self.send, self.retry = send, retry
        self.done: str | None = None  # the month last invoiced
        self.send_at: float | None = None  # (monotonic) when its unsent invoices go next

    def run_due(self, month: str | None) -> bool:
        """Whether to run the invoices of `month` (from `due_month`) now."""
        return month is not None and month != self.done

    def ran(self, month: str, now: float) -> None:
        self.done = month
        self.send_at = now if self.send else None

    def send_due(self, now: float) -> str | None:
        """The month whose unsent invoices to e-mail now, or None."""
        if self.done is not None and self.send_at is not None and now >= self.send_at:
            return self.done
        return None

    def sent(self, failed: bool, now: float) -> None:
        """The e-mailing ended; `failed`: some invoices could not be sent (tried again)."""
        self.send_at = now + self.retry if failed else None


class Invoices:
    """Month invoices: one per client and month, gapless numbers, immutable once issued; a
    correction is a cancellation invoice (Storno) and a new invoice."""

    def __init__(self, store: Store, billing: Billing, mail: SendMail | None = None) -> None:
        self.store = store
        self.billing = billing
        self.mail = mail

    def run(self, actor: Actor, month: str, now: datetime | None = None) -> list[dict[str, Any]]:
        """Invoice every client with a tariff for `month` (a month that has ended) that has no
        current invoice of it; each invoice in its own transaction with its number."""
        policy.require_admin(actor)
        month = parse_month(month)
        now = now or datetime.now(UTC)
        first = date.fromisoformat(f"{month}-01")
        end = (first + timedelta(days=32)).replace(day=1)
        if now.astimezone(ZoneInfo("Europe/Berlin")).date() < end:
            raise Invalid("month", f"{month} has not ended yet")
        with self.store.unit_of_work(write=False) as uow:
            missing = missing_seller(seller_of(uow.billing))
        if missing:
            raise Invalid("seller", "the provider's invoice data is incomplete, missing: "
                          f"{', '.join(missing)} (heimbuero billing seller --help)")  # fmt: skip
        self.complete_documents()  # an earlier run stopped between an invoice and its documents
        self.billing.meter_calls(limit=100_000)
        with self.store.unit_of_work(write=False) as uow:
            clients = uow.billing.billed_clients()
        made = []
        for client in clients:
            inv = self._invoice_client(client, month, first, now)
            if inv is not None:
                self._make_documents(inv.pop("id"))
                made.append({**inv, "documents": True})
        return made

    def _invoice_client(self, client: str, month: str, first: date,
                        now: datetime) -> dict[str, Any] | None:  # fmt: skip
        with self.store.unit_of_work() as uow:
            settings = self.billing._settings(uow.billing)
            tariff = tariff_on(uow.billing.assignments(client), first)
            if tariff is None:
                return None
            parties = {"seller": seller_of(uow.billing), "buyer": buyer_of(uow, client)}
            if missing := missing_buyer(parties["buyer"]):
                raise Invalid("buyer", f"client {client}: buyer data missing: {', '.join(missing)}")
            seq = uow.billing.next_invoice_seq()  # locks the counter: runs serialize here
            if uow.billing.invoice_of(client, month) is not None:
                uow.session.rollback()  # the number goes back: no gap
                return None
            open_usage = uow.billing.usage(client, month, open_only=True)
            st = month_statement(tariff, open_usage, settings)
            if not st.lines:  # nothing to bill (no base fee, no usage): no invoice (BR-16)
                uow.session.rollback()
                return None
            fmt = uow.billing.settings().get("invoice_number_format", DEFAULT_NUMBER_FORMAT)
            doc = statement_doc(st, tariff.name)
            doc.update(parties)  # as they are at issue, never changed afterwards
            number = invoice_number(fmt, seq, _local_year(now))
            row = InvoiceRow(number=number, seq=seq, client=client, month=month,
                             kind="invoice", issued_at=now, net=st.net, vat=st.vat_total,
                             gross=st.gross, doc=doc)  # fmt: skip
            uow.billing.add_invoice(row, [i for i, _ in open_usage])
            return {"id": row.id, **invoice_json(row, documents=False)}

    def cancel(self, actor: Actor, number: str, now: datetime | None = None) -> dict[str, Any]:
        """A cancellation invoice (Storno) for an issued invoice: its own number, every line
        negated; the original stays as it was (only marked as cancelled) and its usage lines
        are open again for the corrected invoice of the next run."""
        policy.require_admin(actor)
        now = now or datetime.now(UTC)
        with self.store.unit_of_work() as uow:
            orig = uow.billing.invoice_by_number(number)
            if orig is None or orig.kind != "invoice":
                raise NotFound("invoice", number)
            if orig.cancelled_by is not None:
                raise Invalid("number", f"invoice {number} is cancelled already")
            seq = uow.billing.next_invoice_seq()
            fmt = uow.billing.settings().get("invoice_number_format", DEFAULT_NUMBER_FORMAT)
            doc = storno_doc(orig.doc, orig.number)
            if "seller" not in doc:  # issued before e-invoices: the parties as they are now
                doc["seller"], doc["buyer"] = seller_of(uow.billing), buyer_of(uow, orig.client)
            row = InvoiceRow(number=invoice_number(fmt, seq, _local_year(now)), seq=seq,
                             client=orig.client, month=orig.month, kind="storno",
                             cancels=orig.id, issued_at=now, net=-orig.net, vat=-orig.vat,
                             gross=-orig.gross, doc=doc)  # fmt: skip
            uow.billing.add_invoice(row, [])
            orig.cancelled_by = row.id
            uow.billing.release_usage(orig.id)
            rid, out = row.id, invoice_json(row, documents=True)
        self._make_documents(rid)
        return out

    def list(self, actor: Actor, client: str | None = None) -> list[dict[str, Any]]:
        if client is not None:
            policy.require_client_visible(actor, client)
        elif not actor.staff:
            client = actor.client or "\0"
        with self.store.unit_of_work(write=False) as uow:
            rows = uow.billing.invoices(client)
            done = uow.billing.with_files([r.id for r in rows])
            mails = uow.billing.last_mails([r.id for r in rows])
            return [invoice_json(r, documents=r.id in done, mail=mails.get(r.id)) for r in rows]

    def get(self, actor: Actor, number: str) -> dict[str, Any]:
        """An invoice with its lines, each line's usage lines and their sources."""
        with self.store.unit_of_work(write=False) as uow:
            row = uow.billing.invoice_by_number(number)
            if row is None or not policy.sees_client(actor, row.client):
                raise NotFound("invoice", number)
            out = invoice_json(row, documents=bool(uow.billing.with_files([row.id])),
                               mail=uow.billing.last_mails([row.id]).get(row.id))  # fmt: skip
            out["doc"] = row.doc
            ids = [i for ln in row.doc.get("lines", []) for i in ln.get("usage_ids", [])]
            out["usage"] = [{"id": i, **usage_to_json(u)} for i, u in uow.billing.usage_by_ids(ids)]
            return out

    def document(self, actor: Actor, number: str, kind: str) -> tuple[str, str, bytes]:
        """An invoice's document, `kind` "pdf" (PDF/A-3 with the XML embedded) or "xml" (the
        CII XML: Factur-X EN 16931 or XRechnung): (file name, media type, bytes). A client
        sees only its own business's invoices (another one: not found)."""
        if kind not in ("pdf", "xml"):
            raise Invalid("kind", "pdf or xml")
        for attempt in (1, 2):
            with self.store.unit_of_work(write=False) as uow:
                row = uow.billing.invoice_by_number(number)
                if row is None or not policy.sees_client(actor, row.client):
                    raise NotFound("invoice", number)
                if "seller" not in row.doc:
                    why = f"invoice {number} was issued before e-invoices: no documents"
                    raise NotFound("invoice document", number, why)
                rid, files = row.id, uow.billing.files(row.id)
                if files is not None and kind == "pdf":
                    return f"{row.number}.pdf", "application/pdf", bytes(files.pdf)
                if files is not None:
                    return f"{row.number}.xml", "application/xml", bytes(files.xml)
            if attempt == 1:  # issued, its documents not yet made (a run stopped in between)
                self._make_documents(rid)
        raise NotFound("invoice document", number)

    def send(self, actor: Actor, number: str, resend: bool = False,
             now: datetime | None = None) -> dict[str, Any]:  # fmt: skip
        """Admin: e-mail an invoice to its client's billing address (the buyer's e-mail) with
        the PDF/A-3 (ZUGFeRD) attached, or the XRechnung XML for a buyer with a Leitweg-ID.
        Recorded before the mail server is asked and after it took the mail, so the answer
        comes only once the sending is stored. An invoice sent before (or whose earlier sending
        had no outcome) is refused unless `resend`. The mail server failing: Unavailable, and
        the invoice stays unsent (send it again later). A client's user: another business's
        invoice is not found, its own is forbidden."""
        with self.store.unit_of_work(write=False) as uow:
            row = uow.billing.invoice_by_number(number)
            if row is None or not policy.sees_client(actor, row.client):
                raise NotFound("invoice", number)
            rid, client = row.id, row.client
            issued = as_utc(row.issued_at).astimezone(ZoneInfo("Europe/Berlin")).date()
            facts = (row.number, row.kind, issued, row.month, row.client, dict(row.doc))
            to = buyer_of(uow, client)["email"]
        policy.require_admin(actor)
        if self.mail is None:
            raise Unavailable("e-mail is not available here ([mail] in config.toml)")
        if not to:
            raise Invalid("email", f"client {client} has no billing e-mail address "
                          f"(heimbuero billing buyer {client} --email ADDRESS)")  # fmt: skip
        if "seller" not in facts[5]:
            raise NotFound(
                "invoice document",
                number,
                f"invoice {number} was issued before e-invoices: nothing to send",
            )
        try:
            mail = invoice_mail(einvoice_of(*facts))
        except EInvoiceError as e:
            raise Invalid("invoice", str(e)) from e
        name, media, content = self.document(actor, number, mail.document)  # made if missing
        now = now or datetime.now(UTC)
        with self.store.unit_of_work() as uow:
            before = uow.billing.mails(rid)
            done = [m for m in before if m.state in ("sent", "sending")]
            if done and not resend:
                raise Conflict(_sent_before(number, done[-1]))
            started = uow.billing.start_mail(rid, to, mail.document, actor.name, now)
            if started is None:
                raise Conflict(f"invoice {number} is being sent right now")
            mail_id = started.id
        try:
            self.mail(to, mail.subject, mail.text, (Attachment(name, content, media),),
                      mail.reply_to)  # fmt: skip
        except MailError as e:
            with self.store.unit_of_work() as uow:
                uow.billing.end_mail(mail_id, datetime.now(UTC), error=str(e))
            log.warning("billing: invoice %s not sent to %s: %s", number, to, e)
            raise Unavailable(f"invoice {number} was not sent: {e}; it stays unsent, "
                              "send it again later") from e  # fmt: skip
        sent_at = datetime.now(UTC)
        with self.store.unit_of_work() as uow:
            uow.billing.end_mail(mail_id, sent_at)
        log.info("billing: invoice %s sent to %s (%s)", number, to, mail.document)
        with self.store.unit_of_work(write=False) as uow:
            sent = uow.billing.invoice(rid)
            assert sent is not None
            return invoice_json(sent, documents=True,
                                mail=uow.billing.last_mails([rid]).get(rid))  # fmt: skip

    def send_unsent(self, actor: Actor, now: datetime | None = None,
                    month: str | None = None) -> builtins.list[dict[str, Any]]:  # fmt: skip
        """Admin: `send` every e-invoice and Storno never sent (nor being sent), oldest first,
        or those of `month`; one that fails does not stop the others. Per invoice
        {"number", "sent"} or {"number", "error"}."""
        policy.require_admin(actor)
        with self.store.unit_of_work(write=False) as uow:
            rows = [
                r for r in uow.billing.invoices()
                if "seller" in r.doc and (month is None or r.month == month)
            ]  # fmt: skip
            done = uow.billing.last_mails([r.id for r in rows])
            todo = [r.number for r in rows if r.id not in done]
        out: builtins.list[dict[str, Any]] = []
        for number in todo:
            try:
                out.append({"number": number, "sent": self.send(actor, number, now=now)["sent"]})
            except (Invalid, Conflict, Unavailable, NotFound) as e:
                out.append({"number": number, "error": str(e)})
        return out

    def complete_documents(self) -> int:
        """Make the documents of every issued invoice that has none yet (a run or cancel
        stopped between the invoice's commit and its documents'); the number made."""
        with self.store.unit_of_work(write=False) as uow:
            pending = uow.billing.invoices_without_files()
        made = 0
        for rid in pending:
            try:
                self._make_documents(rid)
                made += 1
            except Exception:  # one that cannot be made must not stop the others, nor a run
                log.exception("billing: the documents of invoice id %d could not be made", rid)
        if made:
            log.warning("billing: made the missing documents of %d invoices", made)
        return made

    def _make_documents(self, invoice_id: int) -> None:
        """An issued invoice's PDF/A-3 and XML, built from its stored `doc` outside any
        transaction (about 0.1 s: the number counter is not held meanwhile) and stored in
        a transaction of their own; never replaced once stored."""
        with self.store.unit_of_work(write=False) as uow:
            row = uow.billing.invoice(invoice_id)
            if row is None or uow.billing.with_files([invoice_id]):
                return
            issued = as_utc(row.issued_at).astimezone(ZoneInfo("Europe/Berlin")).date()
            try:
                inv = einvoice_of(row.number, row.kind, issued, row.month, row.client, row.doc)
            except EInvoiceError as e:
                raise Invalid("invoice", str(e)) from e
            profile = "xrechnung" if is_xrechnung(row.doc) else "en16931"
        try:
            pdf, xml = build_documents(inv)
        except EInvoiceError as e:  # the server lacks what the PDF needs (its fonts)
            raise Unavailable(str(e)) from e
        with self.store.unit_of_work() as uow:
            uow.billing.add_files(invoice_id, profile, pdf, xml)

    def datev(self, actor: Actor, month: str, now: datetime | None = None) -> bytes:
        """Admin: the DATEV Buchungsstapel (EXTF header, column header, booking lines;
        Windows-1252) of the invoices and cancellation invoices issued in `month` (by their
        issue date, German time). Refused while the Berater- or Mandantennummer is unset."""
        policy.require_admin(actor)
        month = parse_month(month)
        berlin = ZoneInfo("Europe/Berlin")
        with self.store.unit_of_work(write=False) as uow:
            accounts = datev_accounts(uow.billing)
            numbers = datev_numbers(uow.billing)
            locked = uow.billing.settings().get("datev_festschreibung") == "true"
            booked = [
                Booked(r.number, r.client, r.kind, as_utc(r.issued_at).astimezone(berlin).date(),
                       tuple((Decimal(v["rate"]), int(v["net"]), int(v["vat"]))
                             for v in r.doc.get("vat", [])),
                       bool(r.doc.get("kleinunternehmer")), r.month)
                for r in uow.billing.invoices()
                if as_utc(r.issued_at).astimezone(berlin).strftime("%Y-%m") == month
            ]  # fmt: skip
        for key in ("datev_berater", "datev_mandant"):
            if numbers[key] is None:
                raise Invalid(key, f"the DATEV {DATEV_NUMBERS[key][0]} is not set (heimbuero "
                              f"billing settings --{key.replace('_', '-')} N)")  # fmt: skip
        first = date.fromisoformat(f"{month}-01")
        header = Header(
            berater=numbers["datev_berater"] or 0, mandant=numbers["datev_mandant"] or 0,
            fiscal_year_start=fiscal_year_start(first, numbers["datev_fiscal_year_start"] or 1),
            account_length=numbers["datev_account_length"] or 4, date_from=first,
            date_to=(first + timedelta(days=32)).replace(day=1) - timedelta(days=1),
            created=(now or datetime.now(UTC)).astimezone(berlin).replace(tzinfo=None),
            label=f"Rechnungen {month}", locked=locked,
        )  # fmt: skip
        try:
            return datev_csv(booked, header, accounts)
        except DatevError as e:
            raise Invalid(e.field, str(e)) from e


def _sent_before(number: str, mail: InvoiceMailRow) -> str:
    if mail.state == "sending":
        return (f"invoice {number}: a sending to {mail.recipient} started at "
                f"{as_utc(mail.started_at):%Y-%m-%d %H:%M} UTC has no outcome (the process "
                "stopped?) and may have reached it; to send it again, ask for a resend "
                "(--resend, API: ?resend=true)")  # fmt: skip
    assert mail.sent_at is not None
    return (f"invoice {number} was sent to {mail.recipient} at "
            f"{as_utc(mail.sent_at):%Y-%m-%d %H:%M} UTC already; to send it again, ask for a "
            "resend (--resend, API: ?resend=true)")  # fmt: skip


def _setting_value(key: str, value: Any) -> Any:
    """A billing setting's value as stored (a DATEV number as int), or Invalid."""
    if key not in SETTINGS:
        raise Invalid(key, "unknown billing setting")
    if key in ("kleinunternehmer", "datev_festschreibung") and not isinstance(value, bool):
        raise Invalid(key, "true or false")
    if key == "invoice_number_format":
        check_number_format(str(value))
    if key in DEFAULT_ACCOUNTS and not re.fullmatch(r"[0-9]{4,9}", str(value)):
        raise Invalid(key, "an account number (4 to 9 digits)")
    if key in DATEV_NUMBERS:
        what, bounds = DATEV_NUMBERS[key]
        try:
            return check_range(key, str(value).strip(), what, bounds)
        except DatevError as e:
            raise Invalid(key, str(e)) from None
    if key == "default_bundesland" and value not in BUNDESLAENDER_DEFAULT:
        raise Invalid(key, f"one of {', '.join(BUNDESLAENDER_DEFAULT)}")
    return value


def datev_numbers(repo: BillingRepository) -> dict[str, int | None]:
    """The EXTF header's numbers as set (Berater- and Mandantennummer None while unset)."""
    settings = {**DATEV_DEFAULTS, **repo.settings()}
    return {k: int(settings[k]) if settings.get(k) else None for k in DATEV_NUMBERS}


def datev_accounts(repo: BillingRepository) -> dict[str, str]:
    settings = repo.settings()
    return {k: settings.get(k, v) for k, v in DEFAULT_ACCOUNTS.items()}


def seller_of(repo: BillingRepository) -> dict[str, str]:
    settings = repo.settings()
    return {f: settings.get(SELLER_PREFIX + f, "") for f in SELLER_FIELDS}


def buyer_of(uow: UnitOfWork, client: str) -> dict[str, str]:
    """The client's invoice address; the name defaults to the client's name, the country
    to DE."""
    stored = uow.billing.buyer(client) or {}
    row = uow.clients.get(client)
    out = {f: stored.get(f, "") for f in BUYER_FIELDS}
    out["name"] = out["name"] or (row.name if row is not None else client)
    out["country"] = out["country"] or "DE"
    return out


def _party_value(key: str, value: Any, fields: tuple[str, ...]) -> str:
    if key not in fields:
        raise Invalid(key, f"unknown field (one of {', '.join(fields)})")
    if not isinstance(value, str):
        raise Invalid(key, "a text")
    text: str = value.strip()
    return _checked(key, text)


def _checked(key: str, value: str) -> str:
    if len(value) > 200 or any(ord(c) < 32 for c in value):
        raise Invalid(key, "at most 200 characters on one line")
    if not value:
        return value
    if key in ("country", "bic"):
        value = value.upper()
    if key == "country" and not _COUNTRY.match(value):
        raise Invalid(key, "a two-letter country code (ISO 3166-1), e.g. DE")
    if key == "iban" and not iban_ok(value):
        raise Invalid(key, "not a valid IBAN")
    if key == "iban":
        value = value.replace(" ", "").upper()
    if key == "email" and ("@" not in value or " " in value):
        raise Invalid(key, "an e-mail address")
    if key == "leitweg_id" and not _LEITWEG_ID.match(value.upper()):
        raise Invalid(key, "a Leitweg-ID (e.g. 991-12345-06 or 04011000-1234512345-06)")
    if key == "leitweg_id":
        value = value.upper()
    return value


def iban_ok(text: str) -> bool:
    """An IBAN's form and its ISO 13616 check digits (mod 97)."""
    iban = text.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", iban):
        return False
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def _local_year(at: datetime) -> int:
    """The year of an invoice number: the issue date's, in German time."""
    return at.astimezone(ZoneInfo("Europe/Berlin")).year


def statement_doc(st: Any, tariff: str) -> dict[str, Any]:
    return {
        "tariff": tariff,
        "lines": [{"kind": ln.kind, "label": ln.label, "quantity": str(ln.quantity),
                   "unit_price": str(ln.unit_price), "vat_rate": str(ln.vat_rate),
                   "net": ln.net, "usage_ids": list(ln.usage_ids)} for ln in st.lines],
        "vat": [{"rate": str(r), "net": n, "vat": v} for r, n, v in st.vat],
        "net": st.net, "vat_total": st.vat_total, "gross": st.gross,
        "kleinunternehmer": st.kleinunternehmer,
    }  # fmt: skip


def storno_doc(doc: dict[str, Any], cancels: str) -> dict[str, Any]:
    neg = dict(doc)
    neg["cancels"] = cancels
    neg["lines"] = [{**ln, "quantity": str(-Decimal(ln["quantity"])), "net": -ln["net"],
                     "usage_ids": []} for ln in doc["lines"]]  # fmt: skip
    neg["vat"] = [{**v, "net": -v["net"], "vat": -v["vat"]} for v in doc["vat"]]
    neg["net"], neg["vat_total"], neg["gross"] = -doc["net"], -doc["vat_total"], -doc["gross"]
    return neg


def invoice_json(row: InvoiceRow, documents: bool = False,
                 mail: InvoiceMailRow | None = None) -> dict[str, Any]:  # fmt: skip
    """An invoice's summary; `documents` False: issued, but its PDF and XML are not made yet
    (the invoice is not done: the next run, or the first download, makes them). `sent`: its
    latest e-mail (to, when; "sending" with no time: the outcome is unknown), or None."""
    sent = None if mail is None else {
        "to": mail.recipient, "state": mail.state, "document": mail.document,
        "at": None if mail.sent_at is None else as_utc(mail.sent_at).isoformat(),
    }  # fmt: skip
    return {
        "number": row.number, "client": row.client, "month": row.month, "kind": row.kind,
        "issued_at": as_utc(row.issued_at).isoformat(), "net": row.net, "vat": row.vat,
        "gross": row.gross, "cancelled": row.cancelled_by is not None, "documents": documents,
        "sent": sent,
    }  # fmt: skip


def rate_reading(reading: Reading, tariff: Tariff, bundesland: str, timezone: str,
                 settings: BillingSettings) -> list[Usage]:  # fmt: skip
    """The usage lines of one reading under a tariff."""
    f = reading.facts
    sid = int(reading.source_id)
    if reading.source_kind == "call_record":
        facts = CallFacts(sid, reading.at, f.get("result"), f.get("answered_by"),
                          float(f.get("talk_seconds") or 0.0))  # fmt: skip
        return rate_call(facts, tariff, bundesland, timezone, settings)
    if reading.source_kind == "call_note":
        return rate_note(sid, reading.at, tariff, settings)
    if reading.source_kind == "voicemail":
        return rate_voicemail(sid, reading.at, tariff, settings)
    if reading.source_kind == "dictation_job":
        return rate_dictation(sid, reading.at, int(f.get("normzeilen") or 0),
                              float(f.get("audio_seconds") or 0.0), tariff, settings)  # fmt: skip
    return []
