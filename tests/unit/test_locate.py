"""Locating a carrier by name (RFC 3263): the SRV order (sip/locate.py) and the lookups
(net/dns.py) against a DNS server started by the test."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest
from dnsserver import DnsServer

from heimbuero import config
from heimbuero.config import ConfigError
from heimbuero.net.dns import LookupFailed, SipResolver
from heimbuero.sip.locate import (
    MAX_NAPTR,
    Naptr,
    Srv,
    choose_naptr,
    fallback_srv,
    order_srv,
    split_server,
    srv_name,
    ttl_for,
)


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


def test_addresses_of_the_families_we_reach_the_preferred_first() -> None:
    with DnsServer(ZONE) as server:
        both = SipResolver([server.address], families=("ipv6", "ipv4"))
        found = asyncio.run(both.locate("carrier.test", 0, "udp"))
        assert found.targets[2:] == (("2001:db8::20", 5064), ("192.0.2.20", 5064))
        v4 = SipResolver([server.address], families=("ipv4",))
        found = asyncio.run(v4.locate("carrier.test", 0, "udp"))
        assert ("2001:db8::20", 5064) not in found.targets
        asked = [q for q in server.questions if q[1] == "AAAA"]
        assert asked == [("a.carrier.test", "AAAA"), ("b.carrier.test", "AAAA")]  # `both`
    with pytest.raises(ValueError):
        SipResolver([], families=())


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


# -- NAPTR (RFC 3263 §4.1): a trunk with transport "auto" --------------------------------

BOTH = ("udp", "tcp")


def naptr(
    order: int, pref: int, service: str, target: str, flags: str = "s", regexp: str = ""
) -> Naptr:
    return Naptr(order, pref, flags, service, regexp, target)


def test_naptr_by_order_then_preference() -> None:
    records = [
        naptr(20, 10, "SIP+D2U", "_sip._udp.c.test"),
        naptr(10, 50, "SIP+D2U", "_sip._udp.backup.c.test"),
        naptr(10, 20, "SIP+D2T", "_sip._tcp.c.test."),
    ]
    assert choose_naptr(records, BOTH) == [
        ("tcp", "_sip._tcp.c.test"),  # order 10, preference 20
        ("udp", "_sip._udp.backup.c.test"),  # order 10, preference 50
        ("udp", "_sip._udp.c.test"),  # order 20
    ]


def test_naptr_skips_what_we_do_not_support_or_cannot_read() -> None:
    records = [
        naptr(1, 1, "SIPS+D2T", "_sips._tcp.c.test"),  # TLS: not for "auto" trunks
        naptr(2, 1, "SIP+D2S", "_sip._sctp.c.test"),  # SCTP: not ours
        naptr(3, 1, "E2U+sip", "_sip._udp.c.test"),  # ENUM, not a SIP service
        naptr(4, 1, "SIP+D2U", "_sip._udp.c.test", flags="a"),  # "a": an address, not SRV
        naptr(5, 1, "SIP+D2U", "_sip._udp.c.test", flags=""),  # non-terminal: not followed
        naptr(6, 1, "SIP+D2U", "", regexp="!^.*$!sip:x@evil.test!"),  # a rewrite: not used
        naptr(7, 1, "SIP+D2U", "."),  # no replacement
        naptr(70000, 1, "SIP+D2U", "_sip._udp.huge.c.test"),  # out of range
        naptr(9, 1, "sip+d2t", "_sip._tcp.c.test"),  # (services are case-insensitive)
        naptr(9, 2, "SIP+D2T", "_sip._tcp.c.test"),  # the same again: once
    ]
    assert choose_naptr(records, BOTH) == [("tcp", "_sip._tcp.c.test")]
    assert choose_naptr(records[:1], ("udp", "tcp", "tls")) == [("tls", "_sips._tcp.c.test")]
    assert choose_naptr(records, ("udp",)) == []


def test_naptr_considers_a_bounded_number_of_records() -> None:
    junk = [naptr(1, i, "SIP+D2S", f"_sip._sctp.{i}.c.test") for i in range(MAX_NAPTR)]
    assert choose_naptr([*junk, naptr(2, 1, "SIP+D2U", "_sip._udp.c.test")], BOTH) == []
    assert choose_naptr([*junk[1:], naptr(2, 1, "SIP+D2U", "_sip._udp.c.test")], BOTH) == [
        ("udp", "_sip._udp.c.test")
    ]


def test_without_naptr_the_srv_names_of_our_transports() -> None:
    assert fallback_srv("c.test", BOTH) == [
        ("udp", "_sip._udp.c.test"),
        ("tcp", "_sip._tcp.c.test"),
    ]
    assert fallback_srv("c.test", ("tcp",)) == [("tcp", "_sip._tcp.c.test")]


NAPTR_ZONE = {
    ("carrier.test", "NAPTR"): [
        '5 10 "s" "SIPS+D2T" "" _sips._tcp.carrier.test.',
        '10 10 "s" "SIP+D2T" "" _sip._tcp.carrier.test.',
        '20 10 "s" "SIP+D2U" "" _sip._udp.carrier.test.',
    ],
    ("_sips._tcp.carrier.test", "SRV"): ["10 0 5061 a.carrier.test"],
    ("_sip._tcp.carrier.test", "SRV"): ["10 0 5070 a.carrier.test"],
    ("_sip._udp.carrier.test", "SRV"): ["10 0 5062 a.carrier.test"],
    ("a.carrier.test", "A"): ["192.0.2.10"],
    ("dead.test", "NAPTR"): ['10 10 "s" "SIP+D2T" "" _sip._tcp.nowhere.test.'],
    ("dead.test", "A"): ["192.0.2.99"],
    ("_sip._tcp.srvonly.test", "SRV"): ["10 0 5072 a.carrier.test"],
    ("plain.test", "A"): ["192.0.2.30"],
}


def test_auto_follows_naptr_then_srv_then_a() -> None:
    with DnsServer(NAPTR_ZONE, ttl=200) as server:
        resolver = SipResolver([server.address])
        found = asyncio.run(resolver.locate("carrier.test", 0, "auto"))
        # TLS is skipped (not for "auto"), TCP has the lower order
        assert (found.transport, found.targets) == ("tcp", (("192.0.2.10", 5070),))
        assert found.ttl == 200
        assert ("_sips._tcp.carrier.test", "SRV") not in server.questions
        assert ("_sip._udp.carrier.test", "SRV") not in server.questions
        # no NAPTR: the SRV records of each transport (UDP first, then TCP), then the name
        found = asyncio.run(resolver.locate("srvonly.test", 0, "auto"))
        assert (found.transport, found.targets) == ("tcp", (("192.0.2.10", 5072),))
        asked = server.questions[server.questions.index(("srvonly.test", "NAPTR")) :]
        assert asked[:3] == [
            ("srvonly.test", "NAPTR"), ("_sip._udp.srvonly.test", "SRV"),
            ("_sip._tcp.srvonly.test", "SRV"),
        ]  # fmt: skip
        found = asyncio.run(resolver.locate("plain.test", 0, "auto"))
        assert (found.transport, found.targets) == ("udp", (("192.0.2.30", 5060),))
        # a port given: no NAPTR, no SRV, UDP (§4.1)
        found = asyncio.run(resolver.locate("plain.test", 5080, "auto"))
        assert (found.transport, found.targets) == ("udp", (("192.0.2.30", 5080),))
        # NAPTR records that lead nowhere fail; they do not fall back to the name's own A
        with pytest.raises(LookupFailed, match="dead.test"):
            asyncio.run(resolver.locate("dead.test", 0, "auto"))


def test_prefer_ipv6_is_a_boolean_setting(tmp_path: Path) -> None:
    def load(line: str) -> config.Config:
        (tmp_path / "config.toml").write_text(
            f'[server]\ndomain = "x.test"\n\n[sip]\n{line}\n', encoding="utf-8"
        )
        return config.load(tmp_path)

    assert load("prefer_ipv6 = true").sip.prefer_ipv6 is True
    assert load("").sip.prefer_ipv6 is False
    with pytest.raises(ConfigError, match="prefer_ipv6 must be true or false"):
        load('prefer_ipv6 = "yes"')
