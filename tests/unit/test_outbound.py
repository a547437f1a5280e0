"""RFC 5626 outbound at the registrar and the proxy, sans-IO: Require/Flow-Timer and 439 for
REGISTERs, one flow per device for requests (the next one when it fails), and bindings that go
with their connection."""

from __future__ import annotations

from test_core import ALICE, DOMAIN, Net, answer, authorize, invite, only

from heimbuero.services.location import LocationService
from heimbuero.services.registrar import Registrar, RegistrarSettings
from heimbuero.sip.message import Request, Response, parse
from heimbuero.sip.peer import Peer

INSTANCE = '"<urn:uuid:00000000-0000-1000-8000-00a0c91e6bf6>"'
EDGE_OB = "<sip:edge.example.net;lr;ob>"
EDGE = "<sip:edge.example.net;lr>"


def register_req(
    contact: str,
    *,
    source: tuple[str, str, int] = ("tcp", "198.51.100.7", 50001),
    supported: str | None = "outbound, path",
    path: str | None = None,
    via: str | None = None,
    call_id: str = "reg1",
    cseq: int = 1,
    user: str = "bob",
) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        *([f"Via: {via}"] if via else []),
        f"Via: SIP/2.0/{source[0].upper()} {source[1]}:{source[2]};branch=z9hG4bKo{cseq}{call_id}",
        f"From: <sip:{user}@{DOMAIN}>;tag=1",
        f"To: <sip:{user}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
        f"Contact: {contact}",
    ]
    if supported is not None:
        lines.append(f"Supported: {supported}")
    if path is not None:
        lines.append(f"Path: {path}")
    r = parse(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(r, Request)
    return r


def flow_contact(reg_id: int, port: int = 50001) -> str:
    return (
        f"<sip:bob@198.51.100.7:{port};transport=tcp;ob>;reg-id={reg_id};+sip.instance={INSTANCE}"
    )


def make(flow_timer: int = 120) -> tuple[Registrar, LocationService]:
    loc = LocationService()
    return Registrar(RegistrarSettings(flow_timer=flow_timer), loc), loc


def test_direct_outbound_register_gets_require_and_flow_timer() -> None:
    reg, loc = make()
    src = Peer("tcp", "198.51.100.7", 50001)
    r = reg.handle(register_req(flow_contact(1)), "bob", src, 0.0)
    assert r.status == 200
    assert ("Require", "outbound") in r.headers and ("Flow-Timer", "120") in r.headers
    [b] = loc.lookup("bob", 0.0)
    assert (b.reg_id, b.instance, b.received) == (1, INSTANCE, src)


def test_flow_timer_zero_is_not_told() -> None:
    reg, _ = make(flow_timer=0)
    r = reg.handle(register_req(flow_contact(1)), "bob", Peer("tcp", "198.51.100.7", 5), 0.0)
    assert ("Require", "outbound") in r.headers
    assert not [h for h in r.headers if h[0] == "Flow-Timer"]


def test_through_an_edge_with_ob_outbound_without_flow_timer() -> None:
    reg, loc = make()
    edge = Peer("udp", "192.0.2.50", 5060)
    r = reg.handle(register_req(flow_contact(1), path=EDGE_OB), "bob", edge, 0.0)
    assert r.status == 200 and ("Require", "outbound") in r.headers
    assert not [h for h in r.headers if h[0] == "Flow-Timer"]  # (the edge keeps the flow)
    assert loc.lookup("bob", 0.0)[0].reg_id == 1


def test_through_an_edge_without_ob_is_439() -> None:
    reg, loc = make()
    edge = Peer("udp", "192.0.2.50", 5060)
    r = reg.handle(register_req(flow_contact(1), path=EDGE), "bob", edge, 0.0)
    assert (r.status, r.reason) == (439, "First Hop Lacks Outbound Support")
    assert loc.lookup("bob", 0.0) == []
    # a UA that does not ask for outbound registers through it as ever (reg-id ignored)
    r = reg.handle(register_req(flow_contact(1), path=EDGE, supported="path"), "bob", edge, 0.0)
    assert r.status == 200 and ("Require", "outbound") not in r.headers
    assert loc.lookup("bob", 0.0)[0].reg_id is None


def test_through_a_proxy_that_adds_no_path_is_439() -> None:
    reg, loc = make()
    proxy = Peer("udp", "192.0.2.50", 5060)
    top = "SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKp1"
    r = reg.handle(register_req(flow_contact(1), via=top), "bob", proxy, 0.0)
    assert (r.status, r.reason) == (439, "First Hop Lacks Outbound Support")
    assert loc.lookup("bob", 0.0) == []


def test_reg_id_without_supported_outbound_is_an_ordinary_binding() -> None:
    reg, loc = make()
    src = Peer("tcp", "198.51.100.7", 50001)
    r = reg.handle(register_req(flow_contact(1), supported=None), "bob", src, 0.0)
    assert r.status == 200 and not [h for h in r.headers if h[0] in ("Require", "Flow-Timer")]
    assert loc.lookup("bob", 0.0)[0].reg_id is None
    # neither an instance without reg-id
    plain = f"<sip:bob@198.51.100.7:50001;transport=tcp>;+sip.instance={INSTANCE}"
    r = reg.handle(register_req(plain, call_id="r2"), "bob", src, 0.0)
    assert ("Require", "outbound") not in r.headers


def test_a_new_flow_of_the_same_reg_id_replaces_the_old_one_other_reg_ids_stay() -> None:
    reg, loc = make()
    first = Peer("tcp", "198.51.100.7", 50001)
    reg.handle(register_req(flow_contact(1, 50001)), "bob", first, 0.0)
    second = Peer("tcp", "198.51.100.7", 50002)
    reg.handle(register_req(flow_contact(2, 50002), call_id="r2"), "bob", second, 1.0)
    third = Peer("tcp", "198.51.100.7", 50003)
    r = reg.handle(register_req(flow_contact(1, 50003), call_id="r3"), "bob", third, 2.0)
    assert [b.received for b in r.removed] == [first]
    assert {b.received for b in loc.lookup("bob", 2.0)} == {second, third}


def test_closed_connection_removes_its_outbound_bindings_only() -> None:
    reg, loc = make()
    flow = Peer("tcp", "198.51.100.7", 50001)
    reg.handle(register_req(flow_contact(1)), "bob", flow, 0.0)
    plain = "<sip:bob@198.51.100.7:50001;transport=tcp>"
    reg.handle(register_req(plain, call_id="r2", user="carl"), "carl", flow, 0.0)
    gone = loc.remove_flow(flow)
    assert [b.aor for b in gone] == ["bob"]
    assert loc.lookup("bob", 0.0) == [] and len(loc.lookup("carl", 0.0)) == 1
    assert loc.remove_flow(flow) == []  # (once)
    assert loc.remove_flow(Peer("tcp", "198.51.100.7", 1)) == []


# ---- the proxy, through the SIP core ------------------------------------------------------

FLOW1 = ("tcp", "127.0.0.1", 41001)
FLOW2 = ("tcp", "127.0.0.1", 41002)
OTHER = ("udp", "127.0.0.1", 41003)  # another device of bob's, without outbound


def core_register(net: Net, src: tuple[str, str, int], contact: str, call_id: str) -> Response:
    r = register_req(contact, source=src, call_id=call_id)
    [(challenge, _)] = net.send(r.serialize(), src)
    assert isinstance(challenge, Response) and challenge.status == 401
    [(ok, _)] = net.send(authorize(r, challenge, "bob").serialize(), src)
    assert isinstance(ok, Response)
    return ok


def two_flows(net: Net) -> None:
    ok = core_register(net, FLOW1, flow_contact(1, FLOW1[2]), "f1")
    assert ok.status == 200 and ok.get("require") == "outbound"
    assert ok.get("flow-timer") == "120" and "outbound" in (ok.get("supported") or "")
    net.now += 10  # the second flow registers later: it is the one requests take
    ok = core_register(net, FLOW2, flow_contact(2, FLOW2[2]), "f2")
    assert ok.status == 200
    ok = core_register(net, OTHER, "<sip:bob@127.0.0.1:41003>", "o1")
    assert ok.status == 200 and ok.get("require") is None
    assert len(net.core.location.lookup("bob", net.now)) == 3


def test_invite_rings_one_flow_per_instance_and_fails_over_on_430() -> None:
    net = Net()
    two_flows(net)
    _, out = invite(net, "alice", "bob", ALICE)
    fwds = {dest: m for m, dest in out if isinstance(m, Request) and m.method == "INVITE"}
    assert set(fwds) == {FLOW2, OTHER}  # the device once (its latest flow), the other device
    out = net.send(answer(fwds[FLOW2], 430, tag="t2").serialize(), FLOW2)
    again = [(m, d) for m, d in out if isinstance(m, Request) and m.method == "INVITE"]
    assert [d for _, d in again] == [FLOW1]  # RFC 5626 §5.3: the device's next flow
    assert again[0][0].uri == "sip:bob@198.51.100.7:41001;transport=tcp;ob"  # its Contact
    assert not [r for r in only(out, Response) if r.status >= 200]  # the call goes on


def test_flow_closed_removes_the_binding_and_requests_take_the_other_flow() -> None:
    net = Net()
    two_flows(net)
    net.core.flow_closed(Peer(*FLOW2), net.now)
    assert {b.received for b in net.core.location.lookup("bob", net.now)} == {FLOW1, OTHER}
    _, out = invite(net, "alice", "bob", ALICE)
    fwds = {dest for m, dest in out if isinstance(m, Request) and m.method == "INVITE"}
    assert fwds == {FLOW1, OTHER}


def test_bad_reg_id_is_400() -> None:
    reg, loc = make()
    src = Peer("tcp", "198.51.100.7", 50001)
    for bad in ("0", "x1", "2147483648", "99999999999999999999", "\u00b2"):
        contact = (
            f"<sip:bob@198.51.100.7:50001;transport=tcp>;reg-id={bad};+sip.instance={INSTANCE}"
        )
        r = reg.handle(register_req(contact), "bob", src, 0.0)
        assert r.status == 400 and r.reason.startswith("Bad reg-id"), bad
    assert loc.lookup("bob", 0.0) == []


def test_another_users_instance_and_reg_id_replace_nothing_of_his() -> None:
    reg, loc = make()
    anna = Peer("tcp", "198.51.100.7", 50001)
    reg.handle(register_req(flow_contact(1), user="anna"), "anna", anna, 0.0)
    # bob names anna's instance and reg-id (forged): his own binding, hers stays
    mallory = Peer("tcp", "203.0.113.66", 40000)
    contact = f"<sip:bob@203.0.113.66:40000;transport=tcp>;reg-id=1;+sip.instance={INSTANCE}"
    r = reg.handle(register_req(contact, call_id="m1"), "bob", mallory, 1.0)
    assert r.status == 200 and r.removed == []
    assert [b.received for b in loc.lookup("anna", 1.0)] == [anna]
    # and closing bob's connection removes only bob's
    assert [b.aor for b in loc.remove_flow(mallory)] == ["bob"]
    assert len(loc.lookup("anna", 1.0)) == 1
