"""The registrar's rules (RFC 3261 §10.3) on the location service, without sockets."""

from heimbuero.services.location import LocationService
from heimbuero.services.registrar import Registrar, RegistrarSettings, path_hop
from heimbuero.sip.message import Request, parse, parse_uri
from heimbuero.sip.peer import Peer

SRC = ("udp", "203.0.113.7", 40123)


def register(
    contacts: list[str], cseq: int = 1, call_id: str = "c1", expires: str | None = None
) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKr" + str(cseq),
        "From: <sip:anna@example.com>;tag=1",
        "To: <sip:anna@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    req = parse(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(req, Request)
    return req


def make() -> tuple[Registrar, LocationService]:
    loc = LocationService()
    return Registrar(
        RegistrarSettings(
            min_expires=60, max_expires=3600, default_expires=600, max_contacts_per_aor=3
        ),
        loc,
    ), loc


def test_binding_stores_source_address_for_nat() -> None:
    reg, loc = make()
    r = reg.handle(register(["<sip:anna@192.168.1.20:5060>"]), "anna", SRC, 1000.0)
    assert r.status == 200
    [b] = loc.lookup("anna", 1000.0)
    assert b.received == SRC
    assert b.contact == "sip:anna@192.168.1.20:5060"
    assert b.expires_at == 1600.0
    assert r.headers == [("Contact", "<sip:anna@192.168.1.20:5060>;expires=600")]


def test_several_contacts_q_values_and_listing() -> None:
    reg, loc = make()
    reg.handle(register(["<sip:a@10.0.0.1>;q=0.5"]), "anna", SRC, 0.0)
    r = reg.handle(register(["<sip:a@10.0.0.2>;q=1.0"], cseq=1, call_id="c2"), "anna", SRC, 0.0)
    assert [b.contact for b in loc.lookup("anna", 0.0)] == ["sip:a@10.0.0.2", "sip:a@10.0.0.1"]
    assert len(r.headers) == 2 and ";q=0.5" in r.headers[1][1]


def test_interval_too_brief() -> None:
    reg, loc = make()
    r = reg.handle(register(["<sip:a@10.0.0.1>"], expires="30"), "anna", SRC, 0.0)
    assert (r.status, r.headers) == (423, [("Min-Expires", "60")])
    assert loc.lookup("anna", 0.0) == []


def test_expires_capped_and_zero_removes() -> None:
    reg, loc = make()
    reg.handle(register(["<sip:a@10.0.0.1>;expires=99999"]), "anna", SRC, 0.0)
    assert loc.lookup("anna", 0.0)[0].expires_at == 3600
    r = reg.handle(register(["<sip:a@10.0.0.1>"], cseq=2, expires="0"), "anna", SRC, 1.0)
    assert r.status == 200 and r.headers == [] and len(r.removed) == 1
    assert loc.lookup("anna", 1.0) == []


def test_star_unregisters_all_only_with_expires_zero() -> None:
    reg, loc = make()
    reg.handle(register(["<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>"]), "anna", SRC, 0.0)
    assert reg.handle(register(["*"], cseq=2), "anna", SRC, 0.0).status == 400
    r = reg.handle(register(["*"], cseq=3, expires="0"), "anna", SRC, 0.0)
    assert r.status == 200 and len(r.removed) == 2 and loc.lookup("anna", 0.0) == []


def test_out_of_order_cseq_is_refused() -> None:
    reg, loc = make()
    reg.handle(register(["<sip:a@10.0.0.1>"], cseq=5), "anna", SRC, 0.0)
    r = reg.handle(register(["<sip:a@10.0.0.1>"], cseq=4, expires="0"), "anna", SRC, 0.0)
    assert r.status == 400
    assert len(loc.lookup("anna", 0.0)) == 1


def test_too_many_contacts() -> None:
    reg, loc = make()
    r = reg.handle(register([f"<sip:a@10.0.0.{i}>" for i in range(4)]), "anna", SRC, 0.0)
    assert r.status == 403 and loc.lookup("anna", 0.0) == []


def test_expiry_removes_binding_and_reports_it() -> None:
    reg, loc = make()
    reg.handle(register(["<sip:a@10.0.0.1>"], expires="60"), "anna", SRC, 0.0)
    assert loc.next_expiry() == 60.0
    assert loc.expire(59.0) == []
    gone = loc.expire(60.0)
    assert [b.contact for b in gone] == ["sip:a@10.0.0.1"]
    assert loc.lookup("anna", 60.0) == []
    ups, dels = loc.take_changes()
    assert ups == [] and dels == [("anna", "sip:a@10.0.0.1")]


def test_refresh_moves_expiry() -> None:
    reg, loc = make()
    reg.handle(register(["<sip:a@10.0.0.1>"], expires="60"), "anna", SRC, 0.0)
    reg.handle(register(["<sip:a@10.0.0.1>"], cseq=2, expires="120"), "anna", SRC, 50.0)
    assert loc.expire(60.0) == []
    assert loc.next_expiry() == 170.0


# ---- Path (RFC 3327) -------------------------------------------------------------------------

EDGE = Peer("udp", "93.184.216.34", 5060)
SRC_PEER = Peer(*SRC)  # the edge proxy the REGISTER came from


def with_path(path: list[str], supported: str | None = "path") -> Request:
    req = register(["<sip:anna@192.168.1.20:5060>"])
    for p in path:
        req.add("Path", p)
    if supported is not None:
        req.add("Supported", supported)
    return req


def test_path_is_stored_echoed_and_its_first_hop_is_where_the_device_is_reached() -> None:
    reg, loc = make()
    path = ["<sip:93.184.216.34;lr>", "<sip:edge-two.example;lr>"]
    r = reg.handle(with_path(path), "anna", EDGE, 0.0)
    assert r.status == 200
    assert [v for n, v in r.headers if n == "Path"] == path
    [b] = loc.lookup("anna", 0.0)
    assert b.path == tuple(path)
    assert b.received == EDGE  # the first hop, not the Contact's private address


def test_path_without_supported_path_is_stored_but_not_echoed() -> None:
    reg, loc = make()
    r = reg.handle(with_path(["<sip:93.184.216.34;lr>"], supported="replaces"), "anna", EDGE, 0.0)
    assert r.status == 200 and [v for n, v in r.headers if n == "Path"] == []
    [b] = loc.lookup("anna", 0.0)
    assert b.path == ("<sip:93.184.216.34;lr>",) and b.received == EDGE


def test_path_first_hop_rules() -> None:
    # another port of the edge's address, a hostname, another reachable public address
    assert path_hop(parse_uri("sip:93.184.216.34:5070;lr"), EDGE) == ("udp", "93.184.216.34", 5070)
    assert path_hop(parse_uri("sip:edge.example;lr"), EDGE) == EDGE
    assert path_hop(parse_uri("sip:185.15.59.224;lr;transport=tcp"), EDGE) == (
        "tcp", "185.15.59.224", 5060,
    )  # fmt: skip
    # the server's loopback or a LAN on the word of a source on the internet: never
    assert path_hop(parse_uri("sip:127.0.0.1:5060;lr"), EDGE) is None
    assert path_hop(parse_uri("sip:10.0.0.1;lr"), EDGE) is None
    # over TCP, an entry naming the edge's address is its connection
    tcp = Peer("tcp", "93.184.216.34", 40001)
    assert path_hop(parse_uri("sip:93.184.216.34;lr;transport=tcp"), tcp) == tcp
    # an entry naming another transport than the REGISTER came by is followed by that one
    assert path_hop(parse_uri("sip:93.184.216.34;lr;transport=tcp"), EDGE) == (
        "tcp", "93.184.216.34", 5060,
    )  # fmt: skip
    assert path_hop(parse_uri("sip:93.184.216.34:5070;lr"), tcp) == ("udp", "93.184.216.34", 5070)


def test_path_refusals() -> None:
    loc = LocationService()
    reg = Registrar(
        RegistrarSettings(), loc,
        lambda uri, dest: "Path names a carrier trunk" if dest == EDGE else None,
    )  # fmt: skip
    r = reg.handle(with_path(["<sip:93.184.216.34;lr>"]), "anna", EDGE, 0.0)
    assert (r.status, r.reason) == (403, "Path names a carrier trunk")
    too_many = [f"<sip:198.51.100.{i};lr>" for i in range(6)]
    assert reg.handle(with_path(too_many), "anna", EDGE, 0.0).status == 400
    assert reg.handle(with_path(["<sip:198.51.100.1>"]), "anna", EDGE, 0.0).status == 400
    assert reg.handle(with_path(["<tel:+4930123>"]), "anna", EDGE, 0.0).status == 400
    assert loc.lookup("anna", 0.0) == []


def test_a_registration_without_path_drops_the_old_path() -> None:
    reg, loc = make()
    reg.handle(with_path(["<sip:93.184.216.34;lr>"]), "anna", EDGE, 0.0)
    reg.handle(register(["<sip:anna@192.168.1.20:5060>"], cseq=2), "anna", SRC_PEER, 0.0)
    [b] = loc.lookup("anna", 0.0)
    assert (b.path, b.received) == ((), SRC_PEER)
