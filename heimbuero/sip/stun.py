"""STUN keep-alives on SIP's UDP port (RFC 5626 §4.4.2 and §8, RFC 5389): sans-IO.

A UA using outbound over UDP keeps its flow (and its router's NAT mapping) open with STUN
Binding Requests sent to the very port it sends SIP to, and learns from the answer's
XOR-MAPPED-ADDRESS whether its public address changed. This module tells such a datagram apart
from SIP and builds the answer; nothing else of STUN is served here.

Kept safe on an open port: only a well-formed Binding Request (class request, first two bits 00,
the magic cookie, a length that matches the datagram and is a multiple of 4) is answered, with a
fixed-size Binding Success Response (32 bytes for IPv4, 44 for IPv6: at most about twice the
smallest request, so no amplification). A request carrying an attribute that must be understood
(type below 0x8000, RFC 5389 §7.3.1) is not answered: the keep-alives of RFC 5626 carry none,
and USERNAME/MESSAGE-INTEGRITY would need credentials this server does not have (an answer
without checking them would be wrong, a 420 error would be one more reflector).
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = ["MAGIC_COOKIE", "looks_like_stun", "binding_response", "xor_mapped_address"]

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
HEADER = 20
MAX_REQUEST = 548  # RFC 5389 §7.1: what fits a minimum-MTU path without fragmenting


def looks_like_stun(data: bytes) -> bool:
    """Whether a datagram is STUN rather than SIP: the first two bits 0 and the magic cookie
    (RFC 5389 §6; a SIP message starts with a letter, RFC 7983's demultiplexing)."""
    return (
        len(data) >= HEADER and data[0] < 4 and struct.unpack_from("!I", data, 4)[0] == MAGIC_COOKIE
    )


def xor_mapped_address(transaction_id: bytes, host: str, port: int) -> bytes:
    """The XOR-MAPPED-ADDRESS attribute (RFC 5389 §15.2) for `host`:`port`."""
    ip = ipaddress.ip_address(host.strip("[]"))
    raw = ip.packed
    mask = struct.pack("!I", MAGIC_COOKIE) + (transaction_id if ip.version == 6 else b"")
    xaddr = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
    family = 0x02 if ip.version == 6 else 0x01
    value = struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xaddr
    return struct.pack("!HH", XOR_MAPPED_ADDRESS, len(value)) + value


def binding_response(data: bytes, host: str, port: int) -> bytes | None:
    """The Binding Success Response to a Binding Request from `host`:`port`, or None when
    `data` is no Binding Request this server answers (see the module's doc)."""
    if not looks_like_stun(data) or len(data) > MAX_REQUEST:
        return None
    kind, length = struct.unpack_from("!HH", data, 0)
    if kind != BINDING_REQUEST or length % 4 or HEADER + length != len(data):
        return None
    offset = HEADER
    while offset < len(data):
        if offset + 4 > len(data):
            return None
        attr, size = struct.unpack_from("!HH", data, offset)
        if attr < 0x8000:
            return None  # comprehension-required (RFC 5389 §7.3.1): not answered, see above
        offset += 4 + size + (-size % 4)
    if offset != len(data):
        return None
    transaction_id = data[8:20]
    try:
        attr_bytes = xor_mapped_address(transaction_id, host, port)
    except ValueError:
        return None
    header = struct.pack("!HHI", BINDING_SUCCESS, len(attr_bytes), MAGIC_COOKIE)
    return header + transaction_id + attr_bytes
