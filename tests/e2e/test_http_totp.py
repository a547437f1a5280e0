"""The console's second factor through the real `heimbuero serve --http`: agent alice switches
TOTP on in the console (password, then a first code), logs out, and logs in again: the
password alone gives no session, only a current code does; wrong codes are refused and count
toward the login limits of her address and her account's limit of wrong codes, a code is good
once, and the JSON API takes no password alone from her. Each part logs in from its own
loopback address so the per-address limit of one does not shape another."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import pytest

from heimbuero.domain import totp

from .conftest import USERS
from .harness import Server

pytestmark = pytest.mark.e2e


def client(srv: Server, source: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(
        base_url=srv.http_url, timeout=10, transport=transport, follow_redirects=True
    )


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _password(http: httpx.Client, name: str, password: str) -> httpx.Response:
    page = http.get("/")
    return http.post("/login", data={"csrf": _csrf(page.text), "name": name, "password": password})


def _code(secret: str, delta: int = 0) -> str:
    return totp.hotp(totp.secret_bytes(secret), totp.step_of(time.time()) + delta)


def _send_code(http: httpx.Client, code: str) -> httpx.Response:
    form = http.get("/login/code")
    assert form.status_code == 200 and 'name="code"' in form.text, form.text
    return http.post("/login/code", data={"csrf": _csrf(form.text), "code": code})


def test_totp_login_through_the_real_server(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(http=True)
    pw = USERS["alice"]

    # enrol in the console: the password first, then a first code of the new secret
    with client(srv, "127.0.0.1") as http:
        assert _password(http, "alice", pw).url.path == "/console"
        page = http.get("/totp")
        assert page.status_code == 200 and "Ausgeschaltet" in page.text
        shown = http.post("/totp/start", data={"csrf": _csrf(page.text), "password": pw})
        m = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', shown.text)
        assert shown.status_code == 200 and m, shown.text
        secret = m.group(1)
        assert f"otpauth://totp/heimbuero:alice@{srv.domain}?secret={secret}" in shown.text
        assert "<svg" in shown.text  # the QR code, inline
        assert srv.sql("SELECT enabled FROM user_totp") == [(False,)]  # not on before a code
        first = _code(secret, -1)
        on = http.post("/totp/confirm", data={"csrf": _csrf(shown.text), "code": first})
        assert on.status_code == 200 and "ist eingeschaltet" in on.text
        assert srv.sql("SELECT enabled FROM user_totp") == [(True,)]
        http.post("/logout", data={"csrf": _csrf(http.get("/console").text)})
        assert http.get("/console", follow_redirects=False).headers["location"] == "/"

    # the password alone: no session, only the code form
    with client(srv, "127.0.0.2") as http:
        r = _password(http, "alice", pw)
        assert r.history and r.history[0].headers["location"] == "/login/code"
        assert "hb_session" not in http.cookies and "hb_code" in http.cookies
        for path in ("/console", "/totp", "/password", "/api/docs"):
            assert http.get(path, follow_redirects=False).headers.get("location") == "/", path
        assert http.get("/events").status_code == 401
        # the half-done login's id is no session id
        forged = client(srv, "127.0.0.2")
        forged.cookies.set("hb_session", http.cookies["hb_code"])
        assert forged.get("/console", follow_redirects=False).status_code == 303
        forged.close()
        # nor does the API take her password alone (tokens would do)
        api = http.get("/api/me", auth=("alice", pw))
        assert api.status_code == 401 and "second factor" in api.json()["detail"]

        wrong = _send_code(http, "000000" if first != "000000" else "111111")
        assert wrong.status_code == 401 and "falsch" in wrong.text
        replayed = _send_code(http, first)  # the code that switched it on is used up
        assert replayed.status_code == 401
        code = _code(secret, +1)  # a later step than `first`, within the drift window
        ok = _send_code(http, code)
        assert ok.status_code == 200 and ok.url.path == "/console", ok.text
        assert "hb_session" in http.cookies and "hb_code" not in http.cookies

    # the same code once more, from another browser: refused
    with client(srv, "127.0.0.3") as http:
        assert _password(http, "alice", pw).url.path == "/login/code"
        assert _send_code(http, code).status_code == 401
        assert http.get("/console", follow_redirects=False).status_code == 303

    # wrong codes count toward the address's limit (10 a minute) like wrong passwords
    with client(srv, "127.0.0.4") as http:
        assert _password(http, "alice", pw).url.path == "/login/code"
        statuses = [_send_code(http, "999999").status_code for _ in range(5)]
        assert statuses == [401] * 5
        # five wrong codes end the login: the password is asked again
        assert http.get("/login/code", follow_redirects=False).headers["location"] == "/"
        for _ in range(4):
            assert _password(http, "bob", "wrong-password-1").status_code == 401
        assert _password(http, "bob", "wrong-password-1").status_code == 401  # the 10th
        # 5 wrong codes + 5 wrong passwords: this address is refused now, bob's right password too
        assert http.get("/api/me", auth=("bob", USERS["bob"])).status_code == 429
        assert _password(http, "bob", USERS["bob"]).status_code == 429

    # and toward her account's own limit of wrong codes (10 in 15 minutes, from any address):
    # 3 above (a wrong one, two replays) + 5 + 2 here; then not even the right code is checked
    with client(srv, "127.0.0.5") as http:
        assert _password(http, "alice", pw).url.path == "/login/code"
        assert [_send_code(http, "999999").status_code for _ in range(2)] == [401, 401]
        blocked = _send_code(http, _code(secret, +1))
        assert blocked.status_code == 429 and "Zu viele" in blocked.text
        assert "hb_session" not in http.cookies

    # the secret is in the store only, never in the server's log
    assert secret not in srv.log_path.read_text(encoding="utf-8", errors="replace")
