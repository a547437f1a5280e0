"""The repository: the only module that talks SQL; callers get plain dataclasses back."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from heimbuero.office.callpolicy import policy_from_json
from heimbuero.office.model import (
    INBOUND_AUTH,
    Client,
    Directory,
    Group,
    Number,
    Override,
    Provider,
    Step,
    Trunk,
    TrunkInbound,
)
from heimbuero.office.model import User as OfficeUser
from heimbuero.store.files import FileStore
from heimbuero.store.messages import MessageStore
from heimbuero.store.models import (
    ApiTokenRow,
    Binding,
    CallRecordRow,
    ClientRow,
    GroupMemberRow,
    GroupRow,
    NumberRow,
    OfficeRevision,
    OverrideRow,
    PresencePublication,
    PresenceSubscription,
    ProviderRow,
    RuleDocumentRow,
    TrunkRow,
    User,
    as_utc,
)

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


_F = TypeVar("_F", bound=Callable[..., Any])


def _bumps_office(method: _F) -> _F:
    """Mark a Store method that changes what call routing reads: on success the office
    revision goes up, and running servers reload the configuration."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        with self._engine.begin() as conn:
            conn.execute(update(OfficeRevision).values(revision=OfficeRevision.revision + 1))
        return result

    return wrapper  # type: ignore[return-value]


def _check_call_update(fields: dict[str, Any]) -> None:
    unknown = set(fields) - _CALL_UPDATE_FIELDS
    if unknown:
        raise StoreError(f"unknown call record fields: {', '.join(sorted(unknown))}")
    if fields.get("result") is not None and fields["result"] not in CALL_RESULTS:
        raise StoreError(f"invalid call result {fields['result']!r}")


def _apply_call_update(row: CallRecordRow, fields: dict[str, Any]) -> None:
    for k, v in fields.items():
        setattr(row, k, as_utc(v) if isinstance(v, datetime) else v)


class StoreError(Exception):
    """A store operation failed; the message says why in one line."""


class AlreadyExists(StoreError):
    """Something with that key is already stored."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} already exists")
        self.kind, self.key = kind, key


class NotFound(StoreError):
    """Nothing with that key is stored."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"no such {kind}: {key!r}")
        self.kind, self.key = kind, key


class InUse(StoreError):
    """The thing is still referenced (e.g. a group named by a client's rules)."""


class UserExists(AlreadyExists):
    """A user with that name is already stored."""

    def __init__(self, name: str) -> None:
        super().__init__("user", name)
        self.name = name


class NoSuchUser(NotFound):
    """No user with that name is stored."""

    def __init__(self, name: str) -> None:
        super().__init__("user", name)
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
    client: str | None = None  # the client business of a client/employee user
    display_name: str | None = None
    mobile: str | None = None  # E.164

    def office_user(self) -> OfficeUser:
        """The user as routing sees it."""
        return OfficeUser(
            name=self.name,
            role=self.role,
            client=self.client,
            display_name=self.display_name or "",
            mobile=self.mobile,
        )


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as billing sees it; `result` is None while the call is in progress."""

    id: int
    call_id: str
    client: str | None
    number: str
    caller: str
    rule: str | None
    step: int | None
    answered_by: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    ring_seconds: float
    talk_seconds: float
    result: str | None


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token's metadata (the token itself is shown once, at creation)."""

    id: int
    user: str
    name: str
    created_at: datetime
    last_used: datetime | None = None


@dataclass(frozen=True, slots=True)
class DirectoryProblem:
    """A stored rules document that no longer validates; its numbers use the default plan."""

    client: str
    problems: list[str] = field(default_factory=list)


CALL_RESULTS = ("answered", "busy", "no_answer", "failed", "cancelled")
_CALL_UPDATE_FIELDS = frozenset(
    {
        "client",
        "rule",
        "step",
        "answered_by",
        "answered_at",
        "ended_at",
        "ring_seconds",
        "talk_seconds",
        "result",
    }
)
_UNSET: Any = object()
TOKEN_PREFIX = "hb_"


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
    path: str | None = None


@dataclass(slots=True)
class WriteBatch:
    """Changes the server hands to its writer at once: they are committed together."""

    binding_upserts: list[BindingRecord] = field(default_factory=list)
    binding_deletes: list[tuple[str, str]] = field(default_factory=list)
    message_ops: list[tuple[Any, ...]] = field(default_factory=list)


def _user_record(row: User) -> UserRecord:
    return UserRecord(
        id=row.id,
        name=row.name,
        role=row.role,
        ha1_md5=row.ha1_md5,
        ha1_sha256=row.ha1_sha256,
        password_hash=row.password_hash,
        created_at=as_utc(row.created_at),
        client=row.client,
        display_name=row.display_name,
        mobile=row.mobile,
    )


def _utc_opt(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def steps_to_json(steps: Iterable[Step]) -> list[dict[str, Any]]:
    return [{"targets": list(s.targets), "timeout": s.timeout} for s in steps]


def steps_from_json(data: Any) -> tuple[Step, ...]:
    return tuple(
        Step(targets=tuple(str(t) for t in d["targets"]), timeout=int(d["timeout"]))
        for d in data or ()
    )


def _provider(row: ProviderRow | None) -> Provider:
    if row is None:
        return Provider(name="")
    return Provider(
        name=row.name,
        address=row.address,
        vat_id=row.vat_id,
        iban=row.iban,
        bic=row.bic,
        default_steps=steps_from_json(row.default_steps),
    )


def _client(row: ClientRow) -> Client:
    return Client(
        id=row.id,
        name=row.name,
        trade=row.trade,
        contact_person=row.contact_person,
        greeting=row.greeting,
        notes=row.notes,
        timezone=row.timezone,
        bundesland=row.bundesland,
        closure_days=tuple(date.fromisoformat(d) for d in row.closure_days or ()),
        call_policy=policy_from_json(row.call_policy),
    )


def _client_values(c: Client) -> dict[str, Any]:
    return {
        "name": c.name,
        "trade": c.trade,
        "contact_person": c.contact_person,
        "greeting": c.greeting,
        "notes": c.notes,
        "timezone": c.timezone,
        "bundesland": c.bundesland,
        "closure_days": sorted(d.isoformat() for d in c.closure_days),
        "call_policy": c.call_policy.to_json(),
    }


def _trunk(row: TrunkRow) -> Trunk:
    return Trunk(
        name=row.name,
        host=row.host,
        port=row.port,
        transport=row.transport,
        prefixes=tuple(row.prefixes or ()),
        username=row.username,
        password=row.password,
        register=bool(row.register),
        call_policy=policy_from_json(row.call_policy),
        inbound=_trunk_inbound(row.inbound),
    )


def _trunk_inbound(data: dict[str, Any] | None) -> TrunkInbound:
    """`trunks.inbound` as stored (JSON; keys as in model.TrunkInbound); unknown -> address."""
    data = data or {}
    auth = data.get("auth")
    return TrunkInbound(
        auth=auth if auth in INBOUND_AUTH else "address",
        username=data.get("username") or None,
        ha1_md5=data.get("ha1_md5") or None,
        ha1_sha256=data.get("ha1_sha256") or None,
    )


def _call_record(row: CallRecordRow) -> CallRecord:
    return CallRecord(
        id=row.id,
        call_id=row.call_id,
        client=row.client,
        number=row.number,
        caller=row.caller,
        rule=row.rule,
        step=row.step,
        answered_by=row.answered_by,
        started_at=as_utc(row.started_at),
        answered_at=_utc_opt(row.answered_at),
        ended_at=_utc_opt(row.ended_at),
        ring_seconds=row.ring_seconds,
        talk_seconds=row.talk_seconds,
        result=row.result,
    )


def token_hash(token: str) -> str:
    """What is stored of an API token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def _binding_row(b: BindingRecord) -> dict[str, Any]:
    return {f: getattr(b, f) for f in _BINDING_FIELDS}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every new SQLite connection: write-ahead log, enforced foreign keys, wait on locks.

    synchronous=FULL: every commit is on disk (the write-ahead log fsynced) before it returns,
    so what an answer confirmed survives a crash of the process and of the machine. NORMAL would
    survive a killed process but lose the last commits at a power cut. Group commit (the server's
    writer) keeps that to one fsync for many registrations and messages."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


class Store(MessageStore, FileStore):
    """Users and SIP bindings in an SQL database (SQLite by default, PostgreSQL works too)."""

    def __init__(self, url: str) -> None:
        self.url = url
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

    # -- users ------------------------------------------------------------------------------

    @_bumps_office
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

    def get_user(self, name: str) -> UserRecord | None:
        """The user with that name, or None."""
        with Session(self._engine) as session:
            row = session.scalar(select(User).where(User.name == name))
            return None if row is None else _user_record(row)

    def list_users(self) -> list[UserRecord]:
        """Every user, ordered by name."""
        with Session(self._engine) as session:
            return [_user_record(r) for r in session.scalars(select(User).order_by(User.name))]

    @_bumps_office
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
        with self._engine.begin() as conn:
            conn.execute(delete(PresenceSubscription).where(PresenceSubscription.expires_at <= now))
            conn.execute(delete(PresencePublication).where(PresencePublication.expires_at <= now))
            subs = [r[0] for r in conn.execute(select(PresenceSubscription.data))]
            pubs = [r[0] for r in conn.execute(select(PresencePublication.data))]
        return subs, pubs

    def save_presence(
        self,
        subs: Iterable[dict[str, Any]],
        gone_subs: Iterable[str],
        pubs: Iterable[dict[str, Any]],
        gone_pubs: Iterable[str],
    ) -> None:
        """Write subscription and publication changes in one transaction (rows are replaced)."""
        sub_rows = {
            d["key"]: {"key": d["key"], "presentity": d["presentity"], "watcher": d["watcher"],
                       "expires_at": d["expires_at"], "data": d}
            for d in subs
        }  # fmt: skip
        pub_rows = {
            d["etag"]: {"etag": d["etag"], "user": d["user"], "expires_at": d["expires_at"],
                        "data": d}
            for d in pubs
        }  # fmt: skip
        drop_subs = set(gone_subs) | set(sub_rows)
        drop_pubs = set(gone_pubs) | set(pub_rows)
        with self._engine.begin() as conn:
            if drop_subs:
                conn.execute(
                    delete(PresenceSubscription).where(PresenceSubscription.key.in_(drop_subs))
                )
            if drop_pubs:
                conn.execute(
                    delete(PresencePublication).where(PresencePublication.etag.in_(drop_pubs))
                )
            if sub_rows:
                conn.execute(insert(PresenceSubscription), list(sub_rows.values()))
            if pub_rows:
                conn.execute(insert(PresencePublication), list(pub_rows.values()))

    # -- provider ---------------------------------------------------------------------------

    def get_provider(self) -> Provider:
        """The provider; Provider(name="") when none is set yet."""
        with Session(self._engine) as session:
            return _provider(session.get(ProviderRow, 1))

    @_bumps_office
    def set_provider(self, provider: Provider) -> None:
        """Create or replace the provider row."""
        values = {
            "name": provider.name,
            "address": provider.address,
            "vat_id": provider.vat_id,
            "iban": provider.iban,
            "bic": provider.bic,
            "default_steps": steps_to_json(provider.default_steps),
        }
        with Session(self._engine) as session:
            row = session.get(ProviderRow, 1)
            if row is None:
                session.add(ProviderRow(id=1, **values))
            else:
                for k, v in values.items():
                    setattr(row, k, v)
            session.commit()

    # -- clients ----------------------------------------------------------------------------

    @_bumps_office
    def add_client(self, client: Client) -> Client:
        """Store a new client; raise AlreadyExists when the id is taken."""
        with Session(self._engine) as session:
            if session.get(ClientRow, client.id) is not None:
                raise AlreadyExists("client", client.id)
            session.add(ClientRow(id=client.id, **_client_values(client)))
            try:
                session.commit()
            except IntegrityError:
                raise AlreadyExists("client", client.id) from None
        return client

    @_bumps_office
    def update_client(self, client_id: str, **changes: Any) -> Client:
        """Change fields of a client (names as in model.Client); raise NotFound."""
        with Session(self._engine) as session:
            row = session.get(ClientRow, client_id)
            if row is None:
                raise NotFound("client", client_id)
            new = replace(_client(row), **changes)
            for k, v in _client_values(new).items():
                setattr(row, k, v)
            session.commit()
            return new

    def get_client(self, client_id: str) -> Client | None:
        with Session(self._engine) as session:
            row = session.get(ClientRow, client_id)
            return None if row is None else _client(row)

    def list_clients(self) -> list[Client]:
        """Every client, ordered by id."""
        with Session(self._engine) as session:
            return [_client(r) for r in session.scalars(select(ClientRow).order_by(ClientRow.id))]

    @_bumps_office
    def remove_client(self, client_id: str) -> bool:
        """Delete a client with its numbers, rules and override; its users keep their accounts
        (their client becomes empty) and its call records stay for billing."""
        with self._engine.begin() as conn:
            conn.execute(update(User).where(User.client == client_id).values(client=None))
            conn.execute(delete(NumberRow).where(NumberRow.client == client_id))
            conn.execute(delete(RuleDocumentRow).where(RuleDocumentRow.client == client_id))
            conn.execute(delete(OverrideRow).where(OverrideRow.client == client_id))
            return bool(conn.execute(delete(ClientRow).where(ClientRow.id == client_id)).rowcount)

    # -- numbers ----------------------------------------------------------------------------

    @_bumps_office
    def add_number(self, e164: str, client_id: str) -> Number:
        """Give a client a number; raise NotFound (client) or AlreadyExists (number)."""
        with Session(self._engine) as session:
            if session.get(ClientRow, client_id) is None:
                raise NotFound("client", client_id)
            existing = session.get(NumberRow, e164)
            if existing is not None:
                raise AlreadyExists("number", f"{e164} (client {existing.client})")
            session.add(NumberRow(e164=e164, client=client_id))
            try:
                session.commit()
            except IntegrityError:
                raise AlreadyExists("number", e164) from None
        return Number(e164=e164, client=client_id)

    @_bumps_office
    def remove_number(self, e164: str) -> bool:
        """Delete a number and drop it from its client's rules document."""
        with Session(self._engine) as session:
            row = session.get(NumberRow, e164)
            if row is None:
                return False
            doc = session.get(RuleDocumentRow, row.client)
            if doc is not None and isinstance(doc.document.get("numbers"), dict):
                document = dict(doc.document)
                document["numbers"] = {k: v for k, v in document["numbers"].items() if k != e164}
                doc.document = document
                doc.updated_at = datetime.now(UTC)
            session.delete(row)
            session.commit()
            return True

    def list_numbers(self, client_id: str | None = None) -> list[Number]:
        """Numbers (without rules), of one client or all, ordered by number."""
        stmt = select(NumberRow).order_by(NumberRow.e164)
        if client_id is not None:
            stmt = stmt.where(NumberRow.client == client_id)
        with Session(self._engine) as session:
            return [Number(e164=r.e164, client=r.client) for r in session.scalars(stmt)]

    # -- users (office fields) --------------------------------------------------------------

    @_bumps_office
    def user_update(
        self,
        name: str,
        client: str | None = _UNSET,
        display_name: str | None = _UNSET,
        mobile: str | None = _UNSET,
        allow_rfc2069: bool | None = None,
    ) -> UserRecord:
        """Set a user's client, display name, mobile and SIP compatibility switches (arguments
        left out stay unchanged)."""
        with Session(self._engine) as session:
            row = session.scalar(select(User).where(User.name == name))
            if row is None:
                raise NoSuchUser(name)
            if client is not _UNSET:
                if client is not None and session.get(ClientRow, client) is None:
                    raise NotFound("client", client)
                row.client = client
            if display_name is not _UNSET:
                row.display_name = display_name
            if mobile is not _UNSET:
                row.mobile = mobile
            if allow_rfc2069 is not None:
                compat = dict(row.sip_compat or {})
                if allow_rfc2069:
                    compat["rfc2069"] = True
                else:
                    compat.pop("rfc2069", None)
                row.sip_compat = compat
            session.commit()
            return _user_record(row)

    # -- groups -----------------------------------------------------------------------------

    def _group(self, session: Session, row: GroupRow) -> Group:
        members = session.scalars(
            select(GroupMemberRow.user)
            .where(GroupMemberRow.group == row.name)
            .order_by(GroupMemberRow.position)
        )
        return Group(name=row.name, strategy=row.strategy, members=tuple(members))

    def _set_members(self, session: Session, group: str, members: Iterable[str]) -> None:
        names = list(dict.fromkeys(members))
        known = set(session.scalars(select(User.name).where(User.name.in_(names))))
        for m in names:
            if m not in known:
                raise NoSuchUser(m)
        session.execute(delete(GroupMemberRow).where(GroupMemberRow.group == group))
        session.add_all(
            GroupMemberRow(group=group, user=m, position=i) for i, m in enumerate(names)
        )

    @_bumps_office
    def add_group(self, group: Group) -> Group:
        """Store a group with its members; raise AlreadyExists, or NoSuchUser for a member."""
        with Session(self._engine) as session:
            if session.get(GroupRow, group.name) is not None:
                raise AlreadyExists("group", group.name)
            session.add(GroupRow(name=group.name, strategy=group.strategy))
            session.flush()
            self._set_members(session, group.name, group.members)
            session.commit()
            return self._group(session, session.get_one(GroupRow, group.name))

    @_bumps_office
    def update_group(
        self, name: str, strategy: str | None = None, members: Iterable[str] | None = None
    ) -> Group:
        """Change a group's strategy and/or replace its members (in order)."""
        with Session(self._engine) as session:
            row = session.get(GroupRow, name)
            if row is None:
                raise NotFound("group", name)
            if strategy is not None:
                row.strategy = strategy
            if members is not None:
                self._set_members(session, name, members)
            session.commit()
            return self._group(session, row)

    def get_group(self, name: str) -> Group | None:
        with Session(self._engine) as session:
            row = session.get(GroupRow, name)
            return None if row is None else self._group(session, row)

    def list_groups(self) -> list[Group]:
        with Session(self._engine) as session:
            rows = session.scalars(select(GroupRow).order_by(GroupRow.name)).all()
            return [self._group(session, r) for r in rows]

    @_bumps_office
    def remove_group(self, name: str) -> bool:
        """Delete a group; raise InUse while rules or the provider's default plan ring it."""
        target = f"group:{name}"
        with Session(self._engine) as session:
            if session.get(GroupRow, name) is None:
                return False
            users = [
                d.client
                for d in session.scalars(select(RuleDocumentRow))
                if _mentions(d.document, target)
            ]
            provider = session.get(ProviderRow, 1)
            if provider is not None and _mentions(provider.default_steps, target):
                users.insert(0, "the provider's default plan")
            if users:
                raise InUse(f"group {name!r} is still used by: {', '.join(users)}")
            session.execute(delete(GroupMemberRow).where(GroupMemberRow.group == name))
            session.execute(delete(GroupRow).where(GroupRow.name == name))
            session.commit()
            return True

    # -- trunks -----------------------------------------------------------------------------

    @_bumps_office
    def add_trunk(self, trunk: Trunk) -> Trunk:
        with Session(self._engine) as session:
            if session.get(TrunkRow, trunk.name) is not None:
                raise AlreadyExists("trunk", trunk.name)
            session.add(TrunkRow(**_trunk_values(trunk)))
            session.commit()
        return trunk

    @_bumps_office
    def update_trunk(self, name: str, **changes: Any) -> Trunk:
        """Change fields of a trunk (names as in model.Trunk); raise NotFound."""
        with Session(self._engine) as session:
            row = session.get(TrunkRow, name)
            if row is None:
                raise NotFound("trunk", name)
            new = replace(_trunk(row), **changes)
            for k, v in _trunk_values(new).items():
                setattr(row, k, v)
            session.commit()
            return new

    def get_trunk(self, name: str) -> Trunk | None:
        with Session(self._engine) as session:
            row = session.get(TrunkRow, name)
            return None if row is None else _trunk(row)

    def list_trunks(self) -> list[Trunk]:
        with Session(self._engine) as session:
            return [_trunk(r) for r in session.scalars(select(TrunkRow).order_by(TrunkRow.name))]

    @_bumps_office
    def remove_trunk(self, name: str) -> bool:
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(TrunkRow).where(TrunkRow.name == name)).rowcount)

    # -- rules ------------------------------------------------------------------------------

    def get_rules_document(self, client_id: str) -> dict[str, Any] | None:
        """The stored rules document of a client (as saved), or None."""
        with Session(self._engine) as session:
            row = session.get(RuleDocumentRow, client_id)
            return None if row is None else dict(row.document)

    @_bumps_office
    def save_rules(self, client_id: str, document: dict[str, Any]) -> dict[str, Number]:
        """Validate a client's rules document against the current directory and store it.

        Raise NotFound for an unknown client and rules_doc.RulesError (nothing stored) for an
        invalid document; return the parsed numbers.
        """
        from heimbuero.office.rules_doc import parse_rules_document

        if self.get_client(client_id) is None:
            raise NotFound("client", client_id)
        parsed = parse_rules_document(document, client_id, self.load_directory())
        stored = json.loads(json.dumps(document, default=str))
        with Session(self._engine) as session:
            row = session.get(RuleDocumentRow, client_id)
            now = datetime.now(UTC)
            if row is None:
                session.add(RuleDocumentRow(client=client_id, document=stored, updated_at=now))
            else:
                row.document, row.updated_at = stored, now
            session.commit()
        return parsed

    def load_directory(self) -> Directory:
        """The whole configuration routing reads, with each number's rules parsed from its
        client's stored document. A document that no longer validates (say a user it names was
        removed) is logged and left out: its numbers fall back to the provider's default plan;
        `self.directory_problems` lists such documents after each call."""
        from heimbuero.office.rules_doc import RulesError, parse_rules_document

        with Session(self._engine) as session:
            provider = _provider(session.get(ProviderRow, 1))
            clients = {r.id: _client(r) for r in session.scalars(select(ClientRow))}
            numbers = {
                r.e164: Number(e164=r.e164, client=r.client)
                for r in session.scalars(select(NumberRow).order_by(NumberRow.e164))
            }
            users = {
                r.name: _user_record(r).office_user()
                for r in session.scalars(select(User).order_by(User.name))
            }
            groups = {
                r.name: self._group(session, r)
                for r in session.scalars(select(GroupRow).order_by(GroupRow.name))
            }
            trunks = {r.name: _trunk(r) for r in session.scalars(select(TrunkRow))}
            docs = [
                (r.client, dict(r.document))
                for r in session.scalars(select(RuleDocumentRow).order_by(RuleDocumentRow.client))
            ]
        base = Directory(provider, clients, numbers, users, groups, trunks)
        full = dict(numbers)
        problems: list[DirectoryProblem] = []
        for client_id, document in docs:
            try:
                parsed = parse_rules_document(document, client_id, base)
            except RulesError as exc:
                problems.append(DirectoryProblem(client_id, str(exc).splitlines()))
                log.warning("rules of client %s no longer validate: %s", client_id, exc)
                continue
            for e164, number in parsed.items():
                if e164 in full and full[e164].client == client_id:
                    full[e164] = number
        self.directory_problems = problems
        return Directory(provider, clients, full, users, groups, trunks)

    # -- overrides --------------------------------------------------------------------------

    @_bumps_office
    def set_override(self, override: Override) -> Override:
        """Set (replace) a client's override; `until` is stored in UTC."""
        until = None if override.until is None else as_utc(override.until)
        with Session(self._engine) as session:
            if session.get(ClientRow, override.client) is None:
                raise NotFound("client", override.client)
            row = session.get(OverrideRow, override.client)
            if row is None:
                row = OverrideRow(client=override.client, target=override.target, until=until)
                session.add(row)
            else:
                row.target, row.until = override.target, until
            session.commit()
        return Override(override.client, override.target, until)

    def get_override(self, client_id: str, now: datetime | None = None) -> Override | None:
        """The client's override; with `now`, None once it has expired (at `until` exactly)."""
        with Session(self._engine) as session:
            row = session.get(OverrideRow, client_id)
            if row is None:
                return None
            o = Override(row.client, row.target, _utc_opt(row.until))
        if now is not None and o.until is not None and o.until <= as_utc(now):
            return None
        return o

    @_bumps_office
    def clear_override(self, client_id: str) -> bool:
        with self._engine.begin() as conn:
            return bool(
                conn.execute(delete(OverrideRow).where(OverrideRow.client == client_id)).rowcount
            )

    def list_overrides(self, now: datetime | None = None) -> list[Override]:
        """Every override; with `now`, only those still active."""
        with Session(self._engine) as session:
            rows = [
                Override(r.client, r.target, _utc_opt(r.until))
                for r in session.scalars(select(OverrideRow).order_by(OverrideRow.client))
            ]
        if now is None:
            return rows
        at = as_utc(now)
        return [o for o in rows if o.until is None or o.until > at]

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
        _check_call_update(fields)
        with Session(self._engine) as session:
            row = session.get(CallRecordRow, record_id)
            if row is None:
                raise NotFound("call record", str(record_id))
            _apply_call_update(row, fields)
            session.commit()
            return _call_record(row)

    def apply_call_log(
        self, ops: Iterable[tuple[str, int, dict[str, Any]]], ids: dict[int, int]
    ) -> None:
        """Write a batch of call-record operations in one transaction, in order: ("start", n,
        fields of add_call_record) creates a record and notes its id as ids[n]; ("update", n,
        fields of update_call_record) changes record ids[n]. A batch that fails is not half
        written."""
        # Coalesced: a record started in this batch is inserted with its later changes, all
        # new records in one multi-row INSERT, the other changes as one executemany UPDATE per
        # set of columns. This runs in a worker thread while the event loop routes calls, and
        # the fewer statements, the less it holds the GIL.
        new: dict[int, dict[str, Any]] = {}
        changes: dict[int, dict[str, Any]] = {}
        for kind, number, fields in ops:
            if kind == "start":
                new[number] = {
                    "call_id": fields["call_id"], "client": fields.get("client"),
                    "number": fields["number"], "caller": fields["caller"],
                    "rule": fields.get("rule"), "step": fields.get("step"),
                    "answered_by": None, "answered_at": None, "ended_at": None,
                    "started_at": as_utc(fields["started_at"]), "ring_seconds": 0.0,
                    "talk_seconds": 0.0, "result": None,
                }  # fmt: skip
                continue
            _check_call_update(fields)
            values = {k: as_utc(v) if isinstance(v, datetime) else v for k, v in fields.items()}
            if number in new:
                new[number].update(values)
            elif number in ids:
                changes.setdefault(number, {}).update(values)
            # else: its start was in a batch that failed: nothing to update
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for number, values in changes.items():
            params = {f"v_{k}": v for k, v in values.items()}
            params["rid"] = ids[number]
            groups.setdefault(tuple(sorted(values)), []).append(params)
        with self._engine.begin() as conn:
            created: list[int] = []
            if new:
                result = conn.execute(
                    insert(CallRecordRow).returning(CallRecordRow.id, sort_by_parameter_order=True),
                    list(new.values()),
                )
                created = list(result.scalars())
            for columns, rows in groups.items():
                stmt = (
                    update(CallRecordRow)
                    .where(CallRecordRow.id == bindparam("rid"))
                    .values({c: bindparam(f"v_{c}") for c in columns})
                )
                conn.execute(stmt, rows)
        ids.update(zip(new, created, strict=True))

    def get_call_record(self, record_id: int) -> CallRecord | None:
        with Session(self._engine) as session:
            row = session.get(CallRecordRow, record_id)
            return None if row is None else _call_record(row)

    def list_call_records(self, client: str | None = None, limit: int = 100) -> list[CallRecord]:
        """The newest records first, of one client or all."""
        stmt = select(CallRecordRow).order_by(
            CallRecordRow.started_at.desc(), CallRecordRow.id.desc()
        )
        if client is not None:
            stmt = stmt.where(CallRecordRow.client == client)
        with Session(self._engine) as session:
            return [_call_record(r) for r in session.scalars(stmt.limit(limit))]

    def external_talk_seconds(self, client: str, since: datetime) -> float:
        """Talk time of the client's answered calls out through a trunk (answered by an
        `external:` target) that started at or after `since`: what its daily cap counts."""
        stmt = select(func.coalesce(func.sum(CallRecordRow.talk_seconds), 0.0)).where(
            CallRecordRow.client == client,
            CallRecordRow.started_at >= as_utc(since),
            CallRecordRow.answered_by.like("external:%"),
        )
        with Session(self._engine) as session:
            return float(session.scalar(stmt) or 0.0)

    def close_open_call_records(self, now: datetime) -> int:
        """Finish the records of calls cut off by a server stop (ended_at still empty): answered
        ones end 'answered' with talk time up to `now`, the others 'failed'. Run at startup."""
        at = as_utc(now)
        with Session(self._engine) as session:
            rows = session.scalars(
                select(CallRecordRow).where(CallRecordRow.ended_at.is_(None))
            ).all()
            for row in rows:
                row.ended_at = at
                if row.answered_at is not None:
                    answered = as_utc(row.answered_at)
                    row.talk_seconds = max(0.0, (at - answered).total_seconds())
                    row.ring_seconds = max(0.0, (answered - as_utc(row.started_at)).total_seconds())
                    row.result = row.result or "answered"
                else:
                    row.ring_seconds = max(0.0, (at - as_utc(row.started_at)).total_seconds())
                    row.result = row.result or "failed"
            session.commit()
            return len(rows)

    # -- API tokens -------------------------------------------------------------------------

    def create_token(self, user: str, name: str) -> tuple[ApiToken, str]:
        """A new API token for a user: (its metadata, the token). Only its hash is stored."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)  # 32 random bytes
        with Session(self._engine) as session:
            u = session.scalar(select(User).where(User.name == user))
            if u is None:
                raise NoSuchUser(user)
            exists = session.scalar(
                select(ApiTokenRow.id).where(ApiTokenRow.user_id == u.id, ApiTokenRow.name == name)
            )
            if exists is not None:
                raise AlreadyExists("token", f"{user}/{name}")
            row = ApiTokenRow(
                user_id=u.id, name=name, token_hash=token_hash(token), created_at=datetime.now(UTC)
            )
            session.add(row)
            session.commit()
            return ApiToken(row.id, user, name, as_utc(row.created_at)), token

    def verify_token(self, token: str) -> UserRecord | None:
        """The user an API token belongs to (and note its use), or None."""
        with Session(self._engine) as session:
            row = session.scalar(
                select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash(token))
            )
            if row is None:
                return None
            user = session.get(User, row.user_id)
            if user is None:
                return None
            row.last_used = datetime.now(UTC)
            session.commit()
            return _user_record(user)

    def list_tokens(self, user: str | None = None) -> list[ApiToken]:
        stmt = (
            select(ApiTokenRow, User.name)
            .join(User, User.id == ApiTokenRow.user_id)
            .order_by(User.name, ApiTokenRow.name)
        )
        if user is not None:
            stmt = stmt.where(User.name == user)
        with Session(self._engine) as session:
            return [
                ApiToken(t.id, u, t.name, as_utc(t.created_at), _utc_opt(t.last_used))
                for t, u in session.execute(stmt)
            ]

    def revoke_token(self, user: str, name: str) -> bool:
        with self._engine.begin() as conn:
            uid = select(User.id).where(User.name == user).scalar_subquery()
            return bool(
                conn.execute(
                    delete(ApiTokenRow).where(ApiTokenRow.user_id == uid, ApiTokenRow.name == name)
                ).rowcount
            )


def _mentions(data: Any, target: str) -> bool:
    """True when the JSON value contains the string `target` anywhere."""
    if isinstance(data, str):
        return data == target
    if isinstance(data, dict):
        return any(_mentions(v, target) for v in data.values())
    if isinstance(data, list):
        return any(_mentions(v, target) for v in data)
    return False


def _trunk_values(t: Trunk) -> dict[str, Any]:
    return {
        "name": t.name,
        "host": t.host,
        "port": t.port,
        "transport": t.transport,
        "prefixes": list(t.prefixes),
        "username": t.username,
        "password": t.password,
        "register": t.register,
        "inbound": {k: v for k, v in asdict(t.inbound).items() if v is not None},
        "call_policy": t.call_policy.to_json(),
    }


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
