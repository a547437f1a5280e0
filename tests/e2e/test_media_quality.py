"""End to end: a line that loses every tenth packet shows as about 10 % audio loss.

A carrier call (a hand-driven SIP UAC from the trusted port, its own RTP socket) to the demo
client's number reaches voicemail through the built-in relay (`[media] relay = "always"`).
The caller skips the greeting with `#`, speaks two seconds of tone of which it never sends
every tenth packet, sends an RTCP receiver report about the greeting it heard, and ends with
`#`; the server hangs up. The call record, `heimbuero calls list` (table and --json), the
admin's call list and the metrics show the loss, the jitter and what the phone reported."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from heimbuero.media import ua_codec as c

from .audio import tone
from .harness import LOCALHOST, SipClient, free_ports, wait_until
from .test_voicemail import CLIENT, ack, invite, office, rtp_packets

pytestmark = [pytest.mark.e2e]

SSRC = 77


def receiver_report(reporter: int, source: int, fraction: int, lost: int, jitter: int) -> bytes:
    """An RTCP RR with one report block (RFC 3550 §6.4.2)."""
    body = reporter.to_bytes(4, "big") + source.to_bytes(4, "big") + bytes([fraction])
    body += lost.to_bytes(3, "big") + (0).to_bytes(4, "big") + jitter.to_bytes(4, "big")
    body += b"\x00" * 8
    return bytes([0x81, 201]) + (len(body) // 4).to_bytes(2, "big") + body


def test_a_sender_dropping_every_tenth_packet_shows_ten_percent_loss(tmp_path: Path) -> None:
    relay_ports = free_ports(8, consecutive=True)
    server, inbound = office(
        tmp_path, http=True, relay=("media", "always"), port_min=("media", relay_ports[0]),
        port_max=("media", relay_ports[-1]),
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(server.port, local_port=inbound))
        req, ok = invite(sip, rtp.getsockname()[1], inbound)
        assert ok.status == 200, ok.summary  # type: ignore[attr-defined]
        media_port = int(re.search(r"m=audio (\d+)", ok.body.decode()).group(1))  # type: ignore[attr-defined,union-attr]
        assert media_port in relay_ports, (media_port, relay_ports)
        ack(sip, req, ok)
        greeting = rtp_packets(rtp, time.monotonic() + 1.0)
        assert greeting, "no greeting through the relay"
        greeting_ssrc = greeting[0][1].ssrc
        dest = (LOCALHOST, media_port)
        seq, began = 0, time.monotonic()

        def clock() -> int:  # the phone's RTP clock (8000 Hz) runs with real time
            return 8000 + int((time.monotonic() - began) * 8000)

        for _ in range(3):  # '#' skips the greeting
            ev = c.TelephoneEvent(11, True, 10, 800).encode()
            rtp.sendto(c.RtpPacket(101, seq, 8000, SSRC, ev).encode(), dest)
            seq += 1
        wait_until(lambda: not rtp_packets(rtp, time.monotonic() + 0.2), 5, interval=0.01,
                   what="the greeting to stop")  # fmt: skip
        # what the caller's phone says of the greeting: nothing lost, jitter 40 units = 5 ms
        rtp.sendto(receiver_report(SSRC, greeting_ssrc, 0, 0, 40), (LOCALHOST, media_port + 1))
        sender = c.RtpSender(SSRC, 8, sequence=seq, timestamp=clock())
        start = time.monotonic()
        frames = c.frames(tone(440, 2.0))
        for i, frame in enumerate(frames):
            packet = sender.audio(frame)  # (numbered even when it is not sent)
            if i % 10 != 9:
                rtp.sendto(packet, dest)
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        seq += len(frames)
        end = clock()
        for _ in range(3):  # '#' ends the recording
            ev = c.TelephoneEvent(11, True, 10, 800).encode()
            rtp.sendto(c.RtpPacket(101, seq, end, SSRC, ev).encode(), dest)
            seq += 1

        def bye() -> Any:
            msg = sip.recv(0.2)
            return msg if msg is not None and msg.method == "BYE" else None

        msg = wait_until(bye, 10, interval=0.0, what="the server's BYE")
        resp = "SIP/2.0 200 OK\r\n" + "".join(f"Via: {v}\r\n" for v in msg.header_values("Via"))
        for name in ("From", "To", "Call-ID", "CSeq"):
            resp += f"{name}: {msg.header(name)}\r\n"
        sip.send_raw((resp + "Content-Length: 0\r\n\r\n").encode())

        def media() -> dict[str, Any] | None:
            rows = server.sql("SELECT media FROM call_records WHERE media IS NOT NULL")
            return json.loads(rows[0][0]) if rows else None

        stats = wait_until(media, 10, interval=0.3, what="the relay's statistics")
        sent = len(frames) - len(frames) // 10
        a = stats["a"]
        assert a["expected"] == seq and a["lost"] == len(frames) // 10, stats
        assert a["packets"] == seq - len(frames) // 10, stats
        assert 9.0 <= a["loss_pct"] <= 10.5, stats  # 10 of 106 (the DTMF packets count too)
        assert a["jitter_ms"] < 20, stats  # paced at 20 ms on loopback: no real jitter
        assert a["restarts"] == 0 and sent > 80
        b = stats["b"]
        assert b["packets"] > 0 and b["loss_pct"] == 0.0, stats  # the greeting
        assert b["reported"] == {"reports": 1, "loss_pct": 0.0, "lost": 0, "jitter_ms": 5.0}

        loss = f"{a['loss_pct']:.1f} %"
        table = server.cli("calls", "list", "--data", str(server.data_dir)).stdout
        header, row = table.splitlines()[0], table.splitlines()[1]
        assert "AUDIO LOSS" in header and "JITTER ms" in header, table
        assert loss in row, table
        listed = json.loads(
            server.cli("calls", "list", "--json", "--data", str(server.data_dir)).stdout
        )
        assert listed[0]["audio_loss_pct"] == a["loss_pct"], listed
        assert listed[0]["audio_jitter_ms"] >= 5.0, listed  # (the phone's report at least)
        assert listed[0]["media"]["b"]["reported"]["jitter_ms"] == 5.0, listed

        api = httpx.get(f"{server.http_url}/api/calls", params={"client": CLIENT}, timeout=10,
                        auth=("admin", server.demo_passwords["admin"])).json()  # fmt: skip
        assert api[0]["audio_loss_pct"] == a["loss_pct"] and api[0]["media"] == stats, api

        with httpx.Client(base_url=server.http_url, timeout=10) as http:
            page = http.get("/")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf, page.text
            r = http.post("/login", data={"csrf": csrf.group(1), "name": "admin",
                                          "password": server.demo_passwords["admin"]})  # fmt: skip
            assert r.status_code in (200, 303), r.text
            calls = http.get(f"/admin/calls?client={CLIENT}")
            assert calls.status_code == 200, calls.text
            assert "Audioverlust" in calls.text and f"<strong>{loss}</strong>" in calls.text
            assert "schlecht" in calls.text and "Gegenstelle meldet (RTCP)" in calls.text
            csv = http.get(f"/admin/calls.csv?client={CLIENT}")
            assert csv.status_code == 200 and "Audioverlust (%)" in csv.text.splitlines()[0]
            assert f",{a['loss_pct']:.1f}," in csv.text.splitlines()[1], csv.text

        with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=5) as resp_:
            metrics = resp_.read().decode()
        expected = re.search(r"^heimbuero_relay_packets_expected_total (\S+)$", metrics, re.M)
        assert expected and float(expected.group(1)) >= seq, metrics
        assert re.search(r"^heimbuero_relay_calls_poor_audio_total 1\.0$", metrics, re.M), metrics
        assert re.search(r"media of \S+: loss 9\.\d %, jitter", server.log_text()), "log line"
