"""Locating a SIP server by name (RFC 3263), the decisions without the lookups.

A next hop named by an IP address is that address. A name with an explicit port is looked up
by A/AAAA only (§4.2). A name without a port is looked up by SRV (`_sip._udp.NAME`,
`_sip._tcp.NAME`, `_sips._tcp.NAME` for TLS): its targets in the order RFC 2782 gives (lowest
priority first; within one priority a weighted random order), each by A/AAAA; a name with no
SRV records is itself looked up by A/AAAA on the transport's default port. The transport is
the one the configuration names (NAPTR, which would choose it, is not consulted). The client
tries the targets in this order and moves on when one fails (§4.3).

The lookups themselves are done by net/dns.py; this module only orders what they found.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}


@dataclass(frozen=True, slots=True)
class Srv:
    """One SRV record."""

    priority: int
    weight: int
    port: int
    target: str


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
