"""Shared files (the file-transfer service's records): who may see, list, read the
download log of, and delete a file."""

from __future__ import annotations

from datetime import UTC, datetime

from heimbuero.app import policy
from heimbuero.app.errors import Forbidden, NotFound
from heimbuero.app.policy import Actor
from heimbuero.office.files import FileService
from heimbuero.store.files import DownloadRecord, FileRecord

NOT_FOUND = "no such file (or its link expired)"


class Files:
    def __init__(self, service: FileService) -> None:
        self.service = service

    def visible(self, actor: Actor, file_id: str, now: datetime | None = None) -> FileRecord:
        """The file when it is live and the actor may see it; otherwise NotFound (expired,
        missing and not-yours look alike, so links cannot be probed)."""
        record = self.service.get(file_id)
        now = now or datetime.now(UTC)
        if (
            record is None
            or record.expires_at <= now
            or not policy.may_read_file(actor, record.owner, record.parties)
        ):
            raise NotFound("", "", NOT_FOUND)
        return record

    def downloads(self, actor: Actor, file_id: str) -> list[DownloadRecord]:
        record = self.visible(actor, file_id)
        if actor.name != record.owner and not actor.staff:
            raise Forbidden("only the owner and staff may see who downloaded a file")
        return self.service.downloads(file_id)

    def list(
        self, actor: Actor, owner: str | None = None, now: datetime | None = None
    ) -> tuple[str, list[FileRecord]]:
        """(whose, their live files newest first): the actor's own, or (staff) `owner`'s."""
        who = actor.name if owner is None else owner
        if who != actor.name and not actor.staff:
            raise Forbidden("only admins and agents may list other users' files")
        now = now or datetime.now(UTC)
        return who, [f for f in self.service.list_files(who) if f.expires_at > now]

    def delete(self, actor: Actor, file_id: str) -> None:
        record = self.visible(actor, file_id)
        if not policy.may_delete_file(actor, record.owner):
            raise Forbidden("only the owner and admins may delete a file")
        self.service.delete([record.id])
