"""The authorization sweep of the dictation API: every route, called by another client's
user with client mueller's ids, is refused (404 like a missing id, or 403 for a role that may
never do it) — and a route added without a case here fails this test."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.app.dictation import Dictation
from heimbuero.app.policy import Actor, Role
from heimbuero.config import DictationSettings, FileSettings
from heimbuero.events import EventBus
from heimbuero.office.demo import seed_demo
from heimbuero.office.files import FileService
from heimbuero.store import Store
from heimbuero.web.app import WebContext, create_app

REALM = "office.example"
SKIP = {
    ("OPTIONS", "/api/dictation/uploads"),  # capabilities, no login
    ("POST", "/api/dictation/uploads"),  # creates the caller's own upload: no id
    ("GET", "/api/dictation/stream"),  # filtered per change: tests/e2e/test_dictation.py
}


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], dict[str, Any]]]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, REALM)
    files = FileService(store, tmp_path / "files", FileSettings(), "http://127.0.0.1")
    desk = Dictation(store, files, DictationSettings(), EventBus())
    audio = tmp_path / "a.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    job = desk.create_from_audio(audio, "a.wav", "mueller", "mueller", "Angebot Meier")
    mueller = Actor("mueller", Role.CLIENT, "mueller")
    upload = desk.start_upload(mueller, 10, "b.wav")
    ids = {"job_id": job.id, "file_id": job.parts[0].file_id, "upload_id": upload.id}
    ctx = WebContext(store, lambda: {"domain": REALM}, lambda: [], files=files, dictation=desk)
    with TestClient(create_app(ctx)) as client:
        yield client, passwords, ids
    store.close()


def test_another_clients_user_is_refused_on_every_route(office: Any) -> None:
    http, pw, ids = office
    schulz = ("schulz", pw["schulz"])
    app_routes = {
        (method.upper(), path)
        for path, item in http.app.openapi()["paths"].items()
        if path.startswith("/api/dictation")
        for method in item
    }
    jid, up = ids["job_id"], ids["upload_id"]
    job = f"/api/dictation/jobs/{jid}"
    ups = f"/api/dictation/uploads/{up}"
    mue = "/api/dictation/clients/mueller"
    tus = {"Tus-Resumable": "1.0.0"}
    cases: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
        ("HEAD", "/api/dictation/uploads/{upload_id}"): (ups, {"headers": tus}),
        ("PATCH", "/api/dictation/uploads/{upload_id}"): (
            ups,
            {"content": b"x", "headers": {**tus, "Upload-Offset": "0",
                                          "Content-Type": "application/offset+octet-stream"}},
        ),
        ("POST", "/api/dictation/jobs"): (
            "/api/dictation/jobs", {"json": {"title": "t", "uploads": [up]}}),
        ("POST", "/api/dictation/jobs/from-file"): (
            "/api/dictation/jobs/from-file", {"json": {"file_id": ids["file_id"]}}),
        ("GET", "/api/dictation/jobs"): ("/api/dictation/jobs?client=mueller", {}),
        ("GET", "/api/dictation/queue"): ("/api/dictation/queue", {}),
        ("GET", "/api/dictation/jobs/{job_id}"): (f"{job}", {}),
        ("POST", "/api/dictation/jobs/{job_id}/take"): (f"{job}/take", {}),
        ("POST", "/api/dictation/jobs/{job_id}/release"): (f"{job}/release", {}),
        ("POST", "/api/dictation/jobs/{job_id}/heartbeat"): (f"{job}/heartbeat", {}),
        ("PUT", "/api/dictation/jobs/{job_id}/draft"): (
            f"{job}/draft", {"json": {"text": "x", "version": 0}}),
        ("GET", "/api/dictation/jobs/{job_id}/parts/{position}/audio"): (
            f"{job}/parts/0/audio", {}),
        ("POST", "/api/dictation/jobs/{job_id}/deliver"): (f"{job}/deliver", {}),
        ("POST", "/api/dictation/jobs/{job_id}/approve"): (f"{job}/approve", {}),
        ("POST", "/api/dictation/jobs/{job_id}/corrections"): (
            f"{job}/corrections", {"json": {"remark": "x"}}),
        ("GET", "/api/dictation/jobs/{job_id}/document"): (f"{job}/document", {}),
        ("GET", "/api/dictation/clients/{client_id}/profile"): (
            f"{mue}/profile", {}),
        ("PUT", "/api/dictation/clients/{client_id}/profile"): (
            f"{mue}/profile", {"json": {"review": True}}),
        ("PUT", "/api/dictation/clients/{client_id}/template"): (
            f"{mue}/template", {"json": {"upload": None}}),
    }  # fmt: skip
    assert app_routes - SKIP == set(cases), "a dictation route without a case here"
    for (method, _), (path, kw) in cases.items():
        r = http.request(method, path, auth=schulz, **kw)
        assert r.status_code in (403, 404), (method, path, r.status_code, r.text)
    # the same job is there for its own client's user
    mueller = ("mueller", pw["mueller"])
    assert http.get(f"{job}", auth=mueller).status_code == 200
    got = http.head(ups, auth=mueller, headers=tus)
    assert got.status_code == 200


def test_ids_beyond_the_database_are_refused_on_every_route(office: Any, tmp_path: Path) -> None:
    """Every route of the whole API with an integer id in its path answers 422 for an id the
    database cannot hold (it raised OverflowError: 500), for an admin who may see anything."""
    http, pw, _ = office
    admin = ("admin", pw["admin"])
    checked = []
    for path, item in http.app.openapi()["paths"].items():
        for method, op in item.items():
            params = [p for p in op.get("parameters", []) if p["in"] == "path"]
            ints = [p["name"] for p in params if p["schema"].get("type") == "integer"]
            if not ints:
                continue
            url = path
            for p in params:
                value = str(2**64) if p["name"] in ints else "mueller"
                url = url.replace("{" + p["name"] + "}", value)
            r = http.request(method.upper(), url, auth=admin, json={})
            assert r.status_code == 422, (method, url, r.status_code, r.text[:200])
            checked.append((method, path))
    assert len(checked) >= 10, checked  # the dictation routes at least
