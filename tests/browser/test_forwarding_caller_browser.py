"""Caller and presence conditions on the portal's rule form, in a real browser (chromium via
Playwright) at 360 px against the real `heimbuero serve` with the demo office: a rule for the
business's VIP callers sends Herr Meier to the owner's mobile while everybody else reaches the
office; the page's simulator (with a caller) and `heimbuero route simulate --caller` agree.
Refusals over plain HTTP with a session: invalid and oversize caller lists, forged choices."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import pytest
from playwright.sync_api import expect

from heimbuero.office.demo import MUELLER_MOBILE
from tests.e2e.harness import Server

from .conftest import login
from .test_forwarding_browser import (  # noqa: F401 (office is a fixture)
    NUMBER,
    _csrf,
    _session,
    _tuesday,
    office,
)
from .test_forwarding_rules_browser import fits, stored_names, version_of

pytestmark = [pytest.mark.e2e]
VIP = "0171 2222222"  # Herr Meier, a VIP caller of Tischlerei Müller


def cli_plan(srv: Server, at: str, caller: str | None = None) -> dict[str, Any]:
    args = ["route", "simulate", NUMBER, "--json", "--at", at, "--data", str(srv.data_dir)]
    res = srv.cli(*args, *(["--caller", caller] if caller else []))
    plan: dict[str, Any] = json.loads(res.stdout)
    return plan


def stored_rule(srv: Server, name: str) -> dict[str, Any]:
    doc = json.loads(
        srv.cli("rules", "export", "mueller", "--json", "--data", str(srv.data_dir)).stdout
    )
    rule: dict[str, Any] = next(r for r in doc["numbers"][NUMBER]["rules"] if r["name"] == name)
    return rule


def simulate_caller(page: Any, day: date, hhmm: str, caller: str, rule: str) -> None:
    """The page's simulator (recomputed by its script) for a call from `caller` names `rule`."""
    page.get_by_label("Datum (leer: jetzt)").fill(day.isoformat())
    page.get_by_label("Uhrzeit", exact=True).fill(hhmm)
    page.get_by_label("Anrufer (leer: unbekannt)").fill(caller)
    page.get_by_label("Anrufer (leer: unbekannt)").dispatch_event("change")
    expect(page.locator("#sim-result .sim-rule")).to_have_text(rule)


def test_vip_rule_sends_the_vip_to_the_mobile_and_others_to_the_office(
    browser: Any,
    office: Server,  # noqa: F811
) -> None:
    srv = office
    data = ["--data", str(srv.data_dir)]
    srv.cli("client", "vip", "mueller", VIP, "--name", "Herr Meier", *data)
    evening = _tuesday(date.today().year + 1)
    at = f"{evening.isoformat()}T18:00"
    assert cli_plan(srv, at, VIP)["rule"] == "Sonst"  # no caller rule yet
    ctx = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 740})
    page = ctx.new_page()
    login(page, srv, "mueller")
    page.goto(srv.http_url + "/portal/forwarding")
    page.get_by_role("link", name="Regel hinzufügen").click()
    page.wait_for_url(re.compile(r"/portal/forwarding/rule\?"))
    page.get_by_label("Name der Regel").fill("VIP")
    page.get_by_label("VIP-Anrufer", exact=True).select_option("yes")
    page.get_by_label("Ziel", exact=True).select_option(f"external:{MUELLER_MOBILE}")
    page.get_by_label("Klingeldauer in Sekunden").fill("25")
    # an invalid number first: explained next to its field, nothing stored
    page.get_by_label("Anrufernummer ist (mehrere durch Komma getrennt)").fill("0171 22x")
    page.get_by_role("button", name="Regel speichern").click()
    page.wait_for_load_state()
    expect(page.locator("#caller_numbers-error")).to_contain_text("Eine Nummer ist ungültig")
    assert page.locator("#caller-numbers").get_attribute("aria-invalid") == "true"
    assert "VIP" not in stored_names(srv)
    fits(page, "rule-caller-invalid")
    page.get_by_label("Anrufernummer ist (mehrere durch Komma getrennt)").fill("")
    page.get_by_role("button", name="Regel speichern").click()
    page.wait_for_url(re.compile(r"/portal/forwarding\?.*saved=1"))
    assert stored_rule(srv, "VIP")["when"] == {"caller": {"vip": True}}
    assert "nur VIP-Anrufer" in page.locator("ol.rules").inner_text()

    # the VIP reaches the owner's mobile through the trunk, anyone else the office (team)
    vip = cli_plan(srv, at, VIP)
    assert vip["rule"] == "VIP"
    assert vip["steps"] == [{"targets": [f"external:{MUELLER_MOBILE}"], "timeout": 25}]
    other = cli_plan(srv, at, "030 1234567")
    assert other["rule"] == "Sonst" and other["steps"][0]["targets"] == ["group:team"]
    assert cli_plan(srv, at)["rule"] == "Sonst"  # an unknown caller is no VIP
    simulate_caller(page, evening, "18:00", VIP, "VIP")
    steps = page.locator("#sim-result .sim-steps").inner_text()
    assert f"externe Nummer {MUELLER_MOBILE}" in steps
    simulate_caller(page, evening, "18:00", "030 1234567", "Sonst")
    fits(page, "simulator-caller")

    # a presence condition on the same rule: only while the owner's phone is not registered
    page.get_by_role("link", name="VIP: Bedingungen ändern").click()
    page.wait_for_url(re.compile(r"/portal/forwarding/rule\?"))
    assert page.get_by_label("VIP-Anrufer", exact=True).input_value() == "yes"
    page.get_by_label("Telefon angemeldet").select_option("no")
    page.get_by_role("button", name="Regel speichern").click()
    page.wait_for_load_state()  # no user chosen: explained next to the fieldset
    expect(page.locator("#presence-error")).to_contain_text("Bitte den Benutzer wählen")
    page.get_by_label("Benutzer", exact=True).select_option("mueller")
    page.get_by_role("button", name="Regel speichern").click()
    page.wait_for_url(re.compile(r"saved=1"))
    assert stored_rule(srv, "VIP")["when"] == {
        "caller": {"vip": True},
        "presence": {"user": "mueller", "registered": False},
    }
    assert "wenn mueller nicht angemeldet ist" in page.locator("ol.rules").inner_text()
    assert cli_plan(srv, at, VIP)["rule"] == "VIP"  # nobody registered in the simulator
    # back to "egal": the presence condition is gone
    page.get_by_role("link", name="VIP: Bedingungen ändern").click()
    page.wait_for_url(re.compile(r"/portal/forwarding/rule\?"))
    assert page.get_by_label("Benutzer", exact=True).input_value() == "mueller"
    page.get_by_label("Telefon angemeldet").select_option("")
    page.get_by_label("Benutzer", exact=True).select_option("")
    page.get_by_role("button", name="Regel speichern").click()
    page.wait_for_url(re.compile(r"saved=1"))
    assert stored_rule(srv, "VIP")["when"] == {"caller": {"vip": True}}
    ctx.close()


def test_caller_conditions_refused_change_nothing(office: Server) -> None:  # noqa: F811
    srv = office
    before = stored_names(srv)
    add = {"number": NUMBER, "index": "", "name": "Stammkunden", "t0": "voicemail:mueller",
           "timeout": "20"}  # fmt: skip
    with _session(srv, "mueller", srv.users["mueller"]) as owner:
        page = owner.get("/portal/forwarding")
        token, v = _csrf(page.text), version_of(page.text)
        common = {**add, "csrf": token, "version": v}
        for extra, field, text in (
            ({"caller_numbers": "hallo"}, "caller_numbers", "Eine Nummer ist ungültig"),
            ({"caller_numbers": "0171 2222222, +49 171 2222222"}, "caller_numbers",
             "zweimal in der Liste"),
            ({"caller_prefixes": "171"}, "caller_prefixes", "mit 0 (089)"),
            ({"caller_numbers": ",".join(f"030 555{i:04d}" for i in range(60))}, "caller",
             "Höchstens 50"),
            ({"caller_numbers": ",".join(f"030 555{i:04d}" for i in range(30)),
              "caller_prefixes": ",".join(f"0{i + 30}" for i in range(30))}, "caller",
             "Höchstens 50"),
            ({"presence_in_call": "yes"}, "presence", "Bitte den Benutzer wählen"),
            ({"presence_user": "mueller"}, "presence", "etwas wählen"),
            ({"presence_user": "schulz", "presence_registered": "yes"}, "presence",
             "gehört nicht zum Betrieb"),
        ):  # fmt: skip
            r = owner.post("/portal/forwarding/rule", data={**common, **extra})
            assert r.status_code == 422, (extra, r.text)
            assert f'id="{field}-error"' in r.text and text in r.text, (extra, r.text)
        # english
        r = owner.post("/portal/forwarding/rule", headers={"Accept-Language": "en"},
                       data={**common, "caller_numbers": "hallo"})  # fmt: skip
        assert r.status_code == 422 and "A number is invalid" in r.text
        # forged choices are "egal"; no VIP list of another business can be named
        forged = {**common, "caller_vip": "schulz", "caller_numbers": "089 1234"}
        r = owner.post("/portal/forwarding/rule", data=forged)
        assert r.status_code == 303
        assert stored_rule(srv, "Stammkunden")["when"] == {"caller": {"numbers": ["+49891234"]}}
        # the page's simulator explains an invalid caller
        r = owner.get("/portal/forwarding/simulate", params={"sim_caller": "hallo"})
        assert r.status_code == 422 and "caller" in r.json()["error"]
    assert stored_names(srv) == [*before[:-1], "Stammkunden", before[-1]]
