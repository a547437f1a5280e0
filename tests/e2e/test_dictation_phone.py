"""Dictation by phone, through the real `heimbuero serve` on the demo office: the owner of
Tischlerei Müller dials *88 from his phone (digest-authenticated INVITE with its own RTP
socket), hears the spoken prompt and the beep, speaks (a 440 Hz tone) and hangs up. The
recording is a job in the typists' queue, for his client, with audio of the length spoken;
the typist plays it back. Abuse: a staff member's *88 is refused with a reason; an INVITE
sent to the media applications directly, naming the owner, is refused; another client's
user does not see the job; *88 in the owner's name without his password is challenged and
refused. The keys of a dictation machine: * pauses, 1 plays back, 0 starts again, #
finishes."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest

from heimbuero.media import ua_codec as c

from .audio import media_port, offer, power, press, speak, tone
from .harness import (
    LOCALHOST,
    Server,
    SipClient,
    digest_response,
    in_dialog,
    next_request,
    pick_challenge,
    reply,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("espeak-ng")]

DOMAIN = "heimbuero.test"


def call(sip: SipClient, user: str, password: str, target: str, sdp: bytes) -> tuple[Any, Any]:
    """An authenticated INVITE from `user` to `target`; (the INVITE sent, its final answer)."""
    ruri = f"sip:{target}@{DOMAIN}"
    contact = ("Contact", f"<sip:{user}@127.0.0.1:{sip.local_port}>")
    first = sip.request("INVITE", ruri, from_uri=f"sip:{user}@{DOMAIN}", to_uri=ruri,
                        body=sdp, content_type="application/sdp", headers=[contact])  # fmt: skip
    challenge = sip.final_response(first, 5)
    assert challenge.status == 407, challenge.summary()
    auth = digest_response(pick_challenge(challenge, "MD5"), method="INVITE", uri=ruri,
                           username=user, password=password)  # fmt: skip
    inv = sip.request(
        "INVITE", ruri, from_uri=f"sip:{user}@{DOMAIN}", to_uri=ruri, call_id=first.call_id,
        from_tag=first.from_tag, cseq=2, body=sdp, content_type="application/sdp",
        headers=[contact, ("Proxy-Authorization", auth)],
    )  # fmt: skip
    return inv, sip.final_response(inv, 20)


def quiet(rtp: socket.socket, seconds: float = 0.3) -> bool:
    rtp.settimeout(seconds)
    try:
        rtp.recvfrom(2048)
    except TimeoutError:
        return True
    return False


def dial(srv: Server, sip: SipClient, rtp: socket.socket) -> tuple[Any, Any, int]:
    """The owner of Tischlerei Müller dials *88, hears the prompt and the beep; (the INVITE,
    its 200, the media port to speak to)."""
    inv, ok = call(sip, "mueller", srv.demo_passwords["mueller"], "*88",
                   offer(rtp.getsockname()[1]))  # fmt: skip
    assert ok.status == 200, ok.summary()
    media = media_port(ok)
    in_dialog(sip, "ACK", inv, ok, 2)
    rtp.settimeout(3)
    rtp.recvfrom(2048)  # the prompt plays
    wait_until(lambda: quiet(rtp) or None, 20, interval=0.0, what="the prompt and beep")
    return inv, ok, media


def drain(rtp: socket.socket) -> None:
    rtp.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            rtp.recvfrom(2048)
    rtp.setblocking(True)


def listen(rtp: socket.socket, first: float = 3.0) -> bytes:
    """What the server plays until it has been quiet for half a second, decoded."""
    heard = []
    rtp.settimeout(first)
    with contextlib.suppress(TimeoutError):
        while True:
            data, _ = rtp.recvfrom(2048)
            heard.append(c.decode(8, c.RtpPacket.parse(data).payload))
            rtp.settimeout(0.5)
    return b"".join(heard)


@pytest.fixture
def office(tmp_path: Path) -> Any:
    with Server(tmp_path / "server", domain=DOMAIN, demo=True, http=True) as srv:
        yield srv


def test_the_owner_dictates_by_phone_and_the_typist_gets_the_job(office: Server) -> None:
    srv = office
    with contextlib.ExitStack() as stack:
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(srv.port))
        inv, ok, media = dial(srv, sip, rtp)
        speak(rtp, c.RtpSender(99, 8, timestamp=1000), media, tone(440, 2.0))
        bye = in_dialog(sip, "BYE", inv, ok, 3)  # he hangs up
        assert sip.final_response(bye, 5).status == 200

    anna = ("anna", srv.demo_passwords["anna"])
    with httpx.Client(base_url=srv.http_url, timeout=10) as http:

        def job() -> dict[str, Any] | None:
            jobs = http.get("/api/dictation/queue", auth=anna).json()
            return next((j for j in jobs if j["source"] == "phone"), None)

        found = wait_until(job, 10, interval=0.3, what="the phone dictation in the queue")
        assert (found["client"], found["author"], found["state"]) == ("mueller", "mueller", "new")
        assert found["title"].startswith("Diktat per Telefon, ")
        assert 1.8 <= found["audio_seconds"] <= 2.3, found
        full = http.get(f"/api/dictation/jobs/{found['id']}", auth=anna).json()
        audio = http.get(full["parts"][0]["audio"], auth=anna)
        assert audio.status_code == 200
        with wave.open(io.BytesIO(audio.content), "rb") as w:
            pcm = w.readframes(w.getnframes())
        assert power(pcm, 440) > 50 * power(pcm, 1000)
        # the author sees his job; another client's owner does not
        mine = http.get("/api/dictation/jobs", auth=("mueller", srv.demo_passwords["mueller"]))
        assert [j["id"] for j in mine.json()] == [found["id"]]
        other_pw = srv.demo_passwords["schulz"]
        other = http.get("/api/dictation/jobs", auth=("schulz", other_pw))
        assert other.status_code == 200 and other.json() == []
        theirs = http.get(f"/api/dictation/jobs/{found['id']}", auth=("schulz", other_pw))
        assert theirs.status_code == 404


def test_staff_and_forged_dictations_are_refused(office: Server) -> None:
    srv = office
    with SipClient(srv.port) as sip:
        _, answer = call(sip, "anna", srv.demo_passwords["anna"], "*88", offer(4000))
        assert answer.status == 403, answer.summary()
        assert "from a client's phone" in (answer.header("Reason") or ""), answer.summary()
    # *88 in the owner's name without his password: challenged, then refused; never answered
    with SipClient(srv.port) as sip:
        ruri, me = f"sip:*88@{DOMAIN}", f"sip:mueller@{DOMAIN}"
        contact = ("Contact", f"<sip:mueller@127.0.0.1:{sip.local_port}>")
        first = sip.request("INVITE", ruri, from_uri=me, to_uri=ruri, body=offer(4000),
                            content_type="application/sdp", headers=[contact])  # fmt: skip
        challenge = sip.final_response(first, 5)
        assert challenge.status == 407, challenge.summary()
        sip.ack_non_2xx(first, challenge)
        auth = digest_response(pick_challenge(challenge, "MD5"), method="INVITE", uri=ruri,
                               username="mueller", password="not-his-password")  # fmt: skip
        guess = sip.request(
            "INVITE", ruri, from_uri=me, to_uri=ruri, call_id=first.call_id,
            from_tag=first.from_tag, cseq=2, body=offer(4000), content_type="application/sdp",
            headers=[contact, ("Proxy-Authorization", auth)],
        )  # fmt: skip
        answer = sip.final_response(guess, 5)
        assert answer.status in (403, 407), answer.summary()
        sip.ack_non_2xx(guess, answer)
    # straight to the media applications' port, naming the owner with a made-up signature
    found = re.search(r"media applications on \S+:(\d+)", srv.log_text())
    assert found, srv.log_text()[-2000:]
    port = int(found.group(1))
    with SipClient(port) as sip:
        ruri = f"sip:dictation.mueller.mueller.{'0' * 24}@127.0.0.1:{port}"
        forged = sip.request("INVITE", ruri, from_uri=f"sip:mueller@{DOMAIN}", to_uri=ruri,
                             body=offer(4000), content_type="application/sdp")  # fmt: skip
        answer = sip.final_response(forged, 5)
        assert answer.status == 403, answer.summary()
    time.sleep(0.5)
    with httpx.Client(base_url=srv.http_url, timeout=10) as http:
        jobs = http.get("/api/dictation/queue", auth=("anna", srv.demo_passwords["anna"]))
        assert jobs.json() == []


@pytest.mark.parametrize("how", ["rfc4733", "info"])
def test_hash_ends_the_dictation_and_the_server_hangs_up(office: Server, how: str) -> None:
    """# (RFC 4733, or SIP INFO dtmf-relay) ends the recording: the server sends BYE, the job
    has what was spoken before the key."""
    srv = office
    with contextlib.ExitStack() as stack:
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(srv.port))
        inv, ok, media = dial(srv, sip, rtp)
        sender = c.RtpSender(99, 8, timestamp=1000)
        speak(rtp, sender, media, tone(440, 3.0))
        if how == "rfc4733":
            ev = c.TelephoneEvent(11, True, 10, 800).encode()  # "#", its end sent three times
            for _ in range(3):
                rtp.sendto(c.RtpPacket(101, sender.sequence, sender.timestamp, 99, ev).encode(),
                           (LOCALHOST, media))  # fmt: skip
                sender.sequence += 1
        else:
            contact = re.search(r"<([^>]+)>", ok.header("Contact") or "")
            assert contact, ok.summary()
            info = sip.request(
                "INFO", contact.group(1), from_uri=inv.from_uri, to_uri=inv.to_uri, cseq=3,
                call_id=inv.call_id, from_tag=inv.from_tag, to_tag=ok.to_tag(),
                headers=[("Route", r) for r in ok.header_values("Record-Route")],
                body=b"Signal=#\r\nDuration=160\r\n", content_type="application/dtmf-relay",
            )  # fmt: skip
            assert info.method == "INFO"  # (its 200 and the server's BYE may come in any order)
        bye = next_request(sip, "BYE", 5)  # the server hangs up
        reply(sip, bye, "200 OK")
        if how == "info":

            def info_answered() -> bool | None:
                for m in sip.received:
                    cseq = m.header("CSeq") or ""
                    if m.start_line.startswith("SIP/2.0 200") and cseq.endswith("INFO"):
                        return True
                sip.recv(0.1)  # (what arrives is kept in sip.received)
                return None

            wait_until(info_answered, 5, what="the INFO answered")

    with httpx.Client(base_url=srv.http_url, timeout=10) as http:
        anna = ("anna", srv.demo_passwords["anna"])

        def job() -> dict[str, Any] | None:
            jobs = http.get("/api/dictation/queue", auth=anna).json()
            return next((j for j in jobs if j["source"] == "phone"), None)

        found = wait_until(job, 10, interval=0.3, what="the phone dictation in the queue")
        assert (found["client"], found["author"]) == ("mueller", "mueller")
        assert 2.8 <= found["audio_seconds"] <= 3.3, found


def test_a_hang_up_under_a_second_makes_no_job(office: Server) -> None:
    srv = office
    with contextlib.ExitStack() as stack:
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(srv.port))
        inv, ok, media = dial(srv, sip, rtp)
        speak(rtp, c.RtpSender(99, 8, timestamp=1000), media, tone(440, 0.5))
        bye = in_dialog(sip, "BYE", inv, ok, 3)
        assert sip.final_response(bye, 5).status == 200
    wait_until(lambda: "under a second recorded, no job" in srv.log_text() or None, 10,
               what="the short dictation dropped")  # fmt: skip
    with httpx.Client(base_url=srv.http_url, timeout=10) as http:
        jobs = http.get("/api/dictation/queue", auth=("anna", srv.demo_passwords["anna"]))
        assert jobs.json() == []


def test_the_keys_of_a_dictation_machine(office: Server) -> None:
    """The owner speaks (440 Hz), presses 0 and starts again (880 Hz), pauses with * and says
    something not meant for the typist (1200 Hz), resumes with * (660 Hz), presses 1 and
    hears the last seconds, then #. The job holds 880 + 660 Hz only."""
    srv = office
    with contextlib.ExitStack() as stack:
        rtp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        rtp.bind((LOCALHOST, 0))
        sip = stack.enter_context(SipClient(srv.port))
        inv, ok, media = dial(srv, sip, rtp)
        sender = c.RtpSender(99, 8, timestamp=1000)
        speak(rtp, sender, media, tone(440, 1.5))
        press(rtp, sender, media, "0")
        said = listen(rtp)  # "Das Diktat wurde gelöscht …" and the beep
        assert len(said) > 16000 and power(said[-2400:], 1000) > 50 * power(said[-2400:], 440)
        speak(rtp, sender, media, tone(880, 1.5))
        press(rtp, sender, media, "*")
        assert power(listen(rtp), 600) > 0  # the pause cue
        speak(rtp, sender, media, tone(1200, 1.0))  # paused: not for the typist
        press(rtp, sender, media, "*")
        listen(rtp)  # the beep: recording again
        speak(rtp, sender, media, tone(660, 1.0))
        drain(rtp)
        press(rtp, sender, media, "1")
        played = listen(rtp)
        assert 2.4 <= len(played) / 16000 <= 3.0, len(played)  # 2.5 s recorded + the beep
        assert power(played, 880) > 20 * power(played, 1200)
        assert power(played, 660) > 20 * power(played, 440)
        press(rtp, sender, media, "#")
        bye = next_request(sip, "BYE", 5)
        reply(sip, bye, "200 OK")

    anna = ("anna", srv.demo_passwords["anna"])
    with httpx.Client(base_url=srv.http_url, timeout=10) as http:

        def job() -> dict[str, Any] | None:
            jobs = http.get("/api/dictation/queue", auth=anna).json()
            return next((j for j in jobs if j["source"] == "phone"), None)

        found = wait_until(job, 10, interval=0.3, what="the phone dictation in the queue")
        assert 2.3 <= found["audio_seconds"] <= 2.7, found
        full = http.get(f"/api/dictation/jobs/{found['id']}", auth=anna).json()
        with wave.open(io.BytesIO(http.get(full["parts"][0]["audio"], auth=anna).content)) as w:
            pcm = w.readframes(w.getnframes())
        first, last = pcm[:16000], pcm[-12000:]
        assert power(first, 880) > 50 * max(power(first, 440), power(first, 1200))
        assert power(last, 660) > 50 * max(power(last, 440), power(last, 1200))
