"""The messenger: conversations, history, sending over HTTP like a SIP MESSAGE."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from heimbuero.app import policy
from heimbuero.app.errors import (
    AppError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Rejected,
    TooMany,
    Unavailable,
)
from heimbuero.app.policy import Actor
from heimbuero.events import Event, MessageStateChanged
from heimbuero.office import callpolicy
from heimbuero.office.files import FileService
from heimbuero.office.messaging import (
    CPIM,
    FILE_TRANSFER,
    MessageError,
    content_view,
    describe,
    display_report,
)
from heimbuero.services.messaging import MessageRejected
from heimbuero.store import Store
from heimbuero.store.messages import ConversationRecord, MessageRecord

Snapshot = Callable[[str], list[dict[str, Any]]]
Send = Callable[[str, str, str, bytes], Awaitable[dict[str, Any]]]
MessageWatch = Callable[[str, Callable[[str, dict[str, Any]], None]], Callable[[], None]]
_NO_CONVERSATION = "no conversation with this user"
MAX_REPORTS_PER_READ = 20  # display reports one reading sends at most
log = logging.getLogger(__name__)
HIDDEN_KINDS = ("imdn", "composing")  # reports show as imdn_state of the message they concern


class Messages:
    """A user's own conversations; `send` hands a message to the running server's messenger
    (None: messaging not available), `files` gives file-info documents of uploads."""

    def __init__(
        self,
        store: Store,
        send: Send | None = None,
        watch: MessageWatch | None = None,
        files: FileService | None = None,
        people: Snapshot | None = None,
        publish: Callable[[Event], None] | None = None,
        realm: Callable[[], str] | None = None,
    ) -> None:
        self.store, self.send_fn, self.watch_fn, self.files = store, send, watch, files
        self.realm = realm  # the SIP domain: the address display reports come from
        self.publish = publish  # the server's event bus: a conversation read (state event)
        self.people = people  # the presence the user may see: whom the user may message

    def conversations(self, actor: Actor) -> list[ConversationRecord]:
        return self.store.list_conversations(actor.name)

    def history(
        self, actor: Actor, peer: str, limit: int = 100, before: str | None = None
    ) -> list[MessageRecord]:
        rows = self.store.conversation_messages(actor.name, peer.lower(), limit, before)
        if rows is None:
            raise NotFound("", "", _NO_CONVERSATION)
        return rows

    def shown(self, records: list[MessageRecord]) -> list[MessageRecord]:
        """The messages a history shows: delivery reports and typing notices left out."""
        return [
            r for r in records if content_view(r.content_type, r.body)["kind"] not in HIDDEN_KINDS
        ]

    def peers(self, actor: Actor) -> list[str]:
        """The users the actor may message, by name (the presence and messaging rule,
        office/visibility.py, as the presence service applies it); empty when presence is
        not available."""
        if self.people is None:
            return []
        names = {str(p.get("user", "")) for p in self.people(actor.name)}
        names.discard(actor.name)
        names.discard("")
        return sorted(names)

    def thread(self, actor: Actor, peer: str, limit: int = 100) -> list[MessageRecord]:
        """The shown history with `peer`, oldest first; empty for a user the actor may message
        but has not yet; NotFound for anyone else (unknown and not-yours look alike)."""
        peer = peer.lower()
        rows = self.store.conversation_messages(actor.name, peer, limit, None)
        if rows is None:
            if peer not in self.peers(actor):
                raise NotFound("", "", _NO_CONVERSATION)
            return []
        return self.shown(rows)

    def unread(self, actor: Actor) -> dict[str, int]:
        """How many shown messages from each peer the actor has not read (no device of
        theirs reported them displayed, and they did not open the conversation here)."""
        counts: dict[str, int] = {}
        for m in self.shown(self.store.unread_messages(actor.name)):
            counts[m.sender] = counts.get(m.sender, 0) + 1
        return counts

    async def read(self, actor: Actor, peer: str) -> int:
        """The actor read the conversation with `peer`: its messages from `peer` become
        displayed, as an IMDN report of the actor's would make them, and the peer's open pages
        learn it (a `state` event of the newest of them). Messages whose sender's device asked
        for display reports (RFC 5438) get one, sent as the actor: its phone shows them read.
        How many changed."""
        peer = peer.lower()
        changed = await asyncio.to_thread(self.store.mark_read, actor.name, peer)
        if changed and self.publish is not None:
            newest = changed[-1]
            shown = content_view(newest.content_type, newest.body)
            summary = {
                "id": newest.id, "sender": newest.sender, "recipient": newest.recipient,
                "created_at": newest.created_at.isoformat(),
                "content_type": newest.content_type, "kind": shown["kind"],
                "text": shown["text"], "state": newest.state, "imdn_state": "displayed",
                "file_id": newest.file_id, "origin": newest.origin,
            }  # fmt: skip
            self.publish(MessageStateChanged(time.time(), summary))
        await self._report_displayed(actor, changed)
        return len(changed)

    async def _report_displayed(self, actor: Actor, changed: list[MessageRecord]) -> None:
        """Display reports for the newest MAX_REPORTS_PER_READ of `changed` that asked for one
        (older ones are read too, but a phone needs no flood of reports to show that). A
        report that cannot be sent (sender's rate limit, messaging stopped) is logged: the
        conversation is read either way."""
        if self.send_fn is None or self.realm is None:
            return
        me = f"sip:{actor.name}@{self.realm()}"
        for record in changed[-MAX_REPORTS_PER_READ:]:
            try:
                c = describe(record.content_type, record.body)
            except MessageError:
                continue
            if "display" not in c.wants_reports or not c.imdn_id:
                continue
            to = c.cpim_from or f"sip:{record.sender}@{self.realm()}"
            try:
                body = display_report(
                    c.imdn_id, me, to, secrets.token_hex(8), datetime.now(UTC).astimezone()
                )
                await self.send_fn(actor.name, record.sender, CPIM, body)
            except (MessageError, MessageRejected) as exc:
                log.info("display report for %s to %s not sent: %s", record.id, record.sender, exc)

    def delete(self, actor: Actor, peer: str) -> None:
        """Delete the actor's conversation with `peer` for both, with the files its messages
        shared (staff only)."""
        if not policy.may_delete_conversation(actor):
            raise Forbidden("only admins and agents may do this")
        file_ids = self.store.delete_conversation(actor.name, peer.lower())
        if file_ids is None:
            raise NotFound("", "", _NO_CONVERSATION)
        if self.files is not None:
            self.files.delete(file_ids)

    def content(self, text: str | None, file_id: str | None) -> tuple[str, bytes]:
        """(content type, body) of a text or an uploaded file (blocking: a file is read)."""
        if (text is None) == (file_id is None):
            raise Invalid("body", "give exactly one of text and file")
        if text is not None:
            try:
                callpolicy.check_text("text", text, multiline=True)
            except callpolicy.PolicyError as exc:
                raise Invalid("text", str(exc)) from None
            return "text/plain;charset=UTF-8", text.encode()
        info = None
        if self.files is not None and file_id is not None:
            info = self.files.file_info_xml(file_id)
        if info is None:
            raise Invalid("file", "no such file")
        return FILE_TRANSFER, info

    async def send(self, actor: Actor, to: str, content_type: str, body: bytes) -> dict[str, Any]:
        """Send as the actor; SIP refusals become typed errors (400 Rejected, 503 TooMany,
        480 Conflict: the recipient's queue is full)."""
        if self.send_fn is None:
            raise Unavailable("messaging is not available")
        try:
            return await self.send_fn(actor.name, to.lower(), content_type, body)
        except MessageRejected as exc:
            kind = {400: Rejected, 503: TooMany, 480: Conflict}.get(exc.status, AppError)
            err = kind(exc.reason)
            if kind is AppError:
                err.status = exc.status
            raise err from None

    def watch(
        self, actor: Actor, on_event: Callable[[str, dict[str, Any]], None]
    ) -> Callable[[], None]:
        if self.watch_fn is None:
            raise Unavailable("messaging is not available")
        return self.watch_fn(actor.name, on_event)
