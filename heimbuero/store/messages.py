"""Store methods for the messenger: conversations and messages (history and the queue of
messages stored for offline recipients)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection

from heimbuero.store.base import Repository
from heimbuero.store.models import ConversationRow, MessageRow, as_utc

MESSAGE_STATES = ("sending", "queued", "delivered", "expired", "failed")


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One stored message."""

    id: str
    sender: str
    recipient: str
    created_at: datetime
    content_type: str
    body: bytes
    state: str
    state_at: datetime | None
    expires_at: datetime | None
    imdn_id: str | None
    imdn_state: str | None
    file_id: str | None
    origin: str


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A conversation seen from one of its two users."""

    id: int
    peer: str
    created_at: datetime
    last_at: datetime
    last: MessageRecord | None


def _record(row: Any) -> MessageRecord:
    created = _utc(row.created_at)
    assert created is not None
    return MessageRecord(
        id=row.id, sender=row.sender, recipient=row.recipient, created_at=created,
        content_type=row.content_type, body=bytes(row.body), state=row.state,
        state_at=_utc(row.state_at), expires_at=_utc(row.expires_at), imdn_id=row.imdn_id,
        imdn_state=row.imdn_state, file_id=row.file_id, origin=row.origin,
    )  # fmt: skip


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _conversation_id(conn: Connection, user: str, peer: str) -> int | None:
    a, b = _pair(user, peer)
    return conn.execute(
        select(ConversationRow.id).where(ConversationRow.user_a == a, ConversationRow.user_b == b)
    ).scalar()


def apply_message_ops(conn: Connection, ops: list[tuple[Any, ...]]) -> None:
    """`MessageRepository.apply_message_log` inside the caller's transaction (the group commit
    of `Store.write_batch` uses it)."""
    for op in ops:
        kind = op[0]
        if kind == "add":
            _add_message(conn, op[1])
        elif kind == "state":
            _, message_id, state, at = op
            if state not in MESSAGE_STATES:
                raise ValueError(f"invalid message state {state!r}")
            conn.execute(
                update(MessageRow)
                .where(MessageRow.id == message_id)
                .values(state=state, state_at=at)
            )
        elif kind == "report":
            _, imdn_id, reporter, state = op
            which = [MessageRow.imdn_id == imdn_id, MessageRow.recipient == reporter]
            if state == "delivered":  # a late delivery report does not unread a message
                which.append(
                    or_(MessageRow.imdn_state.is_(None), MessageRow.imdn_state != "displayed")
                )
            conn.execute(update(MessageRow).where(*which).values(imdn_state=state))
        else:
            raise ValueError(f"unknown message operation {kind!r}")


def _add_message(conn: Connection, fields: dict[str, Any]) -> None:
    a, b = _pair(fields["sender"], fields["recipient"])
    at = fields["created_at"]
    cid = _conversation_id(conn, a, b)
    if cid is None:
        cid = conn.execute(
            insert(ConversationRow).values(user_a=a, user_b=b, created_at=at, last_at=at)
        ).inserted_primary_key[0]  # type: ignore[index]
    else:
        conn.execute(update(ConversationRow).where(ConversationRow.id == cid).values(last_at=at))
    conn.execute(insert(MessageRow).values(conversation_id=cid, **fields))


class MessageRepository(Repository):
    """Works in the transaction of the unit of work that made it (see store/uow.py)."""

    # -- writes (the server's single writer thread) -------------------------------------------

    def apply_message_log(self, ops: list[tuple[Any, ...]]) -> None:
        """Apply queued messenger operations in order, in one transaction:

        ("add", fields) a new message (its conversation is made when it is the first);
        ("state", message_id, state, at) a delivery outcome;
        ("report", imdn_id, reporter, state) an IMDN report from the message's recipient."""
        apply_message_ops(self._conn(), ops)

    def fail_unfinished_messages(self, at: datetime) -> int:
        """Messages a stopped server was still handing to online devices: their senders got
        no success, so they count as failed (the queue holds only `queued` ones)."""
        conn = self._conn()
        result = conn.execute(
            update(MessageRow)
            .where(MessageRow.state == "sending")
            .values(state="failed", state_at=at)
        )
        return result.rowcount or 0

    # -- reads ----------------------------------------------------------------------------------

    def load_queued_messages(self) -> list[MessageRecord]:
        """Every message waiting for its recipient, oldest first."""
        conn = self._conn()
        rows = conn.execute(
            select(MessageRow)
            .where(MessageRow.state == "queued")
            .order_by(MessageRow.created_at, MessageRow.id)
        ).all()
        return [_record(r) for r in rows]

    def list_conversations(self, user: str) -> list[ConversationRecord]:
        """The user's conversations, most recent first, each with its last message."""
        conn = self._conn()
        convs = conn.execute(
            select(ConversationRow)
            .where(or_(ConversationRow.user_a == user, ConversationRow.user_b == user))
            .order_by(ConversationRow.last_at.desc())
        ).all()
        out = []
        for c in convs:
            last = conn.execute(
                select(MessageRow)
                .where(MessageRow.conversation_id == c.id)
                .order_by(MessageRow.created_at.desc(), MessageRow.id.desc())
                .limit(1)
            ).first()
            out.append(
                ConversationRecord(
                    id=c.id,
                    peer=c.user_b if c.user_a == user else c.user_a,
                    created_at=_utc(c.created_at),  # type: ignore[arg-type]
                    last_at=_utc(c.last_at),  # type: ignore[arg-type]
                    last=_record(last) if last is not None else None,
                )
            )
        return out

    def conversation_messages(
        self, user: str, peer: str, limit: int = 100, before: str | None = None
    ) -> list[MessageRecord] | None:
        """Up to `limit` messages between the two users, oldest first, ending before the
        message `before` (for paging back); None when they have no conversation."""
        conn = self._conn()
        cid = _conversation_id(conn, user, peer)
        if cid is None:
            return None
        query = select(MessageRow).where(MessageRow.conversation_id == cid)
        if before is not None:
            ref = conn.execute(
                select(MessageRow.created_at).where(
                    MessageRow.id == before, MessageRow.conversation_id == cid
                )
            ).scalar()
            if ref is not None:
                query = query.where(
                    or_(
                        MessageRow.created_at < ref,
                        and_(MessageRow.created_at == ref, MessageRow.id < before),
                    )
                )
        rows = conn.execute(
            query.order_by(MessageRow.created_at.desc(), MessageRow.id.desc()).limit(limit)
        ).all()
        return [_record(r) for r in reversed(rows)]

    # -- read by the recipient ------------------------------------------------------------------

    def unread_messages(self, user: str, limit: int = 1000) -> list[MessageRecord]:
        """The newest `limit` messages to `user` that no device of theirs reported displayed
        and that they did not open in the console, oldest first."""
        rows = (
            self._conn()
            .execute(
                select(MessageRow)
                .where(
                    MessageRow.recipient == user,
                    MessageRow.sender != user,
                    or_(MessageRow.imdn_state.is_(None), MessageRow.imdn_state != "displayed"),
                )
                .order_by(MessageRow.created_at.desc(), MessageRow.id.desc())
                .limit(limit)
            )
            .all()
        )
        return [_record(r) for r in reversed(rows)]

    def unread_from(self, user: str, peer: str) -> list[MessageRecord]:
        """The messages from `peer` to `user` not yet displayed, oldest first."""
        conn = self._conn()
        cid = _conversation_id(conn, user, peer)
        if cid is None:
            return []
        unread = and_(
            MessageRow.conversation_id == cid,
            MessageRow.recipient == user,
            MessageRow.sender == peer,
            or_(MessageRow.imdn_state.is_(None), MessageRow.imdn_state != "displayed"),
        )
        query = select(MessageRow).where(unread).order_by(MessageRow.created_at, MessageRow.id)
        return [_record(r) for r in conn.execute(query).all()]

    def mark_read(self, user: str, peer: str) -> list[MessageRecord]:
        """`user` read the conversation with `peer`: the messages from `peer` become
        `displayed` (what an IMDN report of theirs would say); those that changed, oldest
        first (as they were before)."""
        conn = self._conn()
        rows = self.unread_from(user, peer)
        if rows:
            conn.execute(
                update(MessageRow)
                .where(MessageRow.id.in_([r.id for r in rows]))
                .values(imdn_state="displayed")
            )
        return rows

    # -- deletion -------------------------------------------------------------------------------

    def delete_conversation(self, user: str, peer: str) -> list[str] | None:
        """Delete a conversation and its messages; the ids of the files its messages announced
        (for the caller to delete), or None when there is no such conversation."""
        conn = self._conn()
        cid = _conversation_id(conn, user, peer)
        if cid is None:
            return None
        return self._delete_conversations(conn, [cid])

    def delete_idle_conversations(self, before: datetime) -> tuple[int, list[str]]:
        """Retention: delete conversations whose last message is older than `before`, except
        those still holding a message queued for delivery. (count, file ids of their files)."""
        conn = self._conn()
        waiting = select(MessageRow.conversation_id).where(MessageRow.state == "queued")
        ids = list(
            conn.execute(
                select(ConversationRow.id).where(
                    ConversationRow.last_at < before, ConversationRow.id.not_in(waiting)
                )
            ).scalars()
        )
        if not ids:
            return 0, []
        return len(ids), self._delete_conversations(conn, ids)

    def _delete_conversations(self, conn: Connection, ids: list[int]) -> list[str]:
        file_ids = sorted(
            {
                f
                for f in conn.execute(
                    select(MessageRow.file_id).where(
                        MessageRow.conversation_id.in_(ids), MessageRow.file_id.is_not(None)
                    )
                ).scalars()
                if f
            }
        )
        conn.execute(delete(MessageRow).where(MessageRow.conversation_id.in_(ids)))
        conn.execute(delete(ConversationRow).where(ConversationRow.id.in_(ids)))
        return file_ids
