"""Calls that end without a BYE through the proxy: a session timer that lapses (RFC 4028) and
a request inside the call answered 481 (RFC 5057) end the call as a BYE would."""

from __future__ import annotations

import dataclasses

from test_core import ALICE, BOB1, Net, answer, invite, register

from heimbuero.events import CallEnded
from heimbuero.sip.message import Request, Response, parse_address


def established(net: Net, session_expires: str | None) -> tuple[Request, Response, list[str]]:
    """alice calls bob, bob answers (with `Session-Expires` when given); (INVITE at bob, the
    200 at alice, the Call-IDs that ended so far)."""
    ended: list[str] = []
    net.core.events.subscribe(CallEnded, lambda e: ended.append(e.call_id))
    register(net, "bob", BOB1)
    register(net, "alice", ALICE)
    _, out = invite(net, "alice", "bob", ALICE)
    [fwd] = [m for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    ok = answer(fwd, 200, tag="bob1", contact="sip:bob@127.0.0.1:40002")
    if session_expires is not None:
        ok.add("Session-Expires", session_expires)
    [resp] = [m for m, _ in net.send(ok.serialize(), BOB1) if isinstance(m, Response)]
    assert resp.status == 200
    return fwd, resp, ended


def in_dialog(method: str, invite: Request, ok: Response, cseq: int) -> Request:
    contact = parse_address(ok.get("contact") or "").uri
    return Request(
        method, str(contact),
        [["via", "Via", f"SIP/2.0/UDP 127.0.0.1:{ALICE[2]};branch=z9hG4bKin{cseq};rport"],
         ["route", "Route", ok.get("record-route") or ""],
         ["from", "From", invite.get("from") or ""], ["to", "To", ok.get("to") or ""],
         ["call-id", "Call-ID", invite.call_id], ["cseq", "CSeq", f"{cseq} {method}"],
         ["max-forwards", "Max-Forwards", "70"]],
    )  # fmt: skip


def test_a_session_timer_that_lapses_ends_the_call_and_a_refresh_keeps_it() -> None:
    net = Net()
    fwd, ok, ended = established(net, "90;refresher=uac")
    net.advance(60)
    # alice refreshes with UPDATE at 60 s; bob's 2xx restarts the 90 s
    out = net.send(in_dialog("UPDATE", fwd, ok, 10).serialize(), ALICE)
    [upd] = [m for m, _ in out if isinstance(m, Request) and m.method == "UPDATE"]
    refreshed = answer(upd, 200, tag="bob1")
    refreshed.add("Session-Expires", "90;refresher=uac")
    net.send(refreshed.serialize(), BOB1)
    net.advance(89)
    assert ended == []  # 149 s after the answer, 89 s after the refresh: still up
    net.advance(2)
    assert ended == [fwd.call_id]


def test_a_call_without_a_session_timer_is_not_timed() -> None:
    net = Net()
    fwd, ok, ended = established(net, None)
    net.advance(7200)
    assert ended == []


def test_a_request_in_the_call_answered_481_ends_it() -> None:
    net = Net()
    fwd, ok, ended = established(net, None)
    out = net.send(in_dialog("INVITE", fwd, ok, 10).serialize(), ALICE)
    [reinvite] = [m for m, _ in out if isinstance(m, Request) and m.method == "INVITE"]
    net.send(answer(reinvite, 481, tag="bob1").serialize(), BOB1)
    assert ended == [fwd.call_id]


def test_the_proxy_asks_for_a_session_timer_only_when_configured_and_absent() -> None:
    net = Net()
    register(net, "bob", BOB1)
    _, out = invite(net, "alice", "bob", ALICE)
    [fwd] = [m for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    assert fwd.get("session-expires") is None  # session_expires = 0: nothing added
    net = Net()
    net.core.settings = dataclasses.replace(net.core.settings, session_expires=1800)
    register(net, "bob", BOB1)
    _, out = invite(net, "alice", "bob", ALICE)
    [fwd] = [m for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    assert fwd.get("session-expires") == "1800"


def byes(out: list[tuple[Request | Response, tuple[str, str, int]]]) -> dict[str, Request]:
    """The BYEs sent, by the port they went to."""
    return {f"{d[1]}:{d[2]}": m for m, d in out if isinstance(m, Request) and m.method == "BYE"}


def test_a_lapsed_session_timer_sends_a_bye_to_both_ends() -> None:
    net = Net()
    fwd, ok, ended = established(net, "90;refresher=uas")
    # nobody refreshes; alice re-INVITEd once (CSeq 10), bob answered
    out = net.send(in_dialog("INVITE", fwd, ok, 10).serialize(), ALICE)
    [reinvite] = [m for m, _ in out if isinstance(m, Request) and m.method == "INVITE"]
    net.send(answer(reinvite, 200, tag="bob1").serialize(), BOB1)
    sent = byes(net.advance(91))
    assert ended == [fwd.call_id]
    to_alice, to_bob = sent[f"127.0.0.1:{ALICE[2]}"], sent[f"127.0.0.1:{BOB1[2]}"]
    for bye in (to_alice, to_bob):
        assert bye.get("reason") == 'SIP;cause=408;text="Session timer expired"'
        assert bye.call_id == fwd.call_id
    assert (to_bob.from_.tag, to_bob.to.tag) == (fwd.from_.tag, "bob1")
    assert to_bob.cseq == (11, "BYE")  # above alice's re-INVITE
    assert to_bob.uri == "sip:bob@127.0.0.1:40002"
    assert (to_alice.from_.tag, to_alice.to.tag) == ("bob1", fwd.from_.tag)
    assert to_alice.cseq == (1, "BYE")  # bob sent nothing inside the call
    assert not to_alice.get_all("route") and not to_bob.get_all("route")  # (no other proxy)
    later = [m for m, _ in net.advance(3600) if isinstance(m, Request) and m.method == "BYE"]
    first = {to_alice.top_via.branch, to_bob.top_via.branch}
    assert {m.top_via.branch for m in later} <= first  # retransmissions only: one BYE each


def test_a_call_hung_up_by_its_phones_gets_no_bye_from_the_server() -> None:
    net = Net()
    fwd, ok, ended = established(net, "90;refresher=uas")
    out = net.send(in_dialog("BYE", fwd, ok, 10).serialize(), ALICE)
    [at_bob] = [m for m, _ in out if isinstance(m, Request) and m.method == "BYE"]
    net.send(answer(at_bob, 200, tag="bob1").serialize(), BOB1)
    assert ended == [fwd.call_id]
    assert byes(net.advance(3600)) == {}
    assert net.core.proxy.liveness.calls == {}


def test_who_may_replace_an_answered_call() -> None:
    net = Net()
    fwd, ok, ended = established(net, None)
    liveness = net.core.proxy.liveness
    named = (fwd.call_id, "bob1", fwd.from_.tag or "")
    assert liveness.party_of(named, ALICE) is True  # from one of its ends
    assert liveness.party_of(named, BOB1) is True
    assert liveness.party_of(named, ("udp", "127.0.0.1", 40999)) is False  # a third party
    assert liveness.party_of((fwd.call_id, "bob1", "forged"), ALICE) is None  # not its tags
    assert liveness.party_of(("other-call", "bob1", fwd.from_.tag or ""), ALICE) is None


def test_a_bye_with_a_forged_tag_leaves_the_call() -> None:
    """A BYE with the call's route token and Call-ID but only one of its tags ends nothing
    here: it goes on to the phone, whose own dialog matching refuses it (§12.2.2)."""
    net = Net()
    fwd, ok, ended = established(net, None)
    forged = in_dialog("BYE", fwd, ok, 20)
    forged.set("To", (ok.get("to") or "").replace("tag=bob1", "tag=guessed"))
    out = net.send(forged.serialize(), ALICE)
    sent = [m for m, _ in out if isinstance(m, Request) and m.method == "BYE"]
    assert [m.to.tag for m in sent] == ["guessed"]  # for the phone to judge
    assert ended == []
    assert fwd.call_id in net.core.proxy.liveness.calls  # still tracked: its timer goes on
    real = in_dialog("BYE", fwd, ok, 21)
    out = net.send(real.serialize(), ALICE)
    assert [m for m, _ in out if isinstance(m, Request) and m.method == "BYE"]
    assert ended == [fwd.call_id]
