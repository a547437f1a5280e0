"""Message framing on stream transports (RFC 3261 §18.3) with RFC 5626 CRLF keep-alives."""

from __future__ import annotations

__all__ = ["FramingError", "StreamFramer", "KEEPALIVE_PING", "KEEPALIVE_PONG"]

KEEPALIVE_PING = b"\r\n\r\n"
KEEPALIVE_PONG = b"\r\n"


class FramingError(ValueError):
    """The stream cannot be framed (oversized message, bad Content-Length); close the connection."""


class StreamFramer:
    """Splits a byte stream into whole messages by Content-Length.

    `feed()` returns complete messages; a bare CRLFCRLF between messages is an RFC 5626 ping,
    reported by `pings` so the caller can answer with a single CRLF pong.
    """

    __slots__ = ("_buf", "max_size", "pings")

    def __init__(self, max_size: int = 65535) -> None:
        self._buf = bytearray()
        self.max_size = max_size
        self.pings = 0

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while True:
            # Leading CRLFs between messages are keep-alives (ping = CRLFCRLF) or noise.
            skip = 0
            while buf[skip : skip + 2] == b"\r\n":
                skip += 2
                if skip % 4 == 0:
                    self.pings += 1
            if skip:
                del buf[:skip]
            if not buf:
                break
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_size:
                    raise FramingError("header section too large")
                break
            length = _content_length(bytes(buf[:end]))
            total = end + 4 + length
            if total > self.max_size:
                raise FramingError("message too large")
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


def _content_length(head: bytes) -> int:
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        n = name.strip().lower()
        if n in (b"content-length", b"l"):
            v = value.strip()
            if not v.isdigit() or len(v) > 9:
                raise FramingError("bad Content-Length")
            if found is not None:
                raise FramingError("more than one Content-Length")  # RFC 4475 §3.3.9
            found = int(v)
    return found or 0  # RFC 3261 §18.3 makes it mandatory on streams; treat absent as no body
