"""Listening to voicemail by phone (`*86`), through the real `heimbuero serve` on the demo
office whose number goes to `voicemail:mueller`. Two callers leave messages (a 500 Hz and a
1500 Hz tone, from the carrier's trusted port); the owner of Tischlerei Müller dials *86 with
his password: he hears the German summary, the first message (500 Hz) to its end and the key
menu, then the second (1500 Hz), which he deletes with 7 (RFC 4733) while it plays; "gelöscht",
the end prompt and the server's BYE follow. The store then holds only the first message,
heard; the deleted one's WAV is gone; his registered phone gets message-summary 0/1. Before
each message the server said who called and when ("Nachricht 1, von 0 1 5 1 …, heute um 0
Uhr 5."): its espeak-ng prompt for exactly that text is in the media cache; # during that
intro skips the message like # during the message.

Also: # by SIP INFO skips a message before its end (it stays new), a hang-up in the middle
leaves it new; abuse: *86 without or with a wrong password (407/403, no audio), an INVITE
straight to the media applications' port (403), other users reach no one else's box."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from heimbuero.media import ua_codec as c

from .audio import media_port, offer, press, share, speak, tone
from .harness import (
    LOCALHOST,
    Server,
    SipClient,
    digest_response,
    free_port,
    in_dialog,
    next_request,
    pick_challenge,
    reply,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("espeak-ng")]

DOMAIN = "heimbuero.test"
NUMBER = "+49891234567"
CALLER = "+4915112345678"
LOW, HIGH = 500.0, 1500.0  # the two messages' tones (the beep is 1000 Hz)


@pytest.fixture
def office(tmp_path: Path) -> Any:
    """The demo office, mueller's number straight to his client's mailbox; (server, the
    carrier's trusted port)."""
    inbound = free_port()
    server = Server(
        tmp_path / "server", domain=DOMAIN, demo=True, http=True,
        sip_options={"trusted_peers": [f"127.0.0.1:{inbound}"]},
    )  # fmt: skip
    server.prepare()
    rules = tmp_path / "rules.json"
    steps = [{"targets": ["voicemail:mueller"], "timeout": 10}]
    rules.write_text(json.dumps({"client": "mueller", "numbers": {
        NUMBER: {"rules": [{"name": "Mailbox", "steps": steps}]}}}), encoding="utf-8")  # fmt: skip
    server.cli("rules", "import", "mueller", str(rules), "--data", str(server.data_dir))
    with server:
        yield server, inbound


def leave(server: Server, inbound: int, hz: float) -> None:
    """A carrier's caller leaves a 1.5 s tone: # skips the greeting, # ends the recording."""
    with contextlib.ExitStack() as stack:
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(server.port, local_port=inbound))
        ruri = f"sip:{NUMBER}@{DOMAIN}"
        inv = sip.request(
            "INVITE", ruri, from_uri=f"sip:{CALLER}@127.0.0.1:{inbound}", to_uri=ruri,
            headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{inbound}>")],
            body=offer(rtp.getsockname()[1]), content_type="application/sdp",
        )  # fmt: skip
        ok = sip.final_response(inv, 20)
        assert ok.status == 200, ok.summary()
        in_dialog(sip, "ACK", inv, ok, 1)
        media = media_port(ok)
        sender = c.RtpSender(77, 8, timestamp=1000)
        rtp.settimeout(3)
        rtp.recvfrom(2048)  # the greeting plays
        press(rtp, sender, media, "#")  # skip it
        time.sleep(0.5)
        speak(rtp, sender, media, tone(hz, 1.5))
        press(rtp, sender, media, "#")
        reply(sip, next_request(sip, "BYE", 10), "200 OK")


def register(server: Server, phone: SipClient) -> None:
    aor = f"sip:mueller@{DOMAIN}"
    _, reg = phone.authenticated_request(
        "REGISTER", f"sip:{DOMAIN}", username="mueller",
        password=server.demo_passwords["mueller"], from_uri=aor, to_uri=aor,
        headers=[("Contact", f"<sip:mueller@127.0.0.1:{phone.local_port}>"), ("Expires", "300")],
    )  # fmt: skip
    assert reg.status == 200, reg.summary()


def dial(sip: SipClient, user: str, password: str | None, sdp: bytes, code: str = "*86") -> Any:
    """`user` dials `code`: challenged first (407), then with `password` (None: not at all);
    (the INVITE sent, its final answer)."""
    ruri, me = f"sip:{code}@{DOMAIN}", f"sip:{user}@{DOMAIN}"
    contact = ("Contact", f"<sip:{user}@127.0.0.1:{sip.local_port}>")
    first = sip.request("INVITE", ruri, from_uri=me, to_uri=ruri, body=sdp,
                        content_type="application/sdp", headers=[contact])  # fmt: skip
    challenge = sip.final_response(first, 5)
    assert challenge.status == 407, challenge.summary()
    sip.ack_non_2xx(first, challenge)
    if password is None:
        return first, challenge
    auth = digest_response(pick_challenge(challenge, "MD5"), method="INVITE", uri=ruri,
                           username=user, password=password)  # fmt: skip
    inv = sip.request(
        "INVITE", ruri, from_uri=me, to_uri=ruri, call_id=first.call_id, from_tag=first.from_tag,
        cseq=2, body=sdp, content_type="application/sdp",
        headers=[contact, ("Proxy-Authorization", auth)],
    )  # fmt: skip
    return inv, sip.final_response(inv, 20)


def windows(
    rtp: socket.socket, until: float, quiet: float = 3.0, stop_after: int = 0
) -> list[bytes]:
    """The audio received in 200 ms windows, until `until`, `quiet` seconds without RTP or
    (when given) `stop_after` windows."""
    out, buf = [], b""
    while time.monotonic() < until and not (stop_after and len(out) >= stop_after):
        rtp.settimeout(quiet)
        try:
            data, _ = rtp.recvfrom(2048)
        except TimeoutError:
            break
        pkt = c.RtpPacket.parse(data)
        buf += c.decode(pkt.payload_type, pkt.payload)
        if len(buf) >= 3200:
            out.append(buf)
            buf = b""
    return out


def rows(server: Server) -> list[tuple[Any, ...]]:
    return server.sql("SELECT id, heard, path FROM voicemails ORDER BY id")


def created(server: Server) -> list[datetime]:
    """When each stored voicemail was left (UTC), oldest first."""
    out = []
    for (value,) in server.sql("SELECT created_at FROM voicemails ORDER BY id"):
        at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        out.append(at.replace(tzinfo=UTC) if at.tzinfo is None else at)
    return out


def intro_spoken(server: Server, number: int, at: datetime) -> bool:
    """Whether the server made the prompt "Nachricht N, von <CALLER's digits>, heute um H Uhr
    M." (or "gestern", when the box's midnight passed since) for a message left at `at`: the
    espeak-ng cache names each prompt by the hash of its text (media/ua.speak)."""
    local = at.astimezone(ZoneInfo("Europe/Berlin"))
    clock = f"um {local.hour} Uhr" + (f" {local.minute}" if local.minute else "")
    digits = " ".join("0" + CALLER[3:])  # +49 151 … said as 0 1 5 1 …
    cache = server.data_dir / "media-cache" / "intros"
    for day in ("heute", "gestern"):
        text = f"Nachricht {number}, von {digits}, {day} {clock}."
        digest = hashlib.sha256(f"de\0{text}".encode()).hexdigest()
        if (cache / f"tts-{digest}.wav").is_file():
            return True
    return False


def test_the_owner_listens_keeps_the_first_and_deletes_the_second(office: Any) -> None:
    server, inbound = office
    with contextlib.ExitStack() as stack:
        phone = stack.enter_context(SipClient(server.port))  # his desk phone: message waiting
        register(server, phone)
        leave(server, inbound, LOW)
        leave(server, inbound, HIGH)
        wait_until(lambda: len(rows(server)) == 2 or None, 10, what="two voicemails stored")
        [(first, _, first_path), (second, _, second_path)] = rows(server)
        assert (server.data_dir / second_path).is_file()
        left = created(server)
        assert not intro_spoken(server, 1, left[0])  # (nothing said before *86)

        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(server.port))
        inv, ok = dial(sip, "mueller", server.demo_passwords["mueller"],
                       offer(rtp.getsockname()[1]))  # fmt: skip
        assert ok.status == 200, ok.summary()
        in_dialog(sip, "ACK", inv, ok, 2)
        media = media_port(ok)
        sender = c.RtpSender(99, 8, timestamp=1000)
        # listen until the second message's tone plays, then press 7
        heard: list[str] = []
        buf = b""
        deadline = time.monotonic() + 40
        rtp.settimeout(3)
        while time.monotonic() < deadline:
            data, _ = rtp.recvfrom(2048)
            pkt = c.RtpPacket.parse(data)
            buf += c.decode(pkt.payload_type, pkt.payload)
            if len(buf) < 3200:
                continue
            window, buf = buf, b""
            found = next((n for n, hz in (("low", LOW), ("high", HIGH))
                          if share(window, hz) > 0.3), "other")  # fmt: skip
            if not heard or heard[-1] != found:
                heard.append(found)
            if found == "high":
                break
        assert heard[0] == "other", heard  # the summary comes first
        assert "low" in heard and heard[-1] == "high", heard  # oldest first, then the second
        assert heard.index("low") < len(heard) - 2, heard  # the menu between the two
        press(rtp, sender, media, "7")
        after = windows(rtp, time.monotonic() + 20)
        high = [w for w in after if share(w, HIGH) > 0.3]
        assert len(high) <= 3, len(high)  # 7 cut the 1.5 s message short
        spoken = [w for w in after if share(w, HIGH) < 0.1 and share(w, LOW) < 0.1]
        assert len(spoken) >= 10, len(after)  # "gelöscht", then the end prompt
        reply(sip, next_request(sip, "BYE", 10), "200 OK")  # then the server hangs up

        # the deleted message is gone (its row committed before "gelöscht", its WAV
        # removed); the first was heard to its end
        assert rows(server) == [(first, 1, first_path)]
        assert not (server.data_dir / second_path).exists()
        # each message was introduced with its caller and time
        assert intro_spoken(server, 1, left[0]) and intro_spoken(server, 2, left[1])

        def summary() -> str | None:  # the owner's phone: new 0, old 1 at last
            msg = phone.recv(0.2)
            if msg is not None and msg.method == "NOTIFY":
                reply(phone, msg, "200 OK")
                if b"Voice-Message: 0/1" in msg.body:
                    return msg.body.decode()
            return None

        text = wait_until(summary, 10, interval=0.0, what="message-summary 0/1")
        assert "Messages-Waiting: no" in text, text

    log = server.log_text()
    assert f"voicemail {second} deleted by mueller by phone: True" in log


@pytest.mark.parametrize("how", ["skip", "hang-up"])
def test_a_message_not_played_to_its_end_stays_new(office: Any, how: str) -> None:
    """# by SIP INFO (dtmf-relay) before the end skips the message: still new, and the end
    prompt and the BYE follow; a hang-up in the middle leaves it new as well."""
    server, inbound = office
    leave(server, inbound, LOW)
    wait_until(lambda: len(rows(server)) == 1 or None, 10, what="the voicemail stored")
    with contextlib.ExitStack() as stack:
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(server.port))
        inv, ok = dial(sip, "mueller", server.demo_passwords["mueller"],
                       offer(rtp.getsockname()[1]))  # fmt: skip
        assert ok.status == 200, ok.summary()
        in_dialog(sip, "ACK", inv, ok, 2)

        def tone_plays() -> bool | None:
            return any(share(w, LOW) > 0.3 for w in windows(rtp, time.monotonic() + 0.4)) or None

        wait_until(tone_plays, 20, interval=0.0, what="the message's tone")
        if how == "hang-up":
            bye = in_dialog(sip, "BYE", inv, ok, 3)
            assert sip.final_response(bye, 5).status == 200
        else:
            contact = re.search(r"<([^>]+)>", ok.header("Contact") or "")
            assert contact, ok.summary()
            sip.request(
                "INFO", contact.group(1), from_uri=inv.from_uri, to_uri=inv.to_uri, cseq=3,
                call_id=inv.call_id, from_tag=inv.from_tag, to_tag=ok.to_tag(),
                headers=[("Route", r) for r in ok.header_values("Record-Route")],
                body=b"Signal=#\r\nDuration=160\r\n", content_type="application/dtmf-relay",
            )  # fmt: skip
            after = windows(rtp, time.monotonic() + 15)
            assert not any(share(w, LOW) > 0.3 for w in after[2:])  # skipped at once
            assert len(after) >= 5  # the end prompt
            reply(sip, next_request(sip, "BYE", 10), "200 OK")
    time.sleep(0.5)
    assert [r[1] for r in rows(server)] == [0]


def test_keys_work_during_the_intro(office: Any) -> None:
    """# while "Nachricht 1, von …, heute um …" is said skips the message: its tone never
    plays, it stays new, the end prompt and the BYE follow."""
    server, inbound = office
    leave(server, inbound, LOW)
    wait_until(lambda: len(rows(server)) == 1 or None, 10, what="the voicemail stored")
    with contextlib.ExitStack() as stack:
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(server.port))
        inv, ok = dial(sip, "mueller", server.demo_passwords["mueller"],
                       offer(rtp.getsockname()[1]))  # fmt: skip
        assert ok.status == 200, ok.summary()
        in_dialog(sip, "ACK", inv, ok, 2)
        # the summary ("Sie haben eine neue Nachricht.", under 3 s) and 1.5 s of the intro
        # (over 5 s: the caller's 13 digits alone take longer)
        first = windows(rtp, time.monotonic() + 30, stop_after=22)
        assert not any(share(w, LOW) > 0.3 for w in first), "the message played too soon"
        press(rtp, c.RtpSender(99, 8, timestamp=1000), media_port(ok), "#")
        after = windows(rtp, time.monotonic() + 20)
        assert not any(share(w, LOW) > 0.3 for w in after), "# did not skip the message"
        assert len(after) >= 5, len(after)  # the end prompt
        reply(sip, next_request(sip, "BYE", 10), "200 OK")
    assert [r[1] for r in rows(server)] == [0]  # skipped: still new


def test_no_password_no_box_and_no_way_round_the_proxy(office: Any) -> None:
    server, inbound = office
    leave(server, inbound, LOW)
    wait_until(lambda: len(rows(server)) == 1 or None, 10, what="the voicemail stored")
    with contextlib.ExitStack() as stack:
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sdp = offer(rtp.getsockname()[1])
        sip = stack.enter_context(SipClient(server.port))
        # without credentials: challenged (407), never answered
        dial(sip, "mueller", None, sdp)
        # a wrong password: refused
        guess, answer = dial(sip, "mueller", "not-his-password", sdp)
        assert answer.status in (403, 407), answer.summary()
        sip.ack_non_2xx(guess, answer)
        # schulz (another client's owner) and anna (staff) have no box of their own: 404,
        # never mueller's
        for user in ("schulz", "anna"):
            inv, answer = dial(sip, user, server.demo_passwords[user], sdp)
            assert answer.status == 404, answer.summary()
            assert "No mailbox" in (answer.header("Reason") or ""), answer.summary()
            sip.ack_non_2xx(inv, answer)
        # schulz's password with mueller in From: refused
        ruri = f"sip:*86@{DOMAIN}"
        contact = ("Contact", f"<sip:schulz@127.0.0.1:{sip.local_port}>")
        first = sip.request(
            "INVITE", ruri, from_uri=f"sip:mueller@{DOMAIN}", to_uri=ruri, body=sdp,
            content_type="application/sdp", headers=[contact],
        )  # fmt: skip
        challenge = sip.final_response(first, 5)
        sip.ack_non_2xx(first, challenge)
        theirs = server.demo_passwords["schulz"]
        auth = digest_response(pick_challenge(challenge, "MD5"), method="INVITE", uri=ruri,
                               username="schulz", password=theirs)  # fmt: skip
        forged = sip.request(
            "INVITE", ruri, from_uri=f"sip:mueller@{DOMAIN}", to_uri=ruri,
            call_id=first.call_id, from_tag=first.from_tag, cseq=2, body=sdp,
            content_type="application/sdp", headers=[contact, ("Proxy-Authorization", auth)],
        )  # fmt: skip
        answer = sip.final_response(forged, 5)
        assert answer.status == 403, answer.summary()
        sip.ack_non_2xx(forged, answer)
        # straight to the media applications' port: a made-up signature, and a real one of
        # another call (its Call-ID differs)
        found = re.search(r"media applications on \S+:(\d+)", server.log_text())
        assert found, server.log_text()[-2000:]
        port = int(found.group(1))
        with SipClient(port) as direct:
            for user_part in (f"listen.{'0' * 24}.mueller", "listen.mueller"):
                ruri = f"sip:{user_part}@127.0.0.1:{port}"
                req = direct.request(
                    "INVITE", ruri, from_uri=f"sip:mueller@{DOMAIN}", to_uri=ruri, body=sdp,
                    content_type="application/sdp",
                )  # fmt: skip
                answer = direct.final_response(req, 5)
                assert answer.status == 403, answer.summary()
        assert quiet_for(rtp, 1.0), "audio reached a caller who was refused"
    assert [r[1] for r in rows(server)] == [0]  # nothing was heard


def quiet_for(rtp: socket.socket, seconds: float) -> bool:
    rtp.settimeout(seconds)
    try:
        rtp.recvfrom(2048)
    except TimeoutError:
        return True
    return False
