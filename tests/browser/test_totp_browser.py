"""The console's second factor in a real browser (chromium via Playwright) against the real
server: agent anna switches it on from the menu (QR code and key shown, a first code), logs
out, and logs in again with her password and a code from the "app" (computed here)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from heimbuero.domain import totp
from tests.e2e.harness import Server

from .conftest import login

pytestmark = [pytest.mark.e2e]

SHOTS = os.environ.get("HEIMBUERO_SCREENSHOTS", "")


def _code(secret: str, delta: int = 0) -> str:
    return totp.hotp(totp.secret_bytes(secret), totp.step_of(time.time()) + delta)


def test_enrol_and_log_in_with_a_code(browser: Any, demo: Server) -> None:
    context = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 900})
    page = context.new_page()
    login(page, demo, "anna")
    page.get_by_role("link", name="Zweiter Faktor").click()
    page.get_by_label("Passwort", exact=True).fill(demo.users["anna"])
    page.get_by_role("button", name="Neuen Schlüssel erzeugen").click()
    page.wait_for_load_state()
    secret = page.locator("#totp-secret").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    qr = page.locator("figure.qr svg")
    assert qr.is_visible() and qr.bounding_box()["width"] > 100
    assert page.locator("#totp-uri").get_attribute("href").startswith("otpauth://totp/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "console-totp.png"), full_page=True)
    first = _code(secret, -1)
    page.get_by_label("Erster Code").fill(first)
    page.get_by_role("button", name="Einschalten").click()
    assert "ist eingeschaltet" in page.get_by_role("status").inner_text()
    backup = page.locator("#backup-codes li").all_inner_texts()
    assert len(set(backup)) == 10 and all(
        re.fullmatch(r"[a-z2-9]{4}-[a-z2-9]{4}", c) for c in backup
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= 360

    page.get_by_role("button", name="Abmelden").click()
    page.wait_for_url(re.compile(r"/$"))
    login(page, demo, "anna")
    assert page.url.endswith("/login/code")
    page.goto(demo.http_url + "/console")
    assert page.url.rstrip("/") == demo.http_url  # no session for the password alone
    page.goto(demo.http_url + "/login/code")
    page.get_by_label("Code aus der Authenticator-App").fill(first)  # used up already
    page.get_by_role("button", name="Bestätigen").click()
    assert page.get_by_role("alert").inner_text() == "Der Code ist falsch oder verbraucht."
    page.get_by_label("Code aus der Authenticator-App").fill(_code(secret, +1))
    page.get_by_role("button", name="Bestätigen").click()
    page.wait_for_url(re.compile(r"/console$"))
    assert page.get_by_role("button", name="Abmelden").is_visible()

    # without the phone: a backup code, once
    page.get_by_role("button", name="Abmelden").click()
    page.wait_for_url(re.compile(r"/$"))
    login(page, demo, "anna")
    page.get_by_label("Code aus der Authenticator-App").fill(backup[0])
    page.get_by_role("button", name="Bestätigen").click()
    page.wait_for_url(re.compile(r"/totp\?backup_left=9$"))
    assert "Unbenutzte Ersatzcodes: 9" in page.locator("#backup-left").inner_text()
    context.close()  # the console's event stream ends with it
