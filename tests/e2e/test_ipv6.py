"""SIP over IPv6 end to end: `heimbuero serve` listening on 127.0.0.1 and ::1 (the same
ports, UDP and TCP), real SIPp phones on ::1 and on 127.0.0.1, and hand-built requests where
one message is the point.

What is checked: registration, calls between two IPv6 phones, an IPv4 phone calling an IPv6
phone (the proxy sends each branch from the socket of the callee's family and names that
address in its Via and Record-Route), RTP of such a call through the media relay, which
bridges the families, a MESSAGE to an IPv6 phone, and the abuse cases: a `received` an IPv6
client writes itself does not redirect answers, and malformed IPv6 references in the
Request-URI, Via or Contact get 400.

A second server listens on IPv6 alone (udp, tcp and tls on [::1], the demo office, its trunk
at a carrier on [::1]): two baresip phones register over TLS on ::1 and call each other; a
phone calls out through the trunk to a SIPp carrier on ::1, and the carrier's call from its
address on ::1 is taken as the trunk's and rings the client number's agents.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from .conftest import DOMAIN, USERS
from .harness import (
    LOCALHOST,
    LOCALHOST6,
    Baresip,
    SentRequest,
    Server,
    SipClient,
    SipMessage,
    SippResult,
    digest_response,
    free_port,
    in_dialog,
    next_request,
    pick_challenge,
    reply,
    run_sipp_caller,
    sipp_received,
    start_sipp_callee,
    start_sipp_uas,
    wait_until,
)

pytestmark = pytest.mark.e2e
sipp = pytest.mark.peers("sipp")

SCHULZ_NUMBER = "+49301234567"  # the demo client schulz's number: rings the group team


class Office6(NamedTuple):
    server: Server
    carrier_port: int  # the trunk's address: udp [::1]:carrier_port


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    """heimbuero serve on udp+tcp 127.0.0.1:PORT and [::1]:PORT."""
    return server_factory(also_listen=(LOCALHOST6,))


def received_invite(result: SippResult) -> str:
    """The INVITE a SIPp callee received (from its -trace_msg)."""
    m = re.search(
        r"message received \[\d+\] bytes\s*:\s*\n\s*\n?(INVITE .*?)\n\s*\n", result.messages(), re.S
    )
    assert m, result.report()
    return m.group(1)


def headers(text: str, name: str) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.split(":", 1)[0].strip().lower() == name.lower()
    ]


def register(client: SipClient, server: Server, user: str, contact: str) -> SipMessage:
    _, ok = client.authenticated_request(
        "REGISTER",
        f"sip:{server.domain}",
        username=user,
        password=server.users[user],
        from_uri=f"sip:{user}@{server.domain}",
        to_uri=f"sip:{user}@{server.domain}",
        headers=[("Contact", f"<{contact}>"), ("Expires", "300")],
    )
    return ok


def send_message(alice: SipClient, server: Server, to: str, body: bytes) -> SentRequest:
    """alice's MESSAGE to `to`, its 407 answered: the authorized request (not waited for)."""
    ruri = f"sip:{to}@{server.domain}"
    kw: dict[str, Any] = {
        "from_uri": f"sip:alice@{server.domain}", "to_uri": ruri, "body": body,
        "content_type": "text/plain",
    }  # fmt: skip
    first = alice.request("MESSAGE", ruri, **kw)
    challenge = alice.final_response(first)
    assert challenge.status == 407, challenge.raw
    auth = digest_response(
        pick_challenge(challenge), method="MESSAGE", uri=ruri, username="alice",
        password=USERS["alice"],
    )  # fmt: skip
    return alice.request(
        "MESSAGE", ruri, call_id=first.call_id, from_tag=first.from_tag, cseq=2,
        headers=[("Proxy-Authorization", auth)], **kw,
    )  # fmt: skip


def answer_200(c: SipClient, req: SipMessage) -> None:
    lines = ["SIP/2.0 200 OK"]
    for name, value in req.headers:
        if name.lower() in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"):
            lines.append(f"{name}: {value}")
    c.send_raw(("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode())


def wait_request(c: SipClient, method: str, timeout: float = 5.0) -> SipMessage:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        msg = c.recv(left)
        if msg is not None and msg.method == method:
            return msg
    raise AssertionError(f"no {method} arrived within {timeout} s")


# --------------------------------------------------------------------------------------------
# registration and calls


@sipp
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_call_between_two_ipv6_phones(server: Server, tmp_path: Path, transport: str) -> None:
    """bob registers from [::1], alice calls him from [::1]: 407, then 200 and BYE; the
    INVITE bob gets carries the server's IPv6 address in brackets in Via and Record-Route."""
    with start_sipp_callee(
        tmp_path, server, user="bob", password=USERS["bob"], transport=transport,
        local_ip=LOCALHOST6,
    ) as callee:  # fmt: skip
        caller = run_sipp_caller(
            tmp_path, server, user="alice", password=USERS["alice"], callee="bob",
            transport=transport, local_ip=LOCALHOST6, extra=["-d", "200"],
        )  # fmt: skip
        caller.check()
        got = callee.wait(20).check()
    invite = received_invite(got)
    port = server.port
    assert headers(invite, "Via")[0].startswith(
        f"SIP/2.0/{'UDP' if transport == 'u1' else 'TCP'} [::1]:{port};branch="
    ), invite
    rr = headers(invite, "Record-Route")
    assert rr and all(f"<sip:[::1]:{port}" in r for r in rr), invite
    assert "sip:bob@[::1]:" in invite.splitlines()[0], invite


@sipp
def test_ipv4_phone_calls_ipv6_phone(server: Server, tmp_path: Path) -> None:
    """The server listens on both families: alice on 127.0.0.1 reaches bob registered from
    [::1]. The INVITE leaves from the IPv6 socket with the IPv6 address in the Via, and the
    Record-Route names both sides (IPv6 toward bob first, IPv4 toward alice), so that bob's BYE
    comes back to the IPv6 socket and goes on to alice over IPv4."""
    with start_sipp_callee(
        tmp_path, server, user="bob", password=USERS["bob"], local_ip=LOCALHOST6
    ) as callee:
        caller = run_sipp_caller(
            tmp_path, server, user="alice", password=USERS["alice"], callee="bob",
            extra=["-d", "200"],
        )  # fmt: skip
        caller.check()
        got = callee.wait(20).check()
    invite = received_invite(got)
    port = server.port
    assert headers(invite, "Via")[0].startswith(f"SIP/2.0/UDP [::1]:{port};branch="), invite
    assert "127.0.0.1" in headers(invite, "Via")[1], invite
    rr = headers(invite, "Record-Route")
    assert len(rr) == 2, invite
    assert rr[0].startswith(f"<sip:[::1]:{port};lr;") and rr[1].startswith(
        f"<sip:127.0.0.1:{port};lr;"
    ), invite


@sipp
def test_ipv6_phone_calls_ipv4_phone_over_tcp(server: Server, tmp_path: Path) -> None:
    """The other direction, over TCP: alice on [::1] calls bob registered from 127.0.0.1."""
    with start_sipp_callee(
        tmp_path, server, user="bob", password=USERS["bob"], transport="t1"
    ) as callee:
        caller = run_sipp_caller(
            tmp_path, server, user="alice", password=USERS["alice"], callee="bob",
            transport="t1", local_ip=LOCALHOST6, extra=["-d", "200"],
        )  # fmt: skip
        caller.check()
        got = callee.wait(20).check()
    invite = received_invite(got)
    assert headers(invite, "Via")[0].startswith(f"SIP/2.0/TCP 127.0.0.1:{server.port};"), invite


def test_message_to_ipv6_phone(server: Server) -> None:
    """bob registers from [::1]; alice's MESSAGE over IPv4 reaches his IPv6 socket, with the
    server's IPv6 Via on top; bob's 200 goes back to alice."""
    with (
        SipClient(server.port, server_host=LOCALHOST6) as bob,
        SipClient(server.port) as alice,
    ):
        ok = register(bob, server, "bob", f"sip:bob@[::1]:{bob.local_port}")
        assert ok.status == 200, ok.raw
        assert f"<sip:bob@[::1]:{bob.local_port}>" in (ok.header("Contact") or ""), ok.raw
        sent = send_message(alice, server, "bob", b"Hallo IPv6")
        msg = wait_request(bob, "MESSAGE")
        assert msg.raw.endswith(b"Hallo IPv6"), msg.raw
        vias = msg.header_values("Via")
        assert vias[0].startswith(f"SIP/2.0/UDP [::1]:{server.port};branch="), msg.raw
        answer_200(bob, msg)
        final = alice.final_response(sent)
        assert final.status == 200, final.raw


def test_ipv6_options_over_tcp_answered(server: Server) -> None:
    with SipClient(server.port, server_host=LOCALHOST6, transport="tcp") as c:
        target = f"sip:[::1]:{server.port}"
        req = c.request("OPTIONS", target, from_uri="sip:probe@[::1]", to_uri=target)
        resp = c.final_response(req)
        assert resp.status == 200, resp.raw


def rtp(seq: int, ssrc: bytes) -> bytes:
    return (
        bytes([0x80, 8])
        + seq.to_bytes(2, "big")
        + (seq * 160).to_bytes(4, "big")
        + ssrc
        + (b"\xd5" * 160)
    )


def media_of(body: bytes) -> tuple[str, int]:
    """The c= address (with its type) and the audio port of an SDP body."""
    text = body.decode()
    c = re.search(r"^c=IN (IP[46] \S+)\r$", text, re.M)
    m = re.search(r"^m=audio (\d+) ", text, re.M)
    assert c and m, text
    return c.group(1), int(m.group(1))


def test_rtp_between_an_ipv4_and_an_ipv6_phone_crosses_the_relay(server: Server) -> None:
    """alice on 127.0.0.1 calls bob registered from [::1] (hand-driven phones, `relay =
    "when_needed"`: different families are reason enough). bob's INVITE names the relay's
    IPv6 address (c=IN IP6 ::1), alice's 200 its IPv4 one; RTP from each phone arrives at the
    other from the relay port that phone sends to (symmetric RTP, over IPv6 on bob's side), and
    the statistics the relay reports at the BYE count what crossed."""
    sdp = "v=0\r\no=x 1 1 IN {t} {a}\r\ns=-\r\nc=IN {t} {a}\r\nt=0 0\r\n"
    sdp += "m=audio {p} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    with (
        SipClient(server.port, server_host=LOCALHOST6) as bob,
        SipClient(server.port) as alice,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp_a,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rtp_b,
    ):
        rtp_a.bind((LOCALHOST, 0))
        rtp_b.bind((LOCALHOST6, 0))
        rtp_a.settimeout(0.5)
        rtp_b.settimeout(0.5)
        assert register(bob, server, "bob", f"sip:bob@[::1]:{bob.local_port}").status == 200
        aor, me = f"sip:bob@{server.domain}", f"sip:alice@{server.domain}"
        offer = sdp.format(t="IP4", a=LOCALHOST, p=rtp_a.getsockname()[1]).encode()
        kw: dict[str, Any] = {"from_uri": me, "to_uri": aor, "body": offer,
                              "content_type": "application/sdp"}  # fmt: skip
        contact = ("Contact", f"<sip:alice@127.0.0.1:{alice.local_port}>")
        first = alice.request("INVITE", aor, headers=[contact], **kw)
        challenge = alice.final_response(first, 5)
        auth = digest_response(pick_challenge(challenge, "MD5"), method="INVITE", uri=aor,
                               username="alice", password=USERS["alice"])  # fmt: skip
        inv = alice.request(
            "INVITE", aor, call_id=first.call_id, from_tag=first.from_tag, cseq=2,
            headers=[contact, ("Proxy-Authorization", auth)], **kw,
        )  # fmt: skip
        at_bob = next_request(bob, "INVITE")
        relay6, port_b = media_of(at_bob.body)
        assert relay6 == "IP6 ::1", at_bob.raw  # anchored: bob is told the relay's IPv6 port
        answer = sdp.format(t="IP6", a=LOCALHOST6, p=rtp_b.getsockname()[1]).encode()
        reply(bob, at_bob, "200 OK", f"Contact: <sip:bob@[::1]:{bob.local_port}>\r\n"
              "Content-Type: application/sdp\r\n", answer)  # fmt: skip
        ok = alice.final_response(inv, 5)
        assert ok.status == 200, ok.raw
        relay4, port_a = media_of(ok.body)
        assert relay4 == "IP4 127.0.0.1", ok.raw
        in_dialog(alice, "ACK", inv, ok, 2)

        sent = {"a": 0, "b": 0}

        def cross(seq: int) -> bool | None:
            """One packet each way; True when both arrived from the relay's ports."""
            rtp_a.sendto(rtp(seq, b"AAAA"), (LOCALHOST, port_a))
            sent["a"] += 1
            try:
                data, src = rtp_b.recvfrom(2048)
            except TimeoutError:
                return None  # (the relay may not know bob's address yet: the next one)
            assert data == rtp(seq, b"AAAA") and src[:2] == (LOCALHOST6, port_b), src
            rtp_b.sendto(rtp(seq, b"BBBB"), (LOCALHOST6, port_b))
            sent["b"] += 1
            data, src = rtp_a.recvfrom(2048)
            assert data == rtp(seq, b"BBBB") and src == (LOCALHOST, port_a), src
            return True

        wait_until(lambda: cross(1), 10, interval=0.0, what="RTP through the relay")
        for seq in range(2, 21):
            assert cross(seq), f"packet {seq} was lost on loopback"
        bye = in_dialog(alice, "BYE", inv, ok, 3)
        reply(bob, next_request(bob, "BYE"), "200 OK")
        assert alice.final_response(bye, 5).status == 200
    pattern = r"caller sent (\d+) packets.*callee sent (\d+) packets"
    found = wait_until(lambda: re.search(pattern, server.log_text()), 10, what="media stats")
    # (a first packet of alice's may have reached the relay before it knew bob's address)
    assert 20 <= int(found.group(1)) <= sent["a"] and int(found.group(2)) == sent["b"] == 20


# --------------------------------------------------------------------------------------------
# abuse


def test_ipv6_received_written_by_the_client_does_not_redirect_answers(server: Server) -> None:
    """A Via whose sent-by is the client's real [::1]:PORT but which carries a `received` of
    another IPv6 address (and no rport): the answer still goes to where the request came from
    (RFC 3261 §18.2.1: the received parameter is the server's to write)."""
    with SipClient(server.port, server_host=LOCALHOST6) as c:
        target = f"sip:{server.domain}"
        raw = (
            f"OPTIONS {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP [::1]:{c.local_port};received=2001:db8::66;branch=z9hG4bK-f6\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{server.domain}>;tag=f1\r\nTo: <{target}>\r\n"
            "Call-ID: forged-received-6\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        c.send_raw(raw.encode())
        resp = c.recv(3.0)
        assert resp is not None and resp.status == 200, "the answer went elsewhere"
        assert "2001:db8::66" not in (resp.header("Via") or ""), resp.raw


def test_ipv6_alias_cannot_be_made_up(server: Server) -> None:
    """A phone on [::1] that writes an alias (the server's signed NAT marker) into its Contact
    naming another IPv6 flow gets it removed: the Contact the server registers is the one
    without it, and the INVITE for the phone goes to the phone's own socket."""
    with SipClient(server.port, server_host=LOCALHOST6) as bob, SipClient(server.port) as alice:
        contact = f"sip:bob@[::1]:{bob.local_port};alias=[2001:db8::66]~5060~udp~AAAAAAAAAAAA"
        ok = register(bob, server, "bob", contact)
        assert ok.status == 200, ok.raw
        send_message(alice, server, "bob", b"x")
        msg = wait_request(bob, "MESSAGE")
        assert msg.start_line.startswith(f"MESSAGE sip:bob@[::1]:{bob.local_port}"), msg.raw


@pytest.mark.parametrize(
    "where, request_line, via, contact",
    [
        ("Request-URI", "OPTIONS sip:bob@[2001:db8::zz] SIP/2.0", None, None),
        ("Request-URI", "OPTIONS sip:bob@2001:db8::10 SIP/2.0", None, None),
        ("Request-URI", "OPTIONS sip:bob@[2001:db8::10 SIP/2.0", None, None),
        ("Via", None, "SIP/2.0/UDP [2001:db8:::::1]:5060;branch=z9hG4bK-bad6", None),
        ("Contact", "REGISTER sip:{domain} SIP/2.0", None, "<sip:bob@[::1:{port}>"),
        ("Contact", "REGISTER sip:{domain} SIP/2.0", None, "<sip:bob@[fe80::1%eth0]:5060>"),
    ],
)
def test_malformed_ipv6_reference_gets_400(
    server: Server, where: str, request_line: str | None, via: str | None, contact: str | None
) -> None:
    """RFC 5118 §4.2 and RFC 3261 §25.1: an IPv6 address without brackets where a port may
    follow, an unterminated or invalid reference is refused with 400 naming the problem."""
    with SipClient(server.port, server_host=LOCALHOST6) as c:
        line = (request_line or "OPTIONS sip:{domain} SIP/2.0").format(
            domain=server.domain, port=c.local_port
        )
        method = line.split()[0]
        top = via or f"SIP/2.0/UDP [::1]:{c.local_port};branch=z9hG4bK-{where.lower()}6;rport"
        lines = [
            line,
            f"Via: {top}",
            "Max-Forwards: 70",
            f"From: <sip:bob@{server.domain}>;tag=b6",
            f"To: <sip:bob@{server.domain}>",
            f"Call-ID: bad-ipv6-{abs(hash(line + top + (contact or '')))}",
            f"CSeq: 1 {method}",
        ]
        if contact:
            lines.append(f"Contact: {contact.format(port=c.local_port)}")
        c.send_raw(("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode())
        resp = c.recv(3.0)
        assert resp is not None, f"no answer to a malformed {where}"
        assert resp.status == 400, resp.raw


# --------------------------------------------------------------------------------------------
# a server on IPv6 alone: TLS phones and a trunk


@pytest.fixture(scope="module")
def office6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Office6]:
    """heimbuero serve with `listen` on udp and tcp [::1]:P and tls [::1]:P2 only (no IPv4
    socket for SIP), the demo office, its trunk moved to a carrier on [::1]:CARRIER_PORT.

    The certificate `init` makes names the listen addresses of config.toml: with IPv6 alone
    there, the certificate is made again (removed, `init` once more) and names ::1."""
    srv = Server(
        tmp_path_factory.mktemp("ipv6only"), domain=DOMAIN, demo=True, listen_host=LOCALHOST6,
        transports=("udp", "tcp", "tls"),
    )  # fmt: skip
    srv.prepare()
    data = ("--data", str(srv.data_dir))
    srv.set_sip_option("listen", srv.sip_listen.split(","))
    srv.tls_cert.unlink()
    srv.tls_cert.with_suffix(".key").unlink()
    made = srv.cli("init", *data).stdout
    assert f"created  {srv.tls_cert} (self-signed for {DOMAIN}, ::1)" in made, made
    carrier_port = free_port()
    srv.cli("trunk", "remove", "carrier", *data)
    srv.cli("trunk", "add", "carrier6", "--address", f"[::1]:{carrier_port}", *data)
    listed = srv.cli("trunk", "list", *data).stdout
    assert f"udp:[::1]:{carrier_port}" in listed, listed
    with srv:
        yield Office6(srv, carrier_port)


@pytest.mark.peers("baresip")
def test_baresip_phones_register_and_call_over_tls_on_ipv6_only(
    office6: Office6, tmp_path: Path
) -> None:
    """anna and ben, two baresip phones on ::1, register over TLS at [::1]:P2 (trusting the
    certificate init wrote, which names ::1: a Python TLS client verifies it for that address);
    anna calls ben, ben hangs up. The server has no IPv4 SIP socket: every message of the call
    went over IPv6 and TLS."""
    srv = office6.server
    assert srv.tls_port is not None
    with SipClient(
        srv.tls_port, transport="tls", server_host=LOCALHOST6, cafile=srv.tls_cert
    ) as probe:
        assert isinstance(probe.sock, ssl.SSLSocket)
        assert probe.sock.getpeername()[0] == LOCALHOST6
    phones = {
        name: Baresip(
            tmp_path,
            user=name,
            password=srv.demo_passwords[name],
            server=srv,
            transport="tls",
            host=LOCALHOST6,
            answermode=mode,
        )
        for name, mode in (("anna", "manual"), ("ben", "auto"))
    }
    with phones["anna"] as anna, phones["ben"] as ben:
        anna.wait_registered()
        ben.wait_registered()
        for name in phones:
            assert re.search(
                rf"registered user={name} contact=sip:{name}\S*@\[::1\]:\d+;transport=tls "
                r"source=tls:\[::1\]:",
                srv.log_text(),
            ), srv.log_text()
        anna.command("dial", f"sip:ben@{DOMAIN}")
        anna.wait_for_event("CALL_ESTABLISHED", timeout=15)
        ben.wait_for_event("CALL_ESTABLISHED", timeout=15)
        ben.command("hangup")
        anna.wait_for_event("CALL_CLOSED", timeout=15)
        ben.wait_for_event("CALL_CLOSED", timeout=15)


@sipp
def test_ipv6_trunk_carries_calls_out_and_in(office6: Office6, tmp_path: Path) -> None:
    """Out: mueller (a SIPp phone on ::1) dials a mobile number; the call goes through the
    trunk to the SIPp carrier on [::1]:CARRIER_PORT, which answers; BYE ends it. In: the carrier
    calls schulz's number from that address: no challenge (the trunk's inbound-auth is by
    address, compared as an IPv6 address) and the agent anna, registered from ::1, rings;
    the same call from another port of ::1 is challenged."""
    srv, port = office6
    with start_sipp_uas(
        tmp_path, "carrier", port=port, scenario="uas_answer.xml", local_ip=LOCALHOST6,
        keys={"contact_host": f"[::1]:{port}"}, service="carrier", timeout=30,
    ) as carrier:  # fmt: skip
        caller = run_sipp_caller(
            tmp_path, srv, user="mueller", password=srv.demo_passwords["mueller"],
            callee="01702222222", local_ip=LOCALHOST6, extra=["-d", "200"],
        )  # fmt: skip
        caller.check()
        got = carrier.wait(20).check()
    [invite] = sipp_received(got, "INVITE")
    assert invite.start_line.startswith("INVITE sip:+491702222222@[::1]:"), invite.raw
    assert invite.header_values("Via")[0].startswith(f"SIP/2.0/UDP [::1]:{srv.port};"), invite.raw

    with (
        SipClient(srv.port, server_host=LOCALHOST6) as anna,
        SipClient(srv.port, server_host=LOCALHOST6) as stranger,
        SipClient(srv.port, server_host=LOCALHOST6, local_port=port) as trunk,
    ):
        ok = register(anna, srv, "anna", f"sip:anna@[::1]:{anna.local_port}")
        assert ok.status == 200, ok.raw
        ruri = f"sip:{SCHULZ_NUMBER}@{DOMAIN}"
        kw: dict[str, Any] = {"from_uri": "sip:+4930999888@[::1]", "to_uri": ruri}
        # the same call from another port of ::1 is not the trunk's: challenged, nobody rings
        refused = stranger.final_response(stranger.request("INVITE", ruri, **kw), 5)
        assert refused.status == 407, refused.raw
        assert anna.recv(0.3) is None
        contact = ("Contact", f"<sip:+4930999888@[::1]:{port}>")
        inv = trunk.request("INVITE", ruri, headers=[contact], **kw)
        ringing = next_request(anna, "INVITE")
        assert ringing.start_line.startswith(f"INVITE sip:anna@[::1]:{anna.local_port}")
        reply(anna, ringing, "200 OK", f"Contact: <sip:anna@[::1]:{anna.local_port}>\r\n")
        answered = trunk.final_response(inv, 5)
        assert answered.status == 200, answered.raw  # not 401/407: the trunk's own call
        in_dialog(trunk, "ACK", inv, answered, inv.cseq)
        bye = in_dialog(trunk, "BYE", inv, answered, inv.cseq + 1)
        reply(anna, next_request(anna, "BYE"), "200 OK")
        assert trunk.final_response(bye, 5).status == 200
