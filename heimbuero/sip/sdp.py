"""SDP (RFC 8866) as the proxy and the media applications need it: parse a session
description into its session part and media sections, read and change the connection
address, ports, formats, direction and attributes, and write it back. Lines this module does
not interpret are kept as they were, in their order, so rewriting the address of an offer
changes nothing else (RFC 3264 offer/answer stays the endpoints' business).

Sans-IO: bytes in, bytes out; nothing here touches a socket."""

from __future__ import annotations

from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_SDP_BYTES = 65535
MAX_MEDIA = 32


class SdpError(ValueError):
    """The body is not a session description this server can work with."""


def _split(line: str) -> tuple[str, str]:
    if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
        raise SdpError(f"not an SDP line: {line[:40]!r}")
    return line[0], line[2:]


@dataclass
class MediaSection:
    """One `m=` line and the lines under it, in order (the first is the `m=` line)."""

    lines: list[tuple[str, str]]

    def _m(self) -> list[str]:
        return self.lines[0][1].split()

    @property
    def media(self) -> str:
        return self._m()[0]

    @property
    def port(self) -> int:
        return int(self._m()[1].split("/")[0])

    @port.setter
    def port(self, value: int) -> None:
        parts = self._m()
        count = parts[1].partition("/")[2]
        parts[1] = f"{value}/{count}" if count else str(value)
        self.lines[0] = ("m", " ".join(parts))

    @property
    def proto(self) -> str:
        return self._m()[2]

    @property
    def formats(self) -> list[str]:
        return self._m()[3:]

    @property
    def connection(self) -> str | None:
        """The address of this section's own `c=` line, or None."""
        for kind, value in self.lines:
            if kind == "c":
                return _connection_address(value)
        return None

    def set_connection(self, address: str) -> None:
        """Give this section a `c=` line with `address` (replacing its own, if any)."""
        value = _connection_value(address)
        for i, (kind, _) in enumerate(self.lines):
            if kind == "c":
                self.lines[i] = ("c", value)
                return
        # c= comes after m=, i= (RFC 8866 §5 order: m, i, c, b, k, a)
        at = 1
        while at < len(self.lines) and self.lines[at][0] == "i":
            at += 1
        self.lines.insert(at, ("c", value))

    def attributes(self) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for kind, value in self.lines:
            if kind == "a":
                name, sep, rest = value.partition(":")
                out.append((name, rest if sep else None))
        return out

    def attribute(self, name: str) -> str | None:
        """The value of the first `a=name:value` (an empty string for a flag `a=name`)."""
        for n, v in self.attributes():
            if n == name:
                return v if v is not None else ""
        return None

    def has_attribute(self, name: str) -> bool:
        return self.attribute(name) is not None

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Replace the first `a=name` (or add it at the end)."""
        text = f"{name}:{value}" if value is not None else name
        for i, (kind, v) in enumerate(self.lines):
            if kind == "a" and v.partition(":")[0] == name:
                self.lines[i] = ("a", text)
                return
        self.lines.append(("a", text))

    def remove_attributes(self, *names: str) -> None:
        self.lines = [
            (k, v) for k, v in self.lines if not (k == "a" and v.partition(":")[0] in names)
        ]

    @property
    def direction(self) -> str:
        """sendrecv, sendonly, recvonly or inactive (sendrecv when the section says none)."""
        for name, _ in self.attributes():
            if name in DIRECTIONS:
                return name
        return "sendrecv"

    @direction.setter
    def direction(self, value: str) -> None:
        if value not in DIRECTIONS:
            raise ValueError(f"not a direction: {value}")
        self.remove_attributes(*DIRECTIONS)
        self.lines.append(("a", value))

    def rtpmap(self) -> dict[str, str]:
        """Payload type → `encoding/clock[/channels]` from the `a=rtpmap` lines."""
        out: dict[str, str] = {}
        for name, value in self.attributes():
            if name == "rtpmap" and value:
                pt, _, enc = value.partition(" ")
                out[pt] = enc.strip()
        return out


@dataclass
class SessionDescription:
    """The session part (v=, o=, s=, c=, t=, a=, … in order) and the media sections."""

    session: list[tuple[str, str]]
    media: list[MediaSection] = field(default_factory=list)

    @classmethod
    def parse(cls, body: bytes | str) -> SessionDescription:
        if isinstance(body, bytes):
            if len(body) > MAX_SDP_BYTES:
                raise SdpError("session description too large")
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise SdpError("session description is not UTF-8") from None
        else:
            text = body
        lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
        if not lines or not lines[0].startswith("v="):
            raise SdpError("a session description starts with v=")
        sd = cls(session=[])
        for raw in lines:
            kind, value = _split(raw.rstrip("\r"))
            if kind == "m":
                if len(value.split()) < 4:
                    raise SdpError(f"bad m= line: {value[:40]!r}")
                if len(sd.media) >= MAX_MEDIA:
                    raise SdpError("too many media sections")
                sd.media.append(MediaSection([("m", value)]))
            elif sd.media:
                sd.media[-1].lines.append((kind, value))
            else:
                sd.session.append((kind, value))
        for m in sd.media:
            try:
                m.port  # noqa: B018 (validates the port)
            except ValueError:
                raise SdpError(f"bad port in m= line: {m.lines[0][1][:40]!r}") from None
        if not any(k == "o" for k, _ in sd.session):
            raise SdpError("a session description has an o= line")
        return sd

    def encode(self) -> bytes:
        out = [f"{k}={v}" for k, v in self.session]
        for m in self.media:
            out.extend(f"{k}={v}" for k, v in m.lines)
        return ("\r\n".join(out) + "\r\n").encode("utf-8")

    @property
    def connection(self) -> str | None:
        """The address of the session-level `c=` line, or None."""
        for kind, value in self.session:
            if kind == "c":
                return _connection_address(value)
        return None

    def set_connection(self, address: str) -> None:
        """Set the session-level `c=` (added before the first t= when missing)."""
        value = _connection_value(address)
        for i, (kind, _) in enumerate(self.session):
            if kind == "c":
                self.session[i] = ("c", value)
                return
        at = next((i for i, (k, _) in enumerate(self.session) if k in ("b", "t")), None)
        self.session.insert(len(self.session) if at is None else at, ("c", value))

    def media_address(self, index: int) -> str | None:
        """Where media section `index` receives: its own c=, else the session's."""
        return self.media[index].connection or self.connection

    def bump_version(self) -> None:
        """Increase the o= line's session version (a changed description, RFC 3264 §8)."""
        for i, (kind, value) in enumerate(self.session):
            if kind == "o":
                parts = value.split()
                if len(parts) >= 6 and parts[2].isdigit():
                    parts[2] = str(int(parts[2]) + 1)
                    self.session[i] = ("o", " ".join(parts))
                return


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"bad c= line: {value[:40]!r}")
    return parts[2].split("/")[0]


def _connection_value(address: str) -> str:
    return f"IN {'IP6' if ':' in address else 'IP4'} {address}"
