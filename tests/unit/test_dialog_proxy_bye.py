"""The BYE a record-routing proxy sends to both ends of a call it ends itself (a lapsed session
timer, RFC 4028 §10), built from the INVITE and the 2xx it forwarded (heimbuero/sip/dialog.py)."""

from __future__ import annotations

import pytest

from heimbuero.sip.dialog import (
    DialogError,
    bye,
    proxied_request,
    proxied_response,
    proxy_dialogs,
)
from heimbuero.sip.message import Request, Response, parse

# Alice -> edge (ss1) -> us (ss2, two entries: UDP in, TCP out) -> ss3 -> Bob
INVITE_AT_US = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP ss1.example.net;branch=z9hG4bKedge\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKalice\r\n"
    "Record-Route: <sip:ss1.example.net;lr>\r\n"
    'From: "Alice" <sip:alice@example.com>;tag=a-tag\r\n'
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: call-1@192.0.2.10\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.10:5062>\r\n"
    "Content-Length: 0\r\n\r\n"
)
OK_AT_US = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP ss1.example.net;branch=z9hG4bKedge\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKalice\r\n"
    "Record-Route: <sip:ss3.example.org;lr>, <sip:ss2.example.com;transport=tcp;lr;hb=t>\r\n"
    "Record-Route: <sip:ss2.example.com;lr;hb=t>, <sip:ss1.example.net;lr>\r\n"
    'From: "Alice" <sip:alice@example.com>;tag=a-tag\r\n'
    "To: <sip:bob@example.com>;tag=b-tag\r\n"
    "Call-ID: call-1@192.0.2.10\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:bob@198.51.100.7:5070;transport=tcp>\r\n"
    "Content-Length: 0\r\n\r\n"
)
REASON = 'SIP;cause=408;text="Session timer expired"'


def ours(value: str) -> bool:
    return "ss2.example.com" in value


def msg(text: str) -> Request | Response:
    return parse(text.encode())  # type: ignore[return-value]


def ends() -> tuple[Request, Response]:
    inv, ok = msg(INVITE_AT_US), msg(OK_AT_US)
    assert isinstance(inv, Request) and isinstance(ok, Response)
    return inv, ok


def test_the_bye_to_the_callee_speaks_as_the_caller() -> None:
    inv, ok = ends()
    _, to_callee = proxy_dialogs(inv, ok, ours)
    req = bye(to_callee, REASON)
    assert req.method == "BYE"
    assert req.uri == "sip:bob@198.51.100.7:5070;transport=tcp"
    assert req.get_all("route") == ["<sip:ss3.example.org;lr>"]  # only the hops past us
    assert req.from_.tag == "a-tag" and req.to.tag == "b-tag"
    assert req.call_id == "call-1@192.0.2.10"
    assert req.cseq == (8, "BYE")  # above the caller's INVITE
    assert req.get("reason") == REASON
    assert to_callee.terminated


def test_the_bye_to_the_caller_speaks_as_the_callee() -> None:
    inv, ok = ends()
    to_caller, _ = proxy_dialogs(inv, ok, ours)
    req = bye(to_caller, REASON)
    assert req.uri == "sip:alice@192.0.2.10:5062"
    assert req.get_all("route") == ["<sip:ss1.example.net;lr>"]
    assert req.from_.tag == "b-tag" and req.to.tag == "a-tag"
    assert req.get("from") == "<sip:bob@example.com>;tag=b-tag"
    assert req.get("to") == '"Alice" <sip:alice@example.com>;tag=a-tag'
    assert req.cseq == (1, "BYE")  # the callee sent nothing inside the call yet
    assert req.get("reason") == REASON


def test_requests_seen_inside_the_call_raise_each_sides_cseq() -> None:
    inv, ok = ends()
    dialogs = proxy_dialogs(inv, ok, ours)
    to_caller, to_callee = dialogs
    reinvite_from_bob = msg(
        "INVITE sip:alice@192.0.2.10:5062 SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\n"
        "From: <sip:bob@example.com>;tag=b-tag\r\nTo: <sip:alice@example.com>;tag=a-tag\r\n"
        "Call-ID: call-1@192.0.2.10\r\nCSeq: 41 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    update_from_alice = msg(
        "UPDATE sip:bob@198.51.100.7 SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK2\r\n"
        "From: <sip:alice@example.com>;tag=a-tag\r\nTo: <sip:bob@example.com>;tag=b-tag\r\n"
        "Call-ID: call-1@192.0.2.10\r\nCSeq: 12 UPDATE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(reinvite_from_bob, Request) and isinstance(update_from_alice, Request)
    proxied_request(dialogs, reinvite_from_bob)
    proxied_request(dialogs, update_from_alice)
    proxied_request(dialogs, reinvite_from_bob)  # (a lower number never lowers it)
    assert bye(to_caller, REASON).cseq == (42, "BYE")
    assert bye(to_callee, REASON).cseq == (13, "BYE")


def test_a_call_without_our_record_route_gets_no_bye() -> None:
    inv, ok = ends()
    with pytest.raises(DialogError):
        proxy_dialogs(inv, ok, lambda value: False)


def test_a_2xx_without_a_to_tag_or_contact_makes_nothing_to_hang_up() -> None:
    inv, _ = ends()
    no_tag = msg(OK_AT_US.replace(";tag=b-tag", ""))
    no_contact = msg(OK_AT_US.replace("Contact: <sip:bob@198.51.100.7:5070;transport=tcp>\r\n", ""))
    for bad in (no_tag, no_contact):
        assert isinstance(bad, Response)
        with pytest.raises(DialogError):
            proxy_dialogs(inv, bad, ours)


def test_a_dialog_ended_once_sends_no_second_bye() -> None:
    inv, ok = ends()
    _, to_callee = proxy_dialogs(inv, ok, ours)
    bye(to_callee, REASON)
    with pytest.raises(DialogError):
        bye(to_callee, REASON)


def test_a_reinvite_and_its_2xx_move_each_sides_target() -> None:
    """§12.2: a re-INVITE's Contact is the sender's new target, its 2xx's the answerer's;
    the proxy's own BYE goes to where each phone is now."""
    inv, ok = ends()
    dialogs = proxy_dialogs(inv, ok, ours)
    to_caller, to_callee = dialogs
    reinvite = msg(
        "INVITE sip:bob@198.51.100.7:5070 SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK3\r\n"
        "From: <sip:alice@example.com>;tag=a-tag\r\nTo: <sip:bob@example.com>;tag=b-tag\r\n"
        "Call-ID: call-1@192.0.2.10\r\nCSeq: 8 INVITE\r\n"
        "Contact: <sip:alice@203.0.113.5:5099>\r\nContent-Length: 0\r\n\r\n"
    )
    answer = msg(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK3\r\n"
        "From: <sip:alice@example.com>;tag=a-tag\r\nTo: <sip:bob@example.com>;tag=b-tag\r\n"
        "Call-ID: call-1@192.0.2.10\r\nCSeq: 8 INVITE\r\n"
        "Contact: <sip:bob@198.51.100.99:5080>\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(reinvite, Request) and isinstance(answer, Response)
    proxied_request(dialogs, reinvite)
    proxied_response(dialogs, reinvite, answer)
    assert bye(to_caller, REASON).uri == "sip:alice@203.0.113.5:5099"
    assert bye(to_callee, REASON).uri == "sip:bob@198.51.100.99:5080"


def test_a_failed_refresh_or_a_bad_contact_keeps_the_target() -> None:
    inv, ok = ends()
    dialogs = proxy_dialogs(inv, ok, ours)
    to_caller, _ = dialogs
    update = msg(
        "UPDATE sip:alice@192.0.2.10:5062 SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK4\r\n"
        "From: <sip:bob@example.com>;tag=b-tag\r\nTo: <sip:alice@example.com>;tag=a-tag\r\n"
        "Call-ID: call-1@192.0.2.10\r\nCSeq: 2 UPDATE\r\n"
        "Contact: <tel:+4930123>\r\nContent-Length: 0\r\n\r\n"
    )
    rejected = msg(
        "SIP/2.0 488 Not Acceptable Here\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK4\r\n"
        "From: <sip:bob@example.com>;tag=b-tag\r\nTo: <sip:alice@example.com>;tag=a-tag\r\n"
        "Call-ID: call-1@192.0.2.10\r\nCSeq: 2 UPDATE\r\n"
        "Contact: <sip:alice@203.0.113.77>\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(update, Request) and isinstance(rejected, Response)
    proxied_request(dialogs, update)  # (no sip: URI: not a target)
    proxied_response(dialogs, update, rejected)  # (no 2xx: no refresh)
    assert bye(to_caller, REASON).uri == "sip:alice@192.0.2.10:5062"
