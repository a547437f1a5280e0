"""Unit and property tests of heimbuero.sip.message: the value grammar, header access,
framing, serialization, and parse(serialize(m)) == m."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heimbuero.sip.message import (
    Address,
    ParseError,
    Request,
    Response,
    SipURI,
    Via,
    canonical_name,
    parse,
    parse_address,
    parse_uri,
    parse_via,
    split_header_list,
)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n"
    b"v: SIP/2.0/TCP proxy.example.com:5070;branch=z9hG4bK1,"
    b" SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@example.com>\r\n'
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.example.com>\r\n"
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def invite() -> Request:
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    return msg


# ---- split_header_list ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a", ["a"]),
        ("  a  ", ["a"]),
        ("a, b,c", ["a", "b", "c"]),
        ('"Doe, John" <sip:j@x>, <sip:k@y>', ['"Doe, John" <sip:j@x>', "<sip:k@y>"]),
        ('"a \\" , b" <sip:x>, c', ['"a \\" , b" <sip:x>', "c"]),
        ("<sip:a@b;x=1,2>, <sip:c@d>", ["<sip:a@b;x=1,2>", "<sip:c@d>"]),
        ("a,,b", ["a", "", "b"]),
        ("", [""]),
    ],
)
def test_split_header_list(value: str, parts: list[str]) -> None:
    assert split_header_list(value) == parts


# ---- parse_uri --------------------------------------------------------------------------------


def test_parse_uri_parts() -> None:
    u = parse_uri("SIP:alice:secret@Example.COM:5070;transport=TCP;lr?subject=x&priority=urgent")
    assert u == SipURI(
        "sip", "alice", "secret", "example.com", 5070,
        {"transport": "TCP", "lr": None}, "subject=x&priority=urgent",
    )  # fmt: skip
    assert u.is_sip and u.transport == "tcp"
    assert u.host_port() == "example.com:5070"
    assert str(u) == "sip:alice:secret@example.com:5070;transport=TCP;lr?subject=x&priority=urgent"


def test_parse_uri_defaults_and_other_schemes() -> None:
    assert parse_uri("sips:example.com").transport == "tls"
    assert parse_uri("sip:example.com").transport == "udp"
    tel = parse_uri("tel:+1-201-555-0123;phone-context=x")
    assert (tel.scheme, tel.opaque, tel.is_sip) == ("tel", "+1-201-555-0123;phone-context=x", False)
    assert str(tel) == "tel:+1-201-555-0123;phone-context=x"
    user = parse_uri("sip:user;par=u%40example.net@example.com")
    assert (user.user, user.host) == ("user;par=u%40example.net", "example.com")
    v6 = parse_uri("sip:[2001:DB8::1]:5060;maddr=x")
    assert (v6.host, v6.port, v6.params) == ("[2001:db8::1]", 5060, {"maddr": "x"})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        "sip:",
        ":x",
        "1sip:x",
        "sip:@example.com",
        "sip:example.com:",
        "sip:example.com:70000",
        "sip:example.com:123456",
        "sip:example.com:50a",
        "sip:example.com:\u00b2",  # a digit to str.isdigit(), not to int()
        "sip:example.com:\u0665",  # Arabic-Indic five
        "sip:exa mple.com",
        "sip:<example.com>",
        "sip:ex\u00e4mple.com",
        "sip:[2001:db8::1",
        "sip:[2001:db8::1]x",
        "sip:[2001:db8::1]:",
        "sip:[not-an-address]",
        "sip:[2001:db8:::10]",
        "sip:example.com;=x",
        "sip:example.com;a=",
        "sip:example.com;;a",
        "s\u00efp:example.com",
    ],
)
def test_parse_uri_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(text)


# ---- parse_address ----------------------------------------------------------------------------


def test_parse_address_forms() -> None:
    a = parse_address(' "Doe, \\"J\\"" <sip:j@example.com;lr>;tag=abc;expires=60 ')
    assert a.display == '"Doe, \\"J\\""'
    assert a.uri.params == {"lr": None}
    assert a.params == {"tag": "abc", "expires": "60"} and a.tag == "abc" and a.bracketed
    assert str(a) == '"Doe, \\"J\\"" <sip:j@example.com;lr>;tag=abc;expires=60'
    b = parse_address("Alice  Smith<sip:a@example.com>")
    assert (b.display, b.uri.user) == ("Alice Smith", "a")
    # In an addr-spec the parameters belong to the header, not to the URI.
    c = parse_address("sip:+12125551212@server.phone2net.com;tag=887s")
    assert (c.uri.params, c.params, c.bracketed) == ({}, {"tag": "887s"}, False)
    assert str(c) == "<sip:+12125551212@server.phone2net.com>;tag=887s"
    d = parse_address("<urn:service:sos>")
    assert (d.uri.scheme, d.uri.opaque, d.tag) == ("urn", "service:sos", None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        '"unbalanced <sip:a@b>',
        '"x" sip:a@b',
        "<sip:a@b",
        "<sip:a@b> junk",
        "< sip:a@b>",
        "Bell, Alexander <sip:a@b>",
        "sip:a@b?subject=x",
        "sip:a@b, sip:c@d",
        'sip:a@b;x="unterminated',
        "<sip:a@b>;tag",
        "<sip:a@b>;;tag=1",
        "<not a uri>",
    ],
)
def test_parse_address_rejects(text: str) -> None:
    if text == "<sip:a@b>;tag":
        assert parse_address(text).params == {"tag": None}  # a flag parameter is fine
        return
    with pytest.raises(ParseError):
        parse_address(text)


# ---- parse_via --------------------------------------------------------------------------------


def test_parse_via() -> None:
    v = parse_via("SIP / 2.0 / udp  192.0.2.1:5062 ; branch=z9hG4bKx ; rport ; received=10.0.0.1")
    assert v == Via("UDP", "192.0.2.1", 5062, {"branch": "z9hG4bKx", "rport": None,
                                                "received": "10.0.0.1"})  # fmt: skip
    assert v.branch == "z9hG4bKx"
    assert str(v) == "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKx;rport;received=10.0.0.1"
    v6 = parse_via("SIP/2.0/TLS [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3")
    assert (v6.host, v6.port, v6.params["received"]) == ("[2001:db8::9:1]", None, "2001:db8::9:255")
    assert parse_via("SIP/3.0/UDP h").version == "SIP/3.0"  # kept; check() refuses it


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "HTTP/2.0/UDP host",
        "SIP/2.0/UDP host:port",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/U(P host",
        "SIP/2.0/UDP 2001:db8::1",
    ],
)
def test_parse_via_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_via(text)


# ---- header access ----------------------------------------------------------------------------


def test_get_and_get_all() -> None:
    m = invite()
    assert m.get("CALL-ID") == m.get("i") == m.call_id == "a84b4c76e66710@pc33.example.com"
    assert m.get("x-missing") is None and m.get("x-missing", "d") == "d"
    # List headers are split at top-level commas, across all fields, in order.
    assert [v.host for v in m.vias] == ["pc33.example.com", "proxy.example.com", "192.0.2.1"]
    assert len(m.get_all("VIA")) == 3 and m.count("via") == 2
    # Others are not: a Date holds a comma.
    assert m.get_all("date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert "v" in m and "Via" in m and "route" not in m
    assert m.top_via.branch == "z9hG4bK776asdhds"
    assert m.cseq == (314159, "INVITE")
    assert m.from_.tag == "1928301774" and m.to.display == '"Bob"'
    assert [str(a.uri) for a in m.addresses("m")] == ["sip:alice@pc33.example.com"]
    assert list(m.items())[0] == ("Via", "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds")
    assert canonical_name("L") == "content-length" and canonical_name("X-Foo") == "x-foo"


def test_set_add_prepend_remove() -> None:
    m = invite()
    assert len(m.vias) == 3  # cached ...
    m.set("v", "SIP/2.0/UDP only.example.com")  # ... and every change drops the cache
    assert m.count("via") == 1 and [v.host for v in m.vias] == ["only.example.com"]
    assert m.headers[0][0] == "via"  # kept at the first one's place
    m.prepend("Via", "SIP/2.0/TCP top.example.com;branch=z9hG4bKtop")
    assert [v.host for v in m.vias] == ["top.example.com", "only.example.com"]
    m.add("VIA", "SIP/2.0/UDP bottom.example.com")
    assert m.vias[-1].host == "bottom.example.com"
    m.add("i", "second-call-id")
    assert m.headers[-1] == ["call-id", "Call-ID", "second-call-id"]
    assert m.get_all("call-id") == ["a84b4c76e66710@pc33.example.com", "second-call-id"]
    m.set("Call-ID", "one")
    assert m.get_all("call-id") == ["one"]
    m.set("X-New", "1")
    assert m.headers[-1] == ["x-new", "X-New", "1"]
    m.prepend("Record-Route", "<sip:p1.example.com;lr>")  # none yet: goes on top
    assert m.headers[0] == ["record-route", "Record-Route", "<sip:p1.example.com;lr>"]
    m.remove("VIA")
    assert "via" not in m and m.vias == []
    with pytest.raises(ParseError):
        m.top_via  # noqa: B018
    m.remove("nothing-there")


def test_pop_first_value() -> None:
    m = invite()
    assert m.pop_first_value("via") == "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds"
    assert m.pop_first_value("v") == "SIP/2.0/TCP proxy.example.com:5070;branch=z9hG4bK1"
    assert m.get_all("via") == ["SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2"]
    assert [v.host for v in m.vias] == ["192.0.2.1"]
    assert m.pop_first_value("via") == "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2"
    assert m.pop_first_value("via") is None and "via" not in m
    m.add("Route", '<sip:a@b;lr>, "x, y" <sip:c@d;lr>')
    assert m.pop_first_value("route") == "<sip:a@b;lr>"
    assert m.get("route") == '"x, y" <sip:c@d;lr>'


def test_copy_is_independent() -> None:
    m = invite()
    c = m.copy()
    assert c == m and c is not m
    c.set("max-forwards", "69")
    c.set_uri("sip:carol@example.com")
    assert m.get("max-forwards") == "70" and m.uri == "sip:bob@example.com"
    assert c.ruri.user == "carol"
    r = Response(180, "Ringing", [["to", "To", "<sip:a@b>"]])
    r2 = r.copy()
    r2.add("x", "y")
    assert "x" not in r and r2 != r


# ---- parse and serialize ----------------------------------------------------------------------


def test_serialize_sets_content_length() -> None:
    m = invite()
    m.set("content-length", "999")
    m.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    wire = m.serialize()
    assert wire.count(b"Content-Length") == 1
    assert wire.endswith(b"\r\nContent-Length: %d\r\n\r\n" % len(m.body) + m.body)
    assert bytes(m) == wire
    assert b"\r\nv: SIP/2.0/TCP" in wire  # names go out as they came in
    again = parse(wire)
    assert again == m and again.body == m.body and again.get("content-length") == "31"
    r = Response(200, "OK", [["call-id", "Call-ID", "x"]])
    assert r.serialize() == b"SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    assert Request("OPTIONS", "sip:x").serialize().startswith(b"OPTIONS sip:x SIP/2.0\r\n")


def test_equality_ignores_content_length_only() -> None:
    a = parse(INVITE)
    b = parse(INVITE.replace(b"Content-Length: 4\r\n", b""), datagram=True)
    assert a == b
    assert a != parse(INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 69"))
    assert a != parse(INVITE[:-1] + b"!")
    assert (a == "INVITE") is False


def test_parse_framing() -> None:
    m = invite()
    assert m.method == "INVITE" and m.version == "SIP/2.0" and m.body == b"v=0\n"
    # Datagram: octets after Content-Length are ignored; without it the rest is the body.
    assert parse(INVITE + b"garbage").body == b"v=0\n"
    no_cl = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert parse(no_cl + b"more").body == b"v=0\nmore"
    # Stream: without Content-Length there is no body.
    assert parse(no_cl, datagram=False).body == b""
    with pytest.raises(ParseError, match="truncated"):
        parse(INVITE[:-1], datagram=False)
    with pytest.raises(ParseError) as exc:
        parse(INVITE[:-1])
    assert exc.value.headers is not None and ["call-id", "Call-ID", m.call_id] in exc.value.headers
    # A message that ends after one CRLF and has no body still frames.
    bare = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: y\r\n"
    assert parse(bare).get("call-id") == "y"


def test_folding_and_whitespace() -> None:
    data = (
        b"OPTIONS sip:x SIP/2.0\r\n"
        b"Subject:\r\n"
        b"   first\r\n"
        b"\t second  \r\n"
        b"Via  :   SIP/2.0/UDP h   \r\n"
        b"X-Empty:\r\n"
        b"X-Blank-Fold: a\r\n"
        b"   \r\n"
        b"\r\n"
    )
    m = parse(data)
    assert m.get("subject") == "first second"  # no leading space from the empty first line
    assert m.get("via") == "SIP/2.0/UDP h"
    assert m.headers[1][1] == "Via"
    assert m.get("x-empty") == ""
    assert m.get("x-blank-fold") == "a"
    assert parse(m.serialize()) == m


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"INVITE sip:x SIP/2.0",
        b"INVITE sip:x SIP/2.0\r\nTo: a",
        b"INVITE sip:x SIP/2.0\r\n continuation-first\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nNoColon\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\n: empty-name\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nA: b\r\n\r\n\r\n",  # datagram: body is "\r\n", fine
        b"INVITE  sip:x SIP/2.0\r\n\r\n",
        b"INVITE sip:x\r\n\r\n",
        b"INV(TE sip:x SIP/2.0\r\n\r\n",
        b"INVITE sip:x HTTP/1.1\r\n\r\n",
        b"SIP/2.0 20 OK\r\n\r\n",
        b"SIP/2.0 700 Odd\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        "SIP/2.0 \u00b2\u00b2\u00b2 OK\r\n\r\n".encode(),
        "SIP/2.0 \u0662\u0660\u0660 OK\r\n\r\n".encode(),
        b"SIP/2.0\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nContent-Length: 1 2\r\n\r\n",
        "INVITE sip:x SIP/2.0\r\nContent-Length: \u00b2\r\n\r\n".encode(),
        "INVITE sip:x SIP/2.0\r\nl: \u0661\r\n\r\nx".encode(),
        b"INVITE sip:x SIP/2.0\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    ],
)
def test_parse_refuses(data: bytes) -> None:
    if data.endswith(b"A: b\r\n\r\n\r\n"):
        assert parse(data).body == b"\r\n"
        return
    with pytest.raises(ParseError) as exc:
        parse(data)
    if data.startswith(b"INVITE") and b"\r\n\r\n" in data:
        assert exc.value.headers is not None  # enough to answer 400


# ---- check() ----------------------------------------------------------------------------------


def _req(**replace: str) -> Request:
    data = INVITE.decode()
    for old, new in replace.items():
        old = old.replace("_", "-")
        start = data.index(f"\r\n{old}:") + 2
        end = data.index("\r\n", start)
        data = data[:start] + new + data[end:]
    msg = parse(data.encode())
    assert isinstance(msg, Request)
    return msg


def test_check_accepts_a_good_request() -> None:
    assert invite().check() is None


@pytest.mark.parametrize(
    ("replace", "reason"),
    [
        ({"CSeq": "CSeq: 1 BYE"}, "CSeq method"),
        ({"CSeq": "CSeq: 2147483648 INVITE"}, "Bad CSeq"),
        ({"CSeq": "CSeq: " + "1" * 5000 + " INVITE"}, "Bad CSeq"),
        ({"CSeq": "CSeq: \u00b2 INVITE"}, "CSeq"),
        ({"CSeq": "CSeq: \u0661 INVITE"}, "CSeq"),
        ({"CSeq": "CSeq: INVITE"}, "CSeq"),
        ({"Max-Forwards": "Max-Forwards: 256"}, "Max-Forwards"),
        ({"Max-Forwards": "Max-Forwards: \u00b2"}, "Max-Forwards"),
        ({"Max-Forwards": "Max-Forwards: " + "9" * 5000}, "Max-Forwards"),
        ({"Call-ID": "Call-ID: a b"}, "Call-ID"),
        ({"Call-ID": "X-Gone: 1"}, "Missing Call-ID"),
        ({"From": "From: <sip:alice@example.com"}, "'>'"),
        ({"Contact": "Route: <sip:a@b;lr"}, "'>'"),
        ({"Via": "Via: SIP/3.0/UDP h"}, "Via version"),
        ({"Via": "Via: SIP/2.0/UDP h:99999"}, "port"),
        ({"To": "To: <sip:bob@example.com>\r\nTo: <sip:eve@example.com>"}, "More than one To"),
    ],
)
def test_check_rejects(replace: dict[str, str], reason: str) -> None:
    result = _req(**replace).check()
    assert result is not None and result[0] == 400 and reason in result[1], result


_BAD_EXPIRES = [
    ({"Contact": "Contact: <sip:a@b>;expires=4294967296"}, "expires"),
    ({"Contact": "Contact: <sip:a@b>;expires=\u00b2"}, "expires"),
    ({"Contact": "Expires: " + "1" * 5000}, "Expires"),
    ({"Contact": "Expires: \u0661"}, "Expires"),
    ({"Contact": "Expires: 1\r\nExpires: 2"}, "More than one Expires"),
]


@pytest.mark.parametrize(("replace", "reason"), _BAD_EXPIRES)
def test_check_rejects_bad_expires_where_the_server_reads_it(
    replace: dict[str, str], reason: str
) -> None:
    data = _req(**replace).serialize().replace(b"INVITE", b"REGISTER")
    result = parse(data).check()  # type: ignore[union-attr]
    assert result is not None and result[0] == 400 and reason in result[1], result


@pytest.mark.parametrize(("replace", "reason"), _BAD_EXPIRES)
def test_check_passes_expires_the_server_only_relays(replace: dict[str, str], reason: str) -> None:
    assert _req(**replace).check() is None  # an INVITE's Expires is the callee's business


@pytest.mark.parametrize(
    "replace",
    [
        {"Date": "Date: Sat, 13 Nov 2010 23:29:00 UTC"},  # RFC 3261 §16.3's own example
        {"Date": "Date: Sat, 13 Nov 2010 23:29:00 +0000"},
        {"Date": "Date: yesterday"},
        {"Contact": "Expires: Thu, 01 Dec 1994 16:00:00 GMT"},  # RFC 2543's date form
        {"Contact": "Min-Expires: soon"},
    ],
)
def test_check_ignores_what_nothing_needs(replace: dict[str, str]) -> None:
    """A malformed header nobody reads is no reason to refuse a request or drop a response."""
    assert _req(**replace).check() is None
    resp = parse(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        + next(iter(replace.values())).encode()
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(resp, Response) and resp.check() is None


def test_check_versions_and_uri() -> None:
    badvers = parse(INVITE.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1))
    assert isinstance(badvers, Request)
    assert badvers.check() == (505, "Version Not Supported")
    m = invite()
    m.set_uri("sip:bob@example.com?Route=%3Csip:x%3E")
    assert m.check() == (400, "Request-URI must not contain headers")
    m.set_uri("tel:+12125551212")
    assert m.check() is None
    m.set_uri("<sip:bob@example.com>")
    result = m.check()
    assert result is not None and result[0] == 400


def test_response_check() -> None:
    r = parse(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>;tag=2\r\n"
        b"From: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    assert isinstance(r, Response) and (r.status, r.reason) == (180, "Ringing")
    assert r.check() is None
    r.set("cseq", "99999999999999999999999 INVITE")
    assert r.check() == "Bad CSeq header"
    r.remove("via")
    assert r.check() == "Missing Via header"


# ---- properties -------------------------------------------------------------------------------

_ALPHA = "abcdefghijklmnopqrstuvwxyz"
_TOKEN_ALPHABET = _ALPHA + _ALPHA.upper() + "0123456789-.!%*_+`'~"
tokens = st.text(_TOKEN_ALPHABET, min_size=1, max_size=12)
lower_tokens = st.text(_ALPHA + "0123456789-.!%*_+`'~", min_size=1, max_size=10)
_label = st.text(_ALPHA + "0123456789", min_size=1, max_size=8)
hostnames = st.lists(_label, min_size=1, max_size=4).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a.compressed}]")
hosts = st.one_of(hostnames, ipv4, ipv6)
_user_chars = _ALPHA + _ALPHA.upper() + "0123456789-_.!~*'()&=+$,;?/"
escaped = st.sampled_from(["%20", "%40", "%3A", "%00", "%25"])
users = st.lists(st.one_of(st.text(_user_chars, min_size=1, max_size=6), escaped), min_size=1).map(
    "".join
)
params = st.dictionaries(lower_tokens, st.one_of(st.none(), tokens), max_size=3)


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    user = draw(st.one_of(st.none(), users))
    password = draw(st.one_of(st.none(), st.text(_ALPHA + "0123456789&=+$,", max_size=6)))
    userinfo = "" if user is None else user + ("" if password is None else f":{password}") + "@"
    port = draw(st.one_of(st.none(), st.integers(0, 65535)))
    hostport = draw(hosts) + ("" if port is None else f":{port}")
    ps = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in draw(params).items())
    headers = draw(st.one_of(st.none(), st.text(_ALPHA + "=&%0123456789", min_size=1)))
    return f"{scheme}:{userinfo}{hostport}{ps}" + ("" if headers is None else f"?{headers}")


# Header text: no CR or LF; octets that are not UTF-8 arrive as surrogate escapes. Only those
# escapes that can never combine into valid UTF-8 (continuation bytes, C0, C1, F5-FF) are used,
# so the text round-trips through bytes.
_bad_octets = [chr(0xDC00 + b) for b in [*range(0x80, 0xC0), 0xC0, 0xC1, *range(0xF5, 0x100)]]
_value_chars = st.one_of(
    st.characters(codec="utf-8", exclude_characters="\r\n"),
    st.sampled_from(_bad_octets),
    st.sampled_from(list(',;:<>"\\= \t')),
)
_raw_values = st.text(_value_chars, max_size=40).map(lambda s: s.strip(" \t"))
_quoted = st.text(st.characters(codec="utf-8", exclude_characters='\r\n"\\'), max_size=10).map(
    lambda s: f'"{s}"'
)
header_values = st.one_of(
    _raw_values,
    st.lists(st.one_of(_quoted, sip_uris().map(lambda u: f"<{u}>"), tokens), min_size=1).map(
        ", ".join
    ),
    sip_uris().map(lambda u: f'"Display, Name" <{u}>;tag=1'),
)
header_names = st.one_of(
    tokens,
    st.sampled_from(["Via", "v", "Contact", "m", "Call-ID", "i", "To", "t", "From", "CSeq"]),
)
headers = st.lists(st.tuples(header_names, header_values), max_size=12).map(
    lambda hs: [[canonical_name(n), n, v] for n, v in hs]
)
bodies = st.binary(max_size=300)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    return Request(draw(tokens), draw(sip_uris()), draw(headers), draw(bodies))


@st.composite
def responses(draw: st.DrawFn) -> Response:
    reason = draw(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30))
    return Response(draw(st.integers(100, 699)), reason, draw(headers), draw(bodies))


@settings(max_examples=300, deadline=None)
@given(st.one_of(requests(), responses()))
def test_parse_serialize_round_trip(msg: Request | Response) -> None:
    wire = msg.serialize()
    for datagram in (True, False):
        again = parse(wire, datagram=datagram)
        assert again == msg
        assert again.body == msg.body
        assert again.serialize() == wire


@settings(max_examples=300, deadline=None)
@given(sip_uris())
def test_uri_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == text
    assert parse_uri(str(uri)) == uri
    assert isinstance(parse_address(f"<{text}>;tag=x"), Address)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(tokens, _quoted, sip_uris().map(lambda u: f'"a, b" <{u}>;q=0.5')), min_size=1
    )
)
def test_split_header_list_inverts_join(items: list[str]) -> None:
    assert split_header_list(", ".join(items)) == items
    assert split_header_list(",".join(items)) == items


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_parse_error(data: bytes) -> None:
    _exercise(data)


_SEED = INVITE + b'SIP/2.0 200 OK\r\nl: 12\r\nv: ,;=[]:<>"\\\r\n i: \xff\xc3\r\nCSeq: 1 X\r\n\r\n'


_CHUNKS = [*_SEED.split(b"\r\n"), b"\r\n", b" ", "\u00b2".encode(), b"9" * 4400]


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_messages_only_parse_error(data: st.DataObject) -> None:
    """Near-valid messages: splice bytes that matter to the grammar into a real INVITE."""
    raw = bytearray(INVITE)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw)))
        if data.draw(st.booleans()) and pos < len(raw):
            del raw[pos]
        else:
            chunk = data.draw(st.sampled_from(_CHUNKS))
            raw[pos:pos] = chunk
    _exercise(bytes(raw))


def _exercise(data: bytes) -> None:
    try:
        msg = parse(data)
    except ParseError:
        return
    if isinstance(msg, Request):
        result = msg.check()
        assert result is None or result[0] in (400, 505)
    else:
        assert msg.check() is None or isinstance(msg.check(), str)
    for get in (
        lambda: msg.vias,
        lambda: msg.cseq,
        lambda: msg.from_,
        lambda: msg.to,
        lambda: msg.addresses("contact"),
        lambda: msg.addresses("route"),
    ):
        with contextlib.suppress(ParseError):
            get()
    again = parse(msg.serialize(), datagram=False)
    assert again == msg and again.body == msg.body
