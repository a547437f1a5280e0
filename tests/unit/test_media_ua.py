"""The media user agent's audio side over real UDP on loopback: the SDP answer, playback,
recording, DTMF, bounds (sessions, digits, recording length)."""

import asyncio
import math
import shutil
import struct
import time

import pytest

from heimbuero.media import ua
from heimbuero.media import ua_codec as c

OFFER = (
    "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=video 4000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    "m=audio {port} RTP/AVP 9 8 0 96\r\na=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:96 telephone-event/8000\r\n"
)


def tone(hz: float, seconds: float) -> bytes:
    n = int(seconds * 8000)
    return struct.pack(
        f"<{n}h", *(int(9000 * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n))
    )


def power(pcm: bytes, hz: float) -> float:
    """Goertzel: the relative power of `hz` in `pcm` (8 kHz)."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    k = 2 * math.cos(2 * math.pi * hz / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - k * s1 * s2) / max(1, len(samples)) ** 2


def test_answer_picks_first_common_codec_keeps_event_type_and_refuses_video():
    neg = ua.answer_offer(OFFER.format(port=5000).encode(), "127.0.0.1", 20000, 7)
    text = neg.answer.decode()
    assert neg.payload_type == 8 and neg.event_type == 96 and neg.remote == ("127.0.0.1", 5000)
    assert "m=video 0 RTP/AVP 96" in text
    assert "m=audio 20000 RTP/AVP 8 96" in text and "a=rtpmap:96 telephone-event/8000" in text
    with pytest.raises(ua.MediaError, match="no common codec"):
        ua.answer_offer(OFFER.format(port=5000).replace(" 8 0 96", "").encode(), "x", 1, 1)
    with pytest.raises(ua.MediaError, match="unreadable"):
        ua.answer_offer(b"hello", "127.0.0.1", 1, 1)


class Caller(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[c.RtpPacket] = []
        self.first_at: float | None = None

    def datagram_received(self, data, addr):
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.packets.append(c.RtpPacket.parse(data))


async def caller_and_session(ports):
    loop = asyncio.get_running_loop()
    transport, caller = await loop.create_datagram_endpoint(Caller, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    session = await ua.MediaSession.open(ports, "127.0.0.1", OFFER.format(port=port).encode())
    return transport, caller, session


def test_play_record_dtmf_over_udp():
    async def main():
        ports = ua.PortRange(31000, 31100, 4)
        transport, caller, session = await caller_and_session(ports)
        try:
            # playback: the first packet leaves at once, paced at 20 ms, the tone arrives
            started = time.monotonic()
            await session.play(tone(800, 0.5))
            assert caller.first_at is not None and caller.first_at - started < 0.1
            assert len(caller.packets) >= 24
            assert {p.payload_type for p in caller.packets} == {8}
            heard = b"".join(c.decode(8, p.payload) for p in caller.packets)
            assert power(heard, 800) > 50 * power(heard, 1300)

            # recording: the caller speaks a 440 Hz tone for 0.6 s, then presses #
            dest = ("127.0.0.1", session.port)
            rec = asyncio.ensure_future(session.record(max_seconds=5))
            sender = c.RtpSender(99, 8)
            for frame in c.frames(tone(440, 0.6)):
                transport.sendto(sender.audio(frame), dest)
                await asyncio.sleep(0.005)
            for _ in range(3):  # the end packet three times (RFC 4733 §2.5.1.4), one digit
                ev = c.TelephoneEvent(11, True, 10, 800).encode()
                transport.sendto(c.RtpPacket(96, 1, 12345, 99, ev).encode(), dest)
            pcm = await asyncio.wait_for(rec, 2)
            assert abs(len(pcm) / 16000 - 0.6) < 0.05
            assert power(pcm, 440) > 50 * power(pcm, 1000)
            # a third party's packets (another SSRC) are not recorded
            rec = asyncio.ensure_future(session.record(max_seconds=0.3))
            transport.sendto(c.RtpSender(7, 8).audio(tone(440, 0.02)), dest)
            assert await rec == b""
        finally:
            session.close()
            transport.close()
        assert ports.active == 0

    asyncio.run(main())


def test_bounds_sessions_digits_and_recording_length():
    async def main():
        ports = ua.PortRange(31200, 31300, 1)
        transport, caller, session = await caller_and_session(ports)
        try:
            with pytest.raises(ua.MediaError, match="too many media sessions"):
                await ua.MediaSession.open(ports, "127.0.0.1", OFFER.format(port=1).encode())
            dest = ("127.0.0.1", session.port)
            for ts in range(2000):  # a DTMF flood: distinct events
                ev = c.TelephoneEvent(5, True, 10, 800).encode()
                transport.sendto(c.RtpPacket(96, ts, ts * 160, 99, ev).encode(), dest)
            await asyncio.sleep(0.2)
            assert session.digits.qsize() <= ua.MAX_DIGITS_QUEUED
            # a caller sending far more than real time: the recording stays bounded
            rec = asyncio.ensure_future(session.record(max_seconds=0.2))
            sender = c.RtpSender(99, 8)
            for _ in range(200):
                transport.sendto(sender.audio(b"\x00" * 320), dest)
            pcm = await rec
            assert len(pcm) <= 0.2 * 16000
        finally:
            session.close()
            transport.close()

    asyncio.run(main())


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
def test_convert_caches_once(tmp_path):
    src = tmp_path / "in.wav"
    import wave

    with wave.open(str(src), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(b"\x00\x00" * 2 * 4410)
    out = ua.convert(src, tmp_path / "cache")
    assert len(ua.read_wav(out)) == 800 * 2
    assert ua.convert(src, tmp_path / "cache", run=None) == out  # cached: sox not run again


def test_record_until_reports_the_key_and_keeps_queued_digits():
    """The dictation machine's primitives: the key that ended a recording is returned, a
    key typed before is not dropped, and waiting for a key ends with the call."""

    async def main():
        ports = ua.PortRange(31400, 31500, 2)
        transport, caller, session = await caller_and_session(ports)
        try:
            session.dtmf("*")  # typed before the recording starts: it ends it at once
            pcm, digit = await asyncio.wait_for(session.record_until(5, "*#01"), 1)
            assert (pcm, digit) == (b"", "*")
            dest = ("127.0.0.1", session.port)
            rec = asyncio.ensure_future(session.record_until(5, "*#01"))
            sender = c.RtpSender(99, 8)
            for frame in c.frames(tone(440, 0.4)):
                transport.sendto(sender.audio(frame), dest)
                await asyncio.sleep(0.005)
            session.dtmf("5")  # not wanted: dropped
            session.dtmf("1")
            pcm, digit = await asyncio.wait_for(rec, 2)
            assert digit == "1" and abs(len(pcm) / 16000 - 0.4) < 0.05
            pcm, digit = await session.record_until(0.2, "#")
            assert digit is None  # the time was up
            assert await session.next_digit("#", 0.1) is None
            waiting = asyncio.ensure_future(session.next_digit("#", 5))
            await asyncio.sleep(0.05)
            session.close()  # the call ends: the wait ends with it
            assert await asyncio.wait_for(waiting, 1) is None
        finally:
            session.close()
            transport.close()

    asyncio.run(main())
