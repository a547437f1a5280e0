"""The client portal's forwarding page (/portal/forwarding) in a real browser (chromium via
Playwright) on a phone-sized screen against the real `heimbuero serve` with the demo office,
checked against the command line (what the page shows is what is stored); and its refusals
over plain HTTP with a session (CSRF, read-only employee, another business, invalid input)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import expect

from heimbuero.office.demo import mueller_rules
from tests.e2e.harness import Server

from .conftest import login

pytestmark = [pytest.mark.e2e]

SHOTS = os.environ.get("HEIMBUERO_SCREENSHOTS", "")
NUMBER = "+49891234567"  # the demo client mueller's number
BERLIN = ZoneInfo("Europe/Berlin")
EMPLOYEE = "lehrling"
EMPLOYEE_PASSWORD = "Hobelbank-Lehrjahr-1"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Server]:
    """The demo office; Tischlerei Müller's rules gain a closure rule (voicemail while closed)
    and the business an employee (read-only)."""
    doc = mueller_rules()
    rules = doc["numbers"][NUMBER]["rules"]
    rules.insert(2, {"name": "Betriebsurlaub", "when": {"closures": "only"},
                     "steps": [{"targets": ["voicemail:mueller"], "timeout": 30}]})  # fmt: skip
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    srv = Server(tmp_path / "server", demo=True, http=True)
    srv.prepare()
    data = ["--data", str(srv.data_dir)]
    srv.cli("rules", "import", "mueller", str(path), *data)
    srv.add_user(EMPLOYEE, EMPLOYEE_PASSWORD, "employee")
    srv.cli("user", "set", EMPLOYEE, "--client", "mueller", *data)
    with srv:
        yield srv


def cli_rule(srv: Server, at: str | None = None) -> str | None:
    """The rule `heimbuero route simulate` names for a call to mueller's number."""
    args = ["route", "simulate", NUMBER, "--json", "--data", str(srv.data_dir)]
    res = srv.cli(*args, *(["--at", at] if at else []))
    rule: str | None = json.loads(res.stdout)["rule"]
    return rule


def sim_rule(page: Any) -> str:
    return str(page.locator("#sim-result .sim-rule").inner_text())


def test_owner_switches_override_and_adds_a_closure_on_a_phone(
    browser: Any, office: Server
) -> None:
    srv = office
    ctx = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 740})
    page = ctx.new_page()
    login(page, srv, "mueller")
    page.get_by_role("link", name="Rufumleitung und Regeln").click()
    page.wait_for_url(re.compile(r"/portal/forwarding"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    normal = cli_rule(srv)
    assert normal in ("Werktag", "Sonst")
    assert sim_rule(page) == normal
    assert "Keine Rufumleitung aktiv." in page.locator("#override-state").inner_text()
    # the rules as a list and the week grid (routing's own answer per hour)
    rules = page.locator("ol.rules").inner_text()
    assert "Werktag" in rules and "Mo, Di, Mi, Do, Fr" in rules and "07:00–16:00 Uhr" in rules
    assert "Benutzer mueller, 15 s" in rules
    assert page.locator("table.week tbody tr").count() == 24
    monday_10 = page.locator("table.week tbody tr").nth(10).locator("td").first
    assert monday_10.get_attribute("title") in ("Werktag", "Sonst")  # Sonst on a holiday
    assert page.locator("ul.holidays li").count() >= 1

    # everything to the office until two hours from now (a date and a time: past midnight too)
    until = datetime.now(BERLIN).replace(second=0, microsecond=0) + timedelta(hours=2)
    page.get_by_label("Alles ins Büro").check()
    page.get_by_label("Bis Uhrzeit (leer: ohne Ende)").fill(until.strftime("%H:%M"))
    page.get_by_label("Am Tag (leer: heute)").fill(until.date().isoformat())
    page.get_by_role("button", name="Umleitung speichern").click()
    page.wait_for_load_state()
    state = page.locator("#override-state").inner_text()
    assert "Rufumleitung Büroservice aktiv bis" in state and until.strftime("%H:%M") in state
    assert sim_rule(page) == "Override"
    assert "Gruppe team, 30 s" in page.locator("#sim-result .sim-steps").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "console-forwarding.png"), full_page=True)
    # stored, not just shown: the command line agrees
    assert cli_rule(srv) == "Override"
    shown = srv.cli("client", "override", "mueller", "--data", str(srv.data_dir)).stdout
    assert "everything to office" in shown and until.strftime("%d.%m.%Y %H:%M") in shown
    assert "(active)" in shown

    # off again: the normal rule
    page.get_by_label("Aus", exact=True).check()
    page.get_by_role("button", name="Umleitung speichern").click()
    page.wait_for_load_state()
    assert "Keine Rufumleitung aktiv." in page.locator("#override-state").inner_text()
    assert sim_rule(page) == cli_rule(srv) == normal

    # a closure, and the simulator (recomputed without a reload) on a day inside it
    year = date.today().year + 1
    page.get_by_label("Erster Tag").fill(f"{year}-03-01")
    page.get_by_label("Letzter Tag (leer: nur der erste)").fill(f"{year}-03-05")
    page.get_by_label("Notiz").fill("Betriebsurlaub Frühjahr")
    page.get_by_role("button", name="Betriebsurlaub eintragen").click()
    page.wait_for_load_state()
    assert "Betriebsurlaub Frühjahr" in page.locator("ul.closures").inner_text()
    page.evaluate("window.__same_page = 1")
    page.get_by_label("Datum (leer: jetzt)").fill(f"{year}-03-02")
    page.get_by_label("Uhrzeit", exact=True).fill("10:00")
    page.get_by_label("Uhrzeit", exact=True).dispatch_event("change")
    expect(page.locator("#sim-result .sim-when")).to_contain_text(f"02.03.{year % 100:02d}, 10:00")
    assert sim_rule(page) == "Betriebsurlaub"
    assert page.evaluate("window.__same_page") == 1  # no reload
    assert f"02.03.{year % 100:02d}, 10:00" in page.locator("#sim-result .sim-when").inner_text()
    assert "Mailbox von mueller" in page.locator("#sim-result .sim-steps").inner_text()
    assert cli_rule(srv, f"{year}-03-02T10:00") == "Betriebsurlaub"
    assert cli_rule(srv, f"{year}-03-08T10:00") == "Werktag"  # a Monday after it

    # invalid input is explained next to the field and nothing is stored
    page.get_by_label("Erster Tag").fill(f"{year}-04-10")
    page.get_by_label("Letzter Tag (leer: nur der erste)").fill(f"{year}-04-01")
    page.get_by_role("button", name="Betriebsurlaub eintragen").click()
    page.wait_for_load_state()
    assert page.locator("#last-error").inner_text() == "Der letzte Tag liegt vor dem ersten."
    assert (
        page.get_by_label("Letzter Tag (leer: nur der erste)").get_attribute("aria-invalid")
        == "true"
    )
    closures = json.loads(srv.cli("client", "closures", "mueller", "--json",
                                  "--data", str(srv.data_dir)).stdout)  # fmt: skip
    assert [(c["first"], c["last"]) for c in closures] == [(f"{year}-03-01", f"{year}-03-05")]
    # keyboard: the override radios are reachable and labelled
    page.get_by_label("Alles auf mein Handy").focus()
    assert page.evaluate("document.activeElement.value") == "mobile"
    ctx.close()


# -- refusals over HTTP with a session -------------------------------------------------------


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


@contextmanager
def _session(srv: Server, name: str, password: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.http_url, timeout=10, follow_redirects=False) as http:
        page = http.get("/")
        r = http.post("/login", data={"csrf": _csrf(page.text), "name": name, "password": password})
        assert r.status_code == 303, r.text
        yield http


def _override(srv: Server) -> str:
    res = srv.cli("client", "override", "mueller", "--data", str(srv.data_dir), check=False)
    return res.stdout + res.stderr


def test_refusals_change_nothing(office: Server) -> None:
    srv = office
    before = _override(srv)
    assert "no override" in before
    with _session(srv, "mueller", srv.users["mueller"]) as owner:
        page = owner.get("/portal/forwarding")
        assert page.status_code == 200
        token = _csrf(page.text)
        english = owner.get("/portal/forwarding", headers={"Accept-Language": "en"}).text
        assert "Everything to the office" in english and "A call now goes to:" in english
        # no CSRF token: 403, nothing changed
        r = owner.post("/portal/forwarding/override", data={"target": "office"})
        assert r.status_code == 403
        r = owner.post("/portal/forwarding/closures", data={"first": "2030-01-01"})
        assert r.status_code == 403
        assert _override(srv) == before
        # another business's client id answers like a missing one
        missing = owner.get("/portal/forwarding?client=nosuch")
        other = owner.get("/portal/forwarding?client=schulz")
        assert missing.status_code == other.status_code == 404
        assert "Nicht gefunden" in other.text and "Sanitär Schulz" not in other.text
        r = owner.post("/portal/forwarding/override",
                       data={"csrf": token, "client": "schulz", "target": "office"})  # fmt: skip
        assert r.status_code == 404
        assert owner.get("/portal/forwarding/simulate?client=schulz").status_code == 404
        # invalid dates: explained, nothing stored
        for data, field, text in (
            ({"first": "2030-02-30"}, "first-error", "Das Datum ist ungültig"),
            ({"first": "2030-03-10", "last": "2030-03-01"}, "last-error", "vor dem ersten"),
            ({"first": ""}, "first-error", "Das Datum ist ungültig"),
        ):
            r = owner.post("/portal/forwarding/closures", data={"csrf": token, **data})
            assert r.status_code == 422 and f'id="{field}"' in r.text and text in r.text
        r = owner.post("/portal/forwarding/override", data={
            "csrf": token, "target": "office", "until_date": "2020-01-01", "until_time": "10:00",
        })  # fmt: skip
        assert r.status_code == 422 and "Das Ende liegt in der Vergangenheit." in r.text
        r = owner.post(
            "/portal/forwarding/override",
            data={"csrf": token, "target": "office", "until_time": "25:99"},
        )
        assert r.status_code == 422 and "Die Uhrzeit ist ungültig" in r.text
        r = owner.get("/portal/forwarding/simulate?sim_date=2030-13-01")
        assert r.status_code == 422 and r.json()["error"]
        assert _override(srv) == before
        listed = srv.cli("client", "closures", "mueller", "--data", str(srv.data_dir)).stdout
        assert "no closures" in listed
    # the employee reads, but may not switch
    with _session(srv, EMPLOYEE, EMPLOYEE_PASSWORD) as employee:
        page = employee.get("/portal/forwarding")
        assert page.status_code == 200 and "Ein Anruf jetzt geht an:" in page.text
        assert "Umleitung speichern" not in page.text
        token = _csrf(page.text)
        r = employee.post("/portal/forwarding/override", data={"csrf": token, "target": "office"})
        assert r.status_code == 403
        r = employee.post("/portal/forwarding/closures",
                          data={"csrf": token, "first": "2030-01-01"})  # fmt: skip
        assert r.status_code == 403
    assert _override(srv) == before
    assert "no closures" in srv.cli("client", "closures", "mueller",
                                    "--data", str(srv.data_dir)).stdout  # fmt: skip
    # an agent opens it for the client, and may switch
    with _session(srv, "anna", srv.users["anna"]) as agent:
        assert agent.get("/portal/forwarding").status_code == 200  # the client picker
        page = agent.get("/portal/forwarding?client=mueller")
        assert page.status_code == 200 and "Tischlerei Müller" in page.text
        r = agent.post("/portal/forwarding/override", data={
            "csrf": _csrf(page.text), "client": "mueller", "target": "mobile",
        })  # fmt: skip
        assert r.status_code == 303
    assert "everything to mobile until cancelled (active)" in _override(srv)


def _tuesday(year: int) -> date:
    """A Tuesday in March of `year` (no public holiday in Bavaria)."""
    day = date(year, 3, 10)
    return day + timedelta(days=(1 - day.weekday()) % 7)


def test_owner_edits_plan_steps_with_a_draft_preview_on_a_phone(
    browser: Any, office: Server
) -> None:
    srv = office
    tuesday = _tuesday(date.today().year + 1)
    at = f"{tuesday.isoformat()}T10:00"

    def stored_first_step() -> tuple[list[str], int]:
        res = srv.cli("route", "simulate", NUMBER, "--json", "--at", at,
                      "--data", str(srv.data_dir))  # fmt: skip
        plan = json.loads(res.stdout)
        assert plan["rule"] == "Werktag"
        return plan["steps"][0]["targets"], plan["steps"][0]["timeout"]

    assert stored_first_step() == (["user:mueller"], 15)
    ctx = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 740})
    page = ctx.new_page()
    login(page, srv, "mueller")
    page.goto(srv.http_url + "/portal/forwarding")
    page.get_by_role("link", name="Schritte bearbeiten").click()
    page.wait_for_url(re.compile(r"/portal/forwarding/edit"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    werktag = page.locator("fieldset.rule", has_text="Werktag")
    target = page.locator("[id='n0.r3.s0.t0']")
    timeout = page.locator("[id='n0.r3.s0.timeout']")
    assert "Werktag" in werktag.locator("legend").first.inner_text()
    assert target.input_value() == "user:mueller" and timeout.input_value() == "15"
    # the draft preview, recomputed on each change, before saving
    page.get_by_label("Datum (leer: jetzt)").fill(tuesday.isoformat())
    page.get_by_label("Uhrzeit", exact=True).fill("10:00")
    target.select_option("voicemail:mueller")
    timeout.fill("20")
    timeout.dispatch_event("change")
    expect(page.locator("#draft-result .sim-steps")).to_contain_text("Mailbox von mueller, 20 s")
    assert page.locator("#draft-result .sim-rule").inner_text() == "Werktag"
    assert stored_first_step() == (["user:mueller"], 15)  # a draft: nothing stored
    # an invalid ring time: explained next to the field, nothing stored
    timeout.fill("zwei")
    page.get_by_role("button", name="Regeln speichern").click()
    page.wait_for_load_state()
    error = page.locator("[id='n0.r3.s0.timeout-error']")
    assert error.inner_text() == "Die Klingeldauer muss 1 bis 600 ganze Sekunden sein."
    assert page.locator("[id='n0.r3.s0.timeout']").get_attribute("aria-invalid") == "true"
    assert stored_first_step() == (["user:mueller"], 15)
    # corrected and saved: stored, as the command line shows
    page.locator("[id='n0.r3.s0.timeout']").fill("20")
    assert page.locator("[id='n0.r3.s0.t0']").input_value() == "voicemail:mueller"
    page.get_by_role("button", name="Regeln speichern").click()
    page.wait_for_url(re.compile(r"/portal/forwarding\?"))
    assert page.get_by_role("status").filter(has_text="gespeichert").is_visible()
    assert stored_first_step() == (["voicemail:mueller"], 20)
    assert "Mailbox von mueller, 20 s" in page.locator("ol.rules").inner_text()
    ctx.close()


def test_employee_may_not_edit_steps(office: Server) -> None:
    srv = office
    with _session(srv, EMPLOYEE, EMPLOYEE_PASSWORD) as employee:
        page = employee.get("/portal/forwarding")
        assert "Schritte bearbeiten" not in page.text
        assert employee.get("/portal/forwarding/edit").status_code == 403
        r = employee.post("/portal/forwarding/edit", data={
            "csrf": _csrf(page.text), "action": "save", "n0.r3.s0.t0": "voicemail:mueller",
            "n0.r3.s0.timeout": "20",
        })  # fmt: skip
        assert r.status_code == 403
    with _session(srv, "mueller", srv.users["mueller"]) as owner:
        assert owner.get("/portal/forwarding/edit?client=schulz").status_code == 404
        r = owner.post("/portal/forwarding/edit", data={"action": "save"})
        assert r.status_code == 403  # no CSRF token
    doc = json.loads(
        srv.cli("rules", "export", "mueller", "--json", "--data", str(srv.data_dir)).stdout
    )
    steps = doc["numbers"][NUMBER]["rules"][3]["steps"]
    assert steps[0] == {"targets": ["user:mueller"], "timeout": 15}
