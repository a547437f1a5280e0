"""End to end: the server answers a `voicemail:` step itself. A carrier call (a hand-driven
SIP UAC from the trusted port, with its own RTP socket) to the demo client's number reaches
the media applications through the proxy: 200 with an SDP answer, the greeting's RTP starts
on the ACK, `#` (RFC 4733) skips the greeting, the caller speaks a 440 Hz tone, `#` ends the
recording, the server hangs up with BYE; the WAV and the call record are checked."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import socket
import struct
import time
import urllib.request
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest

from heimbuero.media import ua_codec as c
from tests.smtpd import MailSink

from .audio import power, tone
from .harness import (
    LOCALHOST,
    Server,
    SipClient,
    free_port,
    free_ports,
    in_dialog,
    set_toml_option,
    wait_until,
)

pytestmark = [pytest.mark.e2e]

DOMAIN = "office.heimbuero.test"
CLIENT = "mueller"
NUMBER = "+49891234567"
CALLER = "+4915112345678"


def ack_notify(phone: SipClient, notify: object) -> None:
    """Answer a NOTIFY with 200 OK."""
    via = notify.header_values("Via")  # type: ignore[attr-defined]
    resp = "SIP/2.0 200 OK\r\n" + "".join(f"Via: {v}\r\n" for v in via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        resp += f"{name}: {notify.header(name)}\r\n"  # type: ignore[attr-defined]
    phone.send_raw((resp + "Content-Length: 0\r\n\r\n").encode())


def mailbox_rules() -> dict[str, object]:
    return {
        "client": CLIENT,
        "numbers": {
            NUMBER: {
                "rules": [
                    {
                        "name": "Mailbox",
                        "steps": [{"targets": [f"voicemail:{CLIENT}"], "timeout": 10}],
                    }
                ]
            }
        },
    }


def rtp_packets(sock: socket.socket, until: float) -> list[tuple[float, c.RtpPacket]]:
    out = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            break
        out.append((time.monotonic(), c.RtpPacket.parse(data)))
    return out


@pytest.mark.parametrize(
    ("relay", "sender"),
    [("never", ""), ("always", "zentrale"), ("never", "schulz")],
    ids=["never", "always", "sender-refused"],
)
def test_caller_leaves_a_voicemail(tmp_path: Path, relay: str, sender: str) -> None:
    """With `[media] relay = "always"` the same call's audio goes both ways through the relay
    process: the answer names a relay port, the greeting and the caller's tone cross it. The
    recording reaches the client's e-mail address as a WAV attachment (a local SMTP server).
    `[voicemail] sender`: unset, an agent (the message comes from him), or another client's
    user who may not message this client (the message comes as a note to self)."""
    relay_ports = free_ports(8, consecutive=True)
    mail = MailSink()
    server, inbound = office(
        tmp_path, http=True, relay=("media", relay), port_min=("media", relay_ports[0]),
        port_max=("media", relay_ports[-1]), host=("mail", "127.0.0.1"),
        port=("mail", mail.port), sender=("mail", "b@ex.de"),
    )  # fmt: skip
    # who the "new voicemail" message comes from: the office's user `zentrale`, or (unset)
    # the box's owner himself
    notifier = CLIENT
    if sender == "zentrale":
        notifier = sender
        server.cli("user", "add", notifier, "--role", "agent", "--password", "Anrufbeantworter-26",
                   "--data", str(server.data_dir))  # fmt: skip
    if sender:
        set_toml_option(server.config_path, "voicemail", "sender", sender)
    with contextlib.ExitStack() as stack:
        stack.enter_context(mail)
        stack.enter_context(server)
        r = httpx.patch(
            f"{server.http_url}/api/clients/{CLIENT}", json={"email": "meister@tischlerei.de"},
            auth=("admin", server.demo_passwords["admin"]), timeout=10,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        rtp_port = rtp.getsockname()[1]
        # the mailbox owner's phone registers: it gets the message waiting indication
        phone = stack.enter_context(SipClient(server.port))
        aor = f"sip:{CLIENT}@{DOMAIN}"
        _, reg = phone.authenticated_request(
            "REGISTER", f"sip:{DOMAIN}", username=CLIENT,
            password=server.demo_passwords[CLIENT], from_uri=aor, to_uri=aor,
            headers=[("Contact", f"<sip:{CLIENT}@127.0.0.1:{phone.local_port}>"),
                     ("Expires", "300")],
        )  # fmt: skip
        assert reg.status == 200, reg.summary
        mwi_call = None
        if relay == "always":  # (this run's phone subscribes to message waiting, RFC 3842)
            _, sub = phone.authenticated_request(
                "SUBSCRIBE", aor, username=CLIENT, password=server.demo_passwords[CLIENT],
                from_uri=aor, to_uri=aor,
                headers=[("Event", "message-summary"), ("Expires", "300"),
                         ("Contact", f"<sip:{CLIENT}@127.0.0.1:{phone.local_port}>")],
            )  # fmt: skip
            assert sub.status == 200, sub.summary
            mwi_call = sub.header("Call-ID")
            first = wait_until(lambda: phone.recv(0.2), 5, interval=0.0, what="first NOTIFY")
            assert first.method == "NOTIFY" and b"Voice-Message: 0/0" in first.body, first.body
            ack_notify(phone, first)
        sip = stack.enter_context(SipClient(server.port, local_port=inbound))
        ruri = f"sip:{NUMBER}@{DOMAIN}"
        offer = (
            f"v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\n"
            f"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        ).encode()
        invite = sip.request(
            "INVITE", ruri, from_uri=f"sip:{CALLER}@127.0.0.1:{inbound}", to_uri=ruri,
            headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{inbound}>")],
            body=offer, content_type="application/sdp",
        )  # fmt: skip
        ok = sip.final_response(invite, 20)
        assert ok.status == 200, ok.summary
        answer = ok.body.decode()
        assert re.search(r"m=audio (\d+) RTP/AVP 8 101", answer), answer
        media_port = int(re.search(r"m=audio (\d+)", answer).group(1))  # type: ignore[union-attr]
        assert (media_port in relay_ports) == (relay == "always"), (media_port, relay_ports)
        contact = re.search(r"<([^>]+)>", ok.header("Contact") or "").group(1)  # type: ignore[union-attr]
        routes = ok.header_values("Record-Route")
        assert routes, "the proxy stays in the path (Record-Route)"
        ack = sip.build_request(
            "ACK", contact, from_uri=invite.from_uri, to_uri=invite.to_uri,
            call_id=invite.call_id, from_tag=invite.from_tag, to_tag=ok.to_tag(),
            headers=[("Route", r) for r in routes],
        )  # fmt: skip
        acked_at = time.monotonic()
        sip.send(ack)
        first = rtp_packets(rtp, time.monotonic() + 2)[:1]
        assert first, "no RTP after the ACK"
        latency = first[0][0] - acked_at
        print(f"playback latency after ACK: {latency * 1000:.1f} ms")
        assert latency < 0.1
        dest = (LOCALHOST, media_port)
        for _ in range(3):  # '#' skips the greeting
            ev = c.TelephoneEvent(11, True, 10, 800).encode()
            rtp.sendto(c.RtpPacket(101, 1, 4000, 77, ev).encode(), dest)

        # the greeting stops; the recording starts when its packets stop
        def quiet() -> bool:
            return not rtp_packets(rtp, time.monotonic() + 0.2)

        wait_until(quiet, 5, interval=0.01, what="the greeting to stop")
        sender = c.RtpSender(77, 8, timestamp=8000)
        start = time.monotonic()
        for i, frame in enumerate(c.frames(tone(440, 1.5))):
            rtp.sendto(sender.audio(frame), dest)
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for _ in range(3):
            ev = c.TelephoneEvent(11, True, 10, 800).encode()
            rtp.sendto(c.RtpPacket(101, 2, 90000, 77, ev).encode(), dest)

        def bye():
            msg = sip.recv(0.2)
            return msg if msg is not None and msg.method == "BYE" else None

        msg = wait_until(bye, 5, interval=0.0, what="the server's BYE")
        via = msg.header_values("Via")
        resp = "SIP/2.0 200 OK\r\n" + "".join(f"Via: {v}\r\n" for v in via)
        for name in ("From", "To", "Call-ID", "CSeq"):
            resp += f"{name}: {msg.header(name)}\r\n"
        sip.send_raw((resp + "Content-Length: 0\r\n\r\n").encode())

        folder = server.data_dir / "voicemail" / CLIENT
        wavs = wait_until(lambda: sorted(folder.glob("*.wav")) or None, 5, what="the recording")
        with wave.open(str(wavs[0]), "rb") as w:
            pcm = w.readframes(w.getnframes())
            assert w.getframerate() == 8000
        assert 1.3 <= len(pcm) / 16000 <= 1.6, len(pcm) / 16000
        assert power(pcm, 440) > 50 * power(pcm, 1000)

        def record() -> str | None:
            out = server.cli("calls", "list", "--client", CLIENT, "--data", str(server.data_dir))
            return out.stdout if "voicemail" in out.stdout.split("\n", 1)[-1] else None

        text = wait_until(record, 10, interval=0.3, what="a call record with result voicemail")
        assert "voicemail:mueller" in text
        if relay == "always":  # the relay's count of the call's audio is kept with the record

            def media() -> dict[str, dict[str, int]] | None:
                rows = server.sql("SELECT media FROM call_records WHERE media IS NOT NULL")
                return json.loads(rows[0][0]) if rows else None

            stats = wait_until(media, 10, interval=0.3, what="the relay's statistics")
            assert stats["a"]["packets"] >= 75 and stats["a"]["lost"] == 0, stats  # 1.5 s tone
            assert stats["b"]["packets"] > 0, stats  # the greeting
            text = server.cli("calls", "list", "--data", str(server.data_dir)).stdout
            assert "AUDIO LOSS" in text and "0.0 %" in text, text
            with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=5) as resp:
                metrics = resp.read().decode()
            assert re.search(r"^heimbuero_relay_calls 0\.0$", metrics, re.M), metrics
            packets = re.search(r"^heimbuero_relay_packets_total (\S+)$", metrics, re.M)
            assert packets and float(packets.group(1)) >= 75, metrics
        rows = server.sql("SELECT client, owner, caller, path, seconds FROM voicemails")
        assert len(rows) == 1 and rows[0][:3] == (CLIENT, CLIENT, CALLER), rows
        assert server.data_dir / rows[0][3] == wavs[0] and abs(rows[0][4] - len(pcm) / 16000) < 0.01

        got: dict[str, object] = {}

        def owner_phone():
            msg = phone.recv(0.2)
            if msg is not None and msg.method in ("NOTIFY", "MESSAGE"):
                got.setdefault(msg.method, msg)
            return got if len(got) == 2 else None

        wait_until(owner_phone, 8, interval=0.0, what="the MWI NOTIFY and the MESSAGE")
        mwi = got["NOTIFY"]
        text = got["MESSAGE"].body.decode()  # type: ignore[attr-defined]
        sent_by = got["MESSAGE"].header("From") or ""  # type: ignore[attr-defined]
        assert f"sip:{notifier}@" in sent_by, sent_by
        if sender == "schulz":
            log_text = server.log_path.read_text(errors="replace")
            assert "[voicemail] sender schulz may not message mueller" in log_text
        assert "Neue Sprachnachricht von" in text and CALLER in text, text
        assert re.search(r"https?://\S+", text), text  # the recording's download link
        assert mwi.header("Event") == "message-summary"  # type: ignore[attr-defined]
        state = mwi.header("Subscription-State") or ""  # type: ignore[attr-defined]
        if mwi_call is not None:  # within the subscription, not unsolicited
            assert mwi.header("Call-ID") == mwi_call and state.startswith("active;expires=")  # type: ignore[attr-defined]
        else:
            assert state == "active"
        summary = mwi.body.decode()  # type: ignore[attr-defined]
        assert "Messages-Waiting: yes" in summary and "Voice-Message: 1/0" in summary
        sent = mail.wait_for(lambda m: m["To"] == "meister@tischlerei.de")
        assert CALLER in str(sent["Subject"]), sent["Subject"]
        [wav] = [p for p in sent.iter_attachments() if p.get_content_type() == "audio/wav"]
        assert wav.get_content() == wavs[0].read_bytes()  # the recording itself


# -- abuse: a caller that never hangs up, too many calls at once ----------------------------


def office(tmp_path: Path, http: bool = False, **toml: tuple[str, object]) -> tuple[Server, int]:
    """The demo office whose mueller number goes to voicemail:mueller; `toml`: KEY=(SECTION,
    VALUE) settings; (the server, not started, and the carrier's trusted port)."""
    inbound = free_port()
    server = Server(
        tmp_path / "server", domain=DOMAIN, demo=True, http=http,
        sip_options={"trusted_peers": [f"127.0.0.1:{inbound}"]},
    )  # fmt: skip
    server.prepare()
    for key, (section, value) in toml.items():
        set_toml_option(server.config_path, section, key, value)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(mailbox_rules()), encoding="utf-8")
    server.cli("rules", "import", CLIENT, str(rules), "--data", str(server.data_dir))
    return server, inbound


def invite(sip: SipClient, rtp_port: int, inbound: int) -> tuple[object, object]:
    ruri = f"sip:{NUMBER}@{DOMAIN}"
    offer = (
        f"v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\n"
    ).encode()
    req = sip.request(
        "INVITE", ruri, from_uri=f"sip:{CALLER}@127.0.0.1:{inbound}", to_uri=ruri,
        headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{inbound}>")],
        body=offer, content_type="application/sdp",
    )  # fmt: skip
    return req, sip.final_response(req, 20)


def ack(sip: SipClient, req, ok) -> None:  # type: ignore[no-untyped-def]
    contact = re.search(r"<([^>]+)>", ok.header("Contact") or "").group(1)
    sip.send(
        sip.build_request(
            "ACK",
            contact,
            from_uri=req.from_uri,
            to_uri=req.to_uri,
            call_id=req.call_id,
            from_tag=req.from_tag,
            to_tag=ok.to_tag(),
            headers=[("Route", r) for r in ok.header_values("Record-Route")],
        )  # fmt: skip
    )


def test_a_caller_that_never_hangs_up_is_ended_at_max_seconds(tmp_path: Path) -> None:
    server, inbound = office(tmp_path, max_seconds=("voicemail", 2))
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(server.port, local_port=inbound))
        req, ok = invite(sip, rtp.getsockname()[1], inbound)
        assert ok.status == 200, ok.summary  # type: ignore[attr-defined]
        ack(sip, req, ok)
        media_port = int(re.search(r"m=audio (\d+)", ok.body.decode()).group(1))  # type: ignore[attr-defined,union-attr]
        dest = (LOCALHOST, media_port)
        assert rtp_packets(rtp, time.monotonic() + 1)
        ev = c.TelephoneEvent(11, True, 10, 800).encode()
        rtp.sendto(c.RtpPacket(101, 1, 4000, 77, ev).encode(), dest)  # skip the greeting
        sender = c.RtpSender(77, 8)
        started = time.monotonic()
        bye_at = None
        while time.monotonic() - started < 8 and bye_at is None:  # audio, never # nor BYE
            rtp.sendto(sender.audio(b"\x10\x00" * 160), dest)
            msg = sip.recv(0.02)
            if msg is not None and msg.method == "BYE":
                bye_at = time.monotonic()
        assert bye_at is not None, "the server never hung up"
        assert bye_at - started < 2 + 1.5
        folder = server.data_dir / "voicemail" / CLIENT
        wavs = wait_until(lambda: sorted(folder.glob("*.wav")) or None, 5, what="the recording")
        with wave.open(str(wavs[0]), "rb") as w:
            assert w.getnframes() <= 2 * 8000


def test_too_many_media_sessions_get_503_with_a_reason(tmp_path: Path) -> None:
    server, inbound = office(tmp_path, max_sessions=("mediaapp", 1))
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(server.port, local_port=inbound))
        req, ok = invite(sip, rtp.getsockname()[1], inbound)
        assert ok.status == 200, ok.summary  # type: ignore[attr-defined]
        ack(sip, req, ok)
        _, busy = invite(sip, rtp.getsockname()[1], inbound)
        assert busy.status in (500, 503), busy.summary  # type: ignore[attr-defined]
        assert "too many media sessions" in (busy.header("Reason") or ""), busy.summary  # type: ignore[attr-defined]


# -- announcements ----------------------------------------------------------------------------


def announce_office(tmp_path: Path, steps: list[dict[str, object]]) -> tuple[Server, int]:
    server, inbound = office(tmp_path)
    doc = {"client": CLIENT, "numbers": {NUMBER: {"rules": [{"name": "Ansage", "steps": steps}]}}}
    rules = tmp_path / "rules-announce.json"
    rules.write_text(json.dumps(doc), encoding="utf-8")
    server.cli("rules", "import", CLIENT, str(rules), "--data", str(server.data_dir))
    folder = server.data_dir / "announcements" / CLIENT
    folder.mkdir(parents=True)
    with wave.open(str(folder / "hinweis.wav"), "wb") as w:  # 16 kHz: converted by sox
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        n = 16000 // 2
        w.writeframes(
            struct.pack(
                f"<{n}h",
                *(int(9000 * math.sin(2 * math.pi * 600 * i / 16000)) for i in range(n)),
            )
        )
    return server, inbound


def heard(packets: list[tuple[float, c.RtpPacket]]) -> bytes:
    return b"".join(c.decode(p.payload_type, p.payload) for _, p in packets)


def test_announcement_then_the_next_step(tmp_path: Path) -> None:
    server, inbound = announce_office(
        tmp_path,
        [
            {"targets": ["announce:hinweis"], "timeout": 10},
            {"targets": [f"voicemail:{CLIENT}"], "timeout": 10},
        ],
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(server.port, local_port=inbound))
        req, ok = invite(sip, rtp.getsockname()[1], inbound)
        early = [m for m in sip.received if m.status == 183]
        assert early and b"m=audio" in early[0].body, [m.start_line for m in sip.received]
        assert ok.status == 200, ok.summary  # type: ignore[attr-defined]  # then voicemail
        ack(sip, req, ok)
        pcm = heard(rtp_packets(rtp, time.monotonic() + 0.3))
        assert len(pcm) >= 0.45 * 16000  # the announcement arrived as early media
        assert power(pcm[:8000], 600) > 50 * power(pcm[:8000], 1000)


def test_announcement_that_ends_the_call(tmp_path: Path) -> None:
    server, inbound = announce_office(
        tmp_path, [{"targets": ["announce:hinweis;end"], "timeout": 10}]
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(server.port, local_port=inbound))
        req, ok = invite(sip, rtp.getsockname()[1], inbound)
        assert ok.status == 200, ok.summary  # type: ignore[attr-defined]
        acked = time.monotonic()
        ack(sip, req, ok)
        packets = rtp_packets(rtp, time.monotonic() + 1.5)
        assert packets and packets[0][0] - acked < 0.1
        pcm = heard(packets)
        assert power(pcm, 600) > 50 * power(pcm, 1000)

        def bye():
            msg = sip.recv(0.2)
            return msg if msg is not None and msg.method == "BYE" else None

        wait_until(bye, 5, interval=0.0, what="the BYE after the announcement")


# -- greetings and announcements uploaded through the API and the CLI -------------------------


def wav_bytes(hz: float, seconds: float, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone(hz, seconds, rate))
    return buf.getvalue()


def test_the_client_uploads_a_greeting_and_callers_hear_it(tmp_path: Path) -> None:
    server, inbound = office(tmp_path, http=True)
    pw = server.demo_passwords
    url = f"/api/voicemail/{CLIENT}/greeting"
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        api = stack.enter_context(httpx.Client(base_url=server.http_url, timeout=30))
        owner, other = (CLIENT, pw[CLIENT]), ("schulz", pw["schulz"])
        # another business's mailbox looks like none; garbage and oversize are refused
        r = api.put(url, content=wav_bytes(800, 1.0), auth=other)
        assert r.status_code == 404, r.text
        r = api.put(url, content=b"MZ\x90\x00 not audio" * 100, auth=owner)
        assert r.status_code == 422 and "not an audio file" in r.text, r.text
        r = api.put(url, content=b"RIFF" + b"\x00" * 1000, auth=owner)
        assert r.status_code == 422 and "could not be read" in r.text, r.text
        r = api.put(url, content=b"RIFF" + b"\x00" * (11 * 1024 * 1024), auth=owner)
        assert r.status_code in (413, 422), r.status_code
        assert api.get(url, auth=owner).status_code == 404  # still the spoken default
        r = api.put(url, content=wav_bytes(800, 1.0), auth=owner)
        assert r.status_code == 200 and abs(r.json()["seconds"] - 1.0) < 0.05, r.text
        server.kill()  # kill -9 right after the answer: the greeting it confirmed is there
        server.start()

        def fetched() -> httpx.Response | None:
            try:
                return api.get(url, auth=owner)
            except httpx.TransportError:
                return None  # (HTTP listens a moment after SIP answers)

        got = wait_until(fetched, 10, interval=0.1, what="the API after the restart")
        assert got.status_code == 200 and got.content.startswith(b"RIFF")
        assert api.get(url, auth=other).status_code == 404

        # a caller hears the uploaded greeting (800 Hz), not the spoken default
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(server.port, local_port=inbound))
        req, ok = invite(sip, rtp.getsockname()[1], inbound)
        assert ok.status == 200, ok.summary  # type: ignore[attr-defined]
        ack(sip, req, ok)
        pcm = heard(rtp_packets(rtp, time.monotonic() + 0.8))
        assert len(pcm) >= 0.5 * 16000, len(pcm)
        assert power(pcm[:8000], 800) > 50 * power(pcm[:8000], 400)

        # announcements by the CLI; the owner lists them through the API
        (tmp_path / "ansage.wav").write_bytes(wav_bytes(600, 0.5))
        out = server.cli("announcement", "set", CLIENT, "urlaub", str(tmp_path / "ansage.wav"),
                         "--data", str(server.data_dir))  # fmt: skip
        assert "announcement urlaub of mueller set (0.5 s)" in out.stdout, out.stdout
        listed = api.get(f"/api/clients/{CLIENT}/announcements", auth=owner).json()
        assert [a["name"] for a in listed] == ["urlaub"], listed
        assert api.get(f"/api/clients/{CLIENT}/announcements", auth=other).status_code == 404
        out = server.cli("greeting", "delete", CLIENT, "--data", str(server.data_dir))
        assert "spoken default" in out.stdout
        assert api.get(url, auth=owner).status_code == 404


# -- the caller hangs up instead of pressing # ------------------------------------------------


def _answered_call(server: Server, inbound: int, stack: contextlib.ExitStack) -> tuple[
    SipClient, socket.socket, tuple[str, int], Any, Any
]:  # fmt: skip
    """A carrier call to the voicemail, answered and ACKed; (sip, rtp socket, the server's
    media address, the INVITE, its 200)."""
    rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    rtp.bind((LOCALHOST, 0))
    sip = stack.enter_context(SipClient(server.port, local_port=inbound))
    ruri = f"sip:{NUMBER}@{DOMAIN}"
    offer = (
        f"v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp.getsockname()[1]} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\n"
    ).encode()
    invite = sip.request(
        "INVITE", ruri, from_uri=f"sip:{CALLER}@127.0.0.1:{inbound}", to_uri=ruri,
        headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{inbound}>")],
        body=offer, content_type="application/sdp",
    )  # fmt: skip
    ok = sip.final_response(invite, 20)
    assert ok.status == 200, ok.summary()
    port = int(re.search(r"m=audio (\d+)", ok.body.decode()).group(1))  # type: ignore[union-attr]
    in_dialog(sip, "ACK", invite, ok, 1)
    return sip, rtp, (LOCALHOST, port), invite, ok


def test_a_caller_who_hangs_up_after_speaking_leaves_the_message(tmp_path: Path) -> None:
    """Most callers end a voicemail by hanging up, not with #: what they said is kept."""
    server, inbound = office(tmp_path)
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        sip, rtp, dest, invite, ok = _answered_call(server, inbound, stack)
        for _ in range(3):  # '#' skips the greeting
            rtp.sendto(c.RtpPacket(101, 1, 4000, 77, c.TelephoneEvent(11, True, 10, 800).encode())
                       .encode(), dest)  # fmt: skip
        wait_until(lambda: not rtp_packets(rtp, time.monotonic() + 0.2), 5, interval=0.01,
                   what="the greeting to stop")  # fmt: skip
        sender = c.RtpSender(77, 8, timestamp=8000)
        start = time.monotonic()
        for i, frame in enumerate(c.frames(tone(440, 1.5))):
            rtp.sendto(sender.audio(frame), dest)
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        bye = in_dialog(sip, "BYE", invite, ok, 2)
        assert sip.final_response(bye, 5).status == 200
        folder = server.data_dir / "voicemail" / CLIENT
        wavs = wait_until(lambda: sorted(folder.glob("*.wav")) or None, 5, what="the recording")
        with wave.open(str(wavs[0]), "rb") as w:
            pcm = w.readframes(w.getnframes())
        assert 1.3 <= len(pcm) / 16000 <= 1.6, len(pcm) / 16000
        assert power(pcm, 440) > 50 * power(pcm, 1000)
        rows = wait_until(lambda: server.sql("SELECT caller FROM voicemails") or None, 5,
                          what="the voicemail row")  # fmt: skip
        assert rows == [(CALLER,)]


def test_a_caller_who_hangs_up_during_the_greeting_leaves_nothing(tmp_path: Path) -> None:
    server, inbound = office(tmp_path)
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        sip, rtp, _, invite, ok = _answered_call(server, inbound, stack)
        assert rtp_packets(rtp, time.monotonic() + 0.5), "the greeting plays"
        bye = in_dialog(sip, "BYE", invite, ok, 2)
        assert sip.final_response(bye, 5).status == 200
        time.sleep(1)
        assert server.sql("SELECT count(*) FROM voicemails") == [(0,)]
        assert not list((server.data_dir / "voicemail").glob(f"{CLIENT}/*.wav"))
        assert "nothing recorded (the caller hung up first)" in server.log_text()
