"""rtpengine as the media relay: the statistics of its answers as the call record keeps them."""

from __future__ import annotations

from typing import Any

from heimbuero.services.rtpengine_relay import call_stats
from heimbuero.store.records import audio_quality


def _stream(packets: int, octets: int, ssrc: int | None, rtcp: bool = False) -> dict[str, Any]:
    stream: dict[str, Any] = {
        "flags": [b"RTCP" if rtcp else b"RTP", b"filled"],
        "stats": {"packets": packets, "bytes": octets, "errors": 0 if rtcp else 1},
    }
    if ssrc is not None:
        stream["SSRC"] = ssrc
    return stream


def _mos(mos: int, jitter: int, loss: int, at: int) -> dict[str, int]:
    return {"MOS": mos, "jitter": jitter, "packet loss": loss, "reported at": at,
            "round-trip time": 80, "round-trip time leg": 20}  # fmt: skip


# rtpengine 10.5's answer (trimmed) after a call whose phones sent RTCP: the SSRC section is
# keyed by the reporting phone's SSRC (decimal); 572662306 is the callee's, reporting 5 of the
# caller's packets lost; 286331153 the caller's, reporting nothing lost of the callee's
REPLY = {
    "result": b"ok",
    "SSRC": {
        "572662306": {
            "cumulative loss": 5,
            "average MOS": {**_mos(42, 10, 2, 0), "samples": 3},
            "lowest MOS": _mos(42, 10, 2, 7),
            "highest MOS": _mos(42, 10, 2, 7),
            "MOS progression": {"interval": 0, "entries": [
                _mos(42, 10, 8, 7), _mos(42, 12, 0, 8), _mos(42, 10, 0, 10)]},
        },
        "286331153": {
            "cumulative loss": 0,
            "average MOS": {**_mos(44, 3, 0, 0), "samples": 2},
            "lowest MOS": _mos(44, 3, 0, 8),
            "highest MOS": _mos(44, 3, 0, 8),
            "MOS progression": {"interval": 0, "entries": [_mos(0, 3, 0, 7), _mos(44, 3, 0, 8)]},
        },
    },
    "tags": {
        "ta": {"medias": [{"streams": [_stream(195, 33540, 286331153),
                                       _stream(4, 184, 286331153, rtcp=True)]}]},
        "tb": {"medias": [{"streams": [_stream(200, 34400, 572662306),
                                       _stream(4, 184, 572662306, rtcp=True)]}]},
        "junk": "not a monologue",
    },
}  # fmt: skip


def test_call_stats_take_loss_and_jitter_from_the_receiving_phones_reports() -> None:
    stats = call_stats(REPLY, "ta")
    assert stats["a"] == {
        "packets": 195, "bytes": 33540, "dropped": 1, "expected": None, "lost": None,
        "loss_pct": None, "jitter_ms": None, "restarts": 0,
        "reported": {"reports": 3, "loss_pct": 8.0, "lost": 5, "jitter_ms": 12.0},
    }  # fmt: skip
    assert stats["b"]["packets"] == 200 and stats["b"]["bytes"] == 34400
    assert stats["b"]["reported"] == {"reports": 2, "loss_pct": 0.0, "lost": 0, "jitter_ms": 3.0}
    assert audio_quality(stats) == (8.0, 12.0)
    # the callee's view: the same answer read for the other tag swaps the directions
    assert call_stats(REPLY, "tb")["b"]["reported"]["lost"] == 5


def test_without_the_phones_rtcp_loss_and_jitter_are_unknown_not_zero() -> None:
    """rtpengine 10.5 (userspace) answers an empty SSRC section when the phones send no RTCP
    reports: packets and bytes are real, loss and jitter unknown."""
    stats = call_stats({**REPLY, "SSRC": {}}, "ta")
    assert stats["a"]["packets"] == 195 and stats["a"]["lost"] is None
    assert "reported" not in stats["a"] and "reported" not in stats["b"]
    assert audio_quality(stats) is None
    assert call_stats({"result": b"ok"}, "ta")["a"]["packets"] == 0


def test_ssrc_entries_of_no_stream_or_junk_are_ignored() -> None:
    junk: dict[str, Any] = {
        "999": {"cumulative loss": 70, "average MOS": _mos(10, 900, 90, 0)},  # (no stream)
        "572662306": "junk",
        "286331153": {"cumulative loss": "x", "MOS progression": {"entries": ["junk"]}},
    }
    stats = call_stats({**REPLY, "SSRC": junk}, "ta")
    assert "reported" not in stats["a"] and "reported" not in stats["b"]
