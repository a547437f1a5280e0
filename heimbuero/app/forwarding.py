"""What the client portal's forwarding screen needs beneath its pages, shared by the HTTP API
and the command line: the simulator for a stored plan or an unsaved draft rules document at a
date and time, and the public holidays of the client's Bundesland for the coming months."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from heimbuero.app import policy
from heimbuero.app._util import country_of, valid
from heimbuero.app.errors import Forbidden, Invalid, NotFound, Problem
from heimbuero.app.policy import Actor
from heimbuero.domain.model import Client, Directory
from heimbuero.office import directory
from heimbuero.office.routing import RoutePlan, RoutingState, holiday_name, route
from heimbuero.office.rules_doc import RulesError, parse_rules_document
from heimbuero.store import Store, closures
from heimbuero.store.closures import Closure

MAX_HOLIDAY_MONTHS = 24
MAX_CLOSURES = 100  # per client
MAX_CLOSURE_DAYS = 366  # per closure
MAX_NOTE = 200


@dataclass(frozen=True, slots=True)
class Holiday:
    day: date
    name: str

    def to_json(self) -> dict[str, str]:
        return {"date": self.day.isoformat(), "name": self.name}


class Forwarding:
    """The simulator with a draft, and the holidays list, for one client's business: staff
    and the business's own users (another business's id is "no such client")."""

    def __init__(
        self, store: Store, routing_state: Callable[[], RoutingState] | None = None
    ) -> None:
        self.store, self.routing_state = store, routing_state

    def _own_number(self, client_id: str, d: Directory, number: str | None) -> str:
        """The client's number as typed (E.164 after reading it), or its first number."""
        own = sorted(e for e, n in d.numbers.items() if n.client == client_id)
        if number is None:
            if not own:
                raise Invalid("number", f"client {client_id!r} has no number yet")
            return own[0]
        e164 = valid("number", directory.validate_e164, number, "number", country_of(self.store))
        if e164 not in own:
            raise Invalid("number", f"{e164} is not a number of client {client_id!r}")
        return e164

    def _client(self, actor: Actor, client_id: str) -> Client:
        client_id = valid("client", directory.validate_slug, client_id)
        policy.require_client_visible(actor, client_id)
        c = self.store.get_client(client_id)
        if c is None:
            raise NotFound("client", client_id)
        return c

    def simulate(
        self,
        actor: Actor,
        client_id: str,
        number: str | None = None,
        at: str | None = None,
        draft: Any = None,
        caller: str | None = None,
    ) -> RoutePlan:
        """Where a call to the client's `number` (as typed; default: its first number) goes
        now or at `at` (ISO 8601; without an offset the client's local time), from `caller`
        (a phone number as typed; None: an unknown caller), with the stored rules or, when
        `draft` is given, with that unsaved rules document (nothing is stored).
        An invalid draft raises Invalid listing every problem with its path in the document."""
        c = self._client(actor, client_id)
        d = self.store.load_directory()
        e164 = self._own_number(c.id, d, number)
        when = valid("at", directory.parse_at, at, c.timezone)
        if caller is not None and caller.strip():
            caller = valid("caller", directory.validate_e164, caller, "caller",
                           d.provider.country_code)  # fmt: skip
        else:
            caller = None
        if draft is not None:
            if not isinstance(draft, dict):
                raise Invalid.many([Problem("", "the rules document must be a mapping")])
            try:
                parsed = parse_rules_document(draft, c.id, d)
            except RulesError as exc:
                raise Invalid.many([Problem(p, m) for p, m in exc.problems]) from None
            d = replace(d, numbers={**d.numbers, **parsed})
        overrides = {o.client: o for o in self.store.list_overrides(now=when)}
        state = self.routing_state() if self.routing_state is not None else RoutingState()
        return route(e164, when, replace(state, overrides=overrides), d, caller)

    def week(
        self,
        actor: Actor,
        client_id: str,
        number: str | None = None,
        day: str | None = None,
        slot_minutes: int = 60,
        caller: str | None = None,
    ) -> dict[str, Any]:
        """The week grid of the portal: for the week (Monday to Sunday) containing `day`
        (YYYY-MM-DD, default today in the client's timezone), in slots of `slot_minutes`
        (15, 30 or 60), which rule decides a call at the start of each slot, computed with
        routing itself (holidays and closures of that week included; no override active,
        nobody registered; a call from `caller`, a number as typed, None: an unknown caller).
        Consecutive slots of one rule are joined into one span."""
        c = self._client(actor, client_id)
        if slot_minutes not in (15, 30, 60):
            raise Invalid("slot", "slot must be 15, 30 or 60 minutes")
        tz = ZoneInfo(c.timezone)
        if day is None:
            ref = datetime.now(tz).date()
        else:
            try:
                ref = date.fromisoformat(day.strip())
            except ValueError:
                raise Invalid("week", f"invalid date {day!r}: expected YYYY-MM-DD") from None
        monday = ref - timedelta(days=ref.weekday())
        d = self.store.load_directory()
        e164 = self._own_number(c.id, d, number)
        if caller is not None and caller.strip():
            caller = valid("caller", directory.validate_e164, caller, "caller",
                           d.provider.country_code)  # fmt: skip
        else:
            caller = None
        state = RoutingState()
        loaded = d.clients.get(c.id)
        closed = set(loaded.closure_days) if loaded is not None else set()
        days: list[dict[str, Any]] = []
        for i in range(7):
            today = monday + timedelta(days=i)
            spans: list[dict[str, Any]] = []
            for slot in range(0, 24 * 60, slot_minutes):
                local = datetime(today.year, today.month, today.day, slot // 60, slot % 60,
                                 tzinfo=tz)  # fmt: skip
                plan = route(e164, local, state, d, caller)
                rule = plan.rule
                end = slot + slot_minutes
                if spans and spans[-1]["rule"] == rule:
                    spans[-1]["end"] = _hhmm(end)
                else:
                    spans.append({"start": _hhmm(slot), "end": _hhmm(end), "rule": rule,
                                  "steps": [{"targets": s.target_texts(), "timeout": s.timeout}
                                            for s in plan.steps]})  # fmt: skip
            days.append({
                "date": today.isoformat(),
                "holiday": holiday_name(c.bundesland, today),
                "closed": today in closed,
                "spans": spans,
            })  # fmt: skip
        return {"client": c.id, "number": e164, "timezone": c.timezone,
                "slot_minutes": slot_minutes, "caller": caller, "days": days}  # fmt: skip

    def office_groups(self, actor: Actor, client_id: str) -> list[str]:
        """The office's groups a client's rules may ring: those the provider's default plan
        rings (names only: who is in a group stays the office's business)."""
        self._client(actor, client_id)
        d = self.store.load_directory()
        names = [t.split(":", 1)[1] for s in d.provider.default_steps for t in s.target_texts()
                 if t.startswith("group:")]  # fmt: skip
        return [n for n in dict.fromkeys(names) if n in d.groups]

    def holidays(
        self, actor: Actor, client_id: str, months: int = 12, start: date | None = None
    ) -> list[Holiday]:
        """The public holidays of the client's Bundesland from `start` (default: today in the
        client's timezone) for `months` months (1-24)."""
        c = self._client(actor, client_id)
        if (
            isinstance(months, bool)
            or not isinstance(months, int)
            or not (1 <= months <= MAX_HOLIDAY_MONTHS)
        ):
            raise Invalid("months", f"months must be 1 to {MAX_HOLIDAY_MONTHS}")
        first = start or datetime.now(ZoneInfo(c.timezone)).date()
        end = _add_months(first, months)  # exclusive
        days: list[Holiday] = []
        day = first
        while day < end:
            name = holiday_name(c.bundesland, day)
            if name is not None:
                days.append(Holiday(day, name))
            day += timedelta(days=1)
        return days


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _add_months(d: date, months: int) -> date:
    """The same day `months` later (the month's last day when it is shorter)."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return date(year, month, min(d.day, (nxt - timedelta(days=1)).day))


def _day(field: str, value: date | str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise Invalid(field, f"invalid date {value!r}: expected YYYY-MM-DD") from None


class Closures:
    """A client's closures (Betriebsurlaub): date ranges with a note. The business reads them;
    staff and the client owner (may_change_forwarding) add and remove them. While a closure is
    on, its days are the client's closure days: rules with `closures: only` (or `exclude`)
    decide what happens to calls then."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _client(self, actor: Actor, client_id: str, write: bool = False) -> Client:
        c = Forwarding(self.store)._client(actor, client_id)
        if write and not policy.may_change_forwarding(actor, c.id):
            raise Forbidden("only staff and the client itself may change its closures")
        return c

    def list(self, actor: Actor, client_id: str) -> list[Closure]:
        c = self._client(actor, client_id)
        with self.store.unit_of_work(write=False) as uow:
            return closures.list_for(uow.session, c.id)

    def add(
        self, actor: Actor, client_id: str, first: date | str, last: date | str | None = None,
        note: str = "",
    ) -> Closure:  # fmt: skip
        """Close from `first` to `last` (inclusive; default: that one day)."""
        c = self._client(actor, client_id, write=True)
        d1 = _day("first", first)
        d2 = d1 if last is None else _day("last", last)
        if d2 < d1:
            raise Invalid("last", "the last day lies before the first")
        if (d2 - d1).days + 1 > MAX_CLOSURE_DAYS:
            raise Invalid("last", f"a closure may last at most {MAX_CLOSURE_DAYS} days")
        note = (note or "").strip()
        if len(note) > MAX_NOTE or any(ord(ch) < 32 for ch in note):
            raise Invalid("note", f"the note must be one line of at most {MAX_NOTE} characters")
        with self.store.unit_of_work() as uow:
            if closures.count(uow, c.id) >= MAX_CLOSURES:
                raise Invalid("first", f"a client may have at most {MAX_CLOSURES} closures")
            return closures.add(uow, c.id, d1, d2, note)

    def remove(self, actor: Actor, client_id: str, closure_id: int) -> None:
        c = self._client(actor, client_id, write=True)
        with self.store.unit_of_work() as uow:
            if not closures.remove(uow, c.id, closure_id):
                raise NotFound("closure", str(closure_id))
