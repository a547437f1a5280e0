"""The dialog layer (heimbuero/sip/dialog.py) against RFC 3261 §12 and the call flow of §24.2."""

from __future__ import annotations

import pytest

from heimbuero.sip.dialog import Dialog, DialogError, DialogId, DialogState
from heimbuero.sip.message import Request, Response, parse

# RFC 3261 §24.2: Alice calls Bob through ss1.atlanta and ss2.biloxi, both record-routing.
INVITE_AT_BOB = (
    "INVITE sip:bob@client.biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP ss2.biloxi.example.com:5060;branch=z9hG4bK721e4.1\r\n"
    "Via: SIP/2.0/TCP ss1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1\r\n"
    "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n"
    "Max-Forwards: 68\r\n"
    "Record-Route: <sip:ss2.biloxi.example.com;lr>, <sip:ss1.atlanta.example.com;lr>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    "CSeq: 2 INVITE\r\n"
    "Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n"
    "Content-Length: 0\r\n\r\n"
)
INVITE_FROM_ALICE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n"
    "Max-Forwards: 70\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    "CSeq: 2 INVITE\r\n"
    "Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def ok_at_alice(status: int = 200, reason: str = "OK", contact: bool = True) -> Response:
    text = (
        f"SIP/2.0 {status} {reason}\r\n"
        "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9"
        ";received=192.0.2.101\r\n"
        "Record-Route: <sip:ss2.biloxi.example.com;lr>\r\n"
        "Record-Route: <sip:ss1.atlanta.example.com;lr>\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
        "To: Bob <sip:bob@biloxi.example.com>;tag=314159\r\n"
        "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
        "CSeq: 2 INVITE\r\n"
        + ("Contact: <sip:bob@client.biloxi.example.com;transport=tcp>\r\n" if contact else "")
        + "Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    assert isinstance(msg, Response)
    return msg


def request(text: str) -> Request:
    msg = parse(text.encode())
    assert isinstance(msg, Request)
    return msg


def test_uac_dialog_of_rfc3261_24_2_and_its_ack_and_bye() -> None:
    d = Dialog.as_uac(request(INVITE_FROM_ALICE), ok_at_alice())
    assert d.id == DialogId("3848276298220188511@atlanta.example.com", "9fxced76sl", "314159")
    assert d.state is DialogState.CONFIRMED
    # §12.1.2: the route set is the response's Record-Route in reverse order
    assert d.route_set == ("<sip:ss1.atlanta.example.com;lr>", "<sip:ss2.biloxi.example.com;lr>")
    assert d.remote_target == "sip:bob@client.biloxi.example.com;transport=tcp"
    assert (d.local_seq, d.remote_seq) == (2, None)
    # F12: the ACK repeats the INVITE's CSeq number, loose routing keeps the remote target
    ack = d.create_request("ACK", cseq=2)
    assert ack.uri == "sip:bob@client.biloxi.example.com;transport=tcp"
    assert ack.get_all("route") == list(d.route_set)
    assert ack.get("from") == "Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl"
    assert ack.get("to") == "Bob <sip:bob@biloxi.example.com>;tag=314159"
    assert ack.get("cseq") == "2 ACK"
    assert d.local_seq == 2
    bye = d.create_request("BYE")
    assert bye.get("cseq") == "3 BYE" and d.local_seq == 3
    assert str(d.next_hop()) == "sip:ss1.atlanta.example.com;lr"
    d.receive_response("BYE", Response(200, "OK"))
    assert d.terminated
    with pytest.raises(DialogError):
        d.create_request("INFO")


def test_uas_dialog_of_rfc3261_24_2_and_bobs_bye() -> None:
    invite = request(INVITE_AT_BOB)
    d = Dialog.as_uas(invite, "314159")
    assert d.id == DialogId("3848276298220188511@atlanta.example.com", "314159", "9fxced76sl")
    # §12.1.1: the request's Record-Route in order
    assert d.route_set == ("<sip:ss2.biloxi.example.com;lr>", "<sip:ss1.atlanta.example.com;lr>")
    assert (d.local_seq, d.remote_seq) == (None, 2)
    # F13: BYE from Bob (his local CSeq was empty: it starts anew)
    bye = d.create_request("BYE")
    assert bye.uri == "sip:alice@client.atlanta.example.com;transport=tcp"
    assert bye.get_all("route") == [
        "<sip:ss2.biloxi.example.com;lr>",
        "<sip:ss1.atlanta.example.com;lr>",
    ]
    assert bye.get("from") == "Bob <sip:bob@biloxi.example.com>;tag=314159"
    assert bye.get("to") == "Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl"
    assert bye.get("call-id") == "3848276298220188511@atlanta.example.com"
    assert bye.get("cseq") == "1 BYE"
    assert bye.get("max-forwards") == "70"
    assert bye.get("via") is None  # the caller adds its own


def test_strict_routing_example_of_12_2_1_1() -> None:
    d = Dialog(
        call_id="c", local_tag="a", remote_tag="b", local="<sip:me@here>;tag=a",
        remote="<sip:user@remoteua>;tag=b", remote_target="sip:user@remoteua",
        route_set=("<sip:proxy1>", "<sip:proxy2>", "<sip:proxy3;lr>", "<sip:proxy4>"),
        local_seq=1, remote_seq=None, state=DialogState.CONFIRMED,
    )  # fmt: skip
    req = d.create_request("INFO")
    assert req.uri == "sip:proxy1"
    assert req.get_all("route") == [
        "<sip:proxy2>", "<sip:proxy3;lr>", "<sip:proxy4>", "<sip:user@remoteua>",
    ]  # fmt: skip
    assert str(d.next_hop()) == "sip:proxy1"


def test_strict_router_uri_loses_the_parameters_a_request_uri_may_not_hold() -> None:
    d = Dialog("c", "a", "b", "<sip:me@here>;tag=a", "<sip:u@ua>;tag=b", "sip:u@ua",
               ("<sip:proxy1;method=INVITE;transport=tcp?subject=x>",), 1, None)  # fmt: skip
    req = d.create_request("BYE")
    assert req.uri == "sip:proxy1;transport=tcp"
    assert req.get_all("route") == ["<sip:u@ua>"]


def test_loose_routing_example_of_12_2_1_1_and_no_route_set() -> None:
    d = Dialog("c", "a", "b", "<sip:me@here>;tag=a", "<sip:user@remoteua>;tag=b",
               "sip:user@remoteua", ("<sip:proxy1;lr>", "<sip:proxy2;lr>"), 1, None)  # fmt: skip
    req = d.create_request("NOTIFY", contact="sip:me@192.0.2.1:5060", body=b"x",
                           headers=[("Event", "presence")])  # fmt: skip
    assert req.uri == "sip:user@remoteua"
    assert req.get_all("route") == ["<sip:proxy1;lr>", "<sip:proxy2;lr>"]
    assert req.get("contact") == "<sip:me@192.0.2.1:5060>"
    assert req.get("event") == "presence" and req.body == b"x"
    d.route_set = ()
    req = d.create_request("NOTIFY")
    assert req.uri == "sip:user@remoteua" and req.get("route") is None
    assert req.get("cseq") == "3 NOTIFY"
    assert str(d.next_hop()) == "sip:user@remoteua"


def test_remote_cseq_order_and_target_refresh_12_2_2() -> None:
    d = Dialog.as_uas(request(INVITE_AT_BOB), "314159")
    reinvite = request(
        INVITE_AT_BOB.replace("CSeq: 2 INVITE", "CSeq: 3 INVITE")
        .replace("biloxi.example.com>\r\nCall", "biloxi.example.com>;tag=314159\r\nCall")
        .replace("client.atlanta.example.com;transport=tcp>", "192.0.2.7:5070>")
    )  # fmt: skip
    assert d.receive_request(reinvite) is None
    assert d.remote_seq == 3 and d.remote_target == "sip:alice@192.0.2.7:5070"
    assert d.receive_request(reinvite) == 500  # the same (or a lower) CSeq: out of order
    info = request(INVITE_AT_BOB.replace("INVITE", "INFO").replace("CSeq: 2", "CSeq: 4")
                   .replace("192.0.2.7", "x"))  # fmt: skip
    assert d.receive_request(info) is None
    assert d.remote_target == "sip:alice@192.0.2.7:5070"  # INFO refreshes no target
    bye = request(INVITE_AT_BOB.replace("INVITE", "BYE").replace("CSeq: 2", "CSeq: 5"))
    assert d.receive_request(bye) is None and d.terminated
    assert d.receive_request(bye) == 481


def test_early_dialog_is_confirmed_by_the_2xx_which_fixes_the_route_set() -> None:
    invite = request(INVITE_FROM_ALICE)
    ringing = ok_at_alice(180, "Ringing")
    ringing.remove("record-route")
    d = Dialog.as_uac(invite, ringing)
    assert d.state is DialogState.EARLY and d.route_set == ()
    d.receive_response("INVITE", ok_at_alice())
    assert d.confirmed
    assert d.route_set == ("<sip:ss1.atlanta.example.com;lr>", "<sip:ss2.biloxi.example.com;lr>")
    # a later 2xx to a target refresh changes the remote target, never the route set
    refreshed = ok_at_alice()
    refreshed.set("contact", "<sip:bob@192.0.2.4>")
    refreshed.remove("record-route")
    d.receive_response("INVITE", refreshed)
    assert d.remote_target == "sip:bob@192.0.2.4" and len(d.route_set) == 2


def test_early_dialog_ends_with_a_final_failure_and_481_ends_a_confirmed_one() -> None:
    invite = request(INVITE_FROM_ALICE)
    d = Dialog.as_uac(invite, ok_at_alice(183, "Session Progress"))
    d.receive_response("INVITE", ok_at_alice(486, "Busy Here"))
    assert d.terminated
    d = Dialog.as_uac(invite, ok_at_alice())
    d.receive_response("INFO", ok_at_alice(404, "Not Found"))
    assert d.confirmed  # other failures leave the dialog alone
    d.receive_response("INFO", ok_at_alice(481, "Call/Transaction Does Not Exist"))
    assert d.terminated


def test_what_makes_no_dialog() -> None:
    invite = request(INVITE_FROM_ALICE)
    no_tag = ok_at_alice()
    no_tag.set("to", "Bob <sip:bob@biloxi.example.com>")
    with pytest.raises(DialogError):
        Dialog.as_uac(invite, no_tag)
    with pytest.raises(DialogError):
        Dialog.as_uac(invite, ok_at_alice(100, "Trying"))
    with pytest.raises(DialogError):
        Dialog.as_uac(invite, ok_at_alice(contact=False))
    with pytest.raises(DialogError):
        Dialog.as_uas(invite, "t", status=404)
    d = Dialog.as_uas(invite, "t")
    with pytest.raises(DialogError):
        d.create_request("ACK")  # an ACK needs the INVITE's number
