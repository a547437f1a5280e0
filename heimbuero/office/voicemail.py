"""Voicemail boxes and listening to them by phone: the business rules (knows no SIP).

Whose mailbox a user has: a client's owner (role `client`) listens to the client's box
(`voicemail:CLIENT`, what his phone's message waiting light shows); anyone else to their own
(`voicemail:USER`). A box exists when a routing rule names it or when messages are stored
for it (a rule removed later does not hide the messages left before).

Listening: new (unheard) messages first, oldest first, then the heard ones, oldest first.
Keys during a message and in the short menu after it: `1` plays it again, `7` deletes it,
`9` keeps it (marks it heard) and goes on, `#` goes on (a message skipped with # before its
end stays new). A message played to its end is heard. A caller who hangs up in the middle
of a message leaves it as it was."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Generic, Protocol, TypeVar

from heimbuero.domain.model import Directory, VoicemailTarget
from heimbuero.office.roles import Person

LISTEN_KEYS = "179#"  # the keys listening reacts to


class _Message(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def heard(self) -> bool: ...


M = TypeVar("M", bound=_Message)


def mailbox_owner(account: Person) -> str:
    """The mailbox `account` listens to: its client's when it is the client's owner, else
    its own."""
    if account.role == "client" and account.client:
        return account.client
    return account.name


def mailboxes(directory: Directory) -> frozenset[str]:
    """The owners named by a `voicemail:` target of any rule."""
    return frozenset(
        target.owner
        for number in directory.numbers.values()
        for rule in number.rules
        for step in rule.steps
        for target in step.targets
        if isinstance(target, VoicemailTarget)
    )


def has_mailbox(
    owner: str, named: AbstractSet[str], stored: AbstractSet[str] = frozenset()
) -> bool:
    """Whether `owner` has a box: named by a rule (`named`: see `mailboxes`), or with
    messages stored (`stored`: the owners that have any)."""
    return owner in named or owner in stored


def changed_boxes(
    known: Mapping[str, tuple[int, int]], stored: Mapping[str, tuple[int, int]]
) -> list[str]:
    """The boxes whose (new, old) counts differ between `known` and `stored` (a box without
    messages may be missing from either)."""
    return sorted(o for o in known.keys() | stored.keys()
                  if known.get(o, (0, 0)) != stored.get(o, (0, 0)))  # fmt: skip


def play_order(messages: Iterable[M]) -> list[M]:
    """New messages oldest first, then heard ones oldest first."""
    return sorted(messages, key=lambda m: (m.heard, m.created_at, m.id))


def _count(n: int, one: str, many: str) -> str:
    return f"eine {one}" if n == 1 else f"{n} {many}"


def summary_text(new: int, old: int) -> str:
    """The German prompt at the start: how many new (and saved) messages there are."""
    if new == 0 and old == 0:
        return "Sie haben keine Nachrichten."
    head = (
        "Sie haben keine neuen Nachrichten"
        if new == 0
        else f"Sie haben {_count(new, 'neue Nachricht', 'neue Nachrichten')}"
    )
    if old:
        head += f" und {_count(old, 'gespeicherte Nachricht', 'gespeicherte Nachrichten')}"
    return head + "."


WEEKDAYS = ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag")
MONTHS = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
          "Oktober", "November", "Dezember")  # fmt: skip
USER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")  # an internal caller (user names: lower case)
ANONYMOUS = frozenset({"anonymous", "anonym", "restricted", "private"})
UNKNOWN = frozenset({"unknown", "unavailable", "invalid"})


def spoken_caller(caller: str) -> str:
    """Who called, as the prompt says it: a German number digit by digit in national format
    ("0 1 7 1 …"), another country's with "plus" first, an internal caller's user name as it
    is, "unterdrückt" for a withheld number, "unbekannt" when there is none (or no digits)."""
    text = caller.strip()
    if text.lower() in ANONYMOUS:
        return "unterdrückt"
    if text.lower() in UNKNOWN:
        return "unbekannt"
    if USER_NAME.match(text):
        return text
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits or any(ch.isalpha() for ch in text):
        return "unbekannt"
    if text.startswith("+49"):
        digits = "0" + digits[2:]
    elif text.startswith("0049"):
        digits = "0" + digits[4:]
    elif text.startswith("+"):
        return "plus " + " ".join(digits)
    elif text.startswith("00"):
        return "plus " + " ".join(digits[2:])
    return " ".join(digits)


def spoken_time(at: datetime, now: datetime) -> str:
    """When, as the prompt says it, in `at`'s zone (give both in the box's zone):
    "heute um 14 Uhr 5", "gestern um 9 Uhr", else "am Donnerstag, 3. Dezember, um 14 Uhr 5"."""
    clock = f"um {at.hour} Uhr" + (f" {at.minute}" if at.minute else "")
    day, today = at.date(), now.astimezone(at.tzinfo).date() if at.tzinfo else now.date()
    if day == today:
        return f"heute {clock}"
    if day == today - timedelta(days=1):
        return f"gestern {clock}"
    return f"am {WEEKDAYS[day.weekday()]}, {day.day}. {MONTHS[day.month - 1]}, {clock}"


def intro_text(number: int, caller: str, at: datetime, now: datetime) -> str:
    """What is said before a message: "Nachricht 1, von 0 1 7 1 …, heute um 14 Uhr 5."
    (`at` and `now` in the box's zone)."""
    return f"Nachricht {number}, von {spoken_caller(caller)}, {spoken_time(at, now)}."


MENU_TEXT = "Eins: wiederholen. Sieben: löschen. Neun: speichern."
DELETED_TEXT = "Nachricht gelöscht."
NOT_DELETED_TEXT = "Die Nachricht konnte nicht gelöscht werden."
END_TEXT = "Keine weiteren Nachrichten. Auf Wiederhören."
NO_MAILBOX = "No mailbox for this user"


class Next(Enum):
    REPLAY = "replay"
    ON = "on"  # the next message
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with the current message: where to go, and whether it is heard now."""

    next: Next
    heard: bool


def decide(key: str | None, played_to_end: bool) -> Decision:
    """The step after a message (or its menu): `key` pressed (None: none, the message and
    its menu ran out), `played_to_end` whether the message was heard to its end."""
    if key == "1":
        return Decision(Next.REPLAY, played_to_end)
    if key == "7":
        return Decision(Next.DELETE, played_to_end)
    if key == "9":
        return Decision(Next.ON, True)  # kept: heard, even when cut short
    if key in ("#", None):
        return Decision(Next.ON, played_to_end)
    raise ValueError(f"not a key of listening: {key!r}")


@dataclass
class Listening(Generic[M]):
    """One caller going through his mailbox: the messages in the order played and where he
    is (sans-IO: the media application plays, this decides)."""

    messages: list[M]
    index: int = 0

    @classmethod
    def of(cls, messages: Iterable[M]) -> Listening[M]:
        return cls(play_order(messages))

    @property
    def current(self) -> M | None:
        return self.messages[self.index] if self.index < len(self.messages) else None

    @property
    def summary(self) -> str:
        new = sum(1 for m in self.messages if not m.heard)
        return summary_text(new, len(self.messages) - new)

    def advance(self) -> None:
        self.index += 1
