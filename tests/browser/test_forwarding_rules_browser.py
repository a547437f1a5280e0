"""Adding, changing, moving and removing forwarding rules on the portal's forwarding page, in a
real browser (chromium via Playwright) at 360 px against the real `heimbuero serve` with the
demo office; the page's simulator and `heimbuero route simulate` show that the routing changed.
Its refusals over plain HTTP with a session: CSRF, another business's client, forged numbers
and indexes, the read-only employee, oversize and invalid input, a stale version."""

from __future__ import annotations

import json
import os
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from heimbuero.office.demo import SCHULZ_NUMBER, mueller_rules
from tests.e2e.harness import Server

from .conftest import login
from .test_forwarding_browser import (  # noqa: F401 (office is a fixture)
    EMPLOYEE,
    EMPLOYEE_PASSWORD,
    NUMBER,
    _csrf,
    _session,
    _tuesday,
    cli_rule,
    office,
)

pytestmark = [pytest.mark.e2e]
SHOTS = os.environ.get("HEIMBUERO_SCREENSHOTS", "")


def stored_names(srv: Server) -> list[str]:
    doc = json.loads(
        srv.cli("rules", "export", "mueller", "--json", "--data", str(srv.data_dir)).stdout
    )
    return [r["name"] for r in doc["numbers"][NUMBER]["rules"]]


def version_of(html: str) -> str:
    """The version of the rules a page's forms carry."""
    m = re.search(r'name="version" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def simulate(page: Any, day: date, hhmm: str) -> str:
    """The page's simulator (recomputed by its script) at `day` `hhmm`: the deciding rule."""
    page.get_by_label("Datum (leer: jetzt)").fill(day.isoformat())
    page.get_by_label("Uhrzeit", exact=True).fill(hhmm)
    page.get_by_label("Uhrzeit", exact=True).dispatch_event("change")
    expect(page.locator("#sim-result .sim-when")).to_contain_text(hhmm)
    return str(page.locator("#sim-result .sim-rule").inner_text())


def fits(page: Any, shot: str = "") -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    if SHOTS and shot:
        page.screenshot(path=str(Path(SHOTS) / f"console-forwarding-{shot}.png"), full_page=True)


def test_owner_adds_moves_changes_and_removes_a_rule_on_a_phone(
    browser: Any,
    office: Server,  # noqa: F811
) -> None:
    srv = office
    tuesday = _tuesday(date.today().year + 1)
    at = tuesday.isoformat()
    before = stored_names(srv)
    assert before == ["Override", "Override Handy", "Betriebsurlaub", "Werktag", "Sonst"]
    assert cli_rule(srv, f"{at}T12:30") == "Werktag"
    ctx = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 740})
    page = ctx.new_page()
    login(page, srv, "mueller")
    page.goto(srv.http_url + "/portal/forwarding")
    fits(page)
    assert simulate(page, tuesday, "12:30") == "Werktag"

    # add: a lunch break on weekdays to the voicemail
    page.get_by_role("link", name="Regel hinzufügen").click()
    page.wait_for_url(re.compile(r"/portal/forwarding/rule\?"))
    fits(page, "rule-new")
    page.get_by_label("Name der Regel").fill("Mittagspause")
    for day in ("Mo", "Di", "Mi", "Do", "Fr"):
        page.get_by_label(day, exact=True).check()
    page.get_by_label("von", exact=True).fill("12:00")
    page.get_by_label("bis", exact=True).fill("13:00")
    page.get_by_label("Ziel", exact=True).select_option("voicemail:mueller")
    page.get_by_label("Klingeldauer in Sekunden").fill("20")
    page.get_by_role("button", name="Regel speichern").click()
    page.wait_for_url(re.compile(r"/portal/forwarding\?.*saved=1"))
    assert page.get_by_role("status").filter(has_text="gespeichert").is_visible()
    # before the unconditional "Sonst", behind "Werktag", which still decides at 12:30
    assert stored_names(srv) == [*before[:4], "Mittagspause", "Sonst"]
    rules = page.locator("ol.rules").inner_text()
    assert "Mittagspause" in rules and "12:00–13:00 Uhr" in rules
    assert simulate(page, tuesday, "12:30") == "Werktag"
    fits(page, "rules")

    # a second tab opens the form of "Werktag" from this version of the rules
    other = ctx.new_page()
    other.goto(srv.http_url + "/portal/forwarding")
    other.get_by_role("link", name="Werktag: Bedingungen ändern").click()
    other.wait_for_url(re.compile(r"/portal/forwarding/rule\?"))

    # move it up: now it decides at 12:30 on a Tuesday
    page.get_by_role("button", name="Mittagspause: nach oben").click()
    page.wait_for_url(re.compile(r"saved=1"))
    assert stored_names(srv) == [*before[:3], "Mittagspause", "Werktag", "Sonst"]
    assert simulate(page, tuesday, "12:30") == "Mittagspause"
    assert "Mailbox von mueller, 20 s" in page.locator("#sim-result .sim-steps").inner_text()
    assert cli_rule(srv, f"{at}T12:30") == "Mittagspause"
    assert cli_rule(srv, f"{at}T10:00") == "Werktag"

    # the second tab saves its stale form: refused, nothing overwritten
    other.get_by_label("Name der Regel").fill("Werktag alt")
    other.get_by_role("button", name="Regel speichern").click()
    other.wait_for_load_state()
    expect(other.locator("#general-errors")).to_contain_text("inzwischen geändert")
    assert stored_names(srv) == [*before[:3], "Mittagspause", "Werktag", "Sonst"]
    other.close()

    # change its condition: 14:00–15:00; an invalid time first is explained, nothing stored
    page.get_by_role("link", name="Mittagspause: Bedingungen ändern").click()
    page.wait_for_url(re.compile(r"/portal/forwarding/rule\?"))
    assert page.get_by_label("von", exact=True).input_value() == "12:00"
    assert page.get_by_label("Mo", exact=True).is_checked()
    assert not page.get_by_label("Sa", exact=True).is_checked()
    page.get_by_label("von", exact=True).fill("15:00")
    page.get_by_label("bis", exact=True).fill("14:00")
    page.get_by_role("button", name="Regel speichern").click()
    page.wait_for_load_state()
    assert "Das Ende liegt nicht nach dem Beginn" in page.locator("#time-error").inner_text()
    assert page.locator("#time").get_attribute("aria-invalid") == "true"
    assert cli_rule(srv, f"{at}T12:30") == "Mittagspause"
    fits(page, "rule-invalid")
    page.get_by_label("von", exact=True).fill("14:00")
    page.get_by_label("bis", exact=True).fill("15:00")
    page.get_by_role("button", name="Regel speichern").click()
    page.wait_for_url(re.compile(r"saved=1"))
    assert simulate(page, tuesday, "12:30") == "Werktag"
    assert simulate(page, tuesday, "14:30") == "Mittagspause"
    assert cli_rule(srv, f"{at}T14:30") == "Mittagspause"
    assert cli_rule(srv, f"{at}T12:30") == "Werktag"

    # remove it, after the confirmation page
    page.get_by_role("link", name="Mittagspause: Entfernen").click()
    page.wait_for_url(re.compile(r"/portal/forwarding/rules/remove\?"))
    fits(page, "rule-remove")
    assert "Mittagspause" in page.locator("h1").inner_text()
    assert "Mittagspause" in stored_names(srv)  # asking stores nothing
    page.get_by_role("button", name="Ja, Regel entfernen").click()
    page.wait_for_url(re.compile(r"saved=1"))
    assert stored_names(srv) == before
    assert "Mittagspause" not in page.locator("ol.rules").inner_text()
    assert simulate(page, tuesday, "14:30") == "Werktag"
    assert cli_rule(srv, f"{at}T14:30") == "Werktag"
    fits(page)
    ctx.close()


def test_rule_changes_refused_change_nothing(office: Server, tmp_path: Path) -> None:  # noqa: F811
    srv = office
    before = stored_names(srv)
    add = {"number": NUMBER, "index": "", "name": "Samstag", "day.sat": "1",
           "t0": "voicemail:mueller", "timeout": "20"}  # fmt: skip
    with _session(srv, "mueller", srv.users["mueller"]) as owner:
        page = owner.get("/portal/forwarding")
        token = _csrf(page.text)
        v = version_of(page.text)
        # no CSRF token: 403
        for path, data in (("/portal/forwarding/rule", add),
                           ("/portal/forwarding/rules/move",
                            {"number": NUMBER, "index": "3", "direction": "up"}),
                           ("/portal/forwarding/rules/remove",
                            {"number": NUMBER, "index": "3", "confirm": "yes"})):  # fmt: skip
            assert owner.post(path, data={**data, "version": v}).status_code == 403
        # another business: like a missing one, for its client id and for its number
        assert owner.get(f"/portal/forwarding/rule?client=schulz&number={SCHULZ_NUMBER}"
                         ).status_code == 404  # fmt: skip
        for data in ({"client": "schulz", "number": SCHULZ_NUMBER, "index": "0"},
                     {"number": SCHULZ_NUMBER, "index": "0"},
                     {"number": NUMBER, "index": "99"}, {"number": NUMBER, "index": "-1"},
                     {"number": NUMBER, "index": "x"}):  # fmt: skip
            common = {"csrf": token, "version": v, **data}
            r = owner.post("/portal/forwarding/rules/move", data={**common, "direction": "up"})
            assert r.status_code == 404, data
            r = owner.post("/portal/forwarding/rules/remove", data={**common, "confirm": "yes"})
            assert r.status_code == 404, data
            r = owner.post("/portal/forwarding/rule", data={**add, **common, "name": "X"})
            assert r.status_code == 404, data
        r = owner.post(
            "/portal/forwarding/rules/move",
            data={"csrf": token, "version": v, "number": NUMBER, "index": "3", "direction": "left"},
        )
        assert r.status_code == 404
        # removing needs the confirmation
        r = owner.post(
            "/portal/forwarding/rules/remove",
            data={"csrf": token, "version": v, "number": NUMBER, "index": "3"},
        )
        assert r.status_code == 400 and "bestätigen" in r.text
        # oversize and invalid input: explained (or refused unread), nothing stored
        r = owner.post(
            "/portal/forwarding/rule", data={**add, "csrf": token, "version": v, "name": "x" * 5000}
        )
        assert r.status_code == 422 and 'id="name-error"' in r.text and "zu lang" in r.text
        r = owner.post(
            "/portal/forwarding/rule",
            data={**add, "csrf": token, "version": v, "name": "x" * 20000},
        )
        assert r.status_code == 403  # larger than a console form may be
        for extra, field, text in (
            ({"time_from": "25:00", "time_to": "26:00"}, "time", "Die Uhrzeit ist ungültig"),
            ({"time_from": "08:00"}, "time", "Beginn und Ende"),
            ({"holidays": "only", "closures": "only"}, "when", "nie zusammen"),
            ({"name": ""}, "name", "Bitte einen Namen angeben."),
            ({"name": "werktag"}, "name", "Diesen Namen hat schon"),
            ({"t0": ""}, "steps", "mindestens einen Schritt"),
            ({"timeout": "9999"}, "steps", "Die Klingeldauer muss 1 bis 600"),
            ({"t0": "user:schulz"}, "steps", "gehört nicht zum Betrieb"),
            ({"day.sat": "", "override": ""}, "when", None),  # unconditional before "Sonst"
        ):
            r = owner.post("/portal/forwarding/rule",
                           data={**add, "csrf": token, "version": v, **extra})  # fmt: skip
            assert r.status_code == 422, (extra, r.text)
            if text:
                assert f'id="{field}-error"' in r.text and text in r.text, (extra, r.text)
        # english
        r = owner.post(
            "/portal/forwarding/rule",
            headers={"Accept-Language": "en"},
            data={**add, "csrf": token, "version": v, "time_from": "08:00"},
        )
        assert r.status_code == 422 and "Please give the start and the end of the time." in r.text
        # a stale version: 409, nothing overwritten
        r = owner.post("/portal/forwarding/rule", data={**add, "csrf": token, "version": "old"})
        assert r.status_code == 409 and "inzwischen geändert" in r.text
        r = owner.post(
            "/portal/forwarding/rules/move",
            data={
                "csrf": token,
                "version": "old",
                "number": NUMBER,
                "index": "3",
                "direction": "up",
            },
        )
        assert r.status_code == 409 and "inzwischen geändert" in r.text
        # the step editor carries the version too
        r = owner.post("/portal/forwarding/edit", data={
            "csrf": token, "action": "save", "version": "old",
            "n0.r3.s0.t0": "voicemail:mueller", "n0.r3.s0.timeout": "20"})  # fmt: skip
        assert r.status_code == 409 and "inzwischen geändert" in r.text
        assert stored_names(srv) == before
    # an agent reads the rules but does not change them (like the step editor)
    with _session(srv, "anna", srv.users["anna"]) as agent:
        page = agent.get("/portal/forwarding?client=mueller")
        assert page.status_code == 200 and "Regel hinzufügen" not in page.text
        r = agent.post("/portal/forwarding/rules/move", data={
            "csrf": _csrf(page.text), "client": "mueller", "version": v, "number": NUMBER,
            "index": "3", "direction": "up"})  # fmt: skip
        assert r.status_code == 403
    assert stored_names(srv) == before
    # the read-only employee
    with _session(srv, EMPLOYEE, EMPLOYEE_PASSWORD) as employee:
        page = employee.get("/portal/forwarding")
        assert "Regel hinzufügen" not in page.text and "nach oben" not in page.text
        assert employee.get(f"/portal/forwarding/rule?number={NUMBER}").status_code == 403
        r = employee.post("/portal/forwarding/rules/remove", data={
            "csrf": _csrf(page.text), "version": v, "number": NUMBER, "index": "3",
            "confirm": "yes"})  # fmt: skip
        assert r.status_code == 403
    assert stored_names(srv) == before
    # an admin acts for the client
    with _session(srv, "admin", srv.users["admin"]) as admin:
        page = admin.get("/portal/forwarding?client=mueller")
        r = admin.post("/portal/forwarding/rules/move", data={
            "csrf": _csrf(page.text), "client": "mueller", "version": version_of(page.text),
            "number": NUMBER, "index": "3", "direction": "up"})  # fmt: skip
        assert r.status_code == 303
        assert r.headers["location"] == "/portal/forwarding?client=mueller&saved=1"
    assert stored_names(srv) == [*before[:2], before[3], before[2], before[4]]
    # the limits of the rules document: 50 rules of a number, the 51st is refused
    doc = mueller_rules()
    doc["numbers"][NUMBER]["rules"] = [
        {"name": f"R{i}", "when": {"days": ["sun"], "time": f"00:{i:02d}-00:{i + 1:02d}"},
         "steps": [{"targets": ["voicemail:mueller"]}]}
        for i in range(49)
    ] + [{"name": "Sonst", "steps": [{"targets": ["group:team"]}]}]  # fmt: skip
    path = tmp_path / "many.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    srv.cli("rules", "import", "mueller", str(path), "--data", str(srv.data_dir))
    with _session(srv, "mueller", srv.users["mueller"]) as owner:
        page = owner.get("/portal/forwarding")
        v = version_of(page.text)
        r = owner.post(
            "/portal/forwarding/rule", data={**add, "csrf": _csrf(page.text), "version": v}
        )
        assert r.status_code == 422 and "höchstens 50 je Rufnummer" in r.text
    assert len(stored_names(srv)) == 50
