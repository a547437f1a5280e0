"""The relay's sans-IO state: latching, hijack refusal, SSRC re-latch, RTCP, stats, ports."""

from __future__ import annotations

import pytest

from heimbuero.media.relay_core import RelayFull, RelayTable, canonical_host, peer_address

A_PHONE = ("198.51.100.7", 40000)  # caller's NAT address
B_PHONE = ("203.0.113.9", 50000)  # callee's NAT address
ATTACKER = ("192.0.2.66", 6666)


def rtp(seq: int, ts: int, ssrc: bytes = b"\x01\x02\x03\x04", payload: bytes = b"x" * 160) -> bytes:
    return bytes([0x80, 8]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + ssrc + payload


def rtcp_sr(ssrc: bytes = b"\x01\x02\x03\x04") -> bytes:
    return bytes([0x80, 200, 0, 6]) + ssrc + b"\x00" * 20


def latched_call() -> tuple[RelayTable, int, int]:
    table = RelayTable(30000, 30011)
    call = table.allocate("c1", now=0.0)
    pa, pb = call.a.port, call.b.port
    assert table.receive(pa, rtp(1, 160), A_PHONE, 0.02) is None  # b not known yet
    assert table.receive(pb, rtp(1, 160, b"BBBB"), B_PHONE, 0.02) == (pa, A_PHONE)
    return table, pa, pb


def test_media_is_forwarded_to_the_latched_address_of_the_other_side() -> None:
    table, pa, pb = latched_call()
    assert table.receive(pa, rtp(2, 320), A_PHONE, 0.04) == (pb, B_PHONE)
    assert table.receive(pb, rtp(2, 320, b"BBBB"), B_PHONE, 0.04) == (pa, A_PHONE)


def test_a_third_party_cannot_hijack_a_latched_stream() -> None:
    table, pa, pb = latched_call()
    assert table.receive(pa, rtp(3, 480, b"EVIL"), ATTACKER, 0.06) is None
    assert table.receive(pb, rtp(3, 480, b"EVIL"), ATTACKER, 0.06) is None
    # the phones still reach each other at their own addresses
    assert table.receive(pa, rtp(4, 640), A_PHONE, 0.08) == (pb, B_PHONE)
    assert table.calls["c1"].a.stats.dropped == 1


def test_the_same_ssrc_from_a_new_nat_binding_relatches() -> None:
    table, pa, pb = latched_call()
    moved = ("198.51.100.7", 40002)
    assert table.receive(pa, rtp(2, 320), moved, 0.04) == (pb, B_PHONE)
    assert table.receive(pb, rtp(2, 320, b"BBBB"), B_PHONE, 0.04) == (pa, moved)


def test_sdp_address_is_used_until_the_side_sends_and_then_replaced_by_its_real_one() -> None:
    table = RelayTable(30000, 30011)
    call = table.allocate("c1", 0.0)
    table.set_destination("c1", "b", ("10.0.0.5", 4000))  # private address from the SDP
    assert table.receive(call.a.port, rtp(1, 160), A_PHONE, 0.0) == (
        call.b.port,
        ("10.0.0.5", 4000),
    )
    table.receive(call.b.port, rtp(1, 160, b"BBBB"), B_PHONE, 0.0)
    assert table.receive(call.a.port, rtp(2, 320), A_PHONE, 0.02) == (call.b.port, B_PHONE)


def test_rtcp_on_port_plus_one_and_muxed_rtcp_are_forwarded() -> None:
    table, pa, pb = latched_call()
    table.receive(pb + 1, rtcp_sr(b"BBBB"), (B_PHONE[0], B_PHONE[1] + 1), 0.1)
    assert table.receive(pa + 1, rtcp_sr(), (A_PHONE[0], A_PHONE[1] + 1), 0.1) == (
        pb + 1,
        (B_PHONE[0], B_PHONE[1] + 1),
    )
    assert table.receive(pa, rtcp_sr(), A_PHONE, 0.1) == (pb, B_PHONE)  # rtcp-mux
    assert table.receive(pa, rtcp_sr(), ATTACKER, 0.1) is None


def test_garbage_and_unallocated_ports_are_dropped() -> None:
    table = RelayTable(30000, 30011)
    call = table.allocate("c1", 0.0)
    assert table.receive(call.a.port, b"\x00garbage", ATTACKER, 0.0) is None
    assert not call.a.latched
    assert table.receive(31000, rtp(1, 160), ATTACKER, 0.0) is None


def test_garbage_from_the_latched_phone_is_dropped_and_not_counted_as_rtp() -> None:
    table, pa, pb = latched_call()
    stats = table.calls["c1"].a.stats
    for junk in (rtp(2, 320)[:11], b"\x40" + rtp(2, 320)[1:], b"\x80"):
        assert table.receive(pa, junk, A_PHONE, 0.04) is None
    assert (stats.packets, stats.dropped, stats.expected) == (1, 3, 1)
    assert table.receive(pa, rtp(2, 320), A_PHONE, 0.04) == (pb, B_PHONE)
    assert (stats.packets, stats.expected, stats.lost) == (2, 2, 0)


def test_loss_and_jitter_from_sequence_numbers_and_timestamps() -> None:
    table = RelayTable(30000, 30011)
    call = table.allocate("c1", 0.0)
    for seq in (1, 2, 3, 5, 6, 9, 10):  # 4, 7, 8 lost
        table.receive(call.a.port, rtp(seq, seq * 160), A_PHONE, seq * 0.02)
    stats = call.a.stats.as_dict()
    assert stats["packets"] == 7 and stats["lost"] == 3 and stats["bytes"] == 7 * 172
    assert stats["jitter_ms"] == 0.0
    table.receive(call.a.port, rtp(11, 11 * 160), A_PHONE, 11 * 0.02 + 0.03)  # 30 ms late
    assert call.a.stats.as_dict()["jitter_ms"] > 1.0


def test_sequence_wraparound_is_no_loss() -> None:
    table = RelayTable(30000, 30011)
    call = table.allocate("c1", 0.0)
    for i, seq in enumerate((65534, 65535, 0, 1)):
        table.receive(call.a.port, rtp(seq, i * 160), A_PHONE, i * 0.02)
    assert call.a.stats.lost == 0 and call.a.stats.expected == 4


def test_port_range_exhaustion_is_a_clean_refusal_and_delete_frees_the_ports() -> None:
    table = RelayTable(30000, 30004)  # two (RTP, RTCP) pairs: one call; 30004 alone is no pair
    table.allocate("c1", 0.0)
    assert table.allocate("c1", 1.0) is table.calls["c1"]  # a re-offer keeps its ports
    with pytest.raises(RelayFull):
        table.allocate("c2", 0.0)
    ended = table.delete("c1", "bye")
    assert ended is not None and ended.ended == "bye"
    table.allocate("c2", 0.0)


def test_ports_are_even_rtp_ports_with_rtcp_above_inside_the_range() -> None:
    table = RelayTable(30001, 30010)
    ports = []
    for i in range(2):
        call = table.allocate(f"c{i}", 0.0)
        ports += [call.a.port, call.b.port]
    assert sorted(ports) == [30002, 30004, 30006, 30008]
    with pytest.raises(RelayFull):
        table.allocate("c9", 0.0)


def test_silent_calls_are_reported_after_the_timeout() -> None:
    table = RelayTable(30000, 30011, silence_timeout=30)
    call = table.allocate("c1", 0.0)
    table.receive(call.a.port, rtp(1, 160), A_PHONE, 10.0)
    assert [c.call_id for c in table.silent(39.0)] == []
    assert [c.call_id for c in table.silent(40.0)] == ["c1"]


def test_an_ipv6_phone_latches_and_a_call_bridges_the_families() -> None:
    """Leg a faces an IPv6 phone, leg b an IPv4 one: the IPv6 source (as an IPv6 socket
    reports it: host, port, flow info, scope) latches like an IPv4 one, media crosses in both
    directions, and a stranger on IPv6 cannot take the stream."""
    table = RelayTable(30000, 30011)
    call = table.allocate("c1", now=0.0)
    pa, pb = call.a.port, call.b.port
    phone6 = peer_address(("2001:db8::7", 40000, 0, 0))
    assert phone6 == ("2001:db8::7", 40000)
    table.set_destination("c1", "b", B_PHONE)  # b's SDP address, as its signalling came from
    assert table.receive(pa, rtp(1, 160), phone6, 0.02) == (pb, B_PHONE)
    assert table.receive(pb, rtp(1, 160, b"BBBB"), B_PHONE, 0.02) == (pa, phone6)
    stranger = peer_address(("2001:db8::66", 40000, 0, 0))
    assert table.receive(pa, rtp(2, 320, b"EVIL"), stranger, 0.04) is None
    # the same phone written otherwise (uncompressed, upper case) is the same source
    same = peer_address(("2001:0DB8:0:0::7", 40000, 0, 0))
    assert table.receive(pa, rtp(2, 320), same, 0.04) == (pb, B_PHONE)
    # RTCP latches on port + 1 by source; its reply goes to b's RTCP port from the SDP
    assert table.receive(pa + 1, rtcp_sr(), phone6, 0.05) == (pb + 1, (B_PHONE[0], 50001))
    stats = table.delete("c1")
    assert stats is not None and stats.stats()["a"]["packets"] == 2
    assert stats.stats()["a"]["dropped"] == 1


def test_source_addresses_are_compared_in_one_form() -> None:
    assert peer_address(("::ffff:192.0.2.1", 5004, 0, 0)) == ("192.0.2.1", 5004)
    assert peer_address(("198.51.100.7", 5004)) == ("198.51.100.7", 5004)
    assert canonical_host("[2001:DB8::1]") == "2001:db8::1"
    assert canonical_host("fe80::1%eth0") == "fe80::1%eth0"
    assert canonical_host("relay.example") == "relay.example"
    # an IPv6 destination from the SDP in another spelling is kept in the same form
    table = RelayTable(30000, 30011)
    call = table.allocate("c1", now=0.0)
    table.set_destination("c1", "a", ("2001:DB8:0::7", 40000))
    assert call.a.rtp_peer == ("2001:db8::7", 40000)
    assert call.a.rtcp_peer == ("2001:db8::7", 40001)
