"""The registrar (RFC 3261 §10.3): binds a user's address-of-record to the devices that register.

Authentication happens before `handle()` is called; it receives the authenticated user name.

Where a registered device is reached (`Binding.received`) is decided per Contact by
`reach_address` — NAT detection in the spirit of Kamailio's nat_uac_test:

- over TCP (and every connection-oriented transport): the connection the REGISTER came on;
- the Contact names the address the REGISTER came from: that address (a normal device);
- the top Via's sent-by differs from the source address and port: a router translated the
  packet (NAT), so the source;
- the Contact is no IP address, names another transport than the REGISTER used, or names an
  address the registering device's network cannot be told apart from ours: the source. That is
  every loopback address unless the REGISTER came from loopback too, every private address
  (RFC 1918, fc00::/7) unless it came from a private address too, and always shared
  (100.64/10), link-local, multicast, unspecified and reserved/documentation addresses;
- otherwise (a public address, Via = source): the Contact as written. That is a third-party
  or multi-socket registration (RFC 3261 §10.2: a device may register a contact on behalf of
  another), and calls go there.

So the server never sends to a network that the registering device is not in itself: nobody on
the internet can point it at the server's loopback or LAN.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from heimbuero.sip.message import (
    Address,
    ParseError,
    Request,
    SipURI,
    Via,
    contact_expires,
    parse_address,
)

from .location import Binding, LocationService, Peer


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    max_contacts_per_aor: int = 10


@dataclass(slots=True)
class RegisterResult:
    """The answer to one REGISTER, and what changed for presence and logs."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    added: list[Binding]
    removed: list[Binding]


class Registrar:
    """Applies REGISTER requests to the location service."""

    __slots__ = ("settings", "location")

    def __init__(self, settings: RegistrarSettings, location: LocationService) -> None:
        self.settings = settings
        self.location = location

    def handle(self, req: Request, aor: str, source: Peer, now: float) -> RegisterResult:
        """Process a REGISTER for `aor` (the authenticated user) that came from `source`."""
        s = self.settings
        loc = self.location
        call_id = req.call_id
        cseq = req.cseq[0]
        header_expires = req.get("expires")
        contacts_raw = req.get_all("contact")
        user_agent = req.get("user-agent")
        try:
            via: Via | None = req.top_via
        except ParseError:
            via = None

        if not contacts_raw:
            return self._ok(aor, now, [], [])

        if "*" in contacts_raw:
            if len(contacts_raw) != 1 or header_expires != "0":
                return _fail(400, "Contact '*' needs Expires: 0 and no other contact")
            existing = loc.lookup(aor, now)
            for b in existing:
                if b.call_id == call_id and cseq <= b.cseq:
                    return _fail(400, "CSeq out of order")
            return self._ok(aor, now, [], loc.remove_aor(aor))

        parsed: list[tuple[Address, int]] = []
        for raw in contacts_raw:
            try:
                addr = parse_address(raw)
            except ParseError as exc:
                return _fail(400, f"Bad Contact: {exc}")
            if not addr.uri.is_sip:
                return _fail(400, "Contact must be a sip: or sips: URI")
            if addr.uri.scheme == "sips" and source[0] != "tls":
                # RFC 5630 §4.1: a sips: contact is reached over TLS, so it binds to a TLS flow.
                return _fail(400, "sips: Contact needs a REGISTER over TLS")
            expires_param = contact_expires(addr.params.get("expires") or None)
            if expires_param is not None:
                expires = expires_param
            elif header_expires is None:
                expires = s.default_expires
            elif header_expires.isdigit():
                expires = int(header_expires)
            else:
                return _fail(400, "Bad expires value")
            if 0 < expires < s.min_expires:
                return RegisterResult(
                    423, "Interval Too Brief", [("Min-Expires", str(s.min_expires))], [], []
                )
            parsed.append((addr, min(expires, s.max_expires)))

        added: list[Binding] = []
        removed: list[Binding] = []
        current = {b.contact: b for b in loc.lookup(aor, now)}
        for addr, _ in parsed:
            old = current.get(_contact_key(addr))
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return _fail(400, "CSeq out of order")
        new_keys = {_contact_key(a) for a, e in parsed if e > 0}
        if len(set(current) | new_keys) > s.max_contacts_per_aor:
            return _fail(403, f"Too many registered devices (at most {s.max_contacts_per_aor})")

        for addr, expires in parsed:
            key = _contact_key(addr)
            if expires == 0:
                gone = loc.remove(aor, key)
                if gone is not None:
                    removed.append(gone)
                continue
            q = _q_value(addr)
            reg_id_text = addr.params.get("reg-id")
            binding = Binding(
                aor=aor,
                contact=key,
                received=reach_address(addr.uri, via, source),
                expires_at=now + expires,
                call_id=call_id,
                cseq=cseq,
                q=q,
                user_agent=user_agent[:200] if user_agent else None,
                instance=addr.params.get("+sip.instance"),
                reg_id=int(reg_id_text) if reg_id_text and reg_id_text.isdigit() else None,
            )
            # RFC 5626: a new flow for the same instance and reg-id replaces the old one.
            if binding.instance and binding.reg_id is not None:
                for other in loc.lookup(aor, now):
                    if (
                        other.contact != key
                        and other.instance == binding.instance
                        and other.reg_id == binding.reg_id
                    ):
                        loc.remove(aor, other.contact)
                        removed.append(other)
            loc.put(binding)
            added.append(binding)
        return self._ok(aor, now, added, removed)

    def _ok(
        self, aor: str, now: float, added: list[Binding], removed: list[Binding]
    ) -> RegisterResult:
        headers: list[tuple[str, str]] = []
        for b in self.location.lookup(aor, now):
            q = f";q={b.q:g}" if b.q is not None else ""
            headers.append(
                ("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}{q}")
            )
        return RegisterResult(200, "OK", headers, added, removed)


_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def _private(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(ip in n for n in _PRIVATE if n.version == ip.version)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def reachable_from(host: str, source_host: str) -> bool:
    """Whether the server may send to `host` on the word of a device at `source_host`:
    loopback only from loopback, private addresses only from private ones, and otherwise only
    public (global unicast) addresses."""
    ip, src = _ip(host), _ip(source_host)
    if ip is None or src is None or ip.version != src.version:
        return False
    if ip.is_loopback:
        return src.is_loopback
    if _private(ip):
        return _private(src)
    return ip.is_global and not ip.is_multicast


def reach_address(contact: SipURI, via: Via | None, source: Peer) -> Peer:
    """Where the device that registered `contact` with this top Via from `source` is reached
    (the decision table is in the module's doc)."""
    transport, src_host, src_port = source
    if transport != "udp":
        return source  # the connection
    host = contact.host.strip("[]")
    if contact.transport != transport or _ip(host) is None:
        return source
    dest = Peer(transport, host, contact.port or 5060)
    if _ip(host) == _ip(src_host) and dest[2] == src_port:
        return source  # a normal device: the Contact names where it sends from
    if via is None or _ip(via.host) != _ip(src_host) or (via.port or 5060) != src_port:
        return source  # a router translated the address: NAT
    if not reachable_from(host, src_host):
        return source
    return dest


def _fail(status: int, reason: str) -> RegisterResult:
    return RegisterResult(status, reason, [], [], [])


def _contact_key(addr: Address) -> str:
    """The stored form of a Contact: its URI (header params such as expires and q stripped)."""
    return str(addr.uri)


def _q_value(addr: Address) -> float | None:
    q = addr.params.get("q")
    if q is None:
        return None
    try:
        v = float(q)
    except ValueError:
        return None
    return v if 0.0 <= v <= 1.0 else None
