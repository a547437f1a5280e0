"""The console's second factor (FastAPI TestClient, real SQLite store, demo office): enrolment
with the password and a first code, the login's code step, wrong and replayed codes, the
failure limits, switching it off, and the JSON API's refusal of a password alone."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heimbuero.app import Actor
from heimbuero.app.secondfactor import SecondFactor
from heimbuero.domain import totp
from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.store.models import UserTotpRow
from heimbuero.web.app import WebContext, create_app

REALM = "office.example"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str], Store]]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, REALM)

    def app() -> Any:
        ctx = WebContext(store, lambda: {"domain": REALM, "registrations": 0}, lambda: [])
        return create_app(ctx)

    yield app, passwords, store
    store.close()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _login(http: TestClient, name: str, password: str) -> Any:
    page = http.get("/")
    return http.post(
        "/login",
        data={"csrf": _csrf(page.text), "name": name, "password": password},
        follow_redirects=False,
    )


def _code(secret: str, delta: int = 0) -> str:
    return totp.hotp(totp.secret_bytes(secret), totp.step_of(time.time()) + delta)


def _enrol(http: TestClient, password: str) -> tuple[str, str]:
    """Switch the second factor on: (the secret, the code that confirmed it)."""
    page = http.get("/totp")
    assert "Ausgeschaltet" in page.text
    r = http.post("/totp/start", data={"csrf": _csrf(page.text), "password": password})
    m = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', r.text)
    assert r.status_code == 200 and m and "<svg" in r.text and "otpauth://totp/" in r.text
    secret = m.group(1)
    first = _code(secret, -1)
    r = http.post("/totp/confirm", data={"csrf": _csrf(r.text), "code": first})
    assert r.status_code == 200 and "ist eingeschaltet" in r.text
    return secret, first


def test_enrol_then_the_login_needs_a_fresh_code(office: Any) -> None:
    app, pw, store = office
    with TestClient(app()) as http:
        _login(http, "anna", pw["anna"])
        page = http.get("/totp")
        wrong = http.post("/totp/start", data={"csrf": _csrf(page.text), "password": "nope"})
        assert wrong.status_code == 403 and "totp-secret" not in wrong.text
        secret, first = _enrol(http, pw["anna"])
        http.post("/logout", data={"csrf": _csrf(http.get("/console").text)})

        r = _login(http, "anna", pw["anna"])
        assert r.status_code == 303 and r.headers["location"] == "/login/code"
        assert "hb_session" not in r.headers.get("set-cookie", "")
        assert "hb_code=" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
        # half logged in: no page of the console
        for path in ("/console", "/password", "/totp"):
            assert http.get(path, follow_redirects=False).headers["location"] == "/"
        form = http.get("/login/code")
        assert form.status_code == 200 and 'name="code"' in form.text
        bad = http.post("/login/code", data={"csrf": _csrf(form.text), "code": "12345"})
        assert bad.status_code == 401 and "falsch" in bad.text
        # the code that confirmed the enrolment is used up
        used = http.post("/login/code", data={"csrf": _csrf(form.text), "code": first})
        assert used.status_code == 401
        code = _code(secret, +1)  # a step later than the first code, whenever this runs
        ok = http.post(
            "/login/code", data={"csrf": _csrf(form.text), "code": code}, follow_redirects=False
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/console"
        assert "hb_session=" in ok.headers["set-cookie"]
        assert http.get("/console").status_code == 200

    # the same code once more, in another browser: refused
    with TestClient(app()) as other:
        _login(other, "anna", pw["anna"])
        form = other.get("/login/code")
        again = other.post("/login/code", data={"csrf": _csrf(form.text), "code": code})
        assert again.status_code == 401
        # the JSON API takes no password alone from her; a token still works
        r = other.get("/api/me", auth=("anna", pw["anna"]))
        assert r.status_code == 401 and "second factor" in r.json()["detail"]
        _, token = store.create_token("anna", "t")
        assert other.get("/api/me", headers={"Authorization": f"Bearer {token}"}).is_success


def test_wrong_codes_end_the_login_and_count_toward_the_limits(office: Any) -> None:
    app, pw, store = office
    SecondFactor(store, lambda: REALM).assign(Actor.local_admin(), "anna")
    with TestClient(app()) as http:
        _login(http, "anna", pw["anna"])
        csrf = _csrf(http.get("/login/code").text)
        statuses = [
            http.post("/login/code", data={"csrf": csrf, "code": "000000"}).status_code
            for _ in range(5)
        ]
        assert statuses == [401] * 5
        # five wrong codes: the password is asked again
        assert http.get("/login/code", follow_redirects=False).headers["location"] == "/"
        # 5 wrong codes + 5 wrong passwords = the address's 10 failures a minute
        for _ in range(5):
            _login(http, "anna", "wrong-password-1")
        assert _login(http, "ben", pw["ben"]).status_code == 429


def test_code_form_needs_its_token_and_the_login_cookie(office: Any) -> None:
    app, pw, store = office
    given = SecondFactor(store, lambda: REALM).assign(Actor.local_admin(), "anna")
    with TestClient(app()) as http:
        r = http.post("/login/code", data={"csrf": "x", "code": _code(given.secret)})
        assert r.status_code == 401 and "abgelaufen" in r.text
        _login(http, "anna", pw["anna"])
        r = http.post("/login/code", data={"csrf": "x" * 43, "code": _code(given.secret)})
        assert r.status_code == 403 and "hb_session" not in r.headers.get("set-cookie", "")


def test_switching_off_needs_password_and_code(office: Any) -> None:
    app, pw, store = office
    with TestClient(app()) as http:
        _login(http, "mueller", pw["mueller"])  # a client user may have one too
        secret, _ = _enrol(http, pw["mueller"])
        csrf = _csrf(http.get("/totp").text)
        r = http.post("/totp/disable", data={"csrf": csrf, "password": pw["mueller"], "code": "1"})
        assert r.status_code == 403 and "totp-state" in r.text
        r = http.post("/totp/disable", data={"csrf": csrf, "password": "x", "code": _code(secret)})
        assert r.status_code == 403
        r = http.post(
            "/totp/disable", data={"csrf": csrf, "password": pw["mueller"], "code": _code(secret)}
        )
        assert r.status_code == 200 and "ist ausgeschaltet" in r.text
        assert not SecondFactor(store, lambda: REALM).enabled("mueller")


def test_admins_reset_a_second_factor_over_the_api(office: Any) -> None:
    app, pw, store = office
    sf = SecondFactor(store, lambda: REALM)
    sf.assign(Actor.local_admin(), "anna")
    with TestClient(app()) as http:
        assert http.delete("/api/users/anna/totp", auth=("ben", pw["ben"])).status_code == 403
        assert sf.enabled("anna")
        assert http.delete("/api/users/anna/totp", auth=("admin", pw["admin"])).status_code == 204
        assert not sf.enabled("anna")
        # the password alone logs her in again
        assert _login(http, "anna", pw["anna"]).headers["location"] == "/console"


def test_wrong_codes_of_an_account_are_limited_from_any_address() -> None:
    from heimbuero.web.guard import CODE_FAILURES_PER_ACCOUNT, LoginGate

    gate = LoginGate(lambda _n, _p: None, lambda _t: None)
    for i in range(CODE_FAILURES_PER_ACCOUNT):
        assert not gate.code_blocked(f"192.0.2.{i}", "anna")
        gate.code_failed(f"192.0.2.{i}", "anna")
    assert gate.code_blocked("198.51.100.1", "anna")  # a fresh address: still refused
    assert not gate.code_blocked("198.51.100.1", "ben")
    assert not gate.by_account.blocked("anna", time.monotonic())  # her password logins: not yet
    gate.pool.shutdown()


def test_admins_reset_a_second_factor_in_the_console(office: Any) -> None:
    app, pw, store = office
    sf = SecondFactor(store, lambda: REALM)
    sf.assign(Actor.local_admin(), "anna")
    with TestClient(app()) as http:
        _login(http, "admin", pw["admin"])
        page = http.get("/admin")
        assert "/admin/totp/anna/reset" in page.text
        bad = http.post("/admin/totp/anna/reset", data={"csrf": "x"})
        assert bad.status_code == 403 and sf.enabled("anna")
        r = http.post("/admin/totp/anna/reset", data={"csrf": _csrf(page.text)})
        assert r.status_code == 200 and "ist zurückgesetzt" in r.text and not sf.enabled("anna")
        assert "Niemand meldet sich mit einem Code an." in r.text
    sf.assign(Actor.local_admin(), "mueller")
    with TestClient(app()) as http:  # another role: the page does not exist for him
        _login(http, "anna", pw["anna"])
        csrf = _csrf(http.get("/console").text)
        assert http.post("/admin/totp/mueller/reset", data={"csrf": csrf}).status_code == 404
        assert sf.enabled("mueller")


def test_switching_on_ends_the_other_sessions(office: Any) -> None:
    app, pw, _ = office
    with TestClient(app()) as other, TestClient(app()) as http:
        _login(other, "anna", pw["anna"])
        assert other.get("/console").status_code == 200
        _login(http, "anna", pw["anna"])
        _enrol(http, pw["anna"])
        assert http.get("/console").status_code == 200  # the one that switched it on stays
        # the other was opened with the password alone
        assert other.get("/console", follow_redirects=False).headers["location"] == "/"


CODE = re.compile(r"<li><code>([a-z2-9]{4}-[a-z2-9]{4})</code></li>")


def _code_login(http: TestClient, password: str, code: str) -> Any:
    _login(http, "anna", password)
    form = http.get("/login/code")
    return http.post("/login/code", data={"csrf": _csrf(form.text), "code": code},
                     follow_redirects=False)  # fmt: skip


def test_backup_codes_are_shown_once_log_in_once_each_and_are_renewed(office: Any) -> None:
    app, pw, store = office
    with TestClient(app()) as http:
        _login(http, "anna", pw["anna"])
        page = http.get("/totp")
        r = http.post("/totp/start", data={"csrf": _csrf(page.text), "password": pw["anna"]})
        secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', r.text).group(1)  # type: ignore[union-attr]
        r = http.post("/totp/confirm", data={"csrf": _csrf(r.text), "code": _code(secret, -1)})
        codes = CODE.findall(r.text)
        assert r.status_code == 200 and len(set(codes)) == 10, r.text
        assert "Unbenutzte Ersatzcodes: 10" in r.text
        assert not CODE.findall(http.get("/totp").text)  # shown once
        # only their hashes are stored
        with store.unit_of_work(write=False) as uow:
            row = uow.session.scalar(select(UserTotpRow.backup_codes)) or ""
        assert all(c.replace("-", "") not in row for c in codes) and len(row.split()) == 10
        http.post("/logout", data={"csrf": _csrf(http.get("/totp").text)})

        # a backup code logs in once, however it is typed; the page says what is left
        ok = _code_login(http, pw["anna"], " " + codes[0].upper().replace("-", " ") + " ")
        assert ok.status_code == 303 and ok.headers["location"] == "/totp?backup_left=9"
        page = http.get(ok.headers["location"])
        assert "mit einem Ersatzcode angemeldet" in page.text
        assert "Unbenutzte Ersatzcodes: 9" in page.text
        http.post("/logout", data={"csrf": _csrf(page.text)})
        assert _code_login(http, pw["anna"], codes[0]).status_code == 401  # used up
        assert _code_login(http, pw["anna"], "abcd-efgh").status_code == 401  # not one of hers

        # new codes need the app's code (not a backup code); the old ones are void then
        assert _code_login(http, pw["anna"], codes[1]).status_code == 303
        form = {"csrf": _csrf(http.get("/totp").text), "password": pw["anna"]}
        r = http.post("/totp/backup", data={**form, "code": codes[2]})
        assert r.status_code == 403 and not CODE.findall(r.text)
        r = http.post("/totp/backup", data={**form, "code": _code(secret, +1)})
        renewed = CODE.findall(r.text)
        assert r.status_code == 200 and len(set(renewed)) == 10 and not set(renewed) & set(codes)
        http.post("/logout", data={"csrf": _csrf(r.text)})
        assert _code_login(http, pw["anna"], codes[2]).status_code == 401
        assert _code_login(http, pw["anna"], renewed[0]).status_code == 303

        # a lost phone: switched off with another backup code
        form = {"csrf": _csrf(http.get("/totp").text), "password": pw["anna"]}
        r = http.post("/totp/disable", data={**form, "code": renewed[1]})
        assert r.status_code == 200 and "ist ausgeschaltet" in r.text


def test_backup_code_shape() -> None:
    codes = totp.new_backup_codes()
    assert len(set(codes)) == 10 and all(re.fullmatch(r"[a-z2-9]{4}-[a-z2-9]{4}", c) for c in codes)
    h = totp.backup_hash(codes[0])
    assert h is not None and totp.backup_hash(codes[0].upper().replace("-", "")) == h
    for bad in ("123456", "abcd-efg", "abcd-efgl", "abcd-efgh-i", ""):  # l: not in the alphabet
        assert totp.backup_hash(bad) is None
