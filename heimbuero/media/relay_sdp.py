"""SDP rewriting for an anchored call: each media stream's address and port become the relay's.

Codecs, ``telephone-event``, direction attributes (hold: ``a=sendonly``/``inactive``) and every
other line stay as they are; ``a=rtcp`` is pointed at the relay's RTCP port (port + 1) and ICE
candidates, which would name the phone's own addresses, are removed. A stream with port 0
(declined, RFC 3264 §6) stays declined. The relay keys each stream as ``CALL-ID/INDEX``.
"""

from __future__ import annotations

from heimbuero.sip.sdp import SessionDescription

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
