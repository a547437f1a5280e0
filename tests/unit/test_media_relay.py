"""The proxy's relay hooks: which calls are anchored, which port each side is told, what the
relay process is asked to do, and that a NATed side's private address is never sent to."""

from __future__ import annotations

from typing import Any

from heimbuero.config import ListenAddress, parse_listen
from heimbuero.media.relay_config import RelaySettings
from heimbuero.server import relay_binds
from heimbuero.services.media_relay import RelayAnchor
from heimbuero.sip.message import Request, Response, parse
from heimbuero.sip.peer import Peer

CALLER = Peer("udp", "198.51.100.7", 5060)  # a home router's public address
CALLEE = Peer("udp", "203.0.113.9", 61000)


def sdp(address: str, port: int, extra: str = "") -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\n{extra}"
    )


def invite(body: str, *, to_tag: str = "", ruri: str = "sip:bob@203.0.113.9:61000") -> Request:
    msg = parse(
        (
            f"INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
            "From: <sip:alice@example.test>;tag=alice1\r\n"
            f"To: <sip:bob@example.test>{';tag=' + to_tag if to_tag else ''}\r\n"
            "Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
    )
    assert isinstance(msg, Request)
    return msg


def answer(body: str, status: int = 200, method: str = "INVITE") -> Response:
    msg = parse(
        (
            f"SIP/2.0 {status} OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
            "From: <sip:alice@example.test>;tag=alice1\r\nTo: <sip:bob@example.test>;tag=bob1\r\n"
            f"Call-ID: c1\r\nCSeq: 1 {method}\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
    )
    assert isinstance(msg, Response)
    return msg


def anchor(mode: str = "when_needed") -> tuple[RelayAnchor, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    settings = RelaySettings(relay=mode, port_min=40000, port_max=40007)
    return RelayAnchor(settings, "192.0.2.1", sent.append), sent


def test_a_natted_caller_is_anchored_and_its_private_address_is_never_sent_to() -> None:
    relay, sent = anchor()
    req = invite(sdp("192.168.178.20", 7078))
    relay.on_offer(req, CALLER, CALLEE)
    body = req.body.decode()
    assert "c=IN IP4 192.0.2.1\r\n" in body and "192.168.178.20" not in body.split("t=")[1]
    assert "m=audio 40002 RTP/AVP 8 101\r\n" in body  # leg b's port: the callee sends there
    assert "a=rtpmap:101 telephone-event/8000" in body
    assert sent == [{"cmd": "offer", "call_id": "c1/0", "ports": [40000, 40002]}]

    resp = answer(sdp("203.0.113.9", 9000))
    relay.on_answer(resp, CALLEE)
    assert "m=audio 40000 RTP/AVP" in resp.body.decode()  # leg a's port: the caller sends there
    # the callee's SDP names the address it signals from: the relay may send there at once
    assert sent[-1] == {"cmd": "answer", "call_id": "c1/0", "address": ["203.0.113.9", 9000]}


def test_a_call_between_public_phones_is_left_alone_when_needed_but_anchored_always() -> None:
    relay, sent = anchor()
    req = invite(sdp("198.51.100.7", 7078))
    original = bytes(req.body)
    relay.on_offer(req, CALLER, CALLEE)
    assert req.body == original and sent == [] and relay.calls == {}
    resp = answer(sdp("203.0.113.9", 9000))
    relay.on_answer(resp, CALLEE)
    assert b"203.0.113.9" in resp.body

    relay, sent = anchor("always")
    req = invite(sdp("198.51.100.7", 7078))
    relay.on_offer(req, CALLER, CALLEE)
    assert b"c=IN IP4 192.0.2.1" in req.body
    assert sent[0]["address"] == ["198.51.100.7", 7078]


def test_a_callee_registered_behind_nat_is_anchored() -> None:
    relay, sent = anchor()
    req = invite(sdp("198.51.100.7", 7078), ruri="sip:bob@192.168.1.30:5060")
    relay.on_offer(req, CALLER, CALLEE)  # we reach bob at 203.0.113.9, he says 192.168.1.30
    assert b"c=IN IP4 192.0.2.1" in req.body and relay.calls


def test_early_media_and_a_re_invite_from_the_callee_use_the_same_ports() -> None:
    relay, sent = anchor()
    req = invite(sdp("192.168.178.20", 7078))
    relay.on_offer(req, CALLER, CALLEE)
    ringing = answer(sdp("10.1.1.1", 9000), status=183)
    relay.on_answer(ringing, CALLEE)
    assert b"m=audio 40000 " in ringing.body
    assert "address" not in sent[-1]  # 10.1.1.1 is not where the callee signals from
    # the callee puts the caller on hold: its re-INVITE goes to the caller naming leg a's port
    reinvite = invite(sdp("10.1.1.1", 9000, "a=sendonly\r\n"), to_tag="alice1")
    reinvite.set("From", "<sip:bob@example.test>;tag=bob1")
    relay.on_offer(reinvite, CALLEE, CALLER)
    assert b"m=audio 40000 " in reinvite.body and b"a=sendonly" in reinvite.body
    assert len(relay.pool.calls) == 1


def test_a_failed_call_and_a_bye_free_the_ports_for_the_next_calls() -> None:
    relay, sent = anchor("always")
    for _ in range(5):  # room for two calls: the ports must come back every time
        req = invite(sdp("192.168.178.20", 7078))
        relay.on_offer(req, CALLER, CALLEE)
        assert b"c=IN IP4 192.0.2.1" in req.body
        relay.on_end("c1")
        assert sent[-1] == {"cmd": "delete", "call_id": "c1/0"} and relay.calls == {}
    relay.on_offer(invite(sdp("192.168.178.20", 7078)), CALLER, CALLEE)
    bye = invite("", to_tag="bob1")
    bye.method = "BYE"
    relay.on_offer(bye, CALLER, CALLEE)
    assert sent[-1]["cmd"] == "delete" and relay.pool.calls == {}


def test_a_full_port_range_lets_the_call_go_on_without_relay() -> None:
    relay, sent = anchor("always")
    relay.pool.allocate("other/0")
    relay.pool.allocate("other2/0")
    req = invite(sdp("192.168.178.20", 7078))
    relay.on_offer(req, CALLER, CALLEE)
    assert b"192.168.178.20 7078" not in req.body and b"m=audio 7078 " in req.body
    assert sent == []


def test_broken_or_foreign_bodies_pass_unchanged() -> None:
    relay, sent = anchor("always")
    req = invite("v=0\r\nm=audio x\r\n")
    relay.on_offer(req, CALLER, CALLEE)
    assert req.body == b"v=0\r\nm=audio x\r\n" and sent == []
    req = invite(sdp("192.168.178.20", 7078))
    req.set("Content-Type", "multipart/mixed;boundary=x")
    relay.on_offer(req, CALLER, CALLEE)
    assert b"192.168.178.20" in req.body and sent == []


CALLER6 = Peer("udp", "2001:db8:1::7", 5060)
CALLEE6 = Peer("udp", "2001:db8:2::9", 61000)


def sdp6(address: str, port: int) -> str:
    return sdp(address, port).replace("IN IP4", "IN IP6")


def anchor6(mode: str = "when_needed", **settings: Any) -> tuple[RelayAnchor, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    relay = RelaySettings(relay=mode, port_min=40000, port_max=40007, **settings)
    return RelayAnchor(relay, "192.0.2.1", sent.append, "2001:db8::1"), sent


def test_a_natted_ipv6_caller_is_anchored_at_the_relays_ipv6_address() -> None:
    """Both phones on IPv6: the SDP each gets names the relay's IPv6 address (c=IN IP6), the
    callee's own address (in another spelling, as it signals from) is given to the relay."""
    relay, sent = anchor6()
    req = invite(sdp6("fd00::20", 7078), ruri="sip:bob@[2001:db8:2::9]:61000")
    relay.on_offer(req, CALLER6, CALLEE6)
    body = req.body.decode()
    assert "c=IN IP6 2001:db8::1\r\n" in body and "fd00::20" not in body.split("t=")[1]
    assert "m=audio 40002 RTP/AVP 8 101\r\n" in body
    assert sent == [{"cmd": "offer", "call_id": "c1/0", "ports": [40000, 40002]}]
    resp = answer(sdp6("2001:DB8:2:0::9", 9000))
    relay.on_answer(resp, CALLEE6)
    assert "c=IN IP6 2001:db8::1\r\n" in resp.body.decode()
    assert "m=audio 40000 RTP/AVP" in resp.body.decode()
    assert sent[-1] == {"cmd": "answer", "call_id": "c1/0", "address": ["2001:db8:2::9", 9000]}


def test_public_ipv6_phones_are_left_alone_when_needed() -> None:
    relay, sent = anchor6()
    req = invite(sdp6("2001:db8:1::7", 7078), ruri="sip:bob@[2001:db8:2::9]:61000")
    original = bytes(req.body)
    relay.on_offer(req, CALLER6, CALLEE6)
    assert req.body == original and sent == [] and relay.calls == {}


def test_an_ipv4_phone_calling_an_ipv6_phone_is_bridged_each_told_its_own_family() -> None:
    """Different families are reason enough (when_needed): the offer going to the IPv6 callee
    names the relay's IPv6 address, the answer going to the IPv4 caller the IPv4 one; so does
    a re-INVITE of the callee's that goes to the caller."""
    relay, sent = anchor6()
    req = invite(sdp("198.51.100.7", 7078), ruri="sip:bob@[2001:db8:2::9]:61000")
    relay.on_offer(req, CALLER, CALLEE6)
    assert b"c=IN IP6 2001:db8::1\r\n" in req.body and b"IN IP4 198.51.100.7\r\nt=" not in req.body
    assert sent[0]["address"] == ["198.51.100.7", 7078]  # (where the caller signals from)
    resp = answer(sdp6("2001:db8:2::9", 9000))
    relay.on_answer(resp, CALLEE6)
    assert b"c=IN IP4 192.0.2.1\r\n" in resp.body and b"m=audio 40000 " in resp.body
    reinvite = invite(sdp6("2001:db8:2::9", 9000), to_tag="alice1")
    reinvite.set("From", "<sip:bob@example.test>;tag=bob1")
    relay.on_offer(reinvite, CALLEE6, CALLER)
    assert b"c=IN IP4 192.0.2.1\r\n" in reinvite.body and b"m=audio 40000 " in reinvite.body
    assert len(relay.pool.calls) == 1

    # the other way round: the IPv6 caller's offer goes to the IPv4 callee with the IPv4 address
    relay, sent = anchor6()
    req = invite(sdp6("2001:db8:1::7", 7078))
    relay.on_offer(req, CALLER6, CALLEE)
    assert b"c=IN IP4 192.0.2.1\r\n" in req.body
    resp = answer(sdp("203.0.113.9", 9000))
    relay.on_answer(resp, CALLEE)
    assert b"c=IN IP6 2001:db8::1\r\n" in resp.body


def test_without_an_ipv6_relay_address_an_ipv6_side_keeps_its_own_sdp() -> None:
    relay, sent = anchor("always")  # (an IPv4-only relay)
    req = invite(sdp("198.51.100.7", 7078))
    relay.on_offer(req, CALLER, CALLEE6)
    assert b"192.0.2.1" not in req.body and sent == [] and relay.calls == {}
    relay, sent = anchor6("always", advertise6="2001:db8::99")  # [media] advertise6 wins
    req = invite(sdp6("2001:db8:1::7", 7078))
    relay.on_offer(req, CALLER6, CALLEE6)
    assert b"c=IN IP6 2001:db8::99\r\n" in req.body


def test_the_relay_binds_ipv6_where_sip_listens_on_ipv6() -> None:
    def listen(*specs: str) -> tuple[ListenAddress, ...]:
        return parse_listen(",".join(specs))

    assert relay_binds(listen("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"), None) == (
        "127.0.0.1", None
    )  # fmt: skip
    assert relay_binds(listen("tcp:[::1]:5060", "udp:127.0.0.1:5060", "udp:[::1]:5060"), None) == (
        "127.0.0.1", "::1"
    )  # fmt: skip
    assert relay_binds(listen("udp:0.0.0.0:5060", "udp:[::]:5060"), None) == ("0.0.0.0", "::")
    assert relay_binds(listen("udp:[2001:db8::5]:5060"), None) == ("0.0.0.0", "2001:db8::5")
    # advertise6 without IPv6 listening: all IPv6 interfaces
    assert relay_binds(listen("udp:192.0.2.1:5060"), "2001:db8::9") == ("192.0.2.1", "::")
