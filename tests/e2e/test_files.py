"""The HTTP file-transfer service of `heimbuero serve --http`, through the real process and
its store: Linphone's digest flow on /ft, who may download, expiry, limits, an interrupted
upload, a 200 MB upload's memory use, and HTTPS."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import DOMAIN, USERS
from .harness import (
    LOCALHOST,
    Server,
    digest_response,
    parse_challenge,
    self_signed_cert,
    set_toml_option,
    wait_until,
)

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
NS = "{urn:gsma:params:xml:ns:rcs:rcs:fthttp}"
BOUNDARY = "heimbuero-e2e-7d3f"
CTYPE = f"multipart/form-data;boundary={BOUNDARY}"  # as Linphone writes it: no space
KAI, KAI_PW = "kai", "Tannen-Zapfen-19"  # an employee: not staff
MIA, MIA_PW = "mia", "Birken-Weg-55"  # a client user: not staff
PASSWORDS = {**USERS, KAI: KAI_PW, MIA: MIA_PW}  # alice and bob are agents (staff)


@contextlib.contextmanager
def file_server(
    workdir: Path, files: dict[str, int] | None = None, http: dict[str, str] | None = None
) -> Iterator[Server]:
    """`heimbuero serve --http` with alice, bob (agents), kai (employee), mia (client) and the
    given [files] / [http] settings."""
    srv = Server(workdir, domain=DOMAIN, users=USERS, http=True)
    srv.prepare()
    srv.add_user(KAI, KAI_PW, "employee")
    srv.add_user(MIA, MIA_PW, "client")
    for key, value in (files or {}).items():
        set_toml_option(srv.config_path, "files", key, value)
    for key, text in (http or {}).items():
        set_toml_option(srv.config_path, "http", key, text)
    with srv:
        scheme = "https" if http and "tls_cert" in http else "http"
        wait_http(f"{scheme}://{LOCALHOST}:{srv.http_port}", (http or {}).get("tls_cert"))
        yield srv


def wait_http(base: str, cafile: str | None = None, timeout: float = 15) -> None:
    """Poll /healthz until it answers: SIP answering first does not mean HTTP listens yet
    (uvicorn binds the socket early but listens only after loading the TLS certificate)."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=cafile) if cafile else True

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", verify=verify, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout, interval=0.1, what=f"{base}/healthz")


def form_head(name: str = "Diktat 1.wav", ctype: str = "audio/wav", field: str = "File") -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data;name="{field}";filename="{name}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode()


FORM_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def form(content: bytes, **kw: str) -> bytes:
    return form_head(**kw) + content + FORM_TAIL


def digest_request(
    http: httpx.Client, method: str, path: str, user: str, *, algorithm: str = "SHA-256", **kw: Any
) -> httpx.Response:
    """What Linphone does: the request without credentials, then again answering the 401's
    Digest challenge (uri = the path)."""
    first = http.request(method, path)
    assert first.status_code == 401, first.text
    challenges = [parse_challenge(v) for v in first.headers.get_list("www-authenticate")]
    assert {c["scheme"] for c in challenges} == {"Digest"}
    assert all(c["realm"] == DOMAIN for c in challenges)
    ch = next(c for c in challenges if c.get("algorithm", "MD5") == algorithm)
    auth = digest_response(ch, method=method, uri=path, username=user, password=PASSWORDS[user])
    headers = {"Authorization": auth, "From": f"sip:{user}@{DOMAIN}", **kw.pop("headers", {})}
    return http.request(method, path, headers=headers, **kw)


def ft_upload(http: httpx.Client, user: str, content: Any, **kw: Any) -> httpx.Response:
    headers = {"Content-Type": CTYPE, **kw.pop("headers", {})}
    return digest_request(http, "POST", "/ft", user, content=content, headers=headers, **kw)


def file_info(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.gsma.rcs-ft-http+xml"
    root = ET.fromstring(response.content)
    info = root.find(f"{NS}file-info")
    assert root.tag == f"{NS}file" and info is not None and info.get("type") == "file"
    data = info.find(f"{NS}data")
    assert data is not None
    return {
        "size": info.findtext(f"{NS}file-size") or "",
        "name": info.findtext(f"{NS}file-name") or "",
        "type": info.findtext(f"{NS}content-type") or "",
        "url": data.get("url") or "",
        "until": data.get("until") or "",
    }


def repr_digest(data_sha256: bytes) -> str:
    return "sha-256=:" + base64.b64encode(data_sha256).decode() + ":"


def files_on_disk(srv: Server) -> tuple[set[str], list[str]]:
    """(stored file names, names in tmp/)"""
    root = srv.data_dir / "files"
    stored = {p.name for p in root.iterdir() if p.is_file()}
    return stored, sorted(p.name for p in (root / "tmp").iterdir())


def file_rows(srv: Server) -> list[tuple[str, str, int]]:
    return srv.sql("SELECT id, owner, size FROM files ORDER BY created_at")


# --------------------------------------------------------------------------------------------


def test_linphone_flow_access_log_restart_and_expiry(tmp_path: Path) -> None:
    with (
        file_server(tmp_path / "s") as srv,
        httpx.Client(base_url=srv.http_url, timeout=20) as http,
    ):
        # the probe: an empty POST is challenged, and answered 204 once logged in
        probe = http.post("/ft")
        assert probe.status_code == 401
        assert "Digest" in probe.headers["www-authenticate"]
        assert digest_request(http, "POST", "/ft", KAI).status_code == 204

        audio = os.urandom(300_000)
        sent = ft_upload(http, KAI, form(audio, name="Diktat <Müller> & Co.wav"), algorithm="MD5")
        info = file_info(sent)
        assert info["size"] == str(len(audio))
        assert info["name"] == "Diktat <Müller> & Co.wav" and info["type"] == "audio/wav"
        assert info["url"].startswith(f"{srv.http_url}/ft/") and info["until"].endswith("Z")
        path = info["url"].removeprefix(srv.http_url)
        file_id = path.rsplit("/", 1)[1]

        assert http.get(path).status_code == 401  # no credentials: challenged
        got = digest_request(http, "GET", path, KAI)
        assert got.status_code == 200 and got.content == audio
        assert got.headers["repr-digest"] == repr_digest(hashlib.sha256(audio).digest())
        assert got.headers["content-length"] == str(len(audio))
        assert digest_request(http, "GET", path, "alice").content == audio  # staff

        refused = digest_request(http, "GET", path, MIA)  # not a party
        missing = digest_request(http, "GET", f"/ft/{'A' * 43}", MIA)
        assert refused.status_code == missing.status_code == 404
        assert refused.content == missing.content
        api_refused = http.get(f"/api/files/{file_id}/content", auth=(MIA, MIA_PW))
        assert api_refused.status_code == 404 and api_refused.content == missing.content

        meta = http.get(f"/api/files/{file_id}", auth=(KAI, KAI_PW)).json()
        assert meta["sha256"] == hashlib.sha256(audio).hexdigest()
        assert meta["owner"] == KAI and meta["link"] == info["url"] and meta["parties"] == []
        log = http.get(f"/api/files/{file_id}/downloads", auth=("alice", USERS["alice"])).json()
        assert [(d["user"], d["status"], d["bytes_sent"]) for d in log] == [
            (KAI, 200, len(audio)),
            ("alice", 200, len(audio)),
            (MIA, 404, 0),
            (MIA, 404, 0),
        ]
        assert all(d["remote"] == LOCALHOST for d in log)

    # the file and its record survive a restart
    srv.start()
    wait_http(srv.http_url)
    try:
        with httpx.Client(base_url=srv.http_url, timeout=20) as http:
            assert digest_request(http, "GET", path, KAI).content == audio
            # the link expires (moved into the past in the store): refused like a missing file
            srv.sql(
                "UPDATE files SET expires_at = '2020-01-01 00:00:00.000000' WHERE id = :id",
                {"id": file_id},
            )
            expired = digest_request(http, "GET", path, KAI)
            assert expired.status_code == 404 and expired.content == missing.content
            assert http.get("/api/files", auth=(KAI, KAI_PW)).json()["used_bytes"] == 0
    finally:
        assert srv.stop() == 0


def test_limits_digest_mismatch_and_broken_uploads_leave_nothing(tmp_path: Path) -> None:
    limits = {"max_size_mb": 2, "quota_mb": 3}
    with (
        file_server(tmp_path / "s", files=limits) as srv,
        httpx.Client(base_url=srv.http_url, timeout=30) as http,
    ):
        kai = (KAI, KAI_PW)
        # too large, known from Content-Length
        big = ft_upload(http, KAI, form(b"\0" * (2 * MB + 1)))
        assert big.status_code == 413 and "file too large: the limit is 2.0 MB" in big.text

        # too large, found out while streaming (chunked: no Content-Length)
        def chunked() -> Iterator[bytes]:
            yield form_head()
            for _ in range(3):
                yield b"\1" * MB
            yield FORM_TAIL

        streamed = ft_upload(http, KAI, chunked())
        assert streamed.status_code == 413 and "limit is 2.0 MB" in streamed.text

        # a digest that does not match what arrived
        data = os.urandom(1000)
        claim = {"Repr-Digest": repr_digest(hashlib.sha256(b"x").digest())}
        wrong = http.post("/api/files", auth=kai, files={"file": ("x.bin", data)}, headers=claim)
        assert wrong.status_code == 400 and "does not match" in wrong.json()["detail"]
        claim = {"Repr-Digest": repr_digest(hashlib.sha256(data).digest())}
        good = http.post("/api/files", auth=kai, files={"file": ("x.bin", data)}, headers=claim)
        assert good.status_code == 201, good.text

        # the quota: 2 MB stored, 3 MB allowed
        first = http.post("/api/files", auth=kai, files={"file": ("a.bin", b"a" * (2 * MB - 1000))})
        assert first.status_code == 201
        over = http.post("/api/files", auth=kai, files={"file": ("b.bin", b"b" * (2 * MB))})
        assert over.status_code == 413
        assert "quota exceeded: you store 2.0 MB of your 3.0 MB" in over.json()["detail"]
        assert file_info(ft_upload(http, MIA, form(b"m" * (2 * MB))))  # mia has her own quota

        stored_before, tmp_before = files_on_disk(srv)
        rows_before = file_rows(srv)
        used_before = http.get("/api/files", auth=kai).json()["used_bytes"]
        assert tmp_before == [] and len(stored_before) == len(rows_before) == 3
        assert used_before == 2 * MB

        # an upload broken off mid-body: the client promises 1.5 MB, sends 1 MB, hangs up
        http.delete(f"/api/files/{first.json()['id']}", auth=kai).raise_for_status()
        stored_before, _ = files_on_disk(srv)
        rows_before = file_rows(srv)
        head = form_head(field="file")
        credentials = base64.b64encode(f"{KAI}:{KAI_PW}".encode()).decode()
        request = (
            "POST /api/files HTTP/1.1\r\n"
            f"Host: {LOCALHOST}\r\nAuthorization: Basic {credentials}\r\n"
            f"Content-Type: {CTYPE}\r\nContent-Length: {len(head) + MB + MB // 2}\r\n\r\n"
        ).encode()
        assert srv.http_port is not None
        with socket.create_connection((LOCALHOST, srv.http_port), timeout=10) as sock:
            sock.sendall(request + head + b"\2" * MB)
            wait_until(lambda: files_on_disk(srv)[1], 10, what="the partial upload in tmp/")
        wait_until(lambda: files_on_disk(srv)[1] == [], 10, what="tmp/ to be empty again")
        assert files_on_disk(srv)[0] == stored_before
        assert file_rows(srv) == rows_before
        assert http.get("/api/files", auth=kai).json()["used_bytes"] == 1000
        assert srv.alive()


def _memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def test_200_mb_upload_streams_without_growing_memory(tmp_path: Path) -> None:
    size = 200 * MB
    with (
        file_server(tmp_path / "s") as srv,
        httpx.Client(base_url=srv.http_url, timeout=120) as http,
    ):
        assert srv.pid is not None
        digest_request(http, "POST", "/ft", KAI)  # warm up the routes and the thread pool
        Path(f"/proc/{srv.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _memory_kb(srv.pid)
        sent_hash = hashlib.sha256()

        def body() -> Iterator[bytes]:
            yield form_head(name="lang.wav", ctype="application/octet-stream")
            for _ in range(size // MB):
                chunk = os.urandom(MB)
                sent_hash.update(chunk)
                yield chunk
            yield FORM_TAIL

        length = len(form_head(name="lang.wav", ctype="application/octet-stream")) + size
        length += len(FORM_TAIL)
        info = file_info(ft_upload(http, KAI, body(), headers={"Content-Length": str(length)}))
        assert info["size"] == str(size)
        path = info["url"].removeprefix(srv.http_url)

        got_hash, got = hashlib.sha256(), 0
        first = http.get(path)
        ch = next(parse_challenge(v) for v in first.headers.get_list("www-authenticate"))
        auth = digest_response(ch, method="GET", uri=path, username=KAI, password=KAI_PW)
        with http.stream("GET", path, headers={"Authorization": auth}) as r:
            assert r.status_code == 200
            announced = r.headers["repr-digest"]
            for chunk in r.iter_bytes():
                got_hash.update(chunk)
                got += len(chunk)
        after = _memory_kb(srv.pid)

        assert got == size and got_hash.digest() == sent_hash.digest()
        assert announced == repr_digest(sent_hash.digest())
        meta = http.get(f"/api/files/{path.rsplit('/', 1)[1]}", auth=(KAI, KAI_PW)).json()
        assert meta["sha256"] == sent_hash.hexdigest()
        growth_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
        assert growth_mb < 50, f"server memory grew by {growth_mb:.1f} MB ({before} -> {after})"
        print(f"200 MB up and down: peak memory growth {growth_mb:.1f} MB")


def test_https_upload_and_download(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path / "tls")
    tls = {"tls_cert": str(cert), "tls_key": str(key)}
    with file_server(tmp_path / "s", http=tls) as srv:
        assert srv.http_port is not None
        base = f"https://{LOCALHOST}:{srv.http_port}"
        with httpx.Client(
            base_url=base, timeout=20, verify=ssl.create_default_context(cafile=str(cert))
        ) as https:
            content = os.urandom(50_000)
            info = file_info(
                ft_upload(https, KAI, form(content, name="brief.pdf", ctype="application/pdf"))
            )
            assert info["url"].startswith(f"{base}/ft/")
            got = digest_request(https, "GET", info["url"].removeprefix(base), KAI)
            assert got.content == content
        with pytest.raises(httpx.TransportError):  # plain HTTP is not served
            httpx.get(f"http://{LOCALHOST}:{srv.http_port}/healthz", timeout=5).raise_for_status()
