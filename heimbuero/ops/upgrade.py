"""Schema upgrades at start: when a migration is pending on an existing database, a backup
of the data directory is written first (`DATA/backups/pre-upgrade-REV-TIME.tar`, the format
of `heimbuero backup`; on PostgreSQL a pg_dump inside it), then the migrations run. A new
database is created without one. When the backup cannot be written, nothing is upgraded."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from heimbuero.config import Config
from heimbuero.store import Store

log = logging.getLogger("heimbuero.ops")

BACKUP_DIR = "backups"


def current_revision(db_url: str) -> str | None:
    """The schema revision of the database (None: no schema yet)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade_with_backup(cfg: Config, store: Store) -> Path | None:
    """Bring the schema to the newest revision; returns the backup written first, if any."""
    if store.schema_is_current():
        return None
    revision = current_revision(cfg.db_url)
    written: Path | None = None
    if revision is not None and (cfg.db_path.is_file() or not cfg.uses_sqlite_file):
        from heimbuero.ops.backup import backup

        folder = cfg.data_dir / BACKUP_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        written = folder / f"pre-upgrade-{revision}-{stamp}.tar"
        backup(cfg.data_dir, written, inside_ok=True)
        log.warning(
            "database schema %s is older than this version of heimbuero: backup written to %s "
            "before the upgrade (restore it with 'heimbuero restore %s --data NEWDIR')",
            revision, written, written,
        )  # fmt: skip
    store.upgrade()
    if revision is not None:
        log.warning(
            "database schema upgraded from %s to %s", revision, current_revision(cfg.db_url)
        )
    return written
