"""Health probes of `heimbuero serve --http`: /healthz (alive) and /readyz (store takes
writes, every SIP socket listens; 503 with the reasons otherwise)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import httpx
import pytest

from .harness import Server, wait_until

pytestmark = pytest.mark.e2e


def test_readyz_reports_a_locked_store_and_recovers(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(http=True)
    with httpx.Client(base_url=srv.http_url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ok"}
        # Another writer holds the database: registrations could not be committed.
        db = sqlite3.connect(srv.data_dir / "heimbuero.db", timeout=5)
        try:
            db.isolation_level = None
            db.execute("BEGIN IMMEDIATE")
            busy = http.get("/readyz")
            assert busy.status_code == 503, busy.text
            body = busy.json()
            assert body["status"] == "unavailable"
            assert any(r.startswith("store: ") and "locked" in r for r in body["reasons"]), body
            assert http.get("/healthz").status_code == 200  # alive all the same
        finally:
            db.execute("ROLLBACK")
            db.close()
        wait_until(lambda: http.get("/readyz").status_code == 200, 10, what="ready again")
