"""Nothing accepted is lost: the real server is killed with SIGKILL right after it answered,
and what the answer confirmed (a stored MESSAGE's 202, a REGISTER's 200, an HTTP 201) is there
after the restart."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from .harness import (
    Server,
    SipClient,
    SipMessage,
    run_sipp_caller,
    start_sipp_callee,
    tail,
    wait_until,
)

pytestmark = pytest.mark.e2e

DOMAIN = "office.heimbuero.test"
ALICE_PW = "Sonne-Regen-42"
BOB_PW = "Wolke-Blitz-77"
CARL_PW = "Nebel-Kiesel-19"
ADMIN_PW = "Turm-Fenster-53"


def _kill9(srv: Server) -> None:
    """SIGKILL the server process at once (no clean stop: nothing is flushed)."""
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(timeout=10)


def _register(client: SipClient, user: str, password: str, expires: int = 300) -> SipMessage:
    aor = f"sip:{user}@{DOMAIN}"
    _, ok = client.authenticated_request(
        "REGISTER", f"sip:{DOMAIN}", username=user, password=password, from_uri=aor,
        to_uri=aor, headers=[("Contact", f"<sip:{user}@127.0.0.1:{client.local_port}>"),
                             ("Expires", str(expires))],
    )  # fmt: skip
    return ok


def _answer(client: SipClient, req: SipMessage) -> None:
    lines = ["SIP/2.0 200 OK"]
    lines += [f"Via: {v}" for v in req.header_values("Via")]
    lines += [
        f"From: {req.header('From')}",
        f"To: {req.header('To')};tag=dev{(req.header('Call-ID') or '')[:6]}",
        f"Call-ID: {req.header('Call-ID')}",
        f"CSeq: {req.header('CSeq')}",
        "Content-Length: 0",
    ]
    client.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())


def _take_messages(client: SipClient, seconds: float) -> list[SipMessage]:
    """Every MESSAGE the server sends this client within `seconds`, each answered 200 at once
    (so the server goes on with the next stored one)."""
    got: list[SipMessage] = []
    seen: set[int] = client.__dict__.setdefault("_messages_seen", set())
    deadline = time.monotonic() + seconds
    while True:
        for m in client.received:
            if not m.is_response and m.method == "MESSAGE" and id(m) not in seen:
                seen.add(id(m))
                got.append(m)
                _answer(client, m)
        left = deadline - time.monotonic()
        if left <= 0:
            return got
        client.recv(min(left, 0.2))


def test_stored_messages_survive_kill9_right_after_202(tmp_path: Path) -> None:
    users = {"alice": ALICE_PW, "bob": BOB_PW}
    with Server(tmp_path, domain=DOMAIN, users=users) as srv:
        bob_aor = f"sip:bob@{DOMAIN}"
        texts = [f"Rückruf {i}: Herr Maier" for i in range(3)]
        with SipClient(srv.port) as alice:
            for text in texts:
                _, resp = alice.authenticated_request(
                    "MESSAGE", bob_aor, username="alice", password=ALICE_PW,
                    from_uri=f"sip:alice@{DOMAIN}", to_uri=bob_aor, body=text.encode(),
                    content_type="text/plain;charset=UTF-8",
                )  # fmt: skip
                assert resp.status == 202, resp.summary()
        _kill9(srv)  # right after the last 202
        srv.start()
        with SipClient(srv.port) as bob:
            ok = _register(bob, "bob", BOB_PW)
            assert ok.status == 200, ok.summary()
            got = _take_messages(bob, 6.0)
            bodies = [m.body.decode() for m in got]
            assert sorted(bodies) == sorted(texts), f"after kill -9 bob got {bodies}"
            # once: a refresh brings nothing more
            assert _register(bob, "bob", BOB_PW).status == 200
            assert _take_messages(bob, 1.5) == []


def test_fresh_registrations_survive_kill9_right_after_200(
    tmp_path: Path, server_database_url: str | None
) -> None:
    users = {"alice": ALICE_PW, "bob": BOB_PW, "carl": CARL_PW}
    with Server(
        tmp_path, domain=DOMAIN, users=users, http=True, database_url=server_database_url
    ) as srv:
        # Two raw phones register; the server is killed the moment the second 200 is in.
        with SipClient(srv.port) as bob_phone, SipClient(srv.port) as carl_phone:
            assert _register(bob_phone, "bob", BOB_PW, 600).status == 200
            assert _register(carl_phone, "carl", CARL_PW, 600).status == 200
            _kill9(srv)
            srv.start()
            listed = srv.cli("user", "list", "--data", str(srv.data_dir)).stdout
            counts = {line.split()[0]: line.split()[-1] for line in listed.splitlines()[1:]}
            assert counts["bob"] == "1" and counts["carl"] == "1", listed
            regs = httpx.get(
                f"{srv.http_url}/api/registrations", auth=("alice", ALICE_PW), timeout=10
            )
            assert regs.status_code == 200, regs.text
            sources = {(r["user"], r["source"]) for r in regs.json()["registrations"]}
            assert sources == {
                ("bob", f"udp:127.0.0.1:{bob_phone.local_port}"),
                ("carl", f"udp:127.0.0.1:{carl_phone.local_port}"),
            }, sources
        # A SIPp phone registers; killed as soon as its 200 is seen; a call still reaches it.
        callee = start_sipp_callee(
            tmp_path, srv, user="bob", password=BOB_PW, wait_registered=False, expires=600
        )
        with callee:
            actions = callee.rundir / "actions.log"
            wait_until(
                lambda: "REGISTERED" in tail(actions), 10, interval=0.002,
                what="the SIPp phone's 200",
            )  # fmt: skip
            _kill9(srv)
            srv.start()
            caller = run_sipp_caller(
                tmp_path, srv, user="alice", password=ALICE_PW, callee="bob", timeout=20
            )
            assert caller.returncode == 0, caller.report() + srv.log_text()
            callee.wait(20).check()


def test_http_201_survives_kill9(tmp_path: Path) -> None:
    users = {"alice": ALICE_PW, "bob": BOB_PW}
    with Server(tmp_path, domain=DOMAIN, users=users, http=True) as srv:
        srv.add_user("chef", ADMIN_PW, role="admin")
        with httpx.Client(timeout=10) as web:
            made = web.post(
                f"{srv.http_url}/api/users", auth=("chef", ADMIN_PW),
                json={"name": "dora", "password": "Birke-Schatten-64", "role": "agent"},
            )  # fmt: skip
            assert made.status_code == 201, made.text
            sent = web.post(
                f"{srv.http_url}/api/messages", auth=("alice", ALICE_PW),
                json={"to": "bob", "text": "Diktat 17 liegt bereit"},
            )  # fmt: skip
            assert sent.status_code == 201, sent.text
            _kill9(srv)  # right after the 201
        srv.start()
        with httpx.Client(timeout=10) as web:
            history = web.get(
                f"{srv.http_url}/api/conversations/alice/messages", auth=("bob", BOB_PW)
            )
            assert history.status_code == 200, history.text
            assert [m["text"] for m in history.json()] == ["Diktat 17 liegt bereit"]
            assert history.json()[0]["state"] == "queued"
            listed = web.get(f"{srv.http_url}/api/users", auth=("chef", ADMIN_PW))
            assert listed.status_code == 200, listed.text
            assert "dora" in [u["name"] for u in listed.json()]
        # and the stored message still reaches bob's phone
        with SipClient(srv.port) as bob:
            assert _register(bob, "bob", BOB_PW).status == 200
            got = _take_messages(bob, 5.0)
            assert [m.body.decode() for m in got] == ["Diktat 17 liegt bereit"]
