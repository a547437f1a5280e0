"""Listening to voicemail by phone inside the media applications, over real UDP on loopback
with a fake mailbox (the store side) and prompts made without espeak: only a URI signed for
the call opens a box; a message played to its end is marked heard; 7 deletes, and the
"gelöscht" prompt is made only after the deletion returned; the longest call time ends the
call with BYE and leaves a message cut short new."""

from __future__ import annotations

import asyncio
import re
import secrets
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from heimbuero.config import MediaAppSettings
from heimbuero.media import ua
from heimbuero.office.voicemail import DELETED_TEXT, END_TEXT
from heimbuero.services.mediaapps import MediaApps, listen_user
from heimbuero.store.voicemail import Voicemail

KEY = b"k" * 32
OFFER = (
    "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


class FakeMailbox:
    def __init__(self, messages: list[Voicemail], events: list[str]) -> None:
        self.box = {"mueller": messages}
        self.events = events

    async def messages(self, user: str) -> list[Voicemail] | None:
        return self.box.get(user)

    async def heard(self, user: str, voicemail_id: int) -> bool:
        self.events.append(f"heard {user} {voicemail_id}")
        return True

    async def delete(self, user: str, voicemail_id: int) -> bool:
        await asyncio.sleep(0.05)  # (the commit)
        self.events.append(f"deleted {user} {voicemail_id}")
        return True

    async def zone(self, user: str) -> tzinfo:
        return ZoneInfo("Europe/Berlin")


class Phone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.messages: asyncio.Queue[str] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.messages.put_nowait(data.decode(errors="replace"))


def message(tmp: Path, n: int, seconds: float) -> Voicemail:
    path = tmp / "voicemail" / "mueller" / f"{n}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    ua.write_wav(path, bytes(int(seconds * 16000)))
    at = datetime(2026, 12, 1, 9, n, tzinfo=UTC)
    return Voicemail(n, "mueller", "mueller", "+4930", f"c{n}", str(path.relative_to(tmp)),
                     seconds, at, False)  # fmt: skip


def invite(sip_port: int, rtp_port: int, ruri_user: str, call_id: str, port: int) -> bytes:
    body = OFFER.format(port=rtp_port)
    return (
        f"INVITE sip:{ruri_user}@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
        f"From: <sip:mueller@x.test>;tag=a1\r\nTo: <sip:*86@x.test>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:mueller@127.0.0.1:{sip_port}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def in_dialog(method: str, sip_port: int, call_id: str, to_tag: str, port: int, cseq: int,
              body: bytes = b"", ctype: str = "") -> bytes:  # fmt: skip
    extra = f"Content-Type: {ctype}\r\n" if ctype else ""
    return (
        f"{method} sip:mediaapp@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
        f"From: <sip:mueller@x.test>;tag=a1\r\nTo: <sip:*86@x.test>;tag={to_tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def first_line(phone: Phone, timeout: float = 3.0) -> str:
    return await asyncio.wait_for(phone.messages.get(), timeout)


def apps(tmp_path: Path, mailbox: FakeMailbox, events: list[str]) -> MediaApps:
    settings = MediaAppSettings(port_min=32000, port_max=32100)
    m = MediaApps(settings, tmp_path, lambda owner: owner)
    m.dictation_key = KEY
    m.mailbox = mailbox

    async def say(text: str, cache: str = "") -> bytes:
        events.append(f"say {text}")
        return bytes(1600)  # 0.05 s of silence instead of espeak

    m._say = say  # type: ignore[method-assign]
    return m


async def setup(tmp_path: Path, messages: list[Voicemail], events: list[str]):  # type: ignore[no-untyped-def]
    m = apps(tmp_path, FakeMailbox(messages, events), events)
    _, port = await m.start()
    loop = asyncio.get_running_loop()
    sip, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    rtp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                 local_addr=("127.0.0.1", 0))  # fmt: skip
    return m, port, sip, phone, rtp


def test_only_a_signed_uri_opens_the_box(tmp_path: Path) -> None:
    async def main() -> None:
        events: list[str] = []
        m, port, sip, phone, rtp = await setup(tmp_path, [message(tmp_path, 1, 0.2)], events)
        me, media = sip.get_extra_info("sockname")[1], rtp.get_extra_info("sockname")[1]
        try:
            for user in (f"listen.{'0' * 24}.mueller", listen_user(KEY, "other", "mueller"),
                         "listen.mueller", "listen.ä.mueller"):  # fmt: skip
                sip.sendto(invite(me, media, user, "c-forged", port), ("127.0.0.1", port))
                assert (await first_line(phone)).startswith("SIP/2.0 403"), user
            # (a forged dictation with a non-ASCII user part is answered too, not dropped)
            m.on_dictation = lambda rec: None
            forged = "dictation.mueller.ä.000000000000000000000000"
            sip.sendto(invite(me, media, forged, "c-d", port), ("127.0.0.1", port))
            assert (await first_line(phone)).startswith("SIP/2.0 403")
            nobody = listen_user(KEY, "c-x", "schulz")  # signed, but no box: 404
            sip.sendto(invite(me, media, nobody, "c-x", port), ("127.0.0.1", port))
            answer = await first_line(phone)
            assert answer.startswith("SIP/2.0 404") and "No mailbox" in answer
            assert events == [] and m.calls == {}
        finally:
            m.close()
            sip.close()
            rtp.close()

    asyncio.run(main())


def test_heard_at_the_end_7_deletes_before_gelöscht(tmp_path: Path) -> None:
    async def main() -> None:
        events: list[str] = []
        msgs = [message(tmp_path, 1, 0.2), message(tmp_path, 2, 2.0)]
        m, port, sip, phone, rtp = await setup(tmp_path, msgs, events)
        me, media = sip.get_extra_info("sockname")[1], rtp.get_extra_info("sockname")[1]
        try:
            user = listen_user(KEY, "c1", "mueller")
            sip.sendto(invite(me, media, user, "c1", port), ("127.0.0.1", port))
            ok = await first_line(phone)
            assert ok.startswith("SIP/2.0 200"), ok
            tag = re.search(r"^To:.*;tag=(\w+)", ok, re.M).group(1)  # type: ignore[union-attr]
            sip.sendto(in_dialog("ACK", me, "c1", tag, port, 1), ("127.0.0.1", port))
            # wait until the second message plays, then 7 by SIP INFO
            for _ in range(100):
                if any(e.startswith("say Nachricht 2, von 0 3 0,") for e in events):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            info = in_dialog("INFO", me, "c1", tag, port, 2, b"Signal=7\r\nDuration=160\r\n",
                             "application/dtmf-relay")  # fmt: skip
            sip.sendto(info, ("127.0.0.1", port))
            lines = [await first_line(phone, 5) for _ in range(2)]  # 200 to INFO, then BYE
            assert any(x.startswith("BYE ") for x in lines), lines
        finally:
            m.close()
            sip.close()
            rtp.close()
        assert "heard mueller 1" in events and "heard mueller 2" not in events
        deleted = events.index("deleted mueller 2")
        assert events[deleted + 1] == f"say {DELETED_TEXT}"  # confirmed after the commit
        assert events[-1] == f"say {END_TEXT}"

    asyncio.run(main())


def test_the_longest_call_ends_it_and_a_cut_message_stays_new(tmp_path: Path) -> None:
    limit = 0.5

    async def main() -> None:
        events: list[str] = []
        m, port, sip, phone, rtp = await setup(tmp_path, [message(tmp_path, 1, 5.0)], events)
        m.listen_max_seconds = limit
        me, media = sip.get_extra_info("sockname")[1], rtp.get_extra_info("sockname")[1]
        try:
            user = listen_user(KEY, "c2", "mueller")
            sip.sendto(invite(me, media, user, "c2", port), ("127.0.0.1", port))
            ok = await first_line(phone)
            tag = re.search(r"^To:.*;tag=(\w+)", ok, re.M).group(1)  # type: ignore[union-attr]
            loop = asyncio.get_running_loop()
            acked = loop.time()
            sip.sendto(in_dialog("ACK", me, "c2", tag, port, 1), ("127.0.0.1", port))
            bye = await first_line(phone, 3)
            assert bye.startswith("BYE "), bye
            assert loop.time() - acked < limit + 0.5
        finally:
            m.close()
            sip.close()
            rtp.close()
        assert not any(e.startswith(("heard", "deleted")) for e in events), events

    asyncio.run(main())
