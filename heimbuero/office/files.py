"""The file-transfer service's rules: files streamed to disk with their SHA-256, size limits
and quotas, audio durations, who may download, link expiry, deletion."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from heimbuero.config import FileSettings
from heimbuero.store.db import Store

LINK_PATH = "/ft"  # uploads: POST /ft; downloads: GET /ft/<file id>


class FileService:
    """Files of the HTTP file-transfer service (Linphone's scheme) and of the HTTP API."""

    def __init__(
        self, store: Store, files_dir: Path, settings: FileSettings, public_url: str
    ) -> None:
        self.store = store
        self.files_dir = files_dir
        self.settings = settings
        self.public_url = public_url.rstrip("/")

    def link(self, file_id: str) -> str:
        """The download URL of a file."""
        return f"{self.public_url}{LINK_PATH}/{file_id}"

    def file_id_of(self, url: str) -> str | None:
        """The file a download URL of ours names; None for anything else."""
        prefix = f"{self.public_url}{LINK_PATH}/"
        if not url.startswith(prefix):
            return None
        rest = url[len(prefix) :]
        return rest if rest and "/" not in rest and "?" not in rest else None

    def grant(self, file_id: str, sender: str, recipient: str) -> bool:
        """`sender` passed the file's link to `recipient` in a message: the recipient may
        download it from now on. False (nothing granted) unless the sender is the file's
        owner or a party to it."""
        raise NotImplementedError

    def file_info_xml(self, file_id: str) -> bytes | None:
        """The RCS file-info document (application/vnd.gsma.rcs-ft-http+xml) of a stored file."""
        raise NotImplementedError

    def delete(self, file_ids: Iterable[str]) -> int:
        """Delete files (bytes and records); returns how many existed."""
        raise NotImplementedError

    def sweep(self, now: datetime) -> int:
        """Delete the files whose links expired; returns how many."""
        raise NotImplementedError
