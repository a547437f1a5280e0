"""Routed calls executed by the SIP core, sans-IO: a RoutePlan's steps become branches.

The call log here is an in-memory recorder (a unit-test stand-in for the store); the same
flows run through `heimbuero serve` with real SIPp peers in tests/e2e/test_routing.py.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import test_core as t  # the sans-IO harness of the core tests (same folder)

from heimbuero.office.model import (
    Client,
    Directory,
    Group,
    Number,
    Override,
    Provider,
    Rule,
    Step,
    Trunk,
    User,
    When,
)
from heimbuero.services.calls import CallRouting
from heimbuero.sip.message import Request, Response

NUMBER = "+49891234567"
MOBILE = "+491701111111"
TRUNK = ("udp", "127.0.0.1", 5090)
MUELLER = ("udp", "127.0.0.1", 41001)
ANNA = ("udp", "127.0.0.1", 41002)
TEAM_STEP = Step(("group:team",), 4)


class Recorder:
    """Keeps what the server would write to the store."""

    def __init__(self) -> None:
        self.records: dict[int, dict[str, object]] = {}
        self.overrides: dict[str, Override | None] = {}

    def call_started(self, call_id: str, number: str, caller: str, at: datetime,
                     client: str | None, rule: str | None) -> int:  # fmt: skip
        rid = len(self.records) + 1
        self.records[rid] = {"call_id": call_id, "number": number, "caller": caller,
                             "client": client, "rule": rule}  # fmt: skip
        return rid

    def call_updated(self, record_id: int, **fields: object) -> None:
        self.records[record_id].update(fields)

    def override_changed(self, client: str, override: Override | None) -> None:
        self.overrides[client] = override


def directory(*rules: Rule) -> Directory:
    return Directory(
        provider=Provider("Büroservice Sonnenschein", default_steps=(TEAM_STEP,)),
        clients={"mueller": Client("mueller", "Tischlerei Müller", bundesland="BY")},
        numbers={NUMBER: Number(NUMBER, "mueller", rules)},
        users={
            "anna": User("anna", "agent"),
            "mueller": User("mueller", "client", client="mueller", mobile=MOBILE),
        },
        groups={"team": Group("team", "ring_all", ("anna",))},
        trunks={"carrier": Trunk("carrier", "127.0.0.1", 5090, prefixes=("+49",))},
    )


WERKTAG = Rule("Werktag", (Step(("user:mueller",), 3), TEAM_STEP))
OVERRIDE = Rule("Override", (TEAM_STEP,), When(override="office"))


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> t.Net:
    monkeypatch.setitem(t.PASSWORDS, "anna", "Sonne-Regen-43")
    monkeypatch.setitem(t.PASSWORDS, "mueller", "Hobel-Span-1987")
    n = t.Net()
    n.core.calls = CallRouting(n.core, Recorder())
    n.core.calls.update(directory(OVERRIDE, WERKTAG), [])
    t.register(n, "mueller", MUELLER)
    t.register(n, "anna", ANNA)
    return n


def log(net: t.Net) -> Recorder:
    assert net.core.calls is not None
    return net.core.calls.log  # type: ignore[return-value]


def carrier_call(net: t.Net) -> tuple[Request, list]:
    r = t.req(
        "INVITE", f"sip:{NUMBER}@{t.DOMAIN}", TRUNK, "+4930555123", f"sip:{NUMBER}@{t.DOMAIN}"
    )
    return r, net.send(r.serialize(), TRUNK)


def sent_to(out: list, dest: tuple[str, str, int], method: str | None = None) -> list[Request]:
    return [
        m
        for m, d in out
        if d == dest and isinstance(m, Request) and (method is None or m.method == method)
    ]


def test_busy_owner_moves_on_to_the_team_which_sees_the_client(net: t.Net) -> None:
    _, out = carrier_call(net)
    [to_owner] = sent_to(out, MUELLER, "INVITE")
    assert to_owner.from_.display is None  # the owner's own phone shows the caller as is
    out = net.send(t.answer(to_owner, 486).serialize(), MUELLER)
    [to_anna] = sent_to(out, ANNA, "INVITE")
    assert to_anna.get("x-heimbuero-client") == "mueller"
    assert to_anna.from_.display == '"Tischlerei Müller: +4930555123"'
    assert to_anna.from_.tag == "f+4930555123"  # the dialog still matches by tag
    out = net.send(t.answer(to_anna, 200, tag="anna").serialize(), ANNA)
    assert [m.status for m, d in out if isinstance(m, Response) and d == TRUNK] == [200]
    [record] = log(net).records.values()
    assert record["rule"] == "Werktag" and record["answered_by"] == "user:anna"
    assert record["step"] == 2


def test_no_answer_moves_on_after_the_step_timeout(net: t.Net) -> None:
    _, out = carrier_call(net)
    [to_owner] = sent_to(out, MUELLER, "INVITE")
    net.send(t.answer(to_owner, 180).serialize(), MUELLER)
    out = net.advance(2.9)
    assert sent_to(out, ANNA) == []
    out = net.advance(0.2)
    assert len(sent_to(out, MUELLER, "CANCEL")) == 1
    assert len(sent_to(out, ANNA, "INVITE")) == 1


def test_external_step_goes_through_the_trunk_with_diversion(net: t.Net) -> None:
    assert net.core.calls is not None
    net.core.calls.update(directory(Rule("Sonst", (Step((f"external:{MOBILE}",), 20),))), [])
    _, out = carrier_call(net)
    [out_inv] = sent_to(out, TRUNK, "INVITE")
    assert out_inv.uri == f"sip:{MOBILE}@127.0.0.1:5090"
    assert out_inv.from_.uri.user == "+4930555123"  # the mobile shows who is calling
    assert NUMBER in (out_inv.get("diversion") or "")
    assert NUMBER in out_inv.get_all("history-info")[0]
    assert "+4930555123" in (out_inv.get("p-asserted-identity") or "")


def test_voicemail_step_answers_480_with_a_reason_until_voicemail_exists(net: t.Net) -> None:
    assert net.core.calls is not None
    net.core.calls.update(directory(Rule("Nachts", (Step(("voicemail:mueller",), 20),))), [])
    _, out = carrier_call(net)
    finals = [m for m, d in out if isinstance(m, Response) and m.status >= 200]
    assert [m.status for m in finals] == [480]
    assert "Voicemail is not available yet" in (finals[0].get("reason") or "")


def test_feature_code_from_the_owner_phone_sends_the_next_call_to_the_team(net: t.Net) -> None:
    r = t.req("INVITE", f"sip:*21@{t.DOMAIN}", MUELLER, "mueller", f"sip:*21@{t.DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), MUELLER)
    [(answer, _)] = net.send(
        t.authorize(r, challenge, "mueller", "Proxy-Authorization").serialize(), MUELLER
    )
    assert answer.status == 603 and "Büroservice" in answer.reason
    assert log(net).overrides["mueller"] is not None
    _, out = carrier_call(net)
    assert sent_to(out, MUELLER) == []
    assert len(sent_to(out, ANNA, "INVITE")) == 1
    [record] = log(net).records.values()
    assert record["rule"] == "Override"


def test_feature_codes_are_only_for_client_phones(net: t.Net) -> None:
    r = t.req("INVITE", f"sip:*21@{t.DOMAIN}", ANNA, "anna", f"sip:*21@{t.DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), ANNA)
    [(answer, _)] = net.send(
        t.authorize(r, challenge, "anna", "Proxy-Authorization").serialize(), ANNA
    )
    assert answer.status == 403
