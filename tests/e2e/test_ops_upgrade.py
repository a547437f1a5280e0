"""`heimbuero serve` on a data directory whose database has the first schema revision: it
writes a backup, migrates, serves, and the user stored by the old version registers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

from heimbuero.store.db import MIGRATIONS_DIR

from .harness import Server, SipClient

pytestmark = pytest.mark.e2e

DOMAIN = "office.heimbuero.test"
PASSWORD = "Kupfer-Kanne-38"


def test_serve_upgrades_the_oldest_schema_after_a_backup(
    tmp_path: Path, server_database_url: str | None, request: pytest.FixtureRequest
) -> None:
    """On the SQLite file and on PostgreSQL (the backup holds a pg_dump there)."""
    srv = Server(tmp_path, domain=DOMAIN, users={}, database_url=server_database_url)
    srv.prepare()
    if srv.database_url:  # back to an empty database, then the first revision only
        url = srv.database_url
        srv.sql("DROP SCHEMA public CASCADE")
        srv.sql("CREATE SCHEMA public")
    else:
        db = srv.data_dir / "heimbuero.db"
        db.unlink()
        url = f"sqlite:///{db}"
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS_DIR))
    alembic.set_main_option("sqlalchemy.url", url)
    command.upgrade(alembic, "0001")
    engine = sa.create_engine(url)
    users = sa.Table("users", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(users.insert().values(
            name="bob", role="agent", password_hash="x", created_at=datetime.now(UTC),
            ha1_md5=hashlib.md5(f"bob:{DOMAIN}:{PASSWORD}".encode()).hexdigest(),  # noqa: S324
            ha1_sha256=hashlib.sha256(f"bob:{DOMAIN}:{PASSWORD}".encode()).hexdigest(),
        ))  # fmt: skip
    engine.dispose()
    with srv:
        log = srv.log_text()
        assert "database schema 0001 is older than this version of heimbuero" in log
        [saved] = list((srv.data_dir / "backups").glob("pre-upgrade-0001-*.tar"))
        assert f"backup written to {saved}" in log
        with SipClient(srv.port) as phone:
            aor = f"sip:bob@{DOMAIN}"
            _, ok = phone.authenticated_request(
                "REGISTER", f"sip:{DOMAIN}", username="bob", password=PASSWORD,
                from_uri=aor, to_uri=aor,
                headers=[("Contact", f"<sip:bob@127.0.0.1:{phone.local_port}>")],
            )  # fmt: skip
            assert ok.status == 200, ok.summary()
        srv.restart()  # current now: no second backup
        assert len(list((srv.data_dir / "backups").iterdir())) == 1
    into = []
    if srv.database_url:
        into = ["--database-url", request.getfixturevalue("pg_cluster").new_database()]
    res = srv.cli("restore", str(saved), "--data", str(tmp_path / "old"), *into)
    assert res.returncode == 0
    # the backup is the database as it was before the upgrade: revision 0001, with bob
    old_url = into[1] if into else f"sqlite:///{tmp_path / 'old' / 'heimbuero.db'}"
    engine = sa.create_engine(old_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == (
                "0001"
            )
            assert conn.execute(sa.text("SELECT name FROM users")).scalars().all() == ["bob"]
    finally:
        engine.dispose()
