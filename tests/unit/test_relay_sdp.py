"""Anchoring an SDP at the relay keeps codecs, DTMF and hold, and changes only where media goes."""

from __future__ import annotations

from heimbuero.media.relay_sdp import anchor, endpoints
from heimbuero.sip.sdp import SessionDescription

OFFER = (
    "v=0\r\no=- 100 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=rtcp:4001 IN IP4 10.0.0.5\r\n"
    "a=candidate:1 1 UDP 2130706431 10.0.0.5 4000 typ host\r\na=sendonly\r\n"
    "m=video 0 RTP/AVP 96\r\n"
)


def test_anchor_points_media_at_the_relay_and_keeps_codecs_dtmf_and_hold() -> None:
    sd = SessionDescription.parse(OFFER.encode())
    assert endpoints(sd) == [("10.0.0.5", 4000), None]
    anchor(sd, "192.0.2.1", [30000, None])
    text = sd.encode().decode()
    assert "m=audio 30000 RTP/AVP 8 0 101\r\n" in text
    assert "c=IN IP4 192.0.2.1\r\n" in text and "10.0.0.5\r\nt=" not in text
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" in text
    assert "a=rtcp:30001\r\n" in text and "a=candidate" not in text
    assert "a=sendonly\r\n" in text and "m=video 0 RTP/AVP 96\r\n" in text
    assert "o=- 100 2 IN IP4" in text
    assert endpoints(SessionDescription.parse(sd.encode()))[0] == ("192.0.2.1", 30000)


def test_anchor_with_rtcp_mux_names_the_rtp_port() -> None:
    sd = SessionDescription.parse(OFFER.replace("a=sendonly", "a=rtcp-mux").encode())
    anchor(sd, "192.0.2.1", [30000, None])
    assert "a=rtcp:30000\r\n" in sd.encode().decode()


OFFER6 = (
    "v=0\r\no=- 100 1 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    "m=audio 4002 RTP/AVP 0\r\nc=IN IP4 10.0.0.5\r\n"
)


def test_an_ipv6_offer_is_pointed_at_an_ipv4_relay_address_and_the_other_way_round() -> None:
    """The c= lines name the relay address of the family of the phone the SDP goes to, with
    the address type (IP4/IP6) to match, whatever family the phone that wrote it used."""
    sd = SessionDescription.parse(OFFER6.encode())
    assert endpoints(sd) == [("2001:db8::5", 4000), ("10.0.0.5", 4002)]
    anchor(sd, "192.0.2.1", [30000, 30002])
    text = sd.encode().decode()
    assert "c=IN IP4 192.0.2.1\r\nt=0 0" in text and "IP6 2001:db8::5\r\nt=" not in text
    assert "m=audio 30002 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\n" in text
    assert endpoints(SessionDescription.parse(sd.encode())) == [
        ("192.0.2.1", 30000), ("192.0.2.1", 30002)
    ]  # fmt: skip

    sd = SessionDescription.parse(OFFER.encode())  # an IPv4 phone's offer to an IPv6 phone
    anchor(sd, "2001:db8::1", [30000, None])
    text = sd.encode().decode()
    assert "c=IN IP6 2001:db8::1\r\nt=0 0" in text and "IN IP4 10.0.0.5\r\nt=" not in text
    assert "m=audio 30000 RTP/AVP 8 0 101\r\n" in text and "a=rtcp:30001\r\n" in text
    assert endpoints(SessionDescription.parse(sd.encode()))[0] == ("2001:db8::1", 30000)
