"""A carrier trunk named by host name (RFC 3263), through the real `heimbuero serve`, with a
DNS server started by the test ([sip] dns_servers):

- `trunk set carrier --address carrier.test` (no port): the server looks up the SRV records
  `_sip._udp.carrier.test`; the first target (priority 10) has nothing listening, so the
  call out fails there at once (ICMP port unreachable) and goes to the second (priority 20),
  where a hand-driven carrier answers it.
- The carrier's own calls from that address are recognised as the trunk's (no challenge).
- A name DNS does not know: the call out is refused at once with 503 and a reason; nothing
  waits on the event loop for DNS meanwhile (a REGISTER is answered as fast as ever).
- `trunk set carrier --address carrier.test --transport auto`: DNS chooses the transport
  (RFC 3263 §4.1). The NAPTR records of carrier.test name `_sip._tcp.carrier.test` first (a
  SIPS record before it is skipped: no TLS for "auto"); its SRV record names the port a SIPp
  carrier listens on over TCP, and the call out reaches it there over TCP. With only a UDP
  NAPTR record the same call goes over UDP. "auto" with an address or a port is refused.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnsserver import DnsServer

from .harness import (
    Server,
    SipClient,
    SipMessage,
    free_port,
    sipp_received,
    start_sipp_uas,
    wait_until,
)

pytestmark = [pytest.mark.e2e]

DOMAIN = "heimbuero.test"
NUMBER = "+49891234567"  # the demo client mueller's number


class Carrier:
    """A carrier on one UDP port: answers every INVITE `status` and keeps what it got."""

    def __init__(self, server_port: int, port: int, status: str = "486 Busy Here") -> None:
        self.phone = SipClient(server_port, local_port=port)
        self.status = status
        self.invites: list[SipMessage] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Carrier:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(3)
        self.phone.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.phone.recv(0.2)
            if msg is None or msg.method != "INVITE":
                continue
            self.invites.append(msg)
            via = "".join(f"Via: {v}\r\n" for v in msg.header_values("Via"))
            to = msg.header("To") or ""
            self.phone.send_raw(
                (
                    f"SIP/2.0 {self.status}\r\n{via}From: {msg.header('From')}\r\n"
                    f"To: {to};tag=carrier1\r\nCall-ID: {msg.header('Call-ID')}\r\n"
                    f"CSeq: {msg.header('CSeq')}\r\nContent-Length: 0\r\n\r\n"
                ).encode()
            )


def dial(server: Server, user: str, password: str, target: str) -> SipMessage:
    with SipClient(server.port) as c:
        ruri = f"sip:{target}@{DOMAIN}"
        _, final = c.authenticated_request(
            "INVITE", ruri, username=user, password=password, timeout=10,
            from_uri=f"sip:{user}@{DOMAIN}", to_uri=ruri,
            headers=[("Contact", f"<sip:{user}@127.0.0.1:{c.local_port}>")],
        )  # fmt: skip
        return final


@pytest.fixture
def office(tmp_path: Path) -> Iterator[dict[str, Any]]:
    dead, live = free_port(), free_port()
    zone = {
        ("_sip._udp.carrier.test", "SRV"): [
            f"10 0 {dead} a.carrier.test",
            f"20 0 {live} b.carrier.test",
        ],
        ("a.carrier.test", "A"): ["127.0.0.1"],
        ("b.carrier.test", "A"): ["127.0.0.1"],
    }
    with contextlib.ExitStack() as stack:
        dns = stack.enter_context(DnsServer(zone))
        srv = Server(tmp_path / "server", domain=DOMAIN, demo=True,
                     sip_options={"dns_servers": [dns.address]})  # fmt: skip
        srv.prepare()
        srv.cli("trunk", "set", "carrier", "--address", "carrier.test", "--data", str(srv.data_dir))
        listed = srv.cli("trunk", "list", "--data", str(srv.data_dir)).stdout
        assert "carrier.test (DNS SRV)" in listed, listed
        stack.enter_context(srv)
        yield {"server": srv, "dns": dns, "dead": dead, "live": live}


def test_a_call_out_fails_over_to_the_next_srv_target(office: dict[str, Any]) -> None:
    srv, live = office["server"], office["live"]
    assert ("_sip._udp.carrier.test", "SRV") in office["dns"].questions
    with Carrier(srv.port, live) as carrier:
        final = dial(srv, "mueller", srv.demo_passwords["mueller"], "01702222222")
        assert final.status == 486, final.summary()  # the live carrier's answer came back
        [invite] = carrier.invites
        # the Request-URI names the carrier by its name, as RFC 3263 keeps it
        assert invite.start_line.startswith("INVITE sip:+491702222222@carrier.test SIP/2.0")
    log = srv.log_text()
    assert f"udp:127.0.0.1:{office['dead']} failed; trying udp:127.0.0.1:{live}" in log, log[-3000:]


def test_the_carriers_calls_from_a_looked_up_address_are_the_trunks(
    office: dict[str, Any],
) -> None:
    srv, live = office["server"], office["live"]
    with Carrier(srv.port, live) as carrier:
        req = carrier.phone.request(
            "INVITE", f"sip:{NUMBER}@{DOMAIN}", from_uri="sip:+4930999888@carrier.test",
            to_uri=f"sip:{NUMBER}@{DOMAIN}",
            headers=[("Contact", f"<sip:+4930999888@127.0.0.1:{live}>")],
        )  # fmt: skip
        first = wait_until(
            lambda: next((m for m in carrier.phone.received if m.status), None),
            5, what="an answer to the carrier's INVITE",
        )  # fmt: skip
        assert first.status not in (401, 407, 403), first.summary()
        assert req.call_id == first.header("Call-ID")


def test_a_name_dns_does_not_know_refuses_the_call_out_at_once(tmp_path: Path) -> None:
    with DnsServer({}) as dns:
        srv = Server(tmp_path / "server", domain=DOMAIN, demo=True,
                     sip_options={"dns_servers": [dns.address]})  # fmt: skip
        srv.prepare()
        srv.cli("trunk", "set", "carrier", "--address", "nowhere.test", "--data",
                str(srv.data_dir))  # fmt: skip
        with srv:
            final = dial(srv, "mueller", srv.demo_passwords["mueller"], "01702222222")
            assert final.status == 503, final.summary()
            assert "not resolved" in final.reason, final.summary()
        assert "nowhere.test could not be looked up" in srv.log_text()


@pytest.mark.peers("sipp")
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_naptr_chooses_the_transport_and_srv_the_port(tmp_path: Path, transport: str) -> None:
    port = free_port()  # named only in the SRV record
    naptr = ['20 10 "s" "SIP+D2U" "" _sip._udp.carrier.test.']
    if transport == "tcp":
        naptr += [
            '5 10 "s" "SIPS+D2T" "" _sips._tcp.carrier.test.',
            '10 10 "s" "SIP+D2T" "" _sip._tcp.carrier.test.',
        ]
    zone = {
        ("carrier.test", "NAPTR"): naptr,
        ("_sips._tcp.carrier.test", "SRV"): [f"10 0 {free_port()} a.carrier.test"],
        ("_sip._tcp.carrier.test", "SRV"): [f"10 0 {port} a.carrier.test"],
        ("_sip._udp.carrier.test", "SRV"): [f"10 0 {port} a.carrier.test"],
        ("a.carrier.test", "A"): ["127.0.0.1"],
    }
    with contextlib.ExitStack() as stack:
        dns = stack.enter_context(DnsServer(zone))
        srv = Server(tmp_path / "server", domain=DOMAIN, demo=True,
                     sip_options={"dns_servers": [dns.address]})  # fmt: skip
        srv.prepare()
        data = ("--data", str(srv.data_dir))
        refused = srv.cli("trunk", "set", "carrier", "--address", "127.0.0.1", "--transport",
                          "auto", *data, check=False)  # fmt: skip
        assert refused.returncode != 0 and "auto" in refused.stderr + refused.stdout, refused
        srv.cli("trunk", "set", "carrier", "--address", "carrier.test", "--transport", "auto",
                *data)  # fmt: skip
        listed = srv.cli("trunk", "list", *data).stdout
        assert "carrier.test (DNS NAPTR)" in listed, listed
        stack.enter_context(srv)
        carrier = stack.enter_context(start_sipp_uas(
            tmp_path, "carrier", port=port, scenario="carrier_busy_uas.xml",
            transport="t1" if transport == "tcp" else "u1", timeout=30,
        ))  # fmt: skip
        final = dial(srv, "mueller", srv.demo_passwords["mueller"], "01702222222")
        assert final.status == 486, final.summary()  # the carrier's answer came back
        result = carrier.wait(20)
        assert result.returncode == 0, result.report()
        [invite] = sipp_received(result, "INVITE")
        via = invite.header_values("Via")[0]
        assert via.upper().startswith(f"SIP/2.0/{transport.upper()} "), via
        assert invite.start_line.startswith("INVITE sip:+491702222222@carrier.test SIP/2.0")
        assert ("carrier.test", "NAPTR") in dns.questions
        assert (f"_sip._{transport}.carrier.test", "SRV") in dns.questions
        assert ("_sips._tcp.carrier.test", "SRV") not in dns.questions
