"""Invoices by e-mail end to end: the real `heimbuero serve` with the demo office and a real
SMTP server on loopback (tests/smtpd.py). Last month's run gives mueller an invoice (PDF/A-3)
and schulz, a public-sector buyer with a Leitweg-ID, an XRechnung. While the mail server is
down a sending fails with 503 and the invoice stays unsent; once it is up `heimbuero invoices
send --all-unsent` delivers one mail per invoice to each billing address, its attachment the
very bytes the download serves. A second sending is refused (API 409, CLI exit 1) unless a
resend is asked for. A client's user (by API token) gets 404 for another business's invoice
and 403 for its own."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.billing_data import SELLER
from tests.smtpd import MailSink

from .harness import Server, set_toml_option, wait_until

pytestmark = pytest.mark.e2e

TARIFF = {"name": "Handwerk S", "base_fee": "2900", "per_answered_call": "85"}
MUELLER = {"street": "Gartenweg 2", "postcode": "80333", "city": "München",
           "email": "buero@maler-mueller.de"}  # fmt: skip
SCHULZ = {"name": "Stadt Musterhausen", "street": "Rathausplatz 1", "postcode": "80335",
          "city": "München", "leitweg_id": "991-12345-06",
          "email": "rechnung@musterhausen.de"}  # fmt: skip


def test_invoices_reach_the_billing_addresses_once(tmp_path: Path) -> None:
    mail = MailSink()  # started only later: until then nothing listens on its port
    server = Server(tmp_path / "server", demo=True, http=True)
    server.prepare()
    for key, value in (("host", "127.0.0.1"), ("port", mail.port),
                       ("sender", "rechnungen@sommer.example")):  # fmt: skip
        set_toml_option(server.config_path, "mail", key, value)
    d = ("--data", str(server.data_dir))
    today = datetime.now(ZoneInfo("Europe/Berlin")).date()
    last_month = (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    with contextlib.ExitStack() as stack:
        stack.enter_context(server)
        admin = stack.enter_context(httpx.Client(
            base_url=server.http_url, auth=("admin", server.demo_passwords["admin"]), timeout=60,
        ))  # fmt: skip
        assert admin.put("/api/billing/tariffs", json=TARIFF).status_code == 200
        for client in ("mueller", "schulz"):
            r = admin.post(f"/api/billing/clients/{client}/tariffs",
                           json={"tariff": "Handwerk S", "valid_from": "2020-01-01"})  # fmt: skip
            assert r.status_code == 204, r.text
        assert admin.patch("/api/billing/seller", json=SELLER).status_code == 200
        for client, buyer in (("mueller", MUELLER), ("schulz", SCHULZ)):
            r = admin.patch(f"/api/billing/clients/{client}/buyer", json=buyer)
            assert r.status_code == 200, r.text
        r = admin.post("/api/billing/invoices/run", params={"month": last_month})
        assert r.status_code == 200, r.text
        numbers = {i["client"]: i["number"] for i in r.json()}
        assert set(numbers) == {"mueller", "schulz"}

        # a client's user by API token: another business's invoice is not there, its own
        # invoice it may not send
        token = server.cli("token", "create", "schulz", "--name", "e2e", *d).stdout
        schulz = stack.enter_context(httpx.Client(
            base_url=server.http_url, timeout=30,
            headers={"Authorization": f"Bearer {token.splitlines()[-1].strip()}"},
        ))  # fmt: skip
        r = schulz.post(f"/api/billing/invoices/{numbers['mueller']}/send")
        assert r.status_code == 404, r.text
        assert schulz.post(f"/api/billing/invoices/{numbers['schulz']}/send").status_code == 403
        assert schulz.get(f"/api/billing/invoices/{numbers['schulz']}/xml").status_code == 200

        # the mail server is down: a clear error, and the invoice stays unsent
        r = admin.post(f"/api/billing/invoices/{numbers['mueller']}/send")
        assert r.status_code == 503, r.text
        assert "was not sent" in r.text and "stays unsent" in r.text
        assert admin.get(f"/api/billing/invoices/{numbers['mueller']}").json()["sent"] is None

        stack.enter_context(mail)  # the mail server is up
        out = server.cli("invoices", "send", "--all-unsent", *d)
        assert "2 invoices sent" in out.stdout, out.stdout
        pdf = admin.get(f"/api/billing/invoices/{numbers['mueller']}/pdf")
        xml = admin.get(f"/api/billing/invoices/{numbers['schulz']}/xml")
        assert pdf.status_code == 200 and xml.status_code == 200
        for to, number, kind, content in (
            (MUELLER["email"], numbers["mueller"], "application/pdf", pdf.content),
            (SCHULZ["email"], numbers["schulz"], "application/xml", xml.content),
        ):
            m = mail.wait_for(lambda m, to=to: m["To"] == to)  # type: ignore[misc]
            assert str(m["Subject"]).startswith(f"Rechnung {number} von {SELLER['name']}")
            assert m["From"] == "rechnungen@sommer.example" and m["Reply-To"] == SELLER["email"]
            (att,) = list(m.iter_attachments())
            assert att.get_content_type() == kind and att.get_filename().startswith(number)
            assert att.get_content() == content  # the very document the download serves
            assert "Guten Tag" in m.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert len(mail.messages) == 2
        listed = {i["number"]: i["sent"] for i in admin.get("/api/billing/invoices").json()}
        assert listed[numbers["mueller"]]["to"] == MUELLER["email"]
        assert listed[numbers["schulz"]]["document"] == "xml"

        # twice only when asked for
        r = admin.post(f"/api/billing/invoices/{numbers['mueller']}/send")
        assert r.status_code == 409 and "resend" in r.text, r.text
        again = server.cli("invoices", "send", numbers["mueller"], *d, check=False)
        assert again.returncode == 1 and "was sent to buero@maler-mueller.de" in again.stderr
        assert len(mail.messages) == 2
        r = admin.post(f"/api/billing/invoices/{numbers['mueller']}/send",
                       params={"resend": "true"})  # fmt: skip
        assert r.status_code == 200 and r.json()["sent"]["to"] == MUELLER["email"], r.text
        assert len(mail.messages) == 3


def test_the_scheduled_run_sends_its_invoices(tmp_path: Path) -> None:
    """`[billing] send_invoices = true`: the scheduled run (due at once: day 1, hour 0) invoices
    last month and e-mails each invoice to its client's billing address by itself; a client
    without one is left unsent (and said in the log), and a restart sends nothing twice."""
    server = Server(tmp_path / "server", demo=True, http=True)
    server.prepare()
    d = ("--data", str(server.data_dir))
    with MailSink() as mail:
        for key, value in (("host", "127.0.0.1"), ("port", mail.port),
                           ("sender", "rechnungen@sommer.example")):  # fmt: skip
            set_toml_option(server.config_path, "mail", key, value)
        for key, value in (("invoice_day", 1), ("invoice_hour", 0), ("send_invoices", True)):
            set_toml_option(server.config_path, "billing", key, value)
        tariff = tmp_path / "tariff.json"
        tariff.write_text(json.dumps(TARIFF), encoding="utf-8")
        server.cli("billing", "tariff-set", str(tariff), *d)
        for client in ("mueller", "schulz"):
            server.cli("billing", "assign", client, "Handwerk S", "--from", "2020-01-01", *d)
        seller = [f"--{k.replace('_', '-')}={v}" for k, v in SELLER.items()]
        server.cli("billing", "seller", *seller, *d)
        server.cli(
            "billing",
            "buyer",
            "mueller",
            "--street",
            MUELLER["street"],
            "--postcode",
            MUELLER["postcode"],
            "--city",
            MUELLER["city"],
            "--email",
            MUELLER["email"],
            *d,
        )  # fmt: skip  (schulz: no billing e-mail address)
        with server:
            m = mail.wait_for(lambda m: m["To"] == MUELLER["email"], timeout=60)
            (att,) = list(m.iter_attachments())
            assert att.get_content_type() == "application/pdf"
            with httpx.Client(base_url=server.http_url, timeout=30,
                              auth=("admin", server.demo_passwords["admin"])) as admin:  # fmt: skip

                def invoices() -> dict[str, dict]:  # type: ignore[type-arg]
                    return {i["client"]: i for i in admin.get("/api/billing/invoices").json()}

                # (the sending is recorded once the mail server took the mail)
                wait_until(lambda: (invoices()["mueller"]["sent"] or {}).get("at"), 10,
                           what="the invoice's sending recorded")  # fmt: skip
                listed = invoices()
            assert set(listed) == {"mueller", "schulz"}
            assert listed["mueller"]["sent"]["to"] == MUELLER["email"]
            assert str(m["Subject"]).startswith(f"Rechnung {listed['mueller']['number']} ")
            assert listed["schulz"]["sent"] is None
            assert "no billing e-mail address" in server.log_text()
            server.restart()  # the run again: nothing new to invoice, nothing sent twice
            wait_until(lambda: "billing: 0 invoices for" in server.log_text(), 30,
                       what="the run after the restart")  # fmt: skip
            time.sleep(1)
            assert [x["To"] for x in mail.messages] == [MUELLER["email"]]
