"""Stream framing by Content-Length with RFC 5626 CRLF keep-alives."""

import pytest

from heimbuero.sip.framing import FramingError, StreamFramer

MSG = (
    b"MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)


def test_whole_message_split_in_arbitrary_chunks() -> None:
    f = StreamFramer()
    data = MSG + MSG
    out: list[bytes] = []
    for i in range(0, len(data), 7):
        out += f.feed(data[i : i + 7])
    assert out == [MSG, MSG]
    assert f.buffered == 0


def test_ping_is_counted_and_not_a_message() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n\r\n") == []
    assert f.pings == 1
    assert f.feed(b"\r\n\r\n" + MSG) == [MSG]
    assert f.pings == 2


def test_compact_content_length() -> None:
    msg = MSG.replace(b"Content-Length", b"l")
    assert StreamFramer().feed(msg) == [msg]


def test_missing_content_length_means_no_body() -> None:
    msg = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n"
    assert StreamFramer().feed(msg) == [msg]


@pytest.mark.parametrize(
    "data",
    [
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 999999\r\n\r\n",
        b"X" * 70000,
    ],
)
def test_bad_or_oversized_stream_is_refused(data: bytes) -> None:
    with pytest.raises(FramingError):
        StreamFramer(max_size=65535).feed(data)
