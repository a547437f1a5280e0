"""Listening to a mailbox: the messages of the actor's own box, marking one heard, deleting
one. Used by the phone (`*86`, the media applications through the server); the box is always
the actor's own (office/voicemail.py: a client's owner has the client's box, anyone else
their own), so nobody can reach another's messages by naming them: an id of another box is
not found.

A deletion is committed before the call returns, and only then is the WAV removed (the copy
the messenger holds as the owner's file stays until its link expires)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from heimbuero.app.errors import NotFound
from heimbuero.app.policy import Actor
from heimbuero.office.voicemail import has_mailbox, mailbox_owner
from heimbuero.store import Store
from heimbuero.store.voicemail import Voicemail, delete_voicemail, mailbox, mark_heard


class Voicemails:
    def __init__(
        self, store: Store, data_dir: Path, named_by_rules: Callable[[], frozenset[str]]
    ) -> None:
        self.store, self.data_dir = store, data_dir
        self.named_by_rules = named_by_rules  # the owners a `voicemail:` rule target names

    def owner(self, actor: Actor) -> str:
        """Whose box `actor` listens to."""
        return mailbox_owner(actor)

    def messages(self, actor: Actor) -> list[Voicemail]:
        """Every message of the actor's box, oldest first; NotFound when there is no box."""
        owner = mailbox_owner(actor)
        found = mailbox(self.store, owner)
        if not found and not has_mailbox(owner, self.named_by_rules()):
            raise NotFound("mailbox", owner)
        return found

    def mark_heard(self, actor: Actor, voicemail_id: int) -> None:
        if not mark_heard(self.store, mailbox_owner(actor), voicemail_id):
            raise NotFound("voicemail", str(voicemail_id))

    def delete(self, actor: Actor, voicemail_id: int) -> None:
        """Delete one message of the actor's box: committed first, then its WAV removed."""
        path = delete_voicemail(self.store, mailbox_owner(actor), voicemail_id)
        if path is None:
            raise NotFound("voicemail", str(voicemail_id))
        wav = (self.data_dir / path).resolve()
        if wav.is_relative_to((self.data_dir / "voicemail").resolve()):
            wav.unlink(missing_ok=True)
