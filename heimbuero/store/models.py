"""SQLAlchemy ORM models: the tables the Alembic migrations create."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def as_utc(value: datetime) -> datetime:
    """A time column's value as an aware UTC datetime: SQLite hands back naive ones, and
    everything is written in UTC (aware values in other zones are converted)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base holding the metadata of every heimbuero table."""


class OfficeRevision(Base):
    """One row: bumped by every change that call routing reads (users, clients, rules…)."""

    __tablename__ = "office_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)


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
    # the client business a client/employee user belongs to (migration 0002)
    client: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("clients.id", name="fk_users_client", ondelete="SET NULL")
    )
    display_name: Mapped[str | None] = mapped_column(String(200))
    mobile: Mapped[str | None] = mapped_column(String(20))  # E.164
    # per-user SIP compatibility switches, e.g. RFC 2069 digests (migration 0006)
    sip_compat: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # an agent's own status (domain.model.AGENT_STATUSES; migration 0017)
    status: Mapped[str] = mapped_column(String(16), default="available", server_default="available")


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


# -- the office: provider, clients, numbers, groups, trunks, rules, overrides, calls, tokens ----


class ProviderRow(Base):
    """The office service itself; a single row with id 1."""

    __tablename__ = "provider"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(Text, default="")
    vat_id: Mapped[str] = mapped_column(String(64), default="")
    iban: Mapped[str] = mapped_column(String(64), default="")
    bic: Mapped[str] = mapped_column(String(16), default="")
    default_steps: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # portal: numbers typed nationally are read with this country calling code (migration 0009)
    country_code: Mapped[int] = mapped_column(Integer, default=49, server_default="49")


class ClientRow(Base):
    """A client business served by the provider."""

    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    trade: Mapped[str] = mapped_column(String(200), default="")
    contact_person: Mapped[str] = mapped_column(String(200), default="")
    greeting: Mapped[str] = mapped_column(Text, default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    timezone: Mapped[str] = mapped_column(String(64))
    bundesland: Mapped[str] = mapped_column(String(2))
    closure_days: Mapped[list[Any]] = mapped_column(JSON, default=list)  # ISO dates
    # allowed destinations, approved forwarding numbers, caps (migration 0006)
    call_policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    email: Mapped[str] = mapped_column(String(254), default="")  # call notes by e-mail (0008)
    # [{"number", "name", "remark"}]: callers the agent's card names (0020)
    vip_callers: Mapped[list[Any]] = mapped_column(JSON, default=list)


class NumberRow(Base):
    """A phone number (E.164) owned by a client."""

    __tablename__ = "numbers"
    __table_args__ = (Index("ix_numbers_client", "client"),)

    e164: Mapped[str] = mapped_column(String(20), primary_key=True)
    client: Mapped[str] = mapped_column(
        String(64), ForeignKey("clients.id", name="fk_numbers_client", ondelete="CASCADE")
    )
    # a dictation number: its calls go to dictation by phone for the client (migration 0025)
    dictation: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class GroupRow(Base):
    """An agent group and how it rings its members."""

    __tablename__ = "groups"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    strategy: Mapped[str] = mapped_column(String(16))


class GroupMemberRow(Base):
    """A user in a group, at a position (the order longest-idle ties and round robin use)."""

    __tablename__ = "group_members"

    group: Mapped[str] = mapped_column(
        String(64),
        ForeignKey("groups.name", name="fk_group_members_group", ondelete="CASCADE"),
        primary_key=True,
    )
    user: Mapped[str] = mapped_column(
        String(64),
        ForeignKey("users.name", name="fk_group_members_user", ondelete="CASCADE"),
        primary_key=True,
    )
    position: Mapped[int] = mapped_column(Integer)


class TrunkRow(Base):
    """A carrier connection."""

    __tablename__ = "trunks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    transport: Mapped[str] = mapped_column(String(8))
    prefixes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    username: Mapped[str | None] = mapped_column(String(255))
    # Stored in clear on purpose: registering to the carrier needs the password itself (digest
    # auth as a client), so it cannot be hashed. The database file is mode 0600 for this reason.
    password: Mapped[str | None] = mapped_column(String(255))
    register: Mapped[bool] = mapped_column(Boolean, default=False)
    # allowed destinations and caps of calls out (migration 0006)
    call_policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # how inbound calls from the carrier are authenticated (migration 0006)
    inbound: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RuleDocumentRow(Base):
    """A client's validated rules document (the YAML/JSON form, as a dict)."""

    __tablename__ = "rule_documents"

    client: Mapped[str] = mapped_column(
        String(64),
        ForeignKey("clients.id", name="fk_rule_documents_client", ondelete="CASCADE"),
        primary_key=True,
    )
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OverrideRow(Base):
    """A client's active feature-code override (*21 office, *22 mobile)."""

    __tablename__ = "overrides"

    client: Mapped[str] = mapped_column(
        String(64),
        ForeignKey("clients.id", name="fk_overrides_client", ondelete="CASCADE"),
        primary_key=True,
    )
    target: Mapped[str] = mapped_column(String(16))
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # UTC


class CallRecordRow(Base):
    """One call as billing sees it. `client` is no foreign key: records outlive clients."""

    __tablename__ = "call_records"
    __table_args__ = (
        Index("ix_call_records_client_started", "client", "started_at"),
        Index("ix_call_records_call_id", "call_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(Text)
    client: Mapped[str | None] = mapped_column(String(64))
    number: Mapped[str] = mapped_column(String(32))
    caller: Mapped[str] = mapped_column(Text)
    rule: Mapped[str | None] = mapped_column(String(200))
    step: Mapped[int | None] = mapped_column(Integer)
    answered_by: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ring_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    talk_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # answered | busy | no_answer | failed | cancelled | voicemail | transferred (answered, then
    # handed on by REFER); NULL while the call is in progress
    result: Mapped[str | None] = mapped_column(String(16))
    # JSON: what the media relay saw of each side's audio ({"a": caller, "b": callee}, each
    # packets/bytes/lost/dropped/jitter_ms); NULL when the audio did not pass the relay
    media: Mapped[str | None] = mapped_column(Text)
    # the id of the record of the call this one was transferred from (REFER); NULL otherwise
    transferred_from: Mapped[int | None] = mapped_column(Integer)
    # why the call ended (domain.model.CallEndReason): answered, hangup (a BYE) | session_expired
    # | no_response | dialog_gone | no_audio; unanswered, caller_cancelled | no_answer | busy |
    # declined | unavailable | refused | rejected; either, server_stopped. NULL while it runs
    # (and in records of calls that ended before it was kept)
    end_reason: Mapped[str | None] = mapped_column(String(16))


class ApiTokenRow(Base):
    """An API token of a user; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
        UniqueConstraint("user_id", "name", name="uq_api_tokens_user_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", name="fk_api_tokens_user", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# -- presence (migration 0003) -------------------------------------------------------------


class PresenceSubscription(Base):
    """A presence or dialog subscription the server holds (its dialog state as JSON)."""

    __tablename__ = "presence_subscriptions"
    __table_args__ = (Index("ix_presence_subscriptions_expires_at", "expires_at"),)

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    presentity: Mapped[str] = mapped_column(String(64))
    watcher: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[float] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class PresencePublication(Base):
    """Presence a user published (RFC 3903), under its entity tag."""

    __tablename__ = "presence_publications"

    etag: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[float] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


# -- messenger and files (migration 0005) ----------------------------------------------------


class ConversationRow(Base):
    """A conversation between two users (`user_a` < `user_b`): the unit of history and retention."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("user_a", "user_b", name="uq_conversations_users"),
        Index("ix_conversations_user_b", "user_b"),
        Index("ix_conversations_last_at", "last_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_a: Mapped[str] = mapped_column(String(64))
    user_b: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MessageRow(Base):
    """One instant message (SIP MESSAGE or sent over HTTP) and what became of its delivery.

    `id` is made by the server when the message arrives (sortable by time); `state` is
    queued (stored for an offline recipient), delivered, expired or failed."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_created", "conversation_id", "created_at"),
        Index("ix_messages_recipient_state", "recipient", "state"),
        Index("ix_messages_imdn_id", "imdn_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("conversations.id", name="fk_messages_conversation", ondelete="CASCADE")
    )
    sender: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    content_type: Mapped[str] = mapped_column(String(200))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16))
    state_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    imdn_id: Mapped[str | None] = mapped_column(String(200))  # CPIM imdn.Message-ID
    imdn_state: Mapped[str | None] = mapped_column(String(16))  # delivered | displayed | …
    file_id: Mapped[str | None] = mapped_column(String(64))  # a file this message announces
    origin: Mapped[str] = mapped_column(String(8))  # sip | http


class FileRow(Base):
    """A file uploaded to the file-transfer service. `id` is the unguessable token of its
    download link; the bytes live under the data directory's files/ folder as `id`."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_owner", "owner"),
        Index("ix_files_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    duration_s: Mapped[float | None] = mapped_column(Float)  # audio files: playing time
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FilePartyRow(Base):
    """A user besides the owner who may download a file (a recipient of a message naming it)."""

    __tablename__ = "file_parties"

    file_id: Mapped[str] = mapped_column(
        String(64),
        ForeignKey("files.id", name="fk_file_parties_file", ondelete="CASCADE"),
        primary_key=True,
    )
    user: Mapped[str] = mapped_column(String(64), primary_key=True)


class FileDownloadRow(Base):
    """One download attempt of a file (kept after the file is gone: the audit log)."""

    __tablename__ = "file_downloads"
    __table_args__ = (Index("ix_file_downloads_file", "file_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[str] = mapped_column(String(64))
    user: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    remote: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)  # HTTP status answered
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)


# -- dictation (issue 14): jobs, their audio parts and history, client profiles, uploads ----


class DictationProfileRow(Base):
    """A client's dictation settings: review before delivery, where documents are e-mailed,
    and the letterhead template (a DOCX docxtpl fills)."""

    __tablename__ = "dictation_profiles"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    review: Mapped[bool] = mapped_column(Boolean, default=False)
    email: Mapped[str | None] = mapped_column(String(254))
    template_sha256: Mapped[str | None] = mapped_column(String(64))
    template: Mapped[bytes | None] = mapped_column(LargeBinary)


class DictationJobRow(Base):
    """One dictation job (office/dictation.py has its states)."""

    __tablename__ = "dictation_jobs"
    __table_args__ = (
        Index("ix_dictation_jobs_client", "client_id"),
        Index("ix_dictation_jobs_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    work_type: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(8))
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    comments: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(16))  # upload, messenger, phone
    state: Mapped[str] = mapped_column(String(24))
    pool_state: Mapped[str] = mapped_column(String(24))  # where an expired lock returns to
    typist: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    draft: Mapped[str] = mapped_column(Text, default="")
    draft_version: Mapped[int] = mapped_column(Integer, default=0)
    remark: Mapped[str | None] = mapped_column(Text)  # the last correction asked for
    document_file: Mapped[str | None] = mapped_column(String(64))  # a files.id
    characters: Mapped[int | None] = mapped_column(Integer)
    normzeilen: Mapped[int | None] = mapped_column(Integer)
    line_chars: Mapped[int | None] = mapped_column(Integer)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DictationPartRow(Base):
    """One audio file of a job, in order (a files.id: the bytes live with the file service)."""

    __tablename__ = "dictation_parts"

    job_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("dictation_jobs.id", name="fk_dictation_parts_job", ondelete="CASCADE"),
        primary_key=True,
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    duration_s: Mapped[float | None] = mapped_column(Float)


class DictationEventRow(Base):
    """The history of a job: who did what when."""

    __tablename__ = "dictation_history"
    __table_args__ = (Index("ix_dictation_history_job", "job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("dictation_jobs.id", name="fk_dictation_history_job", ondelete="CASCADE"),
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(24))
    note: Mapped[str] = mapped_column(Text, default="")


class DictationUploadRow(Base):
    """A resumable (tus) upload in progress; its bytes so far are files/dictation/<id>."""

    __tablename__ = "dictation_uploads"
    __table_args__ = (Index("ix_dictation_uploads_owner", "owner"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- web console sessions (issue 12) ---------------------------------------------------------


class WebSessionRow(Base):
    """A login of the web console: only the SHA-256 of the cookie's random id is stored, with
    the synchronizer token its forms must carry and when it ends (a restart keeps it)."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_expires", "expires_at"),)

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserTotpRow(Base):
    """A user's TOTP second factor (migration 0021): the base32 secret (sealed, 0024),
    whether it is on (a new one stays off until a first code confirms it), the last time step
    a code was used for (a code is good once) and the unused backup codes' hashes (0023)."""

    __tablename__ = "user_totp"

    user_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("users.id", name="fk_user_totp_user", ondelete="CASCADE"),
        primary_key=True,
    )
    secret: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # the SHA-256 of each unused backup code, space-separated (migration 0023)
    backup_codes: Mapped[str | None] = mapped_column(Text)


class LoginChallengeRow(Base):
    """A login whose password was right and whose second factor is still asked for (migration
    0021): the SHA-256 of its cookie's id, the user, the code form's token, wrong codes so far
    and its end (a few minutes)."""

    __tablename__ = "login_challenges"
    __table_args__ = (Index("ix_login_challenges_expires", "expires_at"),)

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- client portal: closure days (Betriebsurlaub) as date ranges with a note (migration 0009) --


class ClosureRow(Base):
    """A client's closure: every day from `first` to `last` (inclusive) is a closure day."""

    __tablename__ = "closures"
    __table_args__ = (Index("ix_closures_client", "client_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("clients.id", name="fk_closures_client", ondelete="CASCADE")
    )
    first: Mapped[date] = mapped_column(Date)
    last: Mapped[date] = mapped_column(Date)
    note: Mapped[str] = mapped_column(String(200), default="")


# -- voicemail (the media applications) ---------------------------------------------------


class VoicemailRow(Base):
    """A voicemail left by a caller: for which client (and mailbox owner), the WAV's path
    below the data directory, its length, and whether it was listened to."""

    __tablename__ = "voicemails"
    __table_args__ = (Index("ix_voicemails_owner", "owner", "heard"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(64))  # the voicemail: target (client id or user)
    caller: Mapped[str] = mapped_column(String(128))
    call_id: Mapped[str] = mapped_column(String(256))
    path: Mapped[str] = mapped_column(String(512))  # relative to the data directory
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heard: Mapped[bool] = mapped_column(Boolean, default=False)


class CallNoteRow(Base):
    """A call note (Telefonnotiz) an agent took for a client: from a call or a walk-in."""

    __tablename__ = "call_notes"
    __table_args__ = (Index("ix_call_notes_client_created", "client", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64))
    agent: Mapped[str] = mapped_column(String(64))
    call_id: Mapped[str | None] = mapped_column(Text)
    caller_name: Mapped[str] = mapped_column(String(200))
    caller_number: Mapped[str] = mapped_column(String(64))
    concern: Mapped[str] = mapped_column(String(500))
    callback: Mapped[bool] = mapped_column(Boolean)
    urgent: Mapped[bool] = mapped_column(Boolean)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# ------------------------------------------------------------------ billing (issue 15)
# Decimal quantities and prices are stored as text (exact); amounts as integer cents.


class BillingSettingRow(Base):
    """A provider billing setting (kleinunternehmer, default_bundesland)."""

    __tablename__ = "billing_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TariffTemplateRow(Base):
    """A provider-wide tariff template (the tariff as JSON)."""

    __tablename__ = "billing_tariffs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    doc: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ClientTariffRow(Base):
    """A client's tariff from a local date (a copy of the template at assignment time)."""

    __tablename__ = "billing_client_tariffs"
    __table_args__ = (UniqueConstraint("client", "valid_from", name="uq_client_tariff_from"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD
    template: Mapped[str] = mapped_column(String(64))
    doc: Mapped[dict[str, Any]] = mapped_column(JSON)


class MeterReadingRow(Base):
    """One billable event as it ended (its facts), the source the usage lines are rated from;
    kept so an open month can be rated again after a tariff correction."""

    __tablename__ = "billing_readings"
    __table_args__ = (
        UniqueConstraint("source_kind", "source_id", name="uq_reading_source"),
        Index("ix_billing_readings_client_month", "client", "month"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client: Mapped[str] = mapped_column(String(64))
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM in the client's time zone
    source_kind: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)


class UsageLineRow(Base):
    """One rated usage line; `invoice_id` is set when an invoice took it (then it never
    changes)."""

    __tablename__ = "billing_usage"
    __table_args__ = (
        Index("ix_billing_usage_client_month", "client", "month"),
        Index("ix_billing_usage_reading", "reading_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reading_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("billing_readings.id", name="fk_usage_reading")
    )
    client: Mapped[str] = mapped_column(String(64))
    month: Mapped[str] = mapped_column(String(7))
    kind: Mapped[str] = mapped_column(String(24))
    source_kind: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    quantity: Mapped[str] = mapped_column(String(32))
    unit_price: Mapped[str] = mapped_column(String(48))  # cents
    surcharge: Mapped[str] = mapped_column(String(16), default="")
    surcharge_pct: Mapped[str] = mapped_column(String(16), default="0")
    vat_rate: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)  # cents
    description: Mapped[str] = mapped_column(String(255), default="")
    invoice_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class InvoiceCounterRow(Base):
    """The provider's invoice number counter: taken in the invoice's own transaction, so
    numbers have no gaps (a rolled-back invoice gives its number back)."""

    __tablename__ = "billing_invoice_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # one row, id 1
    last: Mapped[int] = mapped_column(Integer, default=0)


class InvoiceRow(Base):
    """An issued invoice or cancellation invoice (Storno); `doc` (lines, VAT, parties) never
    changes once written (GoBD); a cancellation sets `cancelled_by` on the original."""

    __tablename__ = "billing_invoices"
    __table_args__ = (
        UniqueConstraint("number", name="uq_invoice_number"),
        Index("ix_billing_invoices_client_month", "client", "month"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    client: Mapped[str] = mapped_column(String(64))
    month: Mapped[str] = mapped_column(String(7))
    kind: Mapped[str] = mapped_column(String(16))  # invoice | storno
    cancels: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cancelled_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    net: Mapped[int] = mapped_column(BigInteger)
    vat: Mapped[int] = mapped_column(BigInteger)
    gross: Mapped[int] = mapped_column(BigInteger)
    doc: Mapped[dict[str, Any]] = mapped_column(JSON)


class BuyerRow(Base):
    """A client's invoice address (EN 16931 BG-7/BG-8; migration 0018); a Leitweg-ID makes
    the client a public-sector buyer that gets XRechnung."""

    __tablename__ = "billing_buyers"

    client: Mapped[str] = mapped_column(
        String(64), ForeignKey("clients.id", name="fk_buyer_client", ondelete="CASCADE"),
        primary_key=True,
    )  # fmt: skip
    name: Mapped[str] = mapped_column(String(200), default="")
    street: Mapped[str] = mapped_column(String(200), default="")
    postcode: Mapped[str] = mapped_column(String(16), default="")
    city: Mapped[str] = mapped_column(String(100), default="")
    country: Mapped[str] = mapped_column(String(2), default="DE")
    vat_id: Mapped[str] = mapped_column(String(32), default="")
    leitweg_id: Mapped[str] = mapped_column(String(64), default="")
    email: Mapped[str] = mapped_column(String(254), default="")


class InvoiceFileRow(Base):
    """An invoice's documents (migration 0018): the PDF/A-3 with the CII XML embedded and the
    XML itself; written in the invoice's own transaction, never changed."""

    __tablename__ = "billing_invoice_files"

    invoice_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("billing_invoices.id", name="fk_invoice_file_invoice"),
        primary_key=True,
    )  # fmt: skip
    profile: Mapped[str] = mapped_column(String(16))  # en16931 | xrechnung
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    xml: Mapped[bytes] = mapped_column(LargeBinary)


class InvoiceMailRow(Base):
    """One e-mail of an invoice to the client's billing address (migration 0019): `state`
    "sending" is written and committed before the mail server is asked, then "sent" (with
    `sent_at`) or "failed" (with `error`). A "sending" that stays (the process stopped between)
    counts as possibly sent: no second mail without an explicit resend."""

    __tablename__ = "billing_invoice_mails"
    __table_args__ = (UniqueConstraint("invoice_id", "attempt", name="uq_invoice_mail_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("billing_invoices.id", name="fk_invoice_mail_invoice"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)  # 1, 2, …: two senders at once clash here
    state: Mapped[str] = mapped_column(String(16))  # sending | sent | failed
    recipient: Mapped[str] = mapped_column(String(254))
    document: Mapped[str] = mapped_column(String(8))  # pdf | xml: what was attached
    sent_by: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str] = mapped_column(String(500), default="")
