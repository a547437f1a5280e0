"""End-to-end tests of the SIP core: registrar, digest auth, stateful forking proxy, NAT handling.

Each test starts `heimbuero serve` (fixture `server`, see conftest.py) on a free port on
127.0.0.1 and drives it with real SIP peers: SIPp scenarios from scenarios/, baresip, or a
hand-built request where one message is the point of the test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import DOMAIN, USERS
from .harness import (
    Baresip,
    Server,
    SipClient,
    SippResult,
    free_port,
    parse_challenge,
    run_sipp,
    run_sipp_caller,
    start_sipp_callee,
)

pytestmark = pytest.mark.e2e

sipp = pytest.mark.peers("sipp")

# A phone behind NAT puts its private address into Via and Contact; its packets arrive from the
# router's public address (here: 127.0.0.1:<the phone's port>).
NAT_PRIVATE_ADDRESS = "192.168.1.20:5060"


def run_register(
    workdir: Path, server: Server, user: str, password: str, *, transport: str = "u1"
) -> SippResult:
    return run_sipp(
        workdir,
        f"register-{user}",
        scenario="register.xml",
        remote=server.address,
        port=free_port(),
        transport=transport,
        calls=1,
        timeout=20,
        service=user,
        auth=(user, password),
        auth_uri=server.domain,
        keys={"domain": server.domain, "expires": "600"},
    )


def assert_received(result: SippResult, *start_lines: str) -> None:
    """Every `start_lines` prefix occurs, in this order, among the messages SIPp received."""
    got = result.received_first_lines()
    pos = 0
    for want in start_lines:
        while pos < len(got) and not got[pos].startswith(want):
            pos += 1
        if pos == len(got):
            raise AssertionError(
                f"SIPp {result.name} never received {want!r} in order {start_lines}; got {got}"
            )
        pos += 1


# --------------------------------------------------------------------------------------------
# OPTIONS


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("target", ["domain", "address"])
def test_options_to_server_answered_with_capabilities(
    server: Server, transport: str, target: str
) -> None:
    ruri = f"sip:{server.domain}" if target == "domain" else f"sip:{server.address}"
    with SipClient(server.port, transport=transport) as c:
        req = c.request("OPTIONS", ruri, from_uri=f"sip:probe@{server.domain}", to_uri=ruri)
        resp = c.final_response(req)
    assert resp.status == 200, resp.raw
    allow = resp.header("Allow")
    assert allow, f"200 to OPTIONS without Allow: {resp.raw!r}"
    methods = {m.strip().upper() for m in allow.split(",")}
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER"} <= methods, allow
    assert resp.has_header("Accept"), f"200 to OPTIONS without Accept: {resp.raw!r}"
    assert resp.has_header("Supported"), f"200 to OPTIONS without Supported: {resp.raw!r}"
    assert resp.to_tag(), "a UAS response needs a To tag (RFC 3261 8.2.6.2)"


# --------------------------------------------------------------------------------------------
# REGISTER


@sipp
def test_register_with_digest_auth(server: Server, tmp_path: Path) -> None:
    result = run_register(tmp_path, server, "alice", USERS["alice"]).check()
    assert_received(result, "SIP/2.0 401", "SIP/2.0 200")


@sipp
def test_register_with_wrong_password_is_challenged_again(server: Server, tmp_path: Path) -> None:
    result = run_register(tmp_path, server, "alice", "Falsches-Passwort-1")
    assert result.returncode != 0, f"REGISTER with a wrong password succeeded\n{result.report()}"
    got = result.received_first_lines()
    assert [line.split(" ")[1] for line in got if line.startswith("SIP/2.0 ")][:2] == [
        "401",
        "401",
    ], got
    assert not any(line.startswith("SIP/2.0 200") for line in got), got


# --------------------------------------------------------------------------------------------
# calls between SIPp peers


@sipp
def test_200_calls_at_50_per_second_through_the_proxy(server: Server, tmp_path: Path) -> None:
    calls = 200
    callee = start_sipp_callee(
        tmp_path,
        server,
        user="bob",
        password=USERS["bob"],
        on_invite="callee_answer.xml",
        calls=calls,
        timeout=90,
        trace_msg=False,
    )
    with callee:
        caller = run_sipp_caller(
            tmp_path,
            server,
            user="alice",
            password=USERS["alice"],
            callee="bob",
            calls=calls,
            rate=50,
            timeout=60,
            trace_msg=False,
            limit=calls,
            extra=["-d", "200"],
        )
        assert caller.returncode == 0, caller.report()
        assert caller.successful_calls == calls, caller.report()
        assert caller.failed_calls == 0, caller.report()
        callee_result = callee.wait(30)
    assert callee_result.returncode == 0, callee_result.report()


@sipp
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_register_then_call(server: Server, tmp_path: Path, transport: str) -> None:
    with start_sipp_callee(
        tmp_path,
        server,
        user="bob",
        password=USERS["bob"],
        on_invite="callee_answer.xml",
        transport=transport,
    ) as callee:
        caller = run_sipp_caller(
            tmp_path,
            server,
            user="alice",
            password=USERS["alice"],
            callee="bob",
            transport=transport,
            extra=["-d", "200"],
        )
        caller.check()
        assert_received(caller, "SIP/2.0 407", "SIP/2.0 200", "SIP/2.0 200")
        callee.wait(20).check()


@sipp
def test_call_cancelled_while_ringing(server: Server, tmp_path: Path) -> None:
    with start_sipp_callee(
        tmp_path, server, user="bob", password=USERS["bob"], on_invite="callee_cancelled.xml"
    ) as callee:
        caller = run_sipp_caller(
            tmp_path,
            server,
            user="alice",
            password=USERS["alice"],
            callee="bob",
            scenario="caller_cancel.xml",
        ).check()
        assert_received(caller, "SIP/2.0 180", "SIP/2.0 487")
        callee_result = callee.wait(20).check()
    # the callee's scenario only completes after the CANCEL; its trace shows it too
    assert any(line.startswith("CANCEL ") for line in callee_result.received_first_lines())


@sipp
def test_callee_busy_gives_caller_486(server: Server, tmp_path: Path) -> None:
    with start_sipp_callee(
        tmp_path, server, user="bob", password=USERS["bob"], on_invite="callee_busy.xml"
    ) as callee:
        caller = run_sipp_caller(
            tmp_path,
            server,
            user="alice",
            password=USERS["alice"],
            callee="bob",
            scenario="caller_busy.xml",
        ).check()
        assert_received(caller, "SIP/2.0 407", "SIP/2.0 486")
        callee.wait(20).check()


# --------------------------------------------------------------------------------------------
# proxy authentication and routing errors (one hand-built request each)


def test_invite_without_credentials_gets_407_md5_first(server: Server) -> None:
    with SipClient(server.port) as c:
        req = c.request(
            "INVITE",
            f"sip:bob@{server.domain}",
            from_uri=f"sip:alice@{server.domain}",
            to_uri=f"sip:bob@{server.domain}",
            headers=[("Contact", f"<sip:alice@127.0.0.1:{c.local_port}>")],
        )
        resp = c.final_response(req)
    assert resp.status == 407, resp.raw
    challenges = [parse_challenge(v) for v in resp.header_values("Proxy-Authenticate")]
    assert challenges, resp.raw
    first = challenges[0]
    assert first["scheme"].lower() == "digest"
    # MD5 first by default (config digest_algorithms), so MD5-only phones such as SIPp work
    assert first.get("algorithm", "MD5").upper() == "MD5", challenges
    assert first.get("realm") == server.domain, challenges
    assert first.get("nonce"), challenges


def test_invite_to_unknown_user_gets_404_after_auth(server: Server) -> None:
    with SipClient(server.port) as c:
        challenge, final = c.authenticated_request(
            "INVITE",
            f"sip:nobody@{server.domain}",
            username="alice",
            password=USERS["alice"],
            from_uri=f"sip:alice@{server.domain}",
            to_uri=f"sip:nobody@{server.domain}",
            headers=[("Contact", f"<sip:alice@127.0.0.1:{c.local_port}>")],
        )
    assert challenge.status == 407
    assert final.status == 404, final.raw


def test_invite_to_unregistered_user_gets_480(server: Server) -> None:
    # bob exists but has no phone registered
    with SipClient(server.port) as c:
        challenge, final = c.authenticated_request(
            "INVITE",
            f"sip:bob@{server.domain}",
            username="alice",
            password=USERS["alice"],
            from_uri=f"sip:alice@{server.domain}",
            to_uri=f"sip:bob@{server.domain}",
            headers=[("Contact", f"<sip:alice@127.0.0.1:{c.local_port}>")],
        )
    assert challenge.status == 407
    assert final.status == 480, final.raw


@sipp
def test_trusted_peer_calls_without_challenge(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    trunk_port = free_port()
    server = server_factory(sip_options={"trusted_peers": [f"127.0.0.1:{trunk_port}"]})
    with start_sipp_callee(tmp_path, server, user="bob", password=USERS["bob"]) as callee:
        trunk = run_sipp(
            tmp_path,
            "trunk",
            scenario="caller_trusted.xml",
            remote=server.address,
            port=trunk_port,
            calls=1,
            timeout=30,
            service="bob",
            keys={"domain": server.domain, "caller": "+4930123456"},
            extra=["-d", "200"],
        ).check()
        assert not any(" 407 " in line or " 401 " in line for line in trunk.received_first_lines())
        callee.wait(20).check()
    # the same host from another port is not trusted
    with SipClient(server.port) as c:
        req = c.request(
            "INVITE",
            f"sip:bob@{server.domain}",
            from_uri="sip:+4930123456@127.0.0.1",
            to_uri=f"sip:bob@{server.domain}",
            headers=[("Contact", f"<sip:x@127.0.0.1:{c.local_port}>")],
        )
        assert c.final_response(req).status == 407


# --------------------------------------------------------------------------------------------
# NAT: the server reaches a phone at the address its REGISTER came from


@sipp
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_nat_callee_reached_at_register_source(
    server: Server, tmp_path: Path, transport: str
) -> None:
    """Contact and Via say 192.168.1.20:5060; the INVITE must still reach 127.0.0.1:PORT.

    RFC 3261 18.2.2 / RFC 3581 for the responses, the registrar remembering the REGISTER's
    source for requests to the binding. Over TCP the INVITE must use the connection the
    REGISTER came on: the Contact address is unreachable, so nothing else can work.
    """
    with start_sipp_callee(
        tmp_path,
        server,
        user="bob",
        password=USERS["bob"],
        on_invite="callee_busy.xml",
        transport=transport,
        contact_host=NAT_PRIVATE_ADDRESS,
    ) as callee:
        caller = run_sipp_caller(
            tmp_path,
            server,
            user="alice",
            password=USERS["alice"],
            callee="bob",
            scenario="caller_busy.xml",
            timeout=30,
        )
        caller.check()
        callee.wait(20).check()


@sipp
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_nat_callee_full_call(server: Server, tmp_path: Path, transport: str) -> None:
    """A whole call with a NATed callee: its 200 OK's Contact is private too, yet the caller's
    ACK and BYE (routed through the proxy by Record-Route) must reach it."""
    with start_sipp_callee(
        tmp_path,
        server,
        user="bob",
        password=USERS["bob"],
        on_invite="callee_answer.xml",
        transport=transport,
        contact_host=NAT_PRIVATE_ADDRESS,
    ) as callee:
        caller = run_sipp_caller(
            tmp_path,
            server,
            user="alice",
            password=USERS["alice"],
            callee="bob",
            timeout=30,
            extra=["-d", "200"],
        )
        caller.check()
        callee.wait(20).check()


# --------------------------------------------------------------------------------------------
# restart


@sipp
def test_registration_survives_restart(server: Server, tmp_path: Path) -> None:
    with start_sipp_callee(
        tmp_path,
        server,
        user="bob",
        password=USERS["bob"],
        on_invite="callee_answer.xml",
        timeout=90,
    ) as callee:
        server.restart()  # SIGTERM, exit code 0 asserted, start again on the same data and ports
        assert server.exit_codes == [0]
        caller = run_sipp_caller(
            tmp_path,
            server,
            user="alice",
            password=USERS["alice"],
            callee="bob",
            extra=["-d", "200"],
        )
        caller.check()
        callee.wait(20).check()


# --------------------------------------------------------------------------------------------
# baresip


@pytest.mark.peers("baresip")
def test_baresip_phones_call_each_other(server: Server, tmp_path: Path) -> None:
    with (
        Baresip(tmp_path, user="alice", password=USERS["alice"], server=server) as alice,
        Baresip(
            tmp_path, user="bob", password=USERS["bob"], server=server, answermode="auto"
        ) as bob,
    ):
        alice.wait_registered()
        bob.wait_registered()
        alice.command("dial", f"sip:bob@{DOMAIN}")
        alice.wait_for_event("CALL_ESTABLISHED", timeout=15)
        bob.wait_for_event("CALL_ESTABLISHED", timeout=15)
        alice.command("hangup")
        alice.wait_for_event("CALL_CLOSED", timeout=15)
        bob.wait_for_event("CALL_CLOSED", timeout=15)
