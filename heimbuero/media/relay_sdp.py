"""SDP rewriting for an anchored call: each media stream's address and port become the relay's.

Codecs, ``telephone-event``, direction attributes (hold: ``a=sendonly``/``inactive``) and every
other line stay as they are; ``a=rtcp`` is pointed at the relay's RTCP port (port + 1) and ICE
candidates, which would name the phone's own addresses, are removed. A stream with port 0
(declined, RFC 3264 §6) stays declined. The relay keys each stream as ``CALL-ID/INDEX``.
"""

from __future__ import annotations

from heimbuero.sip.sdp import SessionDescription

# RFC 3551's static audio payload types whose clock is not named by an a=rtpmap line
STATIC_RATES = {0: 8000, 3: 8000, 4: 8000, 5: 8000, 6: 16000, 7: 8000, 8: 8000, 9: 8000,
                10: 44100, 11: 44100, 12: 8000, 13: 8000, 14: 90000, 15: 8000, 16: 11025,
                17: 22050, 18: 8000}  # fmt: skip
ICE_ATTRIBUTES = ("candidate", "ice-ufrag", "ice-pwd", "ice-options", "end-of-candidates")


def stream_key(call_id: str, index: int) -> str:
    return f"{call_id}/{index}"


def endpoints(sd: SessionDescription) -> list[tuple[str, int] | None]:
    """Where each media stream says it receives RTP (None: declined or no address)."""
    out: list[tuple[str, int] | None] = []
    for i, m in enumerate(sd.media):
        address = sd.media_address(i)
        out.append((address, m.port) if m.port and address else None)
    return out


def clock_rates(sd: SessionDescription, index: int) -> dict[str, int]:
    """The RTP clock rate of each payload type of stream ``index`` (for the relay's jitter):
    from ``a=rtpmap`` (G.722 is 8000 there, RFC 3551 §4.5.2), else RFC 3551's static table."""
    m = sd.media[index]
    out: dict[str, int] = {}
    rtpmap = m.rtpmap()
    for pt in m.formats[:32]:
        enc = rtpmap.get(pt)
        rate: int | None = None
        if enc is not None:
            parts = enc.split("/")
            if len(parts) > 1 and parts[1].isdigit() and 0 < int(parts[1]) <= 1_000_000:
                rate = int(parts[1])
        elif pt.isdigit():
            rate = STATIC_RATES.get(int(pt))
        if rate is not None:
            out[pt] = rate
    return out


def anchor(sd: SessionDescription, address: str, ports: list[int | None]) -> None:
    """Point every stream with a relay port at ``address``:port (port None: left unchanged)."""
    changed = False
    for m, port in zip(sd.media, ports, strict=True):
        if port is None or m.port == 0:
            continue
        m.port = port
        m.set_connection(address)
        if m.has_attribute("rtcp"):
            m.set_attribute("rtcp", str(port if m.has_attribute("rtcp-mux") else port + 1))
        m.remove_attributes(*ICE_ATTRIBUTES)
        changed = True
    if changed:
        if sd.connection is not None:
            sd.set_connection(address)
        sd.bump_version()
