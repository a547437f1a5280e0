"""DNS lookups for locating SIP servers (RFC 3263), with dnspython's asynchronous resolver:
nothing here blocks the event loop. sip/locate.py decides what to ask and in which order the
answers are tried; this module asks.

    resolver = SipResolver(["127.0.0.1:5353"])   # [] : the system's resolv.conf
    found = await resolver.locate("carrier.example", 0, "udp")
    found.targets  -> [("192.0.2.10", 5060), ("192.0.2.11", 5062)], found.ttl -> 300
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
    DEFAULT_PORT,
    Srv,
    is_address,
    order_srv,
    split_server,
    srv_name,
    ttl_for,
)

TIMEOUT = 3.0  # seconds for one name, every server and retry included


class LookupFailed(Exception):
    """No address for the name (it does not exist, has no records, or no server answered)."""


@dataclass(frozen=True, slots=True)
class Located:
    targets: tuple[tuple[str, int], ...]  # (IP address, port), in the order to try them
    ttl: int  # seconds the answer may be kept


class SipResolver:
    def __init__(self, servers: Sequence[str] = (), rng: random.Random | None = None) -> None:
        """`servers`: "ADDRESS" or "ADDRESS:PORT" of the DNS servers to ask; none: the
        system's (/etc/resolv.conf)."""
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
        """RFC 3263 §4.2: where a next hop `host` (`port` 0: none given) is."""
        if is_address(host):
            return Located(((host.strip("[]"), port or DEFAULT_PORT[transport]),), 3600)
        if not self._r.nameservers:
            raise LookupFailed(f"{host}: no DNS server (set [sip] dns_servers)")
        if port:
            addresses, ttl = await self._addresses(host)
            return Located(tuple((a, port) for a in addresses), ttl_for([ttl]))
        try:
            answer = await self._r.resolve(srv_name(host, transport), "SRV", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            addresses, ttl = await self._addresses(host)  # no SRV: the name itself
            return Located(tuple((a, DEFAULT_PORT[transport]) for a in addresses), ttl_for([ttl]))
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"{srv_name(host, transport)}: {exc}") from None
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
            raise LookupFailed(f"{srv_name(host, transport)}: no target has an address")
        return Located(tuple(targets), ttl_for(ttls))

    async def _addresses(self, name: str) -> tuple[list[str], int]:
        """A and AAAA of `name` (IPv4 first), and the smaller TTL."""
        found: list[str] = []
        ttls: list[int] = []
        errors: list[str] = []
        for rtype in ("A", "AAAA"):
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
