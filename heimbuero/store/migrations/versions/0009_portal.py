"""Client portal: the provider's country calling code, with which numbers typed nationally
('089 1234567') are read.

Revision ID: 0009
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0007"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider") as batch:
        batch.add_column(
            sa.Column("country_code", sa.Integer(), nullable=False, server_default="49")
        )


def downgrade() -> None:
    with op.batch_alter_table("provider") as batch:
        batch.drop_column("country_code")
