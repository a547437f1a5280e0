"""Audio quality in the relay's sans-IO core: RFC 3550 A.1/A.3 loss from sequence numbers
(loss, reorder, duplicates, wrap, restarts), A.8 jitter against a hand-computed example, RTCP
report parsing (SR, RR, compound, truncated, junk), and the call's worst direction."""

from __future__ import annotations

import random

import pytest

from heimbuero.media.relay_core import RelayTable, StreamStats, parse_rtcp
from heimbuero.media.relay_sdp import clock_rates
from heimbuero.sip.sdp import SessionDescription
from heimbuero.store.records import audio_quality

A_PHONE = ("198.51.100.7", 40000)
B_PHONE = ("203.0.113.9", 50000)
SSRC_A = b"\x0a\x0a\x0a\x0a"
SSRC_B = b"\x0b\x0b\x0b\x0b"


def rtp(seq: int, ts: int, ssrc: bytes = SSRC_A, pt: int = 8) -> bytes:
    return bytes([0x80, pt]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + ssrc + b"x" * 160


def feed(seqs: list[int], ssrc: bytes = SSRC_A) -> StreamStats:
    stats = StreamStats()
    for i, seq in enumerate(seqs):
        stats.record(rtp(seq, seq * 160 % 2**32, ssrc), i * 0.02)
    return stats


def block(ssrc: bytes, fraction: int, lost: int, jitter: int) -> bytes:
    return (
        ssrc + bytes([fraction]) + (lost % 2**24).to_bytes(3, "big") + (1234).to_bytes(4, "big")
        + jitter.to_bytes(4, "big") + b"\x00" * 8
    )  # fmt: skip


def rr(reporter: bytes, *blocks: bytes) -> bytes:
    body = reporter + b"".join(blocks)
    return bytes([0x80 | len(blocks), 201]) + (len(body) // 4).to_bytes(2, "big") + body


def sr(reporter: bytes, *blocks: bytes) -> bytes:
    body = reporter + b"\x00" * 20 + b"".join(blocks)
    return bytes([0x80 | len(blocks), 200]) + (len(body) // 4).to_bytes(2, "big") + body


def sdes(ssrc: bytes) -> bytes:
    chunk = ssrc + b"\x01\x05alice" + b"\x00" * 5  # CNAME "alice", end, padded to 4
    return bytes([0x81, 202]) + (len(chunk) // 4).to_bytes(2, "big") + chunk


# -- sequence numbers (RFC 3550 A.1, A.3) -------------------------------------------------


def test_loss_is_expected_minus_received() -> None:
    stats = feed([1, 2, 3, 5, 6, 9, 10])  # 4, 7, 8 lost
    assert (stats.expected, stats.received, stats.lost) == (10, 7, 3)
    assert stats.loss_pct == 30.0


def test_reordered_packets_are_no_loss() -> None:
    stats = feed([1, 2, 4, 3, 5, 7, 6, 8])
    assert (stats.expected, stats.lost) == (8, 0)


def test_duplicates_count_as_received_and_never_make_loss_negative() -> None:
    stats = feed([1, 2, 2, 3, 3, 3, 5])  # 4 lost, but three duplicates arrived
    assert stats.expected == 5 and stats.received == 7 and stats.lost == 0
    assert stats.packets == 7


def test_sequence_wrap_at_65535_is_no_loss_and_loss_across_it_counts() -> None:
    stats = feed([65533, 65534, 65535, 0, 1, 2])
    assert (stats.expected, stats.lost) == (6, 0)
    stats = feed([65534, 65535, 1, 2])  # 0 lost across the wrap
    assert (stats.expected, stats.lost) == (5, 1)


def test_a_big_jump_confirmed_by_the_next_packet_restarts_the_count() -> None:
    stats = feed([*range(1, 11), *range(20000, 20010)])
    assert stats.restarts == 1
    assert (stats.expected, stats.received, stats.lost) == (20, 20, 0)


def test_a_single_stray_jump_is_not_counted_and_does_not_restart() -> None:
    stats = feed([1, 2, 3, 40000, 4, 5, 6])
    assert stats.restarts == 0 and stats.packets == 7
    assert (stats.expected, stats.received, stats.lost) == (6, 6, 0)


def test_a_new_ssrc_after_a_reinvite_starts_a_new_count_summed_with_the_old() -> None:
    stats = StreamStats()
    for i, seq in enumerate((1, 2, 3, 5)):  # 4 lost
        stats.record(rtp(seq, seq * 160), i * 0.02)
    for i, seq in enumerate((700, 701, 703)):  # 702 lost
        stats.record(rtp(seq, 90000 + seq * 160, SSRC_B), 1 + i * 0.02)
    assert stats.restarts == 1
    assert (stats.expected, stats.received, stats.lost) == (9, 7, 2)


def test_every_tenth_packet_lost_is_ten_percent() -> None:
    stats = feed([s for s in range(1, 201) if s % 10])
    assert stats.expected == 199 and stats.lost == 19 and stats.loss_pct == 9.5


# -- jitter (RFC 3550 A.8) ------------------------------------------------------------------


def test_jitter_against_a_hand_computed_example() -> None:
    # 8000 Hz, 20 ms frames (160 timestamp units). Arrivals 0, 20, 50 (10 ms late), 60 ms:
    # transits 0, 0, 80, 0 units; D = 0, 80, 80 units = 0, 10, 10 ms;
    # J = 0, then 10/16 = 0.625, then 0.625 + (10 - 0.625)/16 = 1.2109375 ms
    stats = StreamStats()
    for seq, arrival in ((0, 0.0), (1, 0.020), (2, 0.050), (3, 0.060)):
        stats.record(rtp(seq, seq * 160), arrival)
        if seq == 2:
            assert stats.jitter_ms == pytest.approx(0.625)
    assert stats.jitter_ms == pytest.approx(1.2109375)
    assert stats.as_dict()["jitter_ms"] == 1.21


def test_jitter_uses_the_payload_clock_rate() -> None:
    # the same timing at 48000 Hz (960 units a frame) is the same jitter in milliseconds
    stats = StreamStats()
    for seq, arrival in ((0, 0.0), (1, 0.020), (2, 0.050), (3, 0.060)):
        stats.record(rtp(seq, seq * 960, pt=111), arrival, clock_rate=48000)
    assert stats.jitter_ms == pytest.approx(1.2109375)


def test_a_timestamp_jump_is_no_jitter() -> None:
    stats = feed(list(range(10)))
    stats.record(rtp(10, 10 * 160 + 80000), 0.2)  # the sender's clock jumped 10 s
    for seq in range(11, 20):
        stats.record(rtp(seq, seq * 160 + 80000), seq * 0.02)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)
    stats.record(rtp(20, 20 * 160 + 80000), 20 * 0.02 + 0.5)  # 500 ms late: that is jitter
    assert stats.jitter_ms == pytest.approx(500 / 16)


def test_even_spacing_is_no_jitter_and_repeated_event_timestamps_are_not_timed() -> None:
    stats = feed(list(range(50)))
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)
    # an RFC 4733 event: three packets with one timestamp, 20 ms apart
    for i in range(3):
        stats.record(rtp(50 + i, 50 * 160, pt=101), 1.0 + i * 0.02)
    assert stats.jitter_ms < 2.0


# -- RTCP (RFC 3550 §6.4) ------------------------------------------------------------------


def test_rtcp_receiver_and_sender_reports_are_parsed() -> None:
    blocks = parse_rtcp(rr(SSRC_B, block(SSRC_A, 64, 12, 400)))
    assert len(blocks) == 1
    b = blocks[0]
    assert (b.reporter, b.ssrc) == (int.from_bytes(SSRC_B, "big"), int.from_bytes(SSRC_A, "big"))
    assert (b.fraction_lost, b.cumulative_lost, b.jitter, b.highest_seq) == (64, 12, 400, 1234)
    two = parse_rtcp(sr(SSRC_B, block(SSRC_A, 0, 1, 8), block(b"\x0c" * 4, 25, 3, 16)))
    assert [x.cumulative_lost for x in two] == [1, 3]
    assert parse_rtcp(sr(SSRC_B)) == []  # a sender report without report blocks


def test_compound_packets_and_negative_cumulative_loss() -> None:
    data = sr(SSRC_B) + rr(SSRC_B, block(SSRC_A, 10, -2, 80)) + sdes(SSRC_B)
    blocks = parse_rtcp(data)
    assert len(blocks) == 1 and blocks[0].cumulative_lost == -2 and blocks[0].fraction_lost == 10
    assert parse_rtcp(sdes(SSRC_B) + rr(SSRC_B, block(SSRC_A, 1, 1, 1)))[0].jitter == 1


def test_truncated_and_junk_rtcp_yield_what_was_well_formed_and_never_raise() -> None:
    good = rr(SSRC_B, block(SSRC_A, 64, 12, 400))
    assert parse_rtcp(good[:-1]) == []  # the length names more than arrived
    assert len(parse_rtcp(good + good[:10])) == 1  # a cut second packet is ignored
    assert parse_rtcp(b"") == [] and parse_rtcp(b"\x80\xc9") == []
    assert parse_rtcp(b"\x00\xc9\x00\x07" + good[4:]) == []  # not version 2
    lying = bytes([0x80 | 31, 201, 0, 1]) + SSRC_B  # claims 31 blocks in 8 bytes
    assert parse_rtcp(lying) == []
    assert len(parse_rtcp(good * 100)) == 16  # a compound packet is looked at up to a bound
    rng = random.Random(3550)
    for _ in range(2000):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        parse_rtcp(bytes([0x80, 201]) + junk)
        parse_rtcp(junk)


# -- through the relay table ---------------------------------------------------------------


def relayed() -> tuple[RelayTable, int, int]:
    table = RelayTable(30000, 30011)
    call = table.allocate("c1", 0.0)
    table.receive(call.a.port, rtp(1, 160), A_PHONE, 0.0)
    table.receive(call.b.port, rtp(1, 160, SSRC_B), B_PHONE, 0.0)
    return table, call.a.port, call.b.port


def test_what_the_receiving_phone_reports_goes_with_the_direction_it_received() -> None:
    table, pa, pb = relayed()
    a_rtcp = (A_PHONE[0], A_PHONE[1] + 1)
    assert table.receive(pa + 1, sr(SSRC_A), a_rtcp, 0.5) is None  # (b's RTCP not known yet)
    report = rr(SSRC_B, block(SSRC_A, 51, 30, 800))  # b received a's audio: 20 % lost
    assert table.receive(pb + 1, report, B_PHONE, 1.0) == (pa + 1, a_rtcp)
    # rtcp-mux: a's report about b's audio on the RTP port, told apart by its packet type
    assert table.receive(pa, sr(SSRC_A, block(SSRC_B, 0, 0, 16)), A_PHONE, 1.0) == (pb, B_PHONE)
    stats = table.calls["c1"].stats()
    assert stats["a"]["reported"] == {"reports": 1, "loss_pct": 19.9, "lost": 30,
                                      "jitter_ms": 100.0}  # fmt: skip
    assert stats["b"]["reported"]["loss_pct"] == 0.0 and stats["b"]["reported"]["jitter_ms"] == 2
    assert stats["a"]["packets"] == 1 and stats["b"]["packets"] == 1  # RTCP is no RTP
    assert audio_quality(stats) == (19.9, 100.0)


def test_junk_rtcp_from_the_latched_phone_is_forwarded_unchanged_and_counted_nowhere() -> None:
    table, pa, pb = relayed()
    junk = bytes([0x80, 201, 0xFF, 0xFF]) + b"\x01" * 7
    table.set_destination("c1", "a", A_PHONE)
    assert table.receive(pb + 1, junk, B_PHONE, 1.0) == (pa + 1, (A_PHONE[0], A_PHONE[1] + 1))
    assert table.receive(pb, junk, B_PHONE, 1.0) == (pa, A_PHONE)
    assert "reported" not in table.calls["c1"].stats()["a"]


def test_clock_rates_come_from_the_sdp_and_junk_rates_are_ignored() -> None:
    table, pa, _ = relayed()
    table.set_rates("c1", {"111": 48000, "x": 1, "8": -5, "9": "junk", "200": 8000})
    table.set_rates("c1", ["not", "a", "dict"])
    table.set_rates("nope", {"0": 8000})
    assert table.calls["c1"].rates == {111: 48000}
    sd = SessionDescription.parse(
        b"v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 111 9 0 101 96\r\na=rtpmap:111 opus/48000/2\r\n"
        b"a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/48000\r\na=rtpmap:96 x/y\r\n"
    )
    assert clock_rates(sd, 0) == {"111": 48000, "9": 8000, "0": 8000, "101": 48000}


def test_the_worst_direction_and_old_records() -> None:
    media = {
        "a": {"packets": 90, "lost": 10, "loss_pct": 10.0, "jitter_ms": 3.0},
        "b": {"packets": 100, "lost": 0, "loss_pct": 0.0, "jitter_ms": 45.5,
              "reported": {"loss_pct": 2.0, "jitter_ms": 60.0}},
    }  # fmt: skip
    assert audio_quality(media) == (10.0, 60.0)
    assert audio_quality({"a": {"packets": 95, "lost": 5, "jitter_ms": 1}}) == (5.0, 1.0)
    assert audio_quality(None) is None and audio_quality({}) is None
    assert audio_quality({"a": "junk", "b": {"loss_pct": "x", "jitter_ms": None}}) == (0.0, 0.0)
