"""Routed calls executed by the SIP core, sans-IO: a RoutePlan's steps become branches.

The call records here are kept by an in-memory subscriber of the call events (a unit-test
stand-in for the server's recorder and store); the same flows run through `heimbuero serve`
with real SIPp peers in tests/e2e/test_routing.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest
import test_core as t  # the sans-IO harness of the core tests (same folder)

from heimbuero.domain.model import (
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
from heimbuero.events import (
    CallOffered,
    CallTransferred,
    EventBus,
    ProviderWarning,
    RoutedCallAnswered,
    RoutedCallEnded,
    RoutedCallStep,
)
from heimbuero.office.callpolicy import CallPolicy
from heimbuero.services.calls import CallRouting
from heimbuero.sip.message import Request, Response
from heimbuero.sip.peer import Peer

NUMBER = "+49891234567"
MOBILE = "+491701111111"
TRUNK = ("udp", "127.0.0.1", 5090)
MUELLER = ("udp", "127.0.0.1", 41001)
ANNA = ("udp", "127.0.0.1", 41002)
TEAM_STEP = Step(("group:team",), 4)


class Recorder:
    """Keeps what the server would write to the store: the call records, from the events of
    the bus (by the record's number), and what call routing writes and reads itself."""

    def __init__(self, events: EventBus) -> None:
        self.records: dict[int, dict[str, object]] = {}
        self.overrides: dict[str, Override | None] = {}
        self.talk_before = 0.0  # talk seconds of today's calls out already in the store
        self.talk_asked: datetime | None = None
        events.subscribe(CallOffered, self.offered)
        events.subscribe(RoutedCallStep, lambda e: self.records[e.record].update(step=e.step))
        events.subscribe(RoutedCallAnswered, self.answered)
        events.subscribe(RoutedCallEnded, self.ended)
        events.subscribe(CallTransferred, self.transferred)

    def offered(self, e: CallOffered) -> None:
        self.records[e.record] = {"call_id": e.call_id, "number": e.number, "caller": e.caller,
                                  "client": e.client, "rule": e.rule}  # fmt: skip

    def answered(self, e: RoutedCallAnswered) -> None:
        self.records[e.record].update(answered_by=e.answered_by, answered_at=e.at,
                                      ring_seconds=e.ring_seconds, rule=e.rule)  # fmt: skip

    def ended(self, e: RoutedCallEnded) -> None:
        record = self.records[e.record]
        record.update(result=e.result, ended_at=e.at, end_reason=e.end_reason)
        if e.ring_seconds is not None:
            record["ring_seconds"] = e.ring_seconds
        if e.talk_seconds is not None:
            record["talk_seconds"] = e.talk_seconds

    def transferred(self, e: CallTransferred) -> None:
        for record in self.records.values():
            if record["call_id"] == e.call_id:
                record["transferred_from"] = e.from_call_id

    def override_changed(self, client: str, override: Override | None) -> None:
        self.overrides[client] = override

    def external_talk_seconds(self, client: str, since: datetime) -> float:
        self.talk_asked = since
        return self.talk_before


def directory(*rules: Rule, policy: CallPolicy | None = None) -> Directory:
    mueller = Client("mueller", "Tischlerei Müller", bundesland="BY")
    if policy is not None:
        mueller = replace(mueller, call_policy=policy)
    return Directory(
        provider=Provider("Büroservice Sonnenschein", default_steps=(TEAM_STEP,)),
        clients={"mueller": mueller},
        numbers={NUMBER: Number(NUMBER, "mueller", rules)},
        users={
            "anna": User("anna", "agent"),
            "mueller": User("mueller", "client", client="mueller", mobile=MOBILE),
            "eva": User("eva", "employee", client="mueller"),
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
    monkeypatch.setitem(t.PASSWORDS, "eva", "Leim-Zwinge-2024")
    n = t.Net()
    n.core.calls = CallRouting(n.core, Recorder(n.core.events))
    n.core.calls.update(directory(OVERRIDE, WERKTAG), [])
    t.register(n, "mueller", MUELLER)
    t.register(n, "anna", ANNA)
    return n


def log(net: t.Net) -> Recorder:
    assert net.core.calls is not None
    return net.core.calls.store  # type: ignore[return-value]


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


EVA = ("udp", "127.0.0.1", 41003)


def finals_to(out: list, dest: tuple[str, str, int]) -> list[Response]:
    return [m for m, d in out if isinstance(m, Response) and m.status >= 200 and d == dest]


@pytest.mark.parametrize(
    ("number", "reason"),
    [("+49900123456", "premium rate"), ("+491371234567", "premium rate"),
     ("+4918051234567", "shared-cost service"), ("+4911833", "directory enquiries"),
     ("+4319876543", "international"), ("+881612345678", "satellite or global network")],
)  # fmt: skip
def test_call_out_to_a_refused_class_is_403_with_the_reason_and_never_reaches_the_trunk(
    net: t.Net, number: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Checked where the trunk target is built: even a rule that got into the directory (an
    old document, the provider's default plan) cannot call premium numbers."""
    assert net.core.calls is not None
    trunk = Trunk("carrier", "127.0.0.1", 5090, prefixes=("+",))
    d = directory(Rule("Sonst", (Step((f"external:{number}",), 20),)))
    net.core.calls.update(replace(d, trunks={"carrier": trunk}), [])
    _, out = carrier_call(net)
    assert sent_to(out, TRUNK, "INVITE") == []
    [final] = finals_to(out, TRUNK)
    assert (final.status, final.reason) == (403, f"Destination not allowed: {reason}")
    assert f"Destination not allowed: {reason}" in (final.get("reason") or "")
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and number in refusals[0].getMessage()


def test_a_carrier_named_by_dns_gets_the_call_at_its_next_address_after_a_503(
    net: t.Net,
) -> None:
    """RFC 3263 §4.3: the addresses DNS gave are tried in turn; a 503 from one passes the
    call, as a new transaction, to the next; the caller never sees the 503."""
    calls = net.core.calls
    assert calls is not None
    d = directory(Rule("Sonst", (Step((f"external:{MOBILE}",), 20),)))
    named = Trunk("carrier", "carrier.test", 0, prefixes=("+49",))
    calls.update(replace(d, trunks={"carrier": named}), [])
    second = ("udp", "127.0.0.1", 5092)
    calls.set_located({("carrier.test", 0, "udp"): (Peer(*TRUNK), Peer(*second))})
    assert calls.trusted_trunk(Peer(*second)) == named  # its calls count as the carrier's
    _, out = carrier_call(net)
    [first] = sent_to(out, TRUNK, "INVITE")
    assert first.uri == f"sip:{MOBILE}@carrier.test"  # (the name, not an address)
    out = net.send(t.answer(first, 503).serialize(), TRUNK)
    [again] = sent_to(out, second, "INVITE")
    assert again.top_via.branch != first.top_via.branch
    assert [m.status for m in finals_to(out, TRUNK)] == []
    out = net.send(t.answer(again, 200, contact=f"sip:{MOBILE}@127.0.0.1:5092").serialize(), second)
    assert [m.status for m in finals_to(out, TRUNK)] == [200]


def test_a_carrier_whose_name_is_not_resolved_refuses_the_call_out(net: t.Net) -> None:
    calls = net.core.calls
    assert calls is not None
    d = directory(Rule("Sonst", (Step((f"external:{MOBILE}",), 20),)))
    calls.update(replace(d, trunks={"carrier": Trunk("carrier", "carrier.test", 0)}), [])
    out = _dial(net, "mueller", MUELLER, "01702222222")
    [final] = [m for m, _ in out if isinstance(m, Response) and m.status >= 200]
    assert final.status == 503 and "not resolved" in final.reason


def test_a_class_allowed_by_client_and_trunk_goes_out(net: t.Net) -> None:
    assert net.core.calls is not None
    intl = CallPolicy(allow=frozenset({"international"}))
    d = directory(Rule("Sonst", (Step(("external:+4319876543",), 20),)), policy=intl)
    only_client = replace(
        d, trunks={"carrier": Trunk("carrier", "127.0.0.1", 5090, prefixes=("+",))}
    )
    net.core.calls.update(only_client, [])
    _, out = carrier_call(net)
    assert finals_to(out, TRUNK)[0].status == 403  # the trunk does not carry international
    both = replace(
        d,
        trunks={"carrier": Trunk("carrier", "127.0.0.1", 5090, prefixes=("+",), call_policy=intl)},
    )
    net.core.calls.update(both, [])
    _, out = carrier_call(net)
    assert len(sent_to(out, TRUNK, "INVITE")) == 1


def test_concurrency_cap_answers_503_and_warns_the_provider(net: t.Net) -> None:
    assert net.core.calls is not None
    warnings: list[dict[str, object]] = []
    net.core.events.subscribe(ProviderWarning, lambda e: warnings.append(dict(e.warning)))
    one = CallPolicy(max_concurrent=1)
    net.core.calls.update(
        directory(Rule("Sonst", (Step((f"external:{MOBILE}",), 20),)), policy=one), []
    )
    _, out = carrier_call(net)
    [first] = sent_to(out, TRUNK, "INVITE")
    _, out = carrier_call(net)
    assert sent_to(out, TRUNK, "INVITE") == []
    [final] = finals_to(out, TRUNK)
    assert (final.status, final.reason) == (503, "Too many calls out at once")
    assert warnings and warnings[0]["client"] == "mueller" and warnings[0]["status"] == 503
    # the first call ends (busy): room again
    net.send(t.answer(first, 486).serialize(), TRUNK)
    _, out = carrier_call(net)
    assert len(sent_to(out, TRUNK, "INVITE")) == 1


def test_daily_minutes_count_records_and_running_calls_then_403(net: t.Net) -> None:
    assert net.core.calls is not None
    calls = net.core.calls
    log(net).talk_before = 110 * 60.0  # 110 minutes out already today (call records)
    cap = CallPolicy(max_minutes_per_day=120)
    calls.update(directory(Rule("Sonst", (Step((f"external:{MOBILE}",), 20),)), policy=cap), [])
    _, out = carrier_call(net)
    [inv] = sent_to(out, TRUNK, "INVITE")
    net.send(t.answer(inv, 200, tag="mobile").serialize(), TRUNK)
    assert log(net).talk_asked is not None  # the day starts at the client's midnight
    net.advance(11 * 60)  # the running call passes the cap
    _, out = carrier_call(net)
    [final] = finals_to(out, TRUNK)
    assert (final.status, final.reason) == (403, "Daily minutes for calls out used up")


def _feature(net: t.Net, user: str, peer: tuple[str, str, int], code: str) -> Response:
    r = t.req("INVITE", f"sip:{code}@{t.DOMAIN}", peer, user, f"sip:{code}@{t.DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), peer)
    [(answer, _)] = net.send(
        t.authorize(r, challenge, user, "Proxy-Authorization").serialize(), peer
    )
    assert isinstance(answer, Response)
    return answer


@pytest.mark.parametrize("code", ["*21", "*22", "#21", "#22"])
def test_an_employee_may_not_change_forwarding_by_phone(net: t.Net, code: str) -> None:
    """The same rule as PUT /api/clients/{id}/override: staff and the client owner only."""
    t.register(net, "eva", EVA)
    answer = _feature(net, "eva", EVA, code)
    assert answer.status == 403 and "owner" in answer.reason
    assert "mueller" not in log(net).overrides


def _dial(net: t.Net, user: str, peer: tuple[str, str, int], dialled: str) -> list:
    r = t.req("INVITE", f"sip:{dialled}@{t.DOMAIN}", peer, user, f"sip:{dialled}@{t.DOMAIN}")
    [(challenge, _)] = net.send(r.serialize(), peer)
    return net.send(t.authorize(r, challenge, user, "Proxy-Authorization").serialize(), peer)


def test_a_client_user_dials_out_through_the_trunk_with_the_client_number(net: t.Net) -> None:
    out = _dial(net, "mueller", MUELLER, "01702222222")
    [inv] = sent_to(out, TRUNK, "INVITE")
    assert inv.uri == "sip:+491702222222@127.0.0.1:5090"
    assert f"sip:{NUMBER}@" in (inv.get("p-asserted-identity") or "")
    assert inv.get("diversion") is None  # not a forwarded call
    [record] = log(net).records.values()
    assert (record["number"], record["client"], record["rule"]) == (
        "+491702222222",
        "mueller",
        "dial-out",
    )
    net.send(t.answer(inv, 200, tag="far").serialize(), TRUNK)
    assert record["answered_by"] == "external:+491702222222"


def test_dialling_out_to_a_premium_number_is_403_and_leaves_a_record(net: t.Net) -> None:
    out = _dial(net, "mueller", MUELLER, "09001234567")
    assert sent_to(out, TRUNK) == []
    [final] = finals_to(out, MUELLER)
    assert (final.status, final.reason) == (403, "Destination not allowed: premium rate")
    [record] = log(net).records.values()
    assert record["result"] == "failed" and record["number"] == "+499001234567"


def test_staff_dial_out_without_a_client(net: t.Net) -> None:
    out = _dial(net, "anna", ANNA, "+4930123456")
    [inv] = sent_to(out, TRUNK, "INVITE")
    assert "sip:anna@" in (inv.get("p-asserted-identity") or "")
    [record] = log(net).records.values()
    assert record["client"] is None and record["rule"] == "dial-out"


def test_a_call_out_whose_bye_never_came_stops_counting_after_8_hours(net: t.Net) -> None:
    assert net.core.calls is not None
    one = CallPolicy(max_concurrent=1)  # 240 minutes a day: the stale call stops counting
    rule = Rule("Sonst", (Step((f"external:{MOBILE}",), 20),))
    net.core.calls.update(directory(rule, policy=one), [])
    _, out = carrier_call(net)
    [inv] = sent_to(out, TRUNK, "INVITE")
    net.send(t.answer(inv, 200, tag="mobile").serialize(), TRUNK)
    net.advance(3600)
    _, out = carrier_call(net)
    assert finals_to(out, TRUNK)[0].status == 503
    net.advance(7 * 3600 + 1)
    _, out = carrier_call(net)
    assert len(sent_to(out, TRUNK, "INVITE")) == 1


MUELLER_TCP = ("tcp", "127.0.0.1", 41007)  # a second phone of mueller's, over TCP


def test_a_plan_and_a_plain_call_reach_a_device_whose_connection_is_gone_alike(
    net: t.Net,
) -> None:
    """One reachability rule (proxy.device_targets) for calls routed by a plan and calls to
    a user: a TCP device whose connection is gone is tried at the address its Contact names
    (when that is reachable from where it registered), by both."""
    t.register(net, "mueller", MUELLER_TCP, contact="sip:mueller@127.0.0.1:41008;transport=tcp")
    fallback = ("tcp", "127.0.0.1", 41008)
    net.core.is_connected = lambda peer: peer != MUELLER_TCP
    _, out = carrier_call(net)  # the number's plan rings user:mueller
    assert len(sent_to(out, MUELLER, "INVITE")) == 1
    assert len(sent_to(out, fallback, "INVITE")) == 1
    assert sent_to(out, MUELLER_TCP) == []
    _, out = t.invite(net, "anna", "mueller", ANNA)  # a plain call to the user
    assert len(sent_to(out, MUELLER, "INVITE")) == 1
    assert len(sent_to(out, fallback, "INVITE")) == 1
    # while the connection is up, both use it
    net.core.is_connected = lambda peer: True
    _, out = carrier_call(net)
    assert len(sent_to(out, MUELLER_TCP, "INVITE")) == 1 and sent_to(out, fallback) == []


APPS = ("udp", "127.0.0.1", 5999)  # the media applications


def test_dictation_code_goes_to_the_media_applications_signed_for_the_call(net: t.Net) -> None:
    from heimbuero.services.mediaapps import dictation_user

    calls = net.core.calls
    assert calls is not None
    calls.media_app, calls.dictation_code, calls.dictation_key = Peer(*APPS), "*88", b"k" * 32
    for user, peer in (("mueller", MUELLER), ("eva", EVA)):  # the owner and an employee
        out = _dial(net, user, peer, "*88")
        [inv] = sent_to(out, APPS, "INVITE")
        signed = dictation_user(b"k" * 32, inv.call_id, "mueller", user)
        assert inv.uri == f"sip:{signed}@127.0.0.1:5999"
        assert inv.get("record-route")  # (its BYE passes the proxy: the call record ends)
    out = _dial(net, "anna", ANNA, "*88")  # staff: no client to dictate for
    [final] = [m for m, _ in out if isinstance(m, Response) and m.status >= 200]
    assert final.status == 403 and "client's phone" in (final.get("reason") or "")
    calls.dictation_code = ""  # off: *88 is just a number that is not ours
    assert sent_to(_dial(net, "mueller", MUELLER, "*88"), APPS) == []


def test_listen_code_goes_to_the_media_applications_signed_for_the_caller(net: t.Net) -> None:
    """*86: the authenticated caller's own box, by a URI signed for this call and this user;
    a user without a box gets 404 with the reason; off, it is no code of ours."""
    from heimbuero.services.mediaapps import listen_user

    calls = net.core.calls
    assert calls is not None
    calls.update(directory(Rule("Nachts", (Step(("voicemail:mueller",), 20),))), [])
    calls.media_app, calls.listen_code, calls.dictation_key = Peer(*APPS), "*86", b"k" * 32
    out = _dial(net, "mueller", MUELLER, "*86")
    [inv] = sent_to(out, APPS, "INVITE")
    assert inv.uri == f"sip:{listen_user(b'k' * 32, inv.call_id, 'mueller')}@127.0.0.1:5999"
    assert inv.uri.startswith("sip:listen.") and inv.uri.split("@")[0].endswith(".mueller")
    assert inv.get("record-route")
    # anna (staff) has her own box only: none is named by a rule, none stored
    out = _dial(net, "anna", ANNA, "*86")
    assert sent_to(out, APPS) == []
    [final] = [m for m, _ in out if isinstance(m, Response) and m.status >= 200]
    assert final.status == 404 and "No mailbox" in (final.get("reason") or "")
    # eva, an employee of mueller's, has her own box, not the client's: none here ...
    t.register(net, "eva", EVA)
    assert sent_to(_dial(net, "eva", EVA, "*86"), APPS) == []
    # ... until messages are stored for her
    calls.stored_mailboxes = lambda: {"eva"}
    [inv] = sent_to(_dial(net, "eva", EVA, "*86"), APPS, "INVITE")
    assert inv.uri.split("@")[0].endswith(".eva")
    calls.listen_code = ""  # off
    assert sent_to(_dial(net, "mueller", MUELLER, "*86"), APPS) == []


def test_the_listen_signature_is_not_a_dictation_signature() -> None:
    from heimbuero.services.mediaapps import dictation_user, listen_user

    key = b"k" * 32
    listen_mac = listen_user(key, "c1", "mueller").split(".")[1]
    assert listen_mac != dictation_user(key, "c1", "mueller", "mueller").split(".")[-1]
    assert listen_user(key, "c1", "mueller") != listen_user(key, "c2", "mueller")
    assert listen_user(key, "c1", "mueller") != listen_user(b"j" * 32, "c1", "mueller")


# ---------------------------------------------------------------------------------- transfers

SONST = Rule("Sonst", (TEAM_STEP, Step((f"external:{MOBILE}",), 20)))


def answered_by_anna(net: t.Net) -> Request:
    """A carrier call rings the team and anna answers: the INVITE as anna got it."""
    assert net.core.calls is not None
    net.core.calls.update(directory(SONST), [])
    _, out = carrier_call(net)
    [to_anna] = sent_to(out, ANNA, "INVITE")
    net.send(t.answer(to_anna, 200, tag="fanna").serialize(), ANNA)
    return to_anna


def refer_from(net: t.Net, to_anna: Request, src: tuple[str, str, int], target: str) -> list:
    """A REFER in anna's call (her tags, the Route of the Record-Route she got) sent from `src`."""
    routes = [f"Route: {r}" for r in reversed(to_anna.get_all("record-route"))]
    contact = (to_anna.get("contact") or "").strip("<>")
    r = t.req("REFER", contact, src, "anna", str(to_anna.from_.uri),
              call_id=to_anna.call_id, to_tag=to_anna.from_.tag, cseq=2,
              extra=[*routes, f"Refer-To: <{target}>",
                     f"Referred-By: <sip:anna@{t.DOMAIN}>"])  # fmt: skip
    return net.send(r.serialize(), src)


def transferred(net: t.Net, target: str) -> list:
    ruri, by = f"sip:{target}@{t.DOMAIN}", f"Referred-By: <sip:anna@{t.DOMAIN}>"
    r = t.req("INVITE", ruri, TRUNK, "+4930555123", ruri, extra=[by])
    return net.send(r.serialize(), TRUNK)


def test_an_approved_refer_lets_the_carriers_caller_out_once(net: t.Net) -> None:
    to_anna = answered_by_anna(net)
    out = refer_from(net, to_anna, ANNA, f"sip:{MOBILE}@{t.DOMAIN}")
    assert [m.method for m in sent_to(out, TRUNK)] == ["REFER"]  # forwarded in the dialog
    out = transferred(net, MOBILE)
    [inv] = sent_to(out, TRUNK, "INVITE")
    assert inv.uri == f"sip:{MOBILE}@127.0.0.1:5090"
    assert inv.get("diversion") == f"<sip:{NUMBER}@{t.DOMAIN}>;reason=deflection;counter=1"
    assert "+4930555123" in (inv.get("p-asserted-identity") or "")  # the mobile sees the caller
    records = log(net).records
    new = next(r for r in records.values() if r["call_id"] == inv.call_id)
    assert (new["rule"], new["client"], new["number"]) == ("transfer", "mueller", NUMBER)
    assert new["transferred_from"] == to_anna.call_id
    assert net.core.calls is not None and net.core.calls.active[to_anna.call_id].transferred
    [final] = finals_to(transferred(net, MOBILE), TRUNK)  # used up
    assert (final.status, final.reason) == (403, "Transfer not authorised")


def test_a_refer_from_elsewhere_or_to_another_domain_approves_nothing(net: t.Net) -> None:
    to_anna = answered_by_anna(net)
    out = refer_from(net, to_anna, EVA, f"sip:{MOBILE}@{t.DOMAIN}")  # not anna's phone
    assert [m.method for m in sent_to(out, TRUNK)] == ["REFER"]  # (still forwarded)
    refer_from(net, to_anna, ANNA, f"sip:{MOBILE}@pbx.example.org")  # not our domain
    [final] = finals_to(transferred(net, MOBILE), TRUNK)
    assert (final.status, final.reason) == (403, "Transfer not authorised")
    assert net.core.calls is not None and net.core.calls.transfers.pending == []


def test_a_transfer_out_keeps_the_clients_destination_policy(net: t.Net) -> None:
    to_anna = answered_by_anna(net)
    refer_from(net, to_anna, ANNA, f"sip:+499001234567@{t.DOMAIN}")  # premium rate
    out = transferred(net, "+499001234567")
    assert sent_to(out, TRUNK, "INVITE") == []
    [final] = finals_to(out, TRUNK)
    assert final.status == 403 and "premium" in final.reason


# ------------------------------------------------------------------ end reasons

OWNER_ONLY = Rule("Inhaber", (Step(("user:mueller",), 3),))


def _record(net: t.Net) -> dict[str, object]:
    [record] = log(net).records.values()
    assert record.get("ended_at") is not None
    return record


def _owner_rings(net: t.Net, rule: Rule = OWNER_ONLY) -> tuple[Request, Request]:
    """A carrier call to the number rings mueller's phone (180): (the carrier's INVITE, the
    INVITE his phone got)."""
    assert net.core.calls is not None
    net.core.calls.update(directory(rule), [])
    inv, out = carrier_call(net)
    [to_owner] = sent_to(out, MUELLER, "INVITE")
    net.send(t.answer(to_owner, 180).serialize(), MUELLER)
    return inv, to_owner


@pytest.mark.parametrize(
    ("status", "result", "reason"),
    [(486, "busy", "busy"), (600, "busy", "busy"), (603, "failed", "declined"),
     (480, "no_answer", "unavailable"), (404, "failed", "unavailable"),
     (503, "failed", "unavailable"), (488, "failed", "rejected"),
     (403, "failed", "rejected")],
)  # fmt: skip
def test_an_unanswered_call_ends_with_the_reason_of_the_final_answer(
    net: t.Net, status: int, result: str, reason: str
) -> None:
    _, to_owner = _owner_rings(net)
    out = net.send(t.answer(to_owner, status).serialize(), MUELLER)
    assert finals_to(out, TRUNK)  # the caller got its final answer
    record = _record(net)
    assert (record["result"], record["end_reason"]) == (result, reason)


def test_a_call_whose_ring_time_runs_out_ends_no_answer(net: t.Net) -> None:
    _owner_rings(net)
    out = net.advance(3.1)
    assert len(sent_to(out, MUELLER, "CANCEL")) == 1
    assert [m.status for m in finals_to(out, TRUNK)] == [408]
    record = _record(net)
    assert (record["result"], record["end_reason"]) == ("no_answer", "no_answer")


def test_a_phone_that_answers_nothing_ends_unreachable_not_no_answer(net: t.Net) -> None:
    assert net.core.calls is not None
    net.core.calls.update(directory(OWNER_ONLY), [])
    _, out = carrier_call(net)
    assert sent_to(out, MUELLER, "INVITE")  # sent; the phone is off: not even 100 Trying
    out = net.advance(3.1)
    assert [m.status for m in finals_to(out, TRUNK)] == [408]
    record = _record(net)
    assert (record["result"], record["end_reason"]) == ("no_answer", "unreachable")
    # Only a 100 Trying heard: the phone is there, it did not ring in time.
    log(net).records.clear()
    _, out = carrier_call(net)
    [to_owner] = sent_to(out, MUELLER, "INVITE")
    net.send(t.answer(to_owner, 100).serialize(), MUELLER)
    net.advance(3.1)
    assert (_record(net)["result"], _record(net)["end_reason"]) == ("no_answer", "no_answer")


def test_the_callers_cancel_ends_caller_cancelled_a_callees_487_does_not(net: t.Net) -> None:
    inv, to_owner = _owner_rings(net)
    cancel = Request("CANCEL", inv.uri, [list(h) for h in inv.headers
                                         if h[0] in ("via", "from", "to", "call-id")])  # fmt: skip
    cancel.add("CSeq", f"{inv.cseq[0]} CANCEL")
    cancel.add("Max-Forwards", "70")
    out = net.send(cancel.serialize(), TRUNK)
    assert len(sent_to(out, MUELLER, "CANCEL")) == 1
    out = net.send(t.answer(to_owner, 487).serialize(), MUELLER)
    assert [m.status for m in finals_to(out, TRUNK)] == [487]
    record = _record(net)
    assert (record["result"], record["end_reason"]) == ("cancelled", "caller_cancelled")
    # A 487 the phone sends on its own (no CANCEL of the caller) is no caller's hang-up.
    log(net).records.clear()
    _, to_owner = _owner_rings(net)
    net.send(t.answer(to_owner, 487).serialize(), MUELLER)
    record = _record(net)
    assert (record["result"], record["end_reason"]) == ("cancelled", "rejected")


def test_a_call_with_nobody_registered_to_ring_ends_unavailable(net: t.Net) -> None:
    assert net.core.calls is not None
    net.core.calls.update(directory(Rule("Eva", (Step(("user:eva",), 5),))), [])
    _, out = carrier_call(net)
    assert [m.status for m in finals_to(out, TRUNK)] == [480]
    record = _record(net)
    assert (record["result"], record["end_reason"]) == ("no_answer", "unavailable")


def test_a_call_out_refused_by_policy_or_a_cap_ends_refused(net: t.Net) -> None:
    out = _dial(net, "mueller", MUELLER, "09001234567")
    assert [m.status for m in finals_to(out, MUELLER)] == [403]
    assert (_record(net)["result"], _record(net)["end_reason"]) == ("failed", "refused")
    assert net.core.calls is not None
    one = CallPolicy(max_concurrent=1)
    net.core.calls.update(
        directory(Rule("Sonst", (Step((f"external:{MOBILE}",), 20),)), policy=one), []
    )
    log(net).records.clear()
    _, out = carrier_call(net)
    [first] = sent_to(out, TRUNK, "INVITE")
    _, out = carrier_call(net)
    assert [m.status for m in finals_to(out, TRUNK)] == [503]
    [capped] = [r for r in log(net).records.values() if r.get("ended_at") is not None]
    assert (capped["result"], capped["end_reason"]) == ("failed", "refused")
    net.send(t.answer(first, 503).serialize(), TRUNK)  # the carrier itself is down
    [down] = [r for r in log(net).records.values() if r is not capped]
    assert (down["result"], down["end_reason"]) == ("failed", "unavailable")


def test_a_carrier_without_an_address_is_unavailable_not_refused(net: t.Net) -> None:
    calls = net.core.calls
    assert calls is not None
    d = directory(Rule("Sonst", (Step((f"external:{MOBILE}",), 20),)))
    calls.update(replace(d, trunks={"carrier": Trunk("carrier", "carrier.test", 0)}), [])
    out = _dial(net, "mueller", MUELLER, "01702222222")
    assert [m.status for m in finals_to(out, MUELLER)] == [503]
    assert (_record(net)["result"], _record(net)["end_reason"]) == ("failed", "unavailable")


def test_answered_calls_end_hangup_and_a_server_stop_ends_what_is_left(net: t.Net) -> None:
    calls = net.core.calls
    assert calls is not None
    to_anna = answered_by_anna(net)
    calls.on_bye(to_anna.call_id, net.now)
    assert (_record(net)["result"], _record(net)["end_reason"]) == ("answered", "hangup")
    log(net).records.clear()
    to_anna = answered_by_anna(net)
    calls.close_all(net.now)
    assert (_record(net)["result"], _record(net)["end_reason"]) == ("answered", "server_stopped")
    log(net).records.clear()
    _owner_rings(net)
    net.core.shutdown(net.now)
    assert (_record(net)["result"], _record(net)["end_reason"]) == ("failed", "server_stopped")
