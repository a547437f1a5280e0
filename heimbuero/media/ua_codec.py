"""Sans-IO pieces of the media user agent: G.711 A-law and µ-law (ITU-T G.711) by table,
RTP packets (RFC 3550), RFC 4733 telephone-events and the SIP INFO `application/dtmf-relay`
body. Bytes and integers in, bytes and integers out; nothing here touches a socket or a clock.

PCM is 16-bit signed little-endian mono at 8 kHz (what a WAV file for a phone line holds)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz: one RTP packet
PT_PCMU = 0
PT_PCMA = 8
PT_EVENT = 101
DTMF_EVENTS = "0123456789*#ABCD"


# -- G.711 ---------------------------------------------------------------------------------


def _ulaw_decode(u: int) -> int:
    u = ~u & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -sample if sign else sample


def _alaw_decode(a: int) -> int:
    a ^= 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    base = (mantissa << 4) + 8
    sample = base if exponent == 0 else (base + 0x100) << (exponent - 1)
    return sample if sign else -sample


def _ulaw_encode(sample: int) -> int:
    # on 14-bit magnitudes, as the ITU reference and Sun's g711.c do (arithmetic shift)
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value, mask = -value, 0x7F
    value = min(value, 8159) + 0x21
    segment = 0
    while segment < 8 and value > (0x40 << segment) - 1:
        segment += 1
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _alaw_encode(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0
    if sample < 0:
        sample = -sample - 1 if sample > -32768 else 32767
    sample = min(sample, 32767)
    if sample < 256:
        code = sample >> 4
    else:
        exponent = 7
        mask = 0x4000
        while not sample & mask:
            exponent -= 1
            mask >>= 1
        code = (exponent << 4) | ((sample >> (exponent + 3)) & 0x0F)
    return (code | sign) ^ 0x55


_ULAW_DEC = [_ulaw_decode(i) for i in range(256)]
_ALAW_DEC = [_alaw_decode(i) for i in range(256)]
# Encoding tables over the 16-bit range, indexed by the sample's unsigned 16-bit value.
_ULAW_ENC = bytes(_ulaw_encode(s - 65536 if s >= 32768 else s) for s in range(65536))
_ALAW_ENC = bytes(_alaw_encode(s - 65536 if s >= 32768 else s) for s in range(65536))


def _samples(pcm: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm) // 2}H", pcm[: len(pcm) // 2 * 2])


def pcm_to_ulaw(pcm: bytes) -> bytes:
    return bytes(_ULAW_ENC[s] for s in _samples(pcm))


def pcm_to_alaw(pcm: bytes) -> bytes:
    return bytes(_ALAW_ENC[s] for s in _samples(pcm))


def ulaw_to_pcm(data: bytes) -> bytes:
    return struct.pack(f"<{len(data)}h", *(_ULAW_DEC[b] for b in data))


def alaw_to_pcm(data: bytes) -> bytes:
    return struct.pack(f"<{len(data)}h", *(_ALAW_DEC[b] for b in data))


def encode(payload_type: int, pcm: bytes) -> bytes:
    if payload_type == PT_PCMA:
        return pcm_to_alaw(pcm)
    if payload_type == PT_PCMU:
        return pcm_to_ulaw(pcm)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


def decode(payload_type: int, data: bytes) -> bytes:
    if payload_type == PT_PCMA:
        return alaw_to_pcm(data)
    if payload_type == PT_PCMU:
        return ulaw_to_pcm(data)
    raise ValueError(f"not a G.711 payload type: {payload_type}")


# -- RTP -----------------------------------------------------------------------------------


class RtpError(ValueError):
    """A datagram that is not an RTP packet this agent reads."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def encode(self) -> bytes:
        head = struct.pack(
            "!BBHII",
            0x80,
            (0x80 if self.marker else 0) | (self.payload_type & 0x7F),
            self.sequence & 0xFFFF,
            self.timestamp & 0xFFFFFFFF,
            self.ssrc & 0xFFFFFFFF,
        )
        return head + self.payload

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12:
            raise RtpError("shorter than an RTP header")
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
        if b0 >> 6 != 2:
            raise RtpError("not RTP version 2")
        pt = b1 & 0x7F
        if 72 <= pt <= 76:
            raise RtpError("RTCP, not RTP")
        at = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # header extension
            if len(data) < at + 4:
                raise RtpError("truncated header extension")
            (words,) = struct.unpack("!H", data[at + 2 : at + 4])
            at += 4 + 4 * words
        end = len(data)
        if b0 & 0x20:  # padding
            if end <= at or data[-1] == 0 or data[-1] > end - at:
                raise RtpError("bad padding")
            end -= data[-1]
        if at > end:
            raise RtpError("truncated packet")
        return cls(pt, seq, ts, ssrc, data[at:end], bool(b1 & 0x80))


class RtpSender:
    """Numbers the packets of one outgoing stream (sequence and timestamp, RFC 3550 §5.1)."""

    def __init__(self, ssrc: int, payload_type: int, sequence: int = 0, timestamp: int = 0):
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.sequence = sequence & 0xFFFF
        self.timestamp = timestamp & 0xFFFFFFFF
        self._first = True

    def audio(self, pcm_frame: bytes) -> bytes:
        """One 20 ms frame of PCM → one RTP packet (the first carries the marker bit)."""
        pkt = RtpPacket(
            self.payload_type,
            self.sequence,
            self.timestamp,
            self.ssrc,
            encode(self.payload_type, pcm_frame),
            marker=self._first,
        )
        self._first = False
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(pcm_frame) // 2) & 0xFFFFFFFF
        return pkt.encode()


def frames(pcm: bytes, samples: int = FRAME_SAMPLES) -> list[bytes]:
    """PCM cut into frames of `samples`, the last one padded with silence."""
    size = samples * 2
    out = [pcm[i : i + size] for i in range(0, len(pcm), size)]
    if out and len(out[-1]) < size:
        out[-1] = out[-1] + b"\x00" * (size - len(out[-1]))
    return out


# -- DTMF ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """RFC 4733 §2.3: one named event payload."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        return DTMF_EVENTS[self.event] if self.event < len(DTMF_EVENTS) else None

    def encode(self) -> bytes:
        return struct.pack(
            "!BBH", self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration
        )


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    if len(payload) < 4:
        raise RtpError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = struct.unpack("!BBH", payload[:4])
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


class DtmfReceiver:
    """Turns RFC 4733 packets into digits, once per event: an event is identified by its RTP
    timestamp (§2.5.1.3), so the retransmitted end packets and the updates of one key press
    give one digit."""

    def __init__(self) -> None:
        self._seen: int | None = None

    def feed(self, packet: RtpPacket) -> str | None:
        try:
            ev = parse_telephone_event(packet.payload)
        except RtpError:
            return None
        if ev.digit is None or packet.timestamp == self._seen:
            return None
        self._seen = packet.timestamp
        return ev.digit


def parse_dtmf_relay(body: bytes) -> str | None:
    """The digit of a SIP INFO `application/dtmf-relay` body (`Signal=5\\r\\nDuration=160`)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip().lower() == "signal":
            value = value.strip().upper()
            if value == "10":
                return "*"
            if value == "11":
                return "#"
            if len(value) == 1 and value in DTMF_EVENTS:
                return value
            return None
    return None
