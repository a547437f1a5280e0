"""RFC 4475 / RFC 5118 torture messages against the running server, one UDP datagram each.

The messages (tests/data/sip/, byte-exact copies, see the README there) are sent to a real
`heimbuero serve --domain example.com` (most of them are addressed to example.com). For each
file the table EXPECT says, with the RFC section, what the server must answer.

How the answer comes back to the test. The messages' Via headers name hosts such as
host5.example.com; RFC 3261 18.2.2 sends the response to the `received` address (the server
adds received=127.0.0.1, since sent-by differs from the packet's source) but to the port in
sent-by (5060 if none) - not to the test's socket. So before sending, the test inserts ";rport"
into the first via-parm of the topmost Via (RFC 3581): the server then answers the source port.
That is the only change to the messages, except one more: several files reuse a branch with the
same sent-by and method (e.g. cparam01/cparam02: "z9hG4bKkdjuw", saturn.example.com:5060,
REGISTER), which in one run would make the later one a retransmission of the earlier one
(RFC 3261 17.2.3); the later file's branch gets "-<file name>" appended.

Some topmost Vias say TCP or TLS although the datagram comes over UDP. A server may answer over
UDP (where the request came from) or, following 18.2.2 to the letter, over a connection to the
received address and port; the test listens on UDP and TCP of the same port and takes either.

Verdicts (column `expect`):
  Answer(codes)   the final response has one of these codes
  PROCESSED       a valid request, handled like any other: some final response, not 400, 505,
                  500 or 513 (e.g. 401/407 challenge, 404, 416, 483, 200 for OPTIONS to us)
  REJECT_OR_PROCESSED  the RFC allows 400 or liberal processing (then as PROCESSED)
  REJECT_OR_DROP  400, or no answer at all (the Via itself is malformed)
  DROP            a response (or one that must not be forwarded): no answer within 1 s, and the
                  server still answers OPTIONS afterwards
Timeouts: a final answer within 15 s (the server runs with T1 = 100 ms, so a request it
forwards to an unreachable host ends with 408 after 64*T1 = 6.4 s).
"""

from __future__ import annotations

import re
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .harness import LOCALHOST, Server, SipClient, SipMessage, free_port, parse_message, split_frame

pytestmark = pytest.mark.e2e

DATA = Path(__file__).resolve().parents[1] / "data" / "sip"
TORTURE_DOMAIN = "example.com"

ANSWER_TIMEOUT = 15.0
DROP_WAIT = 1.0
SERVER_ERRORS = frozenset({500, 505, 513})


@dataclass(frozen=True)
class Expect:
    rfc: str  # "4475 3.1.1.1"
    kind: str  # "answer" | "processed" | "reject_or_processed" | "reject_or_drop" | "drop"
    why: str
    codes: frozenset[int] = frozenset()
    also: Callable[[SipMessage], None] | None = field(default=None, compare=False)


def Answer(
    rfc: str, codes: set[int] | int, why: str, also: Callable[[SipMessage], None] | None = None
) -> Expect:
    return Expect(rfc, "answer", why, frozenset({codes} if isinstance(codes, int) else codes), also)


def Processed(rfc: str, why: str, not_codes: frozenset[int] = frozenset()) -> Expect:
    return Expect(rfc, "processed", why, not_codes)


def RejectOrProcessed(rfc: str, why: str) -> Expect:
    return Expect(rfc, "reject_or_processed", why)


def RejectOrDrop(rfc: str, why: str) -> Expect:
    return Expect(rfc, "reject_or_drop", why)


def Drop(rfc: str, why: str) -> Expect:
    return Expect(rfc, "drop", why)


def unsupported_lists_an_option(resp: SipMessage) -> None:
    # RFC 3261 20.40 / 8.2.2.3 / 16.3 step 5: 420 lists the unsupported option-tags. As a proxy
    # the server looks at Proxy-Require; acting as UAS it would list the Require ones.
    value = ", ".join(resp.header_values("Unsupported"))
    wanted = {
        "noproxiessupportthis",
        "nordoanyproxiessupportthis",
        "nothingsupportsthis",
        "nothingsupportsthiseither",
    }
    got = {v.strip().lower() for v in value.split(",") if v.strip()}
    assert got & wanted, f"420 without the unsupported option-tags in Unsupported: {resp.raw!r}"


def digest_challenge(resp: SipMessage) -> None:
    values = resp.header_values("WWW-Authenticate")
    assert any(v.strip().lower().startswith("digest ") for v in values), (
        f"401 without a Digest challenge: {resp.raw!r}"
    )


# A REGISTER without credentials is answered with a challenge: RFC 3261 10.3 authenticates
# (step 3) before it looks at the address-of-record (step 5).
CHALLENGE = {401}

EXPECT: dict[str, Expect] = {
    # ---- RFC 4475 3.1.1 valid messages: parse and handle normally -----------------------------
    "rfc4475/wsinv": Processed("4475 3.1.1.1", "short tortuous INVITE (LWS, folding, case)"),
    "rfc4475/intmeth": Processed("4475 3.1.1.2", "unknown method, wide range of valid characters"),
    "rfc4475/esc01": Processed("4475 3.1.1.3", "valid % escaping"),
    "rfc4475/escnull": Answer(
        "4475 3.1.1.4", CHALLENGE, "REGISTER with escaped NULs; registers two contacts"
    ),
    "rfc4475/esc02": Processed("4475 3.1.1.5", "% in method and header name: an unknown method"),
    "rfc4475/lwsdisp": Processed("4475 3.1.1.6", "no LWS between display name and <"),
    "rfc4475/longreq": Processed("4475 3.1.1.7", "long header values"),
    # the INVITE after the REGISTER's end in the same datagram is noise (RFC 3261 18.3):
    # exactly one answer, the REGISTER's (checked in the test)
    "rfc4475/dblreq": Answer(
        "4475 3.1.1.8", CHALLENGE, "trailing octets in a UDP datagram are ignored"
    ),
    "rfc4475/semiuri": Processed("4475 3.1.1.9", "; parameters in the user part"),
    "rfc4475/transports": Processed(
        "4475 3.1.1.10", "varied and unknown transports in Vias below ours"
    ),
    "rfc4475/mpart01": Processed("4475 3.1.1.11", "multipart MESSAGE with a binary part"),
    "rfc4475/unreason": Drop(
        "4475 3.1.1.12", "a response (UTF-8 reason) that matches no transaction of ours"
    ),
    "rfc4475/noreason": Drop(
        "4475 3.1.1.13", "a response (empty reason) that matches no transaction of ours"
    ),
    # ---- RFC 4475 3.1.2 invalid messages ------------------------------------------------------
    # 3.1.2.1: the topmost Via is itself malformed, so RFC 3261 18.2.2 gives no address for a
    # response; answering 400 to the packet's source or dropping are both acceptable.
    "rfc4475/badinv01": RejectOrDrop("4475 3.1.2.1", "extra ; and , in Via and Contact: 400"),
    # RFC 3261 18.3: a UDP request whose body is shorter than Content-Length SHOULD get 400
    "rfc4475/clerr": Answer("4475 3.1.2.2", 400, "Content-Length larger than the datagram"),
    "rfc4475/ncl": Answer("4475 3.1.2.3", 400, "negative Content-Length: respond with an error"),
    "rfc4475/scalar02": Answer("4475 3.1.2.4", 400, "CSeq over 2**31-1: 400 due to the CSeq"),
    "rfc4475/scalarlg": Drop("4475 3.1.2.5", "response with overlarge scalars"),
    "rfc4475/quotbal": Answer("4475 3.1.2.6", 400, "unterminated quoted string: 400"),
    # 3.1.2.7-3.1.2.15: "reasonable to reject with 400"; elements may be liberal instead
    "rfc4475/ltgtruri": RejectOrProcessed("4475 3.1.2.7", "<> around the Request-URI"),
    "rfc4475/lwsruri": Answer("4475 3.1.2.8", 400, "LWS inside the Request-URI: 400"),
    "rfc4475/lwsstart": RejectOrProcessed(
        "4475 3.1.2.9", "several SP between Request-Line elements"
    ),
    "rfc4475/trws": RejectOrProcessed("4475 3.1.2.10", "SP after SIP-Version"),
    "rfc4475/escruri": RejectOrProcessed("4475 3.1.2.11", "escaped headers in the Request-URI"),
    "rfc4475/baddate": RejectOrProcessed("4475 3.1.2.12", "Date not in GMT"),
    "rfc4475/regbadct": RejectOrProcessed("4475 3.1.2.13", "Contact addr-spec with ? not in <>"),
    "rfc4475/badaspec": RejectOrProcessed("4475 3.1.2.14", "spaces inside <> of To"),
    "rfc4475/baddn": RejectOrProcessed("4475 3.1.2.15", "unquoted non-token display names"),
    "rfc4475/badvers": Answer("4475 3.1.2.16", 505, "SIP/7.0: 505 Version Not Supported"),
    "rfc4475/mismatch01": Answer(
        "4475 3.1.2.17", 400, "CSeq method differs from the Request-Line's"
    ),
    "rfc4475/mismatch02": Answer(
        "4475 3.1.2.18", 400, "unknown method and CSeq mismatch: 400 for the mismatch"
    ),
    "rfc4475/bigcode": Drop("4475 3.1.2.19", "status code 4294967301"),
    # ---- RFC 4475 3.2 transaction layer ------------------------------------------------------
    # "could reject with 400 ... or fall back to RFC 2543-style transaction identifier"
    "rfc4475/badbranch": RejectOrProcessed("4475 3.2.1", "branch is the magic cookie alone"),
    # ---- RFC 4475 3.3 application layer ------------------------------------------------------
    "rfc4475/insuf": Answer("4475 3.3.1", 400, "To, From, Call-ID, Max-Forwards missing: 400"),
    "rfc4475/unkscm": Answer("4475 3.3.2", 416, "Request-URI of an unknown scheme: 416"),
    # "If an element will never accept this scheme as meaningful in a Request-URI, it is
    # appropriate to treat it as unknown and return 416"; heimbuero routes sip:/sips: only.
    "rfc4475/novelsc": Answer("4475 3.3.3", 416, "soap.beep: Request-URI: 416"),
    # "A registrar would reject this request with a 400 Bad Request response, since the To:
    # header field is required to contain a SIP or SIPS URI as an AOR." No AOR, nothing to
    # authenticate for: 400, not a challenge.
    "rfc4475/unksm2": Answer(
        "4475 3.3.4", 400, "REGISTER with isbn: To (and http: From, name: Contact)"
    ),
    # RFC 3261 16.3 step 5: a proxy answers 420 listing the unsupported Proxy-Require options
    # (step 5 comes before proxy authentication, step 6... so no 407 first).
    "rfc4475/bext01": Answer(
        "4475 3.3.5", 420, "unsupported Require/Proxy-Require", unsupported_lists_an_option
    ),
    # "A proxy receiving this request would process it just as it would any other INVITE. An
    # endpoint receiving this request would reject it with a 415." heimbuero is the proxy for
    # sip:user@example.com, not its endpoint: the body is none of its business, so no 415.
    "rfc4475/invut": Processed(
        "4475 3.3.6", "INVITE with an unknown Content-Type, seen by a proxy", frozenset({415})
    ),
    # "A registrar that does care about challenge-response authentication will reject this
    # request with a 401, issuing a new challenge with a scheme it understands."
    "rfc4475/regaut01": Answer(
        "4475 3.3.7", 401, "REGISTER with an unknown Authorization scheme", digest_challenge
    ),
    "rfc4475/multi01": Answer("4475 3.3.8", 400, "several Call-ID, To, From, CSeq values: 400"),
    # "should respond with an error"; over UDP the rest of the datagram is discarded
    "rfc4475/mcl01": Answer("4475 3.3.9", 400, "two different Content-Length values"),
    # "proxies should drop such responses" (else they would forward to 255.255.255.255)
    "rfc4475/bcast": Drop("4475 3.3.10", "200 OK with a broadcast Via below"),
    # RFC 3261 16.3 step 3: Max-Forwards 0 is not forwarded: 483, or for OPTIONS the proxy MAY
    # answer itself (200); the check comes before proxy authentication (step 6).
    "rfc4475/zeromf": Answer("4475 3.3.11", {483, 200}, "OPTIONS with Max-Forwards 0"),
    # 3.3.12-3.3.14: "This REGISTER should succeed" - for a client with credentials; without,
    # the registrar challenges first.
    "rfc4475/cparam01": Answer(
        "4475 3.3.12", CHALLENGE, "unknown contact-param in an addr-spec Contact"
    ),
    "rfc4475/cparam02": Answer("4475 3.3.13", CHALLENGE, "unknown url-param inside <> in Contact"),
    "rfc4475/regescrt": Answer("4475 3.3.14", CHALLENGE, "escaped Route header in the Contact URI"),
    # "the recipient could respond 406 or 400": the endpoint; a proxy handles it like any INVITE
    "rfc4475/sdp01": Processed(
        "4475 3.3.15", "Accept without the offered application/sdp, seen by a proxy"
    ),
    # ---- RFC 4475 3.4 backward compatibility --------------------------------------------------
    "rfc4475/inv2543": Processed(
        "4475 3.4.1", "RFC 2543 syntax: no branch, no Max-Forwards, no From tag"
    ),
    # ---- RFC 5118 4 (IPv6; sent over IPv4 loopback, the addresses are only text) ---------------
    "rfc5118/ipv6-good": Processed("5118 4.1", "IPv6 references in Request-URI, Via, Contact"),
    "rfc5118/ipv6-bad": Answer("5118 4.2", 400, "IPv6 address without [] in the Request-URI"),
    "rfc5118/port-ambiguous": Processed(
        "5118 4.3", "[2001:db8::10:5070] is an address without port"
    ),
    "rfc5118/port-unambiguous": Processed("5118 4.4", "[2001:db8::10]:5070 is address and port"),
    # "be liberal in accepting a received parameter with or without the delimiters"
    "rfc5118/via-received-param-with-delim": Processed("5118 4.5", "received=[IPv6]"),
    "rfc5118/via-received-param-no-delim": Processed("5118 4.5", "received=IPv6"),
    "rfc5118/ipv6-in-sdp": Processed("5118 4.6", "IPv6 in the SDP body"),
    "rfc5118/mult-ip-in-header": Processed("5118 4.7", "IPv4 and IPv6 Vias"),
    "rfc5118/mult-ip-in-sdp": Processed("5118 4.8", "IPv4 and IPv6 in SDP"),
    "rfc5118/ipv4-mapped-ipv6": Processed("5118 4.9", "::ffff:192.0.2.x in Via and Contact"),
    # "an implementation must tolerate both" forms (Robustness Principle)
    "rfc5118/ipv6-bug-abnf-3-colons": Processed("5118 4.10", "2001:db8:::192.0.2.1 tolerated"),
    "rfc5118/ipv6-correct-abnf-2-colons": Processed("5118 4.10", "2001:db8::192.0.2.1"),
}

FILES = sorted(DATA.glob("rfc*/*.dat"))


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


# --------------------------------------------------------------------------------------------
# message preparation


def _header_section(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[:end]


def _topmost_via_span(data: bytes) -> tuple[int, int] | None:
    """Byte span of the topmost Via header's value (continuation lines included)."""
    head = _header_section(data)
    m = re.search(rb"\r\n(?:via|v)[ \t]*:", head, re.I)
    if not m:
        return None
    start = pos = m.end()
    while True:
        nl = head.find(b"\r\n", pos)
        if nl < 0:
            return start, len(head)
        if head[nl + 2 : nl + 3] in (b" ", b"\t"):
            pos = nl + 2
            continue
        return start, nl


def _first_via_parm_end(value: bytes) -> int:
    """Index in `value` where its first via-parm ends (top-level comma or end, LWS trimmed)."""
    quoted = bracket = False
    end = len(value)
    for i, ch in enumerate(value):
        c = bytes([ch])
        if quoted:
            if c == b'"':
                quoted = False
            continue
        if c == b'"':
            quoted = True
        elif c == b"[":
            bracket = True
        elif c == b"]":
            bracket = False
        elif c == b"," and not bracket:
            end = i
            break
    while end > 0 and value[end - 1 : end] in (b" ", b"\t", b"\r", b"\n"):
        end -= 1
    return end


def transaction_key(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(branch, sent-by, method) of a request's topmost Via (RFC 3261 17.2.3), roughly."""
    if data.startswith(b"SIP/"):
        return None
    span = _topmost_via_span(data)
    if span is None:
        return None
    value = data[span[0] : span[1]]
    parm = re.sub(rb"\r\n[ \t]+", b" ", value[: _first_via_parm_end(value)])
    branch = re.search(rb";\s*branch\s*=\s*([^;\s,]+)", parm, re.I)
    sent_by = re.search(rb"SIP\s*/\s*[^/]+/\s*\S+\s+([^;\s]+)", parm, re.I)
    method = data.split(b" ", 1)[0]
    if not branch:
        return None
    return branch.group(1), (sent_by.group(1) if sent_by else b""), method


def prepare(data: bytes, *, unique_suffix: bytes | None = None) -> bytes:
    """Insert ";rport" into the topmost Via's first via-parm (unless present); optionally
    append `unique_suffix` to its branch value."""
    if data.startswith(b"SIP/"):
        return data  # responses go as they are
    span = _topmost_via_span(data)
    if span is None:
        return data
    start, stop = span
    value = data[start:stop]
    parm_end = _first_via_parm_end(value)
    parm = value[:parm_end]
    if unique_suffix:
        parm = re.sub(
            rb"(;\s*branch\s*=\s*[^;\s,]+)",
            lambda m: m.group(1) + unique_suffix,
            parm,
            count=1,
            flags=re.I,
        )
    if not re.search(rb";\s*rport\b", parm, re.I):
        parm += b";rport"
    return data[:start] + parm + value[parm_end:] + data[stop:]


def _call_ids(data: bytes) -> list[bytes]:
    head = _header_section(data)
    return [
        m.group(1).strip()
        for m in re.finditer(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", head, re.I)
    ]


# --------------------------------------------------------------------------------------------
# sending and listening


class Listener:
    """UDP socket + TCP listener on the same free port on 127.0.0.1; collects SIP messages."""

    def __init__(self) -> None:
        self.port = free_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((LOCALHOST, self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((LOCALHOST, self.port))
        self.tcp.listen(4)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.udp, selectors.EVENT_READ, "udp")
        self.sel.register(self.tcp, selectors.EVENT_READ, "listen")
        self.buffers: dict[socket.socket, bytes] = {}
        self.messages: list[tuple[str, SipMessage]] = []

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()

    def poll(self, timeout: float) -> None:
        for key, _ in self.sel.select(max(timeout, 0)):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "udp":
                data, _ = sock.recvfrom(65535)
                if data.strip(b"\r\n"):
                    self.messages.append(("udp", parse_message(data)))
            elif key.data == "listen":
                conn, _ = sock.accept()
                self.sel.register(conn, selectors.EVENT_READ, "conn")
                self.buffers[conn] = b""
            else:
                chunk = sock.recv(65535)
                if not chunk:
                    self.sel.unregister(sock)
                    sock.close()
                    continue
                self.buffers[sock] += chunk
                while framed := split_frame(self.buffers[sock]):
                    one, self.buffers[sock] = framed
                    self.messages.append(("tcp", parse_message(one)))

    def final_responses(self) -> list[SipMessage]:
        return [m for _, m in self.messages if m.is_response and (m.status or 0) >= 200]

    def wait_final(self, timeout: float) -> SipMessage | None:
        deadline = time.monotonic() + timeout
        while not self.final_responses():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.poll(min(left, 0.2))
        return self.final_responses()[0]

    def collect_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.poll(left)


def server_answers_options(server: Server) -> bool:
    with SipClient(server.port) as c:
        req = c.request(
            "OPTIONS",
            f"sip:{server.address}",
            from_uri="sip:probe@127.0.0.1",
            to_uri=f"sip:{server.address}",
        )
        try:
            return c.final_response(req, 5).status == 200
        except AssertionError:
            return False


@pytest.fixture(scope="module")
def torture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(
        tmp_path_factory.mktemp("torture"),
        domain=TORTURE_DOMAIN,
        users={"watson": "Sherlock-Baker-221"},
        sip_options={"t1_ms": 100},
    ) as srv:
        yield srv


_sent_keys: dict[tuple[bytes, bytes, bytes], str] = {}


def test_prepare_inserts_rport_into_the_topmost_via_only() -> None:
    def first_parm(data: bytes) -> bytes:
        span = _topmost_via_span(data)
        assert span is not None
        value = data[span[0] : span[1]]
        return value[: _first_via_parm_end(value)]

    for name in ("wsinv", "transports", "badinv01", "inv2543", "longreq"):
        original = (DATA / "rfc4475" / f"{name}.dat").read_bytes()
        out = prepare(original)
        assert len(out) == len(original) + len(b";rport"), name
        assert first_parm(out).endswith(b";rport"), name
        assert prepare(out) == out, name  # once only
    mpart = (DATA / "rfc4475" / "mpart01.dat").read_bytes()
    assert prepare(mpart) == mpart  # has rport already
    response = (DATA / "rfc4475" / "unreason.dat").read_bytes()
    assert prepare(response) == response
    cparam01, cparam02 = (DATA / "rfc4475" / f"cparam0{i}.dat" for i in (1, 2))
    assert transaction_key(cparam01.read_bytes()) == transaction_key(cparam02.read_bytes())
    assert b"branch=z9hG4bKkdjuw-x;rport" in prepare(cparam02.read_bytes(), unique_suffix=b"-x")


def test_every_file_has_an_expectation() -> None:
    assert FILES, f"no torture messages under {DATA}"
    assert {_key(p) for p in FILES} == set(EXPECT)


@pytest.mark.parametrize("path", FILES, ids=[_key(p) for p in FILES])
def test_torture_message(torture_server: Server, path: Path) -> None:
    expect = EXPECT[_key(path)]
    original = path.read_bytes()
    key = transaction_key(original)
    suffix = None
    if key is not None and key in _sent_keys and _sent_keys[key] != path.stem:
        suffix = b"-" + path.stem.encode()  # see the module docstring
    elif key is not None:
        _sent_keys[key] = path.stem
    data = prepare(original, unique_suffix=suffix)
    label = f"{_key(path)} (RFC {expect.rfc}: {expect.why})"

    listener = Listener()
    try:
        listener.udp.sendto(data, (LOCALHOST, torture_server.port))
        if expect.kind == "drop":
            listener.collect_for(DROP_WAIT)
            got = [m.start_line for _, m in listener.messages]
            assert not got, f"{label}: expected no answer, got {got}"
        elif expect.kind == "reject_or_drop":
            resp = listener.wait_final(DROP_WAIT)
            if resp is not None:
                assert resp.status == 400, (
                    f"{label}: expected 400 or nothing, got {resp.start_line}"
                )
        else:
            resp = listener.wait_final(ANSWER_TIMEOUT)
            assert resp is not None, (
                f"{label}: no final response within {ANSWER_TIMEOUT} s "
                f"(got {[m.start_line for _, m in listener.messages]})\nsent:\n{data!r}"
            )
            code = resp.status
            assert code is not None
            if expect.kind == "answer":
                assert code in expect.codes, (
                    f"{label}: expected {sorted(expect.codes)}, got {resp.start_line}"
                )
            elif expect.kind == "processed":
                assert code != 400 and code not in SERVER_ERRORS and code not in expect.codes, (
                    f"{label}: a valid request must be handled normally, got {resp.start_line}"
                )
            elif expect.kind == "reject_or_processed":
                assert code not in SERVER_ERRORS, (
                    f"{label}: expected 400 or normal handling, got {resp.start_line}"
                )
            if expect.also is not None:
                expect.also(resp)
            ids = _call_ids(original)
            call_id = resp.header("Call-ID")
            if len(ids) == 1 and call_id is not None:
                assert call_id.encode() == ids[0], f"{label}: response Call-ID differs"
            if path.stem == "dblreq":
                listener.collect_for(DROP_WAIT)
                finals = listener.final_responses()
                assert all((m.cseq or (0, ""))[1].upper() == "REGISTER" for m in finals), (
                    f"{label}: the INVITE after the REGISTER was answered: "
                    f"{[m.summary() for m in finals]}"
                )
    finally:
        listener.close()
    assert torture_server.alive(), f"{label}: the server died\n{torture_server.log_text()}"


def test_server_still_works_after_torture(torture_server: Server) -> None:
    assert torture_server.alive(), torture_server.log_text()
    assert server_answers_options(torture_server), torture_server.log_text()
    with SipClient(torture_server.port) as c:
        challenge, final = c.authenticated_request(
            "REGISTER",
            f"sip:{TORTURE_DOMAIN}",
            username="watson",
            password="Sherlock-Baker-221",
            from_uri=f"sip:watson@{TORTURE_DOMAIN}",
            to_uri=f"sip:watson@{TORTURE_DOMAIN}",
            headers=[("Contact", f"<sip:watson@127.0.0.1:{c.local_port}>"), ("Expires", "60")],
        )
    assert challenge.status == 401
    assert final.status == 200, final.raw
