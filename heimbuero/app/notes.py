"""Call notes (Telefonnotizen): an agent takes one for a client, from a call or without one
(walk-in, e-mail); it reaches the client's owner at once as a messenger message (their phone
and the portal); the business's users mark it read and done. `CallNoteTaken` is published
after the note is stored."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from heimbuero.app import policy
from heimbuero.app.errors import AppError, Invalid, NotFound
from heimbuero.app.messages import Send
from heimbuero.app.policy import Actor
from heimbuero.events import CallNoteTaken, Event
from heimbuero.store import Store
from heimbuero.store.notes import CallNote, NoteStore

log = logging.getLogger(__name__)

# send an e-mail (to, subject, text); raises when the mail server did not take it
Mail = Callable[[str, str, str], Awaitable[None]]

LIMITS = {"caller_name": 200, "caller_number": 64, "concern": 500, "text": 4000}


def note_text(note: CallNote) -> str:
    """The note as the message the client receives."""
    flags = [w for w, on in (("DRINGEND", note.urgent), ("Rückruf erbeten", note.callback)) if on]
    lines = [f"Telefonnotiz{' (' + ', '.join(flags) + ')' if flags else ''}"]
    if note.caller_name or note.caller_number:
        lines.append(f"Anrufer: {note.caller_name} {note.caller_number}".rstrip())
    if note.concern:
        lines.append(f"Anliegen: {note.concern}")
    if note.text:
        lines.append(note.text)
    lines.append(f"Aufgenommen von {note.agent}")
    return "\n".join(lines)


class Notes:
    def __init__(
        self,
        store: Store,
        send: Send | None = None,
        publish: Callable[[Event], None] | None = None,
        mail: Mail | None = None,
    ) -> None:
        self.store, self.notes, self.send_fn, self.publish = store, NoteStore(store), send, publish
        self.mail = mail

    def owners(self, client_id: str) -> list[str]:
        """The users a note for this client goes to: its owners (role `client`)."""
        return [u.name for u in self.store.list_users() if u.client == client_id and
                u.role == "client"]  # fmt: skip

    async def take(
        self,
        actor: Actor,
        client_id: str,
        *,
        caller_name: str = "",
        caller_number: str = "",
        concern: str = "",
        callback: bool = False,
        urgent: bool = False,
        text: str = "",
        call_id: str | None = None,
    ) -> tuple[CallNote, list[str]]:
        """Store a note (staff) and message it to the client's owners; returns the note and
        whom it reached."""
        policy.require_staff(actor, "only agents and admins take call notes")
        if self.store.get_client(client_id) is None:
            raise NotFound("client", client_id)
        fields: dict[str, Any] = {
            "caller_name": caller_name.strip(),
            "caller_number": caller_number.strip(),
            "concern": concern.strip(),
            "text": text.strip(),
        }
        for name, limit in LIMITS.items():
            if len(fields[name]) > limit:
                raise Invalid(name, f"at most {limit} characters")
        if not fields["concern"] and not fields["text"]:
            raise Invalid("concern", "say what the caller wants (concern or text)")
        if call_id is not None and len(call_id) > 300:
            raise Invalid("call_id", "at most 300 characters")
        note = self.notes.add(
            client=client_id, agent=actor.name, call_id=call_id or None,
            callback=bool(callback), urgent=bool(urgent), **fields,
        )  # fmt: skip
        if self.publish is not None:
            self.publish(CallNoteTaken(time.time(), client_id, note.id, actor.name, note.call_id))
        reached: list[str] = []
        if self.send_fn is not None:
            body = note_text(note).encode()
            for owner in self.owners(client_id):
                try:
                    await self.send_fn(actor.name, owner, "text/plain;charset=utf-8", body)
                    reached.append(owner)
                except Exception as exc:  # the note stays; the portal shows it anyway
                    log.warning("call note %d not delivered to %s: %s", note.id, owner, exc)
        client = self.store.get_client(client_id)
        if self.mail is not None and client is not None and client.email:
            subject = f"{'DRINGEND: ' if note.urgent else ''}Telefonnotiz: {note.concern or '-'}"
            try:
                await self.mail(client.email, subject[:200], note_text(note))
                reached.append(client.email)
            except Exception as exc:
                log.warning("call note %d not e-mailed to %s: %s", note.id, client.email, exc)
        return note, reached

    def list(self, actor: Actor, client_id: str | None = None, limit: int = 100) -> list[CallNote]:
        """Newest first: staff any client's (or all), others their own business's."""
        if client_id is not None:
            policy.require_client_visible(actor, client_id)
        elif not actor.staff:
            if actor.client is None:
                return []
            client_id = actor.client
        return self.notes.list(client_id, max(1, min(limit, 500)))

    def get(self, actor: Actor, note_id: int) -> CallNote:
        note = self.notes.get(note_id)
        if note is None or not policy.sees_client(actor, note.client):
            raise NotFound("note", str(note_id))
        return note

    def mark(self, actor: Actor, note_id: int, what: str) -> CallNote:
        """Mark read or done (the client's business users and staff)."""
        if what not in ("read", "done"):
            raise Invalid("mark", "read or done")
        self.get(actor, note_id)
        note = self.notes.mark(note_id, f"{what}_at")
        if note is None:
            raise NotFound("note", str(note_id))
        return note


__all__ = ["AppError", "CallNote", "Notes", "note_text"]
