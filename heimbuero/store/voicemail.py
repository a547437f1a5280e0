"""The voicemails table: add a recording, list a mailbox (its client's only), count new ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from .db import Store
from .models import VoicemailRow


@dataclass(frozen=True, slots=True)
class Voicemail:
    id: int
    client: str | None
    owner: str
    caller: str
    call_id: str
    path: str
    seconds: float
    created_at: datetime
    heard: bool


def _view(row: VoicemailRow) -> Voicemail:
    return Voicemail(
        row.id, row.client, row.owner, row.caller, row.call_id, row.path, row.seconds,
        row.created_at, row.heard,
    )  # fmt: skip


def add_voicemail(
    store: Store, client: str | None, owner: str, caller: str, call_id: str, path: str,
    seconds: float, at: datetime,
) -> int:  # fmt: skip
    """Store one recording; its id."""
    with store.unit_of_work() as uow:
        row = VoicemailRow(
            client=client, owner=owner, caller=caller[:128], call_id=call_id[:256],
            path=path, seconds=seconds, created_at=at, heard=False,
        )  # fmt: skip
        uow.session.add(row)
        uow.session.flush()
        return row.id


def list_voicemails(store: Store, client: str) -> list[Voicemail]:
    """A client's voicemails, newest first."""
    with store.unit_of_work(write=False) as uow:
        rows = uow.session.scalars(
            select(VoicemailRow)
            .where(VoicemailRow.client == client)
            .order_by(VoicemailRow.id.desc())
        )
        return [_view(r) for r in rows]


def get_voicemail(store: Store, client: str, voicemail_id: int) -> Voicemail | None:
    """One voicemail of `client`; another client's id is None (not found)."""
    with store.unit_of_work(write=False) as uow:
        row = uow.session.get(VoicemailRow, voicemail_id)
        return _view(row) if row is not None and row.client == client else None


def counts(store: Store, owner: str) -> tuple[int, int]:
    """(new, old) voicemails of a mailbox: the message-summary of RFC 3842."""
    with store.unit_of_work(write=False) as uow:
        rows = uow.session.execute(
            select(VoicemailRow.heard, func.count())
            .where(VoicemailRow.owner == owner)
            .group_by(VoicemailRow.heard)
        ).all()
    by = {bool(h): int(n) for h, n in rows}
    return by.get(False, 0), by.get(True, 0)


def all_counts(store: Store) -> dict[str, tuple[int, int]]:
    """(new, old) voicemails of every mailbox that has any (read once when the server starts;
    it keeps them up to date itself)."""
    with store.unit_of_work(write=False) as uow:
        rows = uow.session.execute(
            select(VoicemailRow.owner, VoicemailRow.heard, func.count()).group_by(
                VoicemailRow.owner, VoicemailRow.heard
            )
        ).all()
    out: dict[str, tuple[int, int]] = {}
    for owner, heard, n in rows:
        new, old = out.get(owner, (0, 0))
        out[owner] = (new, old + int(n)) if heard else (new + int(n), old)
    return out


def mailbox(store: Store, owner: str) -> list[Voicemail]:
    """Every voicemail of one mailbox (`voicemail:OWNER`), oldest first."""
    with store.unit_of_work(write=False) as uow:
        rows = uow.session.scalars(
            select(VoicemailRow).where(VoicemailRow.owner == owner).order_by(VoicemailRow.id)
        )
        return [_view(r) for r in rows]


def mark_heard(store: Store, owner: str, voicemail_id: int) -> bool:
    """Mark a voicemail of `owner` heard; False when it is not (or no longer) in that box."""
    with store.unit_of_work() as uow:
        row = uow.session.get(VoicemailRow, voicemail_id)
        if row is None or row.owner != owner:
            return False
        row.heard = True
        return True


def delete_voicemail(store: Store, owner: str, voicemail_id: int) -> str | None:
    """Delete a voicemail of `owner` (committed when this returns); its WAV's path (relative
    to the data directory) for the caller to remove, or None when it is not in that box."""
    with store.unit_of_work() as uow:
        row = uow.session.get(VoicemailRow, voicemail_id)
        if row is None or row.owner != owner:
            return None
        path = row.path
        uow.session.delete(row)
        return path
