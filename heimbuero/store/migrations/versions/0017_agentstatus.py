"""users.status: an agent's own status (available, break, away, dnd, off).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision: str | None = "0016"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="available")
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("status")
