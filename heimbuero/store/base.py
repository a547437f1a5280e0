"""The base of every repository: it works in the session of the unit of work that made it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from heimbuero.store.uow import UnitOfWork


class Repository:
    """Never commits: its unit of work commits all it did, or rolls it back."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    @property
    def _session(self) -> Session:
        return self._uow.session

    def _conn(self) -> Connection:
        """The unit of work's connection, for Core statements (same transaction)."""
        return self._uow.session.connection()
