"""The usage meter: call records and the office's billable events become usage lines with
their source; an open month is rated again after a tariff correction; a client sees only
its own usage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from heimbuero.app import App, http_status
from heimbuero.app.policy import Actor, Role
from heimbuero.events import (
    CallNoteTaken,
    DictationDelivered,
    EventBus,
    UsageChanged,
    UsageMetered,
    UsageRecomputed,
    VoicemailLeft,
)
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.store.models import InvoiceRow, UsageLineRow

REALM = "heimbuero.test"
ADMIN = Actor("admin", Role.ADMIN)
AGENT = Actor("anna", Role.AGENT)
OWNER = Actor("mueller", Role.CLIENT, "mueller")
OTHER = Actor("schulz", Role.CLIENT, "schulz")

TARIFF = {
    "name": "Handwerk S",
    "base_fee": "2900",
    "per_answered_call": "85",
    "per_talk_unit": "20",
    "increment": "60/60",
    "per_note": "50",
    "per_voicemail": "30",
    "per_dictation_minute": "120",
    "per_normzeile": "1.5",
    "surcharges": {"evening_pct": "20", "holiday_pct": "100"},
}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    seed_demo(store, REALM)
    handlers = App.build(store, lambda: REALM)
    handlers.billing.put_tariff(ADMIN, TARIFF)
    handlers.billing.assign(ADMIN, "mueller", "Handwerk S", date(2026, 1, 1))
    yield handlers
    store.close()


def _call(store: Store, at: datetime, by: str | None, talk: float, result: str = "answered",
          client: str = "mueller") -> int:  # fmt: skip
    rid = store.add_call_record(f"c{at.timestamp()}", "+4989123", "+4930999", at, client)
    store.update_call_record(rid, answered_by=by, talk_seconds=talk, result=result, ended_at=at)
    return rid


def _refused(fn: Any, *args: Any, **kwargs: Any) -> int:
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return http_status(exc)
    return 0


def test_calls_and_events_become_usage_lines_with_their_source(app: App) -> None:
    store = app.billing.store
    weekday = _call(store, datetime(2026, 12, 1, 9, 0, tzinfo=UTC), "user:anna", 90)
    evening = _call(store, datetime(2026, 12, 1, 18, 30, tzinfo=UTC), "group:office", 30)
    _call(store, datetime(2026, 12, 2, 9, 0, tzinfo=UTC), "external:+491701234567", 300)
    _call(store, datetime(2026, 12, 2, 10, 0, tzinfo=UTC), None, 0, result="no_answer")
    assert app.billing.meter_calls() == 4
    assert app.billing.meter_calls() == 0  # each record is rated once
    bus = EventBus()
    app.billing.subscribe(bus)
    at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC).timestamp()
    bus.publish(CallNoteTaken(at, "mueller", 11, "anna", None))
    bus.publish(VoicemailLeft(at, "mueller", 12, "c-vm", 20.0))
    bus.publish(DictationDelivered(at, "mueller", 13, normzeilen=41, audio_seconds=61.0))
    u = app.billing.usage(OWNER, "mueller", "2026-12")
    got = [(x["kind"], x["source_kind"], x["source_id"], x["quantity"], x["amount"])
           for x in u["lines"]]  # fmt: skip
    assert got == [
        ("call", "call_record", str(weekday), "1", 85),
        ("talk", "call_record", str(weekday), "2", 40),
        ("call", "call_record", str(evening), "1", 102),
        ("talk", "call_record", str(evening), "1", 24),
        ("note", "call_note", "11", "1", 50),
        ("voicemail", "voicemail", "12", "1", 30),
        ("dictation_minutes", "dictation_job", "13", "2", 240),
        ("normzeilen", "dictation_job", "13", "41", 62),
    ]
    net = 2900 + 85 + 40 + 102 + 24 + 50 + 30 + 240 + 62
    assert u["statement"]["net"] == net
    assert u["statement"]["gross"] == net + (net * 19 + 50) // 100
    # a corrected dictation publishes again: its lines are replaced, not added
    bus.publish(DictationDelivered(at, "mueller", 13, normzeilen=40, audio_seconds=61.0))
    lines = app.billing.usage(OWNER, "mueller", "2026-12")["lines"]
    assert [x["quantity"] for x in lines if x["kind"] == "normzeilen"] == ["40"]


def test_one_round_rates_each_clients_records_by_that_clients_tariff(app: App) -> None:
    # the meter reads a client's settings and tariffs once per round: records of two clients,
    # interleaved, each rated (or not: schulz has no tariff) as that client's
    store = app.billing.store
    ids: dict[str, list[int]] = {"mueller": [], "schulz": []}
    for i in range(6):
        client = ("mueller", "schulz")[i % 2]
        at = datetime(2026, 12, 1, 9, i, tzinfo=UTC)
        ids[client].append(_call(store, at, "user:anna", 90, client=client))
    assert app.billing.meter_calls() == 6
    assert app.billing.meter_calls() == 0
    lines = app.billing.usage(OWNER, "mueller", "2026-12")["lines"]
    assert sorted({x["source_id"] for x in lines}) == sorted(str(i) for i in ids["mueller"])
    assert [x["amount"] for x in lines] == [85, 40] * 3
    assert app.billing.usage(OTHER, "schulz", "2026-12")["lines"] == []
    # rated again under a tariff assigned later: lines replace the (empty) old ones
    app.billing.assign(ADMIN, "schulz", "Handwerk S", date(2026, 1, 1))
    got = app.billing.usage(OTHER, "schulz", "2026-12")["lines"]
    assert sorted({x["source_id"] for x in got}) == sorted(str(i) for i in ids["schulz"])
    assert len(got) == 6


def test_recompute_after_a_tariff_correction_but_never_an_invoiced_line(app: App) -> None:
    store = app.billing.store
    first = _call(store, datetime(2026, 12, 1, 9, 0, tzinfo=UTC), "user:anna", 90)
    _call(store, datetime(2026, 12, 2, 9, 0, tzinfo=UTC), "user:anna", 90)
    app.billing.meter_calls()
    with store.unit_of_work() as uow:  # an invoice took the first call's lines
        for row in uow.session.query(UsageLineRow).filter_by(source_id=str(first)):
            row.invoice_id = 1
    app.billing.put_tariff(ADMIN, {**TARIFF, "per_answered_call": "70"})
    app.billing.assign(ADMIN, "mueller", "Handwerk S", date(2026, 1, 1))  # corrected copy
    assert app.billing.recompute(ADMIN, "mueller", "2026-12") == 1
    calls = [
        (x["source_id"], x["amount"])
        for x in app.billing.usage(ADMIN, "mueller", "2026-12")["lines"]
        if x["kind"] == "call"
    ]
    assert calls == [(str(first), 85), (str(first + 1), 70)]


def test_tariff_from_a_date_rates_by_the_events_local_day(app: App) -> None:
    store = app.billing.store
    app.billing.put_tariff(ADMIN, {**TARIFF, "name": "Neu", "per_answered_call": "99"})
    app.billing.assign(ADMIN, "mueller", "Neu", date(2026, 12, 15))
    _call(store, datetime(2026, 12, 14, 22, 30, tzinfo=UTC), "user:anna", 10)  # 23:30 local
    _call(store, datetime(2026, 12, 14, 23, 30, tzinfo=UTC), "user:anna", 10)  # 00:30 on 15th
    app.billing.meter_calls()
    prices = [
        x["unit_price"]
        for x in app.billing.usage(ADMIN, "mueller", "2026-12")["lines"]
        if x["kind"] == "call"
    ]
    assert prices == ["102", "118.8"]  # evening surcharge 20 % on 85 and on 99


def test_no_tariff_no_lines_and_bad_input(app: App) -> None:
    store = app.billing.store
    _call(store, datetime(2026, 12, 1, 9, 0, tzinfo=UTC), "user:anna", 90, client="schulz")
    app.billing.meter_calls()
    assert app.billing.usage(OTHER, "schulz", "2026-12")["lines"] == []
    assert _refused(app.billing.put_tariff, ADMIN, {**TARIFF, "per_note": 0.5}) == 422
    assert _refused(app.billing.put_tariff, ADMIN, {**TARIFF, "vat": {"note": "16"}}) == 422
    assert _refused(app.billing.put_tariff, ADMIN, {**TARIFF, "colour": "red"}) == 422
    assert _refused(app.billing.usage, ADMIN, "mueller", "2026-13") == 422
    assert _refused(app.billing.assign, ADMIN, "mueller", "nope", date(2026, 1, 1)) == 404
    assert _refused(app.billing.set_settings, ADMIN, default_bundesland="XX") == 422


def test_authorization_another_clients_usage_is_not_found(app: App) -> None:
    for actor in (OWNER, OTHER):
        assert _refused(app.billing.put_tariff, actor, TARIFF) == 403
        assert _refused(app.billing.recompute, actor, "mueller", "2026-12") == 403
        assert _refused(app.billing.provider_usage, actor, "2026-12") == 403
    assert _refused(app.billing.usage, OTHER, "mueller", "2026-12") == 404
    assert _refused(app.billing.client_tariffs, OTHER, "mueller") == 404
    assert _refused(app.billing.usage, OWNER, "mueller", "2026-12") == 0
    assert _refused(app.billing.usage, AGENT, "mueller", "2026-12") == 0
    assert _refused(app.billing.usage, ADMIN, "nobody", "2026-12") == 404


def test_kleinunternehmer_setting(app: App) -> None:
    assert app.billing.set_settings(ADMIN, kleinunternehmer=True)["kleinunternehmer"] is True
    bus = EventBus()
    app.billing.subscribe(bus)
    bus.publish(
        CallNoteTaken(datetime(2026, 12, 3, tzinfo=UTC).timestamp(), "mueller", 1, "a", None)
    )
    st = app.billing.usage(OWNER, "mueller", "2026-12")["statement"]
    assert (st["net"], st["vat"], st["gross"]) == (2950, 0, 2950)


def test_a_tariff_set_up_after_the_calls_rates_them_from_its_first_day(app: App) -> None:
    """schulz had calls before any tariff (metered, no lines); the tariff assigned from a day
    rates the open readings from that day (local time) on at once, none before it."""
    store = app.billing.store
    _call(store, datetime(2026, 11, 30, 22, 30, tzinfo=UTC), "user:anna", 90, client="schulz")
    _call(store, datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "user:anna", 90, client="schulz")
    _call(store, datetime(2026, 12, 1, 9, 0, tzinfo=UTC), "user:anna", 90, client="schulz")
    app.billing.meter_calls()
    assert app.billing.usage(OTHER, "schulz", "2026-12")["lines"] == []
    app.billing.assign(ADMIN, "schulz", "Handwerk S", date(2026, 12, 1))
    calls = [x for x in app.billing.usage(OTHER, "schulz", "2026-12")["lines"]
             if x["kind"] == "call"]  # fmt: skip
    # 2026-11-30 23:30 UTC is already 1 December in Berlin: it bills (00:30, with the evening
    # surcharge); 22:30 UTC does not
    assert [x["amount"] for x in calls] == [102, 85], calls
    assert app.billing.usage(OTHER, "schulz", "2026-11")["lines"] == []
    app.billing.assign(ADMIN, "schulz", "Handwerk S", date(2026, 12, 2))  # a later start
    assert [
        x["kind"]
        for x in app.billing.usage(OTHER, "schulz", "2026-12")["lines"]
        if x["kind"] == "call"
    ] == ["call", "call"]  # the earlier assignment still holds


def test_assign_and_recompute_publish_usage_recomputed_after_the_commit(tmp_path: Path) -> None:
    """A tariff assignment and a recompute publish one UsageRecomputed each, after the commit
    (the portal's page follows it); a refused one (invoiced month, unknown tariff, another
    business's user) publishes nothing."""
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    try:
        seed_demo(store, REALM)
        seen: list[UsageRecomputed] = []
        committed: list[int] = []  # the client's tariffs in the store when the event came

        def publish(event: object) -> None:
            if not isinstance(event, UsageRecomputed):
                return  # (UsageMetered of the calls' rating)
            seen.append(event)
            committed.append(len(App.build(store, lambda: REALM).billing.client_tariffs(
                ADMIN, event.client)))  # fmt: skip

        app = App.build(store, lambda: REALM, publish=publish)
        app.billing.put_tariff(ADMIN, TARIFF)
        _call(store, datetime(2026, 12, 1, 9, 0, tzinfo=UTC), "user:anna", 90)
        _call(store, datetime(2026, 12, 2, 9, 0, tzinfo=UTC), "user:anna", 90)
        app.billing.meter_calls()  # (no tariff yet: readings without lines)
        app.billing.assign(ADMIN, "mueller", "Handwerk S", date(2026, 12, 2))
        assert [(e.client, e.month, e.until, e.reason, e.readings) for e in seen] == [
            ("mueller", "2026-12", None, "tariff", 1)]  # fmt: skip
        assert committed == [1]  # published once the assignment was stored
        assert app.billing.recompute(ADMIN, "mueller", "2026-12") == 2
        assert (seen[-1].month, seen[-1].until, seen[-1].reason, seen[-1].readings) == (
            "2026-12", "2026-12", "recompute", 2)  # fmt: skip
        n = len(seen)
        assert _refused(app.billing.assign, ADMIN, "mueller", "nope", date(2026, 12, 1)) == 404
        assert _refused(app.billing.assign, OWNER, "mueller", "Handwerk S",
                        date(2026, 12, 1)) == 403  # fmt: skip
        assert _refused(app.billing.recompute, OWNER, "mueller", "2026-12") == 403
        assert _refused(app.billing.recompute, ADMIN, "nobody", "2026-12") == 404
        with store.unit_of_work() as uow:  # an invoice of December: its month never changes
            uow.session.add(InvoiceRow(number="RE-1", seq=1, client="mueller", month="2026-12",
                                       kind="invoice", issued_at=datetime(2027, 1, 1, tzinfo=UTC),
                                       net=0, vat=0, gross=0, doc={}))  # fmt: skip
        assert _refused(app.billing.assign, ADMIN, "mueller", "Handwerk S",
                        date(2026, 12, 1)) == 409  # fmt: skip
        assert len(seen) == n
    finally:
        store.close()


def test_usage_recomputed_reaches_the_clients_users_and_staff_only() -> None:
    """Billing.watch: the same reader filter for UsageRecomputed as for UsageMetered."""
    from heimbuero.app.billing import Billing

    bus = EventBus()
    billing = Billing(Store.__new__(Store), watch=lambda fn: bus.subscribe(UsageChanged, fn))
    got: dict[str, list[dict[str, Any]]] = {"mueller": [], "schulz": [], "anna": []}
    for actor in (OWNER, OTHER, AGENT):
        billing.watch(actor, got[actor.name].append)
    bus.publish(UsageRecomputed(0.0, "mueller", "2026-12", None, "tariff", 3))
    bus.publish(UsageMetered(0.0, "schulz", "2026-12", "call_note", "7", 1))
    recomputed = {"client": "mueller", "month": "2026-12", "until": None, "reason": "tariff",
                  "readings": 3}  # fmt: skip
    metered = {"client": "schulz", "month": "2026-12", "lines": 1}
    assert got == {"mueller": [recomputed], "schulz": [metered], "anna": [recomputed, metered]}
