"""The unit of work: one SQLAlchemy session and one database transaction shared by every
repository a change touches. It commits everything (with the office revision bump, when
anything routing reads changed) or nothing.

    with store.unit_of_work() as uow:
        uow.users.add(...)
        uow.groups.update("team", members=[...])
    # committed here; an exception inside the block rolls everything back and propagates
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from heimbuero.store.billing import BillingRepository
from heimbuero.store.files import FileRepository
from heimbuero.store.messages import MessageRepository
from heimbuero.store.models import OfficeRevision
from heimbuero.store.repositories import (
    CallRepository,
    ClientRepository,
    GroupRepository,
    PresenceRepository,
    ProviderRepository,
    RulesRepository,
    TokenRepository,
    TrunkRepository,
    UserRepository,
)

# PostgreSQL: the transaction-level advisory lock every unit of work that may write takes
WRITE_LOCK = 0x6865696D  # "heim"


class UnitOfWork:
    """Use as a context manager (see the module text). A unit of work that may write holds
    the database's write lock from its start to its commit: what it reads (say the directory a
    rules document is checked against) cannot change under it. SQLite: BEGIN IMMEDIATE.
    PostgreSQL (READ COMMITTED, where a concurrent commit would otherwise show between two
    reads): one transaction-level advisory lock, taken first, shared by every server and
    command on that database and released by the commit or rollback. Writers take turns as
    they do on SQLite, waiting at most 5 s; readers never wait."""

    def __init__(self, engine: Engine, *, write: bool = True) -> None:
        self._engine = engine
        self._write = write
        self._office_changed = False
        self._after_commit: list[Callable[[], None]] = []
        self.session = Session(engine, expire_on_commit=False)
        self.users = UserRepository(self)
        self.tokens = TokenRepository(self)
        self.provider = ProviderRepository(self)
        self.clients = ClientRepository(self)
        self.groups = GroupRepository(self)
        self.trunks = TrunkRepository(self)
        self.rules = RulesRepository(self)
        self.calls = CallRepository(self)
        self.presence = PresenceRepository(self)
        self.messages = MessageRepository(self)
        self.files = FileRepository(self)
        self.billing = BillingRepository(self)  # billing (issue 15)

    def office_changed(self) -> None:
        """Something call routing reads changed: bump the office revision with the commit."""
        self._office_changed = True

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run `fn` once the transaction is committed (not at all when it rolls back)."""
        self._after_commit.append(fn)

    def __enter__(self) -> UnitOfWork:
        if self._write:
            dialect = self._engine.dialect.name
            if dialect == "sqlite":
                self.session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            elif dialect == "postgresql":
                # waits at most 5 s for it, as SQLite's busy_timeout (then an error, no hang)
                self.session.connection().exec_driver_sql(
                    "SELECT set_config('lock_timeout', '5s', true), "
                    f"pg_advisory_xact_lock({WRITE_LOCK})"
                )
        return self

    def commit(self) -> None:
        if self._office_changed:
            self.session.execute(
                update(OfficeRevision).values(revision=OfficeRevision.revision + 1)
            )
            self._office_changed = False
        self.session.commit()
        done, self._after_commit = self._after_commit, []
        for fn in done:
            fn()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self._write:
                self.commit()
            else:
                self.session.rollback()
        finally:
            self.session.close()
