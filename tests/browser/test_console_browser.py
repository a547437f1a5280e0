"""The web console in a real browser (chromium via Playwright) against the real server."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Server, SipClient, free_port, next_request

from .conftest import login

pytestmark = [pytest.mark.e2e]

# scripts/screenshots sets this to docs/: the pages as the test left them, in German
SHOTS = os.environ.get("HEIMBUERO_SCREENSHOTS", "")
NUMBER = "+49891234567"  # the demo client mueller's number
CALLER = "+4930555123"


def test_login_logout_and_wrong_password(browser: Any, demo: Server) -> None:
    page = browser.new_page(locale="de-DE")
    login(page, demo, "anna")
    assert page.url.endswith("/console")
    assert page.locator("html").get_attribute("lang") == "de"
    page.get_by_role("button", name="Abmelden").click()
    page.wait_for_url(re.compile(r"/$"))
    page.goto(demo.http_url + "/console")
    assert page.url.rstrip("/") == demo.http_url  # back at the login page
    page.get_by_label("Benutzername").fill("anna")
    page.get_by_label("Passwort").fill("wrong-password-1")
    page.get_by_role("button", name="Anmelden").click()
    assert page.get_by_role("alert").inner_text() == "Benutzername oder Passwort ist falsch."


def test_english_by_the_switch(browser: Any, demo: Server) -> None:
    page = browser.new_page(locale="de-DE")
    page.goto(demo.http_url + "/")
    page.get_by_role("link", name="English").click()
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", name="Log in").is_visible()


def test_note_reaches_the_open_portal_without_reload(browser: Any, demo: Server) -> None:
    owner = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 740})
    portal = owner.new_page()
    login(portal, demo, "mueller")
    assert portal.url.endswith("/portal")
    portal.wait_for_function("document.documentElement.dataset.live === '1'")
    # a phone-sized screen: nothing wider than the viewport
    assert portal.evaluate("document.documentElement.scrollWidth") <= 360
    agent = browser.new_context(locale="de-DE", viewport={"width": 1100, "height": 900})
    console = agent.new_page()
    login(console, demo, "anna")
    assert console.evaluate("document.documentElement.scrollWidth") <= 1100
    console.get_by_label("Mandant", exact=True).select_option("mueller")
    console.get_by_label("Name des Anrufers").fill("Frau Huber")
    console.get_by_label("Rufnummer", exact=True).fill("089 555123")
    console.get_by_label("Anliegen", exact=True).fill("Angebot Einbauschrank")
    console.get_by_label("Rückruf erbeten").check()
    console.get_by_label("Notiz", exact=True).fill("Bitte bis Freitag zurückrufen.")
    started = time.monotonic()
    console.get_by_role("button", name="Notiz senden").click()
    console.get_by_role("status").wait_for()
    assert "gespeichert" in console.get_by_role("status").inner_text()
    live = portal.locator("#live li")
    live.first.wait_for(timeout=10_000)
    assert "Angebot Einbauschrank" in live.first.inner_text()
    assert time.monotonic() - started < 10
    if SHOTS:
        console.screenshot(path=str(Path(SHOTS) / "console-agent.png"), full_page=True)
        portal.reload()
        portal.screenshot(path=str(Path(SHOTS) / "console-portal.png"), full_page=True)
    owner.close()
    agent.close()


def test_csrf_refusal_and_other_business(browser: Any, demo: Server) -> None:
    ctx = browser.new_context(locale="de-DE")
    page = ctx.new_page()
    login(page, demo, "schulz")
    # a form posted from elsewhere (no token) is refused
    status = page.evaluate(
        """async () => (await fetch('/password', {method: 'POST',
            headers: {'Content-Type': 'application/x-www-form-urlencoded'},
            body: 'old=x&new=y&repeat=y'})).status"""
    )
    assert status == 403
    for path in ("/console", "/admin"):
        r = page.goto(demo.http_url + path)
        assert r is not None and r.status == 404
    ctx.close()


def test_a_ringing_client_call_pops_the_clients_card_and_readies_the_note(
    browser: Any, tmp_path: Path
) -> None:
    """The screen pop: a carrier call to Tischlerei Müller's number rings anna's phone; her open
    console shows whose call it is (before she answers): the greeting with her name, the rule
    that sent it, the caller named as one of the client's VIPs; the note form is set to it."""
    carrier_port = free_port()
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"client": "mueller", "numbers": {NUMBER: {"rules": [
        {"name": "Immer", "steps": [{"targets": ["user:anna"], "timeout": 30}]},
    ]}}}), encoding="utf-8")  # fmt: skip
    srv = Server(tmp_path / "server", demo=True, http=True)
    srv.prepare()
    data = ["--data", str(srv.data_dir)]
    srv.cli("trunk", "set", "carrier", "--address", f"127.0.0.1:{carrier_port}", *data)
    srv.cli("rules", "import", "mueller", str(rules), *data)
    srv.cli("client", "vip", "mueller", CALLER, "--name", "Herr Meier (Architekt)",
            "--remark", "sofort zum Chef durchstellen", *data)  # fmt: skip
    with srv, SipClient(srv.port) as phone, SipClient(srv.port, local_port=carrier_port) as pstn:
        aor = f"sip:anna@{srv.domain}"
        _, ok = phone.authenticated_request(
            "REGISTER", f"sip:{srv.domain}", username="anna", password=srv.users["anna"],
            from_uri=aor, to_uri=aor,
            headers=[("Contact", f"<sip:anna@127.0.0.1:{phone.local_port}>")],
        )  # fmt: skip
        assert ok.status == 200, ok.summary()
        page = browser.new_page(locale="de-DE")
        login(page, srv, "anna")
        page.wait_for_function("document.documentElement.dataset.live === '1'")
        card = page.locator("#screenpop")
        assert card.is_hidden()
        pstn.request(
            "INVITE", f"sip:{NUMBER}@{srv.domain}", from_uri=f"sip:{CALLER}@127.0.0.1",
            to_uri=f"sip:{NUMBER}@{srv.domain}",
            headers=[("Contact", f"<sip:{CALLER}@127.0.0.1:{carrier_port}>")],
        )  # fmt: skip
        next_request(phone, "INVITE", timeout=10)  # anna's phone rings (not answered)
        card.wait_for(state="visible", timeout=10_000)
        assert card.locator(".name").inner_text() == "Tischlerei Müller"
        assert CALLER in card.locator(".number").inner_text()
        # the greeting with her name, the rule that sent the call, and who is calling
        assert card.locator(".greeting").inner_text().endswith("Sie sprechen mit Anna")
        assert card.locator(".rule").inner_text() == "Immer"
        vip = card.locator(".vip")
        assert vip.is_visible(), page.content()
        assert "Herr Meier (Architekt)" in vip.inner_text()
        assert "sofort zum Chef durchstellen" in vip.inner_text()
        assert page.get_by_label("Mandant", exact=True).input_value() == "mueller"
        assert page.get_by_label("Rufnummer", exact=True).input_value() == CALLER
        if SHOTS:
            page.screenshot(path=str(Path(SHOTS) / "console-screenpop.png"), full_page=True)
        page.close()
