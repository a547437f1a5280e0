"""DNS lookups for locating SIP servers (RFC 3263), with dnspython's asynchronous resolver:
nothing here blocks the event loop. sip/locate.py decides what to ask and in which order the
answers are tried; this module asks.

    resolver = SipResolver(["127.0.0.1:5353"])   # [] : the system's resolv.conf
    found = await resolver.locate("carrier.example", 0, "udp")
    found.targets  -> [("192.0.2.10", 5060), ("192.0.2.11", 5062)], found.ttl -> 300
    found = await resolver.locate("carrier.example", 0, "auto")   # NAPTR chooses (§4.1)
    found.transport -> "tcp"
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from heimbuero.sip.locate import (
    AUTO,
    DEFAULT_PORT,
    Naptr,
    Srv,
    choose_naptr,
    fallback_srv,
    is_address,
    order_srv,
    split_server,
    srv_name,
    ttl_for,
)

TIMEOUT = 3.0  # seconds for one name, every server and retry included
# What a trunk with transport "auto" may be reached over: over TLS the connection needs the
# carrier's name to check its certificate, which a NAPTR/SRV target is not; a TLS trunk is
# configured with transport "tls" (its name, its [sip.trunk_tls] verification).
AUTO_TRANSPORTS = ("udp", "tcp")


class LookupFailed(Exception):
    """No address for the name (it does not exist, has no records, or no server answered)."""


@dataclass(frozen=True, slots=True)
class Located:
    targets: tuple[tuple[str, int], ...]  # (IP address, port), in the order to try them
    ttl: int  # seconds the answer may be kept
    transport: str = ""  # the transport DNS chose (NAPTR, for "auto"); "": the one asked for


# the record type of each address family
RECORD_TYPE = {"ipv4": "A", "ipv6": "AAAA"}


class SipResolver:
    def __init__(
        self,
        servers: Sequence[str] = (),
        rng: random.Random | None = None,
        families: Sequence[str] = ("ipv4", "ipv6"),
    ) -> None:
        """`servers`: "ADDRESS" or "ADDRESS:PORT" of the DNS servers to ask; none: the
        system's (/etc/resolv.conf). `families`: the address families the server can reach
        ("ipv4", "ipv6"), the preferred first: a name's addresses come in that order, and a
        family not named is not asked for."""
        self._rtypes = tuple(RECORD_TYPE[f] for f in families)
        if not self._rtypes:
            raise ValueError("no address family to look up")
        if servers:
            r = dns.asyncresolver.Resolver(configure=False)
            addresses, ports = [], {}
            for s in servers:
                host, port = split_server(s)
                addresses.append(host)
                ports[host] = port
            r.nameservers = addresses
            r.nameserver_ports = ports
        else:
            try:
                r = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                r = dns.asyncresolver.Resolver(configure=False)  # (locate() says so)
        r.lifetime = TIMEOUT
        self._r = r
        self._rng = rng or random.Random()

    async def locate(self, host: str, port: int, transport: str) -> Located:
        """RFC 3263 §4.2: where a next hop `host` (`port` 0: none given) is; `transport`
        "auto" with a name and no port: by its NAPTR records first (§4.1)."""
        if transport == AUTO:
            if not port and not is_address(host):
                return await self._by_naptr(host)
            udp = await self.locate(host, port, "udp")  # §4.1: a port or an address: UDP
            return Located(udp.targets, udp.ttl, "udp")
        if is_address(host):
            return Located(((host.strip("[]"), port or DEFAULT_PORT[transport]),), 3600)
        if not self._r.nameservers:
            raise LookupFailed(f"{host}: no DNS server (set [sip] dns_servers)")
        if port:
            addresses, ttl = await self._addresses(host)
            return Located(tuple((a, port) for a in addresses), ttl_for([ttl]))
        found = await self._by_srv(srv_name(host, transport))
        if found is None:
            addresses, ttl = await self._addresses(host)  # no SRV: the name itself
            return Located(tuple((a, DEFAULT_PORT[transport]) for a in addresses), ttl_for([ttl]))
        return found

    async def _by_naptr(self, host: str) -> Located:
        """§4.1: the NAPTR records of `host` choose the transport and the SRV name (the first
        that has an address); without usable ones, the SRV names of our transports, then the
        name itself over UDP."""
        if not self._r.nameservers:
            raise LookupFailed(f"{host}: no DNS server (set [sip] dns_servers)")
        records: list[Naptr] = []
        ttls: list[int] = []
        try:
            answer = await self._r.resolve(host, "NAPTR", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            pass
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"{host} NAPTR: {exc}") from None
        else:
            records = [
                Naptr(int(r.order), int(r.preference), _text(r.flags), _text(r.service),
                      _text(r.regexp), r.replacement.to_text(omit_final_dot=True))
                for r in answer
            ]  # fmt: skip
            if answer.rrset is not None:
                ttls.append(int(answer.rrset.ttl))
        chosen = choose_naptr(records, AUTO_TRANSPORTS)
        for transport, name in chosen or fallback_srv(host, AUTO_TRANSPORTS):
            try:
                found = await self._by_srv(name)
            except LookupFailed:
                continue  # no address behind this one: the next may have
            if found is not None:
                return Located(found.targets, ttl_for([*ttls, found.ttl]), transport)
        if chosen:
            raise LookupFailed(f"{host}: no NAPTR record leads to an address")
        addresses, ttl = await self._addresses(host)  # §4.1: at last, A/AAAA over UDP
        return Located(tuple((a, DEFAULT_PORT["udp"]) for a in addresses), ttl_for([ttl]), "udp")

    async def _by_srv(self, name: str) -> Located | None:
        """The targets of the SRV records `name`, in order, each by its addresses; None: no
        such records."""
        try:
            answer = await self._r.resolve(name, "SRV", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"{name}: {exc}") from None
        records = [
            Srv(int(r.priority), int(r.weight), int(r.port), r.target.to_text(omit_final_dot=True))
            for r in answer
        ]
        ttls = [int(answer.rrset.ttl)] if answer.rrset is not None else []
        targets: list[tuple[str, int]] = []
        for srv in order_srv(records, self._rng):
            try:
                addresses, ttl = await self._addresses(srv.target)
            except LookupFailed:
                continue  # one target without an address: the others may do
            ttls.append(ttl)
            targets.extend((a, srv.port) for a in addresses)
        if not targets:
            raise LookupFailed(f"{name}: no target has an address")
        return Located(tuple(targets), ttl_for(ttls))

    async def _addresses(self, name: str) -> tuple[list[str], int]:
        """A and AAAA of `name` (of the families we reach, the preferred first), and the
        smaller TTL."""
        found: list[str] = []
        ttls: list[int] = []
        errors: list[str] = []
        for rtype in self._rtypes:
            try:
                answer = await self._r.resolve(name, rtype, search=False)
            except dns.exception.DNSException as exc:  # NXDOMAIN, no answer, timeout
                errors.append(str(exc))
                continue
            found.extend(r.to_text() for r in answer)
            if answer.rrset is not None:
                ttls.append(int(answer.rrset.ttl))
        if not found:
            raise LookupFailed(f"{name}: {errors[0] if errors else 'no address'}")
        return found, min(ttls) if ttls else 0


def _text(value: bytes | str) -> str:
    """A NAPTR character-string (bytes in dnspython) as text; undecodable bytes never match."""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value
