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


class UnitOfWork:
    """Use as a context manager (see the module text). On SQLite a unit of work that may write
    starts with BEGIN IMMEDIATE: what it reads (say the directory a rules document is checked
    against) cannot change under it before it commits."""

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
        if self._write and self._engine.dialect.name == "sqlite":
            self.session.connection().exec_driver_sql("BEGIN IMMEDIATE")
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
