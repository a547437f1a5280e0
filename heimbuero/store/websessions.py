"""Web console sessions in the database (a restart keeps them): the cookie carries a random
id, the table only its SHA-256, so a copy of the database logs nobody in."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from heimbuero.store.db import Store
from heimbuero.store.models import WebSessionRow


@dataclass(frozen=True, slots=True)
class WebSession:
    user: str
    csrf: str
    expires_at: datetime


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


class WebSessions:
    def __init__(self, store: Store, lifetime: timedelta = timedelta(hours=12)) -> None:
        self.store, self.lifetime = store, lifetime

    def create(self, user: str, now: datetime | None = None) -> tuple[str, WebSession]:
        """A new session for `user`: (the cookie's id, the session). Expired ones go."""
        now = now or datetime.now(UTC)
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = now + self.lifetime
        row = WebSessionRow(
            id_hash=_hash(session_id),
            user=user,
            csrf=csrf,
            created_at=now,
            expires_at=expires,
        )
        with self.store.unit_of_work() as uow:
            uow.session.execute(delete(WebSessionRow).where(WebSessionRow.expires_at < now))
            uow.session.add(row)
        return session_id, WebSession(user, csrf, expires)

    def get(self, session_id: str, now: datetime | None = None) -> WebSession | None:
        if not session_id or len(session_id) > 128:
            return None
        now = now or datetime.now(UTC)
        with self.store.unit_of_work(write=False) as uow:
            row = uow.session.scalar(
                select(WebSessionRow).where(WebSessionRow.id_hash == _hash(session_id))
            )
            if row is None:
                return None
            user, csrf, expires = row.user, row.csrf, row.expires_at
        if expires.tzinfo is None:  # SQLite keeps no zone: stored as UTC
            expires = expires.replace(tzinfo=UTC)
        if expires <= now:
            return None
        return WebSession(user, csrf, expires)

    def end(self, session_id: str) -> None:
        with self.store.unit_of_work() as uow:
            uow.session.execute(
                delete(WebSessionRow).where(WebSessionRow.id_hash == _hash(session_id))
            )

    def end_all_of(self, user: str, keep: str = "") -> None:
        """End every session of `user` except `keep` (after a password change)."""
        with self.store.unit_of_work() as uow:
            q = delete(WebSessionRow).where(WebSessionRow.user == user)
            if keep:
                q = q.where(WebSessionRow.id_hash != _hash(keep))
            uow.session.execute(q)
