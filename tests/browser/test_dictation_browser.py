"""The typist's pages (/dictation, /dictation/{id}) in a real browser against the real server:
a client's dictation uploaded over the API, taken by one typist on a 360 px screen (the other
typist is told it is taken), played, sped up with the pitch kept, typed with the hotkeys,
autosaved and found again after a reload, then delivered. The waveform on its canvas
(drawn from the server's peaks, a click seeks) and the foot pedal's reports (through the
page's test hook: no real pedal here) drive the same player."""

from __future__ import annotations

import base64
import io
import re
import secrets
import time
import wave
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Server

from .conftest import login

pytestmark = [pytest.mark.e2e]

TUS = {"Tus-Resumable": "1.0.0"}


def noise_wav(seconds: float) -> bytes:
    """A WAV (8 kHz, 16 bit, mono) of quiet noise: something to play for `seconds`."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        frames = bytearray(secrets.token_bytes(int(8000 * seconds) * 2))
        for i in range(1, len(frames), 2):  # the high bytes small: quiet
            frames[i] = 0 if frames[i] < 128 else 255
        w.writeframes(bytes(frames))
    return buf.getvalue()


def submit_dictation(srv: Server, title: str) -> int:
    """Client mueller's dictation through the API: a tus upload, then the job."""
    data = noise_wav(30)
    with httpx.Client(base_url=srv.http_url, auth=("mueller", srv.users["mueller"]),
                      timeout=30, headers=TUS) as http:  # fmt: skip
        meta = "filename " + base64.b64encode(b"diktat.wav").decode()
        head = {"Upload-Length": str(len(data)), "Upload-Metadata": meta}
        created = http.post("/api/dictation/uploads", headers=head)
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        sent = http.patch(location, content=data, headers={
            "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})  # fmt: skip
        assert sent.status_code == 204, sent.text
        body = {"title": title, "uploads": [location.rsplit("/", 1)[1]], "priority": "urgent"}
        job = http.post("/api/dictation/jobs", json=body)
        assert job.status_code == 201, job.text
        return int(job.json()["id"])


def api_job(srv: Server, jid: int) -> dict[str, Any]:
    r = httpx.get(f"{srv.http_url}/api/dictation/jobs/{jid}",
                  auth=("anna", srv.users["anna"]), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll `check` until it answers something true (a locator and page.evaluate: the page's
    CSP forbids the eval that wait_for_function needs)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {got!r})")
        time.sleep(0.1)


def audio(page: Any, prop: str) -> Any:
    return page.evaluate(f"document.getElementById('audio').{prop}")


def test_typist_takes_plays_types_and_delivers(browser: Any, demo: Server) -> None:
    jid = submit_dictation(demo, "Angebot Küche Meier")
    anna_ctx = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 740})
    ben_ctx = browser.new_context(locale="de-DE", java_script_enabled=False)
    admin_ctx = browser.new_context(locale="de-DE")
    try:
        anna, ben, admin = anna_ctx.new_page(), ben_ctx.new_page(), admin_ctx.new_page()
        # ben has the queue open, too (without scripts: it stays as loaded)
        login(ben, demo, "ben")
        ben.goto(demo.http_url + "/dictation")
        take_it = f"Übernehmen: #{jid} Angebot Küche Meier"
        ben.get_by_role("button", name=take_it).wait_for()
        # and the admin, whose page follows the changes
        login(admin, demo, "admin")
        admin.goto(demo.http_url + "/dictation")
        admin.locator("html[data-queue='1']").wait_for(state="attached", timeout=15_000)
        admin.get_by_role("button", name=take_it).wait_for()

        login(anna, demo, "anna")
        anna.get_by_role("link", name="Schreibdienst").click()
        anna.wait_for_url(re.compile(r"/dictation$"))
        job_card = anna.locator(f"li[data-job='{jid}']")
        assert "eilig" in job_card.inner_text()
        assert anna.evaluate("document.documentElement.scrollWidth") <= 360
        anna.get_by_role("button", name=take_it).click()
        anna.wait_for_url(re.compile(rf"/dictation/{jid}$"))
        anna.locator("html[data-dictation='1']").wait_for(state="attached", timeout=15_000)
        assert anna.evaluate("document.documentElement.scrollWidth") <= 360
        assert api_job(demo, jid)["typist"] == "anna"

        # the admin's queue: taken by anna, no button, without a reload
        admin.locator(f"li[data-job='{jid}']", has_text="(anna)").wait_for(timeout=15_000)
        assert admin.get_by_role("button", name=take_it).count() == 0
        # the second typist: already taken, by whom
        ben.get_by_role("button", name=take_it).click()
        ben.get_by_text(f"Auftrag {jid} hat bereits anna übernommen.").wait_for()

        # the pedal's note (headless chromium has no WebHID)
        assert anna.locator("#pedal").inner_text() in (
            "Fußschalter: nicht verfügbar in diesem Browser",
            "Fußpedal: nicht verbunden",
        )

        # play: the time goes on
        anna.get_by_role("button", name="Wiedergabe/Pause").click()
        until(lambda: audio(anna, "currentTime") > 0.5, "audio plays")
        assert audio(anna, "paused") is False
        anna.get_by_label("Tempo").select_option("1.5")
        assert audio(anna, "playbackRate") == 1.5
        assert audio(anna, "preservesPitch") is True
        # F1 in the text: back by the jump (3 s), and the browser's help does not open
        text = anna.get_by_label("Text", exact=True)
        text.click()
        until(lambda: audio(anna, "currentTime") > 4, "audio past 4 s")
        # (whether the page stopped the browser's own action, seen after the page's handler)
        anna.evaluate(
            "window.addEventListener('keydown', function (e) {"
            " document.body.dataset.lastKey = e.key + ':' + e.defaultPrevented; })"
        )
        started = time.monotonic()
        before = audio(anna, "currentTime")
        text.press("F1")
        after = audio(anna, "currentTime")
        played = (time.monotonic() - started) * 1.5  # what playing at 1.5x could add meanwhile
        assert after < before - 3 + played + 0.5, (before, after, played)
        assert anna.evaluate("document.body.dataset.lastKey") == "F1:true"
        text.press("F4")  # faster
        assert audio(anna, "playbackRate") == 1.75
        text.press("F3")
        assert audio(anna, "playbackRate") == 1.5
        assert anna.evaluate("document.body.dataset.lastKey") == "F3:true"
        text.press("F2")
        assert anna.evaluate("document.body.dataset.lastKey") == "F2:true"
        assert anna.get_by_label("Text", exact=True).input_value() == ""  # no key typed into it

        words = "Sehr geehrter Herr Meier, anbei unser Angebot."
        text.press_sequentially(words)
        anna.get_by_text(re.compile(r"^gespeichert \d\d:\d\d:\d\d$")).wait_for(timeout=15_000)
        assert api_job(demo, jid)["draft"] == words
        text.press("Escape")  # in the text: play/pause
        until(lambda: audio(anna, "paused") is True, "Esc pauses")
        stopped = audio(anna, "currentTime")

        # a reload: the text from the server, the position from this browser
        anna.reload()
        anna.locator("html[data-dictation='1']").wait_for(state="attached", timeout=15_000)
        assert anna.get_by_label("Text", exact=True).input_value() == words
        until(lambda: abs(audio(anna, "currentTime") - stopped) < 1.5, "position restored")
        assert audio(anna, "playbackRate") == 1.5  # the speed is kept, too
        text = anna.get_by_label("Text", exact=True)
        text.click()
        text.press("Escape")
        until(lambda: audio(anna, "paused") is False, "Esc plays")
        text.press("Escape")
        until(lambda: audio(anna, "paused") is True, "Esc pauses again")

        # deliver (with the confirmation)
        text.press("End")
        text.press_sequentially(" Mit freundlichen Grüßen")
        anna.once("dialog", lambda d: d.accept())
        anna.get_by_role("button", name="Abgeben").click()
        anna.wait_for_url(re.compile(rf"/dictation\?delivered={jid}$"))
        anna.get_by_text(f"Auftrag {jid} wurde abgegeben.").wait_for()
        job = api_job(demo, jid)
        assert job["state"] == "delivered" and job["document"] is True
        assert job["draft"] == words + " Mit freundlichen Grüßen"
        assert anna.locator(f"li[data-job='{jid}']").count() == 0
    finally:  # open pages would hold up the server's stop
        anna_ctx.close()
        ben_ctx.close()
        admin_ctx.close()


def take_in_browser(page: Any, srv: Server, jid: int, title: str) -> None:
    page.goto(srv.http_url + "/dictation")
    page.get_by_role("button", name=f"Übernehmen: #{jid} {title}").click()
    page.wait_for_url(re.compile(rf"/dictation/{jid}$"))
    page.locator("html[data-dictation='1']").wait_for(state="attached", timeout=15_000)


def test_waveform_seeks_and_the_pedal_drives_the_player(browser: Any, demo: Server) -> None:
    title = "Bericht Wellenform"
    jid = submit_dictation(demo, title)
    ctx = browser.new_context(locale="de-DE", viewport={"width": 360, "height": 740})
    try:
        page = ctx.new_page()
        login(page, demo, "anna")
        take_in_browser(page, demo, jid, title)
        wave = page.get_by_role(
            "slider", name="Wellenform und Position des Teils (klicken zum Springen)"
        )
        wave.wait_for()
        # drawn from the server's peaks: 1600 slices of the 30 s of noise, pixels on the canvas
        until(lambda: page.evaluate("document.getElementById('wave').dataset.drawn") == "1600",
              "waveform drawn")  # fmt: skip
        inked = page.evaluate(
            "(function () { var c = document.getElementById('wave');"
            " var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, n = 0;"
            " for (var i = 3; i < d.length; i += 4) if (d[i]) n++; return [n, c.width]; })()"
        )
        assert inked[1] <= 360 * 3 and inked[0] > inked[1], inked  # more than the cursor line
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        until(lambda: audio(page, "duration") == 30, "audio loaded")
        # a click at three quarters of its width: there, in the audio and for assistive tech
        box = wave.bounding_box()
        assert box is not None
        wave.click(position={"x": box["width"] * 0.75, "y": box["height"] / 2})
        until(lambda: abs(audio(page, "currentTime") - 22.5) < 1.0, "seeked by the click")
        assert abs(int(wave.get_attribute("aria-valuenow") or "0") - 22) <= 1
        wave.press("ArrowLeft")  # the keyboard, too: back by the jump (3 s)
        until(lambda: abs(audio(page, "currentTime") - 19.5) < 1.0, "arrow key seeks")

        # the pedal (a synthetic report through the hook): right = forward, held repeats
        hook = "window.heimbueroPedal"
        assert page.evaluate(f"{hook}.decide(0, [1, 0], {{'1': 'toggle'}})") == {
            "held": 1, "actions": [{"action": "toggle", "down": True}]}  # fmt: skip
        assert page.evaluate(f"{hook}.decide(5, [4], {{'1': 'rewind', '4': 'forward'}})") == {
            "held": 4, "actions": [{"action": "rewind", "down": False}]}  # fmt: skip
        before = audio(page, "currentTime")
        page.evaluate(f"{hook}.handleReport([4, 0])")
        page.evaluate(f"{hook}.handleReport([0, 0])")
        assert abs(audio(page, "currentTime") - (before + 3)) < 0.5
        page.evaluate(f"{hook}.handleReport([1, 0])")  # left: rewind
        page.evaluate(f"{hook}.handleReport([0, 0])")
        assert abs(audio(page, "currentTime") - before) < 0.5
        # the middle: plays while held, pauses when let go
        assert audio(page, "paused") is True
        page.evaluate(f"{hook}.handleReport([2, 0])")
        until(lambda: audio(page, "paused") is False, "pedal plays")
        start = audio(page, "currentTime")
        until(lambda: audio(page, "currentTime") > start + 0.5, "time goes on while held")
        page.evaluate(f"{hook}.handleReport([0, 0])")
        until(lambda: audio(page, "paused") is True, "pedal released pauses")
        # a mapping of this browser (localStorage): the middle toggles instead
        page.evaluate("localStorage.setItem('hb.dictation.pedal', JSON.stringify("
                      "{'1': 'rewind', '2': 'toggle', '4': 'forward'}))")  # fmt: skip
        page.reload()
        page.locator("html[data-dictation='1']").wait_for(state="attached", timeout=15_000)
        assert page.evaluate(f"{hook}.mapping['2']") == "toggle"
        page.evaluate(f"{hook}.handleReport([2])")
        page.evaluate(f"{hook}.handleReport([0])")
        until(lambda: audio(page, "paused") is False, "toggle plays and stays on")
        page.evaluate(f"{hook}.handleReport([2])")
        until(lambda: audio(page, "paused") is True, "toggle pauses")
    finally:
        ctx.close()
