"""The SIP trust boundary, sans-IO: what may skip authentication (only dialogs the server
signed), where requests may go (never where a request says on its own: Route, alias, foreign
Request-URI), whose word identity headers are, and what a carrier trunk's trust covers.

The same attacks run against the real server in tests/e2e/test_trust.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import test_calls as c  # routed calls on the demo-like directory (same folder)
import test_core as t  # the sans-IO harness of the core tests (same folder)

from heimbuero.domain.model import Caller, Rule, Step, TrunkInbound, When
from heimbuero.services.calls import CallRouting
from heimbuero.sip.auth import ha1
from heimbuero.sip.message import Request, Response, parse_address

TRUNK = c.TRUNK  # ("udp", "127.0.0.1", 5090)
MALLORY = ("udp", "127.0.0.1", 40666)
PREMIUM = "+4919001234"
IDENTITY = [
    "P-Asserted-Identity: <sip:+4930999999@carrier.example>",
    "P-Preferred-Identity: <sip:+4930999999@carrier.example>",
    "Remote-Party-ID: <sip:+4930999999@carrier.example>;party=calling",
    "Diversion: <sip:+4930999999@carrier.example>;reason=unconditional",
    "History-Info: <sip:+4930999999@carrier.example>;index=1",
    "Privacy: none",
]
MOBIL = Rule("Mobil", (Step((f"external:{c.MOBILE}",), 20),))


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> t.Net:
    monkeypatch.setitem(t.PASSWORDS, "anna", "Sonne-Regen-43")
    monkeypatch.setitem(t.PASSWORDS, "mueller", "Hobel-Span-1987")
    n = t.Net()
    n.core.calls = CallRouting(n.core, c.Recorder(n.core.events))
    n.core.calls.update(c.directory(MOBIL), [])
    t.register(n, "mueller", c.MUELLER)
    t.register(n, "anna", c.ANNA)
    return n


def statuses(out: list) -> list[int]:
    return [m.status for m, _ in out if isinstance(m, Response)]


def to_carrier(out: list) -> list[Request]:
    return [m for m, d in out if isinstance(m, Request) and d[1:] == TRUNK[1:]]


def forged(method: str, ruri: str, route: str | None, call_id: str = "forged-1") -> Request:
    extra = [f"Route: {route}"] if route else []
    return t.req(method, ruri, MALLORY, "anna", ruri, call_id=call_id, to_tag="x1", extra=extra)


def answered_call(net: t.Net) -> tuple[Request, Request, Response, tuple[str, str, int]]:
    """anna calls mueller (authenticated); mueller answers. (INVITE, forwarded, 200, dest)."""
    inv, out = t.invite(net, "anna", "mueller", c.ANNA)
    [(fwd, dest)] = [(m, d) for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    out = net.send(t.answer(fwd, 200, tag="mtag", contact="sip:mueller@10.0.0.7:5060").serialize(),
                   dest)  # fmt: skip
    [ok] = [m for m, _ in out if isinstance(m, Response) and m.status == 200]
    return inv, fwd, ok, dest


# ---------------------------------------------------------------------- in-dialog forgery


@pytest.mark.parametrize(
    "route",
    [
        "<sip:127.0.0.1:5060;lr>",  # looks in-dialog: Route naming us plus a To tag
        "<sip:127.0.0.1:5060;lr;hbd=AAAA.BBBBBBBBBBBBBBBB>",  # a made-up token
    ],
)
def test_forged_in_dialog_invite_toward_the_carrier_is_challenged(net: t.Net, route: str) -> None:
    out = net.send(forged("INVITE", f"sip:{PREMIUM}@127.0.0.1:5090", route).serialize(), MALLORY)
    assert statuses(out) == [407]
    assert to_carrier(out) == []


def test_forged_in_dialog_message_to_an_internal_tcp_port_opens_nothing(net: t.Net) -> None:
    r = forged("MESSAGE", "sip:x@127.0.0.1:6379;transport=tcp", "<sip:127.0.0.1:5060;lr>")
    out = net.send(r.serialize(), MALLORY)
    assert statuses(out) == [407]
    assert [d for m, d in out if isinstance(m, Request)] == []


def test_token_of_a_real_dialog_reaches_only_its_parties(net: t.Net) -> None:
    inv, fwd, ok, mueller = answered_call(net)
    rr = ok.get("record-route") or ""
    assert ";hbd=" in rr
    # The caller replays its own dialog's token with the carrier as Request-URI: refused.
    r = t.req("INVITE", f"sip:{PREMIUM}@127.0.0.1:5090", c.ANNA, "anna", f"sip:{PREMIUM}@x",
              call_id=inv.call_id, to_tag="mtag", extra=[f"Route: {rr}"])  # fmt: skip
    out = net.send(r.serialize(), c.ANNA)
    assert statuses(out) == [100, 403] or statuses(out) == [403]
    assert to_carrier(out) == []
    # The token does not carry over to another Call-ID.
    r = t.req("BYE", "sip:mueller@10.0.0.7:5060", c.ANNA, "anna", "sip:mueller@x",
              call_id="another", to_tag="mtag", extra=[f"Route: {rr}"])  # fmt: skip
    assert statuses(net.send(r.serialize(), c.ANNA)) == [407]


def test_bye_both_ways_through_the_signed_record_route(net: t.Net) -> None:
    inv, fwd, ok, mueller = answered_call(net)
    target = parse_address(ok.get("contact") or "").uri
    assert (target.params.get("alias") or "").startswith(f"{mueller[1]}~{mueller[2]}~udp~")
    # callee to caller: From and To swapped, Route from the INVITE's Record-Route
    bye = Request(
        "BYE", str(parse_address(fwd.get("contact") or "").uri),
        [["via", "Via", f"SIP/2.0/UDP 127.0.0.1:{mueller[2]};branch=z9hG4bKbye1;rport"],
         ["route", "Route", fwd.get("record-route") or ""],
         ["from", "From", f"<sip:mueller@{t.DOMAIN}>;tag=mtag"],
         ["to", "To", inv.get("from") or ""], ["call-id", "Call-ID", inv.call_id],
         ["cseq", "CSeq", "1 BYE"], ["max-forwards", "Max-Forwards", "70"]],
    )  # fmt: skip
    out = net.send(bye.serialize(), mueller)
    assert [d for m, d in out if isinstance(m, Request) and m.method == "BYE"] == [c.ANNA]
    # caller to callee
    bye2 = t.req("BYE", str(target), c.ANNA, "anna", "sip:mueller@x", call_id=inv.call_id,
                 cseq=9, to_tag="mtag", extra=[f"Route: {ok.get('record-route')}"])  # fmt: skip
    out = net.send(bye2.serialize(), c.ANNA)
    assert [d for m, d in out if isinstance(m, Request) and m.method == "BYE"] == [mueller]


def test_bare_ack_is_never_relayed(net: t.Net) -> None:
    for route in (None, "<sip:127.0.0.1:5060;lr>"):
        ack = forged("ACK", f"sip:{PREMIUM}@127.0.0.1:5090", route)
        assert net.send(ack.serialize(), MALLORY) == []
    inv, fwd, ok, mueller = answered_call(net)
    ack = t.req(
        "ACK",
        f"sip:{PREMIUM}@127.0.0.1:5090",
        c.ANNA,
        "anna",
        "sip:m@x",
        call_id=inv.call_id,
        to_tag="mtag",
        extra=[f"Route: {ok.get('record-route')}"],
    )
    assert net.send(ack.serialize(), c.ANNA) == []  # a real token, but not a party: dropped


# ---------------------------------------------------------------------- alias


def test_alias_in_the_request_uri_does_not_choose_the_destination(net: t.Net) -> None:
    r = t.req("INVITE", f"sip:{PREMIUM}@{t.DOMAIN};alias=127.0.0.1~5090~udp", c.ANNA, "anna",
              f"sip:{PREMIUM}@{t.DOMAIN}")  # fmt: skip
    [(challenge, _)] = net.send(r.serialize(), c.ANNA)
    out = net.send(t.authorize(r, challenge, "anna", "Proxy-Authorization").serialize(), c.ANNA)
    assert to_carrier(out) == []
    assert statuses(out)[-1] in (403, 404)


def test_an_alias_the_phone_wrote_itself_is_replaced_by_a_signed_one(net: t.Net) -> None:
    r = t.req("INVITE", f"sip:mueller@{t.DOMAIN}", c.ANNA, "anna", f"sip:mueller@{t.DOMAIN}",
              contact="sip:anna@10.0.0.5:5060;alias=127.0.0.1~5090~udp")  # fmt: skip
    [(challenge, _)] = net.send(r.serialize(), c.ANNA)
    out = net.send(t.authorize(r, challenge, "anna", "Proxy-Authorization").serialize(), c.ANNA)
    [fwd] = [m for m, _ in out if isinstance(m, Request)]
    alias = parse_address(fwd.get("contact") or "").uri.params.get("alias") or ""
    assert alias.startswith(f"127.0.0.1~{c.ANNA[2]}~udp~")


# ---------------------------------------------------------------------- identity


def test_callers_identity_headers_never_reach_the_callee(net: t.Net) -> None:
    r = t.req("INVITE", f"sip:mueller@{t.DOMAIN}", c.ANNA, "anna", f"sip:mueller@{t.DOMAIN}",
              extra=IDENTITY)  # fmt: skip
    [(challenge, _)] = net.send(r.serialize(), c.ANNA)
    out = net.send(t.authorize(r, challenge, "anna", "Proxy-Authorization").serialize(), c.ANNA)
    [fwd] = [m for m, _ in out if isinstance(m, Request)]
    for h in IDENTITY:
        assert fwd.get(h.split(":")[0]) is None, h


def test_only_the_servers_identity_goes_to_the_carrier(net: t.Net) -> None:
    r = t.req("INVITE", f"sip:{c.NUMBER}@{t.DOMAIN}", c.ANNA, "anna", f"sip:{c.NUMBER}@{t.DOMAIN}",
              extra=IDENTITY)  # fmt: skip
    [(challenge, _)] = net.send(r.serialize(), c.ANNA)
    out = net.send(t.authorize(r, challenge, "anna", "Proxy-Authorization").serialize(), c.ANNA)
    [fwd] = to_carrier(out)
    assert fwd.get_all("p-asserted-identity") == [f"<sip:anna@{t.DOMAIN}>"]
    assert [d.split(";")[0] for d in fwd.get_all("diversion")] == [f"<sip:{c.NUMBER}@{t.DOMAIN}>"]
    assert all("carrier.example" not in v for v in fwd.get_all("history-info"))
    for name in ("p-preferred-identity", "remote-party-id", "privacy"):
        assert fwd.get(name) is None, name


def test_carriers_identity_stays_for_our_users(net: t.Net) -> None:
    net.core.calls.update(c.directory(c.WERKTAG), [])  # type: ignore[union-attr]
    r = t.req("INVITE", f"sip:{c.NUMBER}@{t.DOMAIN}", TRUNK, "+4930555123",
              f"sip:{c.NUMBER}@{t.DOMAIN}", extra=IDENTITY[:1])  # fmt: skip
    out = net.send(r.serialize(), TRUNK)
    [fwd] = [m for m, d in out if isinstance(m, Request) and d == c.MUELLER]
    assert fwd.get("p-asserted-identity") == "<sip:+4930999999@carrier.example>"


@pytest.mark.parametrize(
    ("from_user", "asserted", "rule_hit"),
    [
        ("+4930999999", None, True),  # no P-Asserted-Identity: the From is all there is
        ("+4930555123", "<sip:+4930999999@carrier.example>", True),  # the carrier vouches
        ("+4930999999", "<sip:+4930555123@carrier.example>", False),  # the From claims it
        ("+4930999999", "<sip:anonymous@anonymous.invalid>", False),  # asserted: no number
    ],
)
def test_caller_conditions_see_the_number_the_carrier_asserts(
    net: t.Net, from_user: str, asserted: str | None, rule_hit: bool
) -> None:
    vip_line = Rule("Chef", (c.TEAM_STEP,), When(caller=Caller(numbers=("+4930999999",))))
    net.core.calls.update(c.directory(vip_line, c.WERKTAG), [])  # type: ignore[union-attr]
    extra = [f"P-Asserted-Identity: {asserted}"] if asserted else []
    r = t.req("INVITE", f"sip:{c.NUMBER}@{t.DOMAIN}", TRUNK, from_user,
              f"sip:{c.NUMBER}@{t.DOMAIN}", extra=extra)  # fmt: skip
    out = net.send(r.serialize(), TRUNK)
    rang = {d for m, d in out if isinstance(m, Request) and m.method == "INVITE"}
    # "Chef" rings the team (anna); "Werktag" rings the owner mueller first
    assert rang == ({c.ANNA} if rule_hit else {c.MUELLER})


# ---------------------------------------------------------------------- trunk trust


def test_trusted_carrier_may_not_relay_or_act_as_a_user(net: t.Net) -> None:
    r = t.req("INVITE", f"sip:{PREMIUM}@198.51.100.1", TRUNK, "carrier", f"sip:{PREMIUM}@x",
              extra=["Route: <sip:198.51.100.1;lr>"])  # fmt: skip
    assert statuses(net.send(r.serialize(), TRUNK)) == [407]
    r = t.req("INVITE", f"sip:{PREMIUM}@198.51.100.1", TRUNK, "carrier", f"sip:{PREMIUM}@x")
    assert statuses(net.send(r.serialize(), TRUNK)) == [407]
    r = t.req("MESSAGE", f"sip:mueller@{t.DOMAIN}", TRUNK, "carrier", f"sip:mueller@{t.DOMAIN}")
    out = net.send(r.serialize(), TRUNK)
    assert statuses(out) == [407] and [m for m, _ in out if isinstance(m, Request)] == []


def _with_inbound(net: t.Net, inbound: TrunkInbound) -> None:
    d = c.directory(c.WERKTAG)
    trunk = replace(d.trunks["carrier"], inbound=inbound)
    net.core.calls.update(replace(d, trunks={"carrier": trunk}), [])  # type: ignore[union-attr]


def test_address_tcp_trunk_is_trusted_over_tcp_only(net: t.Net) -> None:
    _with_inbound(net, TrunkInbound("address-tcp"))
    r = t.req("INVITE", f"sip:{c.NUMBER}@{t.DOMAIN}", TRUNK, "+4930555123",
              f"sip:{c.NUMBER}@{t.DOMAIN}")  # fmt: skip
    assert statuses(net.send(r.serialize(), TRUNK)) == [407]  # a UDP source can be forged
    tcp = ("tcp", TRUNK[1], TRUNK[2])
    r = t.req("INVITE", f"sip:{c.NUMBER}@{t.DOMAIN}", tcp, "+4930555123",
              f"sip:{c.NUMBER}@{t.DOMAIN}")  # fmt: skip
    out = net.send(r.serialize(), tcp)
    assert statuses(out) == [100] and [d for m, d in out if isinstance(m, Request)] == [c.MUELLER]


def test_digest_trunk_answers_our_challenge(net: t.Net, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = "Carrier-Secret-9"
    _with_inbound(net, TrunkInbound("digest", "carrier-in", ha1("MD5", "carrier-in", t.DOMAIN, pw),
                                    ha1("SHA-256", "carrier-in", t.DOMAIN, pw)))  # fmt: skip
    r = t.req("INVITE", f"sip:{c.NUMBER}@{t.DOMAIN}", TRUNK, "carrier-in",
              f"sip:{c.NUMBER}@{t.DOMAIN}")  # fmt: skip
    [(challenge, _)] = net.send(r.serialize(), TRUNK)
    assert challenge.status == 407  # the source address alone is not enough
    with monkeypatch.context() as m:  # the carrier knows the password; no user of ours has it
        m.setitem(t.PASSWORDS, "carrier-in", pw)
        authed = t.authorize(r, challenge, "carrier-in", "Proxy-Authorization")
    assert net.core.users.get("carrier-in", net.now) is None
    out = net.send(authed.serialize(), TRUNK)
    assert statuses(out) == [100] and [d for m, d in out if isinstance(m, Request)] == [c.MUELLER]
