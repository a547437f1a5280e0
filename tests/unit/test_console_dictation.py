"""The typists' console pages (/dictation, /dictation/{id}) through FastAPI's TestClient with a
real SQLite store and the demo office: the queue for staff only, taking a job (and the second
typist's "already taken"), the player page for the holder only, the draft with its version,
heartbeat, delivery and release; CSRF, foreign ids and oversize forms refused."""

from __future__ import annotations

import re
import wave
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.app.dictation import MAX_DRAFT, Dictation
from heimbuero.app.policy import Actor, Role
from heimbuero.config import DictationSettings, FileSettings
from heimbuero.events import EventBus
from heimbuero.office.demo import seed_demo
from heimbuero.office.files import FileService
from heimbuero.store import Store
from heimbuero.store.dictation import DictationRepository
from heimbuero.web.app import WebContext, create_app
from heimbuero.web.console.dictation import EDITOR_FORM

REALM = "office.example"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str], Dictation, dict[str, int]]]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, REALM)
    files = FileService(store, tmp_path / "files", FileSettings(), "http://127.0.0.1")
    desk = Dictation(store, files, DictationSettings(), EventBus())

    def wav(name: str) -> Path:
        path = tmp_path / name
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\0\0" * 8000)
        return path

    normal = desk.create_from_audio(wav("a.wav"), "a.wav", "mueller", "mueller", "Angebot Meier")
    urgent = desk.create_from_audio(wav("b.wav"), "b.wav", "mueller", "mueller", "Eilbrief",
                                    priority="urgent")  # fmt: skip
    other = desk.create_from_audio(wav("c.wav"), "c.wav", "schulz", "schulz", "Protokoll Schulz")
    with store.unit_of_work() as uow:  # urgent and overdue; the others without a due time
        DictationRepository(uow).update_job(
            urgent.id, due_at=datetime.now(UTC) - timedelta(hours=1)
        )
    ids = {"normal": normal.id, "urgent": urgent.id, "other": other.id}
    ctx = WebContext(store, lambda: {"domain": REALM}, lambda: [], files=files, dictation=desk)

    def app() -> Any:
        return create_app(ctx)

    yield app, passwords, desk, ids
    store.close()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _login(http: TestClient, name: str, password: str) -> str:
    page = http.get("/")
    r = http.post("/login", data={"csrf": _csrf(page.text), "name": name, "password": password},
                  follow_redirects=False)  # fmt: skip
    assert r.status_code == 303, r.text
    return _csrf(http.get("/password").text)


def test_queue_for_staff_sorted_marked_and_filtered(office: Any) -> None:
    app, pw, _, ids = office
    with TestClient(app()) as http:
        _login(http, "anna", pw["anna"])
        page = http.get("/dictation")
        assert page.status_code == 200
        order = [int(x) for x in re.findall(r'data-job="(\d+)"', page.text)]
        assert order[0] == ids["urgent"] and set(order) == set(ids.values())
        urgent = page.text.split(f'data-job="{ids["urgent"]}"')[0].rsplit("<li", 1)[1]
        assert "overdue" in urgent
        assert page.text.count(">Übernehmen</button>") == 3
        assert 'href="/dictation"' in http.get("/console").text  # in the navigation
        only = http.get("/dictation", params={"client": "schulz"})
        assert re.findall(r'data-job="(\d+)"', only.text) == [str(ids["other"])]
        none = http.get("/dictation", params={"work_type": "minutes"})
        assert none.status_code == 200 and "data-job=" not in none.text
        bad = http.get("/dictation", params={"work_type": "poem"})
        assert bad.status_code == 422 and "poem" in bad.text


def test_clients_users_get_not_found_and_no_link(office: Any) -> None:
    app, pw, _, ids = office
    with TestClient(app()) as http:
        csrf = _login(http, "mueller", pw["mueller"])
        assert 'href="/dictation"' not in http.get("/portal").text
        for path in ("/dictation", "/dictation/events", f"/dictation/{ids['normal']}",
                     f"/dictation/{ids['normal']}/audio/0"):  # fmt: skip
            assert http.get(path).status_code == 404, path
        r = http.post(f"/dictation/{ids['normal']}/take", data={"csrf": csrf},
                      follow_redirects=False)  # fmt: skip
        assert r.status_code == 404
    with TestClient(app()) as http:
        assert http.get("/dictation", follow_redirects=False).headers["location"] == "/"


def test_take_then_the_second_typist_is_told(office: Any, tmp_path: Path) -> None:
    app, pw, desk, ids = office
    jid = ids["normal"]
    with TestClient(app()) as anna, TestClient(app()) as ben:
        a_csrf = _login(anna, "anna", pw["anna"])
        b_csrf = _login(ben, "ben", pw["ben"])
        # not held yet: the player page is "not found"
        assert anna.get(f"/dictation/{jid}").status_code == 404
        assert anna.post(f"/dictation/{jid}/take", data={"csrf": "forged"}).status_code == 403
        r = anna.post(f"/dictation/{jid}/take", data={"csrf": a_csrf}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/dictation/{jid}"
        page = anna.get(f"/dictation/{jid}")
        assert page.status_code == 200 and "<audio" in page.text
        assert f'src="/dictation/{jid}/audio/0"' in page.text
        sound = anna.get(f"/dictation/{jid}/audio/0", headers={"Range": "bytes=0-99"})
        assert sound.status_code == 206 and len(sound.content) == 100
        assert anna.get(f"/dictation/{jid}/audio/7").status_code == 404
        # taking it again: the page again
        again = anna.post(f"/dictation/{jid}/take", data={"csrf": a_csrf}, follow_redirects=False)
        assert again.headers["location"] == f"/dictation/{jid}"
        late = ben.post(f"/dictation/{jid}/take", data={"csrf": b_csrf})
        assert late.status_code == 409
        assert f"Auftrag {jid} hat bereits anna übernommen." in late.text
        assert ben.get(f"/dictation/{jid}").status_code == 404
        assert ben.post(f"/dictation/{jid}/heartbeat", data={"csrf": b_csrf}).status_code == 409
        assert anna.post("/dictation/99999/take", data={"csrf": a_csrf}).status_code == 404


def test_draft_versions_heartbeat_deliver_and_release(office: Any) -> None:
    app, pw, desk, ids = office
    jid = ids["normal"]
    json_ = {"Accept": "application/json"}
    with TestClient(app()) as anna:
        csrf = _login(anna, "anna", pw["anna"])
        anna.post(f"/dictation/{jid}/take", data={"csrf": csrf})
        r = anna.post(f"/dictation/{jid}/draft", headers=json_,
                      files={"csrf": (None, csrf), "version": (None, "0"),
                             "text": (None, "Sehr geehrte Damen und Herren,")})  # fmt: skip
        assert r.status_code == 200 and r.json() == {"version": 1}
        # the same text again with the old version: nothing to save, no conflict
        same = anna.post(f"/dictation/{jid}/draft", headers=json_,
                         data={"csrf": csrf, "version": "0",
                               "text": "Sehr geehrte Damen und Herren,"})  # fmt: skip
        assert same.status_code == 200 and same.json() == {"version": 1}
        stale = anna.post(f"/dictation/{jid}/draft", headers=json_,
                          data={"csrf": csrf, "version": "0", "text": "anderer Text"})  # fmt: skip
        assert stale.status_code == 409 and "neuerer Text" in stale.json()["detail"]
        forged = anna.post(f"/dictation/{jid}/draft", headers=json_,
                           data={"csrf": "x", "version": "1", "text": "y"})  # fmt: skip
        assert forged.status_code == 403
        too_long = {"csrf": csrf, "version": "1", "text": "x" * (MAX_DRAFT + 1)}
        huge = anna.post(f"/dictation/{jid}/draft", headers=json_, data=too_long)
        assert huge.status_code == 422, huge.text
        beyond = {**too_long, "text": "x" * EDITOR_FORM}
        oversize = anna.post(f"/dictation/{jid}/draft", headers=json_, data=beyond)
        assert oversize.status_code == 413 and "zu lang" in oversize.json()["detail"]
        missing = anna.post(f"/dictation/{jid}/draft", headers=json_,
                            data={"csrf": csrf, "text": "y"})  # fmt: skip
        assert missing.status_code == 400
        foreign = anna.post(f"/dictation/{ids['other']}/draft", headers=json_,
                            data={"csrf": csrf, "version": "0", "text": "y"})  # fmt: skip
        assert foreign.status_code == 409 and "nicht (mehr)" in foreign.json()["detail"]
        missing_job = anna.post("/dictation/99999/draft", headers=json_,
                                data={"csrf": csrf, "version": "0", "text": "y"})  # fmt: skip
        assert missing_job.status_code == 404
        beat = anna.post(f"/dictation/{jid}/heartbeat", data={"csrf": csrf})
        assert beat.status_code == 200 and beat.json()["locked_until"]
        assert anna.post(f"/dictation/{jid}/heartbeat", data={"csrf": "x"}).status_code == 403
        assert "Sehr geehrte Damen und Herren," in anna.get(f"/dictation/{jid}").text
        # deliver: the form's text is saved first, then delivered
        done = anna.post(f"/dictation/{jid}/deliver", follow_redirects=False,
                         data={"csrf": csrf, "version": "1",
                               "text": "Sehr geehrte Damen und Herren,\n\nanbei."})  # fmt: skip
        assert done.status_code == 303 and done.headers["location"] == f"/dictation?delivered={jid}"
        delivered = desk.get(Actor("anna", Role.AGENT, None), jid)
        assert delivered.state == "delivered" and delivered.draft.endswith("anbei.")
        assert anna.get(f"/dictation/{jid}").status_code == 404
        gone = anna.post(f"/dictation/{jid}/draft", headers=json_,
                         data={"csrf": csrf, "version": "2", "text": "noch mehr"})  # fmt: skip
        assert gone.status_code == 409 and "nicht (mehr)" in gone.json()["detail"]
        for path in ("/dictation/9223372036854775808", "/dictation/0",
                     "/dictation/99999999999999999999/audio/0"):  # fmt: skip
            assert anna.get(path).status_code == 404, path
        big = anna.post("/dictation/99999999999999999999/take", data={"csrf": csrf})
        assert big.status_code == 404
        assert "wurde abgegeben" in anna.get(f"/dictation?delivered={jid}").text
        # release: the text stays, the job is back in the queue
        other = ids["other"]
        anna.post(f"/dictation/{other}/take", data={"csrf": csrf})
        empty = anna.post(f"/dictation/{other}/deliver", follow_redirects=False,
                          data={"csrf": csrf, "version": "0", "text": "  "})  # fmt: skip
        assert empty.headers["location"] == f"/dictation/{other}?error=empty"
        started = {"csrf": csrf, "version": "1", "text": "Protokoll: Anfang"}
        back = anna.post(f"/dictation/{other}/release", follow_redirects=False, data=started)
        assert back.headers["location"] == f"/dictation?released={other}"
        job = desk.get(Actor("anna", Role.AGENT, None), other)
        assert job.state == "new" and job.typist is None and job.draft == "Protokoll: Anfang"


def test_waveform_peaks_for_those_who_may_fetch_the_audio(office: Any) -> None:
    """/dictation/{id}/peaks/{n}: the holder gets the part's min/max pairs as JSON (computed
    once, then from the cache), staff like for the audio; a client's user, a missing part or
    job and ids beyond the database's integers get 404; the page links the route."""
    app, pw, desk, ids = office
    jid = ids["normal"]
    with TestClient(app()) as anna, TestClient(app()) as ben, TestClient(app()) as mueller:
        csrf = _login(anna, "anna", pw["anna"])
        _login(ben, "ben", pw["ben"])
        _login(mueller, "mueller", pw["mueller"])
        anna.post(f"/dictation/{jid}/take", data={"csrf": csrf})
        assert f'data-peaks="/dictation/{jid}/peaks/0"' in anna.get(f"/dictation/{jid}").text
        assert 'role="slider"' in anna.get(f"/dictation/{jid}").text
        r = anna.get(f"/dictation/{jid}/peaks/0")
        assert r.status_code == 200 and r.headers["cache-control"] == "private, no-store"
        body = r.json()
        assert body["seconds"] == 1.0 and len(body["peaks"]) == 2 * 1600
        assert set(body["peaks"]) == {0}  # the fixture's second of silence
        part = desk.get(Actor("anna", Role.AGENT, None), jid).parts[0]
        cached = desk._peaks[part.file_id]
        assert anna.get(f"/dictation/{jid}/peaks/0").json()["peaks"] == cached
        # the other typist: what the audio route allows (staff), no more
        assert ben.get(f"/dictation/{jid}/audio/0").status_code == 200
        assert ben.get(f"/dictation/{jid}/peaks/0").status_code == 200
        # a client's user, even the author, never: the same 404 as a missing job
        for path in (f"/dictation/{jid}/peaks/0", f"/dictation/{ids['other']}/peaks/0"):
            assert mueller.get(path).status_code == 404, path
        for path in (f"/dictation/{jid}/peaks/1", "/dictation/99999/peaks/0",
                     "/dictation/99999999999999999999/peaks/0"):  # fmt: skip
            assert anna.get(path).status_code == 404, path
        assert anna.get(f"/dictation/{jid}/peaks/x").status_code == 422
    with TestClient(app()) as anonymous:
        r = anonymous.get(f"/dictation/{jid}/peaks/0", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
