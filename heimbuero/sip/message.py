"""SIP messages (RFC 3261 §7, §20, §25): a lazy parser, a serializer, and the header grammar.

Parsing is in two steps, because a server must answer a request that is broken in its details:
`parse()` finds the start line, the header fields (unfolded, compact names expanded) and the body;
it fails only when the message cannot be framed at all. `Request.check()` then applies the grammar
that matters for answering (mandatory and single-valued headers, CSeq, Max-Forwards, the URIs,
Via, From/To, Content-Length) and returns the status and reason to answer with, or None.
Header values are parsed on first use and cached. Nothing here does I/O.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "Address",
    "Message",
    "ParseError",
    "Request",
    "Response",
    "SipURI",
    "Via",
    "canonical_name",
    "parse",
    "parse_address",
    "parse_uri",
    "parse_via",
    "split_header_list",
]

SIP_VERSION = "SIP/2.0"
MAGIC_COOKIE = "z9hG4bK"
MAX_CSEQ = 2**31 - 1
MAX_EXPIRES = 2**32 - 1


class ParseError(ValueError):
    """The bytes are not a SIP message, or a header value breaks the grammar.

    When the header section of what looks like a request could be split, `headers` holds it,
    so that the caller can still answer 400 with the request's Via, From, To, Call-ID and CSeq.
    """

    def __init__(self, reason: str, headers: list[list[str]] | None = None) -> None:
        super().__init__(reason)
        self.headers = headers


# Compact forms (RFC 3261 §7.3.3 and the registries that extend it).
_COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1) and may be combined or split.
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "allow", "supported", "require",
        "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "path", "service-route", "content-encoding", "in-reply-to",
    }
)  # fmt: skip

# Headers that may appear at most once.
SINGLE_HEADERS = frozenset(
    {
        "to", "from", "call-id", "cseq", "max-forwards", "content-length",
        "content-type", "expires", "min-expires",
    }
)  # fmt: skip

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_WS = " \t"

# Display names for headers we emit; others keep the spelling they arrived with.
_PRETTY = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}


_CANONICAL: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """The lower-case long form of a header name: 'v' and 'VIA' both become 'via'."""
    known = _CANONICAL.get(name)
    if known is not None:
        return known
    low = name.lower()
    low = _COMPACT.get(low, low)
    if len(_CANONICAL) < 4096:  # names seen on the wire; bounded against floods of new names
        _CANONICAL[name] = low
    return low


def pretty_name(key: str) -> str:
    """The conventional spelling of a canonical header name ('call-id' -> 'Call-ID')."""
    p = _PRETTY.get(key)
    if p is not None:
        return p
    p = "-".join(part.capitalize() for part in key.split("-"))
    if len(_PRETTY) < 4096:
        _PRETTY[key] = p
    return p


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HOST_RE = re.compile(r"[A-Za-z0-9\-._]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_URI_FORBIDDEN_RE = re.compile(r'[ \t\r\n<>"]')


@functools.lru_cache(maxsize=4096)
def is_ip_literal(host: str) -> bool:
    """Whether a host (IPv6 with or without brackets) is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_token(s: str) -> bool:
    return _TOKEN_RE.fullmatch(s) is not None


def _uint(text: str) -> int | None:
    """The value of 1*DIGIT (ASCII digits only), or None. Absurdly long numbers are None too:
    they are out of every range we check, and int() refuses strings of over 4300 digits."""
    if not text.isascii() or not text.isdigit() or len(text.lstrip("0")) > 20:
        return None
    return int(text)


# --------------------------------------------------------------------------------------------
# Value grammar: lists, URIs, name-addr, Via
# --------------------------------------------------------------------------------------------


def split_header_list(value: str) -> list[str]:
    """Split a header value at commas that are outside quoted strings and <...>."""
    if "," not in value:
        return [value.strip()]
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    out.append(value[start:].strip())
    return out


_PARAM_NAMES: set[str] = set()


def _known_param(name: str) -> bool:
    """Whether a parameter name is a token; valid names are remembered (bounded)."""
    if not is_token(name):
        return False
    if len(_PARAM_NAMES) < 4096:
        _PARAM_NAMES.add(name)
    return True


def _parse_params(text: str, what: str) -> dict[str, str | None]:
    """Parse ';name=value;flag' (leading ';' already stripped); names are lower-cased."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    for raw in _split_semicolons(text):
        part = raw.strip(_WS)
        if not part:
            raise ParseError(f"empty parameter in {what}")
        name, eq, val = part.partition("=")
        name = name.strip(_WS)
        if name not in _PARAM_NAMES and not _known_param(name):
            raise ParseError(f"bad parameter name {name!r} in {what}")
        if eq:
            val = val.strip(_WS)
            if not val:
                raise ParseError(f"empty value for parameter {name!r} in {what}")
            if val[0] == '"' and (len(val) < 2 or val[-1] != '"'):
                raise ParseError(f"unterminated quoted string in {what}")
            params[name.lower()] = val
        else:
            params[name.lower()] = None
    return params


def _split_semicolons(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    out: list[str] = []
    quoted = False
    start = 0
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ";":
            out.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise ParseError("unterminated quoted string")
    out.append(text[start:])
    return out


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True)
class SipURI:
    """A sip:/sips: URI, or any other absolute URI kept opaque (scheme + rest)."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None
    opaque: str | None = None  # the part after 'scheme:' for non-SIP URIs

    @property
    def is_sip(self) -> bool:
        return self.opaque is None

    @property
    def transport(self) -> str:
        t = self.params.get("transport")
        if t:
            return t.lower()
        return "tls" if self.scheme == "sips" else "udp"

    def host_port(self) -> str:
        h = self.host
        return h if self.port is None else f"{h}:{self.port}"

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user if self.password is None else f"{self.user}:{self.password}"
            userinfo += "@"
        hdrs = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.host_port()}{_format_params(self.params)}{hdrs}"


def parse_uri(text: str) -> SipURI:
    """Parse an absolute URI; sip/sips get their parts, other schemes stay opaque."""
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme or not scheme.isascii() or not scheme[0].isalpha() or not rest:
        raise ParseError(f"not an absolute URI: {text!r}")
    if _URI_FORBIDDEN_RE.search(text) is not None:
        raise ParseError(f"illegal character in URI {text!r}")
    if _SCHEME_RE.fullmatch(scheme) is None:
        raise ParseError(f"bad URI scheme in {text!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        return SipURI(scheme=scheme, opaque=rest)
    user = password = None
    at = rest.find("@")
    if at >= 0:
        # The user part may hold ';' and '?' (RFC 3261 user-unreserved), so split it off first.
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user:
            raise ParseError(f"empty user part in {text!r}")
    headers = None
    if "?" in rest:
        rest, _, headers = rest.partition("?")
    hostport, semi, ptext = rest.partition(";")
    params = _parse_params(ptext, "URI") if semi else {}
    host, port = _split_hostport(hostport, text)
    return SipURI(scheme, user, password, host, port, params, headers)


def _is_ipv6(text: str) -> bool:
    """RFC 4291 text form, plus the one RFC 3261 ABNF slip RFC 5118 §4.10 says to tolerate:
    three colons before an embedded IPv4 address ('2001:db8:::192.0.2.1'). A zone index
    ('fe80::1%eth0', which Python's ipaddress takes) is no part of RFC 3261's IPv6reference."""
    if "%" in text:
        return False
    try:
        ipaddress.IPv6Address(text)
        return True
    except ValueError:
        pass
    head, sep, tail = text.rpartition(":::")
    if not sep or ":" in tail or "." not in tail:
        return False
    try:
        ipaddress.IPv6Address(f"{head}::{tail}")
        return True
    except ValueError:
        return False


def _split_hostport(hostport: str, context: str) -> tuple[str, int | None]:
    if not hostport:
        raise ParseError(f"no host in {context!r}")
    if hostport[0] == "[":
        end = hostport.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {context!r}")
        host = hostport[: end + 1]
        if not _is_ipv6(host[1:-1]):
            raise ParseError(f"bad IPv6 reference in {context!r}")
        after = hostport[end + 1 :]
        if not after:
            return host.lower(), None
        if after[0] != ":" or len(after) == 1:
            raise ParseError(f"bad host or empty port in {context!r}")
        port_s = after[1:]
    else:
        host, colon, port_s = hostport.partition(":")
        if not colon:
            port_s = ""
        if _HOST_RE.fullmatch(host) is None:
            raise ParseError(f"bad host {host!r} in {context!r}")
        if colon and not port_s:
            raise ParseError(f"empty port in {context!r}")
    if not port_s:
        return host.lower(), None
    port = _uint(port_s) if len(port_s) <= 5 else None
    if port is None or port > 65535:
        raise ParseError(f"bad port in {context!r}")
    return host.lower(), port


@dataclass(slots=True)
class Address:
    """name-addr or addr-spec with header parameters (From, To, Contact, Route...)."""

    uri: SipURI
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    bracketed: bool = True

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        disp = f"{self.display} " if self.display else ""
        return f"{disp}<{self.uri}>{_format_params(self.params)}"


def parse_address(text: str) -> Address:
    """Parse name-addr / addr-spec followed by ;params (RFC 3261 §20.10, §25.1)."""
    text = text.strip(_WS)
    if not text:
        raise ParseError("empty address")
    display: str | None = None
    if text[0] == '"':
        i = 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                break
            i += 1
        else:
            raise ParseError("unbalanced quotes in display name")
        display = text[: i + 1]
        text = text[i + 1 :].lstrip(_WS)
        if not text.startswith("<"):
            raise ParseError("quoted display name without <URI>")
    lt = text.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            words = text[:lt].split()
            if not all(is_token(w) for w in words):
                raise ParseError(f"display name must be quoted: {text[:lt].strip()!r}")
            display = " ".join(words)
        gt = text.find(">", lt)
        if gt < 0:
            raise ParseError("missing '>' in address")
        inner = text[lt + 1 : gt]
        if inner != inner.strip(_WS):
            raise ParseError("whitespace inside <...> of address")
        uri = parse_uri(inner)
        rest = text[gt + 1 :].strip(_WS)
        if rest and rest[0] != ";":
            raise ParseError("garbage after '>' in address")
        params = _parse_params(rest[1:], "address") if rest else {}
        return Address(uri, display, params, True)
    if '"' in text:
        raise ParseError("unbalanced quotes in address")
    # addr-spec: parameters after ';' belong to the header, and '?' / ',' are not allowed.
    uri_text, semi, ptext = text.partition(";")
    uri_text = uri_text.strip(_WS)
    if "?" in uri_text or "," in uri_text or " " in uri_text:
        raise ParseError("addr-spec with '?', ',' or spaces must be enclosed in <>")
    uri = parse_uri(uri_text)
    params = _parse_params(ptext, "address") if semi else {}
    return Address(uri, None, params, False)


@dataclass(slots=True)
class Via:
    """One Via value: SIP/2.0/TRANSPORT host[:port];params."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]
    version: str = SIP_VERSION

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.version}/{self.transport} {hp}{_format_params(self.params)}"


_VIA_RE = re.compile(r"([^/ \t]+)[ \t]*/[ \t]*([^/ \t]+)[ \t]*/[ \t]*([^/ \t]+)[ \t]+(.+)", re.S)


def parse_via(text: str) -> Via:
    """Parse one Via value (already split at commas)."""
    m = _VIA_RE.fullmatch(text.strip(_WS))
    if m is None:
        raise ParseError(f"bad Via {text!r}")
    name, ver, transport, sent = m.groups()
    if name.upper() != "SIP":
        raise ParseError(f"bad Via protocol in {text!r}")
    transport = transport.upper()
    if not is_token(transport):
        raise ParseError(f"bad Via transport in {text!r}")
    hostport, semi, ptext = sent.partition(";")
    host, port = _split_hostport(hostport.strip(_WS), text)
    params = _parse_params(ptext, "Via") if semi else {}
    return Via(transport, host, port, params, f"SIP/{ver}")


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


class Message:
    """Start line, ordered header fields and body. Header lookups are case-insensitive."""

    __slots__ = ("headers", "body", "_vias", "_top", "_from", "_to")

    def __init__(self, headers: list[list[str]] | None = None, body: bytes = b"") -> None:
        # Each header is [canonical-name, name-as-sent, value]; order is kept.
        self.headers: list[list[str]] = headers if headers is not None else []
        self.body = body
        self._vias: list[Via] | None = None
        self._top: Via | None = None
        self._from: Address | None = None
        self._to: Address | None = None

    def _changed(self, key: str) -> None:
        """Drop the parsed views of a header that was modified."""
        if key == "via":
            self._vias = None
            self._top = None
        elif key == "from":
            self._from = None
        elif key == "to":
            self._to = None

    # ---- header access --------------------------------------------------------------------

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first header field with that name."""
        key = _CANONICAL.get(name) or canonical_name(name)
        for h in self.headers:
            if h[0] == key:
                return h[2]
        return default

    def get_all(self, name: str) -> list[str]:
        """All values of a header, comma lists split into single values."""
        key = _CANONICAL.get(name) or canonical_name(name)
        out: list[str] = []
        split = key in LIST_HEADERS
        for h in self.headers:
            if h[0] == key:
                if not split:
                    out.append(h[2])
                elif "," in h[2]:
                    out.extend(v for v in split_header_list(h[2]) if v)
                elif h[2]:
                    out.append(h[2])
        return out

    def count(self, name: str) -> int:
        key = canonical_name(name)
        return sum(1 for h in self.headers if h[0] == key)

    def __contains__(self, name: str) -> bool:
        key = _CANONICAL.get(name) or canonical_name(name)
        return any(h[0] == key for h in self.headers)

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name with one (kept at the first one's place)."""
        key = canonical_name(name)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                h[2] = value
                self.headers[i + 1 :] = [x for x in self.headers[i + 1 :] if x[0] != key]
                break
        else:
            self.headers.append([key, pretty_name(key), value])
        self._changed(key)

    def add(self, name: str, value: str) -> None:
        """Append a header field at the end."""
        key = canonical_name(name)
        self.headers.append([key, pretty_name(key), value])
        self._changed(key)

    def prepend(self, name: str, value: str) -> None:
        """Insert a header field before the first field of that name (or first of all)."""
        key = canonical_name(name)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                self.headers.insert(i, [key, pretty_name(key), value])
                break
        else:
            self.headers.insert(0, [key, pretty_name(key), value])
        self._changed(key)

    def remove(self, name: str) -> None:
        key = canonical_name(name)
        self.headers = [h for h in self.headers if h[0] != key]
        self._changed(key)

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first value of a list header (the top Via, the first Route)."""
        key = canonical_name(name)
        for i, h in enumerate(self.headers):
            if h[0] == key:
                if "," in h[2]:
                    values = split_header_list(h[2])
                    first = values[0]
                    if len(values) > 1:
                        h[2] = ", ".join(values[1:])
                    else:
                        del self.headers[i]
                else:
                    first = h[2].strip(_WS)
                    del self.headers[i]
                self._changed(key)
                return first
        return None

    def items(self) -> Iterator[tuple[str, str]]:
        for h in self.headers:
            yield h[1], h[2]

    # ---- parsed views ---------------------------------------------------------------------

    @property
    def vias(self) -> list[Via]:
        """All Via values, top first (parsed once)."""
        if self._vias is None:
            self._vias = [parse_via(v) for v in self.get_all("via")]
            if self._vias:
                self._top = self._vias[0]
        return self._vias

    @property
    def top_via(self) -> Via:
        """The topmost Via, parsed without parsing the others."""
        top = self._top
        if top is None:
            for h in self.headers:
                if h[0] == "via":
                    value = h[2]
                    first = split_header_list(value)[0] if "," in value else value
                    top = self._top = parse_via(first)
                    break
            else:
                raise ParseError("no Via")
        return top

    @property
    def call_id(self) -> str:
        return self.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        raw = self.get("cseq") or ""
        parts = raw.split()
        num = _uint(parts[0]) if len(parts) == 2 else None
        if num is None:
            raise ParseError(f"bad CSeq {raw!r}")
        return num, parts[1]

    @property
    def from_(self) -> Address:
        """The parsed From (cached; treat it as read-only)."""
        if self._from is None:
            self._from = parse_address(self.get("from") or "")
        return self._from

    @property
    def to(self) -> Address:
        """The parsed To (cached; treat it as read-only)."""
        if self._to is None:
            self._to = parse_address(self.get("to") or "")
        return self._to

    def addresses(self, name: str) -> list[Address]:
        return [parse_address(v) for v in self.get_all(name)]

    # ---- serialization --------------------------------------------------------------------

    def start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """The wire form; Content-Length is set from the body."""
        lines = [self.start_line()]
        for key, name, value in self.headers:
            if key != "content-length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    __bytes__ = serialize

    def _same_fields(self, other: Message) -> bool:
        mine = [(h[0], h[2]) for h in self.headers if h[0] != "content-length"]
        theirs = [(h[0], h[2]) for h in other.headers if h[0] != "content-length"]
        return mine == theirs and self.body == other.body


class Request(Message):
    """A SIP request."""

    __slots__ = ("method", "uri", "version", "_ruri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: list[list[str]] | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri
        self.version = version
        self._ruri: SipURI | None = None

    @property
    def ruri(self) -> SipURI:
        """The parsed Request-URI (cached; set `uri` through `set_uri`)."""
        if self._ruri is None:
            self._ruri = parse_uri(self.uri)
        return self._ruri

    def set_uri(self, uri: str) -> None:
        self.uri = uri
        self._ruri = None

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def copy(self) -> Request:
        r = Request(self.method, self.uri, [list(h) for h in self.headers], self.body, self.version)
        return r

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and self.uri == other.uri
            and self.version == other.version
            and self._same_fields(other)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    def check(self) -> tuple[int, str] | None:
        """Validate what answering and routing need; (status, reason) to reject with, or None."""
        return _check_request(self)


class Response(Message):
    """A SIP response."""

    __slots__ = ("status", "reason", "version")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[list[str]] | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def copy(self) -> Response:
        return Response(
            self.status, self.reason, [list(h) for h in self.headers], self.body, self.version
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and self.version == other.version
            and self._same_fields(other)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    def check(self) -> str | None:
        """A reason to drop this response, or None when it is usable."""
        try:
            _check_common(self)
        except ParseError as exc:
            return str(exc)
        return None


# --------------------------------------------------------------------------------------------
# parse()
# --------------------------------------------------------------------------------------------


def parse(data: bytes, *, datagram: bool = True) -> Request | Response:
    """Frame and split one message. On a datagram, octets after Content-Length are ignored;
    a Content-Length larger than what arrived is an error."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if data.endswith(b"\r\n"):
            end = len(data) - 2  # no body and only one CRLF at the end
            head_bytes = data[:end]
            rest = b""
        else:
            raise ParseError("no end of header section")
    else:
        head_bytes = data[:end]
        rest = data[end + 4 :]
    head = head_bytes.decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    start = lines[0]
    headers: list[list[str]] = []
    # A broken header line fails the message, but only after the other lines are split, so
    # that a request can still be answered with 400 (its Via, From, To... are in `headers`).
    bad: str | None = None
    for line in lines[1:]:
        if not line:
            bad = bad or "empty line inside the header section"
            continue
        if line[0] in _WS:
            if not headers:
                bad = bad or "continuation line before the first header"
                continue
            # Folding is LWS: one SP joins the parts; an empty first line adds nothing.
            prev, cont = headers[-1][2], line.strip(_WS)
            headers[-1][2] = f"{prev} {cont}" if prev and cont else prev or cont
            continue
        colon = line.find(":")
        if colon <= 0:
            bad = bad or f"header line without name and colon: {line[:40]!r}"
            continue
        name = line[:colon].rstrip(_WS)
        key = _CANONICAL.get(name)  # names seen before are known to be tokens
        if key is None:
            if not is_token(name):
                bad = bad or f"bad header name {name[:40]!r}"
                continue
            key = canonical_name(name)
        headers.append([key, name, line[colon + 1 :].strip(_WS)])

    msg: Request | Response
    if start[:4].upper() == "SIP/":
        if bad is not None:
            raise ParseError(bad)
        msg = _parse_status_line(start, headers)
    else:
        try:
            if bad is not None:
                raise ParseError(bad)
            msg = _parse_request_line(start, headers)
            _frame_body(msg, headers, rest, datagram)
        except ParseError as exc:
            raise ParseError(str(exc), headers) from None
        return msg
    _frame_body(msg, headers, rest, datagram)
    return msg


def _frame_body(msg: Message, headers: list[list[str]], rest: bytes, datagram: bool) -> None:
    cl_values = [h[2] for h in headers if h[0] == "content-length"]
    if cl_values:
        cl_text = cl_values[0]
        cl = _uint(cl_text)
        if cl is None:
            raise ParseError(f"bad Content-Length {cl_text!r}")
        length = cl
        if length > len(rest):
            if datagram:
                raise ParseError("Content-Length larger than the datagram's body")
            raise ParseError("message truncated")
        msg.body = rest[:length]
    else:
        msg.body = rest if datagram else b""


def _parse_request_line(start: str, headers: list[list[str]]) -> Request:
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ParseError(f"malformed Request-Line {start[:80]!r}")
    method, uri, version = parts
    if not is_token(method):
        raise ParseError(f"bad method {method!r}")
    if not version.upper().startswith("SIP/"):
        raise ParseError(f"bad version {version!r}")
    return Request(method, uri, headers, b"", version.upper())


def _parse_status_line(start: str, headers: list[list[str]]) -> Response:
    version, sp, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    status = _uint(code) if len(code) == 3 else None
    if not sp or status is None or not 100 <= status <= 699:
        raise ParseError(f"malformed Status-Line {start[:80]!r}")
    return Response(status, reason, headers, b"", version.upper())


# --------------------------------------------------------------------------------------------
# Semantic checks
# --------------------------------------------------------------------------------------------

_EXPIRES_HEADERS = ("expires", "min-expires")
# The requests whose Expires (and Contact expires) this server reads when it answers them.
EXPIRES_METHODS = frozenset({"REGISTER", "SUBSCRIBE", "PUBLISH"})

_MANDATORY = (
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
    ("from", "From"),
    ("to", "To"),
    ("via", "Via"),
)


def _check_common(msg: Message, expires_read: bool = False) -> None:
    """The checks every message gets; `expires_read` when this element acts on its Expires."""
    seen: dict[str, int] = {}
    for h in msg.headers:
        seen[h[0]] = seen.get(h[0], 0) + 1
    for key, pretty in _MANDATORY:
        if key not in seen:
            raise ParseError(f"Missing {pretty} header")
    for key, n in seen.items():
        if n > 1 and key in SINGLE_HEADERS and (expires_read or key not in _EXPIRES_HEADERS):
            raise ParseError(f"More than one {pretty_name(key)} header")
    cseq_parts = (msg.get("cseq") or "").split()
    num = _uint(cseq_parts[0]) if len(cseq_parts) == 2 else None
    if num is None or num > MAX_CSEQ or not is_token(cseq_parts[1]):
        raise ParseError("Bad CSeq header")
    if msg.top_via.version != SIP_VERSION:  # the others are for the hops behind us
        raise ParseError("Bad Via version")
    if not msg.call_id or any(c in _WS for c in msg.call_id):
        raise ParseError("Bad Call-ID header")
    # Lenient where nothing depends on it (RFC 3261 §16.3: a proxy does not refuse a request
    # for a malformed header it does not need): Date is never read, and an Expires that is not
    # a number (an RFC 2543 date) passes here; an element that acts on it takes it for 3600 s
    # (`normalize_expires`). Where this element acts on Expires (REGISTER, SUBSCRIBE, PUBLISH
    # it answers), digits that are no number we can use (non-ASCII digits, absurd length) are
    # refused, so no reader of the header ever meets them; in anything it only relays (an
    # INVITE, a callee's 200) Expires is the endpoints' business and passes as it is.
    if not expires_read:
        return
    for key in _EXPIRES_HEADERS:
        val = msg.get(key)
        if val is not None and val.isdigit() and ((v := _uint(val)) is None or v > MAX_EXPIRES):
            raise ParseError(f"Bad {pretty_name(key)} header")


MALFORMED_EXPIRES = 3600  # RFC 3261 §20.19: "Malformed values SHOULD be treated as ... 3600"


def normalize_expires(msg: Message) -> None:
    """Replace an Expires header that is no number (an RFC 2543 date, garbage) by 3600, as
    RFC 3261 §20.19 asks, for the element that acts on it (registrar, presence)."""
    raw = msg.get("expires")
    if raw is not None and not raw.isdigit():
        msg.set("Expires", str(MALFORMED_EXPIRES))


def contact_expires(value: str | None) -> int | None:
    """A Contact's expires parameter as seconds: None when absent, 3600 when it is no number
    (RFC 2543 allowed a date there; treated as RFC 3261 §20.19 treats a malformed Expires)."""
    if value is None:
        return None
    return int(value) if value.isascii() and value.isdigit() else MALFORMED_EXPIRES


def _check_request(req: Request) -> tuple[int, str] | None:
    if req.version != SIP_VERSION:
        return 505, "Version Not Supported"
    try:
        _check_common(req, req.method in EXPIRES_METHODS)
        req.from_  # noqa: B018 - parse for validity (responses are relayed unread)
        req.to  # noqa: B018
        if req.cseq[1] != req.method:
            return 400, "CSeq method does not match the request method"
        mf = req.get("max-forwards")
        if mf is not None and ((hops := _uint(mf)) is None or hops > 255):
            return 400, "Bad Max-Forwards header"
        uri = req.ruri
        if uri.is_sip and uri.headers is not None:
            return 400, "Request-URI must not contain headers"
        if req.method == "REGISTER":  # the only request whose Contact expires we read
            for c in req.get_all("contact"):
                if c != "*":
                    e = parse_address(c).params.get("expires")
                    # an RFC 2543 date counts as 3600 s (`contact_expires`), as in Expires
                    if (
                        e is not None
                        and e.isdigit()
                        and ((v := _uint(e)) is None or v > MAX_EXPIRES)
                    ):
                        return 400, "Bad expires parameter in Contact"
        for name in ("route", "record-route"):
            for value in req.get_all(name):
                parse_address(value)
    except ParseError as exc:
        return 400, str(exc)
    return None
