"""Backup codes of the web console's second factor: the SHA-256 of each unused code of a
user, kept with his TOTP secret.

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision: str | None = "0022"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_totp") as batch:
        batch.add_column(sa.Column("backup_codes", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_totp") as batch:
        batch.drop_column("backup_codes")
