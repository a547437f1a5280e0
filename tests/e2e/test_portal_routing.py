"""End-to-end: calls routed by the client portal's forwarding settings through the real
`heimbuero serve`, SIPp as the carrier and the phones of `mueller` (the owner) and `anna`
(an agent in group `team`): a closure day (Betriebsurlaub) sends the call to the office, and an
override with an end time set over the HTTP API ends by itself."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import Server, free_port, wait_until
from .test_routing import (
    BERLIN,
    CLIENT,
    DOMAIN,
    OWNER_TIMEOUT,
    Office,
    received_invites,
    rules_document,
    werktag_now,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]


class PortalOffice(Office):
    """The demo office of test_routing with the HTTP API on, and closures added before serve."""

    def __init__(
        self, tmp_path: Path, stack: contextlib.ExitStack, closed_today: bool = False
    ) -> None:
        self.tmp_path = tmp_path
        self.carrier_port = free_port()
        self.inbound_port = free_port()
        self.server = Server(
            tmp_path / "server",
            domain=DOMAIN,
            demo=True,
            http=True,
            sip_options={"trusted_peers": [f"127.0.0.1:{self.inbound_port}"]},
        )
        srv = self.server
        srv.prepare()
        srv.cli("trunk", "set", "carrier", "--address", f"127.0.0.1:{self.carrier_port}",
                "--data", str(srv.data_dir))  # fmt: skip
        self.import_rules(rules_document(werktag_now()))
        if closed_today:
            today = datetime.now(BERLIN).date()
            srv.cli("client", "closures", CLIENT, "--add", f"{today - timedelta(days=1)}",
                    f"{today + timedelta(days=1)}", "--note", "Betriebsurlaub",
                    "--data", str(srv.data_dir))  # fmt: skip
        stack.enter_context(srv)
        self.calls_made = 0


@pytest.fixture
def portal_office(tmp_path: Path) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:
        yield lambda **kw: PortalOffice(tmp_path, stack, **kw)


def test_closure_day_sends_the_call_to_the_office(portal_office: Any) -> None:
    """ "Werktag" matches now (it would ring the owner first), but today is inside a closure of
    mueller: the simulator names the closure and the default plan, and the carrier's call goes
    straight to the office (`anna` answers; the owner's registered phone gets no INVITE)."""
    office = portal_office(closed_today=True)
    plan = office.simulate()
    assert plan["rule"] is None and plan["reason"].startswith("closure day"), plan
    with (
        office.phone("mueller", "callee_busy.xml", calls=1) as mueller,
        office.phone("anna", "routing_callee_agent.xml", calls=1) as anna,
    ):
        office.carrier_call()
        anna.wait(15).check()
        assert received_invites(mueller) == [], "the owner's phone rang on a closure day"
    (rec,) = office.wait_records(1)
    assert (rec.answered_by, rec.result) == ("user:anna", "answered"), rec
    assert rec.rule != "Werktag", rec


def test_override_with_an_end_time_ends_by_itself(portal_office: Any) -> None:
    """The owner sets "everything to the office until T" over the HTTP API (T a few seconds
    ahead, in the client's local time without an offset): the API state shows it active with
    its end, the first call goes to the office (`anna`); after T, without anyone acting, the
    API shows it inactive and the next call follows "Werktag" again (the owner's phone rings
    first: busy, then anna)."""
    office = portal_office()
    auth = ("mueller", office.password("mueller"))
    base = office.server.http_url
    until = (datetime.now(BERLIN) + timedelta(seconds=8)).replace(microsecond=0, tzinfo=None)
    body = {"target": "office", "until": until.isoformat()}
    r = httpx.put(f"{base}/api/clients/{CLIENT}/override", json=body, auth=auth, timeout=10)
    assert r.status_code == 200, r.text
    state = r.json()
    assert state["active"] is True and state["until"] is not None, state
    assert office.simulate()["rule"] == "Override"
    # the running server reloads the office every 2 s: wait until its routing has this change
    [(revision,)] = office.server.sql("SELECT revision FROM office_revision")
    admin = ("admin", office.password("admin"))

    def routing_has_it() -> bool:
        s = httpx.get(f"{base}/api/status", auth=admin, timeout=10)
        return s.status_code == 200 and s.json()["office_revision"] >= revision

    wait_until(routing_has_it, 10, interval=0.2, what="the override to reach call routing")

    with (
        office.phone("mueller", "callee_busy.xml", calls=1) as mueller,
        office.phone("anna", "routing_callee_agent.xml", calls=2) as anna,
    ):
        started = time.monotonic()
        office.carrier_call()
        assert time.monotonic() - started < OWNER_TIMEOUT, "the owner's step was rung"
        assert received_invites(mueller) == []

        def expired() -> bool:
            s = httpx.get(f"{base}/api/clients/{CLIENT}/override", auth=auth, timeout=10)
            return s.status_code == 200 and s.json()["active"] is False

        wait_until(expired, 20, interval=0.5, what="the override to end at its end time")
        assert office.simulate()["rule"] == "Werktag"
        office.carrier_call()
        mueller.wait(15).check()
        anna.wait(15).check()

    first, second = office.wait_records(2)
    assert (first.rule, first.answered_by) == ("Override", "user:anna"), first
    assert (second.rule, second.step, second.answered_by) == ("Werktag", "2", "user:anna"), second
