"""Store methods for the file-transfer service: file records, who may download, the download log."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select

from heimbuero.store.base import Repository
from heimbuero.store.models import FileDownloadRow, FilePartyRow, FileRow, as_utc

_FILE_COLUMNS = (
    FileRow.id,
    FileRow.owner,
    FileRow.name,
    FileRow.content_type,
    FileRow.size,
    FileRow.sha256,
    FileRow.duration_s,
    FileRow.created_at,
    FileRow.expires_at,
)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One stored file. `parties` are the users besides the owner who may download it."""

    id: str
    owner: str
    name: str
    content_type: str
    size: int
    sha256: str  # lower-case hex
    duration_s: float | None
    created_at: datetime
    expires_at: datetime
    parties: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DownloadRecord:
    """One logged download attempt."""

    file_id: str
    user: str | None
    at: datetime
    remote: str
    status: int
    bytes_sent: int


class FileRepository(Repository):
    """Works in the transaction of the unit of work that made it (see store/uow.py)."""

    def add_file_within_quota(self, record: FileRecord, quota_bytes: int | None) -> int | None:
        """Insert a file record unless the owner's unexpired files plus this one exceed
        `quota_bytes` (None: no quota). Returns None when inserted, else the bytes the owner
        already uses. Callers serialise uploads of one process around this call."""
        conn = self._conn()
        if quota_bytes is not None:
            used = int(
                conn.execute(
                    select(func.coalesce(func.sum(FileRow.size), 0)).where(
                        FileRow.owner == record.owner,
                        FileRow.expires_at > record.created_at,
                    )
                ).scalar_one()
            )
            if used + record.size > quota_bytes:
                return used
        conn.execute(
            insert(FileRow).values(
                id=record.id,
                owner=record.owner,
                name=record.name,
                content_type=record.content_type,
                size=record.size,
                sha256=record.sha256,
                duration_s=record.duration_s,
                created_at=record.created_at,
                expires_at=record.expires_at,
            )
        )
        return None

    def file_bytes_used(self, owner: str, now: datetime) -> int:
        """The total size of a user's files whose links have not expired at `now`."""
        conn = self._conn()
        return int(
            conn.execute(
                select(func.coalesce(func.sum(FileRow.size), 0)).where(
                    FileRow.owner == owner, FileRow.expires_at > now
                )
            ).scalar_one()
        )

    def get_file(self, file_id: str) -> FileRecord | None:
        """The file with its parties, or None (expired files too: callers decide)."""
        conn = self._conn()
        row = conn.execute(select(*_FILE_COLUMNS).where(FileRow.id == file_id)).first()
        if row is None:
            return None
        parties = conn.execute(
            select(FilePartyRow.user)
            .where(FilePartyRow.file_id == file_id)
            .order_by(FilePartyRow.user)
        ).scalars()
        return _record(row, tuple(parties))

    def list_files(self, owner: str | None = None) -> list[FileRecord]:
        """Files (of one owner, or everybody's), newest first, with their parties."""
        conn = self._conn()
        query = select(*_FILE_COLUMNS).order_by(FileRow.created_at.desc(), FileRow.id)
        if owner is not None:
            query = query.where(FileRow.owner == owner)
        rows = conn.execute(query).all()
        ids = [r.id for r in rows]
        parties: dict[str, list[str]] = {}
        # Chunks keep the IN list below every database's parameter limit.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for file_id, user in conn.execute(
                select(FilePartyRow.file_id, FilePartyRow.user)
                .where(FilePartyRow.file_id.in_(chunk))
                .order_by(FilePartyRow.user)
            ):
                parties.setdefault(file_id, []).append(user)
        return [_record(r, tuple(parties.get(r.id, ()))) for r in rows]

    def add_file_party(self, file_id: str, sender: str, recipient: str, now: datetime) -> bool:
        """Let `recipient` download the file when `sender` is its owner or a party and the
        link is still valid at `now`. True when the recipient may download it afterwards."""
        conn = self._conn()
        row = conn.execute(
            select(FileRow.owner, FileRow.expires_at).where(FileRow.id == file_id)
        ).first()
        if row is None or as_utc(row.expires_at) <= now:
            return False
        existing = set(
            conn.execute(select(FilePartyRow.user).where(FilePartyRow.file_id == file_id)).scalars()
        )
        if sender != row.owner and sender not in existing:
            return False
        if recipient != row.owner and recipient not in existing:
            conn.execute(insert(FilePartyRow).values(file_id=file_id, user=recipient))
        return True

    def delete_file_records(self, file_ids: Iterable[str]) -> list[str]:
        """Delete file records and their parties; returns the ids that existed."""
        wanted = list(dict.fromkeys(file_ids))
        gone: list[str] = []
        conn = self._conn()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            found = list(conn.execute(select(FileRow.id).where(FileRow.id.in_(chunk))).scalars())
            if not found:
                continue
            conn.execute(delete(FilePartyRow).where(FilePartyRow.file_id.in_(found)))
            conn.execute(delete(FileRow).where(FileRow.id.in_(found)))
            gone += found
        return gone

    def expired_file_ids(self, now: datetime) -> list[str]:
        """Ids of the files whose links expired at or before `now`."""
        conn = self._conn()
        return list(conn.execute(select(FileRow.id).where(FileRow.expires_at <= now)).scalars())

    def all_file_ids(self) -> set[str]:
        """Every file id on record (to find bytes on disk that have no record)."""
        conn = self._conn()
        return set(conn.execute(select(FileRow.id)).scalars())

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
        conn = self._conn()
        conn.execute(
            insert(FileDownloadRow).values(
                file_id=file_id[:64],
                user=None if user is None else user[:64],
                at=at,
                remote=remote[:64],
                status=status,
                bytes_sent=bytes_sent,
            )
        )

    def list_downloads(self, file_id: str) -> list[DownloadRecord]:
        """The logged download attempts of a file, oldest first."""
        conn = self._conn()
        rows = conn.execute(
            select(
                FileDownloadRow.file_id,
                FileDownloadRow.user,
                FileDownloadRow.at,
                FileDownloadRow.remote,
                FileDownloadRow.status,
                FileDownloadRow.bytes_sent,
            )
            .where(FileDownloadRow.file_id == file_id)
            .order_by(FileDownloadRow.id)
        ).all()
        return [
            DownloadRecord(r.file_id, r.user, as_utc(r.at), r.remote, r.status, r.bytes_sent)
            for r in rows
        ]


def _record(r: Any, parties: tuple[str, ...]) -> FileRecord:
    """A FileRecord from a row of _FILE_COLUMNS."""
    return FileRecord(
        id=r.id,
        owner=r.owner,
        name=r.name,
        content_type=r.content_type,
        size=int(r.size),
        sha256=r.sha256,
        duration_s=r.duration_s,
        created_at=as_utc(r.created_at),
        expires_at=as_utc(r.expires_at),
        parties=parties,
    )
