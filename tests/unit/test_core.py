"""The SIP core (registrar + forking proxy) driven sans-IO: bytes in, bytes out, time stepped.

These tests exercise the call flows of RFC 3261 §16 without sockets; the same flows run against
real SIP peers in tests/e2e.
"""

from __future__ import annotations

import gc
import hashlib
import itertools

import pytest

from heimbuero.services.core import CoreSettings, SipCore
from heimbuero.services.credentials import Account, UserDirectory
from heimbuero.services.location import LocationService
from heimbuero.sip.auth import DigestAuthenticator, ha1, parse_credentials
from heimbuero.sip.message import Request, Response, parse, parse_address

DOMAIN = "example.com"
PROXY = ("127.0.0.1", 5060)
PASSWORDS = {"alice": "Sonne-Regen-42", "bob": "Wolke-Blitz-77"}
CARRIER = ("udp", "127.0.0.9", 5090)
_seq = itertools.count(1)


def _account(name: str) -> Account | None:
    pw = PASSWORDS.get(name)
    if pw is None:
        return None
    return Account(name, "agent", ha1("MD5", name, DOMAIN, pw), ha1("SHA-256", name, DOMAIN, pw))


class Net:
    """Feeds the core and collects what it sends, parsed, per destination."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.core = SipCore(
            CoreSettings(
                domain=DOMAIN, local={"udp": PROXY, "tcp": PROXY}, trusted_peers=("127.0.0.9",)
            ),
            UserDirectory(_account),
            LocationService(),
            DigestAuthenticator(DOMAIN, b"k" * 32, ("MD5", "SHA-256")),
        )

    def send(
        self, msg: str | bytes, src: tuple[str, str, int]
    ) -> list[tuple[Request | Response, tuple[str, str, int]]]:
        data = msg.encode() if isinstance(msg, str) else msg
        self.core.receive(data, src, self.now)
        return self.drain()

    def drain(self) -> list[tuple[Request | Response, tuple[str, str, int]]]:
        return [(parse(d), dest) for d, dest in self.core.outgoing()]

    def advance(self, seconds: float) -> list[tuple[Request | Response, tuple[str, str, int]]]:
        end = self.now + seconds
        while True:
            t = self.core.next_deadline()
            if t is None or t > end:
                break
            self.now = max(self.now, t)
            self.core.on_timer(self.now)
        self.now = end
        return self.drain()


def req(
    method: str,
    ruri: str,
    src: tuple[str, str, int],
    user: str,
    to: str,
    *,
    call_id: str | None = None,
    cseq: int = 1,
    branch: str | None = None,
    extra: list[str] | None = None,
    contact: str | None = None,
    to_tag: str | None = None,
) -> Request:
    host, port = (f"[{src[1]}]" if ":" in src[1] else src[1]), src[2]
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{src[0].upper()} {host}:{port};"
        f"branch={branch or 'z9hG4bK' + str(next(_seq))};rport",
        f"From: <sip:{user}@{DOMAIN}>;tag=f{user}",
        f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id or 'call' + str(next(_seq))}",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 70",
        f"Contact: <{contact or f'sip:{user}@{host}:{port}'}>",
    ]
    lines += extra or []
    r = parse(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(r, Request)
    return r


def authorize(r: Request, challenge: Response, user: str, header: str = "Authorization") -> Request:
    name = "www-authenticate" if header == "Authorization" else "proxy-authenticate"
    ch = parse_credentials(challenge.get_all(name)[0])
    assert ch is not None
    alg = ch.get("algorithm", "MD5")
    h = hashlib.md5 if alg == "MD5" else hashlib.sha256
    a1 = h(f"{user}:{ch['realm']}:{PASSWORDS.get(user, 'wrong-password')}".encode()).hexdigest()
    a2 = h(f"{r.method}:{r.uri}".encode()).hexdigest()
    cnonce, nc = "abcdef", "00000001"
    resp = h(f"{a1}:{ch['nonce']}:{nc}:{cnonce}:auth:{a2}".encode()).hexdigest()
    out = r.copy()
    out.set("CSeq", f"{r.cseq[0] + 1} {r.method}")
    out.pop_first_value("via")
    out.prepend(
        "via", f"SIP/2.0/UDP {r.top_via.host}:{r.top_via.port};branch=z9hG4bK{next(_seq)};rport"
    )
    out.add(
        header,
        f'Digest username="{user}", realm="{ch["realm"]}", nonce="{ch["nonce"]}", uri="{r.uri}", '
        f'response="{resp}", algorithm={alg}, qop=auth, nc={nc}, cnonce="{cnonce}"',
    )
    return out


def only(out: list, kind: type) -> list:
    return [m for m, _ in out if isinstance(m, kind)]


def register(
    net: Net, user: str, src: tuple[str, str, int], contact: str | None = None
) -> Response:
    r = req("REGISTER", f"sip:{DOMAIN}", src, user, f"sip:{user}@{DOMAIN}", contact=contact)
    [(challenge, dest)] = net.send(r.serialize(), src)
    assert isinstance(challenge, Response) and challenge.status == 401
    assert dest == src
    [(ok, _)] = net.send(authorize(r, challenge, user).serialize(), src)
    assert isinstance(ok, Response)
    return ok


def invite(net: Net, caller: str, callee: str, src: tuple[str, str, int]) -> tuple[Request, list]:
    r = req("INVITE", f"sip:{callee}@{DOMAIN}", src, caller, f"sip:{callee}@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), src)
    assert isinstance(challenge, Response) and challenge.status == 407
    net.send(ack_for(r, challenge).serialize(), src)
    authed = authorize(r, challenge, caller, "Proxy-Authorization")
    return authed, net.send(authed.serialize(), src)


def ack_for(r: Request, resp: Response) -> Request:
    a = Request(
        "ACK",
        r.uri,
        [list(h) for h in r.headers if h[0] in ("via", "from", "call-id", "max-forwards")],
    )
    a.add("To", resp.get("to") or "")
    a.add("CSeq", f"{r.cseq[0]} ACK")
    return a


def answer(fwd: Request, status: int, tag: str = "callee", contact: str | None = None) -> Response:
    hdrs = [
        list(h) for h in fwd.headers if h[0] in ("via", "from", "call-id", "cseq", "record-route")
    ]
    resp = Response(status, "Reason", hdrs)
    to = fwd.get("to") or ""
    resp.add("To", to if status == 100 else f"{to};tag={tag}")
    if contact:
        resp.add("Contact", f"<{contact}>")
    return resp


ALICE = ("udp", "127.0.0.1", 40001)
BOB1 = ("udp", "127.0.0.1", 40002)
BOB2 = ("udp", "127.0.0.1", 40003)


def test_register_requires_digest_and_lists_bindings() -> None:
    net = Net()
    ok = register(net, "bob", BOB1)
    assert ok.status == 200
    assert ok.get_all("contact") == ["<sip:bob@127.0.0.1:40002>;expires=3600"]


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    net = Net()
    answers = []
    for user in ("bob", "mallory"):
        r = req("REGISTER", f"sip:{DOMAIN}", BOB1, user, f"sip:{user}@{DOMAIN}")
        [(challenge, _)] = net.send(r.serialize(), BOB1)
        bad = authorize(r, challenge, user)
        if user == "bob":
            bad = parse(bad.serialize().replace(b'response="', b'response="0'))
        [(resp, _)] = net.send(bad.serialize(), BOB1)
        answers.append((resp.status, resp.reason, len(resp.get_all("www-authenticate"))))
    assert answers[0] == answers[1] == (401, "Unauthorized", 2)


def test_challenge_offers_md5_first_then_sha256() -> None:
    net = Net()
    r = req("REGISTER", f"sip:{DOMAIN}", BOB1, "bob", f"sip:bob@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), BOB1)
    algs = [parse_credentials(v)["algorithm"] for v in challenge.get_all("www-authenticate")]  # type: ignore[index]
    assert algs == ["MD5", "SHA-256"]


def test_invite_forks_to_all_contacts_first_2xx_wins_other_cancelled() -> None:
    net = Net()
    register(net, "bob", BOB1)
    register(net, "bob", BOB2, contact="sip:bob@192.168.1.20:5060")
    register(net, "alice", ALICE)
    inv, out = invite(net, "alice", "bob", ALICE)
    trying = only(out, Response)
    assert [r.status for r in trying] == [100]
    fwds = {dest: m for m, dest in out if isinstance(m, Request)}
    assert set(fwds) == {BOB1, BOB2}  # the NATed one is reached at its source address
    for f in fwds.values():
        assert (f.get("record-route") or "").startswith("<sip:127.0.0.1:5060;lr;hbd=")
        assert f.get("max-forwards") == "69"
        assert len(f.vias) == 2
    assert fwds[BOB2].uri == "sip:bob@192.168.1.20:5060"
    # both ring, BOB2 answers
    for dest, f in fwds.items():
        out = net.send(answer(f, 180, tag=f"t{dest[2]}").serialize(), dest)
        assert [m.status for m in only(out, Response)] == [180]
        assert len(only(out, Response)[0].vias) == 1
    out = net.send(
        answer(fwds[BOB2], 200, tag="t40003", contact="sip:bob@192.168.1.20:5060").serialize(), BOB2
    )
    sent = [(m, d) for m, d in out]
    ok = [m for m, d in sent if isinstance(m, Response)]
    cancels = [(m, d) for m, d in sent if isinstance(m, Request) and m.method == "CANCEL"]
    assert [r.status for r in ok] == [200]
    contact = parse_address(ok[0].get("contact") or "").uri
    assert (contact.params.get("alias") or "").startswith("127.0.0.1~40003~udp~")  # signed
    assert len(cancels) == 1 and cancels[0][1] == BOB1
    assert cancels[0][0].top_via.branch == fwds[BOB1].top_via.branch
    assert "Call completed elsewhere" in (cancels[0][0].get("reason") or "")
    # the ACK for the 2xx follows the Record-Route and reaches the NATed phone at its source
    ack = Request(
        "ACK", str(contact),
        [["via", "Via", f"SIP/2.0/UDP 127.0.0.1:{ALICE[2]};branch=z9hG4bKack1;rport"],
         ["route", "Route", ok[0].get("record-route") or ""],
         ["from", "From", inv.get("from") or ""],
         ["to", "To", (inv.get("to") or "") + ";tag=t40003"],
         ["call-id", "Call-ID", inv.call_id], ["cseq", "CSeq", f"{inv.cseq[0]} ACK"],
         ["max-forwards", "Max-Forwards", "70"]],
    )  # fmt: skip
    [(fwd_ack, dest)] = net.send(ack.serialize(), ALICE)
    assert dest == BOB2 and isinstance(fwd_ack, Request) and fwd_ack.method == "ACK"
    assert fwd_ack.uri == "sip:bob@192.168.1.20:5060"
    assert "route" not in fwd_ack


def test_busy_everywhere_gives_486_and_caller_cancel_gives_487() -> None:
    net = Net()
    register(net, "bob", BOB1)
    register(net, "alice", ALICE)
    _, out = invite(net, "alice", "bob", ALICE)
    [(fwd, dest)] = [(m, d) for m, d in out if isinstance(m, Request)]
    out = net.send(answer(fwd, 486).serialize(), dest)
    statuses = [m.status for m in only(out, Response)]
    acks = [m for m in only(out, Request) if m.method == "ACK"]
    assert statuses == [486] and len(acks) == 1  # hop-by-hop ACK of the non-2xx

    inv, out = invite(net, "alice", "bob", ALICE)
    [(fwd, dest)] = [(m, d) for m, d in out if isinstance(m, Request)]
    net.send(answer(fwd, 180).serialize(), dest)
    cancel = Request(
        "CANCEL",
        inv.uri,
        [list(h) for h in inv.headers if h[0] in ("via", "from", "to", "call-id", "max-forwards")],
    )
    cancel.add("CSeq", f"{inv.cseq[0]} CANCEL")
    out = net.send(cancel.serialize(), ALICE)
    assert [m.status for m in only(out, Response)] == [200]
    [fcancel] = only(out, Request)
    assert fcancel.method == "CANCEL" and fcancel.top_via.branch == fwd.top_via.branch
    out = net.send(answer(fwd, 487).serialize(), dest)
    assert [m.status for m in only(out, Response)] == [487]


def test_unknown_user_404_unregistered_480_unauthenticated_407() -> None:
    net = Net()
    register(net, "alice", ALICE)
    _, out = invite(net, "alice", "nobody", ALICE)
    assert [m.status for m in only(out, Response)] == [404]
    _, out = invite(net, "alice", "bob", ALICE)
    assert [m.status for m in only(out, Response)] == [480]


def test_trusted_peer_is_not_challenged() -> None:
    net = Net()
    register(net, "bob", BOB1)
    r = req("INVITE", f"sip:bob@{DOMAIN}", CARRIER, "carrier", f"sip:bob@{DOMAIN}")
    out = net.send(r.serialize(), CARRIER)
    assert [m.status for m in only(out, Response)] == [100]
    assert [d for m, d in out if isinstance(m, Request)] == [BOB1]


def test_max_forwards_zero_and_loop() -> None:
    net = Net()
    register(net, "alice", ALICE)
    r = req("INVITE", f"sip:bob@{DOMAIN}", ALICE, "alice", f"sip:bob@{DOMAIN}")
    r.set("Max-Forwards", "0")
    [(resp, _)] = net.send(r.serialize(), ALICE)
    assert resp.status == 483
    # a request that already passed us unchanged is a loop
    r2 = req("OPTIONS", f"sip:bob@{DOMAIN}", CARRIER, "carrier", f"sip:bob@{DOMAIN}")
    branch = net.core.new_branch(r2)
    r2.prepend("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch}")
    [(resp, _)] = net.send(r2.serialize(), CARRIER)
    assert resp.status == 482


def test_unsupported_proxy_require_and_uri_scheme() -> None:
    net = Net()
    r = req(
        "OPTIONS",
        f"sip:bob@{DOMAIN}",
        ALICE,
        "alice",
        f"sip:bob@{DOMAIN}",
        extra=["Proxy-Require: foo"],
    )
    [(resp, _)] = net.send(r.serialize(), ALICE)
    assert resp.status == 420 and resp.get("unsupported") == "foo"
    r = req("OPTIONS", "tel:+4930123", ALICE, "alice", f"sip:bob@{DOMAIN}")
    [(resp, _)] = net.send(r.serialize(), ALICE)
    assert resp.status == 416


def test_no_answer_times_out_with_408_after_timer_b() -> None:
    net = Net()
    register(net, "bob", BOB1)
    register(net, "alice", ALICE)
    _, out = invite(net, "alice", "bob", ALICE)
    out = net.advance(40.0)
    finals = [m.status for m in only(out, Response)]
    assert finals and set(finals) == {408}  # the 408, then its retransmissions (no ACK came)


def test_from_must_match_authenticated_user() -> None:
    net = Net()
    r = req("INVITE", f"sip:bob@{DOMAIN}", ALICE, "alice", f"sip:bob@{DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), ALICE)
    forged = authorize(r, challenge, "bob", "Proxy-Authorization")
    [(resp, _)] = net.send(forged.serialize(), ALICE)
    assert resp.status == 403


@pytest.mark.parametrize("bad", [b"garbage\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n"])
def test_garbage_is_dropped(bad: bytes) -> None:
    net = Net()
    assert net.send(bad, ALICE) == []


def test_a_finished_call_is_freed_without_the_cyclic_garbage_collector() -> None:
    """A busy proxy holds thousands of calls for the 32 s their transactions live; once those
    end, the call's objects must go by reference counting alone: waiting for the cyclic
    collector made multi-second pauses under load."""
    from heimbuero.services.proxy import Branch, ProxyCall

    def alive() -> int:
        return sum(isinstance(o, (ProxyCall, Branch)) for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        net = Net()
        register(net, "bob", BOB1)
        register(net, "alice", ALICE)
        before = alive()
        _, out = invite(net, "alice", "bob", ALICE)
        [fwd] = [m for m, _ in out if isinstance(m, Request)]
        net.send(answer(fwd, 180).serialize(), BOB1)
        net.send(answer(fwd, 200).serialize(), BOB1)
        assert alive() > before
        net.advance(40.0)  # past Timer L and M: every transaction of the call has ended
        assert len(net.core.layer) == 0
        assert alive() == before
    finally:
        gc.enable()
