"""E-invoices: the clients' invoice addresses (with a Leitweg-ID for public-sector buyers) and
each invoice's documents (PDF/A-3 with the CII XML, and the XML). The provider's own data
(name, address, VAT ID, bank, contact) lives in billing_settings as seller_* keys.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision: str | None = "0017"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_buyers",
        sa.Column(
            "client",
            sa.String(64),
            sa.ForeignKey("clients.id", name="fk_buyer_client", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("street", sa.String(200), nullable=False),
        sa.Column("postcode", sa.String(16), nullable=False),
        sa.Column("city", sa.String(100), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("vat_id", sa.String(32), nullable=False),
        sa.Column("leitweg_id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
    )
    op.create_table(
        "billing_invoice_files",
        sa.Column(
            "invoice_id",
            sa.Integer(),
            sa.ForeignKey("billing_invoices.id", name="fk_invoice_file_invoice"),
            primary_key=True,
        ),
        sa.Column("profile", sa.String(16), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("xml", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("billing_invoice_files")
    op.drop_table("billing_buyers")
