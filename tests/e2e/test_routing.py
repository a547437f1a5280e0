"""End-to-end tests of call routing on the demo office: carrier calls to a client number, routed
by the client's rules through the real `heimbuero serve`, with SIPp playing the carrier (its
inbound calls and, through the trunk, the owner's mobile) and the phones of `mueller` (the
client's owner) and `anna` (an agent in group `team`).

Every test starts its own server on `heimbuero init --demo` data, then, before `serve`:
- imports a variant of the demo rules for +49891234567 (`heimbuero rules import`), because
  routing depends on the wall clock: the "Werktag" rule is made to match now (all seven days,
  all day, no holiday exclusion) or made to miss now (a one-minute window twelve hours away),
  and every ring timeout is a few seconds so that the suite is fast;
- points the trunk `carrier` at a SIPp UAS on a free port (`heimbuero trunk set`);
- lists the carrier's calling socket in `[sip] trusted_peers`.
Before each call `heimbuero route simulate --json` names the rule; afterwards the call record
(`heimbuero calls list`) must name the same rule, with the step, who answered and the result.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from .harness import (
    HarnessError,
    Server,
    SipClient,
    SipMessage,
    SippProcess,
    SippResult,
    free_port,
    parse_message,
    start_sipp,
    start_sipp_callee,
    start_sipp_uas,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]

DOMAIN = "office.heimbuero.test"
CLIENT = "mueller"
CLIENT_NAME = "Tischlerei Müller"
NUMBER = "+49891234567"  # the demo client's number
MOBILE = "+491701111111"  # the demo owner's mobile, reached through the trunk
CALLER = "+4915112345678"  # whoever calls the client, as the carrier presents it
BERLIN = ZoneInfo("Europe/Berlin")

OWNER_TIMEOUT = 3  # s: ring time of the owner's step (demo: 15)
TEAM_TIMEOUT = 4  # s: ring time of the team / mobile steps (demo: 30 / 20)
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


# --------------------------------------------------------------------------------------------
# rules documents


def rules_document(
    werktag_when: dict[str, Any], owner_timeout: int = OWNER_TIMEOUT
) -> dict[str, Any]:
    """The demo rules of +49891234567 with short timeouts and the given "Werktag" condition."""
    return {
        "client": CLIENT,
        "numbers": {
            NUMBER: {
                "rules": [
                    {
                        "name": "Override",
                        "when": {"override": "office"},
                        "steps": [{"targets": ["group:team"], "timeout": TEAM_TIMEOUT}],
                    },
                    {
                        "name": "Override Handy",
                        "when": {"override": "mobile"},
                        "steps": [{"targets": [f"external:{MOBILE}"], "timeout": TEAM_TIMEOUT}],
                    },
                    {
                        "name": "Werktag",
                        "when": werktag_when,
                        "steps": [
                            {"targets": ["user:mueller"], "timeout": owner_timeout},
                            {"targets": ["group:team"], "timeout": TEAM_TIMEOUT},
                        ],
                    },
                    {
                        "name": "Sonst",
                        "steps": [
                            {"targets": ["group:team"], "timeout": OWNER_TIMEOUT},
                            {"targets": [f"external:{MOBILE}"], "timeout": TEAM_TIMEOUT},
                        ],
                    },
                ]
            }
        },
    }


def werktag_now() -> dict[str, Any]:
    """A "Werktag" that matches at any time: every day, all day, holidays and closures ignored."""
    return {"days": ALL_DAYS, "time": "00:00-24:00", "holidays": "ignore", "closures": "ignore"}


def werktag_not_now() -> dict[str, Any]:
    """A "Werktag" that does not match now: one minute, twelve hours from now (Europe/Berlin)."""
    start = (datetime.now(BERLIN) + timedelta(hours=12)).replace(second=0, microsecond=0)
    if start.hour == 23 and start.minute == 59:
        start -= timedelta(minutes=1)
    end = start + timedelta(minutes=1)
    return {"days": ALL_DAYS, "time": f"{start:%H:%M}-{end:%H:%M}", "holidays": "ignore"}


# --------------------------------------------------------------------------------------------
# the office under test


@dataclass
class CallRecord:
    started: str
    client: str
    number: str
    caller: str
    rule: str
    step: str
    answered_by: str
    ring_seconds: float
    talk_seconds: float
    result: str
    audio_loss: str = "-"  # the worse direction's loss when the media relay carried the call
    jitter_ms: str = "-"  # ... and its jitter
    id: int = 0
    transferred_from: str = "-"  # the id of the record the call was transferred from
    end_reason: str = "-"  # why the call ended


def parse_calls_table(text: str) -> list[CallRecord]:
    """`heimbuero calls list` output (a table padded to the header's columns) -> records."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() == "no call records":
        return []
    header = lines[0]
    names = ["ID", "STARTED (UTC)", "CLIENT", "NUMBER", "CALLER", "RULE", "STEP", "ANSWERED BY",
             "RING s", "TALK s", "RESULT", "AUDIO LOSS", "JITTER ms",
             "TRANSFERRED FROM", "END REASON"]  # fmt: skip
    starts = [header.index(n) for n in names]
    out = []
    for line in lines[1:]:
        cells = [
            line[a : (starts[i + 1] if i + 1 < len(starts) else len(line))].strip()
            for i, a in enumerate(starts)
        ]
        out.append(
            CallRecord(
                id=int(cells[0]),
                started=cells[1],
                client=cells[2],
                number=cells[3],
                caller=cells[4],
                rule=cells[5],
                step=cells[6],
                answered_by=cells[7],
                ring_seconds=float(cells[8]),
                talk_seconds=float(cells[9]),
                result=cells[10],
                audio_loss=cells[11],
                jitter_ms=cells[12],
                transferred_from=cells[13],
                end_reason=cells[14],
            )
        )
    return out


class Office:
    """`heimbuero serve` on the demo data, with the trunk pointed at a SIPp carrier UAS port
    and one trusted port from which the carrier's inbound calls come."""

    def __init__(
        self,
        tmp_path: Path,
        stack: contextlib.ExitStack,
        werktag: dict[str, Any],
        owner_timeout: int = OWNER_TIMEOUT,
    ) -> None:
        self.tmp_path = tmp_path
        self.carrier_port = free_port()  # the trunk's address: the carrier UAS listens here
        self.inbound_port = free_port()  # the carrier's calls to the office come from here
        self.server = Server(
            tmp_path / "server",
            domain=DOMAIN,
            demo=True,
            sip_options={"trusted_peers": [f"127.0.0.1:{self.inbound_port}"]},
        )
        srv = self.server
        srv.prepare()
        for name in ("admin", "anna", "ben", "mueller", "schulz"):
            assert name in srv.demo_passwords, srv.demo_passwords
        srv.cli("trunk", "set", "carrier", "--address", f"127.0.0.1:{self.carrier_port}",
                "--data", str(srv.data_dir))  # fmt: skip
        self.import_rules(rules_document(werktag, owner_timeout))
        stack.enter_context(srv)
        self.calls_made = 0

    @property
    def data(self) -> str:
        return str(self.server.data_dir)

    def password(self, user: str) -> str:
        return self.server.demo_passwords[user]

    def import_rules(self, document: dict[str, Any]) -> None:
        path = self.tmp_path / f"rules-{CLIENT}.json"
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        self.server.cli("rules", "import", CLIENT, str(path), "--data", self.data)

    def simulate(self) -> dict[str, Any]:
        res = self.server.cli("route", "simulate", NUMBER, "--json", "--data", self.data)
        plan: dict[str, Any] = json.loads(res.stdout)
        assert plan["client"] == CLIENT, plan
        return plan

    def records(self) -> list[CallRecord]:
        res = self.server.cli("calls", "list", "--client", CLIENT, "--limit", "100",
                              "--data", self.data)  # fmt: skip
        return parse_calls_table(res.stdout)

    def wait_records(self, count: int, timeout: float = 10) -> list[CallRecord]:
        """Wait until `count` records exist and none is still in progress; oldest first."""

        def done() -> list[CallRecord] | None:
            recs = self.records()
            if len(recs) >= count and all(r.result != "in progress" for r in recs):
                return list(reversed(recs))
            return None

        try:
            return wait_until(done, timeout, interval=0.3, what=f"{count} finished call records")
        except HarnessError as exc:
            raise HarnessError(f"{exc}; records now: {self.records()}") from None

    def phone(
        self, user: str, on_invite: str, calls: int = 1, port: int | None = None
    ) -> SippProcess:
        """A registered SIPp phone of `user` (pass the same `port` to replace an earlier
        phone's binding rather than add a second device)."""
        return start_sipp_callee(
            self.tmp_path,
            self.server,
            user=user,
            password=self.password(user),
            on_invite=on_invite,
            calls=calls,
            port=port,
            timeout=60,
        )

    def carrier_uas(self) -> SippProcess:
        """SIPp playing the carrier on the trunk's address: answers one forwarded call."""
        return start_sipp_uas(
            self.tmp_path, "carrier", port=self.carrier_port,
            scenario="routing_carrier_uas.xml", calls=1, timeout=40,
        )  # fmt: skip

    def start_carrier_call(self, talk_ms: int = 300) -> SippProcess:
        """The carrier calls the client's number from the trusted port (no credentials)."""
        self.calls_made += 1
        return start_sipp(
            self.tmp_path,
            f"carrier-call-{self.calls_made}",
            scenario="caller_trusted.xml",
            remote=self.server.address,
            port=self.inbound_port,
            calls=1,
            timeout=40,
            service=NUMBER,
            keys={"domain": DOMAIN, "caller": CALLER},
            extra=["-d", str(talk_ms)],
        )

    def carrier_call(self, talk_ms: int = 300) -> SippResult:
        """A carrier call that must be answered and hung up through the proxy (SIPp exit 0)."""
        with self.start_carrier_call(talk_ms) as proc:
            result = proc.wait()
        if result.returncode != 0:
            raise HarnessError(f"{result.report()}\n{self.server.log_text()}")
        assert not any(" 401 " in s or " 407 " in s for s in result.received_first_lines())
        return result

    def unanswered_call(self, timeout: float = 20) -> SipMessage:
        """A carrier call nobody answers: its final response (the ACK is sent)."""
        self.calls_made += 1
        with SipClient(self.server.port, local_port=self.inbound_port) as c:
            ruri = f"sip:{NUMBER}@{DOMAIN}"
            req = c.request(
                "INVITE",
                ruri,
                from_uri=f"sip:{CALLER}@127.0.0.1:{self.inbound_port}",
                to_uri=ruri,
                headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{self.inbound_port}>")],
            )
            return c.final_response(req, timeout)

    def feature_code(self, code: str) -> SipMessage:
        """`code` dialled from the owner's phone (digest auth as mueller): the final answer."""
        with SipClient(self.server.port) as c:
            ruri = f"sip:{code.replace('#', '%23')}@{DOMAIN}"
            _, final = c.authenticated_request(
                "INVITE",
                ruri,
                username="mueller",
                password=self.password("mueller"),
                from_uri=f"sip:mueller@{DOMAIN}",
                to_uri=ruri,
                headers=[("Contact", f"<sip:mueller@127.0.0.1:{c.local_port}>")],
            )
            return final


@pytest.fixture
def office_factory(tmp_path: Path) -> Iterator[Any]:
    with contextlib.ExitStack() as stack:
        yield lambda werktag, **kw: Office(tmp_path, stack, werktag, **kw)


# --------------------------------------------------------------------------------------------
# reading SIPp's message traces


def received_messages(result: SippResult | SippProcess) -> list[SipMessage]:
    """Every message a SIPp run received, parsed (from its -trace_msg file)."""
    res = result.result() if isinstance(result, SippProcess) else result
    out = []
    for block in re.split(r"-{20,} [^\n]*\n", res.messages()):
        m = re.search(r"message received \[\d+\] bytes\s*:\s*\n\s*\n", block)
        if not m:
            continue
        text = block[m.end() :].replace("\r\n", "\n").rstrip("\n")
        head, _, body = text.partition("\n\n")
        out.append(parse_message(head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body.encode()))
    return out


def received_invites(result: SippResult | SippProcess) -> list[SipMessage]:
    return [m for m in received_messages(result) if m.method == "INVITE"]


def logged_calls(office: Any) -> list[tuple[str, str, str, str]]:
    """(rule, outcome, answered by, talk seconds) of each call's log line in the server log."""
    log = office.server.log_path.read_text(encoding="utf-8")
    pattern = (
        rf"INFO heimbuero\.calls: call number={re.escape(NUMBER)} client={CLIENT} rule=(\S+) "
        r"outcome=(\S+) answered_by=(\S+) ring=\d+\.\ds talk=(\d+\.\d)s\n"
    )
    return re.findall(pattern, log)


def steps_of(plan: dict[str, Any]) -> list[tuple[list[str], int]]:
    return [(s["targets"], s["timeout"]) for s in plan["steps"]]


WERKTAG_STEPS = [(["user:mueller"], OWNER_TIMEOUT), (["group:team"], TEAM_TIMEOUT)]
SONST_STEPS = [(["group:team"], OWNER_TIMEOUT), ([f"external:{MOBILE}"], TEAM_TIMEOUT)]


# --------------------------------------------------------------------------------------------
# the flows


def test_weekday_owner_busy_then_agent_answers(office_factory: Any) -> None:
    """ "Werktag" made to match now (all days, all day; owner 3 s, team 4 s): the carrier's call
    rings the owner `mueller` (486 Busy), then group `team`, where `anna` answers; the call is
    ACKed and hung up through the proxy. Anna's phone shows the client ("Tischlerei Müller:
    +49…" in From, X-Heimbuero-Client: mueller); the record says Werktag, step 2, user:anna."""
    office = office_factory(werktag_now())
    plan = office.simulate()
    assert plan["rule"] == "Werktag", plan
    assert steps_of(plan) == WERKTAG_STEPS, plan

    with (
        office.phone("mueller", "callee_busy.xml") as mueller,
        office.phone("anna", "routing_callee_agent.xml") as anna,
    ):
        started = time.monotonic()
        caller = office.carrier_call()
        elapsed = time.monotonic() - started
        mueller_result = mueller.wait(15).check()
        anna_result = anna.wait(15).check()

    # busy moved on at once, not after the owner's ring time
    assert elapsed < OWNER_TIMEOUT + 2, f"busy owner held the call for {elapsed:.1f} s"
    assert "SIP/2.0 200" in " ".join(caller.received_first_lines())
    assert len(received_invites(mueller_result)) == 1
    (invite,) = received_invites(anna_result)
    from_ = invite.header("From") or ""
    assert re.match(r'\s*"Tischlerei M(ü|\\xfc|u)ller: ', from_), from_
    assert CALLER in from_.split(">")[0], from_
    assert invite.header("X-Heimbuero-Client") == CLIENT, invite.raw
    # what anna answered was the client number's call, with the caller's identity kept
    assert f"sip:{CALLER}@" in from_

    (rec,) = office.wait_records(1)
    assert (rec.client, rec.number, rec.rule) == (CLIENT, NUMBER, plan["rule"]), rec
    assert (rec.step, rec.answered_by, rec.result) == ("2", "user:anna", "answered"), rec
    assert CALLER in rec.caller, rec
    assert rec.talk_seconds > 0, rec
    # one log line for the call, at its end, and one per registration change of the phones
    ((rule, outcome, answered_by, talk),) = logged_calls(office)
    assert (rule, outcome, answered_by) == ('"Werktag"', "answered", "user:anna")
    assert float(talk) > 0
    log = office.server.log_path.read_text(encoding="utf-8")
    assert re.search(r"INFO heimbuero\.registrar: registration registered user=anna ", log)


def test_weekday_no_answer_moves_on_after_step_timeout(office_factory: Any) -> None:
    """ "Werktag" made to match now (owner 3 s, team 4 s): the owner's phone rings (180) and never
    answers; after the owner step's 3 s the proxy CANCELs that branch and `anna` gets the call
    and answers. The record says Werktag, step 2, user:anna, with at least 3 s of ringing."""
    office = office_factory(werktag_now())
    plan = office.simulate()
    assert plan["rule"] == "Werktag", plan
    assert steps_of(plan) == WERKTAG_STEPS, plan

    with (
        office.phone("mueller", "callee_cancelled.xml") as mueller,
        office.phone("anna", "routing_callee_agent.xml") as anna,
    ):
        with office.start_carrier_call() as call:
            mueller.wait_for_message(r"INVITE sip:mueller@", 10)
            t_owner = time.monotonic()
            anna.wait_for_message(r"INVITE sip:anna@", OWNER_TIMEOUT + 10)
            t_agent = time.monotonic()
            caller = call.wait()
        if caller.returncode != 0:
            raise HarnessError(f"{caller.report()}\n{office.server.log_text()}")
        # callee_cancelled.xml counts the call only once the CANCEL came: exit 0 proves it
        mueller_result = mueller.wait(15).check()
        anna.wait(15).check()

    waited = t_agent - t_owner
    assert OWNER_TIMEOUT - 0.5 <= waited <= OWNER_TIMEOUT + 2.5, (
        f"anna's INVITE came {waited:.2f} s after mueller's; the owner step rings {OWNER_TIMEOUT} s"
    )
    assert any(m.method == "CANCEL" for m in received_messages(mueller_result))

    (rec,) = office.wait_records(1)
    assert rec.rule == plan["rule"] == "Werktag", rec
    assert (rec.step, rec.answered_by, rec.result) == ("2", "user:anna", "answered"), rec
    assert rec.ring_seconds >= OWNER_TIMEOUT - 0.5, rec


def test_after_hours_falls_through_to_the_mobile_via_the_trunk(office_factory: Any) -> None:
    """ "Werktag" made to miss now (a one-minute window twelve hours away): "Sonst" matches; group
    `team` has nobody registered and is skipped, so the call goes out through the trunk to the
    owner's mobile. The SIPp UAS playing the carrier sees INVITE sip:+491701111111@…, the
    original caller in From and P-Asserted-Identity, the client number in Diversion and
    History-Info, and answers; the call completes. Record: Sonst, step 2, external:+49170…"""
    office = office_factory(werktag_not_now())
    plan = office.simulate()
    assert plan["rule"] == "Sonst", plan
    assert steps_of(plan) == SONST_STEPS, plan

    with office.carrier_uas() as carrier:
        office.carrier_call()
        carrier_result = carrier.wait(15)
    if carrier_result.returncode != 0:
        raise HarnessError(f"{carrier_result.report()}\n{office.server.log_text()}")

    (invite,) = received_invites(carrier_result)
    assert invite.start_line.startswith(f"INVITE sip:{MOBILE}@127.0.0.1:{office.carrier_port}")
    from_ = invite.header("From") or ""
    assert f"sip:{CALLER}@" in from_ and "Tischlerei" not in from_, from_
    pai = invite.header("P-Asserted-Identity") or ""
    assert CALLER in pai, pai
    diversion = invite.header("Diversion") or ""
    assert NUMBER in diversion and "reason=" in diversion, diversion
    history = " , ".join(invite.header_values("History-Info"))
    assert NUMBER in history and "index=" in history, history

    (rec,) = office.wait_records(1)
    assert rec.rule == plan["rule"] == "Sonst", rec
    assert (rec.step, rec.answered_by, rec.result) == ("2", f"external:{MOBILE}", "answered"), rec


def test_feature_code_star21_sends_the_next_call_to_the_team(office_factory: Any) -> None:
    """ "Werktag" made to match now (owner 3 s, team 4 s). The owner dials *21 from his phone
    (digest auth as mueller): 603 with a confirmation text; the simulator now names the rule
    "Override", and the next carrier call goes straight to `anna` (the owner's registered phone
    gets no INVITE). After #21 (603 again) "Werktag" decides again: owner busy, then anna."""
    office = office_factory(werktag_now())
    assert office.simulate()["rule"] == "Werktag"

    with (
        office.phone("mueller", "callee_busy.xml", calls=1) as mueller,
        office.phone("anna", "routing_callee_agent.xml", calls=2) as anna,
    ):
        on = office.feature_code("*21")
        assert on.status == 603, on.raw
        reason = on.header("Reason") or ""
        assert "text=" in reason and len(on.reason) > 3, on.raw
        plan = office.simulate()
        assert plan["rule"] == "Override", plan
        assert steps_of(plan) == [(["group:team"], TEAM_TIMEOUT)], plan

        started = time.monotonic()
        office.carrier_call()
        assert time.monotonic() - started < OWNER_TIMEOUT, "the owner's step was rung"
        assert received_invites(mueller) == [], "the owner's phone rang despite *21"
        assert len(received_invites(anna)) == 1

        off = office.feature_code("#21")
        assert off.status == 603, off.raw
        assert off.reason != on.reason, (on.reason, off.reason)
        plan2 = office.simulate()
        assert plan2["rule"] == "Werktag", plan2

        office.carrier_call()
        mueller.wait(15).check()
        anna.wait(15).check()

    first, second = office.wait_records(2)
    assert (first.rule, first.step, first.answered_by) == ("Override", "1", "user:anna"), first
    assert (second.rule, second.step, second.answered_by) == ("Werktag", "2", "user:anna"), second
    assert first.result == second.result == "answered"


def test_unanswered_calls_leave_busy_and_no_answer_records(office_factory: Any) -> None:
    """ "Werktag" made to match now (owner 3 s, team 4 s), nobody of `team` registered. A call
    while the owner is busy ends 486 at once (record: busy); a call the owner lets ring ends
    after the owner step's 3 s (the team step has nobody to ring) with 408 (record: no_answer)."""
    office = office_factory(werktag_now())
    plan = office.simulate()
    assert plan["rule"] == "Werktag", plan

    phone_port = free_port()  # both phones are the same device: one binding
    with office.phone("mueller", "callee_busy.xml", port=phone_port) as mueller:
        busy = office.unanswered_call()
        mueller.wait(15).check()
    assert busy.status == 486, busy.raw

    with office.phone("mueller", "callee_cancelled.xml", port=phone_port) as mueller:
        started = time.monotonic()
        no_answer = office.unanswered_call()
        waited = time.monotonic() - started
        mueller.wait(15).check()
    assert no_answer.status in (408, 480), no_answer.raw
    assert waited >= OWNER_TIMEOUT - 0.5, waited

    first, second = office.wait_records(2)
    for rec in (first, second):
        assert rec.rule == plan["rule"], rec
        assert rec.answered_by == "-", rec
    assert (first.result, first.end_reason) == ("busy", "busy"), first
    # the owner's ring time ran out (408); 480 would say nobody could be rung at all
    reason = "no_answer" if no_answer.status == 408 else "unavailable"
    assert (second.result, second.end_reason) == ("no_answer", reason), second
    assert [(rule, outcome, by) for rule, outcome, by, _ in logged_calls(office)] == [
        ('"Werktag"', "busy", "-"),
        ('"Werktag"', "no_answer", "-"),
    ]


def test_call_ringing_when_the_server_stops_gets_a_finished_record(office_factory: Any) -> None:
    """ "Werktag" made to match now, the owner's step ringing 20 s. While the owner's phone rings
    the server gets SIGTERM: the caller is answered (503) and the call's record must be finished
    by the stop itself (a result, and ring time up to the stop), not left "in progress" until the
    next start, which would also count the downtime as ring time (billing charges from it)."""
    office = office_factory(werktag_now(), owner_timeout=20)
    assert office.simulate()["rule"] == "Werktag"
    srv = office.server
    with office.phone("mueller", "callee_cancelled.xml") as mueller:
        with SipClient(srv.port, local_port=office.inbound_port) as c:
            ruri = f"sip:{NUMBER}@{DOMAIN}"
            sent_at = time.monotonic()
            req = c.request(
                "INVITE",
                ruri,
                from_uri=f"sip:{CALLER}@127.0.0.1:{office.inbound_port}",
                to_uri=ruri,
                headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{office.inbound_port}>")],
            )
            mueller.wait_for_message(r"INVITE sip:mueller@", 10)
            stopped_at = time.monotonic()
            assert srv.stop() == 0, srv.log_text()
            final = c.final_response(req, 5, retransmit=False)
        mueller.stop()
    assert final.status == 503, final.raw
    (rec,) = office.records()
    assert rec.rule == "Werktag", rec
    assert rec.result != "in progress", (
        f"the record of a call ringing at SIGTERM is left open after a clean stop: {rec}"
    )
    assert rec.ring_seconds <= stopped_at - sent_at + 1.0, rec
    assert rec.end_reason == "server_stopped", rec
