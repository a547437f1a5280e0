"""Dictation through the real `heimbuero serve` (demo office): a 150 MB dictation uploaded
with tus, broken off at half and resumed; the typists' race for a job; drafts that a stale
tab cannot overwrite; seeking in the audio; delivery as DOCX through the messenger and by
e-mail with its Normzeilen; corrections; jobs from messenger files; and every route refusing
another client's user."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import socket
import threading
import wave
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pypdf
import pytest

from tests.smtpd import MailSink

from .harness import LOCALHOST, Server, set_toml_option, wait_until
from .test_files import wait_http

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
DIKTAT_PW = "Schreib-Maschine-77"


@contextlib.contextmanager
def office(tmp_path: Path, mail: MailSink) -> Iterator[Server]:
    srv = Server(tmp_path, http=True, demo=True)
    srv.prepare()
    srv.add_user("diktat", DIKTAT_PW, "agent")
    set_toml_option(srv.config_path, "dictation", "address", "diktat")
    for key, value in (("host", "127.0.0.1"), ("port", mail.port)):
        set_toml_option(srv.config_path, "mail", key, value)
    set_toml_option(srv.config_path, "mail", "sender", "buero@heimbuero.test")
    with srv:
        wait_http(srv.http_url)
        yield srv


def client(srv: Server, user: str) -> httpx.Client:
    return httpx.Client(
        base_url=srv.http_url, auth=(user, srv.users[user]), timeout=60, headers=TUS
    )


def make_wav(path: Path, seconds: float, rate: int = 8000, noise: bool = False) -> None:
    """A 16-bit mono WAV (random samples when `noise`, so no two runs compress alike)."""
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        step = rate * 60
        for start in range(0, frames, step):
            n = min(step, frames - start)
            w.writeframes(
                (hashlib.sha256(str(start).encode()).digest() * (n * 2 // 32 + 1))[: n * 2]
                if noise
                else b"\0\0" * n
            )


def tus_create(c: httpx.Client, name: str, length: int) -> httpx.Response:
    meta = "filename " + base64.b64encode(name.encode()).decode()
    return c.post(
        "/api/dictation/uploads",
        headers={"Upload-Length": str(length), "Upload-Metadata": meta},
    )


def tus_patch(c: httpx.Client, location: str, offset: int, data: Any) -> httpx.Response:
    return c.patch(
        location,
        content=data,
        headers={"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
    )


def upload(c: httpx.Client, path: Path) -> str:
    created = tus_create(c, path.name, path.stat().st_size)
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    r = tus_patch(c, location, 0, path.read_bytes())
    assert r.status_code == 204, r.text
    return location.rsplit("/", 1)[1]


def broken_patch(srv: Server, user: str, location: str, path: Path, stop_at: int) -> None:
    """A PATCH announcing the whole file whose connection drops after `stop_at` bytes."""
    size = path.stat().st_size
    auth = base64.b64encode(f"{user}:{srv.users[user]}".encode()).decode()
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: {LOCALHOST}\r\nAuthorization: Basic {auth}\r\n"
        "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    with (
        socket.create_connection((LOCALHOST, srv.http_port), timeout=30) as s,
        path.open("rb") as f,
    ):
        s.sendall(head)
        sent = 0
        while sent < stop_at:
            chunk = f.read(min(MB, stop_at - sent))
            s.sendall(chunk)
            sent += len(chunk)


def docx_text(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return z.read("word/document.xml").decode()


def test_dictation_by_upload_to_delivered_document(tmp_path: Path) -> None:
    wav = tmp_path / "Angebot Meier.wav"
    make_wav(wav, seconds=150 * MB / 16000, noise=True)  # 150 MB of 8 kHz 16-bit audio
    size = wav.stat().st_size
    assert size > 150 * MB - MB
    digest = hashlib.sha256(wav.read_bytes()).hexdigest()
    with MailSink() as mail, office(tmp_path / "srv", mail) as srv:
        mueller, schulz = client(srv, "mueller"), client(srv, "schulz")
        anna, ben = client(srv, "anna"), client(srv, "ben")

        # -- tus: the capabilities, limits, and an upload broken off at half --
        opts = httpx.options(f"{srv.http_url}/api/dictation/uploads")
        assert opts.status_code == 204
        assert (
            opts.headers["tus-version"] == "1.0.0" and "creation" in opts.headers["tus-extension"]
        )
        assert tus_create(mueller, "riesig.wav", 501 * MB).status_code == 413  # [files] 500 MB
        assert tus_create(mueller, "diktat.dss", 1000).status_code == 422  # no DSS decoder
        no_tus = mueller.post("/api/dictation/uploads", headers={"Tus-Resumable": "0.2.2"})
        assert no_tus.status_code == 412
        created = tus_create(mueller, wav.name, size)
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        broken_patch(srv, "mueller", location, wav, size // 2)

        def offset(c: httpx.Client = mueller) -> int:
            r = c.head(location)
            assert r.status_code == 200, r.status_code
            return int(r.headers["upload-offset"])

        # the server keeps what arrived before the drop (it is still writing it)
        wait_until(lambda: offset() >= size // 2 - 4 * MB, 20, what="the first half on disk")
        assert schulz.head(location).status_code == 404  # another client's upload
        assert tus_patch(schulz, location, 0, b"x").status_code == 404
        assert tus_patch(mueller, location, 1, b"x").status_code == 409  # wrong offset
        for _ in range(5):
            at = offset()
            with wav.open("rb") as f:
                f.seek(at)
                r = tus_patch(mueller, location, at, f.read())
            if r.status_code == 204:
                break
            assert r.status_code == 409, r.text  # the broken PATCH was still writing
        assert r.status_code == 204 and int(r.headers["upload-offset"]) == size
        assert tus_patch(mueller, location, size, b"more").status_code == 413
        upload_id = location.rsplit("/", 1)[1]

        # -- the job --
        job_in = {"title": "Angebot Meier", "work_type": "quote", "priority": "urgent",
                  "due": "2026-01-01T08:00:00+00:00", "uploads": [upload_id]}  # fmt: skip
        assert schulz.post("/api/dictation/jobs", json=job_in).status_code == 404  # not theirs
        r = mueller.post("/api/dictation/jobs", json=job_in)
        assert r.status_code == 201, r.text
        job = r.json()
        jid = job["id"]
        assert job["state"] == "new" and job["client"] == "mueller" and job["author"] == "mueller"
        assert job["audio_seconds"] == pytest.approx((size - 44) / 16000, abs=0.01)
        part = job["parts"][0]["audio"]

        # the bytes are the uploaded file's; seeking works with ranges (206)
        h = hashlib.sha256()
        with anna.stream("GET", part) as got:
            assert got.status_code == 200
            for chunk in got.iter_bytes():
                h.update(chunk)
        assert h.hexdigest() == digest
        ranged = anna.get(part, headers={"Range": "bytes=1000-1999"})
        assert ranged.status_code == 206 and len(ranged.content) == 1000
        with wav.open("rb") as f:
            f.seek(1000)
            assert ranged.content == f.read(1000)

        # another client's user: every route answers like a missing job
        for method, path, body in (
            ("GET", f"/api/dictation/jobs/{jid}", None),
            ("GET", part, None),
            ("GET", f"/api/dictation/jobs/{jid}/document", None),
            ("POST", f"/api/dictation/jobs/{jid}/corrections", {"remark": "x"}),
        ):
            got = schulz.request(method, path, json=body)
            assert got.status_code == 404, (path, got.status_code)
        assert [j["id"] for j in schulz.get("/api/dictation/jobs").json()] == []
        assert schulz.get("/api/dictation/queue").status_code == 403  # typists only
        assert mueller.post(f"/api/dictation/jobs/{jid}/take").status_code == 403

        # -- the queue and the race for the job --
        queue = anna.get("/api/dictation/queue").json()
        assert [q["id"] for q in queue] == [jid] and queue[0]["overdue"] is True
        assert anna.get("/api/dictation/queue", params={"work_type": "letter"}).json() == []
        results: list[int] = []
        barrier = threading.Barrier(2)

        def take(c: httpx.Client) -> None:
            barrier.wait()
            results.append(c.post(f"/api/dictation/jobs/{jid}/take").status_code)

        threads = [threading.Thread(target=take, args=(c,)) for c in (anna, ben)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == [200, 409]
        holder = anna.get(f"/api/dictation/jobs/{jid}").json()["typist"]
        typist, other = (anna, ben) if holder == "anna" else (ben, anna)

        # -- drafts: versioned, a stale tab gets 409 --
        text = (
            "Sehr geehrter Herr Meier,\n\nwir bieten Ihnen folgende Arbeiten an: "
            "Einbauschrank aus Eiche, geölt, mit zwei Schiebetüren.\n\nMit freundlichen Grüßen"
        )
        r = typist.put(f"/api/dictation/jobs/{jid}/draft", json={"text": "Entwurf", "version": 0})
        assert r.status_code == 200 and r.json()["version"] == 1
        r = typist.put(f"/api/dictation/jobs/{jid}/draft", json={"text": text, "version": 1})
        assert r.json()["version"] == 2
        stale = typist.put(f"/api/dictation/jobs/{jid}/draft", json={"text": "alt", "version": 1})
        assert stale.status_code == 409
        assert other.put(f"/api/dictation/jobs/{jid}/draft", json={"text": "x", "version": 2}
                         ).status_code == 409  # fmt: skip
        assert typist.post(f"/api/dictation/jobs/{jid}/heartbeat").status_code == 200

        # -- delivery: DOCX, Normzeilen, messenger, e-mail --
        admin = client(srv, "admin")
        r = admin.put("/api/dictation/clients/mueller/profile", json={"email": "m@example.de"})
        assert r.status_code == 200, r.text
        assert schulz.get("/api/dictation/clients/mueller/profile").status_code == 404
        r = typist.post(f"/api/dictation/jobs/{jid}/deliver")
        assert r.status_code == 200, r.text
        done = r.json()
        paragraphs = [p for p in text.split("\n\n")]
        chars = sum(len(p) for p in paragraphs)
        assert done["state"] == "delivered"
        assert done["characters"] == chars and done["normzeilen"] == -(-chars // 55)
        assert "draft" not in mueller.get(f"/api/dictation/jobs/{jid}").json()  # typists' text
        assert "Eiche" in anna.get(f"/api/dictation/jobs/{jid}").json()["draft"]
        doc = mueller.get(f"/api/dictation/jobs/{jid}/document")
        assert doc.status_code == 200 and "Einbauschrank aus Eiche" in docx_text(doc.content)
        email = mail.wait_for(lambda m: "Angebot Meier" in str(m["Subject"]))
        assert str(email["To"]) == "m@example.de"
        attached = [a for a in email.iter_attachments() if a.get_filename().endswith(".docx")]
        assert attached and "Einbauschrank" in docx_text(attached[0].get_content())

        def news() -> list[dict[str, Any]]:
            got = mueller.get("/api/conversations/diktat/messages")
            return got.json() if got.status_code == 200 else []

        wait_until(lambda: any(m["kind"] == "file" for m in news()), 10, what="the DOCX message")
        texts = [m["text"] for m in news()]
        assert "Ihr Diktat 'Angebot Meier' ist in Arbeit" in texts
        assert "Ihr Diktat 'Angebot Meier' ist fertig" in texts

        # -- corrections reopen the job with the remark --
        r = mueller.post(f"/api/dictation/jobs/{jid}/corrections", json={"remark": "Eiche → Buche"})
        assert r.status_code == 200 and r.json()["state"] == "corrections_requested"
        assert r.json()["remark"] == "Eiche → Buche"
        assert typist.post(f"/api/dictation/jobs/{jid}/take").status_code == 200
        history = [h["action"] for h in anna.get(f"/api/dictation/jobs/{jid}").json()["history"]]
        assert history == ["created", "take", "submit", "correct", "take"]


def test_dictation_from_messenger_files(tmp_path: Path) -> None:
    wav = tmp_path / "Baustelle.wav"
    make_wav(wav, seconds=3)
    with MailSink() as mail, office(tmp_path / "srv", mail) as srv:
        mueller, schulz, anna = client(srv, "mueller"), client(srv, "schulz"), client(srv, "anna")

        def send_file(to: str) -> str:
            up = mueller.post(
                "/api/files", files={"file": (wav.name, wav.read_bytes(), "audio/wav")}
            )
            assert up.status_code == 201, up.text
            sent = mueller.post("/api/messages", json={"to": to, "file": up.json()["id"]})
            assert sent.status_code == 201, sent.text
            return str(up.json()["id"])

        # one call by staff turns a file sent in a conversation into a job
        file_id = send_file("anna")
        assert schulz.post("/api/dictation/jobs/from-file", json={"file_id": file_id}
                           ).status_code == 404  # fmt: skip
        r = anna.post("/api/dictation/jobs/from-file", json={"file_id": file_id, "title": "Bau"})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["author"] == "mueller" and job["source"] == "messenger"
        assert job["audio_seconds"] == pytest.approx(3.0)

        # live changes: each user's stream carries the jobs they may see, and only those
        streams: dict[str, list[dict[str, Any]]] = {"mueller": [], "schulz": []}
        readers = {name: client(srv, name) for name in streams}
        opened = threading.Semaphore(0)

        def follow(name: str) -> None:
            with (
                contextlib.suppress(httpx.HTTPError),
                # a quiet stream ends the reader (and its connection) after 5 s
                readers[name].stream(
                    "GET", "/api/dictation/stream", timeout=httpx.Timeout(30, read=5)
                ) as live,
            ):
                opened.release()  # the answer's head came: the watch is in place
                for line in live.iter_lines():
                    if line.startswith("data: "):
                        streams[name].append(json.loads(line[6:]))

        for name in streams:
            threading.Thread(target=follow, args=(name,), daemon=True).start()
        try:
            assert opened.acquire(timeout=10) and opened.acquire(timeout=10)
            assert anna.post(f"/api/dictation/jobs/{job['id']}/take").status_code == 200
            assert anna.post(f"/api/dictation/jobs/{job['id']}/release").status_code == 200
            wait_until(lambda: len(streams["mueller"]) == 2, 10, what="mueller's live changes")
            assert streams["mueller"][0] == {
                "id": job["id"], "client": "mueller", "state": "in_progress",
                "author": "mueller", "typist": "anna",
            }  # fmt: skip
            assert streams["mueller"][1]["state"] == "new"
            schulz_job = schulz.post(
                "/api/dictation/jobs", json={"title": "Rohrbruch", "uploads": [upload(schulz, wav)]}
            ).json()
            wait_until(lambda: bool(streams["schulz"]), 10, what="schulz's own job live")
            assert [e["id"] for e in streams["schulz"]] == [schulz_job["id"]]
        finally:
            for c in readers.values():
                c.close()

        # sending to the dictation address makes a job by itself
        send_file("diktat")

        def jobs() -> list[dict[str, Any]]:
            return list(mueller.get("/api/dictation/jobs").json())

        wait_until(lambda: len(jobs()) == 2, 10, what="the job from the dictation address")
        assert {j["source"] for j in jobs()} == {"messenger"}
        assert [j["title"] for j in schulz.get("/api/dictation/jobs").json()] == ["Rohrbruch"]

        # the command line: list, show, take, deliver (as a typist)
        data = str(srv.data_dir)
        listed = srv.cli("dictation", "list", "--queue", "--data", data).stdout
        assert "Bau" in listed and "mueller" in listed
        jid = str(job["id"])
        assert '"title": "Bau"' in srv.cli("dictation", "show", jid, "--data", data).stdout
        srv.cli("dictation", "take", jid, "--as", "ben", "--data", data)
        text = tmp_path / "brief.txt"
        text.write_text("x" * 56 + "\n\n" + "y" * 54)
        out = srv.cli(
            "dictation", "deliver", jid, "--as", "ben", "--text", str(text), "--data", data
        )
        assert "delivered: 2 Normzeilen (110 characters)" in out.stdout
        again = srv.cli("dictation", "take", jid, "--as", "anna", "--data", data, check=False)
        assert again.returncode == 1
        assert again.stderr.strip() == "heimbuero: error: a job that is delivered cannot be taken"


def _memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def letterhead() -> bytes:
    import docx

    d = docx.Document()
    d.add_paragraph("Briefkopf {{ client }}")
    d.add_paragraph("Betreff: {{ title }}")
    d.add_paragraph("{%p for p in paragraphs %}")
    d.add_paragraph("{{ p }}")
    d.add_paragraph("{%p endfor %}")
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def test_review_letterhead_and_finished_document(tmp_path: Path) -> None:
    wav = tmp_path / "Protokoll.wav"
    make_wav(wav, seconds=2)
    head = tmp_path / "kopf.docx"
    head.write_bytes(letterhead())
    with MailSink() as mail, office(tmp_path / "srv", mail) as srv:
        mueller, schulz = client(srv, "mueller"), client(srv, "schulz")
        anna, admin = client(srv, "anna"), client(srv, "admin")

        # the letterhead and review of client mueller (admins only)
        tpl = upload(admin, head)
        assert (
            anna.put("/api/dictation/clients/mueller/template", json={"upload": tpl}).status_code
            == 404
        )  # fmt: skip  (not anna's upload)
        r = admin.put("/api/dictation/clients/mueller/template", json={"upload": tpl})
        assert r.status_code == 200 and r.json()["template"] is True, r.text
        bad = upload(admin, wav)
        assert admin.put("/api/dictation/clients/mueller/template", json={"upload": bad}
                         ).status_code == 422  # fmt: skip
        assert anna.put("/api/dictation/clients/mueller/profile", json={"review": True}
                        ).status_code == 403  # fmt: skip
        assert admin.put("/api/dictation/clients/mueller/profile", json={"review": True}
                         ).status_code == 200  # fmt: skip

        # a job of mueller's goes through review; the letterhead is filled
        job = mueller.post(
            "/api/dictation/jobs", json={"title": "Protokoll & Termine", "work_type": "minutes",
                                         "uploads": [upload(mueller, wav)]},
        ).json()  # fmt: skip
        jid = job["id"]
        assert anna.post(f"/api/dictation/jobs/{jid}/take").status_code == 200
        typed = "Anwesend: Müller & Söhne <GmbH>\nOrt: Werkstatt\n\nBeginn 8 Uhr"
        anna.put(f"/api/dictation/jobs/{jid}/draft", json={"text": typed, "version": 0})
        r = anna.post(f"/api/dictation/jobs/{jid}/deliver")
        assert r.status_code == 200 and r.json()["state"] == "review", r.text
        assert mueller.get(f"/api/dictation/jobs/{jid}/document").status_code == 404  # not yet
        r = anna.post(f"/api/dictation/jobs/{jid}/approve")
        assert r.status_code == 200 and r.json()["state"] == "delivered", r.text
        assert r.json()["characters"] == len(typed) - 2  # the blank line between paragraphs
        doc = docx_text(mueller.get(f"/api/dictation/jobs/{jid}/document").content)
        assert "Briefkopf Tischlerei Müller" in doc and "Müller &amp; Söhne &lt;GmbH&gt;" in doc
        # the same text as PDF, for the author who has no word processor
        pdf = mueller.get(f"/api/dictation/jobs/{jid}/document?format=pdf")
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert "Protokoll%20%26%20Termine.pdf" in pdf.headers["content-disposition"]
        read = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf.content)).pages)
        for said in ("Protokoll & Termine", "Müller & Söhne <GmbH>", "Ort: Werkstatt",
                     "Beginn 8 Uhr", "Briefkopf Tischlerei Müller"):  # fmt: skip
            assert said in read, read
        assert schulz.get(f"/api/dictation/jobs/{jid}/document?format=pdf").status_code == 404
        assert mueller.get(f"/api/dictation/jobs/{jid}/document?format=odt").status_code == 422

        # the DOCX the messenger brought: the author may download it, another client not
        def file_messages() -> list[dict[str, Any]]:
            got = mueller.get("/api/conversations/diktat/messages")
            return [m for m in got.json() if m["kind"] == "file"] if got.status_code == 200 else []

        wait_until(lambda: bool(file_messages()), 10, what="the document in the messenger")
        link = file_messages()[0]["files"][0]["url"]
        file_id = link.rsplit("/", 1)[1]
        got = mueller.get(f"/api/files/{file_id}/content")
        assert got.status_code == 200 and "Briefkopf" in docx_text(got.content)
        assert schulz.get(f"/api/files/{file_id}/content").status_code == 404

        # a finished document uploaded instead of the draft (after corrections)
        mueller.post(f"/api/dictation/jobs/{jid}/corrections", json={"remark": "Ort fehlt"})
        assert anna.post(f"/api/dictation/jobs/{jid}/take").status_code == 200
        finished = tmp_path / "fertig.docx"
        import docx

        d = docx.Document()
        d.add_paragraph("z" * 120)
        d.save(str(finished))
        assert schulz.head(f"/api/dictation/uploads/{upload(anna, finished)}").status_code == 404
        r = anna.post(f"/api/dictation/jobs/{jid}/deliver", json={"upload": upload(anna, finished)})
        assert r.status_code == 200 and r.json()["state"] == "review", r.text
        assert r.json()["normzeilen"] == 3 and r.json()["characters"] == 120

        # uploads stream to disk: 10 parallel 20 MB PATCHes grow the server by far less
        big = tmp_path / "gross.wav"
        make_wav(big, seconds=20 * MB / 16000, noise=True)
        data = big.read_bytes()
        Path(f"/proc/{srv.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _memory_kb(srv.pid)
        locations = [
            tus_create(mueller, big.name, len(data)).headers["location"] for _ in range(10)
        ]
        codes: list[int] = []

        def send(location: str) -> None:
            with client(srv, "mueller") as c:
                codes.append(tus_patch(c, location, 0, data).status_code)

        threads = [threading.Thread(target=send, args=(loc,)) for loc in locations]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert codes == [204] * 10
        growth_mb = (_memory_kb(srv.pid)["VmHWM"] - before["VmRSS"]) / 1024
        assert growth_mb < 100, f"server memory grew by {growth_mb:.1f} MB for 200 MB uploaded"
