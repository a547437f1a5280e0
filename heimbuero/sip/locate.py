"""Locating a SIP server by name (RFC 3263), the decisions without the lookups.

A next hop named by an IP address is that address. A name with an explicit port is looked up
by A/AAAA only (§4.2). A name without a port is looked up by SRV (`_sip._udp.NAME`,
`_sip._tcp.NAME`, `_sips._tcp.NAME` for TLS): its targets in the order RFC 2782 gives (lowest
priority first; within one priority a weighted random order), each by A/AAAA; a name with no
SRV records is itself looked up by A/AAAA on the transport's default port. The transport is
the one the configuration names; a trunk configured with transport "auto" (a name, no port)
lets DNS choose it (§4.1): its NAPTR records with flag "s" and a service the server supports
(`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`), by order, then preference, each naming the SRV name to
look up; without usable NAPTR records, the SRV names of the supported transports in the
server's preference (UDP, TCP, TLS), and at last the name itself over UDP. The client tries
the targets in this order and moves on when one fails (§4.3).

The lookups themselves are done by net/dns.py; this module only orders what they found.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}
AUTO = "auto"  # a trunk's transport when DNS (NAPTR, RFC 3263 §4.1) chooses it
# NAPTR services for SIP (RFC 3263 §4.1) -> our transport
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
MAX_NAPTR = 16  # records of one NAPTR answer considered at most (a huge answer is cut)
FALLBACK_ORDER = ("udp", "tcp", "tls")  # §4.1 without NAPTR: our preference


@dataclass(frozen=True, slots=True)
class Srv:
    """One SRV record."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class Naptr:
    """One NAPTR record (RFC 3403)."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def srv_name(host: str, transport: str) -> str:
    """The SRV owner name for a transport (RFC 3263 §4.2)."""
    if transport == "tls":
        return f"_sips._tcp.{host}"
    return f"_sip._{transport}.{host}"


def order_srv(records: Sequence[Srv], rng: random.Random | None = None) -> list[Srv]:
    """RFC 2782's order: by priority; inside one priority, repeatedly pick a record with a
    probability proportional to its weight (weight 0 records get a small chance, first in
    the running sum as the RFC says). A single "." target means "not offered here": none."""
    if len(records) == 1 and records[0].target in (".", ""):
        return []
    rng = rng or random.Random()
    out: list[Srv] = []
    for prio in sorted({r.priority for r in records}):
        # zero weights first, as RFC 2782 places them at the start of the running sum
        pool = sorted((r for r in records if r.priority == prio), key=lambda r: r.weight != 0)
        while pool:
            total = sum(r.weight for r in pool)
            pick = rng.randint(0, total) if total else 0
            running = 0
            for i, r in enumerate(pool):
                running += r.weight
                if running >= pick:
                    out.append(pool.pop(i))
                    break
    return out


def choose_naptr(records: Sequence[Naptr], supported: Sequence[str]) -> list[tuple[str, str]]:
    """(transport, SRV name) of the usable NAPTR records, in the order to try them (RFC 3263
    §4.1, RFC 3403): lowest order, then lowest preference. Usable: flag "s" (the replacement
    is an SRV name), no regular expression, a replacement, and a SIP service whose transport
    is in `supported`; anything else is skipped. Only the first MAX_NAPTR records count; the
    same (transport, name) is listed once."""
    usable: list[tuple[int, int, str, str]] = []
    for r in records[:MAX_NAPTR]:
        transport = NAPTR_SERVICES.get(r.service.upper())
        replacement = r.replacement.rstrip(".")
        if (
            transport is None
            or transport not in supported
            or r.flags.lower() != "s"
            or r.regexp
            or not replacement
            or not 0 <= r.order < 65536
            or not 0 <= r.preference < 65536
        ):
            continue
        usable.append((r.order, r.preference, transport, replacement))
    out: list[tuple[str, str]] = []
    for _, _, transport, replacement in sorted(usable):
        if (transport, replacement) not in out:
            out.append((transport, replacement))
    return out


def fallback_srv(host: str, supported: Sequence[str]) -> list[tuple[str, str]]:
    """Without usable NAPTR records (§4.1): (transport, SRV name) of every supported
    transport, in our preference."""
    return [(t, srv_name(host, t)) for t in FALLBACK_ORDER if t in supported]


def ttl_for(ttls: Sequence[int], floor: int = 30, ceiling: int = 3600) -> int:
    """How long a result is kept: the smallest TTL of the records behind it, bounded (a TTL
    of 0 would make every call wait for a lookup; a day-long one would hide a move)."""
    return max(floor, min([ceiling, *ttls]))


def split_server(text: str) -> tuple[str, int]:
    """ "ADDRESS" or "ADDRESS:PORT" (IPv6: "[ADDRESS]:PORT") of a DNS server."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not is_address(host):
        raise ValueError(f"a DNS server must be an IP address (with :PORT): {text!r}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in DNS server {text!r}")
    return host, int(port) if port else 53
