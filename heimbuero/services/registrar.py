"""The registrar (RFC 3261 §10.3): binds a user's address-of-record to the devices that register.

Authentication happens before `handle()` is called; it receives the authenticated user name.
Devices behind NAT are reached at the address their REGISTER came from (`Binding.received`),
whatever private address their Contact names.
"""

from __future__ import annotations

from dataclasses import dataclass

from heimbuero.sip.message import Address, ParseError, Request, parse_address

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
            expires_text = addr.params.get("expires") or header_expires
            if expires_text is None:
                expires = s.default_expires
            elif expires_text.isdigit():
                expires = int(expires_text)
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
                received=source,
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
