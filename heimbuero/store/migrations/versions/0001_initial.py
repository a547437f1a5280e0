"""Initial schema: users and SIP bindings.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Create the users and bindings tables."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "bindings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("aor", sa.String(64), nullable=False),
        sa.Column("contact", sa.Text(), nullable=False),
        sa.Column("received", sa.Text(), nullable=False),
        sa.Column("connection_id", sa.Text(), nullable=True),
        sa.Column("instance", sa.Text(), nullable=True),
        sa.Column("reg_id", sa.Integer(), nullable=True),
        sa.Column("q", sa.Float(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("cseq", sa.Integer(), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.UniqueConstraint("aor", "contact", name="uq_bindings_aor_contact"),
    )
    op.create_index("ix_bindings_expires_at", "bindings", ["expires_at"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_bindings_expires_at", table_name="bindings")
    op.drop_table("bindings")
    op.drop_table("users")
