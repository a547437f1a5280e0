"""Where a registered device is reached: the Contact as written (third-party or multi-socket
registration, RFC 3261 §10.2) or the address the REGISTER came from (NAT, private or
unreachable Contact, connection-oriented transports)."""

from __future__ import annotations

import pytest
from test_core import DOMAIN, Net, authorize, req

from heimbuero.services.location import Peer
from heimbuero.services.registrar import reach_address, reachable_from
from heimbuero.sip.message import Response, parse_address, parse_via

PUBLIC_SRC: Peer = ("udp", "198.51.100.7", 5060)  # as a public address for these tests
SRC = ("udp", "81.2.69.160", 40000)
LOOP = ("udp", "127.0.0.1", 40000)
LAN = ("udp", "192.168.1.20", 5060)


def decide(contact: str, via: str | None, source: Peer) -> Peer:
    uri = parse_address(f"<{contact}>").uri
    return reach_address(uri, parse_via(via) if via else None, source)


@pytest.mark.parametrize(
    ("contact", "via", "source", "expected", "why"),
    [
        # a normal device: Contact and Via name the source
        ("sip:a@81.2.69.160:40000", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "normal"),
        # third party: another public address, Via = source: as written
        ("sip:a@81.2.69.161:5070", "SIP/2.0/UDP 81.2.69.160:40000", SRC,
         ("udp", "81.2.69.161", 5070), "third party"),
        ("sip:a@81.2.69.161", "SIP/2.0/UDP 81.2.69.160:40000", SRC,
         ("udp", "81.2.69.161", 5060), "default port"),
        # same host, another port (multi-socket device): as written
        ("sip:a@81.2.69.160:40002", "SIP/2.0/UDP 81.2.69.160:40000", SRC,
         ("udp", "81.2.69.160", 40002), "multi-socket"),
        # Via differs from the source: NAT, whatever the Contact says
        ("sip:a@81.2.69.161:5070", "SIP/2.0/UDP 192.168.1.20:5060", SRC, SRC, "via host"),
        ("sip:a@81.2.69.161:5070", "SIP/2.0/UDP 81.2.69.160:5060", SRC, SRC, "via port"),
        ("sip:a@81.2.69.161:5070", None, SRC, SRC, "no via"),
        # private / unreachable Contacts from a public source: the source
        ("sip:a@192.168.1.20:5060", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "rfc1918"),
        ("sip:a@10.1.2.3:5060", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "rfc1918 10/8"),
        ("sip:a@172.20.0.1:5060", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "rfc1918 172"),
        ("sip:a@100.64.0.9:5060", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "cgnat"),
        ("sip:a@169.254.1.1:5060", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "link-local"),
        ("sip:a@127.0.0.1:5432", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "loopback"),
        ("sip:a@0.0.0.0:5060", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "unspecified"),
        ("sip:a@224.0.0.1:5060", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "multicast"),
        ("sip:a@phone.example.com", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "a name"),
        ("sip:a@[2001:db8::1]:5060", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC, "v6 for v4"),
        # another transport than the REGISTER used: the source
        ("sip:a@81.2.69.161:5070;transport=tcp", "SIP/2.0/UDP 81.2.69.160:40000", SRC, SRC,
         "transport"),
        # loopback from loopback, private from private: as written
        ("sip:a@127.0.0.1:40010", "SIP/2.0/UDP 127.0.0.1:40000", LOOP,
         ("udp", "127.0.0.1", 40010), "loopback from loopback"),
        ("sip:a@192.168.1.30:5062", "SIP/2.0/UDP 192.168.1.20:5060", LAN,
         ("udp", "192.168.1.30", 5062), "lan from lan"),
        ("sip:a@127.0.0.1:5060", "SIP/2.0/UDP 192.168.1.20:5060", LAN, LAN, "loopback from lan"),
        # over TCP: always the connection
        ("sip:a@81.2.69.161:5070;transport=tcp", "SIP/2.0/TCP 81.2.69.160:40000",
         ("tcp", "81.2.69.160", 40000), ("tcp", "81.2.69.160", 40000), "tcp"),
    ],
)  # fmt: skip
def test_decision_table(contact: str, via: str | None, source: Peer, expected: Peer, why: str):
    assert decide(contact, via, source) == expected, why


def test_reachable_from() -> None:
    assert reachable_from("81.2.69.161", "81.2.69.160")
    assert reachable_from("81.2.69.161", "192.168.1.2")  # a LAN device names a public host
    assert not reachable_from("192.168.1.2", "81.2.69.160")
    assert not reachable_from("127.0.0.1", "81.2.69.160")
    assert reachable_from("127.0.0.2", "127.0.0.1")
    assert not reachable_from("fe80::1", "2a00:1450::1")
    assert not reachable_from("fd00::1", "2a00:1450::1")
    assert reachable_from("2a00:1450::2", "2a00:1450::1")


def _register(net: Net, src: Peer, contact: str) -> Response:
    r = req("REGISTER", f"sip:{DOMAIN}", src, "bob", f"sip:bob@{DOMAIN}", contact=contact)
    [(challenge, _)] = net.send(r.serialize(), src)
    [(ok, _)] = net.send(authorize(r, challenge, "bob").serialize(), src)
    assert isinstance(ok, Response) and ok.status == 200, ok
    return ok


def test_third_party_registration_is_where_calls_go() -> None:
    net = Net()
    src: Peer = ("udp", "127.0.0.1", 40002)
    _register(net, src, "sip:bob@127.0.0.1:40077")
    [b] = net.core.location.lookup("bob", net.now)
    assert b.received == ("udp", "127.0.0.1", 40077)
    assert net.core.proxy.device_targets("bob", net.now) == [
        ("sip:bob@127.0.0.1:40077", ("udp", "127.0.0.1", 40077), ())
    ]


def test_private_contact_from_loopback_uses_the_source() -> None:
    net = Net()
    src: Peer = ("udp", "127.0.0.1", 40002)
    _register(net, src, "sip:bob@192.168.1.20:5060")
    [b] = net.core.location.lookup("bob", net.now)
    assert b.received == src


def test_unsolicited_mwi_notify_takes_the_path() -> None:
    """A device registered through an edge proxy (RFC 3327 Path) gets the message-summary
    NOTIFY at the edge, with the Path as Route (§5.4); the Contact is its Request-URI."""
    from heimbuero.services.mediaapps import notify_waiting
    from heimbuero.sip.message import Request

    net = Net()
    edge: Peer = ("udp", "127.0.0.1", 40100)
    path = "<sip:127.0.0.1:40100;lr>"
    r = req("REGISTER", f"sip:{DOMAIN}", edge, "bob", f"sip:bob@{DOMAIN}",
            contact="sip:bob@127.0.0.1:40077")  # fmt: skip
    r.add("Path", path)
    r.add("Supported", "path")
    [(challenge, _)] = net.send(r.serialize(), edge)
    [(ok, _)] = net.send(authorize(r, challenge, "bob").serialize(), edge)
    assert isinstance(ok, Response) and ok.status == 200, ok
    assert ok.get_all("path") == [path]
    assert notify_waiting(net.core, "bob", 1, 0, net.now) == 1
    net.core.pump(net.now)
    [(notify, dest)] = net.drain()
    assert isinstance(notify, Request) and notify.method == "NOTIFY"
    assert dest == edge
    assert notify.uri == "sip:bob@127.0.0.1:40077"
    assert notify.get_all("route") == [path]
