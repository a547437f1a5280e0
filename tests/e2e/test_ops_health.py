"""Health probes of `heimbuero serve --http`: /healthz (alive) and /readyz (store takes
writes, every SIP socket listens; 503 with the reasons otherwise)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from .harness import Server, wait_until

pytestmark = pytest.mark.e2e


def test_readyz_reports_a_locked_store_and_recovers(
    server_factory: Callable[..., Server], server_database_url: str | None
) -> None:
    """On the SQLite file and on PostgreSQL."""
    srv = server_factory(http=True, database_url=server_database_url)
    with httpx.Client(base_url=srv.http_url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ok"}
        # Another writer holds the database: registrations could not be committed.
        if srv.database_url:  # PostgreSQL: a lock on the bindings table that writes wait for
            import psycopg

            from heimbuero.ops.backup import libpq_url

            db: Any = psycopg.connect(libpq_url(srv.database_url), autocommit=True)
            db.execute("BEGIN")
            db.execute("LOCK TABLE bindings IN EXCLUSIVE MODE")
        else:
            db = sqlite3.connect(srv.data_dir / "heimbuero.db", timeout=5)
            db.isolation_level = None
            db.execute("BEGIN IMMEDIATE")
        try:
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
