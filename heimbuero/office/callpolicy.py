"""Calls out and toll fraud: what an external number is, who may call it, how many at once and
how many minutes a day, and who may change a client's forwarding. Pure rules, no SIP, no I/O.

Every call out through a trunk (a forwarding rule's `external:` step, a `*22` override to the
owner's mobile, a user dialling out) is checked here twice: the destination must be allowed by
the client's policy (or by the default policy when the caller has no client) AND by the trunk's
policy; then the caps of both must have room.

The classes of numbers, the policy value and its JSON form are in `heimbuero/domain/callpolicy.py`
(re-exported here).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from heimbuero.domain.callpolicy import CLASSES as CLASSES
from heimbuero.domain.callpolicy import DEFAULT_ALLOWED as DEFAULT_ALLOWED
from heimbuero.domain.callpolicy import E164_RE as _E164_RE
from heimbuero.domain.callpolicy import POLICY_KEYS as POLICY_KEYS
from heimbuero.domain.callpolicy import SATELLITE_CODES as SATELLITE_CODES
from heimbuero.domain.callpolicy import CallPolicy as CallPolicy
from heimbuero.domain.callpolicy import PolicyError as PolicyError
from heimbuero.domain.callpolicy import classify as classify
from heimbuero.domain.callpolicy import parse_policy as parse_policy
from heimbuero.domain.callpolicy import policy_from_json as policy_from_json
from heimbuero.office.roles import ROLES, Role, is_staff

MAX_EXTERNAL_PER_STEP = 3  # external numbers one rule step may ring at once
DEFAULT_CLIENT_MAX_CONCURRENT = 4
DEFAULT_CLIENT_MAX_MINUTES = 240


# --------------------------------------------------------------------------- classification


def describe(e164: str) -> str:
    """The class of a number in words ('premium rate')."""
    return CLASSES[classify(e164)]


# ------------------------------------------------------------------------------- the policy


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
    return role == Role.ADMIN or (role == Role.CLIENT and user_client == client_id)


def may_change_forwarding(role: str, user_client: str | None, client_id: str) -> bool:
    """Who may set or cancel a client's override (HTTP or *21/*22/#21/#22): provider staff and
    the client owner; never an employee."""
    return is_staff(role) or (role == Role.CLIENT and user_client == client_id)


def may_dial_out(role: str) -> bool:
    """Who may dial an external number from a phone: staff, client owners and employees (each
    within the destination policy and caps of their business)."""
    return role in ROLES


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
