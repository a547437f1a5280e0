"""Call records from the bus: CallRouting publishes each change of a routed call's record as
one event, and the recorder (services/callrecords.py) subscribed to them writes the record.

Sans-IO: the SIP core of tests/unit/test_core.py with the real EventBus and CallRouting; the
recorder writes to a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import test_calls as c  # the routed calls' directory and helpers (same folder)
import test_core as t  # the sans-IO harness of the core tests (same folder)

from heimbuero.events import (
    CallEnded,
    CallOffered,
    Event,
    RoutedCallAnswered,
    RoutedCallEnded,
    RoutedCallStep,
)
from heimbuero.services.callrecords import CallRecorder
from heimbuero.services.calls import CallRouting
from heimbuero.sip.message import Request
from heimbuero.store import Store

RECORD_EVENTS = (CallOffered, RoutedCallStep, RoutedCallAnswered, RoutedCallEnded)


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> t.Net:
    monkeypatch.setitem(t.PASSWORDS, "anna", "Sonne-Regen-43")
    monkeypatch.setitem(t.PASSWORDS, "mueller", "Hobel-Span-1987")
    n = t.Net()
    n.core.calls = CallRouting(n.core, c.Recorder(n.core.events))
    n.core.calls.update(c.directory(c.WERKTAG), [])  # the owner's phone, then the team
    t.register(n, "mueller", c.MUELLER)
    t.register(n, "anna", c.ANNA)
    return n


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    s.upgrade()
    yield s
    s.close()


def owner_busy_anna_answers_and_hangs_up(net: t.Net) -> Request:
    """A carrier call: mueller's phone is busy, anna (the team) answers; 30 s later the call
    ends by a BYE (the core's CallEnded). The INVITE the caller sent."""
    inv, out = c.carrier_call(net)
    [to_owner] = c.sent_to(out, c.MUELLER, "INVITE")
    out = net.send(t.answer(to_owner, 486).serialize(), c.MUELLER)
    [to_anna] = c.sent_to(out, c.ANNA, "INVITE")
    net.advance(2.0)
    net.send(t.answer(to_anna, 200, tag="fanna").serialize(), c.ANNA)
    net.advance(30.0)
    net.core.events.publish(CallEnded(net.now, inv.call_id))
    return inv


def test_a_subscriber_sees_a_routed_calls_record_from_start_to_its_end(net: t.Net) -> None:
    seen: list[Event] = []
    for kind in RECORD_EVENTS:
        net.core.events.subscribe(kind, seen.append)
    inv = owner_busy_anna_answers_and_hangs_up(net)
    assert [type(e) for e in seen] == [
        CallOffered, RoutedCallStep, RoutedCallStep, RoutedCallAnswered, RoutedCallEnded
    ]  # fmt: skip
    offered, step1, step2, answered, ended = seen
    assert isinstance(offered, CallOffered)
    assert (offered.number, offered.caller, offered.client, offered.rule) == (
        c.NUMBER, "sip:+4930555123@example.com", "mueller", "Werktag"
    )  # fmt: skip
    assert {getattr(e, "call_id", None) for e in seen} == {inv.call_id}
    assert {getattr(e, "record", None) for e in seen} == {offered.record}
    assert [getattr(e, "step", None) for e in (step1, step2)] == [1, 2]
    assert isinstance(answered, RoutedCallAnswered)
    assert (answered.answered_by, answered.rule) == ("user:anna", "Werktag")
    assert answered.ring_seconds == pytest.approx(2.0, abs=0.5)
    assert isinstance(ended, RoutedCallEnded)
    assert (ended.result, ended.end_reason) == ("answered", "hangup")
    assert ended.talk_seconds == pytest.approx(30.0, abs=0.5)
    assert ended.ring_seconds is None  # (the record keeps the ring time of its answer)


def test_the_next_call_gets_the_next_record(net: t.Net) -> None:
    offered: list[CallOffered] = []
    net.core.events.subscribe(CallOffered, offered.append)
    owner_busy_anna_answers_and_hangs_up(net)
    owner_busy_anna_answers_and_hangs_up(net)
    assert len({e.call_id for e in offered}) == 2
    assert offered[1].record == offered[0].record + 1


def test_a_subscriber_that_raises_loses_no_record(
    net: t.Net, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("a subscriber's defect")

    for kind in RECORD_EVENTS:  # ahead of the recorder on every event of the record
        net.core.events.subscribe(kind, broken)
    recorder = CallRecorder(store)
    recorder.subscribe(net.core.events)
    inv = owner_busy_anna_answers_and_hangs_up(net)
    assert sum("a subscriber of" in r.getMessage() for r in caplog.records) == 5
    recorder.write(recorder.take())
    [record] = store.list_call_records("mueller")
    assert (record.call_id, record.number, record.rule, record.step) == (
        inv.call_id, c.NUMBER, "Werktag", 2
    )  # fmt: skip
    assert (record.answered_by, record.result, record.end_reason) == (
        "user:anna", "answered", "hangup"
    )  # fmt: skip
    assert record.ring_seconds == pytest.approx(2.0, abs=0.5)
    assert record.talk_seconds == pytest.approx(30.0, abs=0.5)
    assert record.answered_at is not None and record.ended_at is not None
    assert (recorder.open_calls, dict(recorder.results)) == (0, {"answered": 1})


def test_an_unanswered_call_is_recorded_with_its_ring_time_and_reason(
    net: t.Net, store: Store
) -> None:
    recorder = CallRecorder(store)
    recorder.subscribe(net.core.events)
    _, out = c.carrier_call(net)
    [to_owner] = c.sent_to(out, c.MUELLER, "INVITE")
    recorder.write(recorder.take())  # the started record is written while the call rings
    assert recorder.open_calls == 1
    net.advance(1.0)
    out = net.send(t.answer(to_owner, 486).serialize(), c.MUELLER)
    [to_anna] = c.sent_to(out, c.ANNA, "INVITE")
    net.advance(1.0)
    net.send(t.answer(to_anna, 603).serialize(), c.ANNA)
    recorder.write(recorder.take())
    [record] = store.list_call_records("mueller")
    assert (record.result, record.end_reason, record.answered_by) == ("failed", "declined", None)
    assert record.ring_seconds == pytest.approx(2.0, abs=0.5)
    assert (recorder.open_calls, dict(recorder.results)) == (0, {"failed": 1})
