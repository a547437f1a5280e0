"""HTTP API answers an operator meets first (FastAPI TestClient, real SQLite store, demo
office)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.office.demo import seed_demo
from heimbuero.store import Store
from heimbuero.web.app import WebContext, create_app

REALM = "office.example"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, REALM)
    ctx = WebContext(store, lambda: {"domain": REALM, "registrations": 0}, lambda: [])
    with TestClient(create_app(ctx)) as client:
        yield client, passwords
    store.close()


def test_no_login_wrong_password_and_wrong_token_are_told_apart(office: Any) -> None:
    http, _ = office
    none = http.get("/api/clients")
    assert (none.status_code, none.json()["detail"]) == (401, "login required")
    token = http.get("/api/clients", headers={"Authorization": "Bearer hb_not-a-token"})
    assert (token.status_code, token.json()["detail"]) == (401, "invalid token")
    basic = http.get("/api/clients", auth=("anna", "wrong-password-1"))
    assert (basic.status_code, basic.json()["detail"]) == (401, "invalid user name or password")
    for r in (none, token, basic):
        assert r.headers["www-authenticate"].startswith("Basic")
