"""A call whose phone vanished (no BYE through the server) is over as soon as a request
inside it is answered 481: the callee shows as free again in presence (the API the console
reads), so group routing rings them again."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from .conftest import USERS
from .harness import Server, SipClient, digest_response, pick_challenge, wait_until

pytestmark = [pytest.mark.e2e]

OFFER = (
    b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
)


def reply(phone: SipClient, req: object, status: str, extra: str = "", body: bytes = b"") -> None:
    """Answer a request the server sent to a hand-driven phone."""
    via = "".join(f"Via: {v}\r\n" for v in req.header_values("Via"))  # type: ignore[attr-defined]
    rr = "".join(f"Record-Route: {v}\r\n" for v in req.header_values("Record-Route"))  # type: ignore[attr-defined]
    to = req.header("To") or ""  # type: ignore[attr-defined]
    head = (
        f"SIP/2.0 {status}\r\n{via}{rr}From: {req.header('From')}\r\n"  # type: ignore[attr-defined]
        f"To: {to}{'' if 'tag=' in to else ';tag=bob1'}\r\n"
        f"Call-ID: {req.header('Call-ID')}\r\nCSeq: {req.header('CSeq')}\r\n{extra}"  # type: ignore[attr-defined]
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    phone.send_raw(head.encode() + body)


def next_request(phone: SipClient, method: str) -> object:
    return wait_until(
        lambda: next((m for m in iter(lambda: phone.recv(0.2), None) if m.method == method),
                     None), 5, interval=0.0, what=f"a {method} at the phone",
    )  # fmt: skip


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
        _, reg = bob.authenticated_request(
            "REGISTER", f"sip:{server.domain}", username="bob", password=USERS["bob"],
            from_uri=aor, to_uri=aor,
            headers=[("Contact", f"<sip:bob@127.0.0.1:{bob.local_port}>"), ("Expires", "300")],
        )  # fmt: skip
        assert reg.status == 200, reg.summary
        contact = ("Contact", f"<sip:alice@127.0.0.1:{alice.local_port}>")
        first = alice.request("INVITE", aor, from_uri=me, to_uri=aor, body=OFFER,
                              content_type="application/sdp", headers=[contact])  # fmt: skip
        challenge = alice.final_response(first, 5)
        auth = digest_response(pick_challenge(challenge, "MD5"), method="INVITE", uri=aor,
                               username="alice", password=USERS["alice"])  # fmt: skip
        inv = alice.request(
            "INVITE", aor, from_uri=me, to_uri=aor, call_id=first.call_id,
            from_tag=first.from_tag, cseq=2, body=OFFER, content_type="application/sdp",
            headers=[contact, ("Proxy-Authorization", auth)],
        )  # fmt: skip
        at_bob = next_request(bob, "INVITE")
        reply(bob, at_bob, "200 OK",
              f"Contact: <sip:bob@127.0.0.1:{bob.local_port}>\r\n"
              "Content-Type: application/sdp\r\n", OFFER)  # fmt: skip
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
            body=OFFER, content_type="application/sdp",
        )  # fmt: skip
        at_bob = next_request(bob, "INVITE")
        reply(bob, at_bob, "481 Call/Transaction Does Not Exist")
        assert alice.final_response(reinvite, 5).status == 481
        wait_until(lambda: not on_the_phone() or None, 5, interval=0.2, what="bob free again")
