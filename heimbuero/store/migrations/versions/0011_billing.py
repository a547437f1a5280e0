"""Billing: provider billing settings, tariff templates, client tariffs from a date, meter
readings (the billable events as they ended), the usage lines rated from them, invoices and
the gapless invoice number counter.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "billing_tariffs",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("doc", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "billing_client_tariffs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("valid_from", sa.String(10), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("doc", sa.JSON(), nullable=False),
        sa.UniqueConstraint("client", "valid_from", name="uq_client_tariff_from"),
    )
    op.create_table(
        "billing_readings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.UniqueConstraint("source_kind", "source_id", name="uq_reading_source"),
    )
    op.create_index("ix_billing_readings_client_month", "billing_readings", ["client", "month"])
    op.create_table(
        "billing_usage",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "reading_id",
            sa.Integer(),
            sa.ForeignKey("billing_readings.id", name="fk_usage_reading"),
            nullable=False,
        ),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quantity", sa.String(32), nullable=False),
        sa.Column("unit_price", sa.String(48), nullable=False),
        sa.Column("surcharge", sa.String(16), nullable=False),
        sa.Column("surcharge_pct", sa.String(16), nullable=False),
        sa.Column("vat_rate", sa.String(8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_billing_usage_client_month", "billing_usage", ["client", "month"])
    op.create_index("ix_billing_usage_reading", "billing_usage", ["reading_id"])
    op.create_table(
        "billing_invoice_counter",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("last", sa.Integer(), nullable=False),
    )
    op.create_table(
        "billing_invoices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("cancels", sa.Integer(), nullable=True),
        sa.Column("cancelled_by", sa.Integer(), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.Column("vat", sa.BigInteger(), nullable=False),
        sa.Column("gross", sa.BigInteger(), nullable=False),
        sa.Column("doc", sa.JSON(), nullable=False),
        sa.UniqueConstraint("number", name="uq_invoice_number"),
    )
    op.create_index("ix_billing_invoices_client_month", "billing_invoices", ["client", "month"])


def downgrade() -> None:
    op.drop_table("billing_invoices")
    op.drop_table("billing_invoice_counter")
    op.drop_table("billing_usage")
    op.drop_table("billing_readings")
    op.drop_table("billing_client_tariffs")
    op.drop_table("billing_tariffs")
    op.drop_table("billing_settings")
