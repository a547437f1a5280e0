"""Alembic environment: runs the revisions on the connection Store.upgrade() hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from heimbuero.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    """Apply the revisions on one open connection, in one transaction."""
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can only ALTER tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            _run(conn)
        engine.dispose()
