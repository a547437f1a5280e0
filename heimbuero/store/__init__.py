"""Persistence: SQLAlchemy models, Alembic migrations and the Store repository."""

from heimbuero.store.db import (
    BindingRecord,
    NoSuchUser,
    SchemaError,
    Store,
    StoreError,
    UserExists,
    UserRecord,
)

__all__ = [
    "BindingRecord",
    "NoSuchUser",
    "SchemaError",
    "Store",
    "StoreError",
    "UserExists",
    "UserRecord",
]
