"""Dictation jobs (Diktate): the rules of a job's life, the typists' queue, and Normzeilen.

Pure rules: nothing here touches HTTP, SIP, SQL, the disk or a clock (times are passed in).
Everything that changes a job's state is in the table `TRANSITIONS`, read like h11's:

    new ──take──► in_progress ──submit──► delivered ──correct──► corrections_requested
     ▲               │   │   └─(client wants review)─► review ──approve──► delivered
     └──release/expire┘   │                               └──reopen──► corrections_requested
                          └─ a job taken from corrections_requested returns there

`in_progress` is held by one typist with a lock that ends `lock_minutes` after the last
sign of life (take, heartbeat, saved draft); an expired lock puts the job back where it came
from (`new` or `corrections_requested`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class State(StrEnum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    REVIEW = "review"
    DELIVERED = "delivered"
    CORRECTIONS_REQUESTED = "corrections_requested"


class WorkType(StrEnum):
    LETTER = "letter"
    QUOTE = "quote"
    INVOICE_TEXT = "invoice_text"
    REPORT = "report"
    MINUTES = "minutes"
    OTHER = "other"


class Priority(StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"


class Action(StrEnum):
    TAKE = "take"
    RELEASE = "release"
    EXPIRE = "expire"
    SUBMIT = "submit"
    APPROVE = "approve"
    REOPEN = "reopen"
    CORRECT = "correct"


# (state, action) -> next state. RELEASE/EXPIRE go back to the state the job was taken from
# (`POOL` stands for it); SUBMIT goes to REVIEW when the client wants a review.
POOL = "pool"
TRANSITIONS: dict[tuple[State, Action], State | str] = {
    (State.NEW, Action.TAKE): State.IN_PROGRESS,
    (State.CORRECTIONS_REQUESTED, Action.TAKE): State.IN_PROGRESS,
    (State.IN_PROGRESS, Action.RELEASE): POOL,
    (State.IN_PROGRESS, Action.EXPIRE): POOL,
    (State.IN_PROGRESS, Action.SUBMIT): State.DELIVERED,  # or REVIEW: see next_state
    (State.REVIEW, Action.APPROVE): State.DELIVERED,
    (State.REVIEW, Action.REOPEN): State.CORRECTIONS_REQUESTED,
    (State.DELIVERED, Action.CORRECT): State.CORRECTIONS_REQUESTED,
}

# What the author reads on the phone and in the portal when the job changes state.
STATE_TEXT = {
    State.NEW: "ist eingegangen",
    State.IN_PROGRESS: "ist in Arbeit",
    State.REVIEW: "wird geprüft",
    State.DELIVERED: "ist fertig",
    State.CORRECTIONS_REQUESTED: "wird korrigiert",
}

AUDIO_FORMATS = {  # suffix -> content type of the audio parts we accept and can measure
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
}
NORMZEILE_DEFAULT = 55
NORMZEILE_MIN, NORMZEILE_MAX = 50, 60


class TransitionError(Exception):
    """The action is not allowed in the job's state; the message says so in one line."""


def next_state(
    state: State, action: Action, *, pool: State = State.NEW, review: bool = False
) -> State:
    """The state after `action`; raises TransitionError when the table has no such move.
    `pool` is where RELEASE/EXPIRE return to; `review` makes SUBMIT go to REVIEW."""
    target = TRANSITIONS.get((state, action))
    if target is None:
        raise TransitionError(f"a job that is {state.value} cannot be {_done(action)}")
    if target == POOL:
        return pool
    if action is Action.SUBMIT and review:
        return State.REVIEW
    return State(target)


def _done(action: Action) -> str:
    return {
        Action.TAKE: "taken",
        Action.RELEASE: "released",
        Action.EXPIRE: "expired",
        Action.SUBMIT: "delivered",
        Action.APPROVE: "approved",
        Action.REOPEN: "reopened",
        Action.CORRECT: "corrected",
    }[action]


def pool_of(state: State) -> State:
    """Where a job taken from `state` returns when its lock is released or expires."""
    return State.CORRECTIONS_REQUESTED if state is State.CORRECTIONS_REQUESTED else State.NEW


def lock_until(now: datetime, lock_minutes: int) -> datetime:
    return now + timedelta(minutes=lock_minutes)


def lock_expired(state: State, locked_until: datetime | None, now: datetime) -> bool:
    return state is State.IN_PROGRESS and (locked_until is None or locked_until <= now)


def is_overdue(state: State, due: datetime | None, now: datetime) -> bool:
    """Not delivered (or in review) and past its due time."""
    return due is not None and due <= now and state not in (State.DELIVERED, State.REVIEW)


def queue_key(
    priority: Priority, due: datetime | None, created: datetime
) -> tuple[int, float, float]:
    """The typists' queue order: urgent first, then earliest due (no due time last), then
    oldest."""
    return (
        0 if priority is Priority.URGENT else 1,
        due.timestamp() if due is not None else math.inf,
        created.timestamp(),
    )


def status_text(title: str, state: State) -> str:
    """The message the author gets: "Ihr Diktat 'Angebot Meier' ist in Arbeit"."""
    return f"Ihr Diktat '{title}' {STATE_TEXT[state]}"


@dataclass(frozen=True, slots=True)
class Normzeilen:
    """The count of a text: characters (including spaces), lines of `line_chars`."""

    characters: int
    lines: int
    line_chars: int


def count_normzeilen(paragraphs: list[str], line_chars: int = NORMZEILE_DEFAULT) -> Normzeilen:
    """Normzeilen of a document's text, counted as German Schreibbüros bill them:

    - every character of every paragraph counts, spaces and punctuation included; a tab
      counts as one character; a line break inside a paragraph counts as one (a space);
    - paragraph marks and empty paragraphs count nothing (no padding of short lines);
    - lines = total characters / `line_chars`, rounded up to a whole line; an empty text
      is 0 lines.

    So 110 characters in one paragraph and 55 + 55 in two are both 2 Normzeilen, and 56
    characters are 2. `line_chars` is 50–60 (55 is the usual Normzeile)."""
    if not NORMZEILE_MIN <= line_chars <= NORMZEILE_MAX:
        raise ValueError(f"a Normzeile has {NORMZEILE_MIN}–{NORMZEILE_MAX} characters")
    chars = sum(len(p.replace("\r\n", "\n")) for p in paragraphs)
    return Normzeilen(chars, -(-chars // line_chars), line_chars)


def paragraphs_of_text(text: str) -> list[str]:
    """A plain draft as paragraphs: a blank line separates paragraphs; single line breaks
    stay inside a paragraph (and count as one character)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


# -- the dictation number: who may dictate for a client by calling it ----------------------------

NOT_A_USER_PHONE = "The dictation number takes calls from the client's own phones only"
UNKNOWN_CALLER = "Caller not known as a user of this client (dictation number)"


def dictation_caller(
    client: str,
    roles: dict[str, tuple[str, str | None, str | None]],
    user: str | None,
    caller: str | None,
) -> tuple[str | None, str]:
    """Whose dictation a call to `client`'s dictation number is: (author, "") or (None, why).

    `roles` maps user names to (role, client, mobile). A phone of ours (`user`, authenticated
    by its password) must be a user of this client (owner or employee). A call from the
    carrier is the user of this client whose mobile number is the caller's (`caller`, E.164,
    as the carrier states it); a caller matching no one — or more than one — is refused, so
    a stranger who learns the number cannot fill the client's queue."""
    if user is not None:
        role, of, _ = roles.get(user, ("", None, None))
        if role in ("client", "employee") and of == client:
            return user, ""
        return None, NOT_A_USER_PHONE
    found = sorted(
        name
        for name, (role, of, mobile) in roles.items()
        if role in ("client", "employee") and of == client and caller and mobile == caller
    )
    if len(found) != 1:
        return None, UNKNOWN_CALLER
    return found[0], ""
