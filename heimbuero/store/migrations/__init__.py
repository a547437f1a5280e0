"""Alembic migrations of the heimbuero database, applied by Store.upgrade()."""
