"""End-to-end attacks on the SIP trust boundary of the real `heimbuero serve` (demo office,
trunk `carrier` pointed at a port this test listens on), with raw UDP/TCP messages as an
attacker would send them, and a real routed call whose two parties hang up through the signed
Record-Route:

- a forged in-dialog request (Route naming the server plus a To tag) is challenged (407) and
  reaches nobody: not the carrier, not an internal TCP port; a bare ACK is never relayed;
- an `alias` in a Request-URI from an authenticated client user does not reach the carrier;
- a trusted carrier may not relay through the server;
- the caller's own P-Asserted-Identity / Diversion / Remote-Party-ID never reach the carrier,
  the server's do, and the call out through the trunk leaves a call record;
- a routed call through the trunk is hung up by the callee (BYE callee -> caller) through the
  signed Record-Route (test_routing.py hangs up from the caller's side);
- a trunk authenticated by `digest` is trusted only with its credentials, one authenticated by
  `address-tcp` only over TCP from its address (the same INVITE over UDP is challenged).
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    HarnessError,
    SipClient,
    SipMessage,
    digest_response,
    free_port,
    parse_message,
    pick_challenge,
    start_sipp,
    start_sipp_uas,
    wait_until,
)
from .test_routing import (
    CALLER,
    DOMAIN,
    MOBILE,
    NUMBER,
    Office,
    received_invites,
    werktag_not_now,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]

PREMIUM = "+4919001234"
QUIET = 1.0  # s: how long a listener must stay silent after the server already answered


@pytest.fixture
def office_factory(tmp_path: Path) -> Iterator[Any]:
    """The demo office of test_routing.py (trunk `carrier` on `office.carrier_port`)."""
    with contextlib.ExitStack() as stack:
        yield lambda werktag, **kw: Office(tmp_path, stack, werktag, **kw)


class UdpListener:
    """A UDP socket on a port (the carrier's, or any host's) that records what arrives."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))

    def messages(self, within: float) -> list[SipMessage]:
        """Everything that arrives within `within` seconds (keep-alives skipped)."""
        out: list[SipMessage] = []
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                break
            data, _ = self.sock.recvfrom(65535)
            if data.strip(b"\r\n"):
                out.append(parse_message(data))
        return out

    def first(self, method: str, timeout: float) -> SipMessage:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            for m in self.messages(min(left, 0.5)):
                if m.method == method:
                    return m
        raise HarnessError(f"no {method} arrived at the listener within {timeout} s")

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def udp_listener(port: int) -> Iterator[UdpListener]:
    listener = UdpListener(port)
    try:
        yield listener
    finally:
        listener.close()


@contextlib.contextmanager
def tcp_listener() -> Iterator[tuple[int, Any]]:
    """A listening TCP socket on a free port; yields (port, accepts-within(seconds))."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)

    def accepts(within: float) -> int:
        count = 0
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            conn, _ = sock.accept()
            conn.close()
            count += 1
        return count

    try:
        yield sock.getsockname()[1], accepts
    finally:
        sock.close()


def forged(c: SipClient, method: str, ruri: str, route: str | None, **kw: Any) -> Any:
    headers = [("Contact", f"<sip:mallory@127.0.0.1:{c.local_port}>")]
    if route:
        headers.append(("Route", route))
    return c.request(method, ruri, from_uri=f"sip:mallory@{DOMAIN}", to_uri=ruri,
                     to_tag="f0rged", headers=headers, **kw)  # fmt: skip


def test_forged_in_dialog_invite_toward_the_carrier_reaches_nobody(office_factory: Any) -> None:
    office: Office = office_factory(werktag_not_now())
    srv = office.server
    route = f"<sip:{srv.address};lr>"
    ruri = f"sip:{PREMIUM}@127.0.0.1:{office.carrier_port}"
    with udp_listener(office.carrier_port) as carrier:
        # Route naming us + To tag, forged From: challenged like any other request.
        with SipClient(srv.port) as mallory:
            inv = forged(mallory, "INVITE", ruri, route)
            assert mallory.final_response(inv, 5).status == 407
        # After credentials: the foreign Request-URI is refused, not relayed.
        with SipClient(srv.port) as anna:
            _, final = anna.authenticated_request(
                "INVITE", ruri, username="anna", password=office.password("anna"),
                from_uri=f"sip:anna@{DOMAIN}", to_uri=ruri, to_tag="f0rged",
                headers=[("Route", route), ("Contact", f"<sip:anna@127.0.0.1:{anna.local_port}>")],
            )  # fmt: skip
            assert final.status == 403, final.summary()
        # The trusted carrier port may not relay either.
        with SipClient(srv.port, local_port=office.inbound_port) as trunk:
            relay = trunk.request("INVITE", ruri, from_uri=f"sip:{CALLER}@{DOMAIN}",
                                  to_uri=ruri, headers=[("Route", f"<{ruri};lr>")])  # fmt: skip
            assert trunk.final_response(relay, 5).status == 407
        assert carrier.messages(QUIET) == []


def test_forged_in_dialog_message_opens_no_connection_to_an_internal_port(
    office_factory: Any,
) -> None:
    office: Office = office_factory(werktag_not_now())
    srv = office.server
    with tcp_listener() as (internal_port, accepts), SipClient(srv.port) as mallory:
        ruri = f"sip:x@127.0.0.1:{internal_port};transport=tcp"
        route = f"<sip:{srv.address};lr>"
        msg = forged(mallory, "MESSAGE", ruri, route, body=b"hi", content_type="text/plain")
        assert mallory.final_response(msg, 5).status == 407
        assert accepts(QUIET) == 0


def test_bare_ack_is_relayed_nowhere(office_factory: Any) -> None:
    office: Office = office_factory(werktag_not_now())
    srv = office.server
    with (
        udp_listener(office.carrier_port) as carrier,
        udp_listener(free_port()) as anyhost,
        SipClient(srv.port) as mallory,
    ):
        for port in (office.carrier_port, anyhost.sock.getsockname()[1]):
            for route in (f"<sip:{srv.address};lr>", None):
                forged(mallory, "ACK", f"sip:{PREMIUM}@127.0.0.1:{port}", route)
        # (the server has read the ACKs once it answers what came after them)
        ping = mallory.request("OPTIONS", f"sip:{srv.address}", from_uri=f"sip:m@{DOMAIN}",
                               to_uri=f"sip:{srv.address}")  # fmt: skip
        assert mallory.final_response(ping, 5).status == 200
        assert carrier.messages(QUIET) == [] and anyhost.messages(0.1) == []


def test_alias_to_the_carrier_with_a_premium_number_is_refused(office_factory: Any) -> None:
    office: Office = office_factory(werktag_not_now())
    srv = office.server
    with udp_listener(office.carrier_port) as carrier, SipClient(srv.port) as c:
        ruri = f"sip:{PREMIUM}@{DOMAIN};alias=127.0.0.1~{office.carrier_port}~udp"
        _, final = c.authenticated_request(
            "INVITE", ruri, username="mueller", password=office.password("mueller"),
            from_uri=f"sip:mueller@{DOMAIN}", to_uri=f"sip:{PREMIUM}@{DOMAIN}",
            headers=[("Contact", f"<sip:mueller@127.0.0.1:{c.local_port}>")],
        )  # fmt: skip
        assert final.status == 403, final.summary()  # the alias is ignored: a refused dial-out
        assert "not allowed" in (final.reason or ""), final.summary()
        assert carrier.messages(QUIET) == []
    # The attempt is on record as a refused call out, and nothing went through the trunk.
    assert [(r.number, r.rule, r.result) for r in office.records()] == [
        (PREMIUM, "dial-out", "failed")
    ]


def test_callers_identity_headers_never_reach_the_carrier(office_factory: Any) -> None:
    """anna (an agent) calls the client's number after hours: team (nobody registered) is
    skipped, the call goes out through the trunk to the owner's mobile. Her own identity
    headers are gone; the carrier sees the server's P-Asserted-Identity and Diversion."""
    office: Office = office_factory(werktag_not_now())
    srv = office.server
    fake = "sip:+4930999999@evil.example"
    own = [
        ("P-Asserted-Identity", f"<{fake}>"), ("P-Preferred-Identity", f"<{fake}>"),
        ("Remote-Party-ID", f"<{fake}>;party=calling;screen=yes"),
        ("Diversion", f"<{fake}>;reason=unconditional"), ("History-Info", f"<{fake}>;index=1"),
        ("Privacy", "none"),
    ]  # fmt: skip
    with udp_listener(office.carrier_port) as carrier, SipClient(srv.port) as c:
        ruri = f"sip:{NUMBER}@{DOMAIN}"
        first = c.request("INVITE", ruri, from_uri=f"sip:anna@{DOMAIN}", to_uri=ruri,
                          headers=own)  # fmt: skip
        challenge = c.final_response(first, 5)
        assert challenge.status == 407
        value = digest_response(pick_challenge(challenge), method="INVITE", uri=ruri,
                                username="anna", password=office.password("anna"))  # fmt: skip
        c.request("INVITE", ruri, from_uri=f"sip:anna@{DOMAIN}", to_uri=ruri,
                  call_id=first.call_id, from_tag=first.from_tag, cseq=2,
                  headers=[*own, ("Proxy-Authorization", value),
                           ("Contact", f"<sip:anna@127.0.0.1:{c.local_port}>")])  # fmt: skip
        invite = carrier.first("INVITE", 15)
    assert b"evil.example" not in invite.raw, invite.raw.decode(errors="replace")
    assert invite.header_values("P-Asserted-Identity") == [f"<sip:anna@{DOMAIN}>"]
    assert [d.split(";")[0] for d in invite.header_values("Diversion")] == [
        f"<sip:{NUMBER}@{DOMAIN}>"
    ]
    for name in ("P-Preferred-Identity", "Remote-Party-ID", "Privacy"):
        assert not invite.has_header(name), name
    assert all("evil.example" not in v for v in invite.header_values("History-Info"))
    # The call out through the trunk left a call record.
    rec = office.wait_records(1, timeout=20)[0]
    assert (rec.client, rec.number, rec.rule) == ("mueller", NUMBER, "Sonst"), rec
    assert "anna" in rec.caller, rec


def test_routed_call_hung_up_by_the_carrier_through_the_signed_record_route(
    office_factory: Any,
) -> None:
    """After hours the carrier's call to the client goes back out through the trunk to the
    owner's mobile; the callee (the carrier UAS) hangs up: its BYE follows the signed
    Record-Route and reaches the caller, which answers 200."""
    office: Office = office_factory(werktag_not_now())
    with contextlib.ExitStack() as stack:
        carrier = stack.enter_context(
            start_sipp_uas(
                office.tmp_path,
                "carrier-hangs-up",
                port=office.carrier_port,
                scenario="trust_carrier_hangs_up.xml",
                calls=1,
                timeout=40,
                extra=["-d", "300"],
            )  # fmt: skip
        )
        caller = stack.enter_context(
            start_sipp(office.tmp_path, "caller-gets-bye", scenario="trust_caller_gets_bye.xml",
                       remote=office.server.address, port=office.inbound_port, calls=1,
                       timeout=40, service=NUMBER, keys={"domain": DOMAIN, "caller": CALLER})
        )  # fmt: skip
        caller_result = caller.wait(30)
        carrier_result = carrier.wait(10)
    for result in (caller_result, carrier_result):
        if result.returncode != 0:
            raise HarnessError(f"{result.report()}\n{office.server.log_text()}")
    (invite,) = received_invites(carrier_result)
    assert invite.start_line.startswith(f"INVITE sip:{MOBILE}@")
    (rec,) = office.wait_records(1)
    assert (rec.rule, rec.answered_by, rec.result) == ("Sonst", f"external:{MOBILE}", "answered")


def test_digest_trunk_calls_in_only_with_its_credentials(office_factory: Any) -> None:
    """`heimbuero trunk set carrier --inbound-auth digest …` on the running server: the trunk's
    address no longer counts (a UDP source can be forged), its credentials do."""
    office: Office = office_factory(werktag_not_now())
    srv = office.server
    secret = "Carrier-Inbound-Secret-7"
    srv.cli("trunk", "set", "carrier", "--inbound-auth", "digest", "--inbound-username", "sbc1",
            "--inbound-password", secret, "--data", office.data)  # fmt: skip
    ruri = f"sip:{NUMBER}@{DOMAIN}"
    with SipClient(srv.port, local_port=office.carrier_port) as c:

        def challenged() -> bool | None:
            # A trusted source gets 404 for a user we do not have; an untrusted one 407.
            nobody = f"sip:nobody@{DOMAIN}"
            r = c.request("INVITE", nobody, from_uri=f"sip:{CALLER}@{DOMAIN}", to_uri=nobody)
            return True if c.final_response(r, 5).status == 407 else None

        # (the server reloads the office configuration within seconds)
        wait_until(challenged, 15, interval=0.5, what="the trunk's address to lose its trust")
    with udp_listener(office.carrier_port) as carrier, SipClient(srv.port) as sbc:
        _, final = sbc.authenticated_request(
            "INVITE", ruri, username="sbc1", password=secret, timeout=20,
            from_uri=f"sip:{CALLER}@{DOMAIN}", to_uri=ruri,
            headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{sbc.local_port}>")],
        )  # fmt: skip
        invite = carrier.first("INVITE", 1)  # the plan rang the owner's mobile via the trunk
    assert invite.start_line.startswith(f"INVITE sip:{MOBILE}@")
    assert final.status in (408, 480), final.summary()  # (nobody answered the mobile)
    (rec,) = office.wait_records(1)
    assert (rec.rule, rec.number) == ("Sonst", NUMBER), rec


def test_address_tcp_trunk_is_trusted_over_tcp_only(office_factory: Any) -> None:
    """`heimbuero trunk set carrier --inbound-auth address-tcp` on the running server: a call
    from the trunk's address over TCP is the carrier's (routed by the plan, no challenge); the
    same INVITE from that address over UDP, where a source can be forged, is challenged."""
    office: Office = office_factory(werktag_not_now())
    srv = office.server
    srv.cli("trunk", "set", "carrier", "--inbound-auth", "address-tcp", "--data", office.data)
    ruri = f"sip:{NUMBER}@{DOMAIN}"
    call = {"from_uri": f"sip:{CALLER}@{DOMAIN}", "to_uri": ruri}
    with SipClient(srv.port, local_port=office.carrier_port) as udp:

        def challenged() -> bool | None:
            # A trusted source gets 404 for a user we do not have; an untrusted one 407.
            nobody = f"sip:nobody@{DOMAIN}"
            r = udp.request("INVITE", nobody, from_uri=f"sip:{CALLER}@{DOMAIN}", to_uri=nobody)
            return True if udp.final_response(r, 5).status == 407 else None

        # (the server reloads the office configuration within seconds)
        wait_until(challenged, 15, interval=0.5, what="the trunk's address to lose its UDP trust")
        contact = [("Contact", f"<sip:{CALLER}@127.0.0.1:{udp.local_port}>")]
        over_udp = udp.final_response(udp.request("INVITE", ruri, headers=contact, **call), 5)
    assert over_udp.status == 407, over_udp.summary()
    with (
        udp_listener(office.carrier_port) as carrier,
        SipClient(srv.port, transport="tcp", local_port=office.carrier_port) as tcp,
    ):
        contact = [("Contact", f"<sip:{CALLER}@127.0.0.1:{tcp.local_port};transport=tcp>")]
        invite = tcp.request("INVITE", ruri, headers=contact, **call)
        routed = carrier.first("INVITE", 5)  # the plan rang the owner's mobile via the trunk
        final = tcp.final_response(invite, 15)
    assert routed.start_line.startswith(f"INVITE sip:{MOBILE}@")
    assert final.status in (408, 480), final.summary()  # (nobody answered the mobile)
    (rec,) = office.wait_records(1)
    assert (rec.rule, rec.number) == ("Sonst", NUMBER), rec
