"""A client's dictation number: a number of the client whose calls start dictation by phone
for the client (`heimbuero number add NUMBER --client ID --dictation`).

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision: str | None = "0024"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("numbers") as batch:
        batch.add_column(
            sa.Column("dictation", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("numbers") as batch:
        batch.drop_column("dictation")
