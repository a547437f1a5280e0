"""Persistence: SQLAlchemy models, Alembic migrations, repositories per aggregate and the unit
of work that shares one transaction between them (uow.py), and the Store facade."""

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
from heimbuero.store.uow import UnitOfWork

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
    "UnitOfWork",
    "UserRecord",
]
