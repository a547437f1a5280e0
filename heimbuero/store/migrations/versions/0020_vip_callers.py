"""clients.vip_callers: callers a client wants treated specially, shown on the agent's card
when they call (a JSON list of {"number", "name", "remark"}; empty for none).

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision: str | None = "0019"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as t:
        t.add_column(sa.Column("vip_callers", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("clients") as t:
        t.drop_column("vip_callers")
