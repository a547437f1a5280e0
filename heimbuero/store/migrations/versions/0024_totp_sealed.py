"""The web console's TOTP secrets are stored sealed (store/sealing.py): the column takes the
longer sealed form. Rows written in clear are sealed by the server at its next start.

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision: str | None = "0023"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_totp") as batch:
        batch.alter_column(
            "secret", type_=sa.String(200), existing_type=sa.String(64), existing_nullable=False
        )


def downgrade() -> None:
    # a sealed secret does not fit the old column: the second factors are dropped
    op.execute("DELETE FROM user_totp")
    with op.batch_alter_table("user_totp") as batch:
        batch.alter_column(
            "secret", type_=sa.String(64), existing_type=sa.String(200), existing_nullable=False
        )
