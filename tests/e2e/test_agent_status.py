"""An agent's own status, end to end: anna goes on break in the console's API; a call to the
client's number rings the team without her (ben's phone rings, hers does not); presence shows
her away. Back to available by the CLI: the next team call rings her again."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import httpx
import pytest

from .harness import Server, SipClient, free_port, next_request, reply, wait_until

pytestmark = [pytest.mark.e2e]

DOMAIN = "office.heimbuero.test"
NUMBER = "+49891234567"  # the demo client mueller's number


def test_an_agent_on_break_is_not_rung_by_team_calls(tmp_path: Path) -> None:
    inbound = free_port()
    server = Server(
        tmp_path / "server", domain=DOMAIN, demo=True, http=True,
        sip_options={"trusted_peers": [f"127.0.0.1:{inbound}"]},
    )  # fmt: skip
    server.prepare()
    plan = {"name": "Team", "steps": [{"targets": ["group:team"], "timeout": 20}]}
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"client": "mueller", "numbers": {NUMBER: {"rules": [plan]}}}))
    server.cli("rules", "import", "mueller", str(rules), "--data", str(server.data_dir))
    pw = server.demo_passwords
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        api = stack.enter_context(httpx.Client(base_url=server.http_url, timeout=10))
        phones: dict[str, SipClient] = {}
        for agent in ("anna", "ben"):
            phone = phones[agent] = stack.enter_context(SipClient(server.port))
            aor = f"sip:{agent}@{DOMAIN}"
            _, reg = phone.authenticated_request(
                "REGISTER", f"sip:{DOMAIN}", username=agent, password=pw[agent],
                from_uri=aor, to_uri=aor,
                headers=[("Contact", f"<sip:{agent}@127.0.0.1:{phone.local_port}>"),
                         ("Expires", "300")],
            )  # fmt: skip
            assert reg.status == 200, reg.summary
        carrier = stack.enter_context(SipClient(server.port, local_port=inbound))

        def rung() -> set[str]:
            """Call the number; which agents' phones ring. They ring (180) and the carrier
            cancels, as a caller who hangs up: every transaction ends cleanly."""
            ruri = f"sip:{NUMBER}@{DOMAIN}"
            inv = carrier.request(
                "INVITE", ruri, from_uri="sip:+4915112345678@127.0.0.1", to_uri=ruri,
                headers=[("Contact", f"<sip:c@127.0.0.1:{inbound}>")],
            )  # fmt: skip
            ringing = {}
            for agent, phone in phones.items():
                msg = phone.recv(1.5)
                if msg is not None and msg.method == "INVITE":
                    reply(phone, msg, "180 Ringing")
                    ringing[agent] = msg
            carrier.send(carrier.build_request(
                "CANCEL", ruri, from_uri=inv.from_uri, to_uri=ruri, call_id=inv.call_id,
                from_tag=inv.from_tag, branch=inv.branch,
            ))  # fmt: skip
            for agent, msg in ringing.items():
                reply(phones[agent], next_request(phones[agent], "CANCEL"), "200 OK")
                reply(phones[agent], msg, "487 Request Terminated")
                next_request(phones[agent], "ACK")
            assert carrier.final_response(inv, 5, retransmit=False).status == 487
            return set(ringing)

        assert rung() == {"anna", "ben"}
        r = api.put("/api/users/anna/status", json={"status": "break"}, auth=("anna", pw["anna"]))
        assert r.status_code == 200 and r.json()["status"] == "break", r.text
        # ben may not set anna's status; a client's owner does not even learn she exists
        r = api.put("/api/users/anna/status", json={"status": "available"}, auth=("ben", pw["ben"]))
        assert r.status_code == 403, r.text
        r = api.put("/api/users/anna/status", json={"status": "off"},
                    auth=("mueller", pw["mueller"]))  # fmt: skip
        assert r.status_code == 404, r.text
        board = api.get("/api/presence", auth=("ben", pw["ben"])).json()["presence"]
        anna = next(p for p in board if p["user"] == "anna")
        assert anna["agent_status"] == "break" and anna["status"] == "away", anna
        assert rung() == {"ben"}

        out = server.cli("user", "status", "anna", "available", "--data", str(server.data_dir))
        assert "status of anna: available" in out.stdout

        def available() -> bool:
            board = api.get("/api/presence", auth=("ben", pw["ben"])).json()["presence"]
            return next(p for p in board if p["user"] == "anna")["agent_status"] == "available"

        wait_until(lambda: available() or None, 10, interval=0.3, what="the office reload")
        assert rung() == {"anna", "ben"}
