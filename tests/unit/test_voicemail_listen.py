"""Listening to voicemail by phone, the pure parts: whose box, which boxes exist, the order
of the messages, the German summary, what each key does; the store's heard and delete."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from heimbuero.app.errors import NotFound
from heimbuero.app.policy import Actor, Role
from heimbuero.app.voicemail import Voicemails
from heimbuero.domain.model import Client, Directory, Number, Provider, Rule, Step, User
from heimbuero.office.voicemail import (
    Decision,
    Listening,
    Next,
    decide,
    has_mailbox,
    mailbox_owner,
    mailboxes,
    play_order,
    summary_text,
)
from heimbuero.store.db import Store
from heimbuero.store.voicemail import (
    add_voicemail,
    counts,
    delete_voicemail,
    mailbox,
    mark_heard,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Msg:
    id: int
    created_at: datetime
    heard: bool


def test_whose_box_a_user_listens_to() -> None:
    assert mailbox_owner(User("mueller", "client", client="mueller")) == "mueller"
    assert mailbox_owner(User("chef", "client", client="mueller")) == "mueller"
    assert mailbox_owner(User("eva", "employee", client="mueller")) == "eva"
    assert mailbox_owner(User("anna", "agent")) == "anna"
    assert mailbox_owner(User("odd", "client", client=None)) == "odd"


def test_boxes_are_those_named_by_rules_or_with_messages() -> None:
    rules = (
        Rule("Tag", (Step(("user:mueller",), 10), Step(("voicemail:mueller",), 30))),
        Rule("Azubi", (Step(("voicemail:eva", "user:anna"), 30),)),
    )
    directory = Directory(
        Provider("P"), clients={"mueller": Client("mueller", "M")},
        numbers={"+49891": Number("+49891", "mueller", rules)},
    )  # fmt: skip
    named = mailboxes(directory)
    assert named == {"mueller", "eva"}
    assert has_mailbox("mueller", named) and has_mailbox("eva", named)
    assert not has_mailbox("anna", named)
    assert has_mailbox("anna", named, {"anna"})  # messages left before a rule was removed


def test_new_messages_first_oldest_first_then_heard_ones() -> None:
    a = Msg(1, T0, True)
    b = Msg(2, T0 + timedelta(minutes=1), False)
    c = Msg(3, T0 + timedelta(minutes=2), False)
    d = Msg(4, T0 + timedelta(minutes=3), True)
    assert play_order([d, c, b, a]) == [b, c, a, d]
    listening = Listening.of([d, c, b, a])
    assert listening.summary == "Sie haben 2 neue Nachrichten und 2 gespeicherte Nachrichten."
    seen = []
    while listening.current is not None:
        seen.append(listening.current.id)
        listening.advance()
    assert seen == [2, 3, 1, 4]


@pytest.mark.parametrize(
    ("new", "old", "text"),
    [
        (0, 0, "Sie haben keine Nachrichten."),
        (1, 0, "Sie haben eine neue Nachricht."),
        (2, 0, "Sie haben 2 neue Nachrichten."),
        (0, 1, "Sie haben keine neuen Nachrichten und eine gespeicherte Nachricht."),
        (3, 2, "Sie haben 3 neue Nachrichten und 2 gespeicherte Nachrichten."),
    ],
)
def test_the_summary_is_german(new: int, old: int, text: str) -> None:
    assert summary_text(new, old) == text


def test_what_each_key_does() -> None:
    # the message ran out (its menu too): heard, next
    assert decide(None, True) == Decision(Next.ON, True)
    assert decide("#", True) == Decision(Next.ON, True)
    assert decide("#", False) == Decision(Next.ON, False)  # skipped: stays new
    assert decide("9", False) == Decision(Next.ON, True)  # kept: heard
    assert decide("1", False) == Decision(Next.REPLAY, False)
    assert decide("1", True) == Decision(Next.REPLAY, True)
    assert decide("7", False).next is Next.DELETE
    with pytest.raises(ValueError):
        decide("5", True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'heimbuero.db'}")
    s.upgrade()
    yield s
    s.close()


def test_heard_and_deleted_in_the_store_only_within_the_box(store: Store) -> None:
    a = add_voicemail(store, "mueller", "mueller", "+4930", "c1", "voicemail/mueller/a.wav", 2, T0)
    b = add_voicemail(store, "mueller", "mueller", "+4931", "c2", "voicemail/mueller/b.wav", 2, T0)
    e = add_voicemail(store, "mueller", "eva", "+4932", "c3", "voicemail/eva/e.wav", 2, T0)
    assert [v.id for v in mailbox(store, "mueller")] == [a, b]
    assert not mark_heard(store, "mueller", e)  # another box's id
    assert mark_heard(store, "mueller", a)
    assert counts(store, "mueller") == (1, 1) and counts(store, "eva") == (1, 0)
    assert delete_voicemail(store, "mueller", e) is None
    assert delete_voicemail(store, "mueller", b) == "voicemail/mueller/b.wav"
    assert delete_voicemail(store, "mueller", b) is None  # gone
    assert [(v.id, v.heard) for v in mailbox(store, "mueller")] == [(a, True)]
    assert [v.id for v in mailbox(store, "eva")] == [e]


def test_the_handler_works_on_the_actors_own_box(store: Store, tmp_path: Path) -> None:
    wav = tmp_path / "voicemail" / "mueller" / "a.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF")
    a = add_voicemail(store, "mueller", "mueller", "+4930", "c1", "voicemail/mueller/a.wav", 2, T0)
    handler = Voicemails(store, tmp_path, lambda: frozenset({"mueller"}))
    owner = Actor("mueller", Role.CLIENT, "mueller")
    eva = Actor("eva", Role.EMPLOYEE, "mueller")
    anna = Actor("anna", Role.AGENT)
    assert [m.id for m in handler.messages(owner)] == [a]
    with pytest.raises(NotFound):
        handler.messages(anna)  # no box: neither named by a rule nor with messages
    with pytest.raises(NotFound):
        handler.mark_heard(eva, a)  # the client's box is the owner's, not an employee's
    with pytest.raises(NotFound):
        handler.delete(eva, a)
    assert wav.exists() and counts(store, "mueller") == (1, 0)
    handler.delete(owner, a)
    assert not wav.exists() and mailbox(store, "mueller") == []
    assert handler.messages(owner) == []  # the box itself stays (a rule names it)
