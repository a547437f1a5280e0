"""A call policy as a value: the classes of numbers, what a client's or trunk's policy allows,
and its JSON form (what `clients.call_policy` and `trunks.call_policy` hold). Pure, no I/O.

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
POLICY_KEYS = (
    "allow", "allow_prefixes", "deny_prefixes", "approved_numbers", "max_concurrent",
    "max_minutes_per_day",
)  # fmt: skip
E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")
_PREFIX_RE = re.compile(r"\+[0-9]{1,15}")


class PolicyError(ValueError):
    """A policy, number or text an admin (or a phone) gave that is not accepted."""


def classify(e164: str) -> str:
    """The class of an E.164 number (one of CLASSES); ValueError if it is not E.164."""
    if not E164_RE.fullmatch(e164):
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
        isinstance(p, str) and E164_RE.fullmatch(p) for p in approved
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
