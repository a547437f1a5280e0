"""The file-transfer service: the streaming multipart writer, limits and quota, the RCS
file-info XML, access rules, expiry; and the /ft and /api/files routes (TestClient) against
a real SQLite store and a real files directory."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import wave
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.config import FileSettings
from heimbuero.office import accounts
from heimbuero.office.files import (
    MB,
    BadUpload,
    DigestMismatch,
    FileService,
    FileTooLarge,
    QuotaExceeded,
    UnsupportedUpload,
    clean_content_type,
    clean_file_name,
    expected_sha256,
    file_info_document,
    may_delete,
    may_read,
    new_file_id,
)
from heimbuero.sip.auth import DigestAuthenticator, client_authorization
from heimbuero.store import Store
from heimbuero.store.files import FileRecord
from heimbuero.web.app import WebContext, create_app

REALM = "office.example"
NS = "{urn:gsma:params:xml:ns:rcs:rcs:fthttp}"
BOUNDARY = "----heimbuero-test-boundary"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PASSWORDS = {"anna": "Lavendel-Feld-71", "kai": "Kupfer-Kanne-38", "mia": "Birken-Weg-55"}
ROLES = {"anna": "agent", "kai": "employee", "mia": "client"}


def form(
    content: bytes,
    name: str = "dictation.wav",
    field: str = "file",
    ctype: str = "audio/wav",
    part_headers: str = "",
) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        f"Content-Type: {ctype}\r\n{part_headers}\r\n"
    ).encode()
    return head + content + f"\r\n--{BOUNDARY}--\r\n".encode()


CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack("<h", 0) * int(rate * seconds))
    return buf.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    s.upgrade()
    yield s
    s.close()


def make_service(store: Store, tmp_path: Path, **settings: int) -> FileService:
    return FileService(store, tmp_path / "files", FileSettings(**settings), "https://o.example")


def upload(
    svc: FileService,
    body: bytes,
    owner: str = "kai",
    chunk: int = 7,
    now: datetime = T0,
    expected: list[bytes] | None = None,
    length: int | None = None,
) -> FileRecord:
    up = svc.start_upload(owner, CTYPE, length, now, "file", bool(expected))
    try:
        for i in range(0, len(body), chunk):
            up.feed(body[i : i + chunk])
        up.finish()
        return svc.complete_upload(up, owner, expected or [], now)
    finally:
        up.abort()


def stored_names(svc: FileService) -> set[str]:
    return {p.name for p in svc.files_dir.iterdir() if p.is_file()}


# -- the streaming writer --------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 3, 64, 100_000])
def test_streamed_upload_stores_bytes_hash_and_duration(
    store: Store, tmp_path: Path, chunk: int
) -> None:
    svc = make_service(store, tmp_path)
    audio = wav_bytes(2.5)
    rec = upload(svc, form(audio), chunk=chunk)
    assert rec.size == len(audio)
    assert rec.sha256 == hashlib.sha256(audio).hexdigest()
    assert rec.duration_s == pytest.approx(2.5, abs=0.01)
    assert (rec.name, rec.content_type, rec.owner) == ("dictation.wav", "audio/wav", "kai")
    assert rec.expires_at == T0 + timedelta(days=30)
    assert (svc.files_dir / rec.id).read_bytes() == audio
    assert list(svc.tmp_dir.iterdir()) == []
    assert store.get_file(rec.id) == rec


def test_non_audio_has_no_duration_and_odd_names_are_cleaned(store: Store, tmp_path: Path) -> None:
    svc = make_service(store, tmp_path)
    rec = upload(
        svc,
        form(b"%PDF-1.4 x", name="C:\\Briefe\\Brief\x07 an M\xfcller.pdf", ctype="application/pdf"),
    )
    assert rec.duration_s is None
    assert rec.name == "Brief an Müller.pdf"
    assert clean_file_name("Übersicht.odt".encode()) == "Übersicht.odt"
    assert clean_file_name(b"../../etc/passwd") == "passwd"
    assert clean_file_name(b"\x00\x01") == "file"
    assert clean_content_type("text/html; charset=utf-8") == "text/html; charset=utf-8"
    assert clean_content_type("text/html\r\nX-Evil: 1") == "application/octet-stream"
    assert clean_content_type(None) == "application/octet-stream"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (form(b"x", field="other"), "no file"),
        (form(b"abc")[:-10], "ended before"),
        (
            form(b"a").removesuffix(b"--\r\n") + b"\r\n" + form(b"b")[len(BOUNDARY) + 4 :],
            "exactly one",
        ),
        (b"garbage without any boundary", "malformed"),
    ],
)
def test_bad_forms_are_refused_and_leave_nothing(
    store: Store, tmp_path: Path, body: bytes, message: str
) -> None:
    svc = make_service(store, tmp_path)
    with pytest.raises(BadUpload, match=message):
        upload(svc, body)
    assert stored_names(svc) == set()
    assert list(svc.tmp_dir.iterdir()) == []
    assert store.list_files() == []


def test_not_multipart_is_415(store: Store, tmp_path: Path) -> None:
    svc = make_service(store, tmp_path)
    with pytest.raises(UnsupportedUpload):
        svc.start_upload("kai", "application/octet-stream", 3, T0)
    with pytest.raises(BadUpload, match="boundary"):
        svc.start_upload("kai", "multipart/form-data", 3, T0)


# -- limits ----------------------------------------------------------------------------------


def test_size_limit_early_from_content_length_and_while_streaming(
    store: Store, tmp_path: Path
) -> None:
    svc = make_service(store, tmp_path, max_size_mb=1)
    with pytest.raises(FileTooLarge, match=r"limit is 1\.0 MB"):
        svc.start_upload("kai", CTYPE, 2 * MB, T0)
    assert list(svc.tmp_dir.iterdir()) == []
    # no Content-Length (chunked): refused as soon as the file passes the limit
    with pytest.raises(FileTooLarge):
        upload(svc, form(b"\0" * (MB + 1)), chunk=64 * 1024)
    assert list(svc.tmp_dir.iterdir()) == [] and stored_names(svc) == set()
    rec = upload(svc, form(b"\0" * MB), chunk=64 * 1024)  # exactly the limit is fine
    assert rec.size == MB


def test_quota_counts_unexpired_files_of_the_owner(store: Store, tmp_path: Path) -> None:
    svc = make_service(store, tmp_path, max_size_mb=2, quota_mb=3, link_days=1)
    upload(svc, form(b"a" * (2 * MB)), chunk=MB)
    with pytest.raises(QuotaExceeded, match=r"you store 2\.0 MB of your 3\.0 MB"):
        upload(svc, form(b"b" * (MB + 1)), chunk=MB)
    with pytest.raises(QuotaExceeded):  # early, from the declared length
        svc.start_upload("kai", CTYPE, 2 * MB, T0)
    upload(svc, form(b"c" * MB), chunk=MB)  # fits exactly
    with pytest.raises(QuotaExceeded):  # full: refused before any byte
        svc.start_upload("kai", CTYPE, None, T0)
    upload(svc, form(b"d" * MB), owner="mia", chunk=MB)  # other users have their own
    # a day later the links expired: the quota is free again, even before the sweep
    later = T0 + timedelta(days=1, seconds=1)
    assert svc.used_bytes("kai", later) == 0
    upload(svc, form(b"e" * (2 * MB)), chunk=MB, now=later)
    assert list(svc.tmp_dir.iterdir()) == []
    assert len(stored_names(svc)) == len(store.list_files()) == 4


def test_zero_quota_means_no_quota(store: Store, tmp_path: Path) -> None:
    svc = make_service(store, tmp_path, max_size_mb=1, quota_mb=0)
    assert svc.quota_bytes is None
    for _ in range(3):
        upload(svc, form(b"x" * MB), chunk=MB)


# -- digests ---------------------------------------------------------------------------------


def test_announced_digests_are_checked(store: Store, tmp_path: Path) -> None:
    svc = make_service(store, tmp_path)
    data = b"Diktat vom Montag"
    good = hashlib.sha256(data).digest()
    rec = upload(svc, form(data), expected=[good])
    assert rec.sha256 == good.hex()
    # a digest of the whole request body (RFC 9530's meaning) is accepted too
    body = form(data)
    upload(svc, body, expected=[hashlib.sha256(body).digest()])
    with pytest.raises(DigestMismatch, match="does not match"):
        upload(svc, form(data), expected=[hashlib.sha256(b"other").digest()])
    header = f"Repr-Digest: sha-256=:{base64.b64encode(hashlib.sha256(b'x').digest()).decode()}:"
    with pytest.raises(DigestMismatch, match="file part"):
        upload(svc, form(data, part_headers=header + "\r\n"))
    assert len(store.list_files()) == 2
    assert len(stored_names(svc)) == 2 and list(svc.tmp_dir.iterdir()) == []


def test_digest_header_parsing() -> None:
    d = hashlib.sha256(b"x").digest()
    b64 = base64.b64encode(d).decode()
    assert expected_sha256(f"sha-512=:AAAA:, sha-256=:{b64}:", None) == [d]
    assert expected_sha256(None, f"MD5=abc, SHA-256={b64}") == [d]
    assert expected_sha256("sha-512=:AAAA:", "md5=xyz") == []
    with pytest.raises(BadUpload):
        expected_sha256(f"sha-256={b64}", None)  # RFC 9530 wants the colons
    with pytest.raises(BadUpload):
        expected_sha256("sha-256=:bm90IDMyIG9jdGV0cw==:", None)


# -- XML and access --------------------------------------------------------------------------


def record(**kw: Any) -> FileRecord:
    fields: dict[str, Any] = dict(
        id=new_file_id(),
        owner="kai",
        name="a.wav",
        content_type="audio/wav",
        size=3,
        sha256="0" * 64,
        duration_s=None,
        created_at=T0,
        expires_at=T0 + timedelta(days=1),
    )
    fields.update(kw)
    return FileRecord(**fields)


def test_file_info_xml_escapes_and_parses() -> None:
    r = record(name='Akte <"Müller"> & Co.pdf', content_type="application/pdf", size=1234)
    doc = file_info_document(r, 'https://o.example/ft/x?a=1&b="2"')
    assert doc.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(doc)
    assert root.tag == f"{NS}file"
    info = root.find(f"{NS}file-info")
    assert info is not None and info.get("type") == "file"
    assert info.findtext(f"{NS}file-size") == "1234"
    assert info.findtext(f"{NS}file-name") == 'Akte <"Müller"> & Co.pdf'
    assert info.findtext(f"{NS}content-type") == "application/pdf"
    data = info.find(f"{NS}data")
    assert data is not None
    assert data.get("url") == 'https://o.example/ft/x?a=1&b="2"'
    assert data.get("until") == "2026-03-03T09:00:00Z"


def test_access_rules() -> None:
    r = record(parties=("mia",))
    assert may_read(r.owner, r.parties, "kai", "employee")  # owner
    assert may_read(r.owner, r.parties, "mia", "client")  # party
    assert may_read(r.owner, r.parties, "anna", "agent") and may_read(
        r.owner, r.parties, "root", "admin"
    )  # staff
    assert not may_read(r.owner, r.parties, "lea", "employee") and not may_read(
        r.owner, r.parties, "lea", "client"
    )
    assert may_delete(r.owner, "kai", "employee") and may_delete(r.owner, "root", "admin")
    assert not may_delete(r.owner, "mia", "client") and not may_delete(r.owner, "anna", "agent")


def test_grant_only_from_owner_or_party_and_readable(store: Store, tmp_path: Path) -> None:
    svc = make_service(store, tmp_path, link_days=1)
    rec = upload(svc, form(b"abc"), now=datetime.now(UTC))
    assert svc.readable(rec.id, "mia", "client", datetime.now(UTC)) is None
    assert not svc.grant(rec.id, "lea", "mia")  # lea has nothing to do with it
    assert svc.grant(rec.id, "kai", "mia")
    assert svc.grant(rec.id, "mia", "lea")  # a party may forward it
    assert svc.grant(rec.id, "kai", "mia")  # again: still fine, no duplicate
    assert not svc.grant(new_file_id(), "kai", "mia")
    assert not svc.grant("../etc", "kai", "mia")
    assert store.get_file(rec.id).parties == ("lea", "mia")  # type: ignore[union-attr]
    assert svc.readable(rec.id, "mia", "client", datetime.now(UTC)) is not None
    assert svc.readable(rec.id, "mia", "client", rec.expires_at) is None  # expired


def test_delete_sweep_and_clean_start(store: Store, tmp_path: Path) -> None:
    svc = make_service(store, tmp_path, link_days=1)
    old = upload(svc, form(b"old"), now=T0)
    new = upload(svc, form(b"new"), now=T0 + timedelta(hours=12))
    svc.grant(old.id, "kai", "mia")
    assert svc.sweep(T0 + timedelta(days=1)) == 1
    assert stored_names(svc) == {new.id} and store.get_file(old.id) is None
    assert svc.delete([new.id, new.id, "nonsense"]) == 1
    assert stored_names(svc) == set() and store.list_files() == []
    # leftovers of a crash: a partial upload and bytes without a record
    (svc.tmp_dir / "upload-x").write_bytes(b"partial")
    orphan = svc.files_dir / new_file_id()
    orphan.write_bytes(b"orphan")
    kept = upload(svc, form(b"kept"))
    make_service(store, tmp_path)
    assert list(svc.tmp_dir.iterdir()) == []
    assert stored_names(svc) == {kept.id}


def test_download_verifies_the_hash(store: Store, tmp_path: Path) -> None:
    svc = make_service(store, tmp_path)
    rec = upload(svc, form(b"0123456789"))
    dl = svc.open_download(rec)
    assert dl.read(4) + dl.read(100) + dl.read() == b"0123456789" and dl.intact
    dl.close()
    (svc.files_dir / rec.id).write_bytes(b"0123456780")  # same size, damaged
    dl = svc.open_download(rec)
    while dl.read(3):
        pass
    assert not dl.intact
    dl.close()


# -- routes (TestClient) ---------------------------------------------------------------------


@pytest.fixture
def app(store: Store, tmp_path: Path) -> Iterator[tuple[TestClient, FileService]]:
    for name, pw in PASSWORDS.items():
        accounts.add_user(store, REALM, name, pw, ROLES[name])
    svc = FileService(store, tmp_path / "files", FileSettings(max_size_mb=1), "http://testserver")
    ctx = WebContext(
        store,
        lambda: {"domain": REALM},
        lambda: [],
        domain=REALM,
        files=svc,
        digest=DigestAuthenticator(REALM, b"k" * 32),
    )
    with TestClient(create_app(ctx)) as client:
        yield client, svc


def digest(client: TestClient, method: str, path: str, user: str, **kw: Any) -> Any:
    """The Linphone way: a request without credentials, then again with Digest."""
    first = client.request(method, path, **kw)
    assert first.status_code == 401, first.text
    challenges = first.headers.get_list("www-authenticate")
    assert any("algorithm=SHA-256" in c for c in challenges)
    auth = client_authorization(challenges[0], method, path, user, PASSWORDS[user], "c0ffee")
    assert auth is not None
    return client.request(
        method, path, headers={"Authorization": auth, **kw.pop("headers", {})}, **kw
    )


def test_ft_linphone_flow(app: tuple[TestClient, FileService]) -> None:
    http, svc = app
    assert digest(http, "POST", "/ft", "kai").status_code == 204
    body = form(b"hello", name="Gruß.txt", field="File", ctype="text/plain")
    r = digest(http, "POST", "/ft", "kai", content=body, headers={"Content-Type": CTYPE})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.gsma.rcs-ft-http+xml"
    info = ET.fromstring(r.content).find(f"{NS}file-info")
    assert info is not None and info.findtext(f"{NS}file-name") == "Gruß.txt"
    url = info.find(f"{NS}data").get("url")  # type: ignore[union-attr]
    file_id = svc.file_id_of(url)
    assert file_id and re.fullmatch(r"[A-Za-z0-9_-]{43}", file_id)
    path = f"/ft/{file_id}"
    got = digest(http, "GET", path, "kai")
    assert got.status_code == 200 and got.content == b"hello"
    assert got.headers["repr-digest"] == (
        "sha-256=:" + base64.b64encode(hashlib.sha256(b"hello").digest()).decode() + ":"
    )
    assert digest(http, "GET", path, "anna").status_code == 200  # staff
    refused = digest(http, "GET", path, "mia")
    missing = digest(http, "GET", f"/ft/{new_file_id()}", "mia")
    assert refused.status_code == missing.status_code == 404
    assert refused.json() == missing.json()
    assert svc.grant(file_id, "kai", "mia")
    assert digest(http, "GET", path, "mia").status_code == 200
    log = [(d.user, d.status, d.bytes_sent) for d in svc.downloads(file_id)]
    assert log == [("kai", 200, 5), ("anna", 200, 5), ("mia", 404, 0), ("mia", 200, 5)]


def test_ft_digest_refusals(app: tuple[TestClient, FileService]) -> None:
    http, _ = app
    r = http.post("/ft")
    ch = r.headers.get_list("www-authenticate")[0]
    wrong = client_authorization(ch, "POST", "/ft", "kai", "not-the-password", "c1")
    assert http.post("/ft", headers={"Authorization": wrong or ""}).status_code == 401
    other_uri = client_authorization(ch, "POST", "/ft/x", "kai", PASSWORDS["kai"], "c2")
    assert http.post("/ft", headers={"Authorization": other_uri or ""}).status_code == 400
    good = client_authorization(ch, "POST", "/ft", "kai", PASSWORDS["kai"], "c3")
    assert http.post("/ft", headers={"Authorization": good or ""}).status_code == 204
    assert http.post("/ft", headers={"Authorization": good or ""}).status_code == 401  # replay
    for _ in range(10):
        http.post("/ft", headers={"Authorization": wrong or ""})
    limited = http.post("/ft", headers={"Authorization": good or ""})
    assert limited.status_code == 429 and "too many" in limited.json()["detail"]


def test_api_files(app: tuple[TestClient, FileService]) -> None:
    http, svc = app
    kai, mia, anna = (
        ("kai", PASSWORDS["kai"]),
        ("mia", PASSWORDS["mia"]),
        ("anna", PASSWORDS["anna"]),
    )
    assert http.post("/api/files", files={"file": ("a.txt", b"x")}).status_code == 401
    r = http.post("/api/files", files={"file": ("a.txt", b"abc", "text/plain")}, auth=kai)
    assert r.status_code == 201, r.text
    meta = r.json()
    assert meta["sha256"] == hashlib.sha256(b"abc").hexdigest() and meta["size"] == 3
    assert meta["link"] == f"http://testserver/ft/{meta['id']}"
    listing = http.get("/api/files", auth=kai).json()
    assert [f["id"] for f in listing["files"]] == [meta["id"]]
    assert (listing["used_bytes"], listing["quota_bytes"]) == (3, 2048 * MB)
    assert http.get("/api/files", params={"owner": "kai"}, auth=mia).status_code == 403
    assert http.get("/api/files", params={"owner": "kai"}, auth=anna).json()["files"]
    assert http.get(f"/api/files/{meta['id']}", auth=mia).status_code == 404
    assert http.get(f"/api/files/{meta['id']}/content", auth=kai).content == b"abc"
    assert http.delete(f"/api/files/{meta['id']}", auth=anna).status_code == 403  # agent
    assert http.delete(f"/api/files/{meta['id']}", auth=mia).status_code == 404
    assert http.delete(f"/api/files/{meta['id']}", auth=kai).status_code == 204
    assert http.get(f"/api/files/{meta['id']}/content", auth=kai).status_code == 404
    big = http.post("/api/files", files={"file": ("b.bin", b"\0" * (MB + 1))}, auth=kai)
    assert big.status_code == 413 and "limit is 1.0 MB" in big.json()["detail"]
    bad = http.post(
        "/api/files",
        files={"file": ("a.txt", b"abc")},
        auth=kai,
        headers={"Repr-Digest": "sha-256=:" + "A" * 43 + "=:"},
    )
    assert bad.status_code == 400 and "does not match" in bad.json()["detail"]
    assert http.get("/api/files", auth=kai).json()["files"] == []
    assert list(svc.tmp_dir.iterdir()) == []
    assert "/api/files/{file_id}/content" in http.get("/api/openapi.json").json()["paths"]
