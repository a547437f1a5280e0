"""rtpengine as the media relay: the statistics of its answers as the call record keeps them."""

from __future__ import annotations

from typing import Any

from heimbuero.services.rtpengine_relay import call_stats


def _stream(packets: int, octets: int, rtcp: bool = False) -> dict[str, Any]:
    return {
        "flags": [b"RTCP" if rtcp else b"RTP", b"filled"],
        "stats": {"packets": packets, "bytes": octets, "errors": 0 if rtcp else 1},
    }


def test_call_stats_from_a_delete_answer() -> None:
    reply = {
        "result": b"ok",
        "tags": {
            "ta": {"medias": [{"streams": [_stream(50, 8600), _stream(7, 500, rtcp=True)]}]},
            "tb": {"medias": [{"streams": [_stream(20, 3440), _stream(3, 200, rtcp=True)]}]},
            "junk": "not a monologue",
        },
        "SSRC": {"1111": {"tag": b"ta", "cumulative loss": 2, "highest jitter": 4}},
    }
    stats = call_stats(reply, "ta")
    assert stats["a"] == {"packets": 50, "bytes": 8600, "dropped": 1, "expected": 52,
                          "lost": 2, "loss_pct": 3.8, "jitter_ms": 4.0,
                          "restarts": 0}  # fmt: skip
    assert stats["b"]["packets"] == 20 and stats["b"]["bytes"] == 3440
    assert call_stats({"result": b"ok"}, "ta")["a"]["packets"] == 0
