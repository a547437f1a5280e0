"""A call whose phone vanished is ended by its session timer (RFC 4028 §10), at both ends: the
carrier's caller calls the client's number, agent anna answers with the shortest session
interval there is (`Session-Expires: 90`, RFC 4028's Min-SE; refresher anna), then her phone
goes silent. Once the interval lapses without a refresh the server sends a BYE with
`Reason: SIP;cause=408;text="Session timer expired"` to the caller (the carrier leg, which
would go on charging) and to anna's phone, anna is free again in presence, and the call
record has its end and the reason `session_expired`.

Abuse: a third party's forged BYE and forged refresh (a re-INVITE) into the call, with a
tampered route token or with the call's real token but made-up tags (a token names its
Call-ID and a tag of the call), neither end the call nor
keep it alive. This waits for the 90 s interval: the test takes about 100 s.

The same for a relayed call in which no audio flows (`[media] relay = "always"`,
`silence_timeout = 1`): the server hangs up both ends with `Reason: SIP;cause=408;text="No
audio"`, and the record's end reason is `no_audio`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heimbuero.sip.dialogtoken import TOKEN_PARAM

from .harness import (
    HAND_OFFER,
    SipClient,
    SipMessage,
    next_request,
    reply,
    set_toml_option,
    wait_until,
)
from .test_routing import CALLER, DOMAIN, NUMBER, werktag_not_now
from .test_tollfraud import PolicyOffice
from .test_transfer import Leg, on_the_phone, records_of, register, uri_of

pytestmark = [pytest.mark.e2e]

SE = 90  # s: RFC 4028 §4, the smallest interval a phone may answer with
EXPIRED = 'SIP;cause=408;text="Session timer expired"'
NO_AUDIO = 'SIP;cause=408;text="No audio"'


@pytest.fixture
def office(tmp_path: Path) -> Iterator[PolicyOffice]:
    with contextlib.ExitStack() as stack:
        yield PolicyOffice(tmp_path, stack, werktag_not_now())  # "Sonst" rings anna and ben


def timed_call(office: PolicyOffice, caller: SipClient, anna: SipClient) -> tuple[Leg, SipMessage]:
    """The carrier's caller calls the client; anna answers with a 90 s session timer; ACKed.
    The caller's leg and the INVITE as it reached anna."""
    ruri = f"sip:{NUMBER}@{DOMAIN}"
    inv = caller.request(
        "INVITE", ruri, from_uri=f"sip:{CALLER}@127.0.0.1:{office.inbound_port}", to_uri=ruri,
        headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{caller.local_port}>"),
                 ("Supported", "timer")],
        body=HAND_OFFER, content_type="application/sdp",
    )  # fmt: skip
    at_anna = next_request(anna, "INVITE", timeout=10)
    assert at_anna.header("Session-Expires") is not None  # the server asks for a timer
    reply(anna, at_anna, "200 OK",
          f"Contact: <sip:anna@127.0.0.1:{anna.local_port}>\r\n"
          f"Session-Expires: {SE};refresher=uas\r\nRequire: timer\r\n"
          "Content-Type: application/sdp\r\n", HAND_OFFER)  # fmt: skip
    ok = caller.final_response(inv, 10)
    assert ok.status == 200, ok.summary
    leg = Leg(caller, inv.call_id, f"<{inv.from_uri}>;tag={inv.from_tag}",
              ok.header("To") or "", uri_of(ok.header("Contact")),
              ok.header_values("Record-Route"))  # fmt: skip
    leg.request("ACK")
    assert next_request(anna, "ACK").method == "ACK"
    return leg, at_anna


def forged(
    mallory: SipClient, leg: Leg, method: str, routes: list[str], tags: tuple[str, str]
) -> int:
    """`method` into the call from a third party's address (From and To `tags`): its final
    status."""
    lf = leg.local.split(";tag=")[0]
    lt, to_tag = tags
    sent = mallory.request(
        method, leg.target, from_uri=uri_of(lf), from_tag=lt, to_uri=uri_of(leg.remote),
        to_tag=to_tag, call_id=leg.call_id, cseq=99,
        headers=[("Route", r) for r in routes], body=HAND_OFFER if method == "INVITE" else b"",
        content_type="application/sdp" if method == "INVITE" else None,
    )  # fmt: skip
    final = mallory.final_response(sent, 5)
    assert final.status is not None
    return final.status


def test_a_lapsed_session_timer_hangs_up_both_ends(office: PolicyOffice) -> None:
    with (
        SipClient(office.server.port) as anna,
        SipClient(office.server.port, local_port=office.inbound_port) as caller,
        SipClient(office.server.port) as mallory,
    ):
        register(office, anna, "anna")
        leg, at_anna = timed_call(office, caller, anna)
        wait_until(lambda: on_the_phone(office, "anna") or None, 5, what="anna on the phone")

        # a third party's BYE and refresh: a tampered token, or the real one with other tags
        tampered = [r.replace(f";{TOKEN_PARAM}=", f";{TOKEN_PARAM}=A") for r in leg.routes]
        assert tampered != leg.routes
        caller_tag, anna_tag = leg.local.split(";tag=")[1], leg.remote.split(";tag=")[1]
        for method in ("BYE", "INVITE"):
            assert forged(mallory, leg, method, tampered, (caller_tag, anna_tag)) >= 400
            assert forged(mallory, leg, method, leg.routes, ("made", "up")) >= 400
        assert on_the_phone(office, "anna")  # the forged BYEs ended nothing

        # anna's phone is gone: no refresh; the server hangs up both ends at the lapse
        bye = next_request(caller, "BYE", timeout=SE + 30)
        reply(caller, bye, "200 OK")
        assert bye.header("Reason") == EXPIRED
        assert bye.header("Call-ID") == leg.call_id
        assert f"tag={leg.local.split(';tag=')[1]}" in (bye.header("To") or "")
        assert f"tag={anna_tag}" in (bye.header("From") or "")
        assert bye.start_line.startswith(f"BYE sip:{CALLER}@127.0.0.1:{caller.local_port} ")
        at_anna_bye = next_request(anna, "BYE", timeout=5)
        assert at_anna_bye.header("Reason") == EXPIRED
        caller_from = at_anna.header("From") or ""
        assert (at_anna_bye.header("From") or "").endswith(caller_from[caller_from.index("<") :])
        assert at_anna_bye.start_line.startswith(f"BYE sip:anna@127.0.0.1:{anna.local_port} ")
        cseq = at_anna_bye.cseq
        invite_cseq = at_anna.cseq
        assert cseq is not None and invite_cseq is not None and cseq[0] > invite_cseq[0]

        wait_until(lambda: not on_the_phone(office, "anna") or None, 5, what="anna free")
        (record,) = records_of(office, 1)
        assert record["result"] == "answered", record
        assert record["end_reason"] == "session_expired", record
        assert record["ended_at"] is not None
        assert record["talk_seconds"] >= SE - 1, record  # (the lapse, not the forged BYEs)


class SilentOffice(PolicyOffice):
    """The office with every call's audio through the relay, let go after 1 s without any."""

    def import_rules(self, document: dict[str, Any]) -> None:
        super().import_rules(document)
        for key, value in (("relay", "always"), ("silence_timeout", 1)):
            set_toml_option(self.server.config_path, "media", key, value)


def test_a_relayed_call_without_audio_is_hung_up_at_both_ends(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        office = SilentOffice(tmp_path, stack, werktag_not_now())
        anna = stack.enter_context(SipClient(office.server.port))
        caller = stack.enter_context(SipClient(office.server.port, local_port=office.inbound_port))
        register(office, anna, "anna")
        leg, at_anna = timed_call(office, caller, anna)
        assert b"m=audio 4000 " not in at_anna.body  # anchored: anna is told a relay port
        wait_until(lambda: on_the_phone(office, "anna") or None, 5, what="anna on the phone")

        # neither side sends a packet: the relay lets the call go, and the server hangs up
        bye = next_request(caller, "BYE", timeout=15)
        reply(caller, bye, "200 OK")
        assert (bye.header("Reason"), bye.header("Call-ID")) == (NO_AUDIO, leg.call_id)
        at_anna_bye = next_request(anna, "BYE", timeout=5)
        reply(anna, at_anna_bye, "200 OK")
        assert at_anna_bye.header("Reason") == NO_AUDIO
        assert at_anna_bye.start_line.startswith(f"BYE sip:anna@127.0.0.1:{anna.local_port} ")

        wait_until(lambda: not on_the_phone(office, "anna") or None, 5, what="anna free")
        (record,) = records_of(office, 1)
        assert (record["result"], record["end_reason"]) == ("answered", "no_audio"), record
        assert record["ended_at"] is not None
