"""Where a message came from or goes to: transport, host and port (RFC 3261 §18)."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple


class Peer(NamedTuple):
    """(transport, host, port): transport lower case ("udp", "tcp", "tls", "ws", "wss"), host
    an IP literal without brackets (or a name the network layer resolves), port a number.

    A plain tuple of the same three values compares and hashes equal, so a Peer finds what was
    stored under one."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """Whether the transport is reliable (a stream: TCP, TLS, WebSocket), so that the
        transaction layer does not retransmit (RFC 3261 §17.1.1.2, §17.1.2.2)."""
        return self.transport != "udp"


def host_text(host: str) -> str:
    """A host as it is written in a URI or a Via sent-by: an IPv6 address in brackets
    (RFC 3261 §25.1 IPv6reference, RFC 5118 §4.1), anything else as it is."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def host_port(host: str, port: int) -> str:
    """HOST:PORT with an IPv6 host in brackets: `[2001:db8::1]:5060`."""
    return f"{host_text(host)}:{port}"


def address_key(host: str) -> str:
    """One spelling of a host for comparing and keying: an IP address in its compressed form
    without brackets (`[2001:DB8:0::1]` and `2001:db8::1` are one), a name in lower case."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare).compressed
    except ValueError:
        return bare.lower()


def same_address(a: str, b: str) -> bool:
    """Whether two hosts name the same address (IPv6 brackets and spelling aside)."""
    return address_key(a) == address_key(b)


def split_host_port(text: str) -> tuple[str, int | None]:
    """`HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT` -> (host without brackets, port or None).
    A bare IPv6 address (more than one colon, no brackets) is a host without port. ValueError
    for a malformed port or bracket."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed address {text!r}")
        port_s = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_s = text.partition(":")
    else:
        host, port_s = text, None
    if port_s is None:
        return host, None
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port_s)
