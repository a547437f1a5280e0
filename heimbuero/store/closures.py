"""Closures (Betriebsurlaub) of a client: date ranges with a note. Routing sees them as the
client's closure days (merged into Client.closure_days when the directory is loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from heimbuero.store.models import ClosureRow

if TYPE_CHECKING:
    from heimbuero.store.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class Closure:
    id: int
    client: str
    first: date
    last: date
    note: str = ""

    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "client": self.client,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "note": self.note,
        }


def _closure(r: ClosureRow) -> Closure:
    return Closure(r.id, r.client_id, r.first, r.last, r.note)


def add(uow: UnitOfWork, client: str, first: date, last: date, note: str) -> Closure:
    row = ClosureRow(client_id=client, first=first, last=last, note=note)
    uow.session.add(row)
    uow.session.flush()
    uow.office_changed()
    return _closure(row)


def count(uow: UnitOfWork, client: str) -> int:
    q = select(func.count()).select_from(ClosureRow).where(ClosureRow.client_id == client)
    return int(uow.session.scalar(q) or 0)


def list_for(session: Session, client: str | None = None) -> list[Closure]:
    q = select(ClosureRow).order_by(ClosureRow.client_id, ClosureRow.first, ClosureRow.id)
    if client is not None:
        q = q.where(ClosureRow.client_id == client)
    return [_closure(r) for r in session.scalars(q)]


def remove(uow: UnitOfWork, client: str, closure_id: int) -> bool:
    q = delete(ClosureRow).where(ClosureRow.client_id == client, ClosureRow.id == closure_id)
    gone = uow.session.execute(q).rowcount > 0  # type: ignore[attr-defined]
    if gone:
        uow.office_changed()
    return bool(gone)
