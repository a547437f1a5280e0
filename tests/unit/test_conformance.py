"""RFC 3261 conformance of the SIP core, one raw-message case per defect seen in the field.

The core runs sans-IO (bytes in, bytes out, time stepped) as in test_core.py, whose helpers
these tests share; tests/e2e/test_conformance.py checks the paths that cross the network.
"""

from __future__ import annotations

import email.utils

from test_core import (
    ALICE,
    BOB1,
    BOB2,
    DOMAIN,
    Net,
    ack_for,
    answer,
    authorize,
    invite,
    only,
    register,
    req,
)

from heimbuero.services.core import CoreSettings, SipCore
from heimbuero.services.proxy import Target
from heimbuero.sip.auth import parse_credentials
from heimbuero.sip.message import Request, Response, parse
from heimbuero.sip.peer import Peer


def authed(net: Net, method: str, ruri: str, caller: str = "alice", src=ALICE) -> tuple:
    """An out-of-dialog request from `caller`, challenged and sent again with credentials."""
    r = req(method, ruri, src, caller, ruri)
    [(challenge, _)] = net.send(r.serialize(), src)
    assert isinstance(challenge, Response) and challenge.status == 407
    if method == "INVITE":
        net.send(ack_for(r, challenge).serialize(), src)
    a = authorize(r, challenge, caller, "Proxy-Authorization")
    return a, net.send(a.serialize(), src)


def forwarded(out: list) -> dict:
    return {dest: m for m, dest in out if isinstance(m, Request)}


# ---- stray responses (RFC 3261 §18.1.2) --------------------------------------------------


def _stray_200(top_via: str) -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: {top_via}\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ALICE[2]};branch=z9hG4bKcaller;rport={ALICE[2]}\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=a\r\nTo: <sip:bob@{DOMAIN}>;tag=b\r\n"
        "Call-ID: stray-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_stray_2xx_is_forwarded_only_when_the_top_via_is_ours() -> None:
    net = Net()
    r = req("INVITE", f"sip:bob@{DOMAIN}", ALICE, "alice", "sip:b@x", call_id="stray-1")
    r.set("Via", f"SIP/2.0/UDP 127.0.0.1:{ALICE[2]};branch=z9hG4bKcaller;rport={ALICE[2]}")
    signed = net.core.new_branch(r)
    # sent-by of another host, with a branch of our shape and signature: dropped
    assert net.send(_stray_200(f"SIP/2.0/UDP 198.51.100.7:5060;branch={signed}"), BOB1) == []
    # our sent-by, a branch of our prefix that we never signed: dropped
    forged = "z9hG4bKhb0123456789.1"
    assert net.send(_stray_200(f"SIP/2.0/UDP 127.0.0.1:5060;branch={forged}"), BOB1) == []
    # ours indeed (a 2xx retransmission after the transaction ended): on to the next Via
    [(fwd, dest)] = net.send(_stray_200(f"SIP/2.0/UDP 127.0.0.1:5060;branch={signed}"), BOB1)
    assert dest == ALICE and isinstance(fwd, Response) and len(fwd.vias) == 1


def test_a_branch_a_callee_saw_does_not_relay_a_2xx_elsewhere() -> None:
    """Every callee sees our signed branch in the requests it gets; a 2xx it makes up with that
    top Via and a victim's address below it (another Call-ID, a CSeq no transaction matches)
    is not relayed: the branch is signed for its Call-ID and the hop its answers go to."""
    net = Net()
    register(net, "bob", BOB1)
    register(net, "alice", ALICE)
    _, out = invite(net, "alice", "bob", ALICE)
    top = forwarded(out)[BOB1].get_all("via")[0]
    for call_id, second in (
        ("other-call", "SIP/2.0/UDP 127.0.0.1:40099;branch=z9hG4bKv;rport=40099"),
        (forwarded(out)[BOB1].call_id, "SIP/2.0/UDP 127.0.0.1:40099;branch=z9hG4bKv"),
    ):
        forged = (
            f"SIP/2.0 200 OK\r\nVia: {top}\r\nVia: {second}\r\n"
            f"From: <sip:alice@{DOMAIN}>;tag=a\r\nTo: <sip:bob@{DOMAIN}>;tag=b\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        assert net.send(forged, BOB1) == [], call_id


# ---- 408 and CANCEL for non-INVITE (RFC 4320 §4.2, RFC 3261 §9.1) -----------------------


def test_no_408_upstream_for_a_non_invite_request() -> None:
    net = Net()
    register(net, "bob", BOB1)
    register(net, "alice", ALICE)
    _, out = authed(net, "MESSAGE", f"sip:bob@{DOMAIN}")
    assert list(forwarded(out)) == [BOB1]  # bob's phone never answers
    out = net.advance(40.0)
    assert [m.status for m in only(out, Response)] == []  # alice's own Timer F tells her
    out = net.advance(40.0)  # (its retransmissions meanwhile are absorbed)
    assert [m.status for m in only(out, Response)] == []
    assert len(net.core.proxy) == 0 and len(net.core.layer) == 0  # nothing left behind


class _OneStep:
    """A routing plan of one step that rings `target` for 5 s."""

    def __init__(self, target: Target) -> None:
        self.steps = [([target], 5.0)]
        self.failures: list[int] = []

    def next_step(self, now: float):
        return self.steps.pop(0) if self.steps else None

    def answered(self, target: Target, now: float) -> None: ...

    def failed(
        self,
        status: int,
        now: float,
        *,
        cancelled: bool = False,
        stopped: bool = False,
        unheard: bool = False,
    ) -> None:
        self.failures.append(status)

    def final_hint(self):
        return None

    def answered_late(self, target: Target, now: float) -> None: ...


def test_a_message_step_that_times_out_gets_no_cancel() -> None:
    net = Net()
    register(net, "alice", ALICE)
    plan = _OneStep(Target(f"sip:bob@127.0.0.1:{BOB1[2]}", Peer(*BOB1)))
    proxy = net.core.proxy
    proxy.route_request = lambda txn, dialog, now: proxy.execute_plan(txn, plan, now, False)  # type: ignore[method-assign]
    _, out = authed(net, "MESSAGE", f"sip:bob@{DOMAIN}")
    fwd = forwarded(out)[BOB1]
    net.send(answer(fwd, 180).serialize(), BOB1)  # a device that sends a provisional anyway
    out = net.advance(6.0)
    # no CANCEL for a MESSAGE (§9.1): only the MESSAGE's own retransmissions (Timer E)
    assert {m.method for m in only(out, Request)} <= {"MESSAGE"}
    assert plan.failures == [408]
    assert [m.status for m in only(out, Response)] == []  # and no 408 upstream (RFC 4320)


# ---- best response and challenges (RFC 3261 §16.7 steps 6 and 7) ------------------------


def _fork_to_two(net: Net) -> dict:
    register(net, "bob", BOB1)
    register(net, "bob", BOB2)
    register(net, "alice", ALICE)
    _, out = invite(net, "alice", "bob", ALICE)
    fwds = forwarded(out)
    assert set(fwds) == {BOB1, BOB2}
    return fwds


def _challenge(fwd: Request, status: int, nonce: str) -> bytes:
    resp = answer(fwd, status, tag=nonce)
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    resp.add(name, f'Digest realm="{nonce}.example.net", nonce="{nonce}", qop="auth"')
    return resp.serialize()


def test_challenges_of_all_branches_are_aggregated_each_once() -> None:
    net = Net()
    fwds = _fork_to_two(net)
    net.send(_challenge(fwds[BOB1], 407, "n1"), BOB1)
    out = net.send(_challenge(fwds[BOB2], 407, "n2"), BOB2)
    [final] = [m for m in only(out, Response) if m.status >= 200]
    assert final.status == 407
    nonces = sorted(parse_credentials(v)["nonce"] for v in final.get_all("proxy-authenticate"))  # type: ignore[index]
    assert nonces == ["n1", "n2"]


def test_a_challenge_beats_404() -> None:
    net = Net()
    fwds = _fork_to_two(net)
    net.send(answer(fwds[BOB1], 404).serialize(), BOB1)
    out = net.send(_challenge(fwds[BOB2], 401, "n2"), BOB2)
    [final] = [m for m in only(out, Response) if m.status >= 200]
    assert final.status == 401 and final.get("www-authenticate")


# ---- smaller ones ---------------------------------------------------------------------


def test_cancel_of_an_invite_answered_with_a_final_gets_200() -> None:
    net = Net()
    register(net, "alice", ALICE)
    inv, out = invite(net, "alice", "nobody", ALICE)
    assert [m.status for m in only(out, Response)] == [404]
    cancel = Request(
        "CANCEL",
        inv.uri,
        [list(h) for h in inv.headers if h[0] in ("via", "from", "to", "call-id", "max-forwards")],
    )
    cancel.add("CSeq", f"{inv.cseq[0]} CANCEL")
    out = net.send(cancel.serialize(), ALICE)
    assert [m.status for m in only(out, Response)] == [200]  # RFC 3261 §9.2


def test_cancel_of_a_message_gets_200_and_no_effect() -> None:
    """§9.2: whatever the method, a CANCEL that matches a transaction is answered 200; for a
    non-INVITE it has no effect (and no CANCEL goes on, §9.1)."""
    net = Net()
    register(net, "bob", BOB1)
    register(net, "alice", ALICE)
    msg, out = authed(net, "MESSAGE", f"sip:bob@{DOMAIN}")
    fwd = forwarded(out)[BOB1]
    cancel = Request(
        "CANCEL",
        msg.uri,
        [list(h) for h in msg.headers if h[0] in ("via", "from", "to", "call-id", "max-forwards")],
    )
    cancel.add("CSeq", f"{msg.cseq[0]} CANCEL")
    out = net.send(cancel.serialize(), ALICE)
    assert [(m.status, d) for m, d in out] == [(200, ALICE)]
    out = net.send(answer(fwd, 200).serialize(), BOB1)  # the MESSAGE goes on as before
    assert [(m.status, d) for m, d in out] == [(200, ALICE)]
    out = net.send(cancel.serialize(), ALICE)  # a CANCEL after the answer: the same
    assert [(m.status, d) for m, d in out] == [(200, ALICE)]


def test_received_is_added_whenever_rport_is() -> None:
    net = Net()
    r = req("OPTIONS", f"sip:{DOMAIN}", ALICE, "alice", f"sip:{DOMAIN}")  # Via names its source
    [(resp, dest)] = net.send(r.serialize(), ALICE)
    assert dest == ALICE
    via = resp.top_via
    assert via.params.get("received") == "127.0.0.1" and via.params.get("rport") == "40001"


def test_unknown_method_gets_501_and_allow_is_what_is_handled() -> None:
    net = Net()
    r = parse(
        req("OPTIONS", f"sip:{DOMAIN}", ALICE, "alice", f"sip:{DOMAIN}")
        .serialize()
        .replace(b"OPTIONS", b"FROBNICATE")
    )
    [(resp, _)] = net.send(r.serialize(), ALICE)
    assert resp.status == 501 and "REGISTER" in (resp.get("allow") or "")
    r = req("INVITE", f"sip:{DOMAIN}", ALICE, "alice", f"sip:{DOMAIN}")
    [(resp, _)] = net.send(r.serialize(), ALICE)
    assert resp.status == 405  # known, but not for the server itself
    [(resp, _)] = net.send(
        req("OPTIONS", f"sip:{DOMAIN}", ALICE, "a", "sip:x@y").serialize(), ALICE
    )
    assert "PUBLISH" not in (resp.get("allow") or "")  # no presence server: nobody takes it


def test_register_200_carries_date() -> None:
    net = Net()
    ok = register(net, "bob", BOB1)
    assert ok.status == 200
    parsed = email.utils.parsedate_to_datetime(ok.get("date") or "")
    assert parsed.timestamp() == int(net.now) and (ok.get("date") or "").endswith(" GMT")


def test_timer_c_is_longer_than_three_minutes() -> None:
    net = Net()
    register(net, "bob", BOB1)
    register(net, "alice", ALICE)
    _, out = invite(net, "alice", "bob", ALICE)
    [fwd] = forwarded(out).values()
    net.send(answer(fwd, 180).serialize(), BOB1)
    out = net.advance(180.5)
    assert [m.method for m in only(out, Request)] == []  # still ringing after 3 minutes
    out = net.advance(5.0)
    assert {m.method for m in only(out, Request)} == {"CANCEL"}  # (and its retransmissions)
    short = SipCore(
        CoreSettings(domain=DOMAIN, local={"udp": ("127.0.0.1", 5060)}, invite_timeout=60.0),
        net.core.users,
        net.core.location,
        net.core.auth,
    )
    assert short.timer_c > 180.0


def test_another_port_of_our_host_is_not_us() -> None:
    net = Net()
    register(net, "bob", BOB1)
    register(net, "alice", ALICE)
    for ruri in (f"sip:bob@{DOMAIN}:5070", "sip:bob@127.0.0.1:5070"):
        _, out = authed(net, "INVITE", ruri)
        assert forwarded(out) == {}, ruri
        assert [(m.status, m.reason) for m in only(out, Response)] == [(403, "Relaying denied")]
    _, out = authed(net, "INVITE", f"sip:bob@{DOMAIN}:5060")  # our port: ours
    assert list(forwarded(out)) == [BOB1]


def test_replayed_nonce_count_is_answered_stale() -> None:
    net = Net()
    r = req("REGISTER", f"sip:{DOMAIN}", BOB1, "bob", f"sip:bob@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), BOB1)
    a = authorize(r, challenge, "bob")
    [(ok, _)] = net.send(a.serialize(), BOB1)
    assert ok.status == 200
    again = authorize(r, challenge, "bob")  # the same nonce and nc=1, a new transaction
    [(resp, _)] = net.send(again.serialize(), BOB1)
    assert resp.status == 401
    assert all("stale=true" in v for v in resp.get_all("www-authenticate"))


def test_an_unreachable_destination_fails_its_branches_at_once() -> None:
    net = Net()
    register(net, "bob", BOB1)
    register(net, "bob", BOB2)
    register(net, "alice", ALICE)
    _, out = invite(net, "alice", "bob", ALICE)
    net.core.unreachable(BOB1, net.now)
    assert [m.status for m in only(net.drain(), Response)] == []  # BOB2 still rings
    net.core.unreachable(BOB2, net.now)
    # both count as 503 (§16.9); a 503 goes upstream as 500 (§16.7 step 6)
    assert [m.status for m in only(net.drain(), Response)] == [500]


# ---- protocol timers and clock steps ------------------------------------------------------


def test_protocol_timers_keep_their_durations_across_a_clock_step() -> None:
    for step in (3600.0, -3600.0):
        net = Net()
        register(net, "bob", BOB1)
        register(net, "alice", ALICE)
        invite(net, "alice", "bob", ALICE)  # bob's phone never answers: Timer B, 32 s
        net.advance(1.0)
        net.now += step  # NTP steps the wall clock; the network layer tells the core
        net.core.clock_stepped(step)
        out = net.advance(10.0)
        assert 408 not in [m.status for m in only(out, Response)], step  # not fired by a jump
        assert {m.method for m in only(out, Request)} == {"INVITE"}, step  # nor stalled
        out = net.advance(25.0)
        assert 408 in [m.status for m in only(out, Response)], step  # at 32 s, as promised


class _Endpoint:
    def __init__(self) -> None:
        self.steps: list[float] = []
        self.times: list[float] = []

    def receive(self, data: bytes, source: tuple[str, str, int], now: float) -> None:
        self.times.append(now)

    def outgoing(self) -> list:
        return []

    def next_deadline(self) -> None:
        return None

    def on_timer(self, now: float) -> None: ...

    def unreachable(self, dest: tuple[str, str, int], now: float) -> None: ...

    def clock_stepped(self, delta: float) -> None:
        self.steps.append(delta)


def test_the_network_layer_tells_a_clock_step_from_time_passing() -> None:
    from heimbuero.net.transport import TransportLimits, Transports

    wall, mono = [1_000_000.0], [50.0]
    endpoint = _Endpoint()
    t = Transports(endpoint, TransportLimits(), clock=lambda: wall[0], monotonic=lambda: mono[0])
    packet = b"OPTIONS sip:x SIP/2.0\r\n\r\n"
    wall[0] += 30.0
    mono[0] += 30.0  # time passes: no step
    t.on_datagram(packet, ("127.0.0.1", 5060))
    wall[0] -= 7200.0  # NTP steps back two hours
    mono[0] += 1.0
    t.on_datagram(packet, ("127.0.0.1", 5060))
    assert endpoint.steps == [-7201.0]  # the wall moved -7200 s while 1 s passed
    assert endpoint.times == [1_000_030.0, 1_000_030.0 - 7200.0]


def test_random_user_names_cost_no_database_read() -> None:
    from heimbuero.services.credentials import Account, UserDirectory

    reads: list[str] = []

    def fetch(name: str) -> Account | None:
        reads.append(name)  # a blocking database read on the event loop
        return Account(name, "agent", "0" * 32, "0" * 64) if name == "anna" else None

    users = UserDirectory(fetch, known=lambda: {"anna"}, miss_rate=20.0)
    for i in range(1000):  # a scanner guessing names within a second
        assert users.get(f"user{i}", 1.0 + i / 1000) is None
    assert users.get("Anna", 2.0) is not None
    assert len(reads) <= 2 * 20 + 1 and reads[-1] == "anna"  # not one read per name
    # A user added a moment ago (the directory not reloaded yet) is found at once.
    added = UserDirectory(lambda n: Account(n, "agent", "0" * 32, "0" * 64), known=lambda: ())
    assert added.get("bert", 5.0) is not None


# ---- large requests over UDP (RFC 3261 §18.1.1) -----------------------------------------


def test_a_large_request_takes_tcp_and_falls_back_to_udp_when_tcp_is_refused() -> None:
    net = Net()
    register(net, "bob", BOB1)  # reached at the address its Contact names
    register(net, "bob", BOB2, contact="sip:bob@192.168.1.20:5060")  # behind NAT
    register(net, "alice", ALICE)
    r = req("INVITE", f"sip:bob@{DOMAIN}", ALICE, "alice", f"sip:bob@{DOMAIN}")
    r.add("X-Padding", "p" * 1400)  # (an SDP offer with many codecs and ICE candidates)
    [(challenge, _)] = net.send(r.serialize(), ALICE)
    net.send(ack_for(r, challenge).serialize(), ALICE)
    out = net.send(authorize(r, challenge, "alice", "Proxy-Authorization").serialize(), ALICE)
    sent = forwarded(out)
    tcp1 = ("tcp", *BOB1[1:])
    assert set(sent) == {tcp1, BOB2}  # NAT: a new TCP connection could not reach it
    assert sent[tcp1].top_via.transport == "TCP" and sent[BOB2].top_via.transport == "UDP"
    net.core.unreachable(tcp1, net.now)  # connection refused: retry over UDP (§18.1.1)
    [(again, dest)] = [(m, d) for m, d in net.drain() if isinstance(m, Request)]
    assert dest == BOB1 and again.top_via.transport == "UDP"
    out = net.send(answer(again, 180).serialize(), BOB1)
    assert [m.status for m in only(out, Response)] == [180]


def test_register_with_an_rfc_2543_expires_date_counts_as_3600() -> None:
    net = Net()
    r = req("REGISTER", f"sip:{DOMAIN}", BOB1, "bob", f"sip:bob@{DOMAIN}")
    r.add("Expires", "Thu, 01 Dec 2040 16:00:00 GMT")  # RFC 4475's ancestor torture message
    [(challenge, _)] = net.send(r.serialize(), BOB1)
    [(ok, _)] = net.send(authorize(r, challenge, "bob").serialize(), BOB1)
    assert ok.status == 200, ok.reason  # RFC 3261 §20.19: a malformed Expires is 3600
    assert ok.get_all("contact") == ["<sip:bob@127.0.0.1:40002>;expires=3600"]


def test_expires_in_what_the_proxy_only_relays_is_not_its_business() -> None:
    """An INVITE's Expires and Contact expires, and a callee's 200's Expires, are read by the
    endpoints only: an RFC 2543 date in the Contact, two Expires headers or an absurd number
    neither draw a 400 nor get the callee's answer dropped (RFC 3261 §16.3)."""
    net = Net()
    register(net, "bob", BOB1)
    register(net, "alice", ALICE)
    r = req(
        "INVITE", f"sip:bob@{DOMAIN}", ALICE, "alice", f"sip:bob@{DOMAIN}",
        contact='sip:alice@127.0.0.1:40001>;expires="Thu, 01 Dec 2040 16:00:00 GMT";x=<sip:a@b',
        extra=["Expires: 99999999999", "Expires: Thu, 01 Dec 2040 16:00:00 GMT"],
    )  # fmt: skip
    [(challenge, _)] = net.send(r.serialize(), ALICE)
    assert challenge.status == 407, challenge.reason
    net.send(ack_for(r, challenge).serialize(), ALICE)
    out = net.send(authorize(r, challenge, "alice", "Proxy-Authorization").serialize(), ALICE)
    fwd = forwarded(out)[BOB1]
    ok = answer(fwd, 200, contact=f"sip:bob@127.0.0.1:{BOB1[2]}")
    ok.add("Expires", "99999999999")
    ok.add("Expires", "30")
    out = net.send(ok.serialize(), BOB1)
    assert [(m.status, d) for m, d in out if isinstance(m, Response)] == [(200, ALICE)]


def test_register_with_an_rfc_2543_contact_expires_date_counts_as_3600() -> None:
    net = Net()
    contact = 'sip:bob@127.0.0.1:40002>;expires="Thu, 01 Dec 2040 16:00:00 GMT";x=<sip:a@b'
    r = req("REGISTER", f"sip:{DOMAIN}", BOB1, "bob", f"sip:bob@{DOMAIN}", contact=contact)
    [(challenge, _)] = net.send(r.serialize(), BOB1)
    assert challenge.status == 401, challenge.reason
    [(ok, _)] = net.send(authorize(r, challenge, "bob").serialize(), BOB1)
    assert ok.status == 200, ok.reason
    assert ok.get_all("contact") == ["<sip:bob@127.0.0.1:40002>;expires=3600"]
