"""Persistence: SQLAlchemy models, Alembic migrations and the Store repository."""

from heimbuero.store.db import (
    AlreadyExists,
    ApiToken,
    BindingRecord,
    CallRecord,
    InUse,
    NoSuchUser,
    NotFound,
    SchemaError,
    Store,
    StoreError,
    UserExists,
    UserRecord,
)

__all__ = [
    "AlreadyExists",
    "ApiToken",
    "BindingRecord",
    "CallRecord",
    "InUse",
    "NoSuchUser",
    "NotFound",
    "SchemaError",
    "Store",
    "StoreError",
    "UserExists",
    "UserRecord",
]
