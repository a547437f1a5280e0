"""The media user agent's sans-IO parts: G.711, RTP packets, RFC 4733 events, dtmf-relay."""

import hashlib
import math
import struct

import pytest

from heimbuero.media import ua_codec as c

ALL_SAMPLES = struct.pack("<65536h", *range(-32768, 32768))


def test_g711_tables_match_the_reference_implementation():
    # digests of CPython's audioop (the ITU/Sun g711.c reference) over every 16-bit sample
    # and every code word, taken once; audioop itself is deprecated and leaves in 3.13
    assert (
        hashlib.sha256(c.pcm_to_alaw(ALL_SAMPLES)).hexdigest()
        == "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b"
    )
    assert (
        hashlib.sha256(c.pcm_to_ulaw(ALL_SAMPLES)).hexdigest()
        == "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a"
    )
    codes = bytes(range(256))
    assert (
        hashlib.sha256(c.alaw_to_pcm(codes)).hexdigest()
        == "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174"
    )
    assert (
        hashlib.sha256(c.ulaw_to_pcm(codes)).hexdigest()
        == "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827"
    )


def test_g711_silence_and_round_trip_error():
    zero = struct.pack("<h", 0)
    assert c.pcm_to_ulaw(zero) == b"\xff"
    assert c.pcm_to_alaw(zero) == b"\xd5"
    tone = struct.pack(
        "<800h", *(int(12000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(800))
    )
    for pt in (c.PT_PCMA, c.PT_PCMU):
        back = struct.unpack("<800h", c.decode(pt, c.encode(pt, tone)))
        for a, b in zip(struct.unpack("<800h", tone), back, strict=True):
            assert abs(a - b) <= max(16, abs(a) // 16)  # G.711 keeps ~4 bits of mantissa


def test_rtp_packet_round_trip_and_sender_numbering():
    s = c.RtpSender(ssrc=0x1234, payload_type=c.PT_PCMA, sequence=65535, timestamp=7)
    first = c.RtpPacket.parse(s.audio(b"\x00" * 320))
    second = c.RtpPacket.parse(s.audio(b"\x00" * 320))
    assert (first.sequence, first.timestamp, first.marker) == (65535, 7, True)
    assert (second.sequence, second.timestamp, second.marker) == (0, 167, False)
    assert first.payload == b"\xd5" * 160 and first.ssrc == 0x1234


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80" * 11,
        b"\x40" + b"\x00" * 15,
        bytes([0x80, 200]) + b"\x00" * 10,
        bytes([0xA0, 0]) + b"\x00" * 10 + b"\x00",
    ],
)
def test_rtp_parse_refuses_what_is_not_rtp(data):
    with pytest.raises(c.RtpError):
        c.RtpPacket.parse(data)


def test_rtp_parse_skips_csrc_extension_and_padding():
    head = bytes([0x80 | 0x20 | 0x10 | 1, 8]) + struct.pack("!HII", 1, 2, 3)
    data = head + b"CSRC" + struct.pack("!HH", 0xBEDE, 1) + b"EXTN" + b"pay" + b"\x00\x02"
    assert c.RtpPacket.parse(data).payload == b"pay"


def test_frames_pad_the_last():
    out = c.frames(b"\x01\x00" * 200)
    assert [len(f) for f in out] == [320, 320] and out[1].endswith(b"\x00" * 240)


def test_telephone_events_give_one_digit_per_key_press():
    rx = c.DtmfReceiver()
    digits = []
    for ts, ev in [(100, 5), (100, 5), (100, 5), (900, 11), (900, 11), (1700, 5)]:
        for end in (False, True):
            pkt = c.RtpPacket(c.PT_EVENT, 0, ts, 1, c.TelephoneEvent(ev, end, 10, 800).encode())
            d = rx.feed(pkt)
            if d:
                digits.append(d)
    assert digits == ["5", "#", "5"]
    assert rx.feed(c.RtpPacket(c.PT_EVENT, 0, 9, 1, b"\x01")) is None  # short payload
    assert rx.feed(c.RtpPacket(c.PT_EVENT, 0, 9, 1, b"\x63\x80\x00\x10")) is None  # unknown


@pytest.mark.parametrize(
    ("body", "digit"),
    [
        (b"Signal=5\r\nDuration=160\r\n", "5"),
        (b"Signal= #\r\n", "#"),
        (b"signal=11", "#"),
        (b"Signal=10", "*"),
        (b"Signal=x", None),
        (b"Duration=1", None),
        (b"\xff", None),
    ],
)
def test_dtmf_relay_body(body, digit):
    assert c.parse_dtmf_relay(body) == digit


def test_announce_targets_parse_and_print_back():
    from heimbuero.domain.model import AnnounceTarget, parse_target

    assert parse_target("announce:willkommen") == AnnounceTarget("willkommen")
    assert parse_target("announce:urlaub;end") == AnnounceTarget("urlaub", end=True)
    assert str(AnnounceTarget("urlaub", True)) == "announce:urlaub;end"
    for bad in ("announce:", "announce:../x", "announce:a;stop", "announce:a b"):
        with pytest.raises(ValueError, match="not an announcement"):
            parse_target(bad)
