"""Call transfers (REFER, RFC 3515) through the real `heimbuero serve` on the demo office, with
raw messages: the carrier's caller (from the trusted inbound port) calls the client's number
after hours, agent anna answers, and transfers the caller

- blind, to the owner's mobile (through the trunk) or to her colleague ben: the REFER and the
  NOTIFY pass along the signed Record-Route, the caller's new INVITE with `Referred-By` is
  let through once, anna is free again after her BYE, ben is on the phone once he answers,
  and the records show the transfer (`transferred`, the new record names the old one);
- abuse: an INVITE from the carrier side with `Referred-By` to an external number that no
  REFER of ours named is refused (403) and never reaches the carrier; a REFER the carrier side
  sends into the call is forwarded to anna but opens no way out either.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import (
    HAND_OFFER,
    SentRequest,
    SipClient,
    SipMessage,
    digest_response,
    next_request,
    pick_challenge,
    reply,
    wait_until,
)
from .test_routing import CALLER, DOMAIN, MOBILE, NUMBER, werktag_not_now
from .test_tollfraud import EMPLOYEE, EMPLOYEE_PASSWORD, PolicyOffice

pytestmark = [pytest.mark.e2e]

SDP = "Content-Type: application/sdp\r\n"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[PolicyOffice]:
    with contextlib.ExitStack() as stack:
        # after hours: "Sonst" rings the team (anna, ben) first, then the owner's mobile
        yield PolicyOffice(tmp_path, stack, werktag_not_now())


def register(office: PolicyOffice, phone: SipClient, user: str) -> None:
    aor = f"sip:{user}@{DOMAIN}"
    _, ok = phone.authenticated_request(
        "REGISTER", f"sip:{DOMAIN}", username=user, password=office.password(user),
        from_uri=aor, to_uri=aor,
        headers=[("Contact", f"<sip:{user}@127.0.0.1:{phone.local_port}>"), ("Expires", "300")],
    )  # fmt: skip
    assert ok.status == 200, ok.summary


def on_the_phone(office: PolicyOffice, user: str) -> bool:
    r = httpx.get(f"{office.server.http_url}/api/presence", auth=office.admin(), timeout=5)
    return bool(next(p for p in r.json()["presence"] if p["user"] == user)["on_the_phone"])


def records(office: PolicyOffice) -> list[dict[str, Any]]:
    r = httpx.get(f"{office.server.http_url}/api/calls", auth=office.admin(), timeout=5)
    assert r.status_code == 200, r.text
    calls: list[dict[str, Any]] = r.json()
    return calls


def records_of(office: PolicyOffice, count: int) -> list[dict[str, Any]]:
    """The call records, newest first, once there are `count` of them and the oldest ended."""

    def enough() -> list[dict[str, Any]] | None:
        recs = records(office)
        return recs if len(recs) >= count and recs[-1]["result"] else None

    try:
        return wait_until(enough, 5, interval=0.2, what=f"{count} call records")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {records(office)}\n{office.server.log_text()}") from None


def uri_of(header: str | None) -> str:
    found = re.search(r"<([^>]+)>", header or "")
    assert found is not None, header
    return found.group(1)


class Leg:
    """One side of a call as a hand-driven phone sees it: what it needs for requests inside."""

    def __init__(self, phone: SipClient, call_id: str, local: str, remote: str, target: str,
                 routes: list[str]) -> None:  # fmt: skip
        self.phone, self.call_id = phone, call_id
        self.local, self.remote, self.target, self.routes = local, remote, target, routes
        self.cseq = 10

    def request(self, method: str, headers: list[tuple[str, str]] = (), **kw: Any) -> SentRequest:  # type: ignore[assignment]
        self.cseq += 1
        lf, lt = self.local.split(";tag=")
        rf, rt = self.remote.split(";tag=")
        return self.phone.request(
            method, self.target, from_uri=uri_of(lf), from_tag=lt, to_uri=uri_of(rf), to_tag=rt,
            call_id=self.call_id, cseq=self.cseq,
            headers=[("Route", r) for r in self.routes] + list(headers), **kw,
        )  # fmt: skip


def answer(phone: SipClient, req: SipMessage, user: str) -> None:
    reply(phone, req, "200 OK", f"Contact: <sip:{user}@127.0.0.1:{phone.local_port}>\r\n{SDP}",
          HAND_OFFER)  # fmt: skip


def caller_call(office: PolicyOffice, caller: SipClient, anna: SipClient) -> tuple[Leg, Leg]:
    """The carrier's caller calls the client, anna answers; both legs, ACKed."""
    ruri = f"sip:{NUMBER}@{DOMAIN}"
    inv = caller.request(
        "INVITE", ruri, from_uri=f"sip:{CALLER}@127.0.0.1:{office.inbound_port}", to_uri=ruri,
        headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{caller.local_port}>")],
        body=HAND_OFFER, content_type="application/sdp",
    )  # fmt: skip
    at_anna = next_request(anna, "INVITE", timeout=10)
    answer(anna, at_anna, "anna")
    ok = caller.final_response(inv, 10)
    assert ok.status == 200, ok.summary
    caller_leg = Leg(caller, inv.call_id, f"<{inv.from_uri}>;tag={inv.from_tag}",
                     ok.header("To") or "", uri_of(ok.header("Contact")),
                     ok.header_values("Record-Route"))  # fmt: skip
    ack = caller_leg.request("ACK")
    del ack
    assert next_request(anna, "ACK").method == "ACK"
    anna_leg = Leg(anna, inv.call_id, (at_anna.header("To") or "") + ";tag=bob1",
                   at_anna.header("From") or "", uri_of(at_anna.header("Contact")),
                   list(reversed(at_anna.header_values("Record-Route"))))  # fmt: skip
    return caller_leg, anna_leg


def refer(anna_leg: Leg, caller: SipClient, refer_to: str) -> SipMessage:
    """anna REFERs the caller to `refer_to`; the caller accepts (202); the REFER as it came."""
    sent = anna_leg.request("REFER", [
        ("Refer-To", f"<{refer_to}>"), ("Referred-By", f"<sip:anna@{DOMAIN}>"),
        ("Contact", f"<sip:anna@127.0.0.1:{anna_leg.phone.local_port}>"),
    ])  # fmt: skip
    at_caller = next_request(caller, "REFER")
    reply(caller, at_caller, "202 Accepted")
    assert anna_leg.phone.final_response(sent, 5).status == 202
    return at_caller


def transferred_invite(office: PolicyOffice, caller: SipClient, at_caller: SipMessage
                       ) -> SentRequest:  # fmt: skip
    """The caller's side does what the REFER asked: a new INVITE to its Refer-To."""
    target = uri_of(at_caller.header("Refer-To"))
    return caller.request(
        "INVITE", target, from_uri=f"sip:{CALLER}@127.0.0.1:{office.inbound_port}",
        to_uri=target.split(";")[0],
        headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{caller.local_port}>"),
                 ("Referred-By", at_caller.header("Referred-By") or "")],
        body=HAND_OFFER, content_type="application/sdp",
    )  # fmt: skip


def notify_and_bye(caller_leg: Leg, anna_leg: Leg) -> None:
    """The caller tells anna how it went (sipfrag); anna hangs up."""
    sent = caller_leg.request("NOTIFY", [("Event", "refer"),
                                         ("Subscription-State", "terminated;reason=noresource")],
                              body=b"SIP/2.0 200 OK\r\n",
                              content_type="message/sipfrag;version=2.0")  # fmt: skip
    got = next_request(anna_leg.phone, "NOTIFY")
    assert got.body == b"SIP/2.0 200 OK\r\n"
    reply(anna_leg.phone, got, "200 OK")
    assert caller_leg.phone.final_response(sent, 5).status == 200
    bye = anna_leg.request("BYE")
    reply(caller_leg.phone, next_request(caller_leg.phone, "BYE"), "200 OK")
    assert anna_leg.phone.final_response(bye, 5).status == 200


def test_blind_transfer_to_the_owners_mobile(office: PolicyOffice) -> None:
    with (
        SipClient(office.server.port) as anna,
        SipClient(office.server.port, local_port=office.inbound_port) as caller,
        SipClient(office.server.port, local_port=office.carrier_port) as carrier,
    ):
        register(office, anna, "anna")
        caller_leg, anna_leg = caller_call(office, caller, anna)
        wait_until(lambda: on_the_phone(office, "anna") or None, 5, what="anna on the phone")
        at_caller = refer(anna_leg, caller, f"sip:{MOBILE}@{DOMAIN}")
        assert at_caller.header("Referred-By") == f"<sip:anna@{DOMAIN}>"
        inv = transferred_invite(office, caller, at_caller)
        at_carrier = next_request(carrier, "INVITE", timeout=5)
        assert at_carrier.start_line.startswith(f"INVITE sip:{MOBILE}@127.0.0.1:")
        answer(carrier, at_carrier, "mobile")
        assert caller.final_response(inv, 5).status == 200
        notify_and_bye(caller_leg, anna_leg)
        wait_until(lambda: not on_the_phone(office, "anna") or None, 5, what="anna free")
        new, old = records_of(office, 2)
        assert (old["rule"], old["answered_by"], old["result"]) == ("Sonst", "user:anna",
                                                                   "transferred")  # fmt: skip
        assert (new["rule"], new["answered_by"], new["result"]) == (
            "transfer",
            f"external:{MOBILE}",
            None,
        )
        assert new["transferred_from"] == old["id"] and new["client"] == "mueller"


def test_blind_transfer_to_a_colleague(office: PolicyOffice) -> None:
    with (
        SipClient(office.server.port) as anna,
        SipClient(office.server.port) as ben,
        SipClient(office.server.port, local_port=office.inbound_port) as caller,
    ):
        register(office, anna, "anna")
        caller_leg, anna_leg = caller_call(office, caller, anna)
        register(office, ben, "ben")  # (after the call: the team call rang anna alone)
        at_caller = refer(anna_leg, caller, f"sip:ben@{DOMAIN}")
        inv = transferred_invite(office, caller, at_caller)
        at_ben = next_request(ben, "INVITE")
        assert "Tischlerei" in (at_ben.header("From") or "")  # ben sees whose call it is
        answer(ben, at_ben, "ben")
        assert caller.final_response(inv, 5).status == 200
        notify_and_bye(caller_leg, anna_leg)
        wait_until(lambda: not on_the_phone(office, "anna") or None, 5, what="anna free")
        assert on_the_phone(office, "ben")
        new, old = records_of(office, 2)
        assert (old["answered_by"], old["result"]) == ("user:anna", "transferred")
        assert (new["rule"], new["answered_by"], new["transferred_from"]) == (
            "transfer",
            "user:ben",
            old["id"],
        )


def test_carrier_invite_with_referred_by_but_no_refer_is_refused(office: PolicyOffice) -> None:
    """Referred-By is the caller's word: to an external number, without a REFER the server
    approved, the carrier's INVITE is 403 and reaches no carrier."""
    with (
        SipClient(office.server.port, local_port=office.inbound_port) as caller,
        SipClient(office.server.port, local_port=office.carrier_port) as carrier,
    ):
        for referred_by in (f"<sip:anna@{DOMAIN}>", f"<sip:mueller@{DOMAIN}>"):
            target = "sip:+4919001234@" + DOMAIN
            inv = caller.request(
                "INVITE", target, from_uri=f"sip:{CALLER}@127.0.0.1:{office.inbound_port}",
                to_uri=target,
                headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{caller.local_port}>"),
                         ("Referred-By", referred_by)],
                body=HAND_OFFER, content_type="application/sdp",
            )  # fmt: skip
            final = caller.final_response(inv, 5)
            assert (final.status, final.reason) == (403, "Transfer not authorised"), final.summary
        assert carrier.recv(1.0) is None


def test_refer_from_elsewhere_than_the_agents_phone_opens_no_way_out(office: PolicyOffice) -> None:
    """A REFER in anna's call with her tags (the Route token is no secret from the carrier) sent
    from another address, and one the carrier's side sends itself, are forwarded but not
    approved: the caller's INVITE to the Refer-To target is refused."""
    with (
        SipClient(office.server.port) as anna,
        SipClient(office.server.port) as mallory,
        SipClient(office.server.port, local_port=office.inbound_port) as caller,
        SipClient(office.server.port, local_port=office.carrier_port) as carrier,
    ):
        register(office, anna, "anna")
        caller_leg, anna_leg = caller_call(office, caller, anna)
        forged = Leg(mallory, anna_leg.call_id, anna_leg.local, anna_leg.remote, anna_leg.target,
                     anna_leg.routes)  # fmt: skip
        at_caller = refer(forged, caller, f"sip:{MOBILE}@{DOMAIN}")
        inv = transferred_invite(office, caller, at_caller)
        final = caller.final_response(inv, 5)
        assert (final.status, final.reason) == (403, "Transfer not authorised"), final.summary
        # the carrier's side REFERs anna (her phone may do what it likes; the server approves
        # nothing) and then calls the mobile itself as if anna had referred it
        sent = caller_leg.request("REFER", [("Refer-To", f"<sip:{MOBILE}@{DOMAIN}>"),
                                            ("Referred-By", f"<sip:anna@{DOMAIN}>")])  # fmt: skip
        at_anna = next_request(anna, "REFER")
        reply(anna, at_anna, "202 Accepted")
        assert caller.final_response(sent, 5).status == 202
        final = caller.final_response(transferred_invite(office, caller, at_anna), 5)
        assert (final.status, final.reason) == (403, "Transfer not authorised"), final.summary
        assert carrier.recv(1.0) is None
        bye = anna_leg.request("BYE")
        reply(caller, next_request(caller, "BYE"), "200 OK")
        assert anna.final_response(bye, 5).status == 200
        wait_until(lambda: records(office)[0]["result"] or None, 5, what="the call's end")
        (rec,) = records(office)
        assert rec["result"] == "answered"


def consult(office: PolicyOffice, anna: SipClient, ben: SipClient) -> tuple[Leg, Leg]:
    """anna calls ben (her own authenticated call); ben answers; both legs, ACKed."""
    aor, me = f"sip:ben@{DOMAIN}", f"sip:anna@{DOMAIN}"
    contact = ("Contact", f"<sip:anna@127.0.0.1:{anna.local_port}>")
    first = anna.request("INVITE", aor, from_uri=me, to_uri=aor, headers=[contact],
                         body=HAND_OFFER, content_type="application/sdp")  # fmt: skip
    challenge = anna.final_response(first, 5)
    auth = digest_response(pick_challenge(challenge, "MD5"), method="INVITE", uri=aor,
                           username="anna", password=office.password("anna"))  # fmt: skip
    inv = anna.request("INVITE", aor, from_uri=me, to_uri=aor, call_id=first.call_id,
                       from_tag=first.from_tag, cseq=2, body=HAND_OFFER,
                       content_type="application/sdp",
                       headers=[contact, ("Proxy-Authorization", auth)])  # fmt: skip
    at_ben = next_request(ben, "INVITE")
    answer(ben, at_ben, "ben")
    ok = anna.final_response(inv, 5)
    assert ok.status == 200, ok.summary
    anna_leg = Leg(anna, inv.call_id, f"<{me}>;tag={inv.from_tag}", ok.header("To") or "",
                   uri_of(ok.header("Contact")), ok.header_values("Record-Route"))  # fmt: skip
    anna_leg.request("ACK")
    next_request(ben, "ACK")
    ben_leg = Leg(ben, inv.call_id, (at_ben.header("To") or "") + ";tag=bob1",
                  at_ben.header("From") or "", uri_of(at_ben.header("Contact")),
                  list(reversed(at_ben.header_values("Record-Route"))))  # fmt: skip
    return anna_leg, ben_leg


def test_attended_transfer_to_a_colleague_with_replaces(office: PolicyOffice) -> None:
    """anna holds the caller, consults ben, then REFERs the caller to ben with Replaces; the
    caller's INVITE with Replaces reaches ben, whose phone ends the consultation (BYE)."""
    with (
        SipClient(office.server.port) as anna,
        SipClient(office.server.port) as ben,
        SipClient(office.server.port, local_port=office.inbound_port) as caller,
    ):
        register(office, anna, "anna")
        caller_leg, anna_leg = caller_call(office, caller, anna)
        register(office, ben, "ben")
        consult_anna, consult_ben = consult(office, anna, ben)
        wait_until(lambda: on_the_phone(office, "ben") or None, 5, what="ben consulted")
        replaces = (f"{consult_anna.call_id}%3Bto-tag%3Dbob1%3Bfrom-tag%3D"
                    f"{consult_anna.local.split(';tag=')[1]}")  # fmt: skip
        at_caller = refer(anna_leg, caller, f"sip:ben@{DOMAIN}?Replaces={replaces}")
        refer_to = uri_of(at_caller.header("Refer-To"))
        target, _, header = refer_to.partition("?")
        assert header == f"Replaces={replaces}"
        inv = caller.request(
            "INVITE", target, from_uri=f"sip:{CALLER}@127.0.0.1:{office.inbound_port}",
            to_uri=target,
            headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{caller.local_port}>"),
                     ("Referred-By", at_caller.header("Referred-By") or ""),
                     ("Replaces", header.removeprefix("Replaces=").replace("%3B", ";")
                      .replace("%3D", "="))],
            body=HAND_OFFER, content_type="application/sdp",
        )  # fmt: skip
        at_ben = next_request(ben, "INVITE")
        assert (at_ben.header("Replaces") or "").startswith(consult_anna.call_id)
        answer(ben, at_ben, "ben")
        assert caller.final_response(inv, 5).status == 200
        # ben's phone replaces the consultation: it hangs it up
        bye = consult_ben.request("BYE")
        reply(anna, next_request(anna, "BYE"), "200 OK")
        assert ben.final_response(bye, 5).status == 200
        notify_and_bye(caller_leg, anna_leg)
        wait_until(lambda: not on_the_phone(office, "anna") or None, 5, what="anna free")
        assert on_the_phone(office, "ben")
        new, old = records_of(office, 2)  # (a call between two users has no record)
        assert (old["answered_by"], old["result"]) == ("user:anna", "transferred")
        assert (new["rule"], new["answered_by"], new["transferred_from"]) == (
            "transfer",
            "user:ben",
            old["id"],
        )


def test_an_invite_with_replaces_needs_a_call_of_ours_and_a_party_or_a_refer(
    office: PolicyOffice,
) -> None:
    """RFC 3891 §3: an INVITE whose Replaces names a call the server does not know, or a call
    the sender is no party of and no approved REFER asked it to replace, gets 481 and never
    reaches the phone: the carrier's caller before anna's REFER, an unknown Call-ID, an
    employee of the client (authenticated) replacing anna's consultation with ben."""
    with (
        SipClient(office.server.port) as anna,
        SipClient(office.server.port) as ben,
        SipClient(office.server.port) as eva,
        SipClient(office.server.port, local_port=office.inbound_port) as caller,
    ):
        register(office, anna, "anna")
        caller_call(office, caller, anna)
        register(office, ben, "ben")
        consult_anna, _ = consult(office, anna, ben)
        consultation = (f"{consult_anna.call_id};to-tag=bob1;from-tag="
                        f"{consult_anna.local.split(';tag=')[1]}")  # fmt: skip
        ben_aor = f"sip:ben@{DOMAIN}"
        for replaces in (consultation, "no-such-call@example.com;to-tag=a;from-tag=b"):
            inv = caller.request(
                "INVITE", ben_aor, from_uri=f"sip:{CALLER}@127.0.0.1:{office.inbound_port}",
                to_uri=ben_aor,
                headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{caller.local_port}>"),
                         ("Referred-By", f"<sip:anna@{DOMAIN}>"), ("Replaces", replaces)],
                body=HAND_OFFER, content_type="application/sdp",
            )  # fmt: skip
            final = caller.final_response(inv, 5)
            assert final.status == 481, final.summary
            caller.ack_non_2xx(inv, final)
        _, final = eva.authenticated_request(
            "INVITE", ben_aor, username=EMPLOYEE, password=EMPLOYEE_PASSWORD,
            from_uri=f"sip:{EMPLOYEE}@{DOMAIN}", to_uri=ben_aor,
            headers=[("Contact", f"<sip:{EMPLOYEE}@127.0.0.1:{eva.local_port}>"),
                     ("Replaces", consultation)],
        )  # fmt: skip
        assert final.status == 481, final.summary
        while ben.recv(0.3) is not None:  # (what reached ben's phone, read to the end)
            pass
        invites = [m.header("Call-ID") for m in ben.received if m.method == "INVITE"]
        assert invites == [consult_anna.call_id], invites  # the consultation's own, no other


def test_carrier_call_with_referred_by_to_a_client_number_is_a_normal_call(
    office: PolicyOffice,
) -> None:
    """A caller an outside PBX transferred to the client's number carries Referred-By too: it
    is routed as any carrier call (no REFER of ours, so no transfer record)."""
    with (
        SipClient(office.server.port) as anna,
        SipClient(office.server.port, local_port=office.inbound_port) as caller,
    ):
        register(office, anna, "anna")
        ruri = f"sip:{NUMBER}@{DOMAIN}"
        inv = caller.request(
            "INVITE", ruri, from_uri=f"sip:{CALLER}@127.0.0.1:{office.inbound_port}",
            to_uri=ruri,
            headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{caller.local_port}>"),
                     ("Referred-By", "<sip:zentrale@pbx.example.org>")],
            body=HAND_OFFER, content_type="application/sdp",
        )  # fmt: skip
        at_anna = next_request(anna, "INVITE", timeout=10)
        reply(anna, at_anna, "486 Busy Here")
        assert caller.final_response(inv, 10).status in (480, 486, 408)
        (rec,) = records_of(office, 1)
        assert (rec["rule"], rec["transferred_from"]) == ("Sonst", None)
