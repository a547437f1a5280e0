"""The repository: the only module that talks SQL; callers get plain dataclasses back."""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, bindparam, create_engine, delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite

from heimbuero.domain.model import (
    CALL_RESULTS,
    Client,
    Directory,
    Group,
    Number,
    Override,
    Provider,
    Trunk,
)
from heimbuero.domain.rules import RulesParser
from heimbuero.store.errors import (
    AlreadyExists,
    InUse,
    NoSuchUser,
    NotFound,
    SchemaError,
    StoreError,
    UserExists,
)
from heimbuero.store.files import DownloadRecord, FileRecord
from heimbuero.store.messages import ConversationRecord, MessageRecord, apply_message_ops
from heimbuero.store.models import Binding, OfficeRevision, User
from heimbuero.store.records import (
    TOKEN_PREFIX,
    ApiToken,
    CallRecord,
    ClientSlice,
    DirectoryProblem,
    UserRecord,
    steps_from_json,
    steps_to_json,
    token_hash,
)
from heimbuero.store.repositories import UNSET
from heimbuero.store.uow import UnitOfWork

# Names other modules import from here (they moved to errors.py and records.py).
__all__ = [
    "CALL_RESULTS", "TOKEN_PREFIX", "AlreadyExists", "ApiToken", "BindingRecord", "CallRecord",
    "ClientSlice", "DirectoryProblem", "InUse", "NoSuchUser", "NotFound", "SchemaError",
    "Store", "StoreError", "UserExists", "UserRecord", "WriteBatch", "set_default_rules_parser",
    "steps_from_json", "steps_to_json", "token_hash", "upsert_bindings_statement",
]  # fmt: skip

log = logging.getLogger(__name__)

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


_default_rules_parser: RulesParser | None = None


def set_default_rules_parser(parser: RulesParser) -> None:
    """The parser of rules documents a Store uses when none is passed to it. The office layer
    sets its own (office/rules_doc.parse_rules_document) when `heimbuero.office` is imported:
    the store does not import the office."""
    global _default_rules_parser
    _default_rules_parser = parser


@dataclass(frozen=True, slots=True)
class BindingRecord:
    """A stored SIP registration: one Contact of an address of record and where it came from."""

    aor: str
    contact: str
    received: str  # "transport:host:port" the device is reached at (see services/registrar)
    expires_at: float  # epoch seconds
    call_id: str
    cseq: int
    connection_id: str | None = None
    instance: str | None = None  # +sip.instance
    reg_id: int | None = None
    q: float | None = None
    user_agent: str | None = None
    path: str | None = None  # RFC 3327 Path entries of the REGISTER, one a line


@dataclass(slots=True)
class WriteBatch:
    """Changes the server hands to its writer at once: they are committed together."""

    binding_upserts: list[BindingRecord] = field(default_factory=list)
    binding_deletes: list[tuple[str, str]] = field(default_factory=list)
    message_ops: list[tuple[Any, ...]] = field(default_factory=list)


def _binding_row(b: BindingRecord) -> dict[str, Any]:
    return {f: getattr(b, f) for f in _BINDING_FIELDS}


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every new SQLite connection: write-ahead log, enforced foreign keys, wait on locks.

    synchronous=FULL: every commit is on disk (the write-ahead log fsynced) before it returns,
    so what an answer confirmed survives a crash of the process and of the machine. NORMAL would
    survive a killed process but lose the last commits at a power cut. Group commit (the server's
    writer) keeps that to one fsync for many registrations and messages."""
    # lower() for every script (SQLite's own folds ASCII only): the client search (Müller)
    dbapi_connection.create_function("hb_lower", 1, _lower, deterministic=True)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


class Store:
    """Users and SIP bindings in an SQL database (SQLite by default, PostgreSQL works too)."""

    def __init__(self, url: str, *, rules_parser: RulesParser | None = None) -> None:
        self.url = url
        self.rules_parser = rules_parser  # None: the default set by the office layer
        self._engine: Engine = create_engine(url)
        self._dialect = self._engine.dialect.name
        self.directory_problems: list[DirectoryProblem] = []
        if self._dialect == "sqlite":
            event.listen(self._engine, "connect", _sqlite_pragmas)
        elif self._dialect != "postgresql":
            raise StoreError(f"unsupported database {self._dialect!r}: use SQLite or PostgreSQL")
        self._credentials_query = select(
            User.role, User.ha1_md5, User.ha1_sha256, User.sip_compat
        ).where(User.name == bindparam("name"))

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

    def size_bytes(self) -> int | None:
        """Bytes the database takes: SQLite its file with the write-ahead log, PostgreSQL
        `pg_database_size`; None when not known (an in-memory database)."""
        if self._dialect == "sqlite":
            path = self._engine.url.database
            if not path or path == ":memory:":
                return None
            sizes = (Path(path + suffix) for suffix in ("", "-wal"))
            return sum(p.stat().st_size for p in sizes if p.is_file())
        with self._engine.connect() as conn:
            return int(conn.scalar(select(func.pg_database_size(func.current_database()))) or 0)

    # -- units of work ----------------------------------------------------------------------

    def unit_of_work(self, *, write: bool = True) -> UnitOfWork:
        """A unit of work over this database (see store/uow.py): `with store.unit_of_work()
        as uow: ...` commits every change of its repositories, with the office revision bump,
        in ONE transaction, or nothing. `write=False` for reads only."""
        return UnitOfWork(self._engine, write=write)

    def _read(self) -> UnitOfWork:
        return UnitOfWork(self._engine, write=False)

    # -- users ------------------------------------------------------------------------------
    # The methods below delegate to the repositories, each in its own unit of work. New code
    # that changes several things at once opens one unit of work instead.

    def add_user(
        self,
        name: str,
        role: str,
        ha1_md5: str,
        ha1_sha256: str,
        password_hash: str,
        *,
        client: str | None = None,
        display_name: str | None = None,
        mobile: str | None = None,
    ) -> UserRecord:
        """Store a new user with its office fields, in one transaction; raise UserExists when
        the name is taken, NotFound for an unknown client."""
        with self.unit_of_work() as uow:
            return uow.users.add(
                name, role, ha1_md5, ha1_sha256, password_hash,
                client=client, display_name=display_name, mobile=mobile,
            )  # fmt: skip

    def set_password(self, name: str, ha1_md5: str, ha1_sha256: str, password_hash: str) -> None:
        """Replace a user's password hashes; raise NoSuchUser when there is no such user."""
        with self.unit_of_work() as uow:
            uow.users.set_password(name, ha1_md5, ha1_sha256, password_hash)

    def get_user(self, name: str) -> UserRecord | None:
        """The user with that name, or None."""
        with self._read() as uow:
            return uow.users.get(name)

    def list_users(self) -> list[UserRecord]:
        """Every user, ordered by name."""
        with self._read() as uow:
            return uow.users.all()

    def remove_user(self, name: str) -> bool:
        """Delete a user and its bindings; False when there was no such user."""
        with self.unit_of_work() as uow:
            return uow.users.remove(name)

    def user_update(
        self,
        name: str,
        client: str | None = UNSET,
        display_name: str | None = UNSET,
        mobile: str | None = UNSET,
        allow_rfc2069: bool | None = None,
    ) -> UserRecord:
        """Set a user's client, display name, mobile and SIP compatibility switches (arguments
        left out stay unchanged)."""
        with self.unit_of_work() as uow:
            return uow.users.update(name, client, display_name, mobile, allow_rfc2069)

    def office_revision(self) -> int:
        """The configuration's revision: poll it, reload the office when it changes."""
        with self._engine.connect() as conn:
            return int(conn.execute(select(OfficeRevision.revision)).scalar() or 0)

    def get_credentials(self, name: str) -> tuple[str, str, str, bool] | None:
        """(role, ha1_md5, ha1_sha256, allow_rfc2069) of a user: the SIP hot path's lookup,
        without the ORM. The last is the `rfc2069` key of `users.sip_compat`."""
        with self._engine.connect() as conn:
            row = conn.execute(self._credentials_query, {"name": name}).first()
        if row is None:
            return None
        compat = row[3] if isinstance(row[3], dict) else {}
        return (row[0], row[1], row[2], compat.get("rfc2069") is True)

    def credentials_reader(self) -> Callable[[str], tuple[str, str, str, bool] | None]:
        """`get_credentials` for the SIP event loop, about ten times cheaper: with SQLite a
        connection of its own (read only) and one prepared statement, no pool and no SQLAlchemy
        layers (a new user's REGISTER paid ~100 us of the loop's time for them). The connection
        belongs to the first thread that calls; other threads, and PostgreSQL, get
        `get_credentials`."""
        path = self._engine.url.database
        if self._dialect != "sqlite" or not path or path == ":memory:":
            return self.get_credentials
        query = "SELECT role, ha1_md5, ha1_sha256, sip_compat FROM users WHERE name = ?"
        owner: list[Any] = []  # [thread ident, connection] once opened

        def read(name: str) -> tuple[str, str, str, bool] | None:
            if not owner:
                conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
                conn.execute("PRAGMA query_only=ON")
                owner.extend((threading.get_ident(), conn))
            elif owner[0] != threading.get_ident():
                return self.get_credentials(name)
            # all rows: the statement is stepped to its end, so no read transaction stays open
            # to hold back the WAL checkpoints
            rows = owner[1].execute(query, (name,)).fetchall()
            if not rows:
                return None
            row = rows[0]
            compat = json.loads(row[3]) if row[3] else None
            allow = isinstance(compat, dict) and compat.get("rfc2069") is True
            return (row[0], row[1], row[2], allow)

        return read

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
        with self._engine.begin() as conn:
            self._save_bindings(conn, upserts, deletes)

    def write_batch(self, batches: Iterable[WriteBatch]) -> None:
        """Binding changes and messenger operations of many batches, in order, in ONE
        transaction (the group commit of the server's writer)."""
        with self._engine.begin() as conn:
            for b in batches:
                if b.binding_deletes or b.binding_upserts:
                    self._save_bindings(conn, b.binding_upserts, b.binding_deletes)
                if b.message_ops:
                    self._apply_message_ops(conn, b.message_ops)

    def _save_bindings(
        self,
        conn: Connection,
        upserts: Iterable[BindingRecord],
        deletes: Iterable[tuple[str, str]],
    ) -> None:
        rows = list({(b.aor, b.contact): _binding_row(b) for b in upserts}.values())
        keys = [{"k_aor": aor, "k_contact": contact} for aor, contact in deletes]
        if keys:
            conn.execute(
                delete(Binding).where(
                    Binding.aor == bindparam("k_aor"), Binding.contact == bindparam("k_contact")
                ),
                keys,
            )
        if rows and self._dialect == "sqlite":
            # Multi-row statements instead of executemany: the sqlite3 module lets go of the GIL
            # around every row's step, and under load the writer thread then waited for the
            # event loop's thread once per row (a commit took 10x its CPU time). Chunks of
            # 64, 32, ..., 1 rows: a handful of statements per commit, and only seven distinct
            # ones in the connection's statement cache (a prepared statement per row count
            # held ~10 MB).
            i = 0
            while i < len(rows):
                n = min(_UPSERT_CHUNK, 1 << ((len(rows) - i).bit_length() - 1))
                params = [row[f] for row in rows[i : i + n] for f in _BINDING_FIELDS]
                conn.exec_driver_sql(_sqlite_upsert_sql(n), tuple(params))
                i += n
        elif rows:
            conn.execute(upsert_bindings_statement(self._dialect), rows)

    # -- presence ---------------------------------------------------------------------------

    def load_presence(self, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(subscriptions, publications) still valid at `now` as the presence server wrote
        them; the expired rows are deleted."""
        with self.unit_of_work() as uow:
            return uow.presence.load(now)

    def save_presence(
        self,
        subs: Iterable[dict[str, Any]],
        gone_subs: Iterable[str],
        pubs: Iterable[dict[str, Any]],
        gone_pubs: Iterable[str],
    ) -> None:
        """Write subscription and publication changes in one transaction (rows are replaced)."""
        with self.unit_of_work() as uow:
            uow.presence.save(subs, gone_subs, pubs, gone_pubs)

    # -- provider ---------------------------------------------------------------------------

    def get_provider(self) -> Provider:
        """The provider; Provider(name="") when none is set yet."""
        with self._read() as uow:
            return uow.provider.get()

    def set_provider(self, provider: Provider) -> None:
        """Create or replace the provider row."""
        with self.unit_of_work() as uow:
            uow.provider.set(provider)

    # -- clients ----------------------------------------------------------------------------

    def add_client(self, client: Client) -> Client:
        """Store a new client; raise AlreadyExists when the id is taken."""
        with self.unit_of_work() as uow:
            return uow.clients.add(client)

    def update_client(self, client_id: str, **changes: Any) -> Client:
        """Change fields of a client (names as in domain.model.Client); raise NotFound."""
        with self.unit_of_work() as uow:
            return uow.clients.update(client_id, **changes)

    def get_client(self, client_id: str) -> Client | None:
        with self._read() as uow:
            return uow.clients.get(client_id)

    def list_clients(self) -> list[Client]:
        """Every client, ordered by id."""
        with self._read() as uow:
            return uow.clients.all()

    def find_clients(
        self, text: str = "", number_parts: Sequence[str] = (), *, page: int = 1,
        per_page: int = 50, only: str | None = None,
    ) -> ClientSlice:  # fmt: skip
        """One page of clients, ordered by id: those whose id or name contains `text`
        (case-insensitive) or whose numbers contain one of `number_parts` (all when both are
        empty; only `only` when given), with their numbers and the count of all that match.
        A page after the last is the last."""
        with self._read() as uow:
            return uow.clients.find(text, number_parts, page, per_page, only)

    def remove_client(self, client_id: str) -> bool:
        """Delete a client with its numbers, rules and override; its users keep their accounts
        (their client becomes empty) and its call records stay for billing."""
        with self.unit_of_work() as uow:
            return uow.clients.remove(client_id)

    # -- numbers ----------------------------------------------------------------------------

    def add_number(self, e164: str, client_id: str, dictation: bool = False) -> Number:
        """Give a client a number (`dictation`: as its dictation number); raise NotFound
        (client) or AlreadyExists (number)."""
        with self.unit_of_work() as uow:
            return uow.clients.add_number(e164, client_id, dictation)

    def set_number_dictation(self, e164: str, dictation: bool) -> Number | None:
        """Make a number a dictation number or an ordinary one; None if there is no such."""
        with self.unit_of_work() as uow:
            return uow.clients.set_number_dictation(e164, dictation)

    def remove_number(self, e164: str) -> bool:
        """Delete a number and drop it from its client's rules document."""
        with self.unit_of_work() as uow:
            return uow.clients.remove_number(e164)

    def list_numbers(self, client_id: str | None = None) -> list[Number]:
        """Numbers (without rules), of one client or all, ordered by number."""
        with self._read() as uow:
            return uow.clients.list_numbers(client_id)

    # -- groups -----------------------------------------------------------------------------

    def add_group(self, group: Group) -> Group:
        """Store a group with its members; raise AlreadyExists, or NoSuchUser for a member."""
        with self.unit_of_work() as uow:
            return uow.groups.add(group)

    def update_group(
        self, name: str, strategy: str | None = None, members: Iterable[str] | None = None
    ) -> Group:
        """Change a group's strategy and/or replace its members (in order)."""
        with self.unit_of_work() as uow:
            return uow.groups.update(name, strategy, members)

    def get_group(self, name: str) -> Group | None:
        with self._read() as uow:
            return uow.groups.get(name)

    def list_groups(self) -> list[Group]:
        with self._read() as uow:
            return uow.groups.all()

    def remove_group(self, name: str) -> bool:
        """Delete a group; raise InUse while rules or the provider's default plan ring it."""
        with self.unit_of_work() as uow:
            return uow.groups.remove(name)

    # -- trunks -----------------------------------------------------------------------------

    def add_trunk(self, trunk: Trunk) -> Trunk:
        with self.unit_of_work() as uow:
            return uow.trunks.add(trunk)

    def update_trunk(self, name: str, **changes: Any) -> Trunk:
        """Change fields of a trunk (names as in domain.model.Trunk); raise NotFound."""
        with self.unit_of_work() as uow:
            return uow.trunks.update(name, **changes)

    def get_trunk(self, name: str) -> Trunk | None:
        with self._read() as uow:
            return uow.trunks.get(name)

    def list_trunks(self) -> list[Trunk]:
        with self._read() as uow:
            return uow.trunks.all()

    def remove_trunk(self, name: str) -> bool:
        with self.unit_of_work() as uow:
            return uow.trunks.remove(name)

    # -- rules ------------------------------------------------------------------------------

    def get_rules_document(self, client_id: str) -> dict[str, Any] | None:
        """The stored rules document of a client (as saved), or None."""
        with self._read() as uow:
            return uow.rules.get_document(client_id)

    def save_rules(
        self,
        client_id: str,
        document: dict[str, Any],
        check: Callable[[Directory], None] | None = None,
    ) -> dict[str, Number]:
        """Validate a client's rules document against the current directory and store it, in
        one transaction. Raise NotFound for an unknown client and the parser's RulesInvalid
        (rules_doc.RulesError; nothing stored) for an invalid document; the parsed numbers.
        `check` sees the directory of that transaction first; what it raises stores nothing
        (the version check of an editor: nobody saves in between)."""
        with self.unit_of_work() as uow:
            return uow.rules.save(client_id, document, self._parser(), check)

    def load_directory(self) -> Directory:
        """The whole configuration routing reads, with each number's rules parsed from its
        client's stored document. A document that no longer validates (say a user it names was
        removed) is logged and left out: its numbers fall back to the provider's default plan;
        `self.directory_problems` lists such documents after each call."""
        with self._read() as uow:
            directory, problems = uow.rules.load_directory(self._parser())
        for p in problems:
            log.warning(
                "rules of client %s no longer validate: %s", p.client, "; ".join(p.problems)
            )
        self.directory_problems = problems
        return directory

    def _parser(self) -> RulesParser:
        parser = self.rules_parser or _default_rules_parser
        if parser is None:
            raise StoreError(
                "no rules parser: pass Store(url, rules_parser=...) or import heimbuero.office"
            )
        return parser

    # -- overrides --------------------------------------------------------------------------

    def set_override(self, override: Override) -> Override:
        """Set (replace) a client's override; `until` is stored in UTC."""
        with self.unit_of_work() as uow:
            return uow.clients.set_override(override)

    def get_override(self, client_id: str, now: datetime | None = None) -> Override | None:
        """The client's override; with `now`, None once it has expired (at `until` exactly)."""
        with self._read() as uow:
            return uow.clients.get_override(client_id, now)

    def clear_override(self, client_id: str) -> bool:
        with self.unit_of_work() as uow:
            return uow.clients.clear_override(client_id)

    def list_overrides(self, now: datetime | None = None) -> list[Override]:
        """Every override; with `now`, only those still active."""
        with self._read() as uow:
            return uow.clients.list_overrides(now)

    # -- call records -----------------------------------------------------------------------

    def add_call_record(
        self,
        call_id: str,
        number: str,
        caller: str,
        started_at: datetime,
        client: str | None = None,
        rule: str | None = None,
        step: int | None = None,
    ) -> int:
        """Write the record of a call as it starts (result None = in progress); its id."""
        ids: dict[int, int] = {}
        start = {
            "call_id": call_id, "number": number, "caller": caller, "started_at": started_at,
            "client": client, "rule": rule, "step": step,
        }  # fmt: skip
        self.apply_call_log([("start", 0, start)], ids)
        return ids[0]

    def update_call_record(self, record_id: int, **fields: Any) -> CallRecord:
        """Change fields of a record: client, rule, step, answered_by, answered_at, ended_at,
        ring_seconds, talk_seconds, result (one of CALL_RESULTS)."""
        with self.unit_of_work() as uow:
            return uow.calls.update(record_id, **fields)

    def apply_call_log(
        self, ops: Iterable[tuple[str, int, dict[str, Any]]], ids: dict[int, int]
    ) -> None:
        """Write a batch of call-record operations in one transaction, in order: ("start", n,
        fields of add_call_record) creates a record and notes its id as ids[n]; ("update", n,
        fields of update_call_record) changes record ids[n]; ("media", 0, {call_id, media}) and
        ("transfer", 0, {call_id, from_call_id}: the call was transferred from that one) go by
        Call-ID. A batch that fails is not half written (and notes no ids)."""
        with self.unit_of_work() as uow:
            uow.calls.apply_log(ops, ids)

    def get_call_record(self, record_id: int) -> CallRecord | None:
        with self._read() as uow:
            return uow.calls.get(record_id)

    def list_call_records(
        self,
        client: str | None = None,
        limit: int = 100,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
    ) -> list[CallRecord]:
        """The newest records first, of one client or all; started at or after `since` and
        before `until` when given; `offset` newer ones skipped (paging)."""
        with self._read() as uow:
            return uow.calls.all(client, limit, since, until, offset)

    def call_records_of_caller(self, client: str, number: str, limit: int) -> list[CallRecord]:
        """The client's newest records of calls from `number`."""
        with self._read() as uow:
            return uow.calls.by_caller(client, number, limit)

    def external_talk_seconds(self, client: str, since: datetime) -> float:
        """Talk time of the client's answered calls out through a trunk (answered by an
        `external:` target) that started at or after `since`: what its daily cap counts."""
        with self._read() as uow:
            return uow.calls.external_talk_seconds(client, since)

    def close_open_call_records(self, now: datetime) -> int:
        """Finish the records of calls cut off by a server stop (ended_at still empty): answered
        ones end 'answered' with talk time up to `now`, the others 'failed'; both with the end
        reason 'server_stopped' unless they had one. Run at startup."""
        with self.unit_of_work() as uow:
            return uow.calls.close_open(now)

    # -- messages (store/messages.py) -------------------------------------------------------

    def apply_message_log(self, ops: list[tuple[Any, ...]]) -> None:
        """Apply queued messenger operations in order, in one transaction:

        ("add", fields) a new message (its conversation is made when it is the first);
        ("state", message_id, state, at) a delivery outcome;
        ("report", imdn_id, reporter, state) an IMDN report from the message's recipient."""
        with self.unit_of_work() as uow:
            uow.messages.apply_message_log(ops)

    def fail_unfinished_messages(self, at: datetime) -> int:
        """Messages a stopped server was still handing to online devices: their senders got
        no success, so they count as failed (the queue holds only `queued` ones)."""
        with self.unit_of_work() as uow:
            return uow.messages.fail_unfinished_messages(at)

    def load_queued_messages(self) -> list[MessageRecord]:
        """Every message waiting for its recipient, oldest first."""
        with self.unit_of_work(write=False) as uow:
            return uow.messages.load_queued_messages()

    def list_conversations(self, user: str) -> list[ConversationRecord]:
        """The user's conversations, most recent first, each with its last message."""
        with self.unit_of_work(write=False) as uow:
            return uow.messages.list_conversations(user)

    def conversation_messages(
        self, user: str, peer: str, limit: int = 100, before: str | None = None
    ) -> list[MessageRecord] | None:
        """Up to `limit` messages between the two users, oldest first, ending before the
        message `before` (for paging back); None when they have no conversation."""
        with self.unit_of_work(write=False) as uow:
            return uow.messages.conversation_messages(user, peer, limit, before)

    def unread_messages(self, user: str, limit: int = 1000) -> list[MessageRecord]:
        """The newest `limit` messages to `user` not yet read (by a device's report or in the
        console), oldest first."""
        with self.unit_of_work(write=False) as uow:
            return uow.messages.unread_messages(user, limit)

    def mark_read(self, user: str, peer: str) -> list[MessageRecord]:
        """The messages from `peer` to `user` become displayed; those that changed. (The chat
        page asks at every message event: a write transaction only when there is one.)"""
        with self.unit_of_work(write=False) as uow:
            if not uow.messages.unread_from(user, peer):
                return []
        with self.unit_of_work() as uow:
            return uow.messages.mark_read(user, peer)

    def delete_conversation(self, user: str, peer: str) -> list[str] | None:
        """Delete a conversation and its messages; the ids of the files its messages announced
        (for the caller to delete), or None when there is no such conversation."""
        with self.unit_of_work() as uow:
            return uow.messages.delete_conversation(user, peer)

    def delete_idle_conversations(self, before: datetime) -> tuple[int, list[str]]:
        """Retention: delete conversations whose last message is older than `before`, except
        those still holding a message queued for delivery. (count, file ids of their files)."""
        with self.unit_of_work() as uow:
            return uow.messages.delete_idle_conversations(before)

    def _apply_message_ops(self, conn: Connection, ops: list[tuple[Any, ...]]) -> None:
        """Messenger operations inside the caller's transaction (write_batch)."""
        apply_message_ops(conn, ops)

    # -- files (store/files.py) -------------------------------------------------------------

    def add_file_within_quota(self, record: FileRecord, quota_bytes: int | None) -> int | None:
        """Insert a file record unless the owner's unexpired files plus this one exceed
        `quota_bytes` (None: no quota). Returns None when inserted, else the bytes the owner
        already uses. Callers serialise uploads of one process around this call."""
        with self.unit_of_work() as uow:
            return uow.files.add_file_within_quota(record, quota_bytes)

    def file_bytes_used(self, owner: str, now: datetime) -> int:
        """The total size of a user's files whose links have not expired at `now`."""
        with self.unit_of_work(write=False) as uow:
            return uow.files.file_bytes_used(owner, now)

    def get_file(self, file_id: str) -> FileRecord | None:
        """The file with its parties, or None (expired files too: callers decide)."""
        with self.unit_of_work(write=False) as uow:
            return uow.files.get_file(file_id)

    def list_files(self, owner: str | None = None) -> list[FileRecord]:
        """Files (of one owner, or everybody's), newest first, with their parties."""
        with self.unit_of_work(write=False) as uow:
            return uow.files.list_files(owner)

    def add_file_party(self, file_id: str, sender: str, recipient: str, now: datetime) -> bool:
        """Let `recipient` download the file when `sender` is its owner or a party and the
        link is still valid at `now`. True when the recipient may download it afterwards."""
        with self.unit_of_work() as uow:
            return uow.files.add_file_party(file_id, sender, recipient, now)

    def delete_file_records(self, file_ids: Iterable[str]) -> list[str]:
        """Delete file records and their parties; returns the ids that existed."""
        with self.unit_of_work() as uow:
            return uow.files.delete_file_records(file_ids)

    def expired_file_ids(self, now: datetime) -> list[str]:
        """Ids of the files whose links expired at or before `now`."""
        with self.unit_of_work(write=False) as uow:
            return uow.files.expired_file_ids(now)

    def all_file_ids(self) -> set[str]:
        """Every file id on record (to find bytes on disk that have no record)."""
        with self.unit_of_work(write=False) as uow:
            return uow.files.all_file_ids()

    def log_download(
        self,
        file_id: str,
        user: str | None,
        at: datetime,
        remote: str,
        status: int,
        bytes_sent: int = 0,
    ) -> None:
        """Append one download attempt to the audit log (kept after the file is gone)."""
        with self.unit_of_work() as uow:
            uow.files.log_download(file_id, user, at, remote, status, bytes_sent)

    def list_downloads(self, file_id: str) -> list[DownloadRecord]:
        """The logged download attempts of a file, oldest first."""
        with self.unit_of_work(write=False) as uow:
            return uow.files.list_downloads(file_id)

    # -- API tokens -------------------------------------------------------------------------

    def create_token(self, user: str, name: str) -> tuple[ApiToken, str]:
        """A new API token for a user: (its metadata, the token). Only its hash is stored."""
        with self.unit_of_work() as uow:
            return uow.tokens.create(user, name)

    def verify_token(self, token: str) -> UserRecord | None:
        """The user an API token belongs to (and note its use), or None."""
        with self.unit_of_work() as uow:
            return uow.tokens.verify(token)

    def list_tokens(self, user: str | None = None) -> list[ApiToken]:
        with self._read() as uow:
            return uow.tokens.all(user)

    def revoke_token(self, user: str, name: str) -> bool:
        with self.unit_of_work() as uow:
            return uow.tokens.revoke(user, name)


_UPSERT_CHUNK = 64  # rows per statement (a power of two): 12 parameters each, below 999


@functools.cache
def _sqlite_upsert_sql(rows: int) -> str:
    """The SQLite form of `upsert_bindings_statement` for `rows` rows in one VALUES list."""
    one = "(" + ", ".join("?" * len(_BINDING_FIELDS)) + ")"
    update = ", ".join(f"{f} = excluded.{f}" for f in _BINDING_UPDATE_FIELDS)
    return (
        f"INSERT INTO {Binding.__tablename__} ({', '.join(_BINDING_FIELDS)}) "
        f"VALUES {', '.join([one] * rows)} ON CONFLICT (aor, contact) DO UPDATE SET {update}"
    )


@functools.cache
def upsert_bindings_statement(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (aor, contact) DO UPDATE for the "sqlite" or "postgresql" dialect
    (built once: building it costs more CPU than writing a few rows with it)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(Binding)
    return stmt.on_conflict_do_update(
        index_elements=[Binding.aor, Binding.contact],
        set_={f: stmt.excluded[f] for f in _BINDING_UPDATE_FIELDS},
    )
