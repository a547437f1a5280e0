"""The media user agent's audio side: an SDP answer to a caller's offer (PCMA/PCMU and
telephone-event 101, RFC 3264), one UDP port per call from a configured range, playback of
8 kHz audio paced by the event loop's clock, recording of the caller, and DTMF from RFC 4733
packets (the SIP side hands in INFO `application/dtmf-relay` digits with `dtmf()`).

It runs on the server's asyncio loop with a datagram endpoint per call: 50 packets/s each way
per call is little next to signalling, and it keeps one process to reason about. Audio files
are converted once with sox to 8 kHz mono 16-bit PCM and cached by the file's digest."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import shutil
import subprocess
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from heimbuero.sip.sdp import SdpError, SessionDescription

from . import ua_codec as codec

MAX_DIGITS_QUEUED = 32  # a DTMF flood fills this and no more
SUPPORTED = {"PCMA/8000": codec.PT_PCMA, "PCMU/8000": codec.PT_PCMU}
STATIC = {"8": codec.PT_PCMA, "0": codec.PT_PCMU}


class MediaError(Exception):
    """The call cannot have audio here (no common codec, no port free, no converter)."""


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the answer promises: the codec, the caller's event type (or None), where to send."""

    payload_type: int
    event_type: int | None
    remote: tuple[str, int]
    answer: bytes


def answer_offer(offer: bytes, address: str, port: int, session_id: int) -> Negotiated:
    """Sans-IO: the answer to `offer` with our `address`/`port` (RFC 3264 §6): the first audio
    section gets the first offered codec we speak and the offer's telephone-event type; other
    sections are refused with port 0."""
    try:
        sd = SessionDescription.parse(offer)
    except SdpError as exc:
        raise MediaError(f"unreadable offer: {exc}") from None
    lines = [
        f"v=0\r\no=heimbuero {session_id} {session_id} IN IP4 {address}\r\ns=heimbuero\r\n",
        f"c=IN IP4 {address}\r\nt=0 0\r\n",
    ]
    chosen: Negotiated | None = None
    for index, m in enumerate(sd.media):
        rtpmap = m.rtpmap()
        pick = None
        if chosen is None and m.media == "audio" and m.proto == "RTP/AVP" and m.port:
            for fmt in m.formats:
                enc = rtpmap.get(fmt, "").upper()
                if SUPPORTED.get(enc) == int(fmt) or (fmt in STATIC and not enc):
                    pick = int(fmt)
                    break
        if pick is None:
            lines.append(f"m={m.media} 0 {m.proto} {' '.join(m.formats[:1]) or '0'}\r\n")
            continue
        event = next(
            (int(f) for f in m.formats if rtpmap.get(f, "").lower() == "telephone-event/8000"),
            None,
        )
        remote_host = sd.media_address(index)
        if remote_host is None:
            raise MediaError("the offer names no connection address")
        fmts = f"{pick}" + (f" {event}" if event is not None else "")
        lines.append(f"m=audio {port} RTP/AVP {fmts}\r\n")
        lines.append(f"a=rtpmap:{pick} {'PCMA' if pick == 8 else 'PCMU'}/8000\r\n")
        if event is not None:
            lines.append(f"a=rtpmap:{event} telephone-event/8000\r\na=fmtp:{event} 0-15\r\n")
        lines.append("a=ptime:20\r\na=sendrecv\r\n")
        chosen = Negotiated(pick, event, (remote_host, m.port), b"")
    if chosen is None:
        raise MediaError("no common codec (PCMA/PCMU)")
    return Negotiated(
        chosen.payload_type, chosen.event_type, chosen.remote, "".join(lines).encode()
    )


class PortRange:
    """The UDP ports media sessions may bind, and how many sessions may run at once."""

    def __init__(self, low: int, high: int, max_sessions: int) -> None:
        if not 1024 <= low <= high <= 65535:
            raise ValueError("port range must lie in 1024..65535, low <= high")
        self.low, self.high, self.max_sessions = low, high, max_sessions
        self._next = low
        self.active = 0


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, session: MediaSession) -> None:
        self.session = session

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.session._received(data, addr)


class MediaSession:
    """The audio of one answered call. Open with `await MediaSession.open(...)`."""

    def __init__(self, ports: PortRange, address: str, offer: bytes) -> None:
        self._ports = ports
        self.address = address
        self.offer = offer
        self.negotiated: Negotiated | None = None
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: codec.RtpSender | None = None
        self._dtmf = codec.DtmfReceiver()
        self.digits: asyncio.Queue[str] = asyncio.Queue(MAX_DIGITS_QUEUED)
        self._recording: list[bytes] | None = None
        self._record_limit = 0
        self._latched: tuple[str, int] | None = None
        self._ssrc: int | None = None
        self.first_packet_at: float | None = None
        self.closed = asyncio.Event()

    @classmethod
    async def open(cls, ports: PortRange, address: str, offer: bytes) -> MediaSession:
        if ports.active >= ports.max_sessions:
            raise MediaError("too many media sessions")
        self = cls(ports, address, offer)
        loop = asyncio.get_running_loop()
        span = ports.high - ports.low + 1
        for _ in range(span):
            port = ports._next
            ports._next = ports.low + (ports._next - ports.low + 2) % span  # even ports (RTP)
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(self), local_addr=(address, port)
                )
            except OSError:
                continue
            self._transport = transport
            self.port = port
            break
        else:
            raise MediaError("no media port free")
        try:
            self.negotiated = answer_offer(offer, address, self.port, secrets.randbelow(2**31))
        except MediaError:
            self._transport.close()
            raise
        ports.active += 1
        self._sender = codec.RtpSender(
            secrets.randbits(32),
            self.negotiated.payload_type,
            secrets.randbits(16),
            secrets.randbits(32),
        )
        return self

    @property
    def answer(self) -> bytes:
        assert self.negotiated is not None
        return self.negotiated.answer

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            pkt = codec.RtpPacket.parse(data)
        except codec.RtpError:
            return
        # latch the first stream (symmetric RTP for NATed callers); others are ignored after
        if self._ssrc is None:
            self._ssrc, self._latched = pkt.ssrc, addr
        elif pkt.ssrc != self._ssrc or addr != self._latched:
            return
        neg = self.negotiated
        assert neg is not None
        if neg.event_type is not None and pkt.payload_type == neg.event_type:
            digit = self._dtmf.feed(pkt)
            if digit is not None:
                self.dtmf(digit)
        elif (
            pkt.payload_type == neg.payload_type
            and self._recording is not None
            and len(self._recording) < self._record_limit
        ):
            self._recording.append(codec.decode(pkt.payload_type, pkt.payload))

    def dtmf(self, digit: str) -> None:
        """A digit (from RTP or from SIP INFO); a flood beyond the queue's size is dropped."""
        with contextlib.suppress(asyncio.QueueFull):
            self.digits.put_nowait(digit)

    def _destination(self) -> tuple[str, int]:
        assert self.negotiated is not None
        return self._latched or self.negotiated.remote

    async def play(self, pcm: bytes, stop_on: str = "") -> str | None:
        """Send `pcm` in 20 ms packets paced against the loop clock (absolute schedule, so
        delays do not add up). Returns the digit in `stop_on` that interrupted it, if any."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert self._sender is not None and self._transport is not None
        for i, frame in enumerate(codec.frames(pcm)):
            if self.closed.is_set():
                return None
            if stop_on:
                digit = self._take_digit(stop_on)
                if digit:
                    return digit
            if self.first_packet_at is None:
                self.first_packet_at = time.monotonic()
            self._transport.sendto(self._sender.audio(frame), self._destination())
            delay = start + (i + 1) * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return None

    def clear_digits(self) -> None:
        while not self.digits.empty():
            self.digits.get_nowait()

    def _take_digit(self, wanted: str) -> str | None:
        while not self.digits.empty():
            d = self.digits.get_nowait()
            if d in wanted:
                return d
        return None

    async def record(self, max_seconds: float, stop_on: str = "#") -> bytes:
        """The caller's audio (8 kHz 16-bit PCM) until a digit in `stop_on`, `max_seconds`
        or the end of the call; bounded to `max_seconds` of packets whatever the caller sends.
        Digits typed before (during the greeting) do not end it."""
        self.clear_digits()
        audio, _ = await self.record_until(max_seconds, stop_on)
        return audio

    async def record_until(self, max_seconds: float, stop_on: str) -> tuple[bytes, str | None]:
        """As `record`, keeping queued digits; (the audio, the digit that ended it or None
        when the time was up or the call ended)."""
        self._recording = []
        self._record_limit = int(max_seconds * 50) + 1
        try:
            digit = await self.next_digit(stop_on, max_seconds)
        finally:
            out, self._recording = b"".join(self._recording), None
        return out[: int(max_seconds * codec.SAMPLE_RATE) * 2], digit

    async def next_digit(self, wanted: str, timeout: float) -> str | None:
        """The next digit in `wanted` (others are dropped); None after `timeout` seconds or
        when the call ends."""
        if self.closed.is_set():
            return None

        async def digit() -> str:
            while (d := await self.digits.get()) not in wanted:
                pass
            return d

        got = asyncio.ensure_future(digit())
        ended = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait([got, ended], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            got.cancel()
            ended.cancel()
        return got.result() if got.done() and not got.cancelled() else None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            self._ports.active -= 1
        self.closed.set()


# -- audio files ---------------------------------------------------------------------------


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(codec.SAMPLE_RATE)
        w.writeframes(pcm)


def read_wav(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, codec.SAMPLE_RATE):
            raise MediaError(f"{path.name}: not 8 kHz mono 16-bit")
        return w.readframes(w.getnframes())


def convert(source: Path, cache_dir: Path, run: Callable[..., object] = subprocess.run) -> Path:
    """`source` (WAV at any rate, MP3, …) as 8 kHz mono 16-bit WAV in `cache_dir`, converted
    once: the cached file is named by the source's SHA-256."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    target = cache_dir / f"{digest}.wav"
    if target.exists():
        return target
    sox = shutil.which("sox")
    if sox is None:
        raise MediaError("sox is not installed (Debian: apt-get install sox libsox-fmt-mp3)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part.wav")
    run(
        [
            sox,
            str(source),
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(partial),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    partial.replace(target)
    return target


def speak(text: str, cache_dir: Path, voice: str = "de") -> Path:
    """`text` spoken by espeak-ng (German by default) as an 8 kHz WAV, made once and cached."""
    digest = hashlib.sha256(f"{voice}\0{text}".encode()).hexdigest()
    target = cache_dir / f"tts-{digest}.wav"
    if target.exists():
        return target
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise MediaError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    raw = cache_dir / f"tts-{digest}.raw.wav"
    subprocess.run(
        [espeak, "-v", voice, "-w", str(raw), text], check=True, capture_output=True, timeout=60
    )
    converted = convert(raw, cache_dir)
    converted.replace(target)
    raw.unlink(missing_ok=True)
    return target


def beep(seconds: float = 0.3, hz: float = 1000.0) -> bytes:
    """A sine tone as 8 kHz PCM (the voicemail beep)."""
    import math
    import struct

    n = int(seconds * codec.SAMPLE_RATE)
    return struct.pack(
        f"<{n}h",
        *(int(8000 * math.sin(2 * math.pi * hz * i / codec.SAMPLE_RATE)) for i in range(n)),
    )
