"""Store methods for the file-transfer service: file records, who may download, the download log."""

from __future__ import annotations

from sqlalchemy import Engine


class FileStore:
    """Mixed into `Store`; uses its engine."""

    _engine: Engine
