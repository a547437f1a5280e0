"""The messenger through the real server: a stored message survives a restart and reaches the
recipient's phone once; a browser (HTTP API) and a SIP phone share one conversation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from .harness import HarnessError, Server, SipClient, SipMessage, wait_until

pytestmark = pytest.mark.e2e

ALICE_PW = "Sonne-Regen-42"
BOB_PW = "Wolke-Blitz-77"


def _register(client: SipClient, srv: Server, user: str, password: str) -> None:
    aor = f"sip:{user}@{srv.domain}"
    _, ok = client.authenticated_request(
        "REGISTER", f"sip:{srv.domain}", username=user, password=password, from_uri=aor,
        to_uri=aor, headers=[("Contact", f"<sip:{user}@127.0.0.1:{client.local_port}>"),
                             ("Expires", "120")],
    )  # fmt: skip
    assert ok.status == 200, ok.summary()


def _next_message(client: SipClient, timeout: float) -> SipMessage | None:
    """The next MESSAGE request the server sends this client (also one already received while
    waiting for a response), or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    seen: set[int] = client.__dict__.setdefault("_messages_seen", set())
    while True:
        for m in client.received:
            if not m.is_response and m.method == "MESSAGE" and id(m) not in seen:
                seen.add(id(m))
                return m
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        client.recv(left)


def _answer(client: SipClient, req: SipMessage, status: int = 200) -> None:
    lines = [f"SIP/2.0 {status} OK"]
    lines += [f"Via: {v}" for v in req.header_values("Via")]
    lines += [
        f"From: {req.header('From')}",
        f"To: {req.header('To')};tag=dev{req.header('Call-ID')[:6]}",
        f"Call-ID: {req.header('Call-ID')}",
        f"CSeq: {req.header('CSeq')}",
        "Content-Length: 0",
    ]
    client.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())


def _history(srv: Server, user: str, password: str, peer: str) -> list[dict]:
    """The conversation as the HTTP API shows it (written by the server's store writer a few
    milliseconds after the SIP answer: polled until it is there)."""

    def get() -> list[dict] | None:
        r = httpx.get(
            f"{srv.http_url}/api/conversations/{peer}/messages", auth=(user, password), timeout=10
        )
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        return r.json()

    return wait_until(get, timeout=10, what=f"a conversation of {user} with {peer}")


def test_stored_message_survives_restart_and_arrives_once(
    tmp_path: Path, server_database_url: str | None
) -> None:
    users = {"alice": ALICE_PW, "bob": BOB_PW}
    with Server(tmp_path, users=users, http=True, database_url=server_database_url) as srv:
        alice_aor, bob_aor = f"sip:alice@{srv.domain}", f"sip:bob@{srv.domain}"
        with SipClient(srv.port) as alice:
            _, resp = alice.authenticated_request(
                "MESSAGE", bob_aor, username="alice", password=ALICE_PW, from_uri=alice_aor,
                to_uri=bob_aor, body="Bitte Herrn Maier zurückrufen".encode(),
                content_type="text/plain;charset=UTF-8",
            )  # fmt: skip
        assert resp.status == 202, resp.summary()
        [queued] = wait_until(
            lambda: [m for m in _history(srv, "bob", BOB_PW, "alice") if m["state"] == "queued"],
            timeout=10, what="the message stored as queued",
        )  # fmt: skip
        assert queued["origin"] == "sip" and queued["text"] == "Bitte Herrn Maier zurückrufen"

        srv.restart()

        with SipClient(srv.port) as bob:
            _register(bob, srv, "bob", BOB_PW)
            got = _next_message(bob, 10)
            assert got is not None, "the stored message did not arrive after registering"
            assert got.body.decode() == "Bitte Herrn Maier zurückrufen"
            assert "alice@" in (got.header("From") or "")
            assert got.header("P-Asserted-Identity") == f"<{alice_aor}>"
            assert got.header("Date")
            _answer(bob, got)
            wait_until(
                lambda: _history(srv, "bob", BOB_PW, "alice")[0]["state"] == "delivered",
                timeout=10, what="history shows the message delivered",
            )  # fmt: skip
            # Once: a refresh of the registration brings nothing more.
            _register(bob, srv, "bob", BOB_PW)
            assert _next_message(bob, 2.0) is None


def test_browser_and_phone_share_one_conversation(tmp_path: Path) -> None:
    users = {"alice": ALICE_PW, "bob": BOB_PW}
    with Server(tmp_path, users=users, http=True) as srv, SipClient(srv.port) as alice_phone:
        _register(alice_phone, srv, "alice", ALICE_PW)
        events: list[tuple[str, dict]] = []
        with httpx.Client(timeout=15) as web, web.stream(
            "GET", f"{srv.http_url}/api/messages/stream", auth=("alice", ALICE_PW)
        ) as stream:  # fmt: skip
            assert stream.status_code == 200
            lines = stream.iter_lines()
            next(lines)  # the stream's opening comment: the watch is in place
            sent = httpx.post(
                f"{srv.http_url}/api/messages", auth=("bob", BOB_PW), timeout=10,
                json={"to": "alice", "text": "Neue Diktate liegen bereit"},
            )  # fmt: skip
            assert sent.status_code == 201, sent.text
            # the phone gets it as a MESSAGE from bob
            got = _next_message(alice_phone, 10)
            assert got is not None and got.body == b"Neue Diktate liegen bereit"
            assert "bob@" in (got.header("From") or "")
            _answer(alice_phone, got)
            event = None
            deadline = time.monotonic() + 10
            for line in lines:
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event:
                    events.append((event, json.loads(line[6:])))
                    if any(e == "state" and d["state"] == "delivered" for e, d in events):
                        break
                if time.monotonic() > deadline:
                    raise HarnessError(f"no delivered state on the stream: {events}")
        assert events[0][0] == "message" and events[0][1]["text"] == "Neue Diktate liegen bereit"
        assert events[0][1]["sender"] == "bob" and events[0][1]["origin"] == "http"

        # the phone answers over SIP; the browser sees both in one history, in order
        _, resp = alice_phone.authenticated_request(
            "MESSAGE", f"sip:bob@{srv.domain}", username="alice", password=ALICE_PW,
            from_uri=f"sip:alice@{srv.domain}", to_uri=f"sip:bob@{srv.domain}",
            body=b"Danke, ich fange an", content_type="text/plain",
        )  # fmt: skip
        assert resp.status == 202  # bob has no phone registered: stored
        want = [
            ("bob", "Neue Diktate liegen bereit", "delivered"),
            ("alice", "Danke, ich fange an", "queued"),
        ]
        wait_until(
            lambda: [(m["sender"], m["text"], m["state"])
                     for m in _history(srv, "bob", BOB_PW, "alice")] == want,
            timeout=10, what=f"history {want}",
        )  # fmt: skip
        convs = httpx.get(f"{srv.http_url}/api/conversations", auth=("bob", BOB_PW)).json()
        assert [c["peer"] for c in convs] == ["alice"]
        assert convs[0]["last"]["text"] == "Danke, ich fange an"


def test_a_file_sent_from_the_web_reaches_the_phone_and_only_parties_download(
    tmp_path: Path,
) -> None:
    carol_pw, erin_pw = "Blume-Stein-11", "Fluss-Kiesel-33"
    with Server(tmp_path, users={"alice": ALICE_PW}, http=True) as srv:
        for name, pw in (("carol", carol_pw), ("erin", erin_pw)):
            srv.cli("user", "add", name, "--password", pw, "--role", "client",
                    "--data", str(srv.data_dir))  # fmt: skip
        with SipClient(srv.port) as carol_phone:
            _register(carol_phone, srv, "carol", carol_pw)
            document = b"Sehr geehrter Herr Maier,\n" * 1000
            up = httpx.post(
                f"{srv.http_url}/api/files", auth=("alice", ALICE_PW), timeout=30,
                files={"file": ("Brief Maier.txt", document, "text/plain")},
            )  # fmt: skip
            assert up.status_code == 201, up.text
            file_id = up.json()["id"]
            url = f"{srv.http_url}/api/files/{file_id}/content"
            # before it is shared, the client may not download it
            assert httpx.get(url, auth=("carol", carol_pw), timeout=10).status_code == 404

            sent = httpx.post(
                f"{srv.http_url}/api/messages", auth=("alice", ALICE_PW), timeout=10,
                json={"to": "carol", "file": file_id},
            )  # fmt: skip
            assert sent.status_code == 201, sent.text
            got = _next_message(carol_phone, 10)
            assert got is not None
            assert got.header("Content-Type") == "application/vnd.gsma.rcs-ft-http+xml"
            assert f"/ft/{file_id}".encode() in got.body and b"Brief Maier.txt" in got.body
            _answer(carol_phone, got)

        r = httpx.get(url, auth=("carol", carol_pw), timeout=10)
        assert r.status_code == 200 and r.content == document
        # a user who was not a party gets what a missing file gets, and cannot pass it on
        assert httpx.get(url, auth=("erin", erin_pw), timeout=10).status_code == 404
        r = httpx.post(
            f"{srv.http_url}/api/messages", auth=("erin", erin_pw), timeout=10,
            json={"to": "alice", "file": file_id},
        )  # fmt: skip
        assert r.status_code == 403 and "share" in r.text
        history = _history(srv, "carol", carol_pw, "alice")
        assert [m["kind"] for m in history] == ["file"]
        assert history[0]["files"][0]["name"] == "Brief Maier.txt"


def test_bad_messages_over_http_get_clear_errors(tmp_path: Path) -> None:
    users = {"alice": ALICE_PW, "bob": BOB_PW}
    with Server(tmp_path, users=users, http=True) as srv:
        srv.cli("user", "add", "carol", "--password", "Blume-Stein-11", "--role", "client",
                "--data", str(srv.data_dir))  # fmt: skip
        srv.cli("user", "add", "erin", "--password", "Fluss-Kiesel-33", "--role", "client",
                "--data", str(srv.data_dir))  # fmt: skip
        api = f"{srv.http_url}/api/messages"

        def post(auth: tuple[str, str], body: dict) -> httpx.Response:
            return httpx.post(api, auth=auth, json=body, timeout=10)

        assert post(("alice", ALICE_PW), {"to": "bob"}).status_code == 422
        assert post(("alice", ALICE_PW), {"to": "bob", "text": "a", "file": "x"}).status_code == 422
        r = post(("alice", ALICE_PW), {"to": "bob", "text": "x" * 20000})
        assert r.status_code == 413 and "16384" in r.text
        r = post(("carol", "Blume-Stein-11"), {"to": "erin", "text": "Hallo"})
        assert r.status_code == 403  # another client's user
        r = post(("carol", "Blume-Stein-11"), {"to": "nobody", "text": "Hallo"})
        assert r.status_code == 403  # unknown: the same answer
        assert post(("alice", ALICE_PW), {"to": "nobody", "text": "x"}).status_code == 404
        assert httpx.post(api, json={"to": "bob", "text": "x"}, timeout=10).status_code == 401
        # nothing of that reached the history
        r = httpx.get(f"{srv.http_url}/api/conversations", auth=("carol", "Blume-Stein-11"))
        assert r.status_code == 200 and r.json() == []
