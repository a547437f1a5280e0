"""Store methods for dictation: jobs, their audio parts and history, client profiles, and
resumable uploads. Works in the transaction of the unit of work that made it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from heimbuero.store.base import Repository
from heimbuero.store.models import (
    DictationEventRow,
    DictationJobRow,
    DictationPartRow,
    DictationProfileRow,
    DictationUploadRow,
    FileRow,
    as_utc,
)


@dataclass(frozen=True, slots=True)
class PartRecord:
    position: int
    file_id: str
    name: str
    content_type: str
    size: int
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    at: datetime
    actor: str
    action: str
    state: str
    note: str


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    client_id: str
    author: str
    title: str
    work_type: str
    priority: str
    due_at: datetime | None
    comments: str
    source: str
    state: str
    pool_state: str
    typist: str | None
    locked_until: datetime | None
    draft: str
    draft_version: int
    remark: str | None
    document_file: str | None
    characters: int | None
    normzeilen: int | None
    line_chars: int | None
    audio_seconds: float
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    parts: tuple[PartRecord, ...] = ()
    history: tuple[HistoryRecord, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    client_id: str
    review: bool = False
    email: str | None = None
    template_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class UploadRecord:
    id: str
    owner: str
    length: int
    name: str
    content_type: str
    created_at: datetime
    expires_at: datetime


def _utc(v: datetime | None) -> datetime | None:
    return None if v is None else as_utc(v)


def _job(
    r: Any, parts: tuple[PartRecord, ...] = (), history: tuple[HistoryRecord, ...] = ()
) -> JobRecord:
    return JobRecord(
        id=r.id, client_id=r.client_id, author=r.author, title=r.title, work_type=r.work_type,
        priority=r.priority, due_at=_utc(r.due_at), comments=r.comments, source=r.source,
        state=r.state, pool_state=r.pool_state, typist=r.typist,
        locked_until=_utc(r.locked_until), draft=r.draft, draft_version=r.draft_version,
        remark=r.remark, document_file=r.document_file, characters=r.characters,
        normzeilen=r.normzeilen, line_chars=r.line_chars, audio_seconds=r.audio_seconds,
        created_at=as_utc(r.created_at), updated_at=as_utc(r.updated_at),
        delivered_at=_utc(r.delivered_at), parts=parts, history=history,
    )  # fmt: skip


class DictationRepository(Repository):
    # -- jobs --

    def add_job(self, values: dict[str, Any], parts: list[PartRecord]) -> int:
        conn = self._conn()
        result = conn.execute(insert(DictationJobRow).values(**values))
        job_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        for p in parts:
            conn.execute(
                insert(DictationPartRow).values(
                    job_id=job_id, position=p.position, file_id=p.file_id, name=p.name,
                    content_type=p.content_type, size=p.size, duration_s=p.duration_s,
                )
            )  # fmt: skip
        return job_id

    def get_job(self, job_id: int, full: bool = True) -> JobRecord | None:
        conn = self._conn()
        row = conn.execute(
            select(DictationJobRow.__table__).where(DictationJobRow.id == job_id)
        ).first()
        if row is None:
            return None
        if not full:
            return _job(row)
        parts = tuple(
            PartRecord(p.position, p.file_id, p.name, p.content_type, int(p.size), p.duration_s)
            for p in conn.execute(
                select(DictationPartRow.__table__)
                .where(DictationPartRow.job_id == job_id)
                .order_by(DictationPartRow.position)
            )
        )
        history = tuple(
            HistoryRecord(as_utc(h.at), h.actor, h.action, h.state, h.note)
            for h in conn.execute(
                select(DictationEventRow.__table__)
                .where(DictationEventRow.job_id == job_id)
                .order_by(DictationEventRow.id)
            )
        )
        return _job(row, parts, history)

    def list_jobs(
        self,
        client_id: str | None = None,
        states: tuple[str, ...] | None = None,
        work_type: str | None = None,
        limit: int = 500,
    ) -> list[JobRecord]:
        query = select(DictationJobRow.__table__).order_by(DictationJobRow.id.desc()).limit(limit)
        if client_id is not None:
            query = query.where(DictationJobRow.client_id == client_id)
        if states is not None:
            query = query.where(DictationJobRow.state.in_(states))
        if work_type is not None:
            query = query.where(DictationJobRow.work_type == work_type)
        return [_job(r) for r in self._conn().execute(query)]

    def update_job(self, job_id: int, where: dict[str, Any] | None = None, **values: Any) -> bool:
        """Set `values` on the job when its columns equal `where` (compare-and-set); True when
        a row changed. With SQLite's BEGIN IMMEDIATE and PostgreSQL's row lock both, two
        racing callers cannot both see their condition hold."""
        stmt = update(DictationJobRow).where(DictationJobRow.id == job_id)
        for key, expected in (where or {}).items():
            stmt = stmt.where(getattr(DictationJobRow, key) == expected)
        return bool(self._conn().execute(stmt.values(**values)).rowcount == 1)

    def expire_locks(self, now: datetime) -> list[tuple[int, str | None, str]]:
        """Jobs whose typist lock ended at or before `now` go back to their pool state;
        returns (job id, typist, new state) of each."""
        conn = self._conn()
        rows = conn.execute(
            select(DictationJobRow.id, DictationJobRow.typist, DictationJobRow.pool_state).where(
                DictationJobRow.state == "in_progress", DictationJobRow.locked_until <= now
            )
        ).all()
        for r in rows:
            conn.execute(
                update(DictationJobRow)
                .where(DictationJobRow.id == r.id)
                .values(state=r.pool_state, typist=None, locked_until=None, updated_at=now)
            )
        return [(r.id, r.typist, r.pool_state) for r in rows]

    def add_history(
        self, job_id: int, at: datetime, actor: str, action: str, state: str, note: str = ""
    ) -> None:
        self._conn().execute(
            insert(DictationEventRow).values(
                job_id=job_id, at=at, actor=actor[:64], action=action, state=state, note=note
            )
        )

    def keep_files(self, file_ids: list[str], until: datetime) -> None:
        """Let a job's files (audio parts, document) live until `until`: an open job's stay,
        a delivered job's follow the file service's link expiry from the delivery."""
        ids = [i for i in file_ids if i]
        if ids:
            self._conn().execute(
                update(FileRow).where(FileRow.id.in_(ids)).values(expires_at=until)
            )

    # -- profiles --

    def get_profile(self, client_id: str) -> ProfileRecord:
        t = DictationProfileRow
        row = (
            self._conn()
            .execute(
                select(t.client_id, t.review, t.email, t.template_sha256).where(
                    t.client_id == client_id
                )
            )
            .first()
        )
        if row is None:
            return ProfileRecord(client_id)
        return ProfileRecord(row.client_id, bool(row.review), row.email, row.template_sha256)

    def put_profile(self, p: ProfileRecord) -> None:
        """Store the profile's settings (the template's bytes stay: set_template)."""
        conn = self._conn()
        values = {"review": p.review, "email": p.email, "template_sha256": p.template_sha256}
        done = conn.execute(
            update(DictationProfileRow)
            .where(DictationProfileRow.client_id == p.client_id)
            .values(**values)
        )
        if done.rowcount == 0:
            conn.execute(insert(DictationProfileRow).values(client_id=p.client_id, **values))

    def set_template(self, client_id: str, data: bytes | None) -> None:
        """The letterhead's bytes (the profile row must exist: put_profile first)."""
        self._conn().execute(
            update(DictationProfileRow)
            .where(DictationProfileRow.client_id == client_id)
            .values(template=data)
        )

    def get_template(self, client_id: str) -> bytes | None:
        return (
            self._conn()
            .execute(
                select(DictationProfileRow.template).where(
                    DictationProfileRow.client_id == client_id
                )
            )
            .scalar()
        )

    # -- uploads --

    def add_upload(self, u: UploadRecord) -> None:
        self._conn().execute(
            insert(DictationUploadRow).values(
                id=u.id, owner=u.owner, length=u.length, name=u.name,
                content_type=u.content_type, created_at=u.created_at, expires_at=u.expires_at,
            )
        )  # fmt: skip

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        r = (
            self._conn()
            .execute(select(DictationUploadRow.__table__).where(DictationUploadRow.id == upload_id))
            .first()
        )
        if r is None:
            return None
        return UploadRecord(
            r.id, r.owner, int(r.length), r.name, r.content_type,
            as_utc(r.created_at), as_utc(r.expires_at),
        )  # fmt: skip

    def pending_upload_bytes(self, owner: str, now: datetime) -> int:
        """Bytes announced by the owner's unfinished uploads (they count against the quota)."""
        return int(
            self._conn()
            .execute(
                select(func.coalesce(func.sum(DictationUploadRow.length), 0)).where(
                    DictationUploadRow.owner == owner, DictationUploadRow.expires_at > now
                )
            )
            .scalar_one()
        )

    def delete_upload(self, upload_id: str) -> None:
        self._conn().execute(delete(DictationUploadRow).where(DictationUploadRow.id == upload_id))

    def expired_uploads(self, now: datetime) -> list[str]:
        return list(
            self._conn()
            .execute(select(DictationUploadRow.id).where(DictationUploadRow.expires_at <= now))
            .scalars()
        )
