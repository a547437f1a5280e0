"""rtpengine as the media relay (`[media] backend = "rtpengine"`), with hand-driven phones on
loopback and rtpengine (userspace, `--table=-1`) started by the test.

- A call with `relay = "always"`: each side is told rtpengine's ports, never the other's;
  with `when_needed` and nobody behind NAT, each side is told the other's own.
- rtpengine not answering: a new call that needs the relay gets `503 Media relay
  unavailable`; registering is not affected.
- Abuse: INVITEs nobody authenticated cannot make rtpengine hold more than a few sessions
  per source address.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from heimbuero.media import bencode

from .conftest import USERS
from .harness import (
    HAND_OFFER,
    Server,
    SipClient,
    free_port,
    hand_call,
    reply,
    set_toml_option,
    wait_until,
)

pytestmark = [pytest.mark.e2e]


def ng(port: int, command: dict[str, object]) -> dict[str, object]:
    """One ng command (a new cookie each: rtpengine answers a known cookie from its cache)."""
    cookie = os.urandom(6).hex().encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for _ in range(10):
            sock.sendto(cookie + b" " + bencode.encode(command), ("127.0.0.1", port))
            with contextlib.suppress(OSError):
                answer: dict[str, object] = bencode.decode(sock.recv(65535).partition(b" ")[2])
                return answer
    raise AssertionError(f"rtpengine did not answer {command}")


@pytest.fixture
def rtpengine(tmp_path: Path) -> Iterator[int]:
    """rtpengine on loopback; its ng port."""
    with run_rtpengine(tmp_path) as port:
        yield port


@contextlib.contextmanager
def run_rtpengine(tmp_path: Path, *options: str) -> Iterator[int]:
    port = free_port()
    low = free_port() // 2 * 2  # (its media ports: a small range of its own)
    with (tmp_path / "rtpengine.log").open("wb") as log:
        proc = subprocess.Popen(
            ["rtpengine", "--config-file=none", "--table=-1", "--foreground", "--log-stderr",
             "--log-level=6", "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{port}",
             f"--port-min={low}", f"--port-max={low + 399}", "--num-threads=1", *options],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert ng(port, {"command": "ping"}).get("result") == b"pong"
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


def rtpengine_server(tmp_path: Path, ng_port: int) -> Server:
    server = Server(tmp_path / "server", users=USERS)
    server.prepare()
    set_toml_option(server.config_path, "media", "relay", "always")
    set_toml_option(server.config_path, "media", "backend", "rtpengine")
    set_toml_option(server.config_path, "media", "rtpengine", f"udp:127.0.0.1:{ng_port}")
    return server


def audio_port(sdp: bytes) -> int:
    found = re.search(rb"m=audio (\d+) ", sdp)
    assert found is not None, sdp
    return int(found.group(1))


@pytest.mark.peers("rtpengine")
def test_a_call_through_rtpengine_names_its_ports_to_both_sides(
    tmp_path: Path, rtpengine: int
) -> None:
    server = rtpengine_server(tmp_path, rtpengine)
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        alice = stack.enter_context(SipClient(server.port))
        bob = stack.enter_context(SipClient(server.port))
        sent, inv = hand_call(server, alice, bob, USERS)
        offered = audio_port(inv.body)
        assert offered != 4000 and b"c=IN IP4 127.0.0.1" in inv.body, inv.body
        answer = HAND_OFFER.replace(b"o=a", b"o=b").replace(b"4000", b"4002")
        reply(bob, inv, "180 Ringing")
        reply(bob, inv, "200 OK", f"Contact: <sip:bob@127.0.0.1:{bob.local_port}>\r\n"
              "Content-Type: application/sdp\r\n", answer)  # fmt: skip
        ok = alice.final_response(sent, 10)
        assert ok.status == 200, ok.summary
        answered = audio_port(ok.body)
        assert answered not in (4000, 4002, offered), ok.body
        calls = ng(rtpengine, {"command": "list"}).get("calls")
        assert calls == [sent.call_id.encode()], calls
        # the answer's port is the one rtpengine opened for alice (its stream for her tag)
        query = ng(rtpengine, {"command": "query", "call-id": sent.call_id})
        tags = query["tags"]
        assert isinstance(tags, dict)
        streams = tags[sent.from_tag]["medias"][0]["streams"]
        assert answered in [s["local port"] for s in streams], query

        # abuse: the call's Call-ID and tags from another address (a new INVITE with alice's
        # From tag, and a re-INVITE in the dialog), each with an SDP naming that address
        mallory = stack.enter_context(SipClient(server.port, local_host="127.0.0.2"))
        forged = HAND_OFFER.replace(b"127.0.0.1", b"127.0.0.2").replace(b"4000", b"5554")
        aor = f"sip:bob@{server.domain}"
        for to_tag in (None, ok.to_tag()):
            attempt = mallory.request(
                "INVITE", aor, from_uri=f"sip:alice@{server.domain}", to_uri=aor,
                call_id=sent.call_id, from_tag=sent.from_tag, to_tag=to_tag, cseq=9,
                body=forged, content_type="application/sdp",
            )  # fmt: skip
            got = mallory.final_response(attempt, 10)
            assert got.status >= 400, got.summary
        after = ng(rtpengine, {"command": "query", "call-id": sent.call_id})
        assert b"127.0.0.2" not in bencode.encode(after), after
        assert after["tags"] == tags  # (rtpengine was not asked: the same call as before)


@pytest.mark.peers("rtpengine")
def test_a_call_that_needs_no_relay_goes_end_to_end(tmp_path: Path, rtpengine: int) -> None:
    """`relay = "when_needed"`, both phones on loopback naming their own address: the offer
    went to rtpengine before the proxy decided, but bob is told alice's own port, alice
    bob's."""
    server = rtpengine_server(tmp_path, rtpengine)
    set_toml_option(server.config_path, "media", "relay", "when_needed")
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        alice = stack.enter_context(SipClient(server.port))
        bob = stack.enter_context(SipClient(server.port))
        sent, inv = hand_call(server, alice, bob, USERS)
        assert audio_port(inv.body) == 4000, inv.body
        answer = HAND_OFFER.replace(b"o=a", b"o=b").replace(b"4000", b"4002")
        reply(bob, inv, "200 OK", f"Contact: <sip:bob@127.0.0.1:{bob.local_port}>\r\n"
              "Content-Type: application/sdp\r\n", answer)  # fmt: skip
        ok = alice.final_response(sent, 10)
        assert ok.status == 200 and audio_port(ok.body) == 4002, ok.body


@pytest.mark.peers("rtpengine")
def test_a_call_rtpengine_let_go_for_lack_of_media_ends(tmp_path: Path) -> None:
    """rtpengine's own `--timeout` (2 s here) ends a call without RTP; the server finds it gone
    at its next `query` and lets the call go, as for the built-in relay's silence timeout."""
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(run_rtpengine(tmp_path, "--timeout=2"))
        server = rtpengine_server(tmp_path, port)
        stack.enter_context(server)
        alice = stack.enter_context(SipClient(server.port))
        bob = stack.enter_context(SipClient(server.port))
        _, inv = hand_call(server, alice, bob, USERS)
        answer = HAND_OFFER.replace(b"o=a", b"o=b").replace(b"4000", b"4002")
        reply(bob, inv, "200 OK", f"Contact: <sip:bob@127.0.0.1:{bob.local_port}>\r\n"
              "Content-Type: application/sdp\r\n", answer)  # fmt: skip
        wait_until(lambda: "rtpengine let its media go" in server.log_text() or None, 30,
                   interval=0.5, what="the call let go")  # fmt: skip


def test_without_rtpengine_a_call_that_needs_the_relay_gets_503(tmp_path: Path) -> None:
    server = rtpengine_server(tmp_path, free_port())  # (nothing listens there)
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        alice = stack.enter_context(SipClient(server.port))
        aor = f"sip:bob@{server.domain}"
        _, reg = alice.authenticated_request(
            "REGISTER", f"sip:{server.domain}", username="alice", password=USERS["alice"],
            from_uri=f"sip:alice@{server.domain}", to_uri=f"sip:alice@{server.domain}",
            headers=[("Contact", f"<sip:alice@127.0.0.1:{alice.local_port}>")],
        )  # fmt: skip
        assert reg.status == 200, reg.summary
        invite = alice.request(
            "INVITE", aor, from_uri=f"sip:alice@{server.domain}", to_uri=aor, body=HAND_OFFER,
            content_type="application/sdp",
            headers=[("Contact", f"<sip:alice@127.0.0.1:{alice.local_port}>")],
        )  # fmt: skip
        answer = alice.final_response(invite, 10)
        assert (answer.status, answer.reason) == (503, "Media relay unavailable"), answer.summary
        assert "media relay" in server.log_text()


@pytest.mark.peers("rtpengine")
def test_unauthenticated_invites_hold_few_rtpengine_sessions(
    tmp_path: Path, rtpengine: int
) -> None:
    server = rtpengine_server(tmp_path, rtpengine)
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        mallory = stack.enter_context(SipClient(server.port))
        aor = f"sip:bob@{server.domain}"
        for i in range(60):
            sent = mallory.request(
                "INVITE", aor, from_uri=f"sip:mallory{i}@{server.domain}", to_uri=aor,
                body=HAND_OFFER, content_type="application/sdp",
            )  # fmt: skip
            assert mallory.final_response(sent, 10).status in (401, 407, 503)
        calls = ng(rtpengine, {"command": "list", "limit": 1000}).get("calls")
        assert isinstance(calls, list) and 0 < len(calls) <= 32, calls
