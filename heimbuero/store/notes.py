"""Call notes (Telefonnotizen) in the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from heimbuero.store.db import Store
from heimbuero.store.models import CallNoteRow


@dataclass(frozen=True, slots=True)
class CallNote:
    id: int
    client: str
    agent: str
    call_id: str | None
    caller_name: str
    caller_number: str
    concern: str
    callback: bool
    urgent: bool
    text: str
    created_at: datetime
    read_at: datetime | None
    done_at: datetime | None


def _utc(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _note(r: CallNoteRow) -> CallNote:
    return CallNote(
        r.id, r.client, r.agent, r.call_id, r.caller_name, r.caller_number, r.concern,
        r.callback, r.urgent, r.text, _utc(r.created_at) or r.created_at, _utc(r.read_at),
        _utc(r.done_at),
    )  # fmt: skip


class NoteStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, **fields: object) -> CallNote:
        with self.store.unit_of_work() as uow:
            row = CallNoteRow(**fields, created_at=datetime.now(UTC))
            uow.session.add(row)
            uow.session.flush()
            return _note(row)

    def by_caller(self, client: str, number: str, limit: int) -> list[CallNote]:
        """The client's newest notes whose caller number is `number`."""
        q = (
            select(CallNoteRow)
            .where(CallNoteRow.client == client, CallNoteRow.caller_number == number)
            .order_by(CallNoteRow.id.desc())
            .limit(limit)
        )
        with self.store.unit_of_work(write=False) as uow:
            return [_note(r) for r in uow.session.scalars(q)]

    def get(self, note_id: int) -> CallNote | None:
        with self.store.unit_of_work(write=False) as uow:
            row = uow.session.get(CallNoteRow, note_id)
            return None if row is None else _note(row)

    def list(self, client: str | None, limit: int = 100) -> list[CallNote]:
        q = select(CallNoteRow).order_by(CallNoteRow.id.desc()).limit(limit)
        if client is not None:
            q = q.where(CallNoteRow.client == client)
        with self.store.unit_of_work(write=False) as uow:
            return [_note(r) for r in uow.session.scalars(q)]

    def mark(self, note_id: int, field: str) -> CallNote | None:
        """Set read_at or done_at (once; the first time counts)."""
        with self.store.unit_of_work() as uow:
            row = uow.session.get(CallNoteRow, note_id)
            if row is None:
                return None
            if getattr(row, field) is None:
                setattr(row, field, datetime.now(UTC))
                if field == "done_at" and row.read_at is None:
                    row.read_at = row.done_at
            uow.session.flush()
            return _note(row)
