"""Presence: subscriptions (RFC 6665 dialogs held by the server) and published state (RFC 3903).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Create the presence tables (the dialog state itself is a JSON document per row)."""
    op.create_table(
        "presence_subscriptions",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("presentity", sa.String(64), nullable=False),
        sa.Column("watcher", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index(
        "ix_presence_subscriptions_expires_at", "presence_subscriptions", ["expires_at"]
    )
    op.create_table(
        "presence_publications",
        sa.Column("etag", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("presence_publications")
    op.drop_index("ix_presence_subscriptions_expires_at", "presence_subscriptions")
    op.drop_table("presence_subscriptions")
