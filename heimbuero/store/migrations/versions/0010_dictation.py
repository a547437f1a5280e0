"""Dictation: jobs, their audio parts and history, client dictation profiles, resumable uploads.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "dictation_profiles",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("review", sa.Boolean(), nullable=False),
        sa.Column("email", sa.String(254)),
        sa.Column("template_sha256", sa.String(64)),
        sa.Column("template", sa.LargeBinary()),
    )
    op.create_table(
        "dictation_jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("work_type", sa.String(16), nullable=False),
        sa.Column("priority", sa.String(8), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("comments", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("pool_state", sa.String(24), nullable=False),
        sa.Column("typist", sa.String(64)),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("draft", sa.Text(), nullable=False),
        sa.Column("draft_version", sa.Integer(), nullable=False),
        sa.Column("remark", sa.Text()),
        sa.Column("document_file", sa.String(64)),
        sa.Column("characters", sa.Integer()),
        sa.Column("normzeilen", sa.Integer()),
        sa.Column("line_chars", sa.Integer()),
        sa.Column("audio_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_dictation_jobs_client", "dictation_jobs", ["client_id"])
    op.create_index("ix_dictation_jobs_state", "dictation_jobs", ["state"])
    op.create_table(
        "dictation_parts",
        sa.Column(
            "job_id",
            sa.Integer(),
            sa.ForeignKey("dictation_jobs.id", name="fk_dictation_parts_job", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Float()),
    )
    op.create_table(
        "dictation_history",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "job_id",
            sa.Integer(),
            sa.ForeignKey("dictation_jobs.id", name="fk_dictation_history_job", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
    )
    op.create_index("ix_dictation_history_job", "dictation_history", ["job_id"])
    op.create_table(
        "dictation_uploads",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dictation_uploads_owner", "dictation_uploads", ["owner"])


def downgrade() -> None:
    op.drop_table("dictation_uploads")
    op.drop_table("dictation_history")
    op.drop_table("dictation_parts")
    op.drop_table("dictation_jobs")
    op.drop_table("dictation_profiles")
