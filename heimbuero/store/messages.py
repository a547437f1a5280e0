"""Store methods for the messenger: conversations and messages (history and the queue of
messages stored for offline recipients)."""

from __future__ import annotations

from sqlalchemy import Engine


class MessageStore:
    """Mixed into `Store`; uses its engine."""

    _engine: Engine
