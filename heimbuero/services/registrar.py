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

Path (RFC 3327): a REGISTER that came through an edge proxy carries the proxies' Path entries;
the binding keeps them (`Binding.path`), the 200 echoes them, and requests to the device go to
the first Path hop with the Path as their pre-loaded Route (§5.4). A UA that does not say
`Supported: path` gets its Path stored and used all the same, but not echoed (what Kamailio
calls "lazy": §5.3 lets a registrar demand the extension with 421, which would shut out the
ordinary desk phones behind a provider's edge proxy, as few of them send it). A Path is
the registering user's claim, trusted for that user's own binding only, and held to the same
rule as a Contact: its first hop is the proxy the REGISTER came from (a hostname, or the same
IP), or an address reachable from that source; never this server itself or a carrier trunk
(`refuse_hop`, decided by the core), and at most `MAX_PATH` entries.

Outbound (RFC 5626): a REGISTER whose Contact has `+sip.instance` and `reg-id`, from a UA that
says `Supported: outbound`, registers a flow (§6): either straight to this server (no Path: the
connection or UDP source it came from) or through an edge proxy whose Path entry has `ob`. The
200 says `Require: outbound`, and `Flow-Timer` (the keep-alive interval, `flow_timer`) when the
flow ends here. A new flow of the same instance and reg-id replaces the old one; other reg-ids
of the instance are further flows of the same device (the proxy uses one, then the next).
Through a first hop without `ob` (or a proxy that added no Path) the UA is refused with 439
(§11.6). Without `Supported: outbound` the reg-id is ignored and the Contact is an ordinary
binding.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
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

from .gruu import Gruus
from .location import Binding, LocationService, Peer

MAX_PATH = 5  # Path entries kept per binding (one edge proxy needs one or two)
MAX_PATH_CHARS = 1024  # their total length
MAX_REG_ID = 2**31 - 1  # RFC 5626 §4.2: reg-id is 1 to 2^31-1
FIRST_HOP_LACKS_OUTBOUND = "First Hop Lacks Outbound Support"


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    max_contacts_per_aor: int = 10
    # RFC 5626 §4.4.1: the keep-alive interval told to a UA whose outbound flow ends here
    # (Flow-Timer; 0: none is told and the UA picks its own)
    flow_timer: int = 120


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

    __slots__ = ("settings", "location", "refuse_hop", "gruus")

    def __init__(
        self,
        settings: RegistrarSettings,
        location: LocationService,
        refuse_hop: Callable[[SipURI, Peer | None], str | None] = lambda uri, dest: None,
        gruus: Gruus | None = None,
    ) -> None:
        self.settings = settings
        self.location = location
        # Why a Path entry may not be used (it names this server, or a carrier), or None.
        self.refuse_hop = refuse_hop
        self.gruus = gruus  # RFC 5627: the GRUUs of bindings, for a UA that supports them

    def handle(self, req: Request, aor: str, source: Peer, now: float) -> RegisterResult:
        """Process a REGISTER for `aor` (the authenticated user) that came from `source`."""
        result = self._handle(req, aor, source, now)
        if result.status == 200 and self.gruus is not None and _supports(req, "gruu"):
            add_gruus(result, self.gruus, self.location.lookup(aor, now))
        return result

    def _handle(self, req: Request, aor: str, source: Peer, now: float) -> RegisterResult:
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

        path_values = req.get_all("path")
        path: tuple[str, ...] = ()
        edge: Peer | None = None
        if path_values:
            checked = self._check_path(path_values, source)
            if isinstance(checked, str):
                return _fail(400 if checked.startswith("Bad") else 403, checked)
            path, edge = checked
        # RFC 3327 §5.3: the Path is echoed to a UA that supports it (stored either way)
        echo = path if _supports(req, "path") else ()

        if not contacts_raw:
            return self._ok(aor, now, [], [], echo)

        if "*" in contacts_raw:
            if len(contacts_raw) != 1 or header_expires != "0":
                return _fail(400, "Contact '*' needs Expires: 0 and no other contact")
            existing = loc.lookup(aor, now)
            for b in existing:
                if b.call_id == call_id and cseq <= b.cseq:
                    return _fail(400, "CSeq out of order")
            return self._ok(aor, now, [], loc.remove_aor(aor), echo)

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
        outbound = _outbound(req, [a for a, _ in parsed], path_values)
        if isinstance(outbound, str):
            return _fail(439 if outbound == FIRST_HOP_LACKS_OUTBOUND else 400, outbound)

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
            reg_id_text = addr.params.get("reg-id") if outbound else None
            binding = Binding(
                aor=aor,
                contact=key,
                received=edge if edge is not None else reach_address(addr.uri, via, source),
                expires_at=now + expires,
                call_id=call_id,
                cseq=cseq,
                q=q,
                user_agent=user_agent[:200] if user_agent else None,
                instance=addr.params.get("+sip.instance"),
                # (RFC 5626 §6: reg-id counts only for a REGISTER processed as outbound)
                reg_id=int(reg_id_text) if reg_id_text and reg_id_text.isdigit() else None,
                path=path,
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
        result = self._ok(aor, now, added, removed, echo)
        if outbound:
            # RFC 5626 §6: the registrar says it did outbound processing; §4.4.1/§10.4: the
            # keep-alive interval, for a flow whose first hop is this server (no Path)
            result.headers.append(("Require", "outbound"))
            if not path and s.flow_timer > 0:
                result.headers.append(("Flow-Timer", str(s.flow_timer)))
        return result

    def _check_path(self, values: list[str], source: Peer) -> tuple[tuple[str, ...], Peer] | str:
        """The Path vector to store and where its first hop is reached, or why it is refused
        (a reason starting with "Bad" is a 400, any other a 403)."""
        if len(values) > MAX_PATH or sum(len(v) for v in values) > MAX_PATH_CHARS:
            return f"Bad Path: at most {MAX_PATH} entries of {MAX_PATH_CHARS} characters"
        uris: list[SipURI] = []
        for raw in values:
            try:
                addr = parse_address(raw)
            except ParseError as exc:
                return f"Bad Path: {exc}"
            if not addr.uri.is_sip or "lr" not in addr.uri.params:
                return "Bad Path: each entry must be a sip: URI with lr (loose routing)"
            uris.append(addr.uri)
        dest = path_hop(uris[0], source)
        if dest is None:
            return "Path names an address the server may not send to"
        for uri in uris:
            why = self.refuse_hop(uri, dest if uri is uris[0] else None)
            if why is not None:
                return why
        return tuple(values), dest

    def _ok(
        self,
        aor: str,
        now: float,
        added: list[Binding],
        removed: list[Binding],
        path: tuple[str, ...] = (),
    ) -> RegisterResult:
        # RFC 3327 §5.3: the request's Path, echoed to a UA that supports it (the core adds
        # Supported: path).
        headers: list[tuple[str, str]] = [("Path", p) for p in path]
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


def path_hop(uri: SipURI, source: Peer) -> Peer | None:
    """Where the first Path entry `uri` of a REGISTER from `source` is reached: the source
    itself when the entry names it (a hostname, which we do not resolve, counts as the proxy
    that sent the REGISTER; over TCP/TLS its connection, when the entry names that transport),
    else the address it names, by the transport it names, when that is reachable from the
    source (`reachable_from`); None for anything else."""
    host = (uri.params.get("maddr") or uri.host).strip("[]")
    ip = _ip(host)
    if ip is None:
        return source
    transport = uri.transport
    if transport not in ("udp", "tcp", "tls"):
        return None
    port = uri.port or (5061 if transport == "tls" else 5060)
    if ip == _ip(source[1]) and transport == source[0] and (source.reliable or port == source[2]):
        return source  # (by another transport: the address it names, as for any other)
    if not reachable_from(host, source[1]):
        return None
    return Peer(transport, host, port)


def add_gruus(result: RegisterResult, gruus: Gruus, bindings: list[Binding]) -> None:
    """RFC 5627 §5: each Contact of the 200 whose binding has an instance id gets its public
    and temporary GRUU (the Contacts are those of `_ok`); only for a UA that asked for GRUUs
    (the core's `Supported` of every 200 names `gruu`)."""
    by_uri = {f"<{b.contact}>": b for b in bindings}
    for i, (name, value) in enumerate(result.headers):
        uri, sep, rest = value.partition(">")
        b = by_uri.get(uri + sep) if name == "Contact" else None
        if b is not None:
            extra = gruus.contact_params(b, instance="+sip.instance=" not in rest.lower())
            result.headers[i] = (name, f"{uri}{sep}{extra}{rest}")


def _supports(req: Request, tag: str) -> bool:
    return any(v.strip().lower() == tag for v in req.get_all("supported"))


def _outbound(req: Request, contacts: list[Address], path: list[str]) -> bool | str:
    """Whether a REGISTER is processed as RFC 5626 outbound (§6): a Contact with
    `+sip.instance` and `reg-id`, the UA's `Supported: outbound`, and a first hop that supports
    outbound: the UA itself (one Via, no Path) or an edge whose Path entry has the `ob`
    parameter. A string: why it is refused, FIRST_HOP_LACKS_OUTBOUND when the UA asks for it
    through a first hop without `ob` or through a proxy that added no Path (439, §11.6), else a
    bad reg-id (400)."""
    flows = [a for a in contacts if "reg-id" in a.params and "+sip.instance" in a.params]
    if not flows or not _supports(req, "outbound"):
        return False  # (§6: reg-id is then ignored, the Contact is an ordinary binding)
    for a in flows:
        text = a.params.get("reg-id") or ""
        if not (
            text.isascii() and text.isdigit() and len(text) <= 10 and 1 <= int(text) <= MAX_REG_ID
        ):
            return "Bad reg-id: a number from 1 to 2147483647"
    if not path:
        return True if len(req.get_all("via")) == 1 else FIRST_HOP_LACKS_OUTBOUND
    try:
        ob = "ob" in parse_address(path[0]).uri.params
    except ParseError:
        ob = False
    return True if ob else FIRST_HOP_LACKS_OUTBOUND


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
