"""The transaction layer (RFC 3261 §17, RFC 6026), driven by stepping `now`; nothing sleeps."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from heimbuero.sip.message import Request, Response, parse
from heimbuero.sip.transaction import (
    AckReceived,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    StrayResponse,
    TimerSettings,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportFailed,
)

UAC = ("udp", "192.0.2.10", 5060, None)  # where requests come from
NEXT_HOP = ("udp", "192.0.2.20", 5060, None)  # where client transactions send to
TCP_PEER = ("tcp", "192.0.2.30", 5060, 7)

# INVITE retransmissions over UDP with the default T1 = 0.5 s (Timer A doubles, no cap).
INVITE_RETRANSMISSIONS = [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
# Non-INVITE retransmissions (Timer E doubles up to T2 = 4 s); the same for Timer G.
CAPPED_RETRANSMISSIONS = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]

SDP = (
    "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\nm=audio 49170 RTP/AVP 0\r\n"
)


# ---- messages from literal bytes -------------------------------------------------------------


def request(
    method: str = "INVITE",
    branch: str = "z9hG4bK776asdhds",
    *,
    cseq: int = 1,
    call_id: str = "a84b4c76e66710@pc33.example.com",
    sent_by: str = "192.0.2.10:5060",
    to_tag: str | None = None,
) -> Request:
    body = SDP if method == "INVITE" else ""
    to = "Bob <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sent_by};branch={branch}\r\n"
        "Via: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKupstream1;received=198.51.100.7\r\n"
        "Max-Forwards: 69\r\n"
        "Route: <sip:p1.example.com;lr>\r\n"
        "Route: <sip:p2.example.com;lr>, <sip:p3.example.com;lr>\r\n"
        f"To: {to}\r\n"
        "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@192.0.2.10>\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    msg = parse(text.encode())
    assert isinstance(msg, Request)
    assert msg.check() is None
    return msg


def response(
    req: Request, status: int, reason: str = "", *, to_tag: str | None = "b7c9"
) -> Response:
    """A response to `req` as the next hop would send it (all Vias, From, To + tag, ...)."""
    lines = [f"SIP/2.0 {status} {reason or 'Whatever'}"]
    for h in req.headers:
        if h[0] in ("via", "from", "call-id", "cseq"):
            lines.append(f"{h[1]}: {h[2]}")
    to = req.get("to") or ""
    if to_tag and ";tag=" not in to and status > 100:
        to += f";tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append("Content-Length: 0")
    msg = parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Response)
    assert msg.check() is None
    return msg


def ack_for_2xx(req: Request, to_tag: str = "b7c9") -> Request:
    """The ACK of a 2xx: a new transaction, so a new branch."""
    text = (
        "ACK sip:bob@192.0.2.4 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnewbranch\r\n"
        "Max-Forwards: 70\r\n"
        f"To: Bob <sip:bob@example.com>;tag={to_tag}\r\n"
        "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        f"Call-ID: {req.call_id}\r\n"
        f"CSeq: {req.cseq[0]} ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    assert isinstance(msg, Request)
    return msg


def ack_for_non_2xx(req: Request, resp: Response) -> Request:
    """The ACK a UAC sends for a non-2xx: same branch as the INVITE (§17.1.1.3)."""
    text = (
        f"ACK {req.uri} SIP/2.0\r\n"
        f"Via: {req.get_all('via')[0]}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: {resp.get('to')}\r\n"
        f"From: {req.get('from')}\r\n"
        f"Call-ID: {req.call_id}\r\n"
        f"CSeq: {req.cseq[0]} ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    assert isinstance(msg, Request)
    return msg


def cancel_for(req: Request) -> Request:
    """The CANCEL of `req` (§9.1): same Request-URI, Call-ID, To, From, CSeq number, top Via."""
    text = (
        f"CANCEL {req.uri} SIP/2.0\r\n"
        f"Via: {req.get_all('via')[0]}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: {req.get('to')}\r\n"
        f"From: {req.get('from')}\r\n"
        f"Call-ID: {req.call_id}\r\n"
        f"CSeq: {req.cseq[0]} CANCEL\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    assert isinstance(msg, Request)
    return msg


# RFC 4475 §3.4.1 "inv2543": RFC 2543 syntax, no branch parameter, no tags, no Content-Length.
INV2543 = (
    b"INVITE sip:UserB@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP iftgw.example.com\r\n"
    b"From: <sip:+13035551111@ift.client.example.net;user=phone>\r\n"
    b"Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>\r\n"
    b"To: sip:+16505552222@ss1.example.net;user=phone\r\n"
    b"Call-ID: inv2543.1717@ift.client.example.com\r\n"
    b"CSeq: 56 INVITE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.5\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.5\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0\r\n"
)


def parse_request(data: bytes) -> Request:
    msg = parse(data)
    assert isinstance(msg, Request)
    return msg


def inv2543_variant(
    method: str, *, to: str | None = None, cseq: int = 56, via: str = ""
) -> Request:
    """CANCEL/ACK/INVITE of the inv2543 call, in the same RFC 2543 style (no branch)."""
    return parse_request(
        (
            f"{method} sip:UserB@example.com SIP/2.0\r\n"
            f"Via: {via or 'SIP/2.0/UDP iftgw.example.com'}\r\n"
            "From: <sip:+13035551111@ift.client.example.net;user=phone>\r\n"
            f"To: {to or 'sip:+16505552222@ss1.example.net;user=phone'}\r\n"
            "Call-ID: inv2543.1717@ift.client.example.com\r\n"
            f"CSeq: {cseq} {method}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )


# ---- driving time ----------------------------------------------------------------------------


def run(layer: TransactionLayer, until: float) -> list[tuple[float, bytes, object]]:
    """Fire every timer up to `until`, each at its deadline; return what was sent, when."""
    sent: list[tuple[float, bytes, object]] = []
    while (t := layer.get_timer()) is not None and t <= until:
        layer.handle_timer(t)
        sent.extend((t, data, dest) for data, dest in layer.datagrams_to_send())
    return sent


def kinds(events: Sequence[object]) -> list[type]:
    return [type(e) for e in events]


def start_server(
    layer: TransactionLayer, req: Request, now: float = 0.0, *, reliable: bool = False
) -> ServerTransaction:
    layer.receive_request(req, TCP_PEER if reliable else UAC, reliable, now)
    (ev,) = layer.events()
    assert isinstance(ev, RequestReceived)
    assert ev.txn.request is req
    return ev.txn


# ---- timers ----------------------------------------------------------------------------------


def test_timer_settings_derive_the_rfc_timers() -> None:
    t = TimerSettings()
    assert (t.t1, t.t2, t.t4) == (0.5, 4.0, 5.0)
    assert (t.a, t.e, t.g) == (0.5, 0.5, 0.5)
    assert t.b == t.f == t.h == t.j == t.l == t.m == 32.0
    assert t.d == 32.0
    assert t.i == t.k == 5.0
    fast = TimerSettings(t1=0.1, t2=0.4, t4=1.0)
    assert fast.b == pytest.approx(6.4)
    assert fast.k == 1.0


@pytest.mark.parametrize("bad", [{"t1": 0}, {"t1": 1.0, "t2": 0.5}, {"t4": -1}])
def test_timer_settings_reject_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TimerSettings(**bad)


# ---- INVITE client transaction (Figure 5, RFC 6026) ------------------------------------------


def test_invite_client_over_udp_retransmits_doubling_then_times_out_at_32s() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, NEXT_HOP, False, 0.0)
    assert txn.state is State.CALLING
    ((wire, dest),) = layer.datagrams_to_send()
    assert wire == inv.serialize() and dest == NEXT_HOP
    sent = run(layer, 31.99)
    assert [t for t, _, _ in sent] == INVITE_RETRANSMISSIONS
    assert all(data is wire and d == NEXT_HOP for _, data, d in sent)  # serialized once
    assert layer.events() == []
    assert len(layer) == 1
    assert run(layer, 32.0) == []
    assert kinds(layer.events()) == [TransactionTimeout, TransactionTerminated]
    assert txn.state is State.TERMINATED
    assert len(layer) == 0
    assert layer.get_timer() is None


def test_invite_client_over_tcp_does_not_retransmit_and_times_out_at_32s() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request(), TCP_PEER, True, 0.0)
    assert len(layer.datagrams_to_send()) == 1
    assert layer.get_timer() == 32.0
    assert run(layer, 100) == []
    evs = layer.events()
    assert kinds(evs) == [TransactionTimeout, TransactionTerminated]
    assert evs[0].txn is txn


def test_invite_client_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.datagrams_to_send()
    assert len(run(layer, 2.0)) == 2  # 0.5 and 1.5
    trying = response(inv, 100, "Trying")
    layer.receive_response(trying, NEXT_HOP, False, 2.0)
    assert txn.state is State.PROCEEDING
    ringing = response(inv, 180, "Ringing")
    layer.receive_response(ringing, NEXT_HOP, False, 3.0)
    layer.receive_response(ringing, NEXT_HOP, False, 4.0)
    evs = layer.events()
    assert kinds(evs) == [ResponseReceived] * 3
    assert [e.response.status for e in evs] == [100, 180, 180]
    assert all(e.txn is txn for e in evs)
    # No more INVITEs, and no Timer B in Proceeding: the TU's Timer C governs it.
    assert run(layer, 1000) == []
    assert layer.events() == []
    assert txn.state is State.PROCEEDING and len(layer) == 1
    assert layer.get_timer() is None


def test_invite_client_2xx_moves_to_accepted_and_passes_every_2xx_up_until_timer_m() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.datagrams_to_send()
    layer.receive_response(response(inv, 180, "Ringing"), NEXT_HOP, False, 1.0)
    ok = response(inv, 200, "OK")
    layer.receive_response(ok, NEXT_HOP, False, 2.0)
    assert txn.state is State.ACCEPTED
    layer.receive_response(ok, NEXT_HOP, False, 2.5)  # retransmission
    forked = response(inv, 200, "OK", to_tag="fork2")
    layer.receive_response(forked, NEXT_HOP, False, 3.0)  # another fork answered too
    layer.receive_response(response(inv, 486, "Busy Here"), NEXT_HOP, False, 3.5)  # ignored
    evs = layer.events()
    assert kinds(evs) == [ResponseReceived] * 4
    assert [e.response.status for e in evs] == [180, 200, 200, 200]
    assert evs[3].response is forked
    assert layer.datagrams_to_send() == []  # the TU, not the transaction, ACKs a 2xx
    # Timer M = 64*T1 after entering Accepted.
    run(layer, 33.99)
    assert txn.state is State.ACCEPTED
    run(layer, 34.0)
    assert kinds(layer.events()) == [TransactionTerminated]
    assert len(layer) == 0
    # A 2xx after Timer M matches nothing: stray, for the proxy to forward statelessly.
    layer.receive_response(ok, NEXT_HOP, False, 40.0)
    (ev,) = layer.events()
    assert isinstance(ev, StrayResponse) and ev.response is ok and ev.source == NEXT_HOP


def test_invite_client_lets_go_of_the_request_once_accepted() -> None:
    """In Accepted the INVITE is never sent again: the transaction keeps neither the parsed
    request nor its bytes for the 32 s until Timer M (memory under load)."""
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.datagrams_to_send()
    layer.receive_response(response(inv, 200, "OK"), NEXT_HOP, False, 0.2)
    assert txn.state is State.ACCEPTED
    assert txn.request is not inv and txn.request.method == "INVITE"
    assert txn._wire == b""
    assert run(layer, 10.0) == []  # nothing is retransmitted


def test_invite_client_2xx_in_calling_goes_to_accepted_and_stops_timer_a() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.datagrams_to_send()
    layer.receive_response(response(inv, 200, "OK"), NEXT_HOP, False, 0.2)
    assert txn.state is State.ACCEPTED
    assert run(layer, 32.19) == []  # neither Timer A nor Timer B fire
    assert kinds(layer.events()) == [ResponseReceived]
    run(layer, 32.2)  # Timer M = 64*T1 after the 2xx
    assert kinds(layer.events()) == [TransactionTerminated]
    assert txn.state is State.TERMINATED


def test_invite_client_non_2xx_gets_an_ack_built_by_the_transaction() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.datagrams_to_send()
    layer.receive_response(response(inv, 180, "Ringing"), NEXT_HOP, False, 1.0)
    busy = response(inv, 486, "Busy Here", to_tag="busytag")
    layer.receive_response(busy, NEXT_HOP, False, 2.0)
    assert txn.state is State.COMPLETED
    evs = layer.events()
    assert kinds(evs) == [ResponseReceived, ResponseReceived]
    assert evs[1].response is busy

    ((wire, dest),) = layer.datagrams_to_send()
    assert dest == NEXT_HOP
    ack = parse_request(wire)
    assert ack == txn.ack
    # §17.1.1.3
    assert ack.method == "ACK"
    assert ack.uri == inv.uri
    assert ack.get_all("via") == [inv.get_all("via")[0]]  # one Via: the INVITE's top one
    assert ack.top_via.branch == "z9hG4bK776asdhds"
    assert ack.call_id == inv.call_id
    assert ack.get("from") == inv.get("from")
    assert ack.get("to") == busy.get("to")
    assert ack.to.tag == "busytag"
    assert ack.get("cseq") == "1 ACK"
    assert ack.get_all("route") == inv.get_all("route")
    assert [h[2] for h in ack.headers if h[0] == "route"] == [
        h[2] for h in inv.headers if h[0] == "route"
    ]
    assert ack.get("max-forwards") == "69"
    assert ack.body == b"" and ack.get("content-length") == "0"
    assert ack.check() is None

    # Retransmissions of the final response are absorbed; each gets the same ACK again.
    layer.receive_response(busy, NEXT_HOP, False, 3.0)
    layer.receive_response(busy, NEXT_HOP, False, 5.0)
    again = layer.datagrams_to_send()
    assert [d for d, _ in again] == [wire, wire]
    assert all(d is wire for d, _ in again)
    assert layer.events() == []
    # Timer D: 32 s over UDP.
    assert run(layer, 33.99) == []
    assert txn.state is State.COMPLETED
    run(layer, 34.0)
    assert kinds(layer.events()) == [TransactionTerminated]
    assert len(layer) == 0


def test_invite_client_non_2xx_in_calling_stops_retransmissions() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.datagrams_to_send()
    layer.receive_response(response(inv, 503, "Service Unavailable"), NEXT_HOP, False, 0.7)
    (ack,) = layer.datagrams_to_send()
    assert parse_request(ack[0]).method == "ACK"
    sent = run(layer, 40)
    assert sent == []  # no INVITE at 1.5 and later, nothing at all
    assert kinds(layer.events()) == [ResponseReceived, TransactionTerminated]


def test_invite_client_over_tcp_ends_at_once_after_acking_a_non_2xx() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, TCP_PEER, True, 0.0)
    layer.datagrams_to_send()
    layer.receive_response(response(inv, 404, "Not Found"), TCP_PEER, True, 0.1)
    ((wire, dest),) = layer.datagrams_to_send()
    assert parse_request(wire).method == "ACK" and dest == TCP_PEER
    assert kinds(layer.events()) == [ResponseReceived, TransactionTerminated]  # Timer D = 0
    assert txn.state is State.TERMINATED
    assert len(layer) == 0
    assert layer.get_timer() is None


def test_invite_client_acks_each_fork_of_a_non_2xx_with_its_own_to() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.datagrams_to_send()
    layer.receive_response(response(inv, 486, "Busy", to_tag="one"), NEXT_HOP, False, 1.0)
    layer.receive_response(response(inv, 486, "Busy", to_tag="two"), NEXT_HOP, False, 1.1)
    tags = [parse_request(d).to.tag for d, _ in layer.datagrams_to_send()]
    assert tags == ["one", "two"]


def test_invite_client_passes_up_a_2xx_arriving_after_a_non_2xx() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.receive_response(response(inv, 486, "Busy", to_tag="one"), NEXT_HOP, False, 1.0)
    layer.receive_response(response(inv, 200, "OK", to_tag="two"), NEXT_HOP, False, 1.1)
    evs = layer.events()
    assert [e.response.status for e in evs] == [486, 200]
    assert txn.state is State.COMPLETED


def test_invite_client_transport_error_in_calling() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request(), NEXT_HOP, False, 0.0)
    layer.transport_error(txn, 0.01)
    evs = layer.events()
    assert kinds(evs) == [TransportFailed, TransactionTerminated]
    assert evs[0].txn is txn
    assert len(layer) == 0
    layer.datagrams_to_send()
    assert run(layer, 100) == []  # its timers went with it


def test_invite_client_transport_error_in_completed() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.receive_response(response(inv, 486, "Busy Here"), NEXT_HOP, False, 0.1)
    assert txn.state is State.COMPLETED
    layer.events()
    layer.transport_error(txn, 0.2)  # the ACK could not be sent
    assert kinds(layer.events()) == [TransportFailed, TransactionTerminated]
    assert len(layer) == 0


# ---- non-INVITE client transaction (Figure 6) ------------------------------------------------


def test_non_invite_client_over_udp_retransmits_capped_at_t2_then_times_out() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    txn = layer.send_request(req, NEXT_HOP, False, 0.0)
    assert txn.state is State.TRYING
    ((wire, _),) = layer.datagrams_to_send()
    sent = run(layer, 31.99)
    assert [t for t, _, _ in sent] == CAPPED_RETRANSMISSIONS
    assert all(d is wire for _, d, _ in sent)
    assert layer.events() == []
    run(layer, 32.0)
    evs = layer.events()
    assert kinds(evs) == [TransactionTimeout, TransactionTerminated]
    assert evs[0].txn is txn
    assert len(layer) == 0


def test_non_invite_client_in_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    req = request("BYE")
    txn = layer.send_request(req, NEXT_HOP, False, 0.0)
    layer.datagrams_to_send()
    assert [t for t, _, _ in run(layer, 0.6)] == [0.5]
    layer.receive_response(response(req, 100, "Trying"), NEXT_HOP, False, 0.7)
    assert txn.state is State.PROCEEDING
    # Timer E set at 0.5 for 1 s still fires at 1.5, then every T2.
    sent = run(layer, 31.99)
    assert [t for t, _, _ in sent] == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    run(layer, 32.0)
    assert kinds(layer.events()) == [ResponseReceived, TransactionTimeout, TransactionTerminated]


def test_non_invite_client_final_response_then_timer_k() -> None:
    layer = TransactionLayer()
    req = request("REGISTER")
    txn = layer.send_request(req, NEXT_HOP, False, 0.0)
    layer.datagrams_to_send()
    layer.receive_response(response(req, 100, "Trying"), NEXT_HOP, False, 0.1)
    layer.receive_response(response(req, 183, "Progress"), NEXT_HOP, False, 0.15)
    assert txn.state is State.PROCEEDING
    ok = response(req, 200, "OK")
    layer.receive_response(ok, NEXT_HOP, False, 0.2)
    assert txn.state is State.COMPLETED
    evs = layer.events()
    assert kinds(evs) == [ResponseReceived] * 3
    assert [e.response.status for e in evs] == [100, 183, 200]
    assert evs[2].response is ok
    layer.receive_response(ok, NEXT_HOP, False, 1.0)  # retransmission: absorbed
    assert layer.events() == []
    assert run(layer, 5.19) == []  # no request retransmission in Completed
    assert txn.state is State.COMPLETED
    run(layer, 5.2)  # Timer K = T4
    assert kinds(layer.events()) == [TransactionTerminated]
    assert len(layer) == 0 and layer.get_timer() is None


def test_non_invite_client_over_tcp_no_retransmission_and_timer_k_zero() -> None:
    layer = TransactionLayer()
    req = request("MESSAGE")
    txn = layer.send_request(req, TCP_PEER, True, 0.0)
    layer.datagrams_to_send()
    assert layer.get_timer() == 32.0  # only Timer F
    layer.receive_response(response(req, 202, "Accepted"), TCP_PEER, True, 0.3)
    assert kinds(layer.events()) == [ResponseReceived, TransactionTerminated]
    assert txn.state is State.TERMINATED
    assert len(layer) == 0
    assert layer.get_timer() is None


def test_non_invite_client_timeout_over_tcp() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), TCP_PEER, True, 0.0)
    layer.datagrams_to_send()
    assert run(layer, 100) == []
    assert kinds(layer.events()) == [TransactionTimeout, TransactionTerminated]


@pytest.mark.parametrize("provisional", [False, True])
def test_non_invite_client_transport_error(provisional: bool) -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    txn = layer.send_request(req, NEXT_HOP, False, 0.0)
    if provisional:
        layer.receive_response(response(req, 100, "Trying"), NEXT_HOP, False, 0.1)
        layer.events()
    layer.transport_error(txn, 0.2)
    assert kinds(layer.events()) == [TransportFailed, TransactionTerminated]
    assert len(layer) == 0


def test_cancel_and_invite_with_one_branch_are_two_client_transactions() -> None:
    layer = TransactionLayer()
    inv = request()
    invite_txn = layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.receive_response(response(inv, 180, "Ringing"), NEXT_HOP, False, 0.1)
    cancel = cancel_for(inv)
    cancel_txn = layer.send_request(cancel, NEXT_HOP, False, 1.0)
    assert len(layer) == 2
    layer.receive_response(response(cancel, 200, "OK"), NEXT_HOP, False, 1.1)
    layer.receive_response(response(inv, 487, "Request Terminated"), NEXT_HOP, False, 1.2)
    evs = [e for e in layer.events() if isinstance(e, ResponseReceived)]
    assert [(e.txn, e.response.status) for e in evs] == [
        (invite_txn, 180),
        (cancel_txn, 200),
        (invite_txn, 487),
    ]


def test_stray_responses() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.send_request(inv, NEXT_HOP, False, 0.0)
    unknown = response(request(branch="z9hG4bKsomeoneelse"), 200, "OK")
    wrong_method = response(request("OPTIONS"), 200, "OK")  # same branch, other CSeq method
    for resp in (unknown, wrong_method):
        layer.receive_response(resp, NEXT_HOP, False, 0.1)
    evs = layer.events()
    assert kinds(evs) == [StrayResponse, StrayResponse]
    assert evs[0].response is unknown and evs[0].source == NEXT_HOP
    assert len(layer) == 1


def test_send_request_refuses_ack_and_a_branch_in_use() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.send_request(inv, NEXT_HOP, False, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request(), NEXT_HOP, False, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(ack_for_2xx(inv), NEXT_HOP, False, 0.0)
    assert len(layer) == 1


def test_send_stateless_uses_the_same_outbox() -> None:
    layer = TransactionLayer()
    ack = ack_for_2xx(request())
    layer.send_stateless(ack, NEXT_HOP)
    assert layer.datagrams_to_send() == [(ack.serialize(), NEXT_HOP)]
    assert len(layer) == 0


def test_terminate_drops_an_invite_client_transaction_left_in_proceeding() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = layer.send_request(inv, NEXT_HOP, False, 0.0)
    layer.receive_response(response(inv, 180, "Ringing"), NEXT_HOP, False, 0.1)
    layer.events()
    layer.terminate(txn, 200.0)
    assert kinds(layer.events()) == [TransactionTerminated]
    assert len(layer) == 0
    layer.terminate(txn, 201.0)  # twice is harmless
    assert layer.events() == []


# ---- INVITE server transaction (Figure 7, RFC 6026) ------------------------------------------


def test_invite_server_absorbs_retransmissions_and_repeats_the_last_provisional() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = start_server(layer, inv)
    assert txn.state is State.PROCEEDING
    assert txn.source == UAC and txn.response_dest == UAC
    assert layer.datagrams_to_send() == []  # no automatic 100 Trying
    layer.receive_request(request(), UAC, False, 0.1)  # retransmission before any response
    assert layer.events() == [] and layer.datagrams_to_send() == []
    trying = response(inv, 100, "Trying")
    layer.send_response(txn, trying, 0.2)
    ((w100, dest),) = layer.datagrams_to_send()
    assert w100 == trying.serialize() and dest == UAC
    layer.receive_request(request(), UAC, False, 0.5)
    ((again, _),) = layer.datagrams_to_send()
    assert again is w100  # serialized once
    ringing = response(inv, 180, "Ringing")
    layer.send_response(txn, ringing, 1.0)
    ((w180, _),) = layer.datagrams_to_send()
    layer.receive_request(request(), UAC, False, 1.5)
    assert layer.datagrams_to_send() == [(w180, UAC)]
    assert layer.events() == []
    assert txn.last_response is ringing
    assert len(layer) == 1
    assert layer.get_timer() is None  # Proceeding runs no timer


def test_invite_server_non_2xx_retransmits_with_timer_g_until_ack() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = start_server(layer, inv)
    busy = response(inv, 486, "Busy Here")
    layer.send_response(txn, busy, 0.0)
    assert txn.state is State.COMPLETED
    ((wire, _),) = layer.datagrams_to_send()
    sent = run(layer, 8.0)
    assert [t for t, _, _ in sent] == [0.5, 1.5, 3.5, 7.5]
    assert all(d is wire for _, d, _ in sent)
    layer.receive_request(request(), UAC, False, 8.5)  # INVITE again: the final again
    assert layer.datagrams_to_send() == [(wire, UAC)]
    # A second final response from the TU is discarded.
    layer.send_response(txn, response(inv, 500, "Oops"), 9.0)
    assert layer.datagrams_to_send() == []
    ack = ack_for_non_2xx(inv, busy)
    layer.receive_request(ack, UAC, False, 10.0)
    assert txn.state is State.CONFIRMED
    assert layer.events() == []  # the ACK of a non-2xx stays in the transaction
    layer.receive_request(ack, UAC, False, 11.0)  # ACK retransmission: absorbed
    layer.receive_request(request(), UAC, False, 11.5)  # INVITE: absorbed too
    assert layer.events() == [] and layer.datagrams_to_send() == []
    assert run(layer, 14.99) == []  # Timer G stopped
    assert txn.state is State.CONFIRMED
    run(layer, 15.0)  # Timer I = T4 after the ACK
    assert kinds(layer.events()) == [TransactionTerminated]
    assert len(layer) == 0 and layer.get_timer() is None


def test_invite_server_timer_h_without_ack() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = start_server(layer, inv)
    layer.send_response(txn, response(inv, 603, "Decline"), 0.0)
    layer.datagrams_to_send()
    sent = run(layer, 31.99)
    assert [t for t, _, _ in sent] == CAPPED_RETRANSMISSIONS
    assert layer.events() == []
    run(layer, 32.0)
    assert kinds(layer.events()) == [TransactionTerminated]
    assert txn.state is State.TERMINATED and len(layer) == 0


def test_invite_server_over_tcp_no_timer_g_and_timer_i_zero() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = start_server(layer, inv, reliable=True)
    layer.send_response(txn, response(inv, 486, "Busy Here"), 0.0)
    assert layer.datagrams_to_send()[0][1] == TCP_PEER
    assert layer.get_timer() == 32.0  # Timer H only
    layer.receive_request(ack_for_non_2xx(inv, response(inv, 486)), TCP_PEER, True, 0.1)
    assert kinds(layer.events()) == [TransactionTerminated]
    assert len(layer) == 0 and layer.get_timer() is None


def test_invite_server_2xx_accepted_state_rfc6026() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = start_server(layer, inv)
    layer.send_response(txn, response(inv, 180, "Ringing"), 0.5)
    ok = response(inv, 200, "OK")
    layer.send_response(txn, ok, 1.0)
    assert txn.state is State.ACCEPTED
    assert len(layer.datagrams_to_send()) == 2
    # INVITE retransmissions are absorbed: not passed up, nothing re-sent.
    layer.receive_request(request(), UAC, False, 1.2)
    assert layer.events() == [] and layer.datagrams_to_send() == []
    # The TU retransmits its 2xx (or forwards a retransmitted one): it is sent.
    layer.send_response(txn, ok, 1.5)
    assert layer.datagrams_to_send() == [(ok.serialize(), UAC)]
    assert run(layer, 32.99) == []  # no Timer G for a 2xx
    # An ACK that matches the transaction in Accepted goes to the TU.
    same_branch_ack = ack_for_non_2xx(inv, ok)
    layer.receive_request(same_branch_ack, UAC, False, 2.0)
    (ev,) = layer.events()
    assert isinstance(ev, AckReceived)
    assert ev.request is same_branch_ack and ev.source == UAC
    assert txn.state is State.ACCEPTED
    run(layer, 33.0)  # Timer L = 64*T1 after the first 2xx
    assert kinds(layer.events()) == [TransactionTerminated]
    assert len(layer) == 0


def test_ack_for_a_2xx_matches_no_transaction_and_goes_to_the_tu() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = start_server(layer, inv)
    layer.send_response(txn, response(inv, 200, "OK"), 0.0)
    ack = ack_for_2xx(inv)
    layer.receive_request(ack, UAC, False, 0.1)
    (ev,) = layer.events()
    assert isinstance(ev, AckReceived) and ev.request is ack and ev.source == UAC
    assert len(layer) == 1  # no transaction for an ACK


def test_invite_server_transport_errors_inform_the_tu_and_keep_the_state() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = start_server(layer, inv)
    layer.transport_error(txn, 0.1)
    assert kinds(layer.events()) == [TransportFailed]
    assert txn.state is State.PROCEEDING
    layer.send_response(txn, response(inv, 200, "OK"), 0.2)
    layer.transport_error(txn, 0.3)
    assert kinds(layer.events()) == [TransportFailed]
    assert txn.state is State.ACCEPTED
    other = request(branch="z9hG4bKsecond")
    txn2 = start_server(layer, other)
    layer.send_response(txn2, response(other, 486, "Busy Here"), 0.0)
    layer.transport_error(txn2, 0.1)
    assert kinds(layer.events()) == [TransportFailed]
    assert txn2.state is State.COMPLETED  # Timer H still ends it
    layer.datagrams_to_send()
    run(layer, 32.0)
    assert txn2.state is State.TERMINATED


def test_response_dest_set_by_the_tu_is_used_for_responses_and_retransmissions() -> None:
    layer = TransactionLayer()
    inv = request()
    txn = start_server(layer, inv)
    elsewhere = ("udp", "198.51.100.7", 5062, None)
    txn.response_dest = elsewhere
    txn.context = "call 17"  # free for the TU
    layer.send_response(txn, response(inv, 480, "Temporarily Unavailable"), 0.0)
    assert [d for _, d in layer.datagrams_to_send()] == [elsewhere]
    assert {dest for _, _, dest in run(layer, 2.0)} == {elsewhere}  # Timer G
    layer.receive_request(request(), UAC, False, 2.1)  # INVITE retransmission
    assert [d for _, d in layer.datagrams_to_send()] == [elsewhere]
    assert txn.context == "call 17"


# ---- non-INVITE server transaction (Figure 8) ------------------------------------------------


def test_non_invite_server_trying_proceeding_completed_timer_j() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    txn = start_server(layer, req)
    assert txn.state is State.TRYING
    layer.receive_request(request("OPTIONS"), UAC, False, 0.1)  # Trying: absorbed
    assert layer.events() == [] and layer.datagrams_to_send() == []
    layer.send_response(txn, response(req, 100, "Trying"), 0.2)
    assert txn.state is State.PROCEEDING
    ((w100, _),) = layer.datagrams_to_send()
    layer.receive_request(request("OPTIONS"), UAC, False, 0.3)
    assert layer.datagrams_to_send() == [(w100, UAC)]
    layer.send_response(txn, response(req, 183, "Progress"), 0.4)
    ((w183, _),) = layer.datagrams_to_send()
    assert parse(w183).status == 183  # type: ignore[union-attr]
    layer.receive_request(request("OPTIONS"), UAC, False, 0.5)  # now the latest provisional
    assert layer.datagrams_to_send() == [(w183, UAC)]
    ok = response(req, 200, "OK")
    layer.send_response(txn, ok, 1.0)
    assert txn.state is State.COMPLETED
    ((w200, _),) = layer.datagrams_to_send()
    layer.receive_request(request("OPTIONS"), UAC, False, 2.0)
    assert layer.datagrams_to_send() == [(w200, UAC)]
    layer.send_response(txn, response(req, 500, "Late"), 2.5)  # discarded
    assert layer.datagrams_to_send() == []
    assert layer.events() == []
    assert run(layer, 32.99) == []  # no retransmission of non-INVITE responses
    assert txn.state is State.COMPLETED
    run(layer, 33.0)  # Timer J = 64*T1
    assert kinds(layer.events()) == [TransactionTerminated]
    assert len(layer) == 0


def test_non_invite_server_final_from_trying() -> None:
    layer = TransactionLayer()
    req = request("REGISTER")
    txn = start_server(layer, req)
    layer.send_response(txn, response(req, 401, "Unauthorized"), 0.0)
    assert txn.state is State.COMPLETED
    assert len(layer.datagrams_to_send()) == 1


def test_non_invite_server_over_tcp_timer_j_zero() -> None:
    layer = TransactionLayer()
    req = request("MESSAGE")
    txn = start_server(layer, req, reliable=True)
    layer.send_response(txn, response(req, 200, "OK"), 0.0)
    assert layer.datagrams_to_send()[0][1] == TCP_PEER
    assert kinds(layer.events()) == [TransactionTerminated]
    assert len(layer) == 0 and layer.get_timer() is None


@pytest.mark.parametrize("final", [False, True])
def test_non_invite_server_transport_error_terminates(final: bool) -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    txn = start_server(layer, req)
    layer.send_response(txn, response(req, 200 if final else 100), 0.0)
    layer.transport_error(txn, 0.1)
    assert kinds(layer.events()) == [TransportFailed, TransactionTerminated]
    assert len(layer) == 0


# ---- server matching (§17.2.3) and CANCEL (§9.2) ---------------------------------------------


def test_server_matching_uses_branch_sent_by_and_method() -> None:
    layer = TransactionLayer()
    a = start_server(layer, request())
    b = start_server(layer, request(sent_by="192.0.2.99:5060"))  # same branch, other sent-by
    c = start_server(layer, request("OPTIONS"))  # same branch, other method
    d = start_server(layer, request(branch="z9hG4bKother"))
    assert len({id(a), id(b), id(c), id(d)}) == 4
    assert len(layer) == 4
    layer.receive_request(request(sent_by="192.0.2.99:5060"), UAC, False, 0.1)
    assert layer.events() == []  # retransmission of b


def test_cancel_matches_its_invite() -> None:
    layer = TransactionLayer()
    inv = request()
    invite_txn = start_server(layer, inv)
    layer.send_response(invite_txn, response(inv, 180, "Ringing"), 0.1)
    cancel = cancel_for(inv)
    cancel_txn = start_server(layer, cancel, 1.0)  # CANCEL is a request of its own
    assert cancel_txn is not invite_txn and not cancel_txn.is_invite
    assert layer.find_invite_server_transaction(cancel) is invite_txn
    assert layer.find_invite_server_transaction(cancel_for(request(branch="z9hG4bKx"))) is None
    moved = cancel_for(request(sent_by="192.0.2.77"))
    assert layer.find_invite_server_transaction(moved) is None


def test_rfc2543_invite_without_branch_is_matched_by_its_fields() -> None:
    inv = parse_request(INV2543)
    assert inv.check() is None and inv.top_via.branch is None
    layer = TransactionLayer()
    txn = start_server(layer, inv)
    layer.send_response(txn, response(inv, 100, "Trying"), 0.0)
    ((w100, _),) = layer.datagrams_to_send()
    # A retransmission is recognised without any branch.
    layer.receive_request(parse_request(INV2543), UAC, False, 0.5)
    assert layer.events() == []
    assert layer.datagrams_to_send() == [(w100, UAC)]
    assert len(layer) == 1
    # The CANCEL names it by Request-URI, tags, Call-ID, CSeq number and top Via.
    cancel = inv2543_variant("CANCEL")
    assert layer.find_invite_server_transaction(cancel) is txn
    for other in (
        inv2543_variant("CANCEL", cseq=57),
        inv2543_variant("CANCEL", via="SIP/2.0/UDP other.example.com"),
        inv2543_variant("CANCEL", to="sip:+16505552222@ss1.example.net;user=phone;tag=x"),
    ):
        assert layer.find_invite_server_transaction(other) is None
    cancel_txn = start_server(layer, cancel, 1.0)
    assert cancel_txn is not txn and len(layer) == 2


def test_rfc2543_ack_matches_by_the_to_tag_of_the_response() -> None:
    inv = parse_request(INV2543)
    layer = TransactionLayer()
    txn = start_server(layer, inv)
    final = response(inv, 486, "Busy Here", to_tag="ss1-486")
    assert final.to.tag == "ss1-486"
    layer.send_response(txn, final, 0.0)
    layer.datagrams_to_send()
    # An ACK with another To tag is not this transaction's: it goes to the TU.
    stranger = inv2543_variant("ACK", to="sip:+16505552222@ss1.example.net;user=phone;tag=zz")
    layer.receive_request(stranger, UAC, False, 0.2)
    (ev,) = layer.events()
    assert isinstance(ev, AckReceived) and ev.request is stranger
    assert txn.state is State.COMPLETED
    untagged = inv2543_variant("ACK")  # no To tag: not the ACK of a tagged response either
    layer.receive_request(untagged, UAC, False, 0.25)
    assert kinds(layer.events()) == [AckReceived]
    assert txn.state is State.COMPLETED
    ack = inv2543_variant("ACK", to="sip:+16505552222@ss1.example.net;user=phone;tag=ss1-486")
    layer.receive_request(ack, UAC, False, 0.3)
    assert txn.state is State.CONFIRMED
    assert layer.events() == []
    assert run(layer, 10) == []  # Timer G stopped
    assert kinds(layer.events()) == [TransactionTerminated]


def test_rfc4475_badbranch_magic_cookie_alone_falls_back_to_rfc2543_matching() -> None:
    text = (
        b"OPTIONS sip:user@example.com SIP/2.0\r\n"
        b"To: sip:user@example.com\r\n"
        b"From: sip:caller@example.org;tag=33242\r\n"
        b"Max-Forwards: 3\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK\r\n"
        b"Accept: application/sdp\r\n"
        b"Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n\r\n"
        b"CSeq: 8 OPTIONS\r\n"
        b"l: 0\r\n\r\n"
    )
    layer = TransactionLayer()
    txn = start_server(layer, parse_request(text))
    layer.receive_request(parse_request(text), UAC, False, 0.1)
    assert layer.events() == []
    other = parse_request(text.replace(b"CSeq: 8", b"CSeq: 9"))
    layer.receive_request(other, UAC, False, 0.2)  # same bare branch, but a new request
    (ev,) = layer.events()
    assert isinstance(ev, RequestReceived) and ev.txn is not txn


# ---- configuration, load, release --------------------------------------------------------------


def test_t1_t2_t4_are_configurable() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.1, t2=0.4, t4=1.0))
    inv = request()
    layer.send_request(inv, NEXT_HOP, False, 0.0)
    opt = request("OPTIONS", branch="z9hG4bKopt")
    opt_txn = layer.send_request(opt, NEXT_HOP, False, 0.0)
    layer.datagrams_to_send()
    sent = run(layer, 6.39)
    invites = [t for t, d, _ in sent if d.startswith(b"INVITE")]
    options = [t for t, d, _ in sent if d.startswith(b"OPTIONS")]
    assert invites == pytest.approx([0.1, 0.3, 0.7, 1.5, 3.1, 6.3])
    assert options[:4] == pytest.approx([0.1, 0.3, 0.7, 1.1])  # then every T2 = 0.4
    assert [b - a for a, b in zip(options[3:], options[4:], strict=False)] == pytest.approx(
        [0.4] * (len(options) - 4)
    )
    assert layer.events() == []
    run(layer, 6.4)  # Timers B and F = 64*T1
    assert kinds(layer.events()) == [TransactionTimeout, TransactionTerminated] * 2
    # Timer K = T4
    opt2 = request("OPTIONS", branch="z9hG4bKopt2")
    opt_txn = layer.send_request(opt2, NEXT_HOP, False, 10.0)
    layer.receive_response(response(opt2, 200, "OK"), NEXT_HOP, False, 10.0)
    run(layer, 10.99)
    assert opt_txn.state is State.COMPLETED
    run(layer, 11.0)
    assert opt_txn.state is State.TERMINATED


def test_many_concurrent_transactions_do_not_interfere_and_are_all_released() -> None:
    layer = TransactionLayer()
    n = 600
    clients: list[tuple[ClientTransaction, Request]] = []
    servers: list[tuple[ServerTransaction, Request]] = []
    for i in range(n):
        now = i * 0.001
        inv = request(branch=f"z9hG4bKc{i}", call_id=f"call-{i}")
        clients.append((layer.send_request(inv, NEXT_HOP, False, now), inv))
        sreq = request("OPTIONS" if i % 2 else "INVITE", branch=f"z9hG4bKs{i}", call_id=f"s-{i}")
        layer.receive_request(sreq, UAC, False, now)
        servers.append((layer.events()[0].txn, sreq))
    assert len(layer) == 2 * n
    layer.datagrams_to_send()
    # Answer the clients in different ways: ringing then OK, busy, or nothing (timeout).
    for i, (_txn, inv) in enumerate(clients):
        if i % 3 == 0:
            layer.receive_response(response(inv, 180, "Ringing"), NEXT_HOP, False, 1.0)
            layer.receive_response(response(inv, 200, "OK", to_tag=f"t{i}"), NEXT_HOP, False, 1.0)
        elif i % 3 == 1:
            layer.receive_response(response(inv, 486, "Busy", to_tag=f"t{i}"), NEXT_HOP, False, 1.0)
    for i, (stxn, sreq) in enumerate(servers):
        layer.send_response(stxn, response(sreq, 200 if i % 4 < 2 else 404, to_tag=f"u{i}"), 1.0)
    sent = layer.datagrams_to_send()
    acks = [parse_request(d) for d, _ in sent if d.startswith(b"ACK")]
    assert len(acks) == n // 3
    assert all(a.top_via.branch == f"z9hG4bKc{a.call_id[5:]}" for a in acks)
    assert all(a.to.tag == f"t{a.call_id[5:]}" for a in acks)
    by_txn: dict[int, list[int]] = {}
    timeouts = 0
    for ev in layer.events():
        if isinstance(ev, ResponseReceived):
            assert ev.response.top_via.branch == ev.txn.branch
            by_txn.setdefault(id(ev.txn), []).append(ev.response.status)
    for i, (txn, _) in enumerate(clients):
        expected = [[180, 200], [486], []][i % 3]
        assert by_txn.get(id(txn), []) == expected
    run(layer, 200.0)
    for ev in layer.events():
        if isinstance(ev, TransactionTimeout):
            timeouts += 1
            assert clients.index((ev.txn, ev.txn.request)) % 3 == 2
    assert timeouts == n // 3
    assert len(layer) == 0
    assert layer.get_timer() is None
    assert layer._heap == []  # no dead entries left behind


def test_terminated_transactions_are_released() -> None:
    layer = TransactionLayer()
    terminated = []
    for i in range(50):
        req = request("OPTIONS", branch=f"z9hG4bKr{i}")
        txn = start_server(layer, req)
        layer.send_response(txn, response(req, 200, "OK"), 0.0)
    assert len(layer) == 50
    run(layer, 32.0)
    terminated = [e for e in layer.events() if isinstance(e, TransactionTerminated)]
    assert len(terminated) == 50
    assert len(layer) == 0
    assert all(e.txn.state is State.TERMINATED for e in terminated)
    # A late retransmission after Timer J starts a new transaction.
    layer.receive_request(request("OPTIONS", branch="z9hG4bKr0"), UAC, False, 40.0)
    assert kinds(layer.events()) == [RequestReceived]
