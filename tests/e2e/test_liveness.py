"""A call whose phone vanished (no BYE through the server) is over as soon as a request
inside it is answered 481: the callee shows as free again in presence (the API the console
reads), so group routing rings them again, and the server sends both ends a BYE."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from .conftest import USERS
from .harness import HAND_OFFER, Server, SipClient, hand_call, next_request, reply, wait_until

pytestmark = [pytest.mark.e2e]


def test_a_callee_that_vanished_is_free_again_after_a_481(tmp_path: Path) -> None:
    server = Server(tmp_path / "server", users=USERS, http=True)
    admin_pw = "Admin-Passwort-123"
    server.prepare()
    server.add_user("chef", admin_pw, "admin")

    def on_the_phone() -> bool:
        r = httpx.get(f"{server.http_url}/api/presence", auth=("chef", admin_pw), timeout=5)
        return next(p for p in r.json()["presence"] if p["user"] == "bob")["on_the_phone"]

    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        alice = stack.enter_context(SipClient(server.port))
        bob = stack.enter_context(SipClient(server.port))
        aor, me = f"sip:bob@{server.domain}", f"sip:alice@{server.domain}"
        inv, at_bob = hand_call(server, alice, bob, USERS)
        reply(bob, at_bob, "200 OK",
              f"Contact: <sip:bob@127.0.0.1:{bob.local_port}>\r\n"
              "Content-Type: application/sdp\r\n", HAND_OFFER)  # fmt: skip
        ok = alice.final_response(inv, 5)
        assert ok.status == 200, ok.summary
        routes = [("Route", r) for r in ok.header_values("Record-Route")]
        target = ok.header("Contact").split("<")[1].split(">")[0]  # type: ignore[union-attr]
        alice.send(alice.build_request(
            "ACK", target, from_uri=me, to_uri=aor, call_id=inv.call_id,
            from_tag=inv.from_tag, to_tag=ok.to_tag(), cseq=2, headers=routes,
        ))  # fmt: skip
        wait_until(lambda: on_the_phone() or None, 5, interval=0.2, what="bob on the phone")

        # bob's phone restarted and forgot the call; alice's re-INVITE gets 481 from it
        reinvite = alice.request(
            "INVITE", target, from_uri=me, to_uri=aor, call_id=inv.call_id,
            from_tag=inv.from_tag, to_tag=ok.to_tag(), cseq=3, headers=routes,
            body=HAND_OFFER, content_type="application/sdp",
        )  # fmt: skip
        at_bob = next_request(bob, "INVITE")
        reply(bob, at_bob, "481 Call/Transaction Does Not Exist")
        assert alice.final_response(reinvite, 5).status == 481
        wait_until(lambda: not on_the_phone() or None, 5, interval=0.2, what="bob free again")
        # and the server hangs up both ends, saying why (RFC 3326)
        for phone in (alice, bob):
            bye = next_request(phone, "BYE")
            assert bye.header("Reason") == 'SIP;cause=481;text="Call unknown to the other side"'
            assert bye.header("Call-ID") == inv.call_id
            reply(phone, bye, "200 OK")
