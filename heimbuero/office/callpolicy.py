"""Calls out and toll fraud: what an external number is, who may call it, how many at once and
how many minutes a day, and who may change a client's forwarding. Pure rules, no SIP, no I/O.

Every call out through a trunk (a forwarding rule's `external:` step, a `*22` override to the
owner's mobile, a user dialling out) is checked here twice: the destination must be allowed by
the client's policy (or by the default policy when the caller has no client) AND by the trunk's
policy; then the caps of both must have room.

Classes of German numbers (E.164 `+49` + the national number without its `0`):

- allowed by default: `fixed` (area codes 02-09, except 0700/0800/0900), `mobile` (015x, 016x,
  017x), `freephone` (0800: costs the caller nothing), `emergency` (110, 112);
- refused by default: `premium` (0900, 0137, 0138 mass calling, 019x), `shared_cost` (018x incl.
  0180), `directory` (0118x directory enquiries), `innovative` (012), `personal` (0700: forwards
  anywhere, abroad too), `national` (032 national subscriber numbers: not tariff-regulated,
  some tariffs charge them like mobile or more, so an admin decides), `carrier_selection` (010
  call-by-call prefixes), `special` (any other 01x/011x/031 service or test number, and numbers
  that fit no range);
- `international`: any country code but +49; `satellite`: satellite and global networks and
  international service codes (+870, +878, +881, +882, +883, +888, +979 premium, +808 shared
  cost, +800 freephone, +991 trial), refused even when `international` is allowed.

A policy (the JSON in `clients.call_policy` and `trunks.call_policy`; empty = defaults):

    {"allow": ["international"],          # classes allowed on top of the defaults
     "allow_prefixes": ["+4319"],         # E.164 prefixes allowed whatever their class
     "deny_prefixes": ["+4932"],          # refused even if a class allows them
     "approved_numbers": ["+491701111111"],  # client only: external forwarding targets
     "max_concurrent": 4,                 # calls out at once (client default 4, trunk: none)
     "max_minutes_per_day": 120}          # client only: talk minutes out per local day (240)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CLASSES: dict[str, str] = {
    "fixed": "German fixed line",
    "mobile": "German mobile",
    "freephone": "freephone",
    "emergency": "emergency",
    "premium": "premium rate",
    "shared_cost": "shared-cost service",
    "directory": "directory enquiries",
    "innovative": "innovative services",
    "personal": "personal number",
    "national": "national subscriber number",
    "carrier_selection": "carrier selection",
    "special": "special service",
    "international": "international",
    "satellite": "satellite or global network",
}
DEFAULT_ALLOWED = frozenset({"fixed", "mobile", "freephone", "emergency"})
SATELLITE_CODES = ("+870", "+878", "+881", "+882", "+883", "+888", "+979", "+808", "+800", "+991")
MAX_EXTERNAL_PER_STEP = 3  # external numbers one rule step may ring at once
DEFAULT_CLIENT_MAX_CONCURRENT = 4
DEFAULT_CLIENT_MAX_MINUTES = 240
POLICY_KEYS = (
    "allow", "allow_prefixes", "deny_prefixes", "approved_numbers", "max_concurrent",
    "max_minutes_per_day",
)  # fmt: skip
_E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")
_PREFIX_RE = re.compile(r"\+[0-9]{1,15}")
STAFF_ROLES = ("admin", "agent")


class PolicyError(ValueError):
    """A policy, number or text an admin (or a phone) gave that is not accepted."""


# --------------------------------------------------------------------------- classification


def classify(e164: str) -> str:
    """The class of an E.164 number (one of CLASSES); ValueError if it is not E.164."""
    if not _E164_RE.fullmatch(e164):
        raise ValueError(f"{e164!r} is not an E.164 number")
    if not e164.startswith("+49"):
        return "satellite" if e164.startswith(SATELLITE_CODES) else "international"
    n = e164[3:]  # the national number without its leading 0
    if n in ("110", "112"):
        return "emergency"
    if n.startswith(("15", "16", "17")):
        return "mobile" if len(n) >= 9 else "special"
    if n.startswith("900"):
        return "premium"
    if n.startswith("800"):
        return "freephone"
    if n.startswith("700"):
        return "personal"
    if n.startswith(("137", "138", "19")):
        return "premium"
    if n.startswith("18"):
        return "shared_cost"
    if n.startswith("118"):
        return "directory"
    if n.startswith("12"):
        return "innovative"
    if n.startswith("10"):
        return "carrier_selection"
    if n.startswith("32"):
        return "national"
    if n.startswith(("1", "31", "0")):
        return "special"
    return "fixed" if len(n) >= 5 else "special"


def describe(e164: str) -> str:
    """The class of a number in words ('premium rate')."""
    return CLASSES[classify(e164)]


# ------------------------------------------------------------------------------- the policy


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """A client's or trunk's rules for calls out (see the module text); empty = defaults."""

    allow: frozenset[str] = frozenset()
    allow_prefixes: tuple[str, ...] = ()
    deny_prefixes: tuple[str, ...] = ()
    approved_numbers: tuple[str, ...] = ()
    max_concurrent: int | None = None
    max_minutes_per_day: int | None = None

    def allows(self, e164: str) -> bool:
        if e164.startswith(self.deny_prefixes) and self.deny_prefixes:
            return False
        if self.allow_prefixes and e164.startswith(self.allow_prefixes):
            return True
        kind = classify(e164)
        return kind in DEFAULT_ALLOWED or kind in self.allow

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.allow:
            out["allow"] = sorted(self.allow)
        for key in ("allow_prefixes", "deny_prefixes", "approved_numbers"):
            value = getattr(self, key)
            if value:
                out[key] = list(value)
        for key in ("max_concurrent", "max_minutes_per_day"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def policy_from_json(data: Any) -> CallPolicy:
    """A stored policy (lenient: a bad stored value falls back to the safe default)."""
    try:
        return parse_policy(data or {})
    except PolicyError:
        return CallPolicy()


def parse_policy(data: Any) -> CallPolicy:
    """Validate a policy given by an admin; PolicyError names the bad key."""
    if not isinstance(data, dict):
        raise PolicyError("call policy: expected a mapping")
    unknown = [k for k in data if k not in POLICY_KEYS]
    if unknown:
        raise PolicyError(
            f"call policy: unknown key {unknown[0]!r}; allowed: {', '.join(POLICY_KEYS)}"
        )
    allow = data.get("allow") or []
    if not isinstance(allow, list) or any(a not in CLASSES for a in allow):
        raise PolicyError(f"call policy.allow: choose classes from {', '.join(CLASSES)}")
    prefixes: dict[str, tuple[str, ...]] = {}
    for key in ("allow_prefixes", "deny_prefixes"):
        value = data.get(key) or []
        if not isinstance(value, list) or not all(
            isinstance(p, str) and _PREFIX_RE.fullmatch(p) for p in value
        ):
            raise PolicyError(f"call policy.{key}: expected a list like ['+4319']")
        prefixes[key] = tuple(value)
    approved = data.get("approved_numbers") or []
    if not isinstance(approved, list) or not all(
        isinstance(p, str) and _E164_RE.fullmatch(p) for p in approved
    ):
        raise PolicyError("call policy.approved_numbers: expected E.164 numbers")
    caps: dict[str, int | None] = {}
    for key in ("max_concurrent", "max_minutes_per_day"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise PolicyError(f"call policy.{key}: expected a whole number >= 0")
        if value is not None and not 0 <= value <= 100_000:
            raise PolicyError(f"call policy.{key}: {value} is not within 0..100000")
        caps[key] = value
    return CallPolicy(
        allow=frozenset(allow),
        allow_prefixes=prefixes["allow_prefixes"],
        deny_prefixes=prefixes["deny_prefixes"],
        approved_numbers=tuple(dict.fromkeys(approved)),
        max_concurrent=caps["max_concurrent"],
        max_minutes_per_day=caps["max_minutes_per_day"],
    )


def destination_refusal(
    e164: str, client: CallPolicy | None, trunk: CallPolicy | None
) -> str | None:
    """Why a call out to `e164` is refused ('Destination not allowed: premium rate'), or None.

    `client` None: a call with no client (provider staff): the default classes only, plus what
    the trunk allows. Both the client and the trunk must allow the number."""
    try:
        kind = classify(e164)
    except ValueError:
        return "Destination not allowed: not an E.164 number"
    label = CLASSES[kind]
    for policy in (client or CallPolicy(), trunk or CallPolicy()):
        if not policy.allows(e164):
            return f"Destination not allowed: {label}"
    return None


def client_max_concurrent(policy: CallPolicy) -> int:
    m = policy.max_concurrent
    return DEFAULT_CLIENT_MAX_CONCURRENT if m is None else m


def client_max_minutes(policy: CallPolicy) -> int:
    m = policy.max_minutes_per_day
    return DEFAULT_CLIENT_MAX_MINUTES if m is None else m


@dataclass(frozen=True, slots=True)
class CapRefusal:
    """A call out refused by a cap: the SIP status, the reason for the caller and a warning
    for the provider."""

    status: int
    reason: str
    warning: str


def cap_refusal(
    client_id: str | None,
    client: CallPolicy | None,
    trunk_name: str,
    trunk: CallPolicy | None,
    client_running: int,
    trunk_running: int,
    client_seconds_today: float,
) -> CapRefusal | None:
    """Whether one more call out fits the caps. Concurrency is a passing state: 503 (try
    again later); the daily minutes are used up until the client's midnight: 403."""
    if client is not None:
        limit = client_max_concurrent(client)
        if client_running >= limit:
            return CapRefusal(
                503, "Too many calls out at once",
                f"client {client_id} reached its cap of {limit} concurrent calls out",
            )  # fmt: skip
        minutes = client_max_minutes(client)
        if client_seconds_today >= minutes * 60:
            return CapRefusal(
                403, "Daily minutes for calls out used up",
                f"client {client_id} used its {minutes} minutes of calls out today",
            )  # fmt: skip
    cap = trunk.max_concurrent if trunk is not None else None
    if cap is not None and trunk_running >= cap:
        return CapRefusal(
            503, "Too many calls out at once",
            f"trunk {trunk_name} reached its cap of {cap} concurrent calls",
        )  # fmt: skip
    return None


def dialled_number(dialled: str) -> str | None:
    """The E.164 number a phone dialled to reach the outside, or None when `dialled` is no
    external number (a user, a feature code): '+4917…' as is, '0049…'/'00…' international,
    '0170…' German national (the server is German: +49), '110'/'112' emergency."""
    d = re.sub(r"[\s\-/().]", "", dialled)
    if d in ("110", "112"):
        d = "+49" + d
    elif d.startswith("00"):
        d = "+" + d[2:]
    elif d.startswith("0"):
        d = "+49" + d[1:]
    return d if _E164_RE.fullmatch(d) else None


# ---------------------------------------------------------------------------------- rights


def may_change_rules(role: str, user_client: str | None, client_id: str) -> bool:
    """Who may replace a client's rules document: admins and the client owner."""
    return role == "admin" or (role == "client" and user_client == client_id)


def may_change_forwarding(role: str, user_client: str | None, client_id: str) -> bool:
    """Who may set or cancel a client's override (HTTP or *21/*22/#21/#22): provider staff and
    the client owner; never an employee."""
    return role in STAFF_ROLES or (role == "client" and user_client == client_id)


def may_dial_out(role: str) -> bool:
    """Who may dial an external number from a phone: staff, client owners and employees (each
    within the destination policy and caps of their business)."""
    return role in ("admin", "agent", "client", "employee")


# ------------------------------------------------------------------------- control characters

_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def text_problem(value: str, multiline: bool = False) -> str | None:
    """Why `value` may not be shown or put into a SIP header, or None: C0/C1 control
    characters (CR, LF, NUL, ...; tab, and with `multiline` CR and LF, are allowed), bidi
    overrides and isolates, line/paragraph separators."""
    for ch in value:
        if ch == "\t" or (multiline and ch in "\r\n"):
            continue
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0:
            return f"contains the control character U+{code:04X}"
        if ch in _BIDI:
            return f"contains the bidirectional control U+{code:04X}"
        if unicodedata.category(ch) in ("Zl", "Zp"):
            return f"contains the line separator U+{code:04X}"
    return None


def check_text(what: str, value: str, multiline: bool = False) -> str:
    """`value` if it is safe to show and to put into a header, else PolicyError naming `what`."""
    problem = text_problem(value, multiline)
    if problem is not None:
        raise PolicyError(f"invalid {what}: {problem}")
    return value


def check_texts(items: Iterable[tuple[str, str | None]]) -> None:
    for what, value in items:
        if value:
            check_text(what, value)
