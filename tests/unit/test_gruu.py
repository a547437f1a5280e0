"""GRUUs (RFC 5627): their text and the temporary GRUU token (sans-IO), the registrar's 200,
and the proxy sending a request for a GRUU to that one device only (the core without
sockets)."""

from __future__ import annotations

import base64

import pytest

from heimbuero.services.gruu import Gruus
from heimbuero.services.location import LocationService
from heimbuero.services.registrar import RegisterResult, Registrar, RegistrarSettings, add_gruus
from heimbuero.sip.gruu import (
    TEMP_PREFIX,
    TempGruuSigner,
    escape_param,
    gr_instance,
    instance_id,
    public_gruu,
)
from heimbuero.sip.message import Request, Response, parse, parse_address, parse_uri
from tests.unit.test_core import (
    ALICE,
    BOB1,
    BOB2,
    DOMAIN,
    Net,
    ack_for,
    answer,
    authorize,
    only,
    req,
)

UUID1 = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
UUID2 = "urn:uuid:0c2d4c1e-5b3a-4e3f-9d6e-2a9f4b7c8d01"
KEY = b"s" * 32


# ---- sans-IO: the text of GRUUs and the token -------------------------------------------------


def test_instance_id_takes_the_urn_out_of_quotes_and_brackets() -> None:
    assert instance_id(f'"<{UUID1.upper().replace("URN:UUID", "urn:uuid")}>"') == UUID1
    assert instance_id(f"<{UUID1}>") == UUID1
    for bad in (None, "", '"<http://x>"', '"<urn:a b>"', f'"<urn:{"x" * 300}>"', '"<urn:a"b>"'):
        assert instance_id(bad) is None, bad


def test_public_gruu_carries_the_instance_in_gr_escaped_where_needed() -> None:
    assert public_gruu("anna", DOMAIN, UUID1) == f"sip:anna@{DOMAIN};gr={UUID1}"
    assert escape_param("urn:x;y=z%") == "urn:x%3By%3Dz%25"
    uri = parse_uri(public_gruu("anna", DOMAIN, "urn:x;y=z"))
    assert uri.params == {"gr": "urn:x%3By%3Dz"}
    assert gr_instance(uri.params["gr"] or "") == "urn:x;y=z"
    assert gr_instance("urn:%FF") is None  # not UTF-8


def test_temp_token_opens_to_what_it_was_made_for_and_reveals_nothing() -> None:
    signer = TempGruuSigner(KEY)
    token = signer.make("anna", UUID1, "call-1@host", 7)
    assert all(c.isalnum() or c in "-_" for c in token)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"anna" not in raw and b"f81d4fae" not in raw and b"call-1" not in raw
    opened = signer.open(token)
    assert opened is not None and (opened.aor, opened.instance, opened.cseq) == ("anna", UUID1, 7)
    assert opened.matches(f'"<{UUID1}>"', "call-1@host", 7)
    assert opened.matches(f'"<{UUID1}>"', "call-1@host", 9)  # refreshed since: still valid
    assert not opened.matches(f'"<{UUID1}>"', "call-2@host", 9)  # re-registered (reboot)
    assert not opened.matches(f'"<{UUID2}>"', "call-1@host", 7)  # another instance
    # a new refresh gets a new token; the same registration the same one
    assert signer.make("anna", UUID1, "call-1@host", 8) != token
    assert signer.make("anna", UUID1, "call-1@host", 7) == token


def test_forged_altered_foreign_and_oversize_tokens_open_to_nothing() -> None:
    signer = TempGruuSigner(KEY)
    token = signer.make("anna", UUID1, "c", 1)
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    other = TempGruuSigner(b"t" * 32).make("anna", UUID1, "c", 1)
    for bad in (flipped, token[:-2], other, "", "!!!", "A" * 40, token + "A" * 700):
        assert signer.open(bad) is None, bad
    with pytest.raises(ValueError):
        TempGruuSigner(b"short")


# ---- the registrar's 200 ---------------------------------------------------------------------


def register(contacts: list[str], call_id: str = "c1", cseq: int = 1, gruu: bool = True) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 203.0.113.7:40123;branch=z9hG4bKg" + str(cseq),
        "From: <sip:anna@example.com>;tag=1",
        "To: <sip:anna@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
        *(f"Contact: {c}" for c in contacts),
        *(["Supported: path, gruu"] if gruu else []),
    ]
    r = parse(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(r, Request)
    return r


def make() -> tuple[Registrar, Gruus]:
    gruus = Gruus(DOMAIN, KEY)
    return Registrar(RegistrarSettings(), LocationService(), gruus=gruus), gruus


SRC = ("udp", "203.0.113.7", 40123)
TWO = [
    f'<sip:anna@203.0.113.7:40123>;+sip.instance="<{UUID1}>";reg-id=1',
    f'<sip:anna@203.0.113.7:40124>;+sip.instance="<{UUID2}>"',
]


def contacts(headers: list[tuple[str, str]]) -> dict[str, dict[str, str | None]]:
    out = {}
    for name, value in headers:
        if name == "Contact":
            a = parse_address(value)
            out[str(a.uri)] = a.params
    return out


def test_200_gives_each_instance_its_public_and_temporary_gruu() -> None:
    reg, gruus = make()
    r = reg.handle(register(TWO), "anna", SRC, 0.0)
    assert r.status == 200
    found = contacts(r.headers)
    one, two = found["sip:anna@203.0.113.7:40123"], found["sip:anna@203.0.113.7:40124"]
    assert one["pub-gruu"] == f'"sip:anna@{DOMAIN};gr={UUID1}"'
    assert two["pub-gruu"] == f'"sip:anna@{DOMAIN};gr={UUID2}"'
    assert one["+sip.instance"] == f'"<{UUID1}>"' and one["expires"] == "3600"
    temp = parse_uri((one["temp-gruu"] or "").strip('"'))
    assert temp.host == DOMAIN and temp.params == {"gr": None}
    assert temp.user is not None and temp.user.startswith(TEMP_PREFIX)
    assert one["temp-gruu"] != two["temp-gruu"]
    target = gruus.resolve(temp)
    assert not isinstance(target, tuple) and target.aor == "anna"
    [b1, b2] = sorted(reg.location.lookup("anna", 0.0), key=lambda b: b.contact)
    assert target.matches(b1) and not target.matches(b2)


def test_without_supported_gruu_or_instance_the_200_is_unchanged() -> None:
    reg, _ = make()
    r = reg.handle(register(TWO, gruu=False), "anna", SRC, 0.0)
    assert r.headers == [
        ("Contact", "<sip:anna@203.0.113.7:40123>;expires=3600"),
        ("Contact", "<sip:anna@203.0.113.7:40124>;expires=3600"),
    ]
    reg, _ = make()
    r = reg.handle(register(["<sip:anna@203.0.113.7:40125>"]), "anna", SRC, 0.0)
    assert [v for n, v in r.headers if n == "Contact"] == [
        "<sip:anna@203.0.113.7:40125>;expires=3600"
    ]


def test_gruu_params_follow_a_contact_uri_with_parameters_and_no_instance_twice() -> None:
    reg, gruus = make()
    tcp = f'<sip:anna@203.0.113.7:40123;transport=tcp;ob>;+sip.instance="<{UUID1}>"'
    r = reg.handle(register([tcp]), "anna", SRC, 0.0)
    [(_, value)] = [(n, v) for n, v in r.headers if n == "Contact"]
    params = parse_address(value).params
    assert parse_address(value).uri.params == {"transport": "tcp", "ob": None}
    assert params["pub-gruu"] == f'"sip:anna@{DOMAIN};gr={UUID1}"' and params["expires"]
    # a Contact the registrar already gave its +sip.instance does not get a second one
    echoed = f'<sip:anna@203.0.113.7:40123;transport=tcp;ob>;expires=60;+sip.instance="<{UUID1}>"'
    result = RegisterResult(200, "OK", [("Contact", echoed)], [], [])
    add_gruus(result, gruus, reg.location.lookup("anna", 0.0))
    assert result.headers[0][1].count("+sip.instance") == 1
    assert "pub-gruu=" in result.headers[0][1]


# ---- the proxy: a request for a GRUU reaches that device only ---------------------------------


def register_instance(net: Net, user: str, src: tuple[str, str, int], instance: str) -> Response:
    r = req("REGISTER", f"sip:{DOMAIN}", src, user, f"sip:{user}@{DOMAIN}")
    r.set("Contact", f'<sip:{user}@{src[1]}:{src[2]}>;+sip.instance="<{instance}>"')
    r.add("Supported", "gruu")
    [(challenge, _)] = net.send(r.serialize(), src)
    assert isinstance(challenge, Response) and challenge.status == 401
    [(ok, _)] = net.send(authorize(r, challenge, user).serialize(), src)
    assert isinstance(ok, Response) and ok.status == 200
    assert "gruu" in [t.strip() for v in ok.get_all("supported") for t in v.split(",")]
    return ok


def gruus_of(ok: Response, src: tuple[str, str, int]) -> tuple[str, str]:
    """The public and temporary GRUU the 200 gives the device at `src`."""
    [a] = [
        a
        for a in map(parse_address, ok.get_all("contact"))
        if (a.uri.host, a.uri.port) == (src[1], src[2])
    ]
    return (a.params["pub-gruu"] or "").strip('"'), (a.params["temp-gruu"] or "").strip('"')


def call(net: Net, ruri: str, caller: str = "alice") -> list:
    r = req("INVITE", ruri, ALICE, caller, ruri)
    [(challenge, _)] = net.send(r.serialize(), ALICE)
    assert isinstance(challenge, Response) and challenge.status == 407
    net.send(ack_for(r, challenge).serialize(), ALICE)
    return net.send(authorize(r, challenge, caller, "Proxy-Authorization").serialize(), ALICE)


def bobs_two_phones() -> tuple[Net, Response, Response]:
    net = Net()
    register_instance(net, "alice", ALICE, "urn:uuid:00000000-0000-4000-8000-00000000a11c")
    return (
        net,
        register_instance(net, "bob", BOB1, UUID1),
        register_instance(net, "bob", BOB2, UUID2),
    )


def test_public_and_temporary_gruu_ring_only_their_device_the_aor_rings_both() -> None:
    net, ok1, ok2 = bobs_two_phones()
    pub2, temp2 = gruus_of(ok2, BOB2)
    assert pub2 == f"sip:bob@{DOMAIN};gr={UUID2}"
    for ruri in (pub2, temp2):
        out = call(net, ruri)
        assert [m.status for m in only(out, Response)] == [100]
        assert [d for m, d in out if isinstance(m, Request)] == [BOB2], ruri
    out = call(net, gruus_of(ok1, BOB1)[0])
    assert [d for m, d in out if isinstance(m, Request)] == [BOB1]
    out = call(net, f"sip:bob@{DOMAIN}")
    assert {d for m, d in out if isinstance(m, Request)} == {BOB1, BOB2}


def test_forged_foreign_unknown_and_oversize_gruus_reach_nobody() -> None:
    net, ok1, _ = bobs_two_phones()
    _, temp1 = gruus_of(ok1, BOB1)
    user = parse_uri(temp1).user or ""
    forged = temp1.replace(user, user[:-3] + ("AAA" if user[-3:] != "AAA" else "BBB"))
    cases = {
        forged: 404,  # a temporary GRUU the server did not make
        f"sip:{TEMP_PREFIX}{'A' * 80}@{DOMAIN};gr": 404,
        f"sip:bob@{DOMAIN};gr": 404,  # `gr` without instance on a user's address
        f"sip:bob@{DOMAIN};gr=urn:uuid:11111111-2222-4333-8444-555555555555": 480,  # not registered
        # bob's instance under alice's address: alice has no such device
        f"sip:alice@{DOMAIN};gr={UUID1}": 480,
        f"sip:nobody@{DOMAIN};gr={UUID1}": 404,
        f"sip:bob@{DOMAIN};gr=urn:{'x' * 900}": 400,
        f"sip:bob@{DOMAIN};gr=http://{DOMAIN}": 404,
    }
    for ruri, status in cases.items():
        out = call(net, ruri)
        assert [m.status for m in only(out, Response)] == [status], ruri
        assert [d for m, d in out if isinstance(m, Request) and m.method == "INVITE"] == []


def test_temporary_gruu_ends_when_the_device_registers_anew() -> None:
    """A phone that rebooted registers under a new Call-ID: its earlier temporary GRUUs end
    (480), the public GRUU goes on."""
    net, ok1, _ = bobs_two_phones()
    pub1, temp1 = gruus_of(ok1, BOB1)
    register_instance(net, "bob", BOB1, UUID1)  # (req() gives every REGISTER a new Call-ID)
    assert [m.status for m in only(call(net, temp1), Response)] == [480]
    out = call(net, pub1)
    assert [d for m, d in out if isinstance(m, Request)] == [BOB1]


def test_a_phone_that_answers_with_its_gruu_as_contact_gets_the_in_dialog_requests() -> None:
    """RFC 5627 §4.2: a phone puts its GRUU into the Contact of its dialogs. The GRUU names
    no address, so the answer's Contact gets the signed alias like any NATed Contact, and the
    caller's BYE to it reaches the phone, its Request-URI the GRUU again."""
    net, ok1, _ = bobs_two_phones()
    pub1, _ = gruus_of(ok1, BOB1)
    out = call(net, pub1)
    [(fwd, dest)] = [(m, d) for m, d in out if isinstance(m, Request)]
    assert dest == BOB1
    out = net.send(answer(fwd, 200, tag="b1", contact=pub1).serialize(), BOB1)
    [ok] = only(out, Response)
    contact = parse_address(ok.get("contact") or "").uri
    assert contact.params.get("gr") == UUID1 and contact.params.get("alias")
    bye = Request(
        "BYE", str(contact),
        [["via", "Via", f"SIP/2.0/UDP 127.0.0.1:{ALICE[2]};branch=z9hG4bKbye1;rport"],
         ["route", "Route", ok.get("record-route") or ""],
         ["from", "From", fwd.get("from") or ""],
         ["to", "To", ok.get("to") or ""],
         ["call-id", "Call-ID", fwd.call_id], ["cseq", "CSeq", "9 BYE"],
         ["max-forwards", "Max-Forwards", "70"]],
    )  # fmt: skip
    out = net.send(bye.serialize(), ALICE)
    [(fwd_bye, dest)] = [(m, d) for m, d in out if isinstance(m, Request) and m.method == "BYE"]
    assert dest == BOB1 and fwd_bye.uri == pub1


def test_the_server_says_it_supports_gruu_and_takes_a_register_that_requires_it() -> None:
    net = Net()
    r = req("OPTIONS", f"sip:{DOMAIN}", ALICE, "alice", f"sip:{DOMAIN}")
    [(ok, _)] = net.send(r.serialize(), ALICE)
    assert isinstance(ok, Response) and ok.status == 200
    assert "gruu" in [t.strip() for t in (ok.get("supported") or "").split(",")]
    r = req("REGISTER", f"sip:{DOMAIN}", BOB1, "bob", f"sip:bob@{DOMAIN}")
    r.set("Contact", f'<sip:bob@{BOB1[1]}:{BOB1[2]}>;+sip.instance="<{UUID1}>"')
    r.add("Supported", "gruu")
    r.add("Require", "gruu")  # (RFC 5627 §4.1 lets a UA insist)
    [(challenge, _)] = net.send(r.serialize(), BOB1)
    assert isinstance(challenge, Response) and challenge.status == 401
    [(ok, _)] = net.send(authorize(r, challenge, "bob").serialize(), BOB1)
    assert isinstance(ok, Response) and ok.status == 200
    assert "pub-gruu=" in (ok.get("contact") or "")
