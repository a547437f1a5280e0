"""The errors store operations raise (every message fits one line)."""

from __future__ import annotations


class StoreError(Exception):
    """A store operation failed; the message says why in one line."""


class AlreadyExists(StoreError):
    """Something with that key is already stored."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} already exists")
        self.kind, self.key = kind, key


class NotFound(StoreError):
    """Nothing with that key is stored."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"no such {kind}: {key!r}")
        self.kind, self.key = kind, key


class InUse(StoreError):
    """The thing is still referenced (e.g. a group named by a client's rules)."""


class UserExists(AlreadyExists):
    """A user with that name is already stored."""

    def __init__(self, name: str) -> None:
        super().__init__("user", name)
        self.name = name


class NoSuchUser(NotFound):
    """No user with that name is stored."""

    def __init__(self, name: str) -> None:
        super().__init__("user", name)
        self.name = name


class SchemaError(StoreError):
    """The database schema cannot be brought to (or is not at) the version this code expects."""
