"""RFC 3327 Path at the registrar, with raw messages: a REGISTER that came through an edge proxy
(its Path entry names a UDP socket of this test, the "edge") is stored with its Path, the 200
echoes it, and an INVITE or a stored MESSAGE to that user goes to the edge with the Path as its
Route. Without `Supported: path` (most desk phones) the Path is stored and used, not echoed.

Abuse: a Path is the registering user's own claim; one naming a carrier trunk (toll fraud: calls
to the user would leave through the trunk) or the server itself is refused, as is an oversize
one, and a request that names the edge in a Route of its own is not relayed to it.

GRUU (RFC 5627), the registrar's other extension: a phone with two instances gets a public and
a temporary GRUU for each in the 200, a call to one of them rings that device only, and a
temporary GRUU the server did not make is refused.

Outbound (RFC 5626), which edge proxies and mobile apps use: a STUN keep-alive to the SIP UDP
port is answered with the sender's address, and an app with two flows over TCP gets a call on
one of them, then, when that connection closes, on the other."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import DOMAIN, USERS
from .harness import Server, SipClient, SipMessage, digest_response, pick_challenge
from .test_routing import Office, werktag_not_now
from .test_trust import QUIET, UdpListener, udp_listener

pytestmark = [pytest.mark.e2e]


def register(
    c: SipClient,
    user: str,
    password: str,
    path: list[str],
    *,
    supported: str | None = "path",
    expires: int = 300,
    contact_params: str = "",
) -> SipMessage:
    aor = f"sip:{user}@{DOMAIN}"
    contact = f"<sip:{user}@127.0.0.1:{c.local_port}>{contact_params}"
    headers = [("Contact", contact), ("Expires", str(expires))]
    headers += [("Path", p) for p in path]
    if supported is not None:
        headers.append(("Supported", supported))
    first = c.request("REGISTER", f"sip:{DOMAIN}", from_uri=aor, to_uri=aor, headers=headers)
    challenge = c.final_response(first, 5)
    if challenge.status != 401:
        return challenge  # refused before authentication
    value = digest_response(
        pick_challenge(challenge), method="REGISTER", uri=f"sip:{DOMAIN}", username=user,
        password=password,
    )  # fmt: skip
    second = c.request(
        "REGISTER", f"sip:{DOMAIN}", from_uri=aor, to_uri=aor, call_id=first.call_id,
        from_tag=first.from_tag, cseq=2, headers=[*headers, ("Authorization", value)],
    )  # fmt: skip
    return c.final_response(second, 5)


def invite(c: SipClient, caller: str, callee: str, ruri: str | None = None) -> Any:
    """An authenticated INVITE from `caller` to `callee` (to `ruri` when given: a GRUU of
    the callee's); the final answer is not awaited."""
    ruri = ruri or f"sip:{callee}@{DOMAIN}"
    kw: dict[str, Any] = {
        "from_uri": f"sip:{caller}@{DOMAIN}",
        "to_uri": ruri,
        "headers": [("Contact", f"<sip:{caller}@127.0.0.1:{c.local_port}>")],
    }
    first = c.request("INVITE", ruri, **kw)
    challenge = c.final_response(first, 5)
    assert challenge.status == 407, challenge.summary()
    value = digest_response(pick_challenge(challenge), method="INVITE", uri=ruri,
                            username=caller, password=USERS[caller])  # fmt: skip
    kw["headers"] = [*kw["headers"], ("Proxy-Authorization", value)]
    return c.request("INVITE", ruri, call_id=first.call_id, from_tag=first.from_tag, cseq=2, **kw)


def edge_uri(edge: UdpListener) -> str:
    return f"<sip:127.0.0.1:{edge.sock.getsockname()[1]};lr>"


def test_register_with_path_is_echoed_and_calls_take_the_path(server: Server) -> None:
    with (
        contextlib.closing(UdpListener(0)) as edge,
        SipClient(server.port) as bob,
        SipClient(server.port) as alice,
    ):
        path = [edge_uri(edge), "<sip:edge-two.example;lr>"]
        ok = register(bob, "bob", USERS["bob"], path)
        assert ok.status == 200, ok.summary()
        assert ok.header_values("Path") == path  # RFC 3327 §5.3: echoed, in order
        tags = [t.strip() for v in ok.header_values("Supported") for t in v.split(",")]
        assert "path" in tags
        invite(alice, "alice", "bob")
        arrived = edge.first("INVITE", 10)
        # The Request-URI is bob's Contact; the Route is the stored Path (§5.4), in order.
        assert arrived.start_line.split()[1] == f"sip:bob@127.0.0.1:{bob.local_port}"
        assert arrived.header_values("Route") == path
        assert bob.recv(QUIET) is None  # nothing went around the edge


def test_path_survives_a_restart(server: Server) -> None:
    """The Path is stored with the binding: after a restart the call still takes it."""
    with contextlib.closing(UdpListener(0)) as edge, SipClient(server.port) as bob:
        ok = register(bob, "bob", USERS["bob"], [edge_uri(edge)])
        assert ok.status == 200, ok.summary()
        server.restart()
        with SipClient(server.port) as alice:
            invite(alice, "alice", "bob")
            arrived = edge.first("INVITE", 10)
        assert arrived.header_values("Route") == [edge_uri(edge)]


def test_stored_message_is_delivered_through_the_path(server: Server) -> None:
    """A MESSAGE to bob goes to the edge with bob's Path as Route."""
    with (
        contextlib.closing(UdpListener(0)) as edge,
        SipClient(server.port) as bob,
        SipClient(server.port) as alice,
    ):
        assert register(bob, "bob", USERS["bob"], [edge_uri(edge)]).status == 200
        ruri = f"sip:bob@{DOMAIN}"
        # (the answer waits for the edge, which never answers: sent without waiting for it)
        first = alice.request("MESSAGE", ruri, from_uri=f"sip:alice@{DOMAIN}", to_uri=ruri,
                              body=b"hallo", content_type="text/plain")  # fmt: skip
        challenge = alice.final_response(first, 5)
        assert challenge.status == 407
        value = digest_response(pick_challenge(challenge), method="MESSAGE", uri=ruri,
                                username="alice", password=USERS["alice"])  # fmt: skip
        alice.request("MESSAGE", ruri, from_uri=f"sip:alice@{DOMAIN}", to_uri=ruri,
                      call_id=first.call_id, from_tag=first.from_tag, cseq=2, body=b"hallo",
                      content_type="text/plain",
                      headers=[("Proxy-Authorization", value)])  # fmt: skip
        arrived = edge.first("MESSAGE", 10)
        assert arrived.header_values("Route") == [edge_uri(edge)]
        assert arrived.raw.endswith(b"hallo")


def test_path_without_supported_path_is_used_but_not_echoed(server: Server) -> None:
    """A desk phone that does not know Path, behind the provider's edge: its calls take the
    Path all the same (the edge keeps its flow); the 200 does not echo it."""
    with contextlib.closing(UdpListener(0)) as edge, SipClient(server.port) as bob:
        ok = register(bob, "bob", USERS["bob"], [edge_uri(edge)], supported="replaces")
        assert ok.status == 200, ok.summary()
        assert ok.header_values("Path") == []
        with SipClient(server.port) as alice:
            invite(alice, "alice", "bob")
            arrived = edge.first("INVITE", 10)
        assert arrived.header_values("Route") == [edge_uri(edge)]


def test_register_through_the_edge_without_path_header_still_works(server: Server) -> None:
    """A REGISTER with Supported: path but no Path is a plain registration (no Path echoed)."""
    with SipClient(server.port) as bob:
        ok = register(bob, "bob", USERS["bob"], [])
        assert ok.status == 200, ok.summary()
        assert ok.header_values("Path") == []


# ---------------------------------------------------------------------- abuse


def test_forged_path_cannot_reach_the_trunk_or_the_server(tmp_path: Path) -> None:
    """mueller (a client user of the demo office) registers with a Path whose first hop is the
    carrier trunk: calls to mueller would go out through the trunk, to a number of the caller's
    choosing in the Contact. Refused (403), as is a Path naming the server itself and an
    oversize one; nothing reaches the carrier."""
    with contextlib.ExitStack() as stack:
        office = Office(tmp_path, stack, werktag_not_now())
        srv = office.server
        password = office.password("mueller")
        with udp_listener(office.carrier_port) as carrier, SipClient(srv.port) as c:
            trunk = f"<sip:127.0.0.1:{office.carrier_port};lr>"
            refused = register(c, "mueller", password, [trunk])
            assert refused.status == 403, refused.summary()
            assert "trunk" in refused.reason, refused.summary()
            own = register(c, "mueller", password, [f"<sip:{srv.address};lr>"])
            assert own.status == 403 and "this server" in own.reason, own.summary()
            many = [f"<sip:10.0.0.{i}:5060;lr>" for i in range(1, 8)]
            oversize = register(c, "mueller", password, many)
            assert oversize.status == 400, oversize.summary()
            no_lr = register(c, "mueller", password, ["<sip:127.0.0.1:5999>"])
            assert no_lr.status == 400, no_lr.summary()
            assert carrier.messages(QUIET) == []


def test_path_to_a_network_the_registering_device_is_not_in_is_refused(server: Server) -> None:
    """A Path whose first hop is a private or reserved address, sent from loopback: the same
    rule as a Contact (the server never sends into a network on the word of someone outside)."""
    with SipClient(server.port) as bob:
        refused = register(bob, "bob", USERS["bob"], ["<sip:192.0.2.7:5060;lr>"])
        assert refused.status == 403, refused.summary()


def test_route_naming_the_edge_in_a_request_is_not_relayed(server: Server) -> None:
    """Only the server pre-loads a Path: an authenticated user's INVITE that names the edge in a
    Route of its own is refused (no relaying), and nothing reaches the edge."""
    with (
        contextlib.closing(UdpListener(0)) as edge,
        SipClient(server.port) as bob,
        SipClient(server.port) as alice,
    ):
        assert register(bob, "bob", USERS["bob"], [edge_uri(edge)]).status == 200
        ruri = f"sip:bob@127.0.0.1:{bob.local_port}"
        _, final = alice.authenticated_request(
            "INVITE", ruri, username="alice", password=USERS["alice"],
            from_uri=f"sip:alice@{DOMAIN}", to_uri=f"sip:bob@{DOMAIN}",
            headers=[("Route", edge_uri(edge)),
                     ("Contact", f"<sip:alice@127.0.0.1:{alice.local_port}>")],
        )  # fmt: skip
        assert final.status == 403, final.summary()
        assert edge.messages(QUIET) == []


# ---- GRUU (RFC 5627) ---------------------------------------------------------------------------


def test_gruu_reaches_only_its_instance_and_a_forged_one_nothing(server: Server) -> None:
    """bob's desk phone and softphone register with their instance ids and `Supported: gruu`:
    each Contact in the 200 carries its pub-gruu and temp-gruu; alice's call to the
    softphone's public GRUU rings the softphone only, and a temp GRUU alice made up is 404."""
    uuids = ("urn:uuid:6e0c3c44-8f1b-4b5e-9a53-0d6c2a1f7e01",
             "urn:uuid:6e0c3c44-8f1b-4b5e-9a53-0d6c2a1f7e02")  # fmt: skip
    with SipClient(server.port) as desk, SipClient(server.port) as soft:
        gruus: dict[str, tuple[str, str]] = {}
        for phone, uuid in zip((desk, soft), uuids, strict=True):
            ok = register(phone, "bob", USERS["bob"], [], supported="gruu",
                          contact_params=f';+sip.instance="<{uuid}>"')  # fmt: skip
            assert ok.status == 200, ok.summary()
            [mine] = [c for c in ok.header_values("Contact") if f":{phone.local_port}>" in c]
            pub = re.search(r'pub-gruu="([^"]+)"', mine)
            temp = re.search(r'temp-gruu="([^"]+)"', mine)
            assert pub is not None and temp is not None, mine
            gruus[uuid] = (pub.group(1), temp.group(1))
        pub_soft, temp_soft = gruus[uuids[1]]
        assert pub_soft == f"sip:bob@{DOMAIN};gr={uuids[1]}"
        assert temp_soft.startswith("sip:tgruu.") and temp_soft.endswith(f"@{DOMAIN};gr")
        assert uuids[1] not in temp_soft and temp_soft != gruus[uuids[0]][1]
        with SipClient(server.port) as alice:
            first = invite(alice, "alice", "bob", ruri=pub_soft)
            arrived = soft.recv(5)
            assert arrived is not None and arrived.start_line.startswith("INVITE "), arrived
            assert arrived.start_line.split()[1] == f"sip:bob@127.0.0.1:{soft.local_port}"
            assert desk.recv(QUIET) is None  # not forked to bob's other phone
            token = temp_soft.split("@")[0].removeprefix("sip:tgruu.")
            forged = temp_soft.replace(token, token[::-1])
            _, final = alice.authenticated_request(
                "INVITE", forged, username="alice", password=USERS["alice"],
                from_uri=f"sip:alice@{DOMAIN}", to_uri=forged,
                headers=[("Contact", f"<sip:alice@127.0.0.1:{alice.local_port}>")],
            )  # fmt: skip
            assert final.status == 404, final.summary()
            assert desk.recv(QUIET) is None
            # the softphone hears only retransmissions of the first call
            while (late := soft.recv(0.1)) is not None:
                assert late.header("Call-ID") == first.call_id, late.summary()


# ---- Outbound (RFC 5626) -----------------------------------------------------------------------

INSTANCE = '"<urn:uuid:6f4a2d1c-0b8e-4f57-9c1e-3d2b7a5e8f01>"'


def outbound_register(c: SipClient, reg_id: int, *, contact: bool = True) -> SipMessage:
    """bob's REGISTER of one outbound flow (RFC 5626 §4.2) over `c`; without `contact`: a
    query of his bindings."""
    aor = f"sip:bob@{DOMAIN}"
    headers = [("Supported", "outbound, path"), ("Expires", "300")]
    if contact:
        uri = f"sip:bob@127.0.0.1:{c.local_port};transport=tcp;ob"
        headers.append(("Contact", f"<{uri}>;reg-id={reg_id};+sip.instance={INSTANCE}"))
    _, ok = c.authenticated_request("REGISTER", f"sip:{DOMAIN}", username="bob",
                                    password=USERS["bob"], from_uri=aor, to_uri=aor,
                                    headers=headers)  # fmt: skip
    return ok


def test_outbound_flows_and_stun_keepalive(server: Server) -> None:
    # STUN keep-alive (RFC 5626 §8) on the SIP UDP port: the answer names our address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(5)
        txid = bytes(range(1, 13))
        udp.sendto(struct.pack("!HHI", 0x0001, 0, 0x2112A442) + txid, ("127.0.0.1", server.port))
        data, _ = udp.recvfrom(2048)
        port = udp.getsockname()[1]
        assert data[:2] == b"\x01\x01" and data[8:20] == txid  # Binding Success Response
        kind, _, family, xport = struct.unpack_from("!HHxBH", data, 20)
        assert (kind, family, xport ^ 0x2112) == (0x0020, 1, port)  # XOR-MAPPED-ADDRESS
        assert struct.unpack_from("!I", data, 28)[0] ^ 0x2112A442 == 0x7F000001  # 127.0.0.1
    with (
        SipClient(server.port, transport="tcp") as flow1,
        SipClient(server.port, transport="tcp") as flow2,
        SipClient(server.port) as alice,
    ):
        ok = outbound_register(flow1, 1)
        assert ok.status == 200, ok.summary()
        assert ok.header("Require") == "outbound" and ok.header("Flow-Timer") == "120"
        # (the second flow registers later: the one calls take first)
        assert outbound_register(flow2, 2).status == 200
        invite(alice, "alice", "bob")
        call = flow2.recv(10)
        assert call is not None and call.method == "INVITE", call
        assert flow1.recv(QUIET) is None  # one device rings once, over one flow (§5.3)
        # the app's connection closes: that flow is gone, the registration with it
        flow2.close()
        deadline = time.monotonic() + 10
        while len(outbound_register(flow1, 1, contact=False).header_values("Contact")) != 1:
            assert time.monotonic() < deadline, "the closed flow's binding stayed"
            time.sleep(0.1)
        invite(alice, "alice", "bob")
        again = flow1.recv(10)
        while again is not None and again.method != "INVITE":
            again = flow1.recv(10)
        assert again is not None and again.method == "INVITE"
