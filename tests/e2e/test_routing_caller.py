"""Caller conditions with real calls: `heimbuero serve` on the demo data, the carrier's calls
coming from a trusted port (SIPp), the trunk pointed at a SIPp UAS playing the carrier. Rules of
Tischlerei Müller: "VIP" (`caller: {vip: true}`) to the owner's mobile through the trunk, then
"Büro" (no condition) to group `team`. Herr Meier, a VIP caller of the client (`heimbuero
client vip`), reaches the mobile; another caller reaches the agent `anna`. `heimbuero route
simulate --caller` names the same rules before the calls."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import HarnessError, Server, SippProcess, free_port, start_sipp, start_sipp_uas
from .test_routing import (
    CLIENT,
    DOMAIN,
    MOBILE,
    NUMBER,
    CallRecord,
    parse_calls_table,
    received_invites,
    start_sipp_callee,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]

VIP = "+4915112345678"  # Herr Meier, as the carrier presents him
VIP_TYPED = "0151 12345678"  # as the client typed him into the VIP list
OTHER = "+4930555123"  # anybody else
RING = 8  # s: ring time of each step


def rules() -> dict[str, Any]:
    return {
        "client": CLIENT,
        "numbers": {
            NUMBER: {
                "rules": [
                    {
                        "name": "VIP",
                        "when": {"caller": {"vip": True}},
                        "steps": [{"targets": [f"external:{MOBILE}"], "timeout": RING}],
                    },
                    {"name": "Büro", "steps": [{"targets": ["group:team"], "timeout": RING}]},
                ]
            }
        },
    }


class VipOffice:
    def __init__(self, tmp_path: Path, stack: contextlib.ExitStack) -> None:
        self.tmp_path = tmp_path
        self.carrier_port = free_port()
        self.inbound_port = free_port()
        self.server = srv = Server(
            tmp_path / "server",
            domain=DOMAIN,
            demo=True,
            sip_options={"trusted_peers": [f"127.0.0.1:{self.inbound_port}"]},
        )
        srv.prepare()
        data = ["--data", str(srv.data_dir)]
        srv.cli("trunk", "set", "carrier", "--address", f"127.0.0.1:{self.carrier_port}", *data)
        srv.cli("client", "vip", CLIENT, VIP_TYPED, "--name", "Herr Meier", *data)
        path = tmp_path / "rules.json"
        path.write_text(json.dumps(rules()), encoding="utf-8")
        srv.cli("rules", "import", CLIENT, str(path), *data)
        stack.enter_context(srv)
        self.calls = 0

    def simulate(self, caller: str | None) -> dict[str, Any]:
        args = ["route", "simulate", NUMBER, "--json", "--data", str(self.server.data_dir)]
        res = self.server.cli(*args, *(["--caller", caller] if caller else []))
        plan: dict[str, Any] = json.loads(res.stdout)
        return plan

    def call(self, caller: str) -> SippProcess:
        """The carrier calls the client's number from the trusted port, From `caller`."""
        self.calls += 1
        return start_sipp(
            self.tmp_path,
            f"carrier-call-{self.calls}",
            scenario="caller_trusted.xml",
            remote=self.server.address,
            port=self.inbound_port,
            calls=1,
            timeout=40,
            service=NUMBER,
            keys={"domain": DOMAIN, "caller": caller},
            extra=["-d", "300"],
        )

    def records(self) -> list[CallRecord]:
        res = self.server.cli(
            "calls",
            "list",
            "--client",
            CLIENT,
            "--limit",
            "10",
            "--data",
            str(self.server.data_dir),
        )
        return list(reversed(parse_calls_table(res.stdout)))

    def wait_records(self, count: int) -> list[CallRecord]:
        def done() -> list[CallRecord] | None:
            recs = self.records()
            ok = len(recs) >= count and all(r.result != "in progress" for r in recs)
            return recs if ok else None

        return wait_until(done, 15, interval=0.3, what=f"{count} finished call records")


@pytest.fixture
def office(tmp_path: Path) -> Iterator[VipOffice]:
    with contextlib.ExitStack() as stack:
        yield VipOffice(tmp_path, stack)


def test_the_vip_reaches_the_mobile_and_another_caller_the_office(office: VipOffice) -> None:
    assert office.simulate(VIP_TYPED)["rule"] == "VIP"
    assert office.simulate(VIP)["steps"] == [{"targets": [f"external:{MOBILE}"], "timeout": RING}]
    assert office.simulate(OTHER)["rule"] == "Büro"
    assert office.simulate(None)["rule"] == "Büro"

    # Herr Meier calls: the carrier UAS gets the forwarded call to the mobile and answers
    carrier_uas = start_sipp_uas(
        office.tmp_path,
        "carrier",
        port=office.carrier_port,
        scenario="routing_carrier_uas.xml",
        calls=1,
        timeout=40,
    )
    with carrier_uas as carrier:
        with office.call(VIP) as call:
            result = call.wait()
        if result.returncode != 0:
            raise HarnessError(f"{result.report()}\n{office.server.log_text()}")
        carrier_result = carrier.wait(15)
    if carrier_result.returncode != 0:
        raise HarnessError(f"{carrier_result.report()}\n{office.server.log_text()}")
    (invite,) = received_invites(carrier_result)
    assert invite.start_line.startswith(f"INVITE sip:{MOBILE}@127.0.0.1:{office.carrier_port}")
    assert f"sip:{VIP}@" in (invite.header("From") or "")

    # anybody else: the office's agent anna answers, the carrier's port gets nothing
    phone = start_sipp_callee(
        office.tmp_path,
        office.server,
        user="anna",
        password=office.server.demo_passwords["anna"],
        on_invite="routing_callee_agent.xml",
        calls=1,
        timeout=60,
    )
    with phone as anna:
        with office.call(OTHER) as call:
            result = call.wait()
        if result.returncode != 0:
            raise HarnessError(f"{result.report()}\n{office.server.log_text()}")
        anna_result = anna.wait(15).check()
    (invite,) = received_invites(anna_result)
    assert f"sip:{OTHER}@" in (invite.header("From") or "")

    vip_call, other_call = office.wait_records(2)
    assert (vip_call.rule, vip_call.answered_by) == ("VIP", f"external:{MOBILE}"), vip_call
    assert VIP in vip_call.caller, vip_call
    assert (other_call.rule, other_call.answered_by) == ("Büro", "user:anna"), other_call
    assert OTHER in other_call.caller, other_call
