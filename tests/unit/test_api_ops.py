"""HTTP API answers an operator meets first (FastAPI TestClient, real SQLite store, demo
office)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heimbuero.config import Config, own_sip_address
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


def test_trunk_at_the_servers_own_address_is_refused(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    store.upgrade()
    passwords = seed_demo(store, REALM)
    admin = ("admin", passwords["admin"])
    cfg = Config(tmp_path, REALM)  # listens on udp and tcp 127.0.0.1:5060

    def own(host: str, port: int) -> str | None:
        found = own_sip_address(cfg, host, port)
        return None if found is None else str(found)

    ctx = WebContext(store, lambda: {"domain": REALM}, lambda: [], own_sip_address=own)
    try:
        with TestClient(create_app(ctx)) as http:
            before = http.get("/api/trunks", auth=admin).json()
            r = http.post("/api/trunks", json={"name": "loop", "host": "127.0.0.1"}, auth=admin)
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["field"] == "body.host"
            assert "own SIP address udp:127.0.0.1:5060" in r.json()["detail"][0]["msg"]
            for patch in ({"host": "localhost", "port": 5060}, {"host": REALM, "port": 5060}):
                r = http.patch("/api/trunks/carrier", json=patch, auth=admin)
                assert r.status_code == 422, (patch, r.text)
            assert http.get("/api/trunks", auth=admin).json() == before
            r = http.patch(
                "/api/trunks/carrier", json={"host": "127.0.0.1", "port": 5070}, auth=admin
            )
            assert r.status_code == 200, r.text
            r = http.patch("/api/trunks/carrier", json={"port": 5060}, auth=admin)
            assert r.status_code == 422, r.text  # the stored host with the new port
    finally:
        store.close()
