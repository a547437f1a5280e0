"""Store: migrations, users and SIP bindings against a real SQLite file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from heimbuero.store import BindingRecord, NoSuchUser, SchemaError, Store, UserExists
from heimbuero.store.db import MIGRATIONS_DIR, upsert_bindings_statement
from heimbuero.store.models import Base

HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()  # the newest migration

HA1_MD5 = "0" * 32
HA1_SHA256 = "1" * 64


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "heimbuero.db"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """An upgraded store on SQLite and on PostgreSQL (tests/conftest.py: db_url)."""
    s = Store(db_url)
    s.upgrade()
    yield s
    s.close()


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[Store]:
    """SQLite only: for the tests of the SQLite file itself."""
    s = Store(f"sqlite:///{db_path}")
    s.upgrade()
    yield s
    s.close()


def _sql(store: Store, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(store.url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _rows(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql).fetchall()


def _binding(aor: str, n: int, expires_at: float, **kw: object) -> BindingRecord:
    b = BindingRecord(
        aor=aor,
        contact=f"<sip:{aor}@192.0.2.1:{5000 + n};transport=udp>",
        received=f"udp:192.0.2.1:{5000 + n}",
        expires_at=expires_at,
        call_id=f"call-{aor}-{n}",
        cseq=n,
    )
    return replace(b, **kw)  # type: ignore[arg-type]


# -- schema ------------------------------------------------------------------------------------


def test_upgrade_creates_tables_and_version(db_path: Path) -> None:
    s = Store(f"sqlite:///{db_path}")
    assert not s.schema_is_current()
    s.upgrade()
    assert s.schema_is_current()
    s.upgrade()  # a second run is a no-op
    assert s.schema_is_current()
    s.close()
    tables = {r[0] for r in _rows(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "bindings", "alembic_version"} <= tables
    assert _rows(db_path, "SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_migrations_match_models(store: Store) -> None:
    engine = create_engine(store.url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_sqlite_uses_wal_and_foreign_keys(sqlite_store: Store, db_path: Path) -> None:
    assert _rows(db_path, "PRAGMA journal_mode") == [("wal",)]
    with sqlite_store._engine.connect() as conn:  # per-connection setting: ask a pooled connection
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_unknown_revision_is_a_schema_error(sqlite_store: Store, db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff'")
    assert not sqlite_store.schema_is_current()
    with pytest.raises(SchemaError):
        sqlite_store.upgrade()


# -- users -------------------------------------------------------------------------------------


def test_add_get_list_users(store: Store) -> None:
    before = datetime.now(UTC)
    added = store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "$argon2id$x")
    store.add_user("alice", "admin", HA1_MD5, HA1_SHA256, "$argon2id$y")
    got = store.get_user("bob")
    assert got == added
    assert got is not None and got.role == "agent" and got.password_hash == "$argon2id$x"
    assert got.created_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= got.created_at <= datetime.now(UTC)
    assert [u.name for u in store.list_users()] == ["alice", "bob"]
    assert store.get_user("carol") is None


def test_add_duplicate_user_raises(store: Store) -> None:
    store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "h")
    with pytest.raises(UserExists, match="bob"):
        store.add_user("bob", "client", HA1_MD5, HA1_SHA256, "h")
    assert len(store.list_users()) == 1


def test_set_password(store: Store) -> None:
    store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "old")
    store.set_password("bob", "a" * 32, "b" * 64, "new")
    user = store.get_user("bob")
    assert user is not None
    assert (user.ha1_md5, user.ha1_sha256, user.password_hash) == ("a" * 32, "b" * 64, "new")
    with pytest.raises(NoSuchUser):
        store.set_password("carol", "a" * 32, "b" * 64, "new")


def test_remove_user_deletes_its_bindings(store: Store) -> None:
    store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "h")
    store.add_user("alice", "agent", HA1_MD5, HA1_SHA256, "h")
    later = time.time() + 600
    store.save_bindings([_binding("bob", 1, later), _binding("alice", 2, later)], [])
    assert store.remove_user("bob") is True
    assert store.remove_user("bob") is False
    assert store.get_user("bob") is None
    assert _sql(store, "SELECT aor FROM bindings") == [("alice",)]


# -- bindings ----------------------------------------------------------------------------------


def test_bindings_roundtrip_keeps_every_field(store: Store) -> None:
    store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "h")
    now = time.time()
    full = _binding(
        "bob",
        1,
        now + 3600.5,
        connection_id="tcp-7",
        instance='"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
        reg_id=1,
        q=0.7,
        user_agent="Softphone/1.0",
        path="<sip:edge.example;lr>",
    )
    bare = _binding("bob", 2, now + 60)
    store.save_bindings([full, bare], [])
    assert store.load_bindings(now) == [full, bare]


def test_load_bindings_drops_and_deletes_expired(store: Store) -> None:
    store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "h")
    now = 1_700_000_000.0
    live = _binding("bob", 1, now + 10)
    store.save_bindings([live, _binding("bob", 2, now - 1), _binding("bob", 3, now)], [])
    assert store.count_bindings(now) == {"bob": 1}
    assert _sql(store, "SELECT count(*) FROM bindings") == [(3,)]  # counting changes nothing
    assert store.load_bindings(now) == [live]
    assert _sql(store, "SELECT cseq FROM bindings") == [(1,)]


def test_load_bindings_drops_bindings_of_unknown_users(store: Store) -> None:
    store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "h")
    now = time.time()
    mine = _binding("bob", 1, now + 100)
    store.save_bindings([mine, _binding("ghost", 2, now + 100)], [])
    assert store.load_bindings(now) == [mine]
    assert _sql(store, "SELECT aor FROM bindings") == [("bob",)]


def test_save_bindings_upserts_and_deletes(store: Store) -> None:
    store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "h")
    now = time.time()
    a, b, c = (_binding("bob", n, now + 100) for n in (1, 2, 3))
    store.save_bindings([a, b, c], [])
    refreshed = replace(a, expires_at=now + 900, cseq=42, received="tcp:192.0.2.9:6000", q=None)
    store.save_bindings([refreshed], [(b.aor, b.contact), ("bob", "<sip:never-stored>")])
    assert store.load_bindings(now) == [refreshed, c]
    assert _sql(store, "SELECT count(*) FROM bindings") == [(2,)]


def test_save_bindings_last_upsert_of_a_pair_wins_and_upsert_beats_delete(store: Store) -> None:
    store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "h")
    now = time.time()
    first = _binding("bob", 1, now + 100)
    second = replace(first, cseq=2)
    store.save_bindings([first, second], [(first.aor, first.contact)])
    assert store.load_bindings(now) == [second]


def test_save_bindings_is_one_transaction(store: Store) -> None:
    store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "h")
    now = time.time()
    keep = _binding("bob", 1, now + 100)
    store.save_bindings([keep], [])
    broken = replace(_binding("bob", 2, now + 100), call_id=None)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        store.save_bindings([_binding("bob", 3, now + 100), broken], [(keep.aor, keep.contact)])
    assert store.load_bindings(now) == [keep]  # neither the delete nor the good upsert happened


def test_save_5000_bindings_is_fast(store: Store) -> None:
    store.add_user("bob", "agent", HA1_MD5, HA1_SHA256, "h")
    now = time.time()
    batch = [_binding("bob", n, now + 3600) for n in range(5000)]
    start = time.perf_counter()
    store.save_bindings(batch, [])
    store.save_bindings([replace(b, cseq=b.cseq + 1) for b in batch], [])
    elapsed = time.perf_counter() - start
    loaded = store.load_bindings(now)
    assert len(loaded) == 5000
    assert all(b.cseq == int(b.call_id.rsplit("-", 1)[1]) + 1 for b in loaded)
    assert elapsed < 5.0, f"two batches of 5000 upserts took {elapsed:.2f}s"


def test_upsert_statement_for_postgresql() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(upsert_bindings_statement("postgresql").compile(dialect=dialect))
    assert "ON CONFLICT (aor, contact) DO UPDATE SET" in sql
    assert "expires_at = excluded.expires_at" in sql
