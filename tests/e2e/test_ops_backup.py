"""`heimbuero backup` under load and `heimbuero restore`: everything acknowledged before the
backup started (messages, files, call records, rules, registrations) is in the restored data
directory, served by a new `heimbuero serve`; every file the restored store lists has its
bytes. (Refusals of damaged archives and non-empty targets: tests/unit/test_ops_backup.py.)"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import httpx
import pytest

from .harness import Server, SipClient, wait_until

pytestmark = pytest.mark.e2e

DOMAIN = "office.heimbuero.test"
ADMIN, ADMIN_PW = "alice", "Lavendel-Feld-71"
BOB, BOB_PW = "bob", "Kupfer-Kanne-38"
CLIENT, NUMBER = "acme", "+4930123456"


def _register(phone: SipClient, srv: Server, user: str, password: str) -> None:
    aor = f"sip:{user}@{srv.domain}"
    _, ok = phone.authenticated_request(
        "REGISTER", f"sip:{srv.domain}", username=user, password=password,
        from_uri=aor, to_uri=aor,
        headers=[("Contact", f"<sip:{user}@127.0.0.1:{phone.local_port}>"), ("Expires", "3600")],
    )  # fmt: skip
    assert ok.status == 200, ok.summary()


def _call(phone: SipClient, srv: Server) -> int:
    """alice dials the client's number; bob is not registered: a final answer (and, once the
    number routes, a call record)."""
    aor = f"sip:{ADMIN}@{srv.domain}"
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    _, final = phone.authenticated_request(
        "INVITE", f"sip:{NUMBER}@{srv.domain}", username=ADMIN, password=ADMIN_PW,
        from_uri=aor, to_uri=f"sip:{NUMBER}@{srv.domain}",
        headers=[("Contact", f"<sip:{ADMIN}@127.0.0.1:{phone.local_port}>"),
                 ("Content-Type", "application/sdp")],
        body=sdp.encode(), timeout=15,
    )  # fmt: skip
    assert final.status is not None and final.status >= 300, final.summary()
    return final.status  # (not ACKed: the server's retransmissions end with timer H)


def _upload(http: httpx.Client, name: str, data: bytes) -> str:
    up = http.post("/api/files", files={"file": (name, data, "text/plain")}, timeout=30)
    assert up.status_code == 201, up.text
    return str(up.json()["id"])


def _members(archive: Path) -> set[str]:
    import tarfile

    with tarfile.open(archive) as tar:
        return {m.name.partition("/")[2] for m in tar}


def test_backup_under_load_restores_everything_acknowledged(
    tmp_path: Path, server_database_url: str | None, request: pytest.FixtureRequest
) -> None:
    """On the SQLite file and on PostgreSQL (pg_dump of one snapshot, pg_restore into a new
    database named with `restore --database-url`)."""
    srv = Server(tmp_path / "live", domain=DOMAIN, users={}, http=True,
                 database_url=server_database_url)  # fmt: skip
    srv.prepare()
    data = str(srv.data_dir)
    srv.add_user(ADMIN, ADMIN_PW, role="admin")
    archive = tmp_path / "backup.tar"
    auth = (ADMIN, ADMIN_PW)
    with srv, httpx.Client(base_url=srv.http_url, auth=auth, timeout=10) as http:
        # -- acknowledged before the backup: a user, a client with a number and rules,
        # messages, files, call records and a registration --
        for path, body in (
            ("/api/users", {"name": BOB, "password": BOB_PW, "role": "agent"}),
            ("/api/clients", {"id": CLIENT, "name": "Acme GmbH"}),
            ("/api/numbers", {"number": NUMBER, "client": CLIENT}),
        ):
            made = http.post(path, json=body)
            assert made.status_code == 201, (path, made.text)
        rules = {"client": CLIENT, "numbers": {NUMBER: {"rules": [
            {"name": "Immer", "steps": [{"targets": [f"user:{BOB}"], "timeout": 5}]},
        ]}}}  # fmt: skip
        put = http.put(f"/api/clients/{CLIENT}/rules", json=rules)
        assert put.status_code == 200, put.text
        phone = SipClient(srv.port)
        try:
            _register(phone, srv, ADMIN, ADMIN_PW)
            texts = [f"Vor der Sicherung {i}" for i in range(5)]
            for t in texts:
                sent = http.post("/api/messages", json={"to": BOB, "text": t})
                assert sent.status_code == 201, sent.text
            files = {}
            for i in range(3):
                body = f"Diktat {i}\n".encode() * (2000 * (i + 1))
                files[_upload(http, f"diktat-{i}.txt", body)] = hashlib.sha256(body).hexdigest()

            def two_calls_recorded() -> list[dict[str, object]] | None:
                # (the number routes once the server has reloaded the office: until then 404)
                records = [c for c in http.get("/api/calls").json() if c["result"]]
                if len(records) >= 2:
                    return records
                _call(phone, srv)
                return None

            calls = wait_until(two_calls_recorded, 15, interval=0.2,
                               what="two finished call records")  # fmt: skip
        finally:
            phone.close()

        # -- load while the backup runs: messages, uploads, registrations --
        stop = threading.Event()
        during: dict[str, list[str]] = {"messages": [], "files": [], "errors": []}

        def load() -> None:
            n = 0
            with (
                httpx.Client(base_url=srv.http_url, auth=auth, timeout=10) as h,
                SipClient(srv.port) as p,
            ):
                while not stop.is_set():
                    n += 1
                    try:
                        r = h.post("/api/messages", json={"to": BOB, "text": f"Last {n}"})
                        if r.status_code == 201:
                            during["messages"].append(f"Last {n}")
                        during["files"].append(_upload(h, f"last-{n}.txt", b"x" * 50_000))
                        _register(p, srv, BOB, BOB_PW)
                    except Exception as exc:  # noqa: BLE001 - reported below
                        during["errors"].append(repr(exc))
                        return

        loader = threading.Thread(target=load)
        loader.start()
        try:
            wait_until(lambda: len(during["files"]) >= 2 or during["errors"], 15,
                       what="load running")  # fmt: skip
            res = srv.cli("backup", "--data", data, "--to", str(archive))
            wait_until(lambda: len(during["files"]) >= 4 or during["errors"], 15,
                       what="load after the backup")  # fmt: skip
        finally:
            stop.set()
            loader.join(30)
        assert not during["errors"], during["errors"]
        assert res.stdout.startswith(f"backup written to {archive}"), res.stdout
        # the live server still serves all it acknowledged
        assert http.get("/readyz").status_code == 200

    # -- restore into a new directory and serve it --
    restored = Server(tmp_path / "restored", domain=DOMAIN, http=True)
    into = []
    if srv.database_url:
        into = ["--database-url", request.getfixturevalue("pg_cluster").new_database()]
        assert "heimbuero.pgdump" in _members(archive)
    out = srv.cli("restore", str(archive), "--data", str(restored.data_dir), *into)
    if into:
        assert into[1] in restored.config_path.read_text()
        # a database that is not empty is never restored into (nothing overwritten)
        again = srv.cli("restore", str(archive), "--data", str(tmp_path / "again"), *into,
                        check=False)  # fmt: skip
        assert again.returncode != 0 and "not empty" in again.stderr, again.stderr
        assert not (tmp_path / "again").exists()
        # and a PostgreSQL backup needs a database to go into
        bare = srv.cli("restore", str(archive), "--data", str(tmp_path / "bare"), check=False)
        assert bare.returncode != 0 and "--database-url" in bare.stderr, bare.stderr
    assert "restored the backup of office.heimbuero.test" in out.stdout
    with restored, httpx.Client(base_url=restored.http_url, auth=auth, timeout=10) as http:
        history = http.get(f"/api/conversations/{BOB}/messages", params={"limit": 500})
        assert history.status_code == 200, history.text
        got_texts = [m.get("text") for m in history.json()]
        for t in texts:
            assert t in got_texts, (t, got_texts)
        for file_id, digest in files.items():
            content = http.get(f"/api/files/{file_id}/content")
            assert content.status_code == 200, (file_id, content.text)
            assert hashlib.sha256(content.content).hexdigest() == digest
        # consistent: every file on record (also those uploaded while the backup ran) has its
        # bytes
        listed = http.get("/api/files").json()
        listed = listed["files"] if isinstance(listed, dict) else listed
        assert {f["id"] for f in listed} >= set(files)
        for f in listed:
            content = http.get(f"/api/files/{f['id']}/content")
            assert content.status_code == 200, (f, content.text)
            assert hashlib.sha256(content.content).hexdigest() == f["sha256"]
        restored_calls = {c["call_id"]: c for c in http.get("/api/calls").json()}
        for c in calls:
            assert restored_calls.get(c["call_id"]) == c
        doc = http.get(f"/api/clients/{CLIENT}/rules")
        assert doc.status_code == 200, doc.text
        assert "Immer" in json.dumps(doc.json())
        regs = http.get("/api/registrations").json()["registrations"]
        assert any(r["user"] == ADMIN for r in regs), regs
