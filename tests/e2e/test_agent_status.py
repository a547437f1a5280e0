"""The agent's desk, end to end: an agent's own status (anna goes on break in the console's
API; a call to the client's number rings the team without her; presence shows her away; back
to available by the CLI, the next team call rings her again), and the screen pop (the client's
card reaches the ringing agent's console over its event stream)."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from pathlib import Path

import httpx
import pytest

from .harness import Server, SipClient, free_port, next_request, reply, wait_until

pytestmark = [pytest.mark.e2e]

DOMAIN = "office.heimbuero.test"
NUMBER = "+49891234567"  # the demo client mueller's number


def team_office(tmp_path: Path) -> tuple[Server, int]:
    """The demo office whose mueller number rings the team (anna, ben); the carrier's port."""
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
    return server, inbound


def register(server: Server, phone: SipClient, agent: str) -> None:
    aor = f"sip:{agent}@{DOMAIN}"
    _, reg = phone.authenticated_request(
        "REGISTER", f"sip:{DOMAIN}", username=agent, password=server.demo_passwords[agent],
        from_uri=aor, to_uri=aor,
        headers=[("Contact", f"<sip:{agent}@127.0.0.1:{phone.local_port}>"), ("Expires", "300")],
    )  # fmt: skip
    assert reg.status == 200, reg.summary


def test_an_agent_on_break_is_not_rung_by_team_calls(tmp_path: Path) -> None:
    server, inbound = team_office(tmp_path)
    pw = server.demo_passwords
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        api = stack.enter_context(httpx.Client(base_url=server.http_url, timeout=10))
        phones: dict[str, SipClient] = {}
        for agent in ("anna", "ben"):
            phones[agent] = stack.enter_context(SipClient(server.port))
            register(server, phones[agent], agent)
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


def test_the_screen_pop_shows_the_clients_card_on_the_ringing_agents_console(
    tmp_path: Path,
) -> None:
    server, inbound = team_office(tmp_path)
    pw = server.demo_passwords
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        admin = ("admin", pw["admin"])
        r = httpx.patch(
            f"{server.http_url}/api/clients/mueller", auth=admin, timeout=10,
            json={"greeting": "Tischlerei Müller, Sie sprechen mit Anna, guten Tag!",
                  "notes": "Notdienst nur für Stammkunden"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        [(revision,)] = server.sql("SELECT revision FROM office_revision")

        def routing_has_it() -> bool:  # (the server reloads the office every 2 s)
            s = httpx.get(f"{server.http_url}/api/status", auth=admin, timeout=10)
            return s.status_code == 200 and s.json()["office_revision"] >= revision

        wait_until(routing_has_it, 10, interval=0.2, what="the greeting to reach call routing")
        anna = stack.enter_context(SipClient(server.port))
        register(server, anna, "anna")
        console = stack.enter_context(
            httpx.Client(base_url=server.http_url, timeout=10, follow_redirects=True)
        )
        page = console.get("/")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = console.post("/login", data={"csrf": token, "name": "anna", "password": pw["anna"]})
        assert r.status_code == 200 and 'id="screenpop"' in console.get("/console").text
        events: list[tuple[str, dict[str, object]]] = []

        def listen() -> None:  # the console's EventSource
            with contextlib.suppress(httpx.HTTPError), console.stream("GET", "/events") as es:
                kind = ""
                for line in es.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        events.append((kind, json.loads(line[6:])))
                        if kind == "ringing":
                            return

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        wait_until(lambda: events or None, 5, interval=0.1, what="the stream's snapshot")
        carrier = stack.enter_context(SipClient(server.port, local_port=inbound))
        ruri = f"sip:{NUMBER}@{DOMAIN}"
        carrier.request("INVITE", ruri, from_uri="sip:+4915112345678@127.0.0.1", to_uri=ruri,
                        headers=[("Contact", f"<sip:c@127.0.0.1:{inbound}>")])  # fmt: skip
        ring = next_request(anna, "INVITE")
        reply(anna, ring, "180 Ringing")
        reader.join(10)
        cards = [d for k, d in events if k == "ringing"]
        assert cards, events
        card = cards[0]
        assert card["name"] == "Tischlerei Müller" and card["client"] == "mueller", card
        assert card["greeting"] == "Tischlerei Müller, Sie sprechen mit Anna, guten Tag!"
        assert card["notes"] == "Notdienst nur für Stammkunden"
        assert card["number"] == NUMBER and "+4915112345678" in str(card["caller"]), card
