"""rtpengine as the media relay (`[media] backend = "rtpengine"`), with hand-driven phones on
loopback and rtpengine (userspace, `--table=-1`) started by the test.

- A call with `relay = "always"`: each side is told rtpengine's ports, never the other's;
  with `when_needed` and nobody behind NAT, each side is told the other's own.
- rtpengine not answering: a new call that needs the relay gets `503 Media relay
  unavailable`; registering is not affected.
- Abuse: INVITEs nobody authenticated cannot make rtpengine hold more than a few sessions
  per source address.
- Statistics: rtpengine counts packets and bytes but no loss or jitter of its own; the
  phones' RTCP reports (sender reports and receiver reports) give them, so a call whose
  caller drops 5 of 250 packets and sends unevenly shows the callee's reported loss and
  jitter, and the relay's own loss and jitter are unknown (null), never a false 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from heimbuero.media import bencode

from .conftest import USERS
from .harness import (
    HAND_OFFER,
    HarnessError,
    Server,
    SipClient,
    free_port,
    free_ports,
    hand_call,
    in_dialog,
    next_request,
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


class Phone:
    """A hand-driven phone's media: RTP on port P, RTCP on P + 1; it counts what it receives
    (RFC 3550 A.3 loss, A.8 jitter at 8000 Hz) and sends sender reports with one reception
    report block about the other side, as a phone does."""

    def __init__(self, ssrc: int) -> None:
        self.ssrc, self.port = ssrc, 0
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while not self.port:
            with contextlib.suppress(OSError):
                port = free_ports(2, consecutive=True)[0]
                self.rtp.bind(("127.0.0.1", port))
                self.rtcp.bind(("127.0.0.1", port + 1))
                self.port = port
        self.dest = ("127.0.0.1", 0)
        self.seqs: list[int] = []
        self.jitter = 0.0
        self.transit: float | None = None
        self.peer_ssrc = 0
        self.lsr, self.lsr_at = 0, 0.0  # the other's last sender report: NTP middle bits, when
        self.reported = (0, 0)  # (expected, received) at the previous report

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()

    def send(self, seq: int, ts: int) -> None:
        header = struct.pack("!BBHII", 0x80, 8, seq, ts, self.ssrc)
        self.rtp.sendto(header + b"\xd5" * 160, self.dest)

    def drain(self) -> None:
        while select.select([self.rtp, self.rtcp], [], [], 0)[0]:
            for sock in select.select([self.rtp, self.rtcp], [], [], 0)[0]:
                data = sock.recv(2048)
                now = time.monotonic()
                if sock is self.rtp and len(data) >= 12:
                    seq, ts, ssrc = struct.unpack("!HII", data[2:12])
                    self.peer_ssrc = ssrc
                    self.seqs.append(seq)
                    transit = now * 8000 - ts
                    if self.transit is not None:
                        self.jitter += (abs(transit - self.transit) - self.jitter) / 16
                    self.transit = transit
                elif sock is self.rtcp and len(data) >= 20 and data[1] == 200:
                    msw, lsw = struct.unpack("!II", data[8:16])
                    self.lsr, self.lsr_at = (msw & 0xFFFF) << 16 | lsw >> 16, now

    def report(self, packets: int) -> None:
        """A sender report (RFC 3550 6.4.1) with one block about what it received."""
        self.drain()
        ntp = time.time() + 2208988800
        body = struct.pack("!IIIIII", self.ssrc, int(ntp), int(ntp % 1 * 2**32), packets * 160,
                           packets, packets * 160)  # fmt: skip
        if self.peer_ssrc:
            expected = max(self.seqs) - min(self.seqs) + 1
            lost = expected - len(self.seqs)
            interval = expected - self.reported[0]
            fraction = (lost - (self.reported[0] - self.reported[1])) * 256 // max(interval, 1)
            self.reported = (expected, len(self.seqs))
            # (delay since its last SR a millisecond short: the time rtpengine took to pass it)
            dlsr = int(max(time.monotonic() - self.lsr_at - 0.001, 0) * 65536) if self.lsr else 0
            body += struct.pack("!IB", self.peer_ssrc, max(fraction, 0)) + lost.to_bytes(3, "big")
            body += struct.pack("!IIII", max(self.seqs), int(self.jitter), self.lsr, dlsr)
        count = 1 if self.peer_ssrc else 0
        packet = bytes([0x80 | count, 200]) + struct.pack("!H", len(body) // 4) + body
        self.rtcp.sendto(packet, (self.dest[0], self.dest[1] + 1))


@pytest.mark.peers("rtpengine")
def test_loss_and_jitter_through_rtpengine_come_from_the_phones_rtcp(
    tmp_path: Path, rtpengine: int
) -> None:
    """alice and bob each send 250 packets unevenly (every other one 8 ms late); alice never
    sends 5 of hers. Both phones send RTCP as phones do; the call's statistics show bob's
    report of alice's audio (5 lost, jitter > 0), alice's of bob's (nothing lost), the
    packets rtpengine counted, and no loss or jitter of rtpengine's own (unknown: it counts
    none)."""
    server = rtpengine_server(tmp_path, rtpengine)
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        alice = stack.enter_context(SipClient(server.port))
        bob = stack.enter_context(SipClient(server.port))
        a_media, b_media = Phone(0x11111111), Phone(0x22222222)
        stack.callback(a_media.close)
        stack.callback(b_media.close)
        sent, inv = hand_call(server, alice, bob, USERS)
        answer = HAND_OFFER.replace(b"o=a", b"o=b").replace(b"4000", str(b_media.port).encode())
        reply(bob, inv, "200 OK", f"Contact: <sip:bob@127.0.0.1:{bob.local_port}>\r\n"
              "Content-Type: application/sdp\r\n", answer)  # fmt: skip
        ok = alice.final_response(sent, 10)
        assert ok.status == 200, ok.summary
        alice.send(alice.build_request(
            "ACK", re.search(r"<([^>]+)>", ok.header("Contact") or "").group(1),  # type: ignore[union-attr]
            from_uri=sent.from_uri, to_uri=sent.to_uri, call_id=sent.call_id,
            from_tag=sent.from_tag, to_tag=ok.to_tag(), cseq=2,
            headers=[("Route", r) for r in ok.header_values("Record-Route")],
        ))  # fmt: skip
        a_media.dest = ("127.0.0.1", audio_port(ok.body))
        b_media.dest = ("127.0.0.1", audio_port(inv.body))
        start = time.monotonic()
        next_report = {a_media: start + 0.2, b_media: start + 0.7}
        for i in range(250):
            late = 0.008 if i % 2 else 0.0
            time.sleep(max(0.0, start + i * 0.02 + late - time.monotonic()))
            if not 50 <= i < 55:
                a_media.send(i, i * 160)
            b_media.send(i, i * 160)
            a_media.drain()
            b_media.drain()
            # Each phone reports every 1.5 s (rtpengine takes one report per second and
            # phone), bob 0.5 s after alice: rtpengine rates a call (MOS) only from receiver
            # reports that give a round trip, through the other's sender report they name
            # (LSR) and the time since (DLSR). Reporting at the same moment, the second phone
            # would name the first one's report of a moment ago (DLSR 0: no round trip).
            for phone in (a_media, b_media):
                if time.monotonic() >= next_report[phone]:
                    next_report[phone] += 1.5
                    phone.report(i)

        def all_in() -> bool | None:  # (loopback: bob gets all but the 5 never sent)
            b_media.drain()
            return len(b_media.seqs) == 245 or None

        wait_until(all_in, 5, interval=0.01, what="alice's last packets at bob")

        def reports_in() -> dict[str, object] | None:
            """rtpengine's answer once it holds a report (a MOS) from each phone."""
            answer = ng(rtpengine, {"command": "query", "call-id": sent.call_id})
            ssrcs = answer.get("SSRC")
            if not isinstance(ssrcs, dict):
                return None
            return answer if sum("average MOS" in v for v in ssrcs.values()) == 2 else None

        try:  # (what rtpengine made of the reports, in the message when it made nothing)
            wait_until(reports_in, 5, interval=0.2, what="rtpengine's reports of both phones")
        except HarnessError:
            raise AssertionError(
                ng(rtpengine, {"command": "query", "call-id": sent.call_id})
            ) from None
        bye = in_dialog(alice, "BYE", sent, ok, 3)
        reply(bob, next_request(bob, "BYE"), "200 OK")
        assert alice.final_response(bye, 10).status == 200
        pattern = r"media of \S+: .*caller sent (.*); callee sent (.*)"
        found = wait_until(lambda: re.search(pattern, server.log_text()), 10, what="media stats")
        caller, callee = found.group(1), found.group(2)
        # what rtpengine counted, and what it cannot know: unknown, not 0
        assert caller.startswith("245 packets, unknown lost (unknown %)"), caller
        assert "jitter unknown ms" in caller and callee.startswith("250 packets"), callee
        # bob's RTCP about alice's audio: the 5 she never sent, and her uneven sending
        reported = re.search(r"the other phone reported (\d+) lost, ([\d.]+) %, jitter "
                             r"([\d.]+) ms", caller)  # fmt: skip
        assert reported is not None, caller
        assert int(reported.group(1)) == 5, caller
        assert float(reported.group(2)) > 0 and float(reported.group(3)) > 0, caller
        assert "the other phone reported 0 lost" in callee, callee
