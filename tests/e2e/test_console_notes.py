"""End-to-end call note: agent `anna` logs in to the web console of the real `heimbuero serve`
(demo office) and sends a Telefonnotiz for Tischlerei Müller from the form; the owner's
registered phone (a SIPp device) receives it as a SIP MESSAGE at once, the client's e-mail
address gets it through a real local SMTP server (tests/smtpd.py), and the owner's portal
lists it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.smtpd import MailSink

from .harness import Server, set_toml_option, wait_until
from .test_messaging_sipp import received_messages, start_device

pytestmark = [pytest.mark.e2e, pytest.mark.peers("sipp")]


@pytest.fixture
def mail() -> Iterator[MailSink]:
    with MailSink() as sink:
        yield sink


@pytest.fixture
def demo_server(tmp_path: Path, mail: MailSink) -> Iterator[Server]:
    srv = Server(tmp_path / "server", demo=True, http=True)
    srv.prepare()
    for key, value in (("host", "127.0.0.1"), ("port", mail.port),
                       ("sender", "buero@heimbuero.test")):  # fmt: skip
        set_toml_option(srv.config_path, "mail", key, value)
    with srv:
        yield srv


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _login(http: httpx.Client, name: str, password: str) -> None:
    page = http.get("/")
    r = http.post("/login", data={"csrf": _csrf(page.text), "name": name, "password": password})
    assert r.status_code == 200, r.text


def test_note_from_the_console_reaches_the_clients_phone(
    tmp_path: Path, demo_server: Server, mail: MailSink
) -> None:
    srv = demo_server
    r = httpx.patch(f"{srv.http_url}/api/clients/mueller", json={"email": "info@mueller.test"},
                    auth=("admin", srv.users["admin"]), timeout=10)  # fmt: skip
    assert r.status_code == 200 and r.json()["email"] == "info@mueller.test", r.text
    phone = start_device(tmp_path, srv, "mueller", expected=1, name="mueller-phone")
    try:
        with httpx.Client(base_url=srv.http_url, timeout=10, follow_redirects=True) as anna:
            _login(anna, "anna", srv.users["anna"])
            page = anna.get("/console")
            assert "Tischlerei Müller" in page.text
            r = anna.post("/console/notes", data={
                "csrf": _csrf(page.text), "client": "mueller", "caller_name": "Frau Huber",
                "caller_number": "089 555123", "concern": "Angebot Einbauschrank",
                "callback": "on", "text": "Bitte bis Freitag zurückrufen.",
            })  # fmt: skip
            assert r.status_code == 200 and "wurde gespeichert" in r.text, r.text
        wait_until(lambda: received_messages(phone), timeout=10, what="the note as a MESSAGE")
        body = received_messages(phone)[0].body.decode()
        assert "Telefonnotiz (Rückruf erbeten)" in body and "Angebot Einbauschrank" in body
        assert "Frau Huber 089 555123" in body and "Aufgenommen von anna" in body
        sent = mail.wait_for(lambda m: m["To"] == "info@mueller.test", timeout=10)
        assert sent["Subject"] == "Telefonnotiz: Angebot Einbauschrank"
        text = sent.get_content()
        assert "Frau Huber 089 555123" in text and "Bitte bis Freitag zurückrufen." in text
        with httpx.Client(base_url=srv.http_url, timeout=10, follow_redirects=True) as owner:
            _login(owner, "mueller", srv.users["mueller"])
            assert "Angebot Einbauschrank" in owner.get("/portal").text
    finally:
        phone.stop()
