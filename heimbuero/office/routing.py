"""Call routing: which rule of a dialled number decides, and the plan of steps it rings.

Everything here is pure: no I/O, no SIP, no clock. The caller passes the time (`at`), what is
true right now (`RoutingState`) and the configuration (`Directory`). See docs/ROUTING.md.

Decisions where ROUTING.md is silent (kept in sync with the docstrings below):

- Numbers are normalised before lookup: spaces, `-`, `/`, `.`, `(`, `)` are dropped and a leading
  `00` becomes `+`; the result must be E.164 (`+`, 2..15 digits, no leading 0) or `ValueError`.
- Local time is always derived through UTC, so a non-existent wall-clock time (02:30 on the
  spring-forward day, fold=0) is read as the instant PEP 495 gives it (01:30 UTC = 03:30 CEST).
  An ambiguous time on the fall-back day matches whichever offset `at` carries.
- Time windows are `[start, end)` in local wall-clock time; `end` may be "24:00". A window with
  `start > end` runs across midnight (22:00-06:00): it matches from `start` to midnight and from
  midnight to `end`, and its `days` refer to the day the window *started* (a Friday 22:00-06:00
  window covers Saturday 03:00). `start == end` is empty and never matches. `holidays` and
  `closures` always refer to the calendar date of the call itself.
- `start` without `end` means until midnight; `end` without `start` means from midnight.
- An override matches while `at < until` (at exactly `until` it has expired); a naive `until`
  is read in the client's timezone.
- A number whose client is missing from the directory is routed like an unknown number (provider
  default plan), but the plan names the client id.
- The caller (`caller`: a number as typed or a SIP/tel URI) is read with the provider's country
  code (`0171 2222222` and `+491712222222` are one caller); a caller that is no phone number
  (anonymous, a user name) has no number: it matches no caller number or prefix and is no VIP.
  Whether the caller is a VIP is looked up in the dialled number's client (never another's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_pkg

from heimbuero.domain.model import (
    WEEKDAYS,
    Client,
    Directory,
    GroupStrategy,
    Override,
    Rule,
    Step,
    When,
    caller_number,
    parse_hhmm,
)
from heimbuero.domain.phone import PhoneError, parse_number

__all__ = [
    "FeatureAction",
    "RoutePlan",
    "RoutingState",
    "Step",
    "active_override",
    "expand_group",
    "feature_code",
    "holiday_name",
    "normalise_caller",
    "normalise_number",
    "parse_hhmm",
    "route",
]

E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}$")
_NUMBER_JUNK = re.compile(r"[\s\-/.()]")
_DAY_LABEL = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


# --------------------------------------------------------------------------------------- state


@dataclass
class RoutingState:
    """What is true right now and is not configuration (kept by the services, read by routing)."""

    overrides: dict[str, Override] = field(default_factory=dict)  # client -> active override
    # users with at least one registered device (only `in` is used: a live view will do)
    registered: AbstractSet[str] = frozenset()
    in_call: frozenset[str] = frozenset()  # users in a call right now
    paused: frozenset[str] = frozenset()  # agents who paused themselves
    last_answered: dict[str, float] = field(default_factory=dict)  # user -> epoch s (longest_idle)
    rr_last: dict[str, str] = field(default_factory=dict)  # group -> member who answered last


@dataclass(frozen=True)
class RoutePlan:
    """What the proxy does with a call to `number` (and what the simulator shows)."""

    client: str | None  # client id, None for a number that belongs to no client
    number: str  # normalised E.164
    rule: str | None  # the matched rule's name; None = the provider's default plan
    steps: tuple[Step, ...]
    reason: str  # human-readable why
    # the client's dictation number: the call starts dictation by phone, no rule applies
    dictation: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "number": self.number,
            "rule": self.rule,
            "steps": [{"targets": s.target_texts(), "timeout": s.timeout} for s in self.steps],
            "reason": self.reason,
            "dictation": self.dictation,
        }


# ------------------------------------------------------------------------------------- helpers


def normalise_number(number: str) -> str:
    """'+49 89 1234567', '0049-89-1234567', '+49 (89) 1234567' -> '+49891234567'.

    Raises ValueError when the result is not E.164 (national numbers such as '089 1234567'
    are refused: routing does not guess a country)."""
    if not isinstance(number, str):
        raise ValueError(f"number must be a string, not {type(number).__name__}")
    n = _NUMBER_JUNK.sub("", number)
    if n.startswith("00"):
        n = "+" + n[2:]
    if not E164_RE.match(n):
        raise ValueError(
            f"{number!r} is not an E.164 number (expected '+' and country code, e.g. +49891234567)"
        )
    return n


def normalise_caller(caller: str | None, country: int) -> str | None:
    """The caller's number in E.164 ('sip:0171 2222222@carrier' -> '+491712222222' with
    country 49), or None for no caller or one that is not a phone number."""
    if not caller:
        return None
    try:
        return parse_number(caller_number(caller.strip()), country)
    except PhoneError:
        return None


def _zone(client: Client) -> ZoneInfo:
    try:
        return ZoneInfo(client.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"client {client.id!r} has an unknown timezone {client.timezone!r}"
        ) from exc


_HOLIDAY_CACHE: dict[tuple[str, int], dict[date, str]] = {}


def holiday_name(bundesland: str, day: date) -> str | None:
    """The German name of the public holiday on `day` in `bundesland`, or None.

    Cached per (Bundesland, year) in this module; the data is deterministic."""
    key = (bundesland, day.year)
    table = _HOLIDAY_CACHE.get(key)
    if table is None:
        try:
            cal = holidays_pkg.country_holidays(
                "DE", subdiv=bundesland, years=day.year, language="de"
            )
        except NotImplementedError as exc:
            raise ValueError(f"unknown Bundesland {bundesland!r}") from exc
        table = {d: str(name) for d, name in cal.items()}
        _HOLIDAY_CACHE[key] = table
    return table.get(day)


def active_override(client: str, at: datetime, state: RoutingState) -> Override | None:
    """The client's override if it is still in force at `at` (it has expired at `until`)."""
    ov = state.overrides.get(client)
    if ov is None:
        return None
    if ov.until is None:
        return ov
    until = ov.until
    if until.tzinfo is None:  # defensive: a naive until is read in at's zone
        until = until.replace(tzinfo=at.tzinfo)
    return ov if at < until else None


def _fmt_local(local: datetime) -> str:
    return f"{_DAY_LABEL[local.weekday()]} {local:%Y-%m-%d %H:%M} {local.tzinfo}"


def _days_text(days: tuple[str, ...]) -> str:
    return ",".join(days) if days else "(no day)"


def _check(
    when: When,
    local: datetime,
    at: datetime,
    client: Client,
    state: RoutingState,
    caller: str | None = None,
) -> str | None:
    """None when `when` holds at `local` for `caller` (E.164 or None); otherwise a short
    reason why not."""
    # who calls
    c = when.caller
    if c is not None:
        vip = caller is not None and client.vip(caller) is not None
        if not c.holds(caller, vip):
            who = caller or "unknown caller"
            if c.vip is not None and vip != c.vip:
                return f"{who} is {'not ' if c.vip else ''}a VIP caller"
            return f"{who} is not one of the rule's callers"
    # override
    if when.override is not None:
        ov = active_override(client.id, at, state)
        if ov is None or ov.target != when.override:
            return f"no override {when.override} active"
    # time window and days
    window_day = local.date()
    window = when.window
    if window is not None:
        start, end = window
        now_t = local.time().replace(tzinfo=None)
        if end == start:
            return f"empty window {when.start}-{when.end}"
        if end is not None and end < start:  # across midnight
            if now_t >= start:
                pass
            elif now_t < end:
                window_day = window_day - timedelta(days=1)
            else:
                return f"{now_t:%H:%M} not in {when.start}-{when.end}"
        elif not (now_t >= start and (end is None or now_t < end)):
            return f"{now_t:%H:%M} not in {start:%H:%M}-{when.end or '24:00'}"
    if when.days is not None and WEEKDAYS[window_day.weekday()] not in when.days:
        if window_day != local.date():
            return (
                f"window started on {_DAY_LABEL[window_day.weekday()]}, "
                f"not in {_days_text(when.days)}"
            )
        return f"{_DAY_LABEL[window_day.weekday()]} not in {_days_text(when.days)}"
    # public holidays of the client's Bundesland, on the calendar date of the call
    if when.holidays != "ignore":
        name = holiday_name(client.bundesland, local.date())
        if when.holidays == "exclude" and name is not None:
            return f"public holiday {name} ({client.bundesland})"
        if when.holidays == "only" and name is None:
            return f"not a public holiday in {client.bundesland}"
    # the client's own closure days
    if when.closures != "ignore":
        closed = local.date() in client.closure_days
        if when.closures == "exclude" and closed:
            return "closure day"
        if when.closures == "only" and not closed:
            return "not a closure day"
    # presence of a user's devices
    p = when.presence
    if p is not None:
        if p.registered is not None and (p.user in state.registered) != p.registered:
            return f"{p.user} {'not ' if p.registered else ''}registered"
        if p.in_call is not None and (p.user in state.in_call) != p.in_call:
            return f"{p.user} {'not ' if p.in_call else ''}in a call"
    return None


# ---------------------------------------------------------------------------------------- route


def route(
    number: str,
    at: datetime,
    state: RoutingState,
    directory: Directory,
    caller: str | None = None,
) -> RoutePlan:
    """The plan for a call from `caller` (a number or SIP URI; None: unknown) to `number` at
    the instant `at` (an aware datetime, any zone).

    The first rule of the number whose condition holds (evaluated in the client's timezone)
    decides; no matching rule, or a number that belongs to no client, gives the provider's
    default plan (rule None). Raises ValueError for a number that is not E.164 or a naive `at`.
    """
    e164 = normalise_number(number)
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("route() needs an aware datetime for `at`")
    default = directory.provider.default_steps
    num = directory.numbers.get(e164)
    if num is None:
        return RoutePlan(
            None, e164, None, default, f"{e164} belongs to no client: provider default plan"
        )
    client = directory.clients.get(num.client)
    if client is None:
        return RoutePlan(
            num.client,
            e164,
            None,
            default,
            f"client {num.client!r} of {e164} is not configured: provider default plan",
        )
    if num.dictation:
        why = f"{e164} is the dictation number of {client.id!r}: dictation by phone, no rule"
        return RoutePlan(client.id, e164, None, (), why, dictation=True)
    local = at.astimezone(UTC).astimezone(_zone(client))
    from_number = normalise_caller(caller, directory.provider.country_code)
    skipped: list[str] = []
    # A closure day (Betriebsurlaub) of a number none of whose rules mentions closures: only
    # override rules still apply; otherwise the office takes the call (the default plan).
    closed = local.date() in client.closure_days and not any(
        r.when.closures != "ignore" for r in num.rules
    )
    for rule in num.rules:
        if closed and rule.when.override is None:
            skipped.append(f"{rule.name!r}: closure day")
            continue
        why_not = _check(rule.when, local, at, client, state, from_number)
        if why_not is None:
            return RoutePlan(client.id, e164, rule.name, rule.steps, _reason(rule, local, skipped))
        skipped.append(f"{rule.name!r}: {why_not}")
    what = "no rule matched" if num.rules else "no rules"
    if closed:
        what = "closure day (Betriebsurlaub)"
    reason = f"{what} at {_fmt_local(local)}: provider default plan"
    if skipped:
        reason += f" (skipped {'; '.join(skipped)})"
    return RoutePlan(client.id, e164, None, default, reason)


def _reason(rule: Rule, local: datetime, skipped: list[str]) -> str:
    text = f"rule {rule.name!r} matched: {_fmt_local(local)}"
    if skipped:
        text += f" (skipped {'; '.join(skipped)})"
    return text


# ---------------------------------------------------------------------------------- expand_group


def expand_group(group: str, state: RoutingState, directory: Directory) -> list[str]:
    """The user names to ring for `group` ("team" or "group:team"), in ringing order.

    Members in a call or paused are skipped (registration is not checked here: the proxy rings
    whatever devices a member has). `ring_all` keeps the member order; `longest_idle` orders by
    `state.last_answered` ascending, members who never answered first (ties keep member order);
    `round_robin` starts with the member after `state.rr_last[group]` (from the first member when
    that is unset or no longer a member). An unknown group gives [] (nobody to ring: the step
    moves on), duplicate members ring once.
    """
    name = group.removeprefix("group:")
    g = directory.groups.get(name)
    if g is None:
        return []
    members = list(dict.fromkeys(g.members))
    if g.strategy == GroupStrategy.ROUND_ROBIN:
        last = state.rr_last.get(name)
        if last in members:
            i = members.index(last) + 1
            members = members[i:] + members[:i]
    elif g.strategy == GroupStrategy.LONGEST_IDLE:
        members.sort(key=lambda u: state.last_answered.get(u, float("-inf")))
    return [u for u in members if u not in state.in_call and u not in state.paused]


# ---------------------------------------------------------------------------------- feature codes

_TARGET_TEXT = {"office": ("Büroservice", "office service"), "mobile": ("Handy", "mobile")}
_FEATURE_RE = re.compile(r"^([*#])(21|22)(?:\*([0-9]*))?#?$")


@dataclass(frozen=True)
class FeatureAction:
    """What a dialled feature code asks for; the services apply it to the routing state."""

    code: str  # the code as understood, e.g. "*21*1400"
    client: str
    action: str  # "set" | "cancel"
    target: str  # "office" | "mobile"
    until: datetime | None  # aware, in the client's zone; None: until cancelled (or for cancel)
    text_de: str  # for the phone display, e.g. "Rufumleitung Büroservice aktiv bis 14:00"
    text_en: str  # e.g. "Forwarding to office service until 14:00"

    @property
    def text(self) -> str:
        """Both languages, short enough for a SIP Reason / phone display."""
        return f"{self.text_de} / {self.text_en}"

    def override(self) -> Override | None:
        """The override to store for a `set`; None for a `cancel`."""
        if self.action != "set":
            return None
        return Override(self.client, self.target, self.until)

    def apply(self, overrides: Mapping[str, Override]) -> dict[str, Override]:
        """The client overrides after this action (a new dict; the input is not changed).

        A set replaces whatever override the client had (one per client); a cancel removes the
        client's override only when it has this action's target (#21 leaves a *22 alone)."""
        out = dict(overrides)
        ov = self.override()
        if ov is not None:
            out[self.client] = ov
        elif (cur := out.get(self.client)) is not None and cur.target == self.target:
            del out[self.client]
        return out


def feature_code(dialled: str, client: str, now_local: datetime) -> FeatureAction | None:
    """Parse a feature code dialled from a device of `client`.

    `*21` office now, `*21*HHMM` office until HH:MM local time (today, or tomorrow when that
    time has already come), `#21` cancel office; `*22`, `*22*HHMM`, `#22` the same for the owner's
    mobile. `*`/`#` may arrive URL-escaped (%2A, %23); a trailing `#` (send key) is ignored.
    Returns None when `dialled` is not one of these codes (starts with something other than
    `*21`, `#21`, `*22`, `#22`); raises ValueError for a malformed one (`*21*2561`, `#21*1400`).
    `now_local` must be aware, in the client's timezone: `until` is in that zone.
    """
    code = unquote(dialled).strip()
    if not re.match(r"^[*#]2[12](?![0-9])", code):
        return None
    if now_local.tzinfo is None or now_local.utcoffset() is None:
        raise ValueError("feature_code() needs an aware datetime for `now_local`")
    m = _FEATURE_RE.match(code)
    if not m:
        raise ValueError(f"feature code {code!r} is not valid (e.g. *21, *21*1400, #21)")
    sign, num, hhmm = m.group(1), m.group(2), m.group(3)
    target = "office" if num == "21" else "mobile"
    de, en = _TARGET_TEXT[target]
    if sign == "#":
        if hhmm is not None:
            raise ValueError(f"feature code {code!r}: cancel takes no time ({sign}{num})")
        return FeatureAction(
            code=f"#{num}",
            client=client,
            action="cancel",
            target=target,
            until=None,
            text_de=f"Rufumleitung {de} aus",
            text_en=f"Forwarding to {en} off",
        )
    if hhmm is None:
        return FeatureAction(
            code=f"*{num}",
            client=client,
            action="set",
            target=target,
            until=None,
            text_de=f"Rufumleitung {de} aktiv",
            text_en=f"Forwarding to {en} on",
        )
    if len(hhmm) != 4:
        raise ValueError(f"feature code {code!r}: the time must be 4 digits HHMM, e.g. *{num}*1400")
    try:
        t = parse_hhmm(f"{hhmm[:2]}:{hhmm[2:]}")
    except ValueError:
        raise ValueError(
            f"feature code {code!r}: {hhmm} is not a time of day (0000..2359)"
        ) from None
    assert t is not None
    until = _local_at(now_local.date(), t, now_local.tzinfo)
    tomorrow = until <= now_local
    if tomorrow:
        until = _local_at(now_local.date() + timedelta(days=1), t, now_local.tzinfo)
    shown = f"{until:%H:%M}"
    return FeatureAction(
        code=f"*{num}*{hhmm}",
        client=client,
        action="set",
        target=target,
        until=until,
        text_de=f"Rufumleitung {de} aktiv bis {'morgen ' if tomorrow else ''}{shown}",
        text_en=f"Forwarding to {en} until {'tomorrow ' if tomorrow else ''}{shown}",
    )


def _local_at(day: date, t: time, tz: tzinfo | None) -> datetime:
    """Wall-clock `t` on `day` in `tz`, normalised through UTC (a time in the spring-forward gap
    becomes the real instant PEP 495 gives it, e.g. 02:30 -> 03:30 CEST)."""
    assert tz is not None
    return datetime.combine(day, t, tzinfo=tz).astimezone(UTC).astimezone(tz)
