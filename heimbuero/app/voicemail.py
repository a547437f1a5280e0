"""Voicemail messages: listening to the actor's own box by phone (`*86`, the media
applications through the server) and the list of any box the actor may see (HTTP API, CLI).

By phone the box is always the actor's own (office/voicemail.py: a client's owner has the
client's box, anyone else their own), so nobody can reach another's messages by naming them.
By name (`OWNER`, a client id or a user name) the rights are those of the mailbox greeting:
a client's box is read by staff and the client's users (owner and employees) and changed
(heard, deleted) by staff and the client's owner; a user's box is read and changed by that
user and admins. Another business's box, and a message id of another box, answer NotFound
like one that does not exist.

A deletion is committed before the call returns, and only then is the WAV removed (the copy
the messenger holds as the owner's file stays until its link expires). After a change by
name `MailboxChanged` is published (the server sends the box's message waiting again, the
same as after a change by phone)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from heimbuero.app import policy
from heimbuero.app.errors import Forbidden, NotFound
from heimbuero.app.policy import Actor
from heimbuero.events import Event, MailboxChanged
from heimbuero.office.voicemail import has_mailbox, mailbox_owner
from heimbuero.store import Store
from heimbuero.store.models import as_utc
from heimbuero.store.voicemail import Voicemail, delete_voicemail, mailbox, mark_heard

DEFAULT_ZONE = "Europe/Berlin"
OWNER = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Message:
    """A message as its box's readers see it: `received` in the box's timezone."""

    id: int
    owner: str
    caller: str
    received: datetime
    seconds: float
    heard: bool
    path: Path  # the WAV

    @property
    def state(self) -> str:
        return "heard" if self.heard else "new"


class Voicemails:
    def __init__(
        self,
        store: Store,
        data_dir: Path,
        named_by_rules: Callable[[], frozenset[str]] = frozenset,
        publish: Callable[[Event], None] | None = None,
    ) -> None:
        self.store, self.data_dir = store, data_dir
        self.named_by_rules = named_by_rules  # the owners a `voicemail:` rule target names
        self.publish = publish

    # -- by phone: the actor's own box ----------------------------------------------------

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
        self._heard(mailbox_owner(actor), voicemail_id)

    def delete(self, actor: Actor, voicemail_id: int) -> None:
        """Delete one message of the actor's box: committed first, then its WAV removed."""
        self._delete(mailbox_owner(actor), voicemail_id)

    def zone(self, owner: str) -> ZoneInfo:
        """The box's timezone: its client's (a user's: the client he belongs to), else
        Europe/Berlin."""
        client = self.store.get_client(owner)
        if client is None:
            user = self.store.get_user(owner)
            client = self.store.get_client(user.client) if user and user.client else None
        try:
            return ZoneInfo(client.timezone if client is not None else DEFAULT_ZONE)
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(DEFAULT_ZONE)

    # -- by name: any box the actor may see -----------------------------------------------

    def list_box(self, actor: Actor, owner: str) -> list[Message]:
        """The box's messages, newest first."""
        self._check(actor, owner, write=False)
        zone = self.zone(owner)
        return [self._message(v, zone) for v in reversed(mailbox(self.store, owner))]

    def message(self, actor: Actor, owner: str, voicemail_id: int) -> Message:
        """One message of the box (its WAV on disk); another box's id is NotFound."""
        self._check(actor, owner, write=False)
        found = next((v for v in mailbox(self.store, owner) if v.id == voicemail_id), None)
        if found is None:
            raise NotFound("voicemail", str(voicemail_id))
        msg = self._message(found, self.zone(owner))
        if not self._inside(msg.path) or not msg.path.is_file():
            raise NotFound("voicemail", str(voicemail_id))
        return msg

    def set_heard(self, actor: Actor, owner: str, voicemail_id: int) -> None:
        self._check(actor, owner, write=True)
        self._heard(owner, voicemail_id)
        self._changed(owner)

    def remove(self, actor: Actor, owner: str, voicemail_id: int) -> None:
        """The same deletion as key 7 by phone: committed first, then the WAV removed."""
        self._check(actor, owner, write=True)
        self._delete(owner, voicemail_id)
        self._changed(owner)

    # -- the one place of each change -----------------------------------------------------

    def _heard(self, owner: str, voicemail_id: int) -> None:
        if not mark_heard(self.store, owner, voicemail_id):
            raise NotFound("voicemail", str(voicemail_id))

    def _delete(self, owner: str, voicemail_id: int) -> None:
        path = delete_voicemail(self.store, owner, voicemail_id)
        if path is None:
            raise NotFound("voicemail", str(voicemail_id))
        wav = (self.data_dir / path).resolve()
        if self._inside(wav):
            wav.unlink(missing_ok=True)

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to((self.data_dir / "voicemail").resolve())

    def _changed(self, owner: str) -> None:
        if self.publish is not None:
            self.publish(MailboxChanged(time.time(), owner))

    def _check(self, actor: Actor, owner: str, *, write: bool) -> None:
        """The greeting's rule (app/greetings.py), reading open to the client's employees."""
        if not OWNER.match(owner):
            raise NotFound("mailbox", owner)
        if self.store.get_client(owner) is not None:
            if not policy.sees_client(actor, owner):
                raise NotFound("mailbox", owner)
            if write and not policy.may_change_forwarding(actor, owner):
                raise Forbidden("only staff and the client's owner change its voicemails")
        elif self.store.get_user(owner) is not None:
            if not actor.admin and actor.name != owner:
                raise NotFound("mailbox", owner)
        else:
            raise NotFound("mailbox", owner)

    def _message(self, v: Voicemail, zone: ZoneInfo) -> Message:
        received = as_utc(v.created_at).astimezone(zone)
        return Message(v.id, v.owner, v.caller, received, v.seconds, v.heard,
                       self.data_dir / v.path)  # fmt: skip
