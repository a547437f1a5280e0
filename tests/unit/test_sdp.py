"""heimbuero.sip.sdp: parse, change and write session descriptions."""

from __future__ import annotations

import pytest

from heimbuero.sip.sdp import SdpError, SessionDescription

OFFER = (
    b"v=0\r\n"
    b"o=anna 2890844526 2890844526 IN IP4 192.168.1.20\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.168.1.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 8 0 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=rtcp:49171\r\n"
    b"a=sendrecv\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
)


def test_round_trip_keeps_every_line() -> None:
    assert SessionDescription.parse(OFFER).encode() == OFFER


def test_reads_media_formats_direction_and_address() -> None:
    sd = SessionDescription.parse(OFFER)
    audio, video = sd.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 49170, "RTP/AVP")
    assert audio.formats == ["8", "0", "101"]
    assert audio.rtpmap()["101"] == "telephone-event/8000"
    assert audio.direction == "sendrecv"
    assert audio.attribute("rtcp") == "49171"
    assert sd.media_address(0) == "192.168.1.20"
    assert video.port == 0 and video.direction == "sendrecv"


def test_rewriting_address_and_port_changes_only_those() -> None:
    sd = SessionDescription.parse(OFFER)
    sd.set_connection("203.0.113.5")
    sd.media[0].set_connection("203.0.113.5")
    sd.media[0].port = 30000
    sd.media[0].set_attribute("rtcp", "30001")
    sd.media[0].direction = "sendonly"
    sd.bump_version()
    text = sd.encode().decode()
    assert "c=IN IP4 203.0.113.5\r\nt=0 0" in text
    assert "m=audio 30000 RTP/AVP 8 0 101\r\nc=IN IP4 203.0.113.5\r\n" in text
    assert "a=rtcp:30001" in text and "a=sendonly" in text and "a=sendrecv" not in text
    assert "o=anna 2890844526 2890844527 IN IP4" in text
    assert "a=fmtp:101 0-16" in text
    again = SessionDescription.parse(text.encode())
    assert again.media_address(0) == "203.0.113.5" and again.media[0].port == 30000


def test_ipv6_connection() -> None:
    sd = SessionDescription.parse(OFFER)
    sd.media[0].set_connection("2001:db8::1")
    assert sd.media_address(0) == "2001:db8::1"
    assert b"c=IN IP6 2001:db8::1" in sd.encode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"o=x 1 1 IN IP4 1.2.3.4\r\n",
        b"v=0\r\ns=-\r\n",
        b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n",
        b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nm=audio 1\r\n",
        b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nnonsense\r\n",
        b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\n" + b"m=audio 1 RTP/AVP 0\r\n" * 40,
        b"v=0\r\n\xff\xfe",
    ],
)
def test_bad_descriptions_are_refused(body: bytes) -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(body)
