"""Invoices by e-mail (the handler, with a stand-in for the mail server): the PDF/A-3 goes to
the client's billing address, the XRechnung XML for a client with a Leitweg-ID; the sending is
stored before the handler answers; a second sending needs `resend`; a mail server that does
not take the mail leaves the invoice unsent; a sending without an outcome counts as possibly
sent. The e-mail's German text comes from the seller's data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from heimbuero.app import App, http_status
from heimbuero.app.policy import Actor, Role
from heimbuero.billing.einvoice import einvoice_of
from heimbuero.billing.invoicemail import invoice_mail
from heimbuero.net.mail import Attachment, MailError
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from tests.billing_data import SELLER

REALM = "heimbuero.test"
ADMIN = Actor("admin", Role.ADMIN)
OWNER = Actor("mueller", Role.CLIENT, "mueller")
OTHER = Actor("schulz", Role.CLIENT, "schulz")
JAN = datetime(2027, 1, 2, 8, 0, tzinfo=UTC)
TARIFF = {"name": "Handwerk S", "base_fee": "2900"}
PUBLIC = {"name": "Stadt Musterhausen", "street": "Rathausplatz 1", "postcode": "80335",
          "city": "München", "leitweg_id": "991-12345-06",
          "email": "rechnung@musterhausen.de"}  # fmt: skip


class FakeMail:
    """Takes mails like a mail server (kept in `sent`), or refuses them with `fail`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, tuple[Attachment, ...], str | None]] = []
        self.fail: Exception | None = None

    def __call__(self, to: str, subject: str, text: str, attachments: tuple[Attachment, ...],
                 reply_to: str | None) -> None:  # fmt: skip
        if self.fail is not None:
            raise self.fail
        self.sent.append((to, subject, text, attachments, reply_to))


@pytest.fixture
def mail() -> FakeMail:
    return FakeMail()


@pytest.fixture
def app(db_url: str, mail: FakeMail) -> Iterator[App]:
    store = Store(db_url)
    store.upgrade()
    seed_demo(store, REALM)
    handlers = App.build(store, lambda: REALM, invoice_mail=mail)
    handlers.billing.put_tariff(ADMIN, TARIFF)
    handlers.billing.set_seller(ADMIN, **SELLER)
    for client in ("mueller", "schulz"):
        handlers.billing.assign(ADMIN, client, "Handwerk S", date(2026, 1, 1))
    handlers.billing.set_buyer(ADMIN, "schulz", **PUBLIC)
    made = handlers.invoices.run(ADMIN, "2026-12", JAN)
    assert [(i["number"], i["client"]) for i in made] == [
        ("RE-2027-000001", "mueller"), ("RE-2027-000002", "schulz")]  # fmt: skip
    yield handlers
    store.close()


def _refused(fn: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return http_status(exc), str(exc)
    return 0, ""


def _sent(app: App, number: str) -> Any:
    (inv,) = [i for i in app.invoices.list(ADMIN) if i["number"] == number]
    return inv["sent"]


def test_the_pdf_goes_to_the_billing_address_once(app: App, mail: FakeMail) -> None:
    status, text = _refused(app.invoices.send, ADMIN, "RE-2027-000001")
    assert status == 422 and "no billing e-mail address" in text and not mail.sent
    app.billing.set_buyer(ADMIN, "mueller", email="buero@maler-mueller.de")
    assert _sent(app, "RE-2027-000001") is None

    out = app.invoices.send(ADMIN, "RE-2027-000001")
    assert out["sent"]["to"] == "buero@maler-mueller.de" and out["sent"]["state"] == "sent"
    assert out["sent"]["document"] == "pdf" and out["sent"]["at"]
    ((to, subject, text, (att,), reply_to),) = mail.sent
    _, _, pdf = app.invoices.document(ADMIN, "RE-2027-000001", "pdf")
    assert (to, att.filename, att.mime_type) == ("buero@maler-mueller.de", "RE-2027-000001.pdf",
                                                  "application/pdf")  # fmt: skip
    assert att.content == pdf
    assert subject == "Rechnung RE-2027-000001 von Büroservice Sommer GmbH"
    assert "Leistungszeitraum Dezember 2026 über 34,51 €" in text
    assert "bis zum 16.01.2027" in text and "IBAN DE02120300000000202051" in text
    assert reply_to == SELLER["email"]
    assert _sent(app, "RE-2027-000001")["to"] == "buero@maler-mueller.de"
    assert app.invoices.get(OWNER, "RE-2027-000001")["sent"]["state"] == "sent"

    # twice only when asked for
    status, text = _refused(app.invoices.send, ADMIN, "RE-2027-000001")
    assert status == 409 and "was sent to buero@maler-mueller.de" in text and "resend" in text
    assert len(mail.sent) == 1
    app.invoices.send(ADMIN, "RE-2027-000001", resend=True)
    assert len(mail.sent) == 2


def test_xrechnung_buyers_get_the_xml(app: App, mail: FakeMail) -> None:
    out = app.invoices.send(ADMIN, "RE-2027-000002")
    assert out["sent"]["document"] == "xml"
    ((to, subject, text, (att,), _),) = mail.sent
    _, _, xml = app.invoices.document(ADMIN, "RE-2027-000002", "xml")
    assert to == "rechnung@musterhausen.de" and att.content == xml
    assert (att.filename, att.mime_type) == ("RE-2027-000002.xml", "application/xml")
    assert "XRechnung" in text and "Leitweg-ID: 991-12345-06" in text


def test_a_failing_mail_server_leaves_the_invoice_unsent(app: App, mail: FakeMail) -> None:
    mail.fail = MailError("mail to rechnung@musterhausen.de not sent: [Errno 111] refused")
    status, text = _refused(app.invoices.send, ADMIN, "RE-2027-000002")
    assert status == 503 and "was not sent" in text and "stays unsent" in text
    assert _sent(app, "RE-2027-000002") is None
    mail.fail = None
    app.invoices.send(ADMIN, "RE-2027-000002")  # retried: no resend needed
    assert len(mail.sent) == 1 and _sent(app, "RE-2027-000002")["state"] == "sent"


def test_a_sending_without_outcome_counts_as_possibly_sent(app: App, mail: FakeMail) -> None:
    mail.fail = RuntimeError("the process stopped here")
    with pytest.raises(RuntimeError):
        app.invoices.send(ADMIN, "RE-2027-000002")
    assert _sent(app, "RE-2027-000002")["state"] == "sending"
    mail.fail = None
    status, text = _refused(app.invoices.send, ADMIN, "RE-2027-000002")
    assert status == 409 and "has no outcome" in text and not mail.sent
    assert app.invoices.send_unsent(ADMIN)[0]["number"] == "RE-2027-000001"  # not 000002
    app.invoices.send(ADMIN, "RE-2027-000002", resend=True)
    assert [m[0] for m in mail.sent] == ["rechnung@musterhausen.de"]


def test_who_may_send(app: App, mail: FakeMail, db_url: str) -> None:
    assert _refused(app.invoices.send, OTHER, "RE-2027-000001")[0] == 404  # not its business
    assert _refused(app.invoices.send, OWNER, "RE-2027-000001")[0] == 403
    assert _refused(app.invoices.send, ADMIN, "RE-2027-999999")[0] == 404
    assert _refused(app.invoices.send_unsent, OWNER)[0] == 403
    no_mail = App.build(app.invoices.store, lambda: REALM)
    status, text = _refused(no_mail.invoices.send, ADMIN, "RE-2027-000002")
    assert status == 503 and "[mail]" in text and not mail.sent


def test_all_unsent_sends_each_once_and_reports_the_rest(app: App, mail: FakeMail) -> None:
    results = app.invoices.send_unsent(ADMIN)
    assert results[0]["number"] == "RE-2027-000001" and "no billing e-mail" in results[0]["error"]
    assert results[1] == {"number": "RE-2027-000002", "sent": _sent(app, "RE-2027-000002")}
    app.billing.set_buyer(ADMIN, "mueller", email="buero@maler-mueller.de")
    app.invoices.cancel(ADMIN, "RE-2027-000001", JAN)  # a Storno, RE-2027-000003
    results = app.invoices.send_unsent(ADMIN)
    assert [(r["number"], r["sent"]["to"]) for r in results] == [
        ("RE-2027-000001", "buero@maler-mueller.de"),
        ("RE-2027-000003", "buero@maler-mueller.de"),
    ]
    assert app.invoices.send_unsent(ADMIN) == []
    assert [m[1].split()[0] for m in mail.sent] == ["Rechnung", "Rechnung", "Stornorechnung"]
    assert "zur Rechnung RE-2027-000001" in mail.sent[2][2]
    assert "überweisen" not in mail.sent[2][2]


def test_the_mail_text_of_a_storno_and_a_seller_with_a_tax_number() -> None:
    seller = {**SELLER, "vat_id": "", "tax_number": "143/123/45678", "contact": ""}
    doc = {"lines": [{"kind": "base", "label": "Grundgebühr", "quantity": "-1",
                      "unit_price": "2900", "vat_rate": "19", "net": -2900}],
           "vat": [{"rate": "19", "net": -2900, "vat": -551}], "net": -2900,
           "vat_total": -551, "gross": -3451, "kleinunternehmer": False, "cancels": "RE-7",
           "seller": seller, "buyer": {"name": "Müller", "country": "DE"}}  # fmt: skip
    m = invoice_mail(einvoice_of("RE-8", "storno", date(2027, 2, 1), "2026-12", "m", doc))
    assert m.subject == "Stornorechnung RE-8 von Büroservice Sommer GmbH"
    assert "Stornorechnung RE-8 vom 01.02.2027 zur Rechnung RE-7" in m.text
    assert "34,51 €" in m.text and m.document == "pdf"
    assert "Steuernummer 143/123/45678" in m.text and "USt-IdNr" not in m.text
    assert m.text.endswith("Tel. +49 89 1234567 · rechnung@sommer.example\nSteuernummer "
                           "143/123/45678\n")  # fmt: skip
