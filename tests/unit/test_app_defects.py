"""Rules that had diverged between the HTTP API, the command line and call routing, now
decided once in the application layer: each through every path a user takes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from test_api import _auth, office  # noqa: F401  (the fixture of the API tests, same folder)

from heimbuero.office.directory import DirectoryError, validate_e164
from heimbuero.office.routing import normalise_number


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEIMBUERO_DATA"}
    return subprocess.run([sys.executable, "-m", "heimbuero", *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


# -- numbers: what is stored is what routing finds -------------------------------------------


@pytest.mark.parametrize(
    "written",
    ["+49891234567", "+49 89 1234567", "0049 89 1234567", "0049-89-123 45 67", "+49 (89) 1234567",
     "+49.89.1234567", "089 1234567", "089/1234567", "(0 89) 12 34 56-7"],
)  # fmt: skip
def test_number_checks_and_routing_agree(written: str) -> None:
    """Every way of writing the number is stored as the E.164 number routing looks up."""
    assert validate_e164(written) == normalise_number("+49891234567") == "+49891234567"


@pytest.mark.parametrize("written", ["49891234567x", "+049891234567", "00", "+4", "", "+49 89 x"])
def test_number_checks_refuse_junk(written: str) -> None:
    with pytest.raises(DirectoryError):
        validate_e164(written)


def test_international_prefix_over_http(office: Any) -> None:  # noqa: F811
    http, pw, _store = office
    admin = _auth(pw, "admin")
    r = http.post("/api/numbers", json={"number": "0049 30 5555555", "client": "schulz"},
                  auth=admin)  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json() == {"number": "+49305555555", "client": "schulz", "dictation": False}
    plan = http.get("/api/route/simulate", params={"number": "0049 30 5555555"}, auth=admin)
    assert plan.status_code == 200 and plan.json()["client"] == "schulz"
    r = http.delete("/api/numbers/0049305555555", auth=admin)
    assert r.status_code == 204


def test_international_prefix_on_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = ("--data", str(data))
    assert run("init", *d, "--domain", "office.example", "--demo").returncode == 0
    added = run("number", "add", "0049 30 5555555", "--client", "schulz", *d)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added number +49305555555 to client schulz"
    plan = run("route", "simulate", "0049 30 5555555", "--json", *d)
    assert plan.returncode == 0 and '"client": "schulz"' in plan.stdout, plan.stderr


# -- a registering trunk needs credentials, over HTTP too -----------------------------------


def test_registering_trunk_needs_credentials_over_http(office: Any) -> None:  # noqa: F811
    http, pw, store = office
    admin = _auth(pw, "admin")
    body = {"name": "zweit", "host": "192.0.2.7", "register": True, "username": "u"}
    r = http.post("/api/trunks", json=body, auth=admin)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == "body.register"
    assert "user name and a password" in r.json()["detail"][0]["msg"]
    assert store.get_trunk("zweit") is None
    r = http.patch("/api/trunks/carrier", json={"register": True}, auth=admin)
    assert r.status_code == 422 and store.get_trunk("carrier").register is False
    good = {"register": True, "username": "u", "password": "Carrier-Pass-1"}
    assert http.patch("/api/trunks/carrier", json=good, auth=admin).status_code == 200
    r = http.patch("/api/trunks/carrier", json={"password": None}, auth=admin)
    assert r.status_code == 422 and store.get_trunk("carrier").password == "Carrier-Pass-1"


# -- create_user in one transaction ----------------------------------------------------------


def test_create_user_writes_the_user_once_with_its_fields(office: Any) -> None:  # noqa: F811
    """POST /api/users writes the user with its client, display name and mobile in one
    statement of one transaction: nobody ever reads the user without them."""
    http, pw, store = office
    writes: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        if words[:1] in (["INSERT"], ["UPDATE"]) and "users" in words[1:4]:
            writes.append(words[0])

    event.listen(store._engine, "before_cursor_execute", seen)
    try:
        body = {"name": "lena", "password": "Kiefer-Moos-2026", "role": "employee",
                "client": "mueller", "display_name": "Lena", "mobile": "+491702222222"}  # fmt: skip
        r = http.post("/api/users", json=body, auth=_auth(pw, "admin"))
    finally:
        event.remove(store._engine, "before_cursor_execute", seen)
    assert r.status_code == 201, r.text
    assert writes == ["INSERT"]
    u = store.get_user("lena")
    assert (u.client, u.display_name, u.mobile) == ("mueller", "Lena", "+491702222222")


# -- call records of an unknown client: 404, not an empty list ---------------------------------


def test_calls_of_an_unknown_client_are_not_found(office: Any) -> None:  # noqa: F811
    http, pw, _ = office
    r = http.get("/api/calls", params={"client": "nobody"}, auth=_auth(pw, "admin"))
    assert r.status_code == 404 and "nobody" in r.text, r.text
    r = http.get("/api/calls", params={"client": "mueller"}, auth=_auth(pw, "admin"))
    assert (r.status_code, r.json()) == (200, [])  # a client without calls: an empty list
    # another business stays hidden as before
    r = http.get("/api/calls", params={"client": "schulz"}, auth=_auth(pw, "mueller"))
    assert r.status_code == 404
