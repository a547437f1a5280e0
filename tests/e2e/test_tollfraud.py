"""End-to-end tests of the policy against toll fraud on the demo office (the same setup as
test_routing.py: `heimbuero serve` on `init --demo` data, SIPp playing the carrier on the
trunk, carrier calls from a trusted port), with the HTTP API on:

- a forwarding rule to a 0900 number is refused by `rules import` and by
  `PUT /api/clients/mueller/rules`, each naming the rule's path;
- the concurrency cap of calls out: while one forwarded call to the owner's mobile talks, a
  second one is answered 503 with the reason, and the provider's log has the warning;
- `*21` from an employee of the client is refused (403) while the owner's works;
- a client name with CR/LF is refused by the CLI (one error line) and the API (422, field);
- a client user dials a German mobile number in national format: the call reaches the SIPp
  carrier with the client's number as caller ID and leaves a call record; a 0900 number is 403.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import HarnessError, Server, SipClient, SipMessage, run_sipp_caller, wait_until
from .test_routing import (
    CLIENT,
    DOMAIN,
    MOBILE,
    NUMBER,
    Office,
    received_invites,
    rules_document,
    werktag_not_now,
    werktag_now,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]

EMPLOYEE, EMPLOYEE_PASSWORD = "eva", "Leim-Zwinge-2024"


class PolicyOffice(Office):
    """The routing tests' office with the HTTP API on and an employee `eva` of `mueller`."""

    def __init__(
        self,
        tmp_path: Path,
        stack: contextlib.ExitStack,
        werktag: dict[str, Any],
        before_start: tuple[tuple[str, ...], ...] = (),
    ) -> None:
        self.before_start = before_start
        orig = Server.__init__

        def with_http(self: Server, *args: Any, **kw: Any) -> None:
            orig(self, *args, **{**kw, "http": True})

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Server, "__init__", with_http)
            super().__init__(tmp_path, stack, werktag)

    def import_rules(self, document: dict[str, Any]) -> None:
        """Also the employee and any `before_start` commands, before `serve` starts."""
        super().import_rules(document)
        if getattr(self, "prepared", False):
            return
        self.prepared = True
        srv = self.server
        srv.cli("user", "add", EMPLOYEE, "--password", EMPLOYEE_PASSWORD, "--role", "employee",
                "--data", self.data)  # fmt: skip
        srv.cli("user", "set", EMPLOYEE, "--client", CLIENT, "--data", self.data)
        for command in self.before_start:
            srv.cli(*command, "--data", self.data)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.http_url, timeout=10)

    def admin(self) -> tuple[str, str]:
        return ("admin", self.password("admin"))

    def dial(self, user: str, password: str, target: str, timeout: float = 5.0) -> SipMessage:
        """`target` dialled from a phone of `user` (digest auth): the final answer."""
        with SipClient(self.server.port) as c:
            ruri = f"sip:{target.replace('#', '%23')}@{DOMAIN}"
            _, final = c.authenticated_request(
                "INVITE", ruri, username=user, password=password, timeout=timeout,
                from_uri=f"sip:{user}@{DOMAIN}", to_uri=ruri,
                headers=[("Contact", f"<sip:{user}@127.0.0.1:{c.local_port}>")],
            )  # fmt: skip
            return final


@pytest.fixture
def policy_office(tmp_path: Path) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:
        yield lambda werktag, *before: PolicyOffice(tmp_path, stack, werktag, before)


def premium_document() -> dict[str, Any]:
    doc = rules_document(werktag_now())
    # rules[3] "Sonst", step 2: the owner's mobile replaced by a premium number
    doc["numbers"][NUMBER]["rules"][3]["steps"][1]["targets"] = ["external:+499001234567"]
    return doc


PREMIUM_PATH = f"numbers.{NUMBER}.rules[3].steps[1].targets[0]"


def test_forwarding_to_0900_is_refused_by_import_and_http_with_its_path(
    policy_office: Any,
) -> None:
    office = policy_office(werktag_now())
    path = office.tmp_path / "premium.json"
    path.write_text(json.dumps(premium_document()), encoding="utf-8")
    res = office.server.cli("rules", "import", CLIENT, str(path), "--data", office.data,
                            check=False)  # fmt: skip
    assert res.returncode == 1, res
    assert f"{PREMIUM_PATH}: +499001234567: destination not allowed: premium rate" in res.stderr
    assert "nothing changed" in res.stderr
    # approving it does not help: the class is refused
    res = office.server.cli("client", "approve-number", CLIENT, "+499001234567",
                            "--data", office.data, check=False)  # fmt: skip
    assert res.returncode == 1 and res.stderr.count("heimbuero: error:") == 1, res
    with office.http() as http:
        owner = ("mueller", office.password("mueller"))
        put = http.put(f"/api/clients/{CLIENT}/rules", json=premium_document(), auth=owner)
        assert put.status_code == 422, put.text
        [problem] = put.json()["detail"]
        assert problem["loc"] == PREMIUM_PATH and "premium rate" in problem["msg"]
        # a mobile the admin did not approve: refused too; after approval over HTTP: accepted
        doc = premium_document()
        doc["numbers"][NUMBER]["rules"][3]["steps"][1]["targets"] = ["external:+491702222222"]
        put = http.put(f"/api/clients/{CLIENT}/rules", json=doc, auth=owner)
        assert put.status_code == 422 and "not approved" in put.text, put.text
        approve = http.post(f"/api/clients/{CLIENT}/approved-numbers",
                            json={"number": "+491702222222"}, auth=owner)  # fmt: skip
        assert approve.status_code == 403  # only admins approve
        approve = http.post(f"/api/clients/{CLIENT}/approved-numbers",
                            json={"number": "+491702222222"}, auth=office.admin())  # fmt: skip
        assert approve.status_code == 201, approve.text
        assert http.put(f"/api/clients/{CLIENT}/rules", json=doc, auth=owner).status_code == 200


def test_concurrency_cap_answers_503_and_warns(policy_office: Any) -> None:
    """Cap 1 call out at once for the client: the first after-hours call goes out through the
    trunk to the owner's mobile (approved by `init --demo`) and talks; a second one meanwhile
    is answered 503 with the reason, never reaches the carrier, and the log has the warning."""
    office = policy_office(werktag_not_now(), ("client", "policy", CLIENT, "--max-concurrent", "1"))
    events: list[str] = []
    listening = threading.Event()

    def watch() -> None:  # the provider's staff stream, as a dashboard would read it
        with (
            contextlib.suppress(httpx.HTTPError),
            office.http() as http,
            http.stream("GET", "/api/events", auth=office.admin(), timeout=15) as r,
        ):
            for line in r.iter_lines():
                listening.set()
                events.append(line)
                if line.startswith("data:"):
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert listening.wait(10), "GET /api/events did not open"
    with office.carrier_uas() as carrier:
        with office.start_carrier_call(talk_ms=6000) as first:
            wait_until(lambda: office.records() or None, 10, what="the first call's record")
            # the owner dials out meanwhile: the same client's cap
            final = office.dial("mueller", office.password("mueller"), "01702222222")
            assert (final.status, final.reason) == (503, "Too many calls out at once"), final
            result = first.wait()
        carrier_result = carrier.wait(15)
    watcher.join(15)
    assert "event: warning" in events, events
    warning = json.loads(events[-1].removeprefix("data:"))
    assert (warning["client"], warning["status"], warning["kind"]) == (CLIENT, 503, "call_out_cap")
    if result.returncode != 0 or carrier_result.returncode != 0:
        raise HarnessError(f"{result.report()}\n{office.server.log_text()}")
    assert len(received_invites(carrier_result)) == 1
    log = office.server.log_text()
    assert "reached its cap of 1 concurrent calls out" in log, log


def test_star21_from_an_employee_is_refused_the_owners_works(policy_office: Any) -> None:
    office = policy_office(werktag_now())

    refused = office.dial(EMPLOYEE, EMPLOYEE_PASSWORD, "*21")
    assert (refused.status, refused.reason) == (
        403,
        "Only the client's owner may change its forwarding",
    ), refused
    assert office.simulate()["rule"] == "Werktag"  # nothing changed
    assert office.feature_code("*21").status == 603
    wait_until(lambda: office.simulate()["rule"] == "Override", 10, what="the override")


def test_client_name_with_crlf_is_refused_by_cli_and_api(policy_office: Any) -> None:
    office = policy_office(werktag_now())
    res = office.server.cli("client", "add", "evil", "--name", "Evil\r\nVia: SIP/2.0/UDP x",
                            "--data", office.data, check=False)  # fmt: skip
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "heimbuero: error: invalid client name: contains the control character U+000D"
    ]
    with office.http() as http:
        r = http.post("/api/clients", json={"id": "evil", "name": "Evil\r\nX: y"},
                      auth=office.admin())  # fmt: skip
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["field"] == "body.name"
        r = http.patch(f"/api/users/{EMPLOYEE}", json={"display_name": "\u202eeva"},
                       auth=office.admin())  # fmt: skip
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.display_name"
        assert "evil" not in [c["id"] for c in http.get("/api/clients",
                                                        auth=office.admin()).json()]  # fmt: skip


def test_a_client_user_dials_a_mobile_out_and_premium_is_refused(policy_office: Any) -> None:
    office = policy_office(werktag_now())
    owner = office.password("mueller")
    with office.carrier_uas() as carrier:
        final = office.dial("mueller", owner, "09001234567")
        assert (final.status, final.reason) == (403, "Destination not allowed: premium rate")
        caller = run_sipp_caller(
            office.tmp_path, office.server, user="mueller", password=owner,
            callee="01702222222", extra=["-d", "300"],
        )  # fmt: skip
        if caller.returncode != 0:
            raise HarnessError(f"{caller.report()}\n{office.server.log_text()}")
        carrier_result = carrier.wait(15)
    (invite,) = received_invites(carrier_result)
    assert invite.start_line.startswith(f"INVITE sip:+491702222222@127.0.0.1:{office.carrier_port}")
    assert NUMBER in (invite.header("P-Asserted-Identity") or "")
    recs = wait_until(
        lambda: [r for r in office.records() if r.rule == "dial-out"] or None,
        10,
        what="the dial-out records",
    )
    numbers = sorted(r.number for r in recs)
    assert numbers == ["+491702222222", "+499001234567"], recs
    assert MOBILE not in numbers
