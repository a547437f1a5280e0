"""Month invoices: one per client, gapless numbers (also under concurrent runs), immutable
once issued, a correction = Storno + new invoice, lines traceable to their sources."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from heimbuero.app import App, http_status
from heimbuero.app.policy import Actor, Role
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from tests.billing_data import SELLER

TARIFF = {"name": "Handwerk S", "base_fee": "2900", "per_answered_call": "85",
          "per_talk_unit": "20", "increment": "60/60"}  # fmt: skip


def _call(store: Store, at: datetime, by: str, talk: float) -> int:
    rid = store.add_call_record(f"c{at.timestamp()}", "+49891234567", "+4930999", at, "mueller")
    store.update_call_record(rid, answered_by=by, talk_seconds=talk, result="answered")
    return rid


REALM = "heimbuero.test"
ADMIN = Actor("admin", Role.ADMIN)
OWNER = Actor("mueller", Role.CLIENT, "mueller")
OTHER = Actor("schulz", Role.CLIENT, "schulz")
JAN = datetime(2027, 1, 2, 8, 0, tzinfo=UTC)  # after December 2026 ended


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    seed_demo(store, REALM)
    handlers = App.build(store, lambda: REALM)
    handlers.billing.put_tariff(ADMIN, TARIFF)
    handlers.billing.set_seller(ADMIN, **SELLER)
    for client in ("mueller", "schulz"):
        handlers.billing.assign(ADMIN, client, "Handwerk S", date(2026, 1, 1))
    yield handlers
    store.close()


def _refused(fn: Any, *args: Any, **kwargs: Any) -> int:
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return http_status(exc)
    return 0


def test_run_storno_and_new_invoice(app: App) -> None:
    store = app.billing.store
    for h in (9, 10, 11):
        _call(store, datetime(2026, 12, 1, h, 0, tzinfo=UTC), "user:anna", 90)
    assert (
        _refused(app.invoices.run, ADMIN, "2026-12", datetime(2026, 12, 31, 12, tzinfo=UTC)) == 422
    )
    made = app.invoices.run(ADMIN, "2026-12", JAN)
    assert [(i["number"], i["client"], i["net"]) for i in made] == [
        ("RE-2027-000001", "mueller", 2900 + 3 * 85 + 6 * 20),
        ("RE-2027-000002", "schulz", 2900),
    ]
    assert app.invoices.run(ADMIN, "2026-12", JAN) == []  # one invoice per client and month
    # which calls are these 3 × 0,85 €?
    inv = app.invoices.get(OWNER, "RE-2027-000001")
    (calls,) = [ln for ln in inv["doc"]["lines"] if ln["kind"] == "call"]
    assert (calls["quantity"], calls["unit_price"], calls["net"]) == ("3", "85", 255)
    behind = [u for u in inv["usage"] if u["id"] in calls["usage_ids"]]
    assert [u["source_kind"] for u in behind] == ["call_record"] * 3
    records = {r.id for r in store.list_call_records("mueller")}
    assert {int(u["source_id"]) for u in behind} == records
    # an invoiced month never changes: a tariff correction leaves its lines alone
    app.billing.put_tariff(ADMIN, {**TARIFF, "per_answered_call": "70"})
    app.billing.assign(ADMIN, "mueller", "Handwerk S", date(2026, 1, 1))
    assert app.billing.recompute(ADMIN, "mueller", "2026-12") == 0
    # a tariff from a day in the invoiced month itself: refused (409), nothing assigned
    assert _refused(app.billing.assign, ADMIN, "mueller", "Handwerk S", date(2026, 12, 15)) == 409
    assert len(app.billing.client_tariffs(ADMIN, "mueller")) == 1
    # correction: Storno + new invoice with the corrected tariff
    storno = app.invoices.cancel(ADMIN, "RE-2027-000001", JAN)
    assert (storno["number"], storno["kind"], storno["net"]) == ("RE-2027-000003", "storno", -3275)
    assert _refused(app.invoices.cancel, ADMIN, "RE-2027-000001", JAN) == 422
    assert app.billing.recompute(ADMIN, "mueller", "2026-12") == 3
    (new,) = app.invoices.run(ADMIN, "2026-12", JAN)
    assert (new["number"], new["net"]) == ("RE-2027-000004", 2900 + 3 * 70 + 6 * 20)
    # the original is unchanged, only marked as cancelled
    old = app.invoices.get(ADMIN, "RE-2027-000001")
    assert (old["net"], old["cancelled"]) == (3275, True)
    assert [i["number"] for i in app.invoices.list(OWNER)] == [
        "RE-2027-000001",
        "RE-2027-000003",
        "RE-2027-000004",
    ]


def test_gapless_numbers_under_concurrent_runs(app: App, tmp_path: Path) -> None:
    store = app.billing.store
    for i in range(30):
        app.clients.create(ADMIN, f"c{i:02d}", f"Kunde {i}")
        app.billing.assign(ADMIN, f"c{i:02d}", "Handwerk S", date(2026, 1, 1))
    # four runs at once over the same month, each in its own store (like four processes)
    stores = [Store(store.url) for _ in range(4)]
    results: list[list[dict[str, Any]]] = []
    errors: list[BaseException] = []

    def run(s: Store) -> None:
        try:
            results.append(App.build(s, lambda: REALM).invoices.run(ADMIN, "2026-12", JAN))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert errors == []
    made = [i for r in results for i in r]
    seqs = sorted(int(i["number"].rsplit("-", 1)[1]) for i in made)
    assert seqs == list(range(1, len(made) + 1))  # no gap, no duplicate
    assert sorted(i["client"] for i in made) == sorted(
        ["mueller", "schulz"] + [f"c{i:02d}" for i in range(30)]
    )
    assert len(results) == 4  # all four runs ended without an error


def test_invoice_number_format_and_authorization(app: App) -> None:
    assert _refused(app.billing.set_settings, ADMIN, invoice_number_format="RE-{year}") == 422
    app.billing.set_settings(ADMIN, invoice_number_format="HB{seq:04d}")
    made = app.invoices.run(ADMIN, "2026-12", JAN)
    assert [i["number"] for i in made] == ["HB0001", "HB0002"]
    assert _refused(app.invoices.run, OWNER, "2026-12", JAN) == 403
    assert _refused(app.invoices.cancel, OWNER, "HB0001", JAN) == 403
    assert _refused(app.invoices.get, OTHER, "HB0001") == 404  # mueller's invoice
    assert _refused(app.invoices.get, OTHER, "HB9999") == 404
    assert [i["client"] for i in app.invoices.list(OTHER)] == ["schulz"]
    assert _refused(app.invoices.list, OTHER, "mueller") == 404


def test_scheduled_run_month_and_config(tmp_path: Path) -> None:
    from heimbuero import config
    from heimbuero.app.billing import due_month

    at = datetime(2027, 1, 1, 4, 30, tzinfo=UTC)  # 05:30 in Berlin
    assert due_month(at, 0, 6, "Europe/Berlin") is None  # off
    assert due_month(at, 1, 6, "Europe/Berlin") is None  # not yet 06:00
    assert due_month(at, 1, 5, "Europe/Berlin") == "2026-12"
    assert due_month(datetime(2027, 3, 2, 12, tzinfo=UTC), 1, 6, "Europe/Berlin") == "2027-02"
    data = tmp_path / "d"
    data.mkdir()
    text = config.default_config_text("office.example")
    (data / config.CONFIG_FILE).write_text(text, encoding="utf-8")
    assert config.load(data).billing.invoice_day == 0
    (data / config.CONFIG_FILE).write_text(
        text.replace("invoice_day = 0", "invoice_day = 31"), encoding="utf-8"
    )
    with pytest.raises(config.ConfigError, match=r"\[billing\] invoice_day"):
        config.load(data)
    for value, sends in (("true", True), ("false", False)):
        (data / config.CONFIG_FILE).write_text(
            text.replace("send_invoices = false", f"send_invoices = {value}"), encoding="utf-8"
        )
        assert config.load(data).billing.send_invoices is sends
    (data / config.CONFIG_FILE).write_text(
        text.replace("send_invoices = false", 'send_invoices = "ja"'), encoding="utf-8"
    )
    with pytest.raises(config.ConfigError, match=r"send_invoices must be true or false"):
        config.load(data)


def test_schedule_invoices_a_month_once_and_retries_sending_every_15_minutes() -> None:
    from heimbuero.app.billing import InvoiceSchedule
    from heimbuero.server import INVOICE_SEND_RETRY

    s = InvoiceSchedule(send=True, retry=INVOICE_SEND_RETRY)
    assert not s.run_due(None) and s.send_due(0.0) is None  # not yet due: nothing
    assert s.run_due("2026-11")
    s.ran("2026-11", 100.0)
    assert not s.run_due("2026-11")  # once per month
    assert s.send_due(100.0) == "2026-11"  # e-mailed right after the run
    s.sent(failed=True, now=105.0)  # the mail server refused some
    assert s.send_due(105.0 + 899.0) is None
    assert s.send_due(105.0 + 900.0) == "2026-11"  # 15 minutes later: again
    s.sent(failed=False, now=1006.0)
    assert s.send_due(10**6) is None  # all sent: no more tries
    assert s.run_due("2026-12")  # the next month runs again

    off = InvoiceSchedule(send=False, retry=INVOICE_SEND_RETRY)
    off.ran("2026-11", 0.0)
    assert off.send_due(10**6) is None  # [billing] send_invoices off: never e-mailed
