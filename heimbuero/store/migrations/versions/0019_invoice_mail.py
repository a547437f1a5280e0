"""billing_invoice_mails: every e-mail of an invoice to the client's billing address (when,
to whom, which document, sent or failed); the address itself is billing_buyers.email (0018).

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision: str | None = "0018"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_invoice_mails",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "invoice_id",
            sa.Integer(),
            sa.ForeignKey("billing_invoices.id", name="fk_invoice_mail_invoice"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("document", sa.String(8), nullable=False),
        sa.Column("sent_by", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(500), nullable=False),
        sa.UniqueConstraint("invoice_id", "attempt", name="uq_invoice_mail_attempt"),
    )
    op.create_index("ix_billing_invoice_mails_invoice_id", "billing_invoice_mails", ["invoice_id"])


def downgrade() -> None:
    op.drop_index("ix_billing_invoice_mails_invoice_id", table_name="billing_invoice_mails")
    op.drop_table("billing_invoice_mails")
