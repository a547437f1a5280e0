"""The repository: the only module that talks SQL; callers get plain dataclasses back."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, bindparam, create_engine, delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from heimbuero.store.models import Binding, User

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Binding columns a re-registration overwrites (everything but the key and the row id).
_BINDING_FIELDS = (
    "aor",
    "contact",
    "received",
    "connection_id",
    "instance",
    "reg_id",
    "q",
    "expires_at",
    "call_id",
    "cseq",
    "user_agent",
    "path",
)
_BINDING_UPDATE_FIELDS = tuple(f for f in _BINDING_FIELDS if f not in ("aor", "contact"))


class StoreError(Exception):
    """A store operation failed; the message says why in one line."""


class UserExists(StoreError):
    """A user with that name is already stored."""

    def __init__(self, name: str) -> None:
        super().__init__(f"user {name!r} already exists")
        self.name = name


class NoSuchUser(StoreError):
    """No user with that name is stored."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no such user: {name!r}")
        self.name = name


class SchemaError(StoreError):
    """The database schema cannot be brought to (or is not at) the version this code expects."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A stored user as callers see it."""

    id: int
    name: str
    role: str
    ha1_md5: str
    ha1_sha256: str
    password_hash: str
    created_at: datetime  # timezone-aware, UTC


@dataclass(frozen=True, slots=True)
class BindingRecord:
    """A stored SIP registration: one Contact of an address of record and where it came from."""

    aor: str
    contact: str
    received: str  # "transport:host:port" the REGISTER came from
    expires_at: float  # epoch seconds
    call_id: str
    cseq: int
    connection_id: str | None = None
    instance: str | None = None  # +sip.instance
    reg_id: int | None = None
    q: float | None = None
    user_agent: str | None = None
    path: str | None = None


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _user_record(row: User) -> UserRecord:
    return UserRecord(
        id=row.id,
        name=row.name,
        role=row.role,
        ha1_md5=row.ha1_md5,
        ha1_sha256=row.ha1_sha256,
        password_hash=row.password_hash,
        created_at=_utc(row.created_at),
    )


def _binding_row(b: BindingRecord) -> dict[str, Any]:
    return {f: getattr(b, f) for f in _BINDING_FIELDS}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every new SQLite connection: write-ahead log, enforced foreign keys, wait on locks."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


class Store:
    """Users and SIP bindings in an SQL database (SQLite by default, PostgreSQL works too)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine = create_engine(url)
        self._dialect = self._engine.dialect.name
        if self._dialect == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)
        elif self._dialect != "postgresql":
            raise StoreError(f"unsupported database {self._dialect!r}: use SQLite or PostgreSQL")

    # -- schema -----------------------------------------------------------------------------

    def _alembic_config(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def upgrade(self) -> None:
        """Apply every pending migration; does nothing when the schema is current."""
        cfg = self._alembic_config()
        try:
            with self._engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except CommandError as exc:
            raise SchemaError(f"cannot migrate the database: {exc}") from None

    def schema_is_current(self) -> bool:
        """True when the database is at the newest migration this code ships."""
        heads = set(ScriptDirectory.from_config(self._alembic_config()).get_heads())
        with self._engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
        return current == heads

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    # -- users ------------------------------------------------------------------------------

    def add_user(
        self, name: str, role: str, ha1_md5: str, ha1_sha256: str, password_hash: str
    ) -> UserRecord:
        """Store a new user; raise UserExists when the name is taken."""
        with Session(self._engine) as session:
            if session.scalar(select(User.id).where(User.name == name)) is not None:
                raise UserExists(name)
            row = User(
                name=name,
                role=role,
                ha1_md5=ha1_md5,
                ha1_sha256=ha1_sha256,
                password_hash=password_hash,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # another process added the same name meanwhile
                raise UserExists(name) from None
            return _user_record(row)

    def set_password(self, name: str, ha1_md5: str, ha1_sha256: str, password_hash: str) -> None:
        """Replace a user's password hashes; raise NoSuchUser when there is no such user."""
        with Session(self._engine) as session:
            row = session.scalar(select(User).where(User.name == name))
            if row is None:
                raise NoSuchUser(name)
            row.ha1_md5 = ha1_md5
            row.ha1_sha256 = ha1_sha256
            row.password_hash = password_hash
            session.commit()

    def get_user(self, name: str) -> UserRecord | None:
        """The user with that name, or None."""
        with Session(self._engine) as session:
            row = session.scalar(select(User).where(User.name == name))
            return None if row is None else _user_record(row)

    def list_users(self) -> list[UserRecord]:
        """Every user, ordered by name."""
        with Session(self._engine) as session:
            return [_user_record(r) for r in session.scalars(select(User).order_by(User.name))]

    def remove_user(self, name: str) -> bool:
        """Delete a user and its bindings; False when there was no such user."""
        with self._engine.begin() as conn:
            gone = conn.execute(delete(User).where(User.name == name)).rowcount
            conn.execute(delete(Binding).where(Binding.aor == name))
        return bool(gone)

    # -- bindings ---------------------------------------------------------------------------

    def load_bindings(self, now: float) -> list[BindingRecord]:
        """Bindings valid at `now` whose user exists; deletes the expired and orphaned rows."""
        with self._engine.begin() as conn:
            conn.execute(delete(Binding).where(Binding.expires_at <= now))
            conn.execute(delete(Binding).where(Binding.aor.not_in(select(User.name))))
            rows = conn.execute(
                select(*(getattr(Binding, f) for f in _BINDING_FIELDS)).order_by(
                    Binding.aor, Binding.id
                )
            )
            return [BindingRecord(**row._asdict()) for row in rows]

    def count_bindings(self, now: float) -> dict[str, int]:
        """Number of bindings still valid at `now`, per address of record (read only)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(Binding.aor, func.count())
                .where(Binding.expires_at > now)
                .group_by(Binding.aor)
            )
            return {aor: n for aor, n in rows}

    def save_bindings(
        self, upserts: Iterable[BindingRecord], deletes: Iterable[tuple[str, str]]
    ) -> None:
        """Insert or update bindings and delete (aor, contact) pairs, all in one transaction.

        Deletes run first, so a pair in both lists stays stored; of repeated upserts the last wins.
        """
        rows = list({(b.aor, b.contact): _binding_row(b) for b in upserts}.values())
        keys = [{"k_aor": aor, "k_contact": contact} for aor, contact in deletes]
        with self._engine.begin() as conn:
            if keys:
                conn.execute(
                    delete(Binding).where(
                        Binding.aor == bindparam("k_aor"), Binding.contact == bindparam("k_contact")
                    ),
                    keys,
                )
            if rows:
                conn.execute(upsert_bindings_statement(self._dialect), rows)


def upsert_bindings_statement(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (aor, contact) DO UPDATE for the "sqlite" or "postgresql" dialect."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(Binding)
    return stmt.on_conflict_do_update(
        index_elements=[Binding.aor, Binding.contact],
        set_={f: stmt.excluded[f] for f in _BINDING_UPDATE_FIELDS},
    )
