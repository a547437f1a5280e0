"""SIP over IPv6 in the sans-IO core and its helpers: host:port text with brackets (RFC 3261
§25.1, RFC 5118), the local address of the peer's family when the server listens on both,
Via stamping, trusted peers and carrier addresses written as IPv6, dialog tokens holding an
IPv6 flow, and the RFC 5118 messages that name IPv6 hosts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_core import DOMAIN, Net, _account, answer, authorize, invite, register, req
from test_ops_health import _free_port, _Nobody

from heimbuero.config import ConfigError, ListenAddress, parse_listen
from heimbuero.net.transport import TransportLimits, Transports
from heimbuero.server import advertised_host
from heimbuero.services.core import CoreSettings, SipCore
from heimbuero.services.credentials import UserDirectory
from heimbuero.services.location import LocationService
from heimbuero.sip.auth import DigestAuthenticator
from heimbuero.sip.dialogtoken import DialogSigner
from heimbuero.sip.locate import split_server
from heimbuero.sip.message import ParseError, Request, Response, parse
from heimbuero.sip.peer import (
    Peer,
    address_key,
    host_port,
    host_text,
    same_address,
    split_host_port,
)

V4 = ("127.0.0.1", 5060)
V6 = ("::1", 5060)
ALICE4 = ("udp", "127.0.0.1", 40001)
ALICE6 = ("udp", "::1", 40011)
BOB6 = ("udp", "::1", 40012)
BOB6_TCP = ("tcp", "::1", 40013)
DATA = Path(__file__).resolve().parent.parent / "data" / "sip" / "rfc5118"


class DualNet(Net):
    """The core listening on 127.0.0.1 and ::1 (UDP and TCP), as `--sip udp:127.0.0.1:5060,
    udp:[::1]:5060,...` sets it up."""

    def __init__(self, trusted: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.core = SipCore(
            CoreSettings(
                domain=DOMAIN,
                local={"udp": V4, "tcp": V4},
                local_other={"udp": V6, "tcp": V6},
                trusted_peers=trusted,
            ),
            UserDirectory(_account),
            LocationService(),
            DigestAuthenticator(DOMAIN, b"k" * 32, ("MD5", "SHA-256")),
        )


# ---------------------------------------------------------------------- text helpers


def test_host_text_brackets_ipv6_only() -> None:
    assert host_text("::1") == "[::1]"
    assert host_text("[::1]") == "[::1]"
    assert host_text("192.0.2.1") == "192.0.2.1"
    assert host_text("example.com") == "example.com"
    assert host_port("2001:db8::1", 5060) == "[2001:db8::1]:5060"
    assert host_port("192.0.2.1", 5061) == "192.0.2.1:5061"


def test_address_key_and_same_address() -> None:
    assert address_key("[2001:DB8:0::1]") == "2001:db8::1"
    assert same_address("[::1]", "0:0:0:0:0:0:0:1")
    assert not same_address("::1", "::2")
    assert address_key("Example.COM") == "example.com"


@pytest.mark.parametrize(
    "text, want",
    [
        ("[2001:db8::1]:5060", ("2001:db8::1", 5060)),
        ("[2001:db8::1]", ("2001:db8::1", None)),
        ("2001:db8::1", ("2001:db8::1", None)),  # bare IPv6: no port (not "2001:db8:" port 1)
        ("192.0.2.1:5080", ("192.0.2.1", 5080)),
        ("192.0.2.1", ("192.0.2.1", None)),
    ],
)
def test_split_host_port(text: str, want: tuple[str, int | None]) -> None:
    assert split_host_port(text) == want


@pytest.mark.parametrize("text", ["[2001:db8::1", "[::1]x", "[::1]:0", "[::1]:99999", "a:b"])
def test_split_host_port_refuses_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(text)


def test_dns_server_ipv6() -> None:
    assert split_server("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    assert split_server("2001:db8::53") == ("2001:db8::53", 53)


# ---------------------------------------------------------------------- RFC 5118 messages


def _load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def test_rfc5118_valid_ipv6_references_parse() -> None:
    """§4.1: IPv6 in Request-URI, Via and Contact, in brackets."""
    msg = parse(_load("ipv6-good"))
    assert isinstance(msg, Request)
    assert msg.ruri.host == "[2001:db8::10]"
    assert msg.top_via.host == "[2001:db8::9:1]"
    contact = msg.get("contact") or ""
    assert "<sip:caller@[2001:db8::1]>" in contact


def test_rfc5118_ipv6_without_brackets_in_request_uri_is_refused() -> None:
    """§4.2: `sip:[user]@2001:db8::10` is no valid host (a port would be ambiguous)."""
    msg = parse(_load("ipv6-bad"))
    assert isinstance(msg, Request)
    with pytest.raises(ParseError):
        msg.ruri  # noqa: B018


@pytest.mark.parametrize(
    "uri",
    [
        "sip:bob@[2001:db8::zz]",
        "sip:bob@[2001:db8::10",
        "sip:bob@[fe80::1%eth0]:5060",  # a zone index is no part of IPv6reference
        "sip:bob@[2001:db8:::::1]",
    ],
)
def test_malformed_ipv6_references_are_parse_errors(uri: str) -> None:
    raw = (
        f"OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: x\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with pytest.raises(ParseError):
        parse(raw.encode()).ruri  # noqa: B018


# ---------------------------------------------------------------------- the core


def test_local_address_follows_the_peer_family() -> None:
    core = DualNet().core
    assert core.local_address("udp") == ("127.0.0.1", 5060)
    assert core.local_address("udp", "192.0.2.1") == ("127.0.0.1", 5060)
    assert core.local_address("udp", "2001:db8::1") == ("[::1]", 5060)
    assert core.local_address("tcp", "::1") == ("[::1]", 5060)


def test_local_address_of_an_ipv6_only_server_is_bracketed() -> None:
    core = SipCore(
        CoreSettings(domain=DOMAIN, local={"udp": V6}),
        UserDirectory(_account),
        LocationService(),
        DigestAuthenticator(DOMAIN, b"k" * 32, ("MD5",)),
    )
    assert core.local_address("udp", "192.0.2.1") == ("[::1]", 5060)
    uri = parse(b"OPTIONS sip:[::1]:5060 SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:9;branch=z9hG4bK1\r\n"
                b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
                b"Content-Length: 0\r\n\r\n")  # fmt: skip
    assert isinstance(uri, Request) and core.is_local_uri(uri.ruri)


def test_register_from_ipv6_and_call_from_ipv4_takes_the_ipv6_socket() -> None:
    net = DualNet()
    ok = register(net, "bob", BOB6)
    assert ok.status == 200
    assert ok.get_all("contact") == ["<sip:bob@[::1]:40012>;expires=3600"]
    _, out = invite(net, "alice", "bob", ALICE4)
    sent = [(m, d) for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    assert len(sent) == 1
    fwd, dest = sent[0]
    assert dest == ("udp", "::1", 40012)
    assert fwd.uri == "sip:bob@[::1]:40012"
    assert fwd.top_via.host == "[::1]" and fwd.top_via.port == 5060
    rr = fwd.get_all("record-route")
    assert len(rr) == 2  # another family: one entry for each side
    assert rr[0].startswith("<sip:[::1]:5060;lr;") and rr[1].startswith("<sip:127.0.0.1:5060;lr;")
    # the 200 goes back to alice over IPv4 with her Via on top
    ok200 = answer(fwd, 200, contact="sip:bob@[::1]:40012")
    back = net.send(ok200.serialize(), BOB6)
    resp = [(m, d) for m, d in back if isinstance(m, Response) and m.status == 200]
    assert resp and resp[0][1] == ALICE4
    assert resp[0][0].top_via.host == "127.0.0.1"


def test_call_between_ipv6_phones_over_tcp_has_one_record_route() -> None:
    net = DualNet()
    register(net, "bob", BOB6_TCP)
    _, out = invite(net, "alice", "bob", ("tcp", "::1", 40014))
    [(fwd, dest)] = [(m, d) for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    assert dest == BOB6_TCP
    assert fwd.get_all("record-route")[0].startswith("<sip:[::1]:5060;transport=tcp;lr;")
    assert len(fwd.get_all("record-route")) == 1
    assert str(fwd.top_via).startswith("SIP/2.0/TCP [::1]:5060;branch=")


def test_received_is_stamped_unbracketed_and_a_forged_one_is_dropped() -> None:
    """RFC 3261 §18.2.1: the server adds received when the sent-by host is not the source;
    a received the client wrote when it is does not survive (answers follow the source)."""
    net = DualNet()
    lie = req("OPTIONS", f"sip:{DOMAIN}", ALICE6, "alice", f"sip:{DOMAIN}")
    raw = lie.serialize().replace(b";rport", b";received=2001:db8::66")
    [(resp, dest)] = net.send(raw, ALICE6)
    assert dest == ALICE6
    assert isinstance(resp, Response) and "received" not in resp.top_via.params
    other = req("OPTIONS", f"sip:{DOMAIN}", ("udp", "2001:db8::9", 40011), "alice", f"sip:{DOMAIN}")
    [(resp, dest)] = net.send(other.serialize().replace(b";rport", b""), ALICE6)
    assert resp.top_via.params["received"] == "::1"  # type: ignore[union-attr]
    assert dest == ("udp", "::1", 40011)


def test_authorize_helper_keeps_ipv6_via() -> None:
    net = DualNet()
    r = req("REGISTER", f"sip:{DOMAIN}", BOB6, "bob", f"sip:bob@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), BOB6)
    assert isinstance(challenge, Response)
    assert authorize(r, challenge, "bob").top_via.host == "[::1]"


@pytest.mark.parametrize("spelling", ["2001:db8::9", "[2001:db8::9]", "2001:DB8:0::9"])
def test_trusted_peer_written_as_ipv6(spelling: str) -> None:
    core = DualNet(trusted=(spelling,)).core
    assert core.is_trusted(Peer("udp", "2001:db8::9", 5060))
    assert core.is_trusted(Peer("udp", "2001:db8::9", 5099))
    assert not core.is_trusted(Peer("udp", "2001:db8::", 9))


def test_trusted_peer_ipv6_with_port() -> None:
    core = DualNet(trusted=("[2001:db8::9]:5070",)).core
    assert core.is_trusted(Peer("udp", "2001:db8::9", 5070))
    assert not core.is_trusted(Peer("udp", "2001:db8::9", 5060))


# ---------------------------------------------------------------------- dialog tokens


def test_alias_and_route_token_hold_an_ipv6_flow() -> None:
    signer = DialogSigner(b"s" * 32)
    flow = Peer("udp", "2001:db8::9", 40000)
    alias = signer.alias(flow, "call-1")
    assert alias.startswith("[2001:db8::9]~40000~udp~")
    assert signer.check_alias(alias, "call-1") == flow
    assert signer.check_alias(alias, "call-2") is None
    forged = alias.replace("2001:db8::9", "2001:db8::66")
    assert signer.check_alias(forged, "call-1") is None
    token = signer.route_token("c", "t", (flow, Peer("udp", "127.0.0.1", 5060)))
    flows = signer.check_route(token, "c", ("t",))
    assert flows is not None and flow in flows


# ---------------------------------------------------------------------- configuration, sockets


def test_listen_syntax_with_ipv6() -> None:
    got = parse_listen("udp:[::1]:5060,tcp:127.0.0.1:5060,tls:[2001:db8::5]:5061")
    assert got == (
        ListenAddress("udp", "::1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
        ListenAddress("tls", "2001:db8::5", 5061),
    )
    assert str(got[0]) == "udp:[::1]:5060"
    for bad in ("udp:::1:5060", "udp:[::1]", "udp:[::1:5060"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


def test_advertise_replaces_the_address_of_its_family_only() -> None:
    assert advertised_host("0.0.0.0", "203.0.113.5") == "203.0.113.5"
    assert advertised_host("::1", "203.0.113.5") == "::1"
    assert advertised_host("::1", "[2001:db8::5]") == "2001:db8::5"
    assert advertised_host("127.0.0.1", "2001:db8::5") == "127.0.0.1"
    assert advertised_host("::1", "sip.example.org") == "sip.example.org"


def test_udp_on_both_families_on_one_port() -> None:
    """`udp:0.0.0.0:P` and `udp:[::]:P` together: the IPv6 socket is IPv6 only."""

    async def scenario() -> list[tuple[str, str, int]]:
        port = _free_port()
        t = Transports(_Nobody(), TransportLimits())  # type: ignore[arg-type]
        await t.listen("udp", "0.0.0.0", port)
        await t.listen("udp", "::", port)
        await t.listen("tcp", "0.0.0.0", port)
        await t.listen("tcp", "::", port)
        bound = t.bound()
        await t.close()
        return bound

    assert len(asyncio.run(scenario())) == 4


class _Unreached(_Nobody):
    def __init__(self) -> None:
        self.gone: list[Peer] = []

    def unreachable(self, dest: Peer, now: float) -> None:
        self.gone.append(dest)

    def outgoing(self) -> list[tuple[bytes, Peer]]:
        return []

    def next_deadline(self) -> None:
        return None


def test_udp_to_a_family_without_a_socket_fails_at_once() -> None:
    """An IPv4-only server asked to send to an IPv6 address over UDP: the transactions waiting
    on it hear at once that it is unreachable (they fail over), instead of after Timer B."""

    async def scenario() -> tuple[list[Peer], list[Peer]]:
        endpoint = _Unreached()
        t = Transports(endpoint, TransportLimits())  # type: ignore[arg-type]
        await t.listen("udp", "127.0.0.1", _free_port())
        t.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n", Peer("udp", "::1", 5099))
        t.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n", Peer("udp", "127.0.0.1", 9))
        during = list(endpoint.gone)  # not inside the send (a flush is iterating)
        await asyncio.sleep(0.05)
        await t.close()
        return during, endpoint.gone

    during, after = asyncio.run(scenario())
    assert during == []
    assert after[0] == Peer("udp", "::1", 5099)
    assert all(p.host == "::1" or p == Peer("udp", "127.0.0.1", 9) for p in after)
