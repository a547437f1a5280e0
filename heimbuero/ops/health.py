"""Liveness and readiness for load balancers and monitoring (`/healthz`, `/readyz`).

Ready means: the store takes a write lock within a second (registrations and messages wait
for commits, so a store that cannot write cannot serve), and every configured SIP listening
socket is open."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

STORE_TIMEOUT = 1.0  # seconds the store probe may wait for the write lock


def probe_store(url: str, engine: Engine | None = None, timeout: float = STORE_TIMEOUT) -> None:
    """Raise OSError/sqlite3.Error/SQLAlchemyError when the store cannot be written now.

    SQLite: a connection of its own takes the write lock (BEGIN IMMEDIATE) and gives it back,
    so a database locked by another writer, gone, or on a read-only disk counts as down.
    PostgreSQL: in a transaction of its own that is rolled back, the lock a registration's
    write takes on the bindings table (ROW EXCLUSIVE) within the timeout, on a server that is
    not a read-only standby."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database)
        if not path.is_file():
            raise OSError(f"database file {path} is missing")
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=timeout)
        try:
            conn.isolation_level = None
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    if engine is None:
        raise OSError("no engine to probe")
    from sqlalchemy.exc import OperationalError

    ms = int(timeout * 1000)
    with engine.connect() as c, c.begin() as txn:  # (an engine of its own, see Readiness)
        c.execute(text(f"SET LOCAL lock_timeout = {ms}"))
        c.execute(text(f"SET LOCAL statement_timeout = {ms * 2}"))
        if c.execute(text("SELECT pg_is_in_recovery()")).scalar():
            raise OSError("the database is a read-only standby")
        try:
            c.execute(text("LOCK TABLE bindings IN ROW EXCLUSIVE MODE"))
        except OperationalError as exc:
            if "lock timeout" in str(exc):
                raise OSError("database is locked by another writer") from None
            raise
        finally:
            txn.rollback()


@dataclass
class Readiness:
    """What /readyz checks."""

    store_url: str
    engine: Engine | None
    listen: Sequence[tuple[str, str, int]]  # configured SIP sockets
    bound: Callable[[], list[tuple[str, str, int]]]  # the ones open now
    serving: Callable[[], bool] = lambda: True  # False while starting and stopping

    async def check(self) -> list[str]:
        """Reasons the server is not ready; empty when it is."""
        if self.engine is None and make_url(self.store_url).get_backend_name() != "sqlite":
            from sqlalchemy import create_engine

            self.engine = create_engine(self.store_url, pool_size=1, pool_pre_ping=True)
        reasons: list[str] = []
        if not self.serving():
            reasons.append("server: starting or stopping")
        open_now = set(self.bound())
        for want in self.listen:
            if want not in open_now:
                host = f"[{want[1]}]" if ":" in want[1] else want[1]
                reasons.append(f"sip: {want[0]}:{host}:{want[2]} is not listening")
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.run_in_executor(None, probe_store, self.store_url, self.engine),
                STORE_TIMEOUT + 1.0,
            )
        except TimeoutError:
            reasons.append("store: no answer within 2 s")
        except Exception as exc:  # noqa: BLE001 - any failure is a reason to report
            reasons.append(f"store: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return reasons
