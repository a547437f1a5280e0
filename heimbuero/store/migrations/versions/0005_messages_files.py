"""Messenger and files: conversations, messages (history and store-and-forward queue), files
of the file-transfer service, who may download them, and the download log.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_a", sa.String(64), nullable=False),
        sa.Column("user_b", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_a", "user_b", name="uq_conversations_users"),
    )
    op.create_index("ix_conversations_user_b", "conversations", ["user_b"])
    op.create_index("ix_conversations_last_at", "conversations", ["last_at"])
    op.create_table(
        "messages",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "conversation_id",
            sa.Integer(),
            sa.ForeignKey("conversations.id", name="fk_messages_conversation", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("imdn_id", sa.String(200)),
        sa.Column("imdn_state", sa.String(16)),
        sa.Column("file_id", sa.String(64)),
        sa.Column("origin", sa.String(8), nullable=False),
    )
    op.create_index(
        "ix_messages_conversation_created", "messages", ["conversation_id", "created_at"]
    )
    op.create_index("ix_messages_recipient_state", "messages", ["recipient", "state"])
    op.create_index("ix_messages_imdn_id", "messages", ["imdn_id"])
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("duration_s", sa.Float()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_files_owner", "files", ["owner"])
    op.create_index("ix_files_expires_at", "files", ["expires_at"])
    op.create_table(
        "file_parties",
        sa.Column(
            "file_id",
            sa.String(64),
            sa.ForeignKey("files.id", name="fk_file_parties_file", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user", sa.String(64), primary_key=True),
    )
    op.create_table(
        "file_downloads",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("user", sa.String(64)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("remote", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_file_downloads_file", "file_downloads", ["file_id"])


def downgrade() -> None:
    op.drop_index("ix_file_downloads_file", "file_downloads")
    op.drop_table("file_downloads")
    op.drop_table("file_parties")
    op.drop_index("ix_files_expires_at", "files")
    op.drop_index("ix_files_owner", "files")
    op.drop_table("files")
    op.drop_index("ix_messages_imdn_id", "messages")
    op.drop_index("ix_messages_recipient_state", "messages")
    op.drop_index("ix_messages_conversation_created", "messages")
    op.drop_table("messages")
    op.drop_index("ix_conversations_last_at", "conversations")
    op.drop_index("ix_conversations_user_b", "conversations")
    op.drop_table("conversations")
