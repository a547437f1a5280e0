"""The office: provider, clients, numbers, groups, trunks, rules, overrides, call records,
API tokens; users gain client, display_name and mobile.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    """Create the office tables and add the new user columns (existing users are kept)."""
    op.create_table(
        "provider",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("vat_id", sa.String(64), nullable=False),
        sa.Column("iban", sa.String(64), nullable=False),
        sa.Column("bic", sa.String(16), nullable=False),
        sa.Column("default_steps", sa.JSON(), nullable=False),
    )
    op.create_table(
        "clients",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("trade", sa.String(200), nullable=False),
        sa.Column("contact_person", sa.String(200), nullable=False),
        sa.Column("greeting", sa.Text(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("bundesland", sa.String(2), nullable=False),
        sa.Column("closure_days", sa.JSON(), nullable=False),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("client", sa.String(64), nullable=True))
        batch.add_column(sa.Column("display_name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("mobile", sa.String(20), nullable=True))
        batch.create_foreign_key(
            "fk_users_client", "clients", ["client"], ["id"], ondelete="SET NULL"
        )
    op.create_table(
        "numbers",
        sa.Column("e164", sa.String(20), primary_key=True),
        sa.Column(
            "client",
            sa.String(64),
            sa.ForeignKey("clients.id", name="fk_numbers_client", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    op.create_index("ix_numbers_client", "numbers", ["client"])
    op.create_table(
        "groups",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("strategy", sa.String(16), nullable=False),
    )
    op.create_table(
        "group_members",
        sa.Column(
            "group",
            sa.String(64),
            sa.ForeignKey("groups.name", name="fk_group_members_group", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "user",
            sa.String(64),
            sa.ForeignKey("users.name", name="fk_group_members_user", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
    )
    op.create_table(
        "trunks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("prefixes", sa.JSON(), nullable=False),
        sa.Column("username", sa.String(255), nullable=True),
        # in clear: registering to the carrier needs the password itself
        sa.Column("password", sa.String(255), nullable=True),
        sa.Column("register", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "rule_documents",
        sa.Column(
            "client",
            sa.String(64),
            sa.ForeignKey("clients.id", name="fk_rule_documents_client", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "overrides",
        sa.Column(
            "client",
            sa.String(64),
            sa.ForeignKey("clients.id", name="fk_overrides_client", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "call_records",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("caller", sa.Text(), nullable=False),
        sa.Column("rule", sa.String(200), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("answered_by", sa.String(64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ring_seconds", sa.Float(), nullable=False),
        sa.Column("talk_seconds", sa.Float(), nullable=False),
        sa.Column("result", sa.String(16), nullable=True),
    )
    op.create_index("ix_call_records_client_started", "call_records", ["client", "started_at"])
    op.create_index("ix_call_records_call_id", "call_records", ["call_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_api_tokens_user", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
        sa.UniqueConstraint("user_id", "name", name="uq_api_tokens_user_name"),
    )


def downgrade() -> None:
    """Drop the office tables and the new user columns."""
    op.drop_table("api_tokens")
    op.drop_index("ix_call_records_call_id", table_name="call_records")
    op.drop_index("ix_call_records_client_started", table_name="call_records")
    op.drop_table("call_records")
    op.drop_table("overrides")
    op.drop_table("rule_documents")
    op.drop_table("trunks")
    op.drop_table("group_members")
    op.drop_table("groups")
    op.drop_index("ix_numbers_client", table_name="numbers")
    op.drop_table("numbers")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("fk_users_client", type_="foreignkey")
        batch.drop_column("mobile")
        batch.drop_column("display_name")
        batch.drop_column("client")
    op.drop_table("clients")
    op.drop_table("provider")
