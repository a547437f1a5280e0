"""Input checks for the office configuration (client ids, E.164 numbers, Bundesland, timezone,
trunk addresses) and the call simulator, shared by the command line and the HTTP API. The
checks raise DirectoryError with a one-line reason."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from heimbuero.domain.model import BUNDESLAENDER, GROUP_STRATEGIES, OVERRIDE_TARGETS
from heimbuero.domain.phone import DEFAULT_COUNTRY, PhoneError, parse_number
from heimbuero.office.routing import RoutePlan, RoutingState, route
from heimbuero.store import Store

_SLUG_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_PREFIX_RE = re.compile(r"\+[0-9]{0,15}")
TRANSPORTS = ("udp", "tcp", "tls")
# A trunk's transport may also be "auto": DNS chooses it (NAPTR, RFC 3263 §4.1)
TRUNK_TRANSPORTS = (*TRANSPORTS, "auto")


class DirectoryError(ValueError):
    """A value the office configuration does not accept; the message says why."""


def validate_slug(value: str, what: str = "client id") -> str:
    """A lower-case id of 1-64 a-z 0-9 _ -, starting with a letter or digit."""
    v = value.strip().lower()
    if not _SLUG_RE.fullmatch(v):
        raise DirectoryError(
            f"invalid {what} {value!r}: use 1-64 of a-z, 0-9, _ and -, starting with a-z or 0-9"
        )
    return v


def validate_e164(value: str, what: str = "number", country: int = DEFAULT_COUNTRY) -> str:
    """A phone number as people type it ('089 1234567', '0170/1111111', '+49 89 1234567',
    '0049 89 ...'), numbers without '+' or '00' read in the country with calling code
    `country` (the provider's), returned as E.164 ('+49891234567')."""
    try:
        return parse_number(value, country)
    except PhoneError as exc:
        raise DirectoryError(f"invalid {what}: {exc}") from None


def validate_prefix(value: str) -> str:
    v = value.strip()
    if not _PREFIX_RE.fullmatch(v):
        raise DirectoryError(f"invalid number prefix {value!r}: expected '+' and digits (+49)")
    return v


def validate_bundesland(value: str) -> str:
    v = value.strip().upper()
    if v not in BUNDESLAENDER:
        raise DirectoryError(
            f"invalid Bundesland {value!r}: choose one of {', '.join(BUNDESLAENDER)}"
        )
    return v


def validate_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise DirectoryError(
            f"unknown timezone {value!r}: use an IANA name such as Europe/Berlin"
        ) from None
    return value


def validate_strategy(value: str) -> str:
    v = value.strip().lower()
    if v not in GROUP_STRATEGIES:
        raise DirectoryError(
            f"invalid group strategy {value!r}: choose one of {', '.join(GROUP_STRATEGIES)}"
        )
    return v


def validate_override_target(value: str) -> str:
    v = value.strip().lower()
    if v not in OVERRIDE_TARGETS:
        raise DirectoryError(
            f"invalid override target {value!r}: choose one of {', '.join(OVERRIDE_TARGETS)}"
        )
    return v


def validate_transport(value: str) -> str:
    v = value.strip().lower()
    if v not in TRANSPORTS:
        raise DirectoryError(f"invalid transport {value!r}: choose one of {', '.join(TRANSPORTS)}")
    return v


def validate_trunk_transport(value: str) -> str:
    v = value.strip().lower()
    if v not in TRUNK_TRANSPORTS:
        choices = ", ".join(TRUNK_TRANSPORTS)
        raise DirectoryError(f"invalid transport {value!r}: choose one of {choices}")
    return v


def parse_address(value: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 in brackets) or 'HOST' (port 5060) -> (host, port)."""
    v = value.strip()
    if v.startswith("["):
        host, sep, rest = v[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise DirectoryError(f"invalid address {value!r}: expected HOST:PORT")
    elif v.count(":") == 1:
        host, port_text = v.split(":")
    else:
        host, port_text = v, ""
    if not host or any(c.isspace() for c in host):
        raise DirectoryError(f"invalid address {value!r}: expected HOST:PORT")
    if port_text == "":
        return host, 5060
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DirectoryError(f"invalid port in {value!r}: expected 1-65535")
    return host, int(port_text)


def parse_at(text: str | None, tz: str) -> datetime:
    """An ISO 8601 instant; without an offset it is local time in `tz`; None means now."""
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DirectoryError(
            f"invalid time {text!r}: expected ISO 8601 such as 2026-03-03T09:00+01:00"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=ZoneInfo(tz))


def simulate_call(
    store: Store,
    number: str,
    at_text: str | None,
    state: RoutingState | None = None,
    caller: str | None = None,
) -> RoutePlan:
    """The plan for a call from `caller` (None: unknown) to `number` now or at `at_text`
    (without an offset: the client's local time), with the stored directory and the overrides
    active then. `state` gives presence (default: nobody registered); its overrides are
    replaced by the stored ones."""
    d = store.load_directory()
    e164 = validate_e164(number, "number", d.provider.country_code)
    num = d.numbers.get(e164)
    client = d.clients.get(num.client) if num is not None else None
    at = parse_at(at_text, client.timezone if client is not None else "UTC")
    overrides = {o.client: o for o in store.list_overrides(now=at)}
    state = replace(state or RoutingState(), overrides=overrides)
    return route(e164, at, state, d, caller)
