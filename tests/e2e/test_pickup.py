"""Call pickup (`*8`) through the real `heimbuero serve`: a call rings at an agent's phone, a
colleague dials `*8` and talks to the caller; the phone that rang stops ringing. Who may pick
up (office/pickup.py): the provider's staff, for one another; nothing else."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from .conftest import USERS
from .harness import (
    HAND_OFFER,
    Baresip,
    HarnessError,
    SentRequest,
    Server,
    SipClient,
    SipMessage,
    free_port,
    in_dialog,
    next_request,
    reply,
    wait_until,
)

pytestmark = [pytest.mark.e2e]

CAROL = ("carol", "Tannen-Zapfen-55")


def dial(phone: SipClient, server: Server, user: str, password: str, code: str) -> SipMessage:
    """`code` dialled from a hand-driven phone of `user` (digest auth): the final answer."""
    ruri = f"sip:{code.replace('#', '%23')}@{server.domain}"
    _, final = phone.authenticated_request(
        "INVITE", ruri, username=user, password=password,
        from_uri=f"sip:{user}@{server.domain}", to_uri=ruri,
        headers=[("Contact", f"<sip:{user}@127.0.0.1:{phone.local_port}>")],
    )  # fmt: skip
    return final


@pytest.fixture
def server(tmp_path: Path) -> Server:
    srv = Server(tmp_path / "server", users=USERS)
    srv.prepare()
    srv.add_user(*CAROL, role="agent")
    return srv


@pytest.mark.peers("baresip")
def test_carol_dials_star8_and_talks_to_the_caller_while_bob_stops_ringing(
    server: Server, tmp_path: Path
) -> None:
    """alice calls bob (who does not answer); carol's phone dials *8: the server answers the
    code (480 "Picked up") and puts alice's call through to carol's phone, which answers it;
    alice and carol are in the call, bob's phone stops ringing."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        alice = stack.enter_context(
            Baresip(tmp_path, user="alice", password=USERS["alice"], server=server)
        )
        bob = stack.enter_context(
            Baresip(tmp_path, user="bob", password=USERS["bob"], server=server)
        )
        carol = stack.enter_context(
            Baresip(tmp_path, user="carol", password=CAROL[1], server=server, answermode="auto")
        )
        for phone in (alice, bob, carol):
            phone.wait_registered()
        alice.command("dial", f"sip:bob@{server.domain}")
        bob.wait_for_event("CALL_INCOMING", timeout=15)
        alice.wait_for_event("CALL_RINGING", timeout=15)

        carol.command("dial", f"sip:*8@{server.domain}")
        closed = carol.wait_for_event("CALL_CLOSED", timeout=15)
        assert "Picked up" in str(closed.get("param", "")), closed
        at_carol = carol.wait_for_event("CALL_ESTABLISHED", timeout=15)
        at_alice = alice.wait_for_event("CALL_ESTABLISHED", timeout=15)
        stopped = bob.wait_for_event("CALL_CLOSED", timeout=15)
        # one call (one Call-ID): alice's, now between alice and carol; bob's ringing ended
        assert at_carol["peeruri"] == alice.aor, at_carol
        assert at_carol["id"] == at_alice["id"] == stopped["id"], (at_carol, at_alice, stopped)
        assert not any(e.get("type") == "CALL_ESTABLISHED" for e in bob.events), bob.events
        log = server.log_text()
        assert "carol picks up the call ringing at bob" in log, log

        alice.command("hangup")
        alice.wait_for_event("CALL_CLOSED", timeout=15)
        carol.wait_for_event("CALL_CLOSED", timeout=15)


# --------------------------------------------------------------------------------------------
# a client's call, by hand-driven phones: what goes on the wire, the call record, refusals

NUMBER = "+49891234567"  # the demo client's number
CLIENT = "mueller"
CALLER = "+4915112345678"


def anna_only_rules() -> dict[str, object]:
    """The demo client's number rings anna's phone alone, for a long while."""
    return {"client": CLIENT, "numbers": {NUMBER: {"rules": [
        {"name": "Immer", "steps": [{"targets": ["user:anna"], "timeout": 30}]},
    ]}}}  # fmt: skip


def register(phone: SipClient, server: Server, user: str) -> None:
    aor = f"sip:{user}@{server.domain}"
    _, reg = phone.authenticated_request(
        "REGISTER", f"sip:{server.domain}", username=user, password=server.users[user],
        from_uri=aor, to_uri=aor,
        headers=[("Contact", f"<sip:{user}@127.0.0.1:{phone.local_port}>"), ("Expires", "300")],
    )  # fmt: skip
    assert reg.status == 200, reg.summary()


@pytest.fixture
def office(tmp_path: Path) -> Server:
    inbound = free_port()
    srv = Server(tmp_path / "server", domain="office.heimbuero.test", demo=True,
                 sip_options={"trusted_peers": [f"127.0.0.1:{inbound}"]})  # fmt: skip
    srv.prepare()
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(anna_only_rules()), encoding="utf-8")
    srv.cli("rules", "import", CLIENT, str(path), "--data", str(srv.data_dir))
    srv.inbound_port = inbound  # type: ignore[attr-defined]
    return srv


def carrier_invite(carrier: SipClient, server: Server) -> SentRequest:
    ruri = f"sip:{NUMBER}@{server.domain}"
    return carrier.request(
        "INVITE", ruri, from_uri=f"sip:{CALLER}@127.0.0.1:{carrier.local_port}", to_uri=ruri,
        body=HAND_OFFER, content_type="application/sdp",
        headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{carrier.local_port}>"),
                 ("Call-Info", "<http://evil.example>;answer-after=0")],
    )  # fmt: skip


def records(server: Server) -> str:
    res = server.cli("calls", "list", "--client", CLIENT, "--data", str(server.data_dir))
    return res.stdout


def test_ben_picks_up_a_client_call_ringing_at_anna_and_the_record_says_ben(
    office: Server,
) -> None:
    """The carrier calls the client's number, anna's phone rings. Nothing else rang before:
    a *8 then got 404. The client's owner may not pick it up (403), nor ben from a phone that
    is not registered (480: the call would go nowhere). ben's *8 gets 480
    "Picked up" and the caller's INVITE comes to ben's phone marked to be answered at once
    (the caller's own Call-Info is not passed on); ben answers, the caller gets ben's 200,
    anna's phone gets a CANCEL "Call completed elsewhere"; a second *8 finds nothing; the
    call record says user:ben answered."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(office)
        anna = stack.enter_context(SipClient(office.port))
        ben = stack.enter_context(SipClient(office.port))
        owner = stack.enter_context(SipClient(office.port))
        elsewhere = stack.enter_context(SipClient(office.port))
        carrier = stack.enter_context(
            SipClient(office.port, local_port=office.inbound_port)  # type: ignore[attr-defined]
        )
        for phone, user in ((anna, "anna"), (ben, "ben"), (owner, "mueller")):
            register(phone, office, user)
        users = office.users

        idle = dial(ben, office, "ben", users["ben"], "*8")
        assert (idle.status, idle.reason) == (404, "No call to pick up"), idle.summary()

        inv = carrier_invite(carrier, office)
        at_anna = next_request(anna, "INVITE")
        reply(anna, at_anna, "180 Ringing", f"Contact: <sip:anna@127.0.0.1:{anna.local_port}>\r\n")

        refused = dial(owner, office, "mueller", users["mueller"], "*8")
        assert refused.status == 403, refused.summary()
        assert refused.reason == "Call pickup is for the provider's agents", refused.summary()

        # ben's password from a phone that is not registered: the call would go nowhere
        unregistered = dial(elsewhere, office, "ben", users["ben"], "*8")
        assert unregistered.status == 480, unregistered.summary()
        assert unregistered.reason == "The phone that dialled is not registered"

        picked = dial(ben, office, "ben", users["ben"], "*8")
        assert (picked.status, picked.reason) == (480, "Picked up"), picked.summary()
        at_ben = next_request(ben, "INVITE")
        assert at_ben.header("Call-ID") == inv.call_id, at_ben.raw
        assert not [m for m in elsewhere.received if m.method == "INVITE"], elsewhere.received
        auto = f"<sip:{office.domain}>;answer-after=0"
        assert at_ben.header_values("Call-Info") == [auto], at_ben.raw
        assert at_ben.header("Answer-Mode") == "Auto", at_ben.raw
        assert at_ben.body == HAND_OFFER, at_ben.raw  # the caller's offer, unchanged
        reply(ben, at_ben, "200 OK",
              f"Contact: <sip:ben@127.0.0.1:{ben.local_port}>\r\n"
              "Content-Type: application/sdp\r\n", HAND_OFFER)  # fmt: skip

        ok = carrier.final_response(inv, 5)
        assert ok.status == 200, ok.summary()
        assert f"ben@127.0.0.1:{ben.local_port}" in (ok.header("Contact") or ""), ok.raw
        cancel = next_request(anna, "CANCEL")
        assert 'text="Call completed elsewhere"' in (cancel.header("Reason") or ""), cancel.raw
        reply(anna, cancel, "200 OK")
        reply(anna, at_anna, "487 Request Terminated")

        again = dial(ben, office, "ben", users["ben"], "*8")
        assert again.status == 404, again.summary()

        in_dialog(carrier, "ACK", inv, ok, inv.cseq)
        bye = in_dialog(carrier, "BYE", inv, ok, inv.cseq + 1)
        reply(ben, next_request(ben, "BYE"), "200 OK")
        assert carrier.final_response(bye, 5).status == 200

        def answered() -> str | None:
            text = records(office)
            return text if "user:ben" in text and "in progress" not in text else None

        text = wait_until(answered, 10, interval=0.3, what="the call record of ben's pickup")
        assert "user:anna" not in text, text


def answer(phone: SipClient, invite: SipMessage, tag: str, user: str) -> None:
    """200 with an SDP answer, To tagged `tag` (a phone's own tag, as in its 180)."""
    via = "".join(f"Via: {v}\r\n" for v in invite.header_values("Via"))
    rr = "".join(f"Record-Route: {v}\r\n" for v in invite.header_values("Record-Route"))
    to = invite.header("To") or ""
    head = (
        f"SIP/2.0 200 OK\r\n{via}{rr}From: {invite.header('From')}\r\nTo: {to};tag={tag}\r\n"
        f"Call-ID: {invite.header('Call-ID')}\r\nCSeq: {invite.header('CSeq')}\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{phone.local_port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(HAND_OFFER)}\r\n\r\n"
    )
    phone.send_raw(head.encode() + HAND_OFFER)


@pytest.mark.parametrize("first", ["anna", "ben"])
def test_anna_and_the_picker_answer_in_the_same_moment_one_leg_stays(
    office: Server, first: str
) -> None:
    """anna's phone and ben's pickup answer back to back (in both orders): the caller gets
    the first 200 only; the server ACKs the other phone's 200 and hangs it up with BYE
    "Call completed elsewhere"; the record names the first."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(office)
        anna = stack.enter_context(SipClient(office.port))
        ben = stack.enter_context(SipClient(office.port))
        carrier = stack.enter_context(
            SipClient(office.port, local_port=office.inbound_port)  # type: ignore[attr-defined]
        )
        register(anna, office, "anna")
        register(ben, office, "ben")
        inv = carrier_invite(carrier, office)
        at_anna = next_request(anna, "INVITE")
        reply(anna, at_anna, "180 Ringing", f"Contact: <sip:anna@127.0.0.1:{anna.local_port}>\r\n")
        picked = dial(ben, office, "ben", office.users["ben"], "*8")
        assert picked.status == 480, picked.summary()
        at_ben = next_request(ben, "INVITE")

        phones = {"anna": (anna, at_anna, "bob1"), "ben": (ben, at_ben, "ben1")}
        second = "ben" if first == "anna" else "anna"
        for name in (first, second):
            phone, invite, tag = phones[name]
            answer(phone, invite, tag, name)

        ok = carrier.final_response(inv, 5)
        assert ok.status == 200 and ok.to_tag() == phones[first][2], ok.summary()
        late, _, late_tag = phones[second]
        ack = next_request(late, "ACK")
        assert f"tag={late_tag}" in (ack.header("To") or ""), ack.raw
        bye = next_request(late, "BYE")
        assert 'text="Call completed elsewhere"' in (bye.header("Reason") or ""), bye.raw
        assert bye.header("Call-ID") == inv.call_id, bye.raw
        reply(late, bye, "200 OK")
        if second == "anna":  # (the CANCEL that crossed anna's 200)
            with contextlib.suppress(HarnessError):
                reply(anna, next_request(anna, "CANCEL", timeout=1), "200 OK")

        # the caller never gets a second answered leg: every 200 it got has the first's tag
        in_dialog(carrier, "ACK", inv, ok, inv.cseq)
        bye_out = in_dialog(carrier, "BYE", inv, ok, inv.cseq + 1)
        winner, _, _ = phones[first]
        reply(winner, next_request(winner, "BYE"), "200 OK")
        assert carrier.final_response(bye_out, 5).status == 200
        answers = [
            m for m in carrier.received
            if m.is_response and m.status == 200 and (m.cseq or (0, ""))[1] == "INVITE"
        ]  # fmt: skip
        assert {m.to_tag() for m in answers} == {phones[first][2]}, [m.summary() for m in answers]

        def answered() -> str | None:
            text = records(office)
            return text if f"user:{first}" in text and "in progress" not in text else None

        text = wait_until(answered, 10, interval=0.3, what=f"the record of {first}'s answer")
        assert f"user:{second}" not in text, text


def test_a_picker_whose_phone_refuses_leaves_the_call_ringing_for_the_next(office: Server) -> None:
    """ben picks up but his phone answers the call 486: the call still rings at anna, and a
    second *8 puts it through to ben again."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(office)
        anna = stack.enter_context(SipClient(office.port))
        ben = stack.enter_context(SipClient(office.port))
        carrier = stack.enter_context(
            SipClient(office.port, local_port=office.inbound_port)  # type: ignore[attr-defined]
        )
        register(anna, office, "anna")
        register(ben, office, "ben")
        inv = carrier_invite(carrier, office)
        at_anna = next_request(anna, "INVITE")
        reply(anna, at_anna, "180 Ringing", f"Contact: <sip:anna@127.0.0.1:{anna.local_port}>\r\n")

        assert dial(ben, office, "ben", office.users["ben"], "*8").status == 480
        refused = next_request(ben, "INVITE")
        reply(ben, refused, "486 Busy Here")
        assert next_request(ben, "ACK").header("Call-ID") == inv.call_id

        assert dial(ben, office, "ben", office.users["ben"], "*8").reason == "Picked up"
        again = next_request(ben, "INVITE")
        assert again.header("Call-ID") == inv.call_id, again.raw
        answer(ben, again, "ben2", "ben")
        ok = carrier.final_response(inv, 5)
        assert ok.status == 200 and ok.to_tag() == "ben2", ok.summary()
        reply(anna, next_request(anna, "CANCEL"), "200 OK")
        reply(anna, at_anna, "487 Request Terminated")
        in_dialog(carrier, "ACK", inv, ok, inv.cseq)


def pick_by_replaces(
    phone: SipClient, server: Server, user: str, call_id: str, to_tag: str, from_tag: str
) -> SipMessage:
    """A desk phone's busy-lamp pickup: an INVITE to the ringing colleague replacing the early
    dialog whose tags dialog-info gave it (RFC 3891, `early-only`)."""
    ruri = f"sip:anna@{server.domain}"
    _, final = phone.authenticated_request(
        "INVITE", ruri, username=user, password=server.users[user],
        from_uri=f"sip:{user}@{server.domain}", to_uri=ruri,
        headers=[("Contact", f"<sip:{user}@127.0.0.1:{phone.local_port}>"),
                 ("Replaces", f"{call_id};to-tag={to_tag};from-tag={from_tag};early-only")],
    )  # fmt: skip
    return final


def test_a_busy_lamp_pickup_with_replaces_is_served_like_star8(office: Server) -> None:
    """ben's phone picks up anna's ringing call the way desk phones do from a busy-lamp key:
    an INVITE with Replaces naming the early dialog. The client's owner doing the same is
    refused (403); ben's gets 480 "Picked up" and the call comes to his phone as with *8."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(office)
        anna = stack.enter_context(SipClient(office.port))
        ben = stack.enter_context(SipClient(office.port))
        owner = stack.enter_context(SipClient(office.port))
        carrier = stack.enter_context(
            SipClient(office.port, local_port=office.inbound_port)  # type: ignore[attr-defined]
        )
        for phone, user in ((anna, "anna"), (ben, "ben"), (owner, "mueller")):
            register(phone, office, user)
        inv = carrier_invite(carrier, office)
        at_anna = next_request(anna, "INVITE")
        reply(anna, at_anna, "180 Ringing", f"Contact: <sip:anna@127.0.0.1:{anna.local_port}>\r\n")

        refused = pick_by_replaces(owner, office, "mueller", inv.call_id, "bob1", inv.from_tag)
        assert refused.status == 403, refused.summary()
        assert refused.reason == "Not allowed to pick up this call", refused.summary()

        picked = pick_by_replaces(ben, office, "ben", inv.call_id, "bob1", inv.from_tag)
        assert (picked.status, picked.reason) == (480, "Picked up"), picked.summary()
        at_ben = next_request(ben, "INVITE")
        assert at_ben.header("Call-ID") == inv.call_id, at_ben.raw
        assert at_ben.header("Answer-Mode") == "Auto", at_ben.raw
        answer(ben, at_ben, "ben1", "ben")
        ok = carrier.final_response(inv, 5)
        assert ok.status == 200 and ok.to_tag() == "ben1", ok.summary()
        reply(anna, next_request(anna, "CANCEL"), "200 OK")
        reply(anna, at_anna, "487 Request Terminated")
        in_dialog(carrier, "ACK", inv, ok, inv.cseq)
