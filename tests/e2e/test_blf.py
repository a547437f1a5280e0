"""Busy-lamp field through the real `heimbuero serve`: a colleague's desk phone subscribes to
bob's dialog state (Event: dialog, RFC 4235) and sees the call ring (`early`, with who calls
and the early dialog's tags a phone needs to pick it up), get answered (`confirmed`) and end
(`terminated`); a caller who gives up while it rings ends the lamp's blinking as well."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import USERS
from .harness import (
    HAND_OFFER,
    Server,
    SipClient,
    SipMessage,
    hand_call,
    in_dialog,
    next_request,
    reply,
    wait_until,
)

pytestmark = [pytest.mark.e2e]

NS = "{urn:ietf:params:xml:ns:dialog-info}"
CAROL = ("carol", "Tannen-Zapfen-55")


def answer_notify(phone: SipClient, msg: SipMessage) -> None:
    lines = ["SIP/2.0 200 OK"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        lines += [f"{name}: {v}" for v in msg.header_values(name)]
    lines.append("Content-Length: 0")
    phone.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())


def next_dialogs(lamp: SipClient) -> list[ET.Element]:
    """The dialogs of the next dialog-info NOTIFY the lamp gets (answered 200)."""

    def one() -> SipMessage | None:
        msg = lamp.recv(0.2)
        if msg is None or msg.method != "NOTIFY":
            return None
        answer_notify(lamp, msg)
        return msg

    notify: SipMessage = wait_until(one, 5, interval=0.0, what="a dialog NOTIFY")
    assert notify.header("Content-Type") == "application/dialog-info+xml"
    return list(ET.fromstring(notify.body).iter(f"{NS}dialog"))


def states(dialogs: list[ET.Element]) -> dict[str, str]:
    return {d.get("call-id", ""): d.findtext(f"{NS}state", "") for d in dialogs}


def watch_bob(server: Server, lamp: SipClient) -> None:
    user, password = CAROL
    _, ok = lamp.authenticated_request(
        "SUBSCRIBE", f"sip:bob@{server.domain}", username=user, password=password,
        from_uri=f"sip:{user}@{server.domain}", to_uri=f"sip:bob@{server.domain}",
        headers=[("Contact", f"<sip:{user}@127.0.0.1:{lamp.local_port}>"),
                 ("Event", "dialog"), ("Expires", "600"),
                 ("Accept", "application/dialog-info+xml")],
    )  # fmt: skip
    assert ok.status == 200, ok.summary()
    assert states(next_dialogs(lamp)) == {}  # bob is idle


@pytest.fixture
def server(tmp_path: Path) -> Server:
    srv = Server(tmp_path / "server", users=USERS)
    srv.prepare()
    srv.add_user(*CAROL, role="agent")
    return srv


def test_the_lamp_blinks_with_the_caller_then_lights_then_goes_out(server: Server) -> None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        alice = stack.enter_context(SipClient(server.port))
        bob = stack.enter_context(SipClient(server.port))
        lamp = stack.enter_context(SipClient(server.port))
        watch_bob(server, lamp)
        inv, at_bob = hand_call(server, alice, bob, USERS)
        reply(bob, at_bob, "180 Ringing", f"Contact: <sip:bob@127.0.0.1:{bob.local_port}>\r\n")
        [ringing] = next_dialogs(lamp)
        assert ringing.findtext(f"{NS}state") == "early"
        assert ringing.get("call-id") == inv.call_id and ringing.get("direction") == "recipient"
        assert ringing.get("local-tag") == "bob1" and ringing.get("remote-tag") == inv.from_tag
        assert ringing.findtext(f"{NS}remote/{NS}identity") == f"sip:alice@{server.domain}"

        reply(bob, at_bob, "200 OK",
              f"Contact: <sip:bob@127.0.0.1:{bob.local_port}>\r\n"
              "Content-Type: application/sdp\r\n", HAND_OFFER)  # fmt: skip
        ok = alice.final_response(inv, 5)
        assert ok.status == 200, ok.summary()
        assert states(next_dialogs(lamp)) == {inv.call_id: "confirmed"}

        in_dialog(alice, "ACK", inv, ok, 2)
        sent = in_dialog(alice, "BYE", inv, ok, 3)
        reply(bob, next_request(bob, "BYE"), "200 OK")
        assert alice.final_response(sent, 5).status == 200
        assert states(next_dialogs(lamp)) == {inv.call_id: "terminated"}


def test_a_caller_who_gives_up_while_it_rings_ends_the_blinking(server: Server) -> None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        alice = stack.enter_context(SipClient(server.port))
        bob = stack.enter_context(SipClient(server.port))
        lamp = stack.enter_context(SipClient(server.port))
        watch_bob(server, lamp)
        inv, at_bob = hand_call(server, alice, bob, USERS)
        reply(bob, at_bob, "180 Ringing")
        assert states(next_dialogs(lamp)) == {inv.call_id: "early"}
        cancel = alice.build_request(
            "CANCEL", f"sip:bob@{server.domain}", from_uri=f"sip:alice@{server.domain}",
            to_uri=f"sip:bob@{server.domain}", call_id=inv.call_id, from_tag=inv.from_tag,
            cseq=2, branch=inv.branch,
        )  # fmt: skip
        alice.send(cancel)
        reply(bob, next_request(bob, "CANCEL"), "200 OK")
        reply(bob, at_bob, "487 Request Terminated")
        assert states(next_dialogs(lamp)) == {inv.call_id: "terminated"}
