"""Policies against toll fraud and for trust at the edge: what a client's calls out and its
forwarding may reach (`clients.call_policy`), what a trunk may carry and how its inbound calls
are authenticated (`trunks.call_policy`, `trunks.inbound`), and per-user SIP compatibility
switches (`users.sip_compat`). JSON objects, empty for "the safe defaults".

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as t:
        t.add_column(sa.Column("call_policy", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("trunks") as t:
        t.add_column(sa.Column("call_policy", sa.JSON(), nullable=False, server_default="{}"))
        t.add_column(sa.Column("inbound", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("users") as t:
        t.add_column(sa.Column("sip_compat", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("users") as t:
        t.drop_column("sip_compat")
    with op.batch_alter_table("trunks") as t:
        t.drop_column("inbound")
        t.drop_column("call_policy")
    with op.batch_alter_table("clients") as t:
        t.drop_column("call_policy")
