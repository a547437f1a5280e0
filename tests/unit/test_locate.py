"""Locating a carrier by name (RFC 3263): the SRV order (sip/locate.py) and the lookups
(net/dns.py) against a DNS server started by the test."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from dnsserver import DnsServer

from heimbuero.net.dns import LookupFailed, SipResolver
from heimbuero.sip.locate import Srv, order_srv, split_server, srv_name, ttl_for


def test_srv_order_is_by_priority_then_weighted() -> None:
    records = [Srv(20, 0, 5070, "backup"), Srv(10, 90, 5060, "big"), Srv(10, 10, 5060, "small")]
    firsts: Counter[str] = Counter()
    for seed in range(400):
        order = order_srv(records, random.Random(seed))
        assert order[-1].target == "backup"  # the higher priority number comes last, always
        firsts[order[0].target] += 1
    # weight 90 against 10: "big" leads about nine times in ten
    assert 300 < firsts["big"] < 395 and firsts["small"] > 5


def test_a_lone_dot_target_means_no_service() -> None:
    assert order_srv([Srv(0, 0, 0, ".")]) == []


def test_names_servers_and_ttls() -> None:
    assert srv_name("carrier.test", "udp") == "_sip._udp.carrier.test"
    assert srv_name("carrier.test", "tls") == "_sips._tcp.carrier.test"
    assert split_server("192.0.2.1") == ("192.0.2.1", 53)
    assert split_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert split_server("[2001:db8::1]:54") == ("2001:db8::1", 54)
    for bad in ("dns.example", "127.0.0.1:0", "127.0.0.1:x"):
        with pytest.raises(ValueError):
            split_server(bad)
    assert ttl_for([0]) == 30 and ttl_for([86400]) == 3600 and ttl_for([120, 300]) == 120


ZONE = {
    ("_sip._udp.carrier.test", "SRV"): ["10 0 5062 a.carrier.test", "20 0 5064 b.carrier.test"],
    ("a.carrier.test", "A"): ["192.0.2.10", "192.0.2.11"],
    ("b.carrier.test", "A"): ["192.0.2.20"],
    ("b.carrier.test", "AAAA"): ["2001:db8::20"],
    ("plain.test", "A"): ["192.0.2.30"],
}


def test_srv_targets_in_order_each_by_its_addresses() -> None:
    with DnsServer(ZONE, ttl=120) as server:
        resolver = SipResolver([server.address])
        found = asyncio.run(resolver.locate("carrier.test", 0, "udp"))
        # the SRV records by priority; a name's addresses in the order DNS gave them (an
        # RRset has none: RFC 2181 5.1)
        assert set(found.targets[:2]) == {("192.0.2.10", 5062), ("192.0.2.11", 5062)}
        assert found.targets[2:] == (("192.0.2.20", 5064), ("2001:db8::20", 5064))
        assert found.ttl == 120


def test_an_explicit_port_skips_srv_and_no_srv_falls_back_to_the_name() -> None:
    with DnsServer(ZONE) as server:
        resolver = SipResolver([server.address])
        with pytest.raises(LookupFailed):  # a port given: no SRV, and the name has no A
            asyncio.run(resolver.locate("carrier.test", 5080, "udp"))
        assert server.questions == [("carrier.test", "A"), ("carrier.test", "AAAA")]
        resolver = SipResolver([server.address])
        assert asyncio.run(resolver.locate("plain.test", 5080, "udp")).targets == (
            ("192.0.2.30", 5080),
        )
        assert ("_sip._udp.plain.test", "SRV") not in server.questions
        assert asyncio.run(resolver.locate("plain.test", 0, "tcp")).targets == (
            ("192.0.2.30", 5060),
        )
        assert ("_sip._tcp.plain.test", "SRV") in server.questions


def test_an_unknown_name_or_a_silent_server_fails_with_a_reason() -> None:
    with DnsServer(ZONE) as server:
        resolver = SipResolver([server.address])
        with pytest.raises(LookupFailed, match="nowhere.test"):
            asyncio.run(resolver.locate("nowhere.test", 0, "udp"))
    silent = SipResolver(["127.0.0.1:9"])  # nothing answers there
    with pytest.raises(LookupFailed):
        asyncio.run(silent.locate("carrier.test", 5060, "udp"))
    assert asyncio.run(silent.locate("192.0.2.1", 0, "tls")).targets == (("192.0.2.1", 5061),)
