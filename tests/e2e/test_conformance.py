"""RFC 3261 conformance as carriers, SBCs and desk phones meet it, checked with raw messages
against a running `heimbuero serve`: each test is one defect seen in the field.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from .conftest import USERS
from .harness import (
    Server,
    SipClient,
    SipMessage,
    digest_response,
    free_port,
    pick_challenge,
)

pytestmark = pytest.mark.e2e


def register(server: Server, user: str, contact: str, transport: str = "udp") -> None:
    with SipClient(server.port, transport=transport) as c:
        _, ok = c.authenticated_request(
            "REGISTER",
            f"sip:{server.domain}",
            username=user,
            password=USERS[user],
            from_uri=f"sip:{user}@{server.domain}",
            to_uri=f"sip:{user}@{server.domain}",
            headers=[("Contact", f"<{contact}>"), ("Expires", "300")],
        )
    assert ok.status == 200, ok.raw


def invite_authorized(
    c: SipClient,
    server: Server,
    caller: str,
    callee: str,
    headers: list[tuple[str, str]],
    contact_params: str = "",
) -> tuple[str, int, str, str]:
    """Send an INVITE, take its 407 and send the authorized copy; (call_id, cseq, tag, ruri)."""
    ruri = f"sip:{callee}@{server.domain}"
    kw = {
        "from_uri": f"sip:{caller}@{server.domain}",
        "to_uri": ruri,
        "headers": [
            ("Contact", f"<sip:{caller}@127.0.0.1:{c.local_port}>{contact_params}"),
            *headers,
        ],
    }
    first = c.request("INVITE", ruri, **kw)  # type: ignore[arg-type]
    challenge = c.final_response(first)
    assert challenge.status == 407, challenge.raw
    ch = pick_challenge(challenge)
    auth = digest_response(ch, method="INVITE", uri=ruri, username=caller, password=USERS[caller])
    kw["headers"] = [*kw["headers"], ("Proxy-Authorization", auth)]  # type: ignore[misc]
    second = c.request("INVITE", ruri, call_id=first.call_id, from_tag=first.from_tag, cseq=2, **kw)  # type: ignore[arg-type]
    return second.call_id, 2, second.from_tag, ruri


def wait_request(c: SipClient, method: str, timeout: float = 5.0) -> SipMessage:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        msg = c.recv(left)
        if msg is not None and msg.method == method:
            return msg
    raise AssertionError(f"no {method} arrived within {timeout} s")


def response_to(req: SipMessage, status: int, reason: str, extra: list[str]) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    for name, value in req.headers:
        key = name.lower()
        if key in ("via", "v", "from", "f", "call-id", "i", "cseq", "record-route"):
            lines.append(f"{name}: {value}")
        elif key in ("to", "t"):
            lines.append(f"{name}: {value};tag=callee1")
    lines += extra
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def recv_final(c: SipClient, call_id: str, timeout: float = 5.0) -> SipMessage | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        msg = c.recv(left)
        if (
            msg is not None
            and msg.is_response
            and msg.header("Call-ID") == call_id
            and (msg.status or 0) >= 200
        ):
            return msg
    return None


# --------------------------------------------------------------------------------------------
# Malformed headers nobody needs


def test_malformed_date_and_old_expires_do_not_break_a_call(server: Server) -> None:
    """RFC 3261 §16.3: a proxy does not refuse a request for a header it does not need. The
    INVITE's `Date: ... UTC` (the RFC's own example) and RFC 2543 date in Expires, and the
    callee's `Date: ... +0000` in its 200 OK, all pass: the caller hears the answer."""
    with SipClient(server.port) as bob, SipClient(server.port) as alice:
        register(server, "bob", f"sip:bob@127.0.0.1:{bob.local_port}")
        call_id, _, _, _ = invite_authorized(
            alice,
            server,
            "alice",
            "bob",
            [
                ("Date", "Sat, 13 Nov 2010 23:29:00 UTC"),
                ("Expires", "Thu, 01 Dec 2044 16:00:00 GMT"),
            ],
        )
        inv = wait_request(bob, "INVITE")
        bob.send_raw(response_to(inv, 200, "OK", ["Date: Fri, 04 Dec 2026 22:00:00 +0000"]))
        final = recv_final(alice, call_id)
        assert final is not None and final.status == 200, alice.received


def test_expires_the_proxy_only_relays_does_not_break_a_call(server: Server) -> None:
    """The caller's Contact carries an RFC 2543 date as expires and two Expires headers; the
    callee's 200 OK an absurd Expires twice: none of it is the proxy's business (§16.3), the
    call goes through and the caller hears the answer."""
    with SipClient(server.port) as bob, SipClient(server.port) as alice:
        register(server, "bob", f"sip:bob@127.0.0.1:{bob.local_port}")
        call_id, _, _, _ = invite_authorized(
            alice,
            server,
            "alice",
            "bob",
            [("Expires", "99999999999"), ("Expires", "60")],
            contact_params=';expires="Thu, 01 Dec 2044 16:00:00 GMT"',
        )
        inv = wait_request(bob, "INVITE")
        bob.send_raw(response_to(inv, 200, "OK", ["Expires: 99999999999", "Expires: 30"]))
        final = recv_final(alice, call_id)
        assert final is not None and final.status == 200, alice.received


# --------------------------------------------------------------------------------------------
# Transport errors reach the transactions (RFC 3261 §18.4, §16.9)


def test_refused_tcp_connection_fails_the_branch_at_once(server: Server) -> None:
    """bob registered over TCP and his phone is gone (its connection closed, nothing listens
    at its Contact): the proxy's connection is refused, and the caller hears so at once
    (the branch counts as 503, §16.9; upstream that is 500, §16.7 step 6) instead of 408
    after Timer B's 32 s."""
    dead = free_port()
    register(server, "bob", f"sip:bob@127.0.0.1:{dead};transport=tcp", transport="tcp")
    with SipClient(server.port) as alice:
        call_id, *_ = invite_authorized(alice, server, "alice", "bob", [])
        started = time.monotonic()
        final = recv_final(alice, call_id, timeout=10.0)
        took = time.monotonic() - started
    assert final is not None, alice.received
    assert final.status in (500, 503), final.raw
    assert took < 5.0, f"answered after {took:.1f} s"


def test_icmp_port_unreachable_fails_the_branch_at_once(server: Server) -> None:
    """bob's UDP phone is gone: the INVITE to it draws ICMP port unreachable, which fails the
    branch at once (§18.4) instead of 32 s of retransmissions and a 408."""
    with SipClient(server.port) as bob:
        port = bob.local_port
    register(server, "bob", f"sip:bob@127.0.0.1:{port}")  # (from another socket: no NAT)
    with SipClient(server.port) as alice:
        call_id, *_ = invite_authorized(alice, server, "alice", "bob", [])
        started = time.monotonic()
        final = recv_final(alice, call_id, timeout=10.0)
        took = time.monotonic() - started
    assert final is not None, alice.received
    assert final.status in (500, 503), final.raw
    assert took < 5.0, f"answered after {took:.1f} s"


# --------------------------------------------------------------------------------------------
# Stray responses (RFC 3261 §18.1.2)


@pytest.mark.parametrize(
    "top_via",
    [
        "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKhb0123456789.1",  # another host's sent-by
        "SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKhb0123456789.1.deadbeef00",  # not signed
    ],
    ids=["foreign-sent-by", "unsigned-branch"],
)
def test_forged_2xx_is_not_forwarded(server: Server, top_via: str) -> None:
    """A 200 whose top Via only looks like ours must not be relayed to the address its second
    Via names (here: a victim's UDP port)."""
    with SipClient(server.port) as victim, SipClient(server.port) as attacker:
        forged = (
            "SIP/2.0 200 OK\r\n"
            f"Via: {top_via.format(port=server.port)}\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{victim.local_port};branch=z9hG4bK-victim\r\n"
            f"From: <sip:alice@{server.domain}>;tag=a\r\nTo: <sip:bob@{server.domain}>;tag=b\r\n"
            "Call-ID: forged-2xx\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        attacker.send_raw(forged.encode())
        assert victim.recv(1.0) is None


def test_callee_cannot_replay_our_branch_to_relay_a_2xx(server: Server) -> None:
    """bob's phone sees the server's signed branch in the INVITE it gets; a 200 it makes up with
    that top Via, a victim's port below it and another Call-ID is not relayed to the victim."""
    with (
        SipClient(server.port) as bob,
        SipClient(server.port) as alice,
        SipClient(server.port) as victim,
    ):
        register(server, "bob", f"sip:bob@127.0.0.1:{bob.local_port}")
        invite_authorized(alice, server, "alice", "bob", [])
        inv = wait_request(bob, "INVITE")
        top = next(v for n, v in inv.headers if n.lower() in ("via", "v"))
        forged = (
            f"SIP/2.0 200 OK\r\nVia: {top}\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{victim.local_port};branch=z9hG4bK-victim\r\n"
            f"From: <sip:alice@{server.domain}>;tag=a\r\nTo: <sip:bob@{server.domain}>;tag=b\r\n"
            "Call-ID: replayed-branch\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        bob.send_raw(forged.encode())
        assert victim.recv(1.5) is None


def test_cancel_of_a_message_gets_200_and_is_not_passed_on(server: Server) -> None:
    """§9.2: a CANCEL that matches the caller's MESSAGE transaction is answered 200 (not 481)
    and has no effect: the callee gets no CANCEL (§9.1) and its 200 still reaches the caller."""
    with SipClient(server.port) as bob, SipClient(server.port) as alice:
        register(server, "bob", f"sip:bob@127.0.0.1:{bob.local_port}")
        ruri = f"sip:bob@{server.domain}"
        kw = {
            "from_uri": f"sip:alice@{server.domain}",
            "to_uri": ruri,
            "body": b"Hallo",
            "headers": [("Content-Type", "text/plain")],
        }
        first = alice.request("MESSAGE", ruri, **kw)  # type: ignore[arg-type]
        challenge = alice.final_response(first)
        assert challenge.status == 407, challenge.raw
        auth = digest_response(
            pick_challenge(challenge), method="MESSAGE", uri=ruri, username="alice",
            password=USERS["alice"],
        )  # fmt: skip
        msg = alice.request(
            "MESSAGE", ruri, call_id=first.call_id, from_tag=first.from_tag, cseq=2,
            **{**kw, "headers": [("Content-Type", "text/plain"), ("Proxy-Authorization", auth)]},  # type: ignore[arg-type]
        )  # fmt: skip
        got = wait_request(bob, "MESSAGE")
        cancel = [f"CANCEL {ruri} SIP/2.0"]
        for line in msg.raw.decode().split("\r\n")[1:]:
            name = line.split(":", 1)[0].lower()
            if name in ("via", "from", "to", "call-id", "max-forwards"):
                cancel.append(line)
        cancel += ["CSeq: 2 CANCEL", "Content-Length: 0"]
        alice.send_raw(("\r\n".join(cancel) + "\r\n\r\n").encode())
        deadline = time.monotonic() + 5.0
        answer = None
        while answer is None and (left := deadline - time.monotonic()) > 0:
            m = alice.recv(left)
            if m is not None and m.is_response and m.cseq and m.cseq[1] == "CANCEL":
                answer = m
        assert answer is not None and answer.status == 200, alice.received
        bob.send_raw(response_to(got, 200, "OK", []))
        final = recv_final(alice, msg.call_id)
        assert final is not None and final.status == 200, alice.received
        assert all(m.method != "CANCEL" for m in bob.received)


# --------------------------------------------------------------------------------------------
# The smaller ones, as a phone sees them on the wire


def test_rport_received_501_allow_register_date_and_stale_nc(server: Server) -> None:
    """received whenever rport (RFC 3581 §4); 501 with a true Allow for an unknown method
    (§21.5.2); Date in REGISTER's 200 (§10.3 step 8); a replayed nonce count is stale."""
    import email.utils

    with SipClient(server.port) as c:
        opts = c.final_response(
            c.request("OPTIONS", f"sip:{server.domain}", from_uri=f"sip:alice@{server.domain}",
                      to_uri=f"sip:{server.domain}")
        )  # fmt: skip
        via = opts.header("Via") or ""
        assert "received=127.0.0.1" in via and f"rport={c.local_port}" in via, via
        unknown = c.final_response(
            c.request("FROBNICATE", f"sip:{server.domain}", from_uri=f"sip:alice@{server.domain}",
                      to_uri=f"sip:{server.domain}")
        )  # fmt: skip
        assert unknown.status == 501, unknown.raw
        allow = {m.strip() for m in (unknown.header("Allow") or "").split(",")}
        assert {"REGISTER", "INVITE", "OPTIONS", "MESSAGE"} <= allow and "FROBNICATE" not in allow

        kw = {
            "from_uri": f"sip:bob@{server.domain}",
            "to_uri": f"sip:bob@{server.domain}",
            "headers": [("Contact", f"<sip:bob@127.0.0.1:{c.local_port}>"), ("Expires", "60")],
        }
        ruri = f"sip:{server.domain}"
        first = c.request("REGISTER", ruri, **kw)  # type: ignore[arg-type]
        challenge = c.final_response(first)
        assert challenge.status == 401, challenge.raw
        auth = digest_response(
            pick_challenge(challenge), method="REGISTER", uri=ruri, username="bob",
            password=USERS["bob"],
        )  # fmt: skip
        headers = [*kw["headers"], ("Authorization", auth)]  # type: ignore[misc]
        args = {**kw, "headers": headers, "call_id": first.call_id, "from_tag": first.from_tag}
        ok = c.final_response(c.request("REGISTER", ruri, cseq=2, **args))  # type: ignore[arg-type]
        assert ok.status == 200, ok.raw
        date = email.utils.parsedate_to_datetime(ok.header("Date") or "")
        assert abs(date.timestamp() - time.time()) < 60
        again = c.final_response(c.request("REGISTER", ruri, cseq=3, **args))  # type: ignore[arg-type]
        assert again.status == 401, again.raw  # the same nonce and nc=1 once more
        assert all("stale=true" in v for v in again.header_values("WWW-Authenticate")), again.raw


def test_challenges_of_two_devices_reach_the_caller_once_each(server: Server) -> None:
    """bob's two phones both answer 407 (a PBX behind each, say): the caller gets one 407 with
    both challenges, each once (§16.7 step 7)."""
    with (
        SipClient(server.port) as bob1,
        SipClient(server.port) as bob2,
        SipClient(server.port) as alice,
    ):
        register(server, "bob", f"sip:bob@127.0.0.1:{bob1.local_port}")
        register(server, "bob", f"sip:bob@127.0.0.1:{bob2.local_port}")
        call_id, *_ = invite_authorized(alice, server, "alice", "bob", [])
        for phone, nonce in ((bob1, "n1"), (bob2, "n2")):
            inv = wait_request(phone, "INVITE")
            challenge = f'Proxy-Authenticate: Digest realm="pbx{nonce}", nonce="{nonce}"'
            phone.send_raw(response_to(inv, 407, "Proxy Authentication Required", [challenge]))
        final = recv_final(alice, call_id)
        assert final is not None and final.status == 407, alice.received
        nonces = sorted(v.split('nonce="')[1].split('"')[0]
                        for v in final.header_values("Proxy-Authenticate"))  # fmt: skip
        assert nonces == ["n1", "n2"], final.raw


def test_unanswered_options_to_a_phone_draws_no_408_and_no_cancel(
    server_factory: Callable[..., Server],
) -> None:
    """bob's phone takes an OPTIONS sent to it through the proxy and never answers: after
    Timer F (64·T1, T1 = 100 ms here) the caller gets no 408 (RFC 4320 §4.2: its own Timer F
    tells it), and bob gets no CANCEL (§9.1: CANCEL is for INVITE only). (An unanswered
    MESSAGE the messenger takes is stored and answered 202 instead.)"""
    server = server_factory(sip_options={"t1_ms": 100})
    with SipClient(server.port) as bob, SipClient(server.port) as alice:
        register(server, "bob", f"sip:bob@127.0.0.1:{bob.local_port}")
        ruri = f"sip:bob@{server.domain}"
        kw = {"from_uri": f"sip:alice@{server.domain}", "to_uri": ruri}
        first = alice.request("OPTIONS", ruri, **kw)  # type: ignore[arg-type]
        challenge = alice.final_response(first)
        assert challenge.status == 407, challenge.raw
        auth = digest_response(
            pick_challenge(challenge), method="OPTIONS", uri=ruri, username="alice",
            password=USERS["alice"],
        )  # fmt: skip
        opts = alice.request(
            "OPTIONS", ruri, call_id=first.call_id, from_tag=first.from_tag, cseq=2,
            headers=[("Proxy-Authorization", auth)], **kw,  # type: ignore[arg-type]
        )  # fmt: skip
        wait_request(bob, "OPTIONS")
        assert recv_final(alice, opts.call_id, timeout=6.4 + 2.0) is None, alice.received
        assert {m.method for m in bob.received if not m.is_response} == {"OPTIONS"}
