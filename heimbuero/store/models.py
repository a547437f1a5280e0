"""SQLAlchemy ORM models: the tables the Alembic migrations create."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base holding the metadata of every heimbuero table."""


class User(Base):
    """An account: SIP digest hashes (HA1) and an argon2id hash for login; never the password."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("name", name="uq_users_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    ha1_md5: Mapped[str] = mapped_column(String(32))
    ha1_sha256: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Binding(Base):
    """A SIP registration (one Contact of an address of record), persisted by the registrar."""

    __tablename__ = "bindings"
    __table_args__ = (
        UniqueConstraint("aor", "contact", name="uq_bindings_aor_contact"),
        Index("ix_bindings_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    aor: Mapped[str] = mapped_column(String(64))
    contact: Mapped[str] = mapped_column(Text)
    received: Mapped[str] = mapped_column(Text)
    connection_id: Mapped[str | None] = mapped_column(Text)
    instance: Mapped[str | None] = mapped_column(Text)
    reg_id: Mapped[int | None] = mapped_column(Integer)
    q: Mapped[float | None] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    call_id: Mapped[str] = mapped_column(Text)
    cseq: Mapped[int] = mapped_column(Integer)
    user_agent: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)
