"""Client portal: the provider's country calling code, with which numbers typed nationally
('089 1234567') are read; closures (Betriebsurlaub) as date ranges with a note.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider") as batch:
        batch.add_column(
            sa.Column("country_code", sa.Integer(), nullable=False, server_default="49")
        )

    op.create_table(
        "closures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "client_id",
            sa.String(64),
            sa.ForeignKey("clients.id", name="fk_closures_client", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("first", sa.Date(), nullable=False),
        sa.Column("last", sa.Date(), nullable=False),
        sa.Column("note", sa.String(200), nullable=False),
    )
    op.create_index("ix_closures_client", "closures", ["client_id"])


def downgrade() -> None:
    op.drop_index("ix_closures_client", table_name="closures")
    op.drop_table("closures")
    with op.batch_alter_table("provider") as batch:
        batch.drop_column("country_code")
