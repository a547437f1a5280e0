"""Audio for the end-to-end tests that call the media applications by hand: tones, their
power (Goertzel), an SDP offer of PCMA with telephone-events, speaking RTP in real time and
pressing keys as RFC 4733 events."""

from __future__ import annotations

import math
import re
import socket
import struct
import time
from typing import Any

from heimbuero.media import ua_codec as c

from .harness import LOCALHOST


def tone(hz: float, seconds: float, rate: int = 8000) -> bytes:
    """A sine tone as 16-bit PCM."""
    n = int(seconds * rate)
    return struct.pack(
        f"<{n}h", *(int(9000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(n))
    )


def _goertzel(samples: tuple[int, ...], hz: float) -> float:
    k = 2 * math.cos(2 * math.pi * hz / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def power(pcm: bytes, hz: float) -> float:
    """The power of `hz` in 8 kHz PCM (compare it with another frequency's)."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return _goertzel(samples, hz) / max(1, len(samples)) ** 2


def share(pcm: bytes, hz: float) -> float:
    """How much of the audio's energy lies at `hz` (a pure tone gives about 0.5, speech or
    silence far less)."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    energy = float(sum(x * x for x in samples))
    return _goertzel(samples, hz) / max(1.0, energy * len(samples))


def offer(port: int) -> bytes:
    """An SDP offer: PCMA and telephone-event 101 on 127.0.0.1:port."""
    return (
        f"v=0\r\no=m 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\n"
    ).encode()


def media_port(answer: Any) -> int:
    """The audio port of an answer's SDP."""
    return int(re.search(r"m=audio (\d+)", answer.body.decode()).group(1))  # type: ignore[union-attr]


def speak(rtp: socket.socket, sender: c.RtpSender, media: int, pcm: bytes) -> None:
    """`pcm` as RTP in real time (20 ms packets)."""
    start = time.monotonic()
    for i, frame in enumerate(c.frames(pcm)):
        rtp.sendto(sender.audio(frame), (LOCALHOST, media))
        delay = start + (i + 1) * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def press(rtp: socket.socket, sender: c.RtpSender, media: int, key: str) -> None:
    """One key by RFC 4733: its end packet three times, a timestamp of its own."""
    sender.timestamp += 1600
    ev = c.TelephoneEvent("0123456789*#".index(key), True, 10, 800).encode()
    for _ in range(3):
        rtp.sendto(c.RtpPacket(101, sender.sequence, sender.timestamp, sender.ssrc, ev).encode(),
                   (LOCALHOST, media))  # fmt: skip
        sender.sequence += 1
