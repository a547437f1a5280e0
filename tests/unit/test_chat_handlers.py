"""The messenger handler's parts the console's chat uses: whom a user may message (the
presence snapshot), one conversation (reports left out; empty for a reachable user, NotFound
for anyone else), and the text check of `content`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from heimbuero.app import Actor, Invalid, NotFound, Role
from heimbuero.app.messages import Messages
from heimbuero.store.messages import MessageRecord

COMPOSING = (
    b'<?xml version="1.0"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
    b"<state>active</state></isComposing>"
)
OWNER = Actor("mueller", Role.CLIENT, "mueller")


def _record(mid: str, content_type: str, body: bytes) -> MessageRecord:
    return MessageRecord(
        id=mid, sender="anna", recipient="mueller", created_at=datetime(2026, 12, 5, tzinfo=UTC),
        content_type=content_type, body=body, state="delivered", state_at=None,
        expires_at=None, imdn_id=None, imdn_state=None, file_id=None, origin="http",
    )  # fmt: skip


class _Store:
    """Just the history: anna has a conversation with mueller."""

    def conversation_messages(
        self, user: str, peer: str, limit: int = 100, before: str | None = None
    ) -> list[MessageRecord] | None:
        if {user, peer} != {"anna", "mueller"}:
            return None
        return [
            _record("1", "text/plain", b"Hallo"),
            _record("2", "application/im-iscomposing+xml", COMPOSING),
        ]


def _people(name: str) -> list[dict[str, Any]]:
    """The presence a client's owner sees: the office's staff, himself (not schulz)."""
    return [{"user": u} for u in ("admin", "anna", "ben", "mueller")]


def _messages() -> Messages:
    return Messages(_Store(), people=_people)  # type: ignore[arg-type]


def test_peers_are_whom_presence_shows_without_oneself() -> None:
    assert _messages().peers(OWNER) == ["admin", "anna", "ben"]
    assert Messages(_Store()).peers(OWNER) == []  # type: ignore[arg-type]


def test_thread_leaves_reports_out_and_refuses_others_alike() -> None:
    m = _messages()
    assert [r.id for r in m.thread(OWNER, "ANNA")] == ["1"]
    assert m.thread(OWNER, "ben") == []  # may write, has not yet
    with pytest.raises(NotFound) as other:
        m.thread(OWNER, "schulz")  # another business
    with pytest.raises(NotFound) as missing:
        m.thread(OWNER, "niemand")
    assert str(other.value) == str(missing.value)


def test_content_checks_the_text_like_the_api() -> None:
    assert _messages().content("Zeile 1\nZeile 2", None)[1] == b"Zeile 1\nZeile 2"
    with pytest.raises(Invalid):
        _messages().content("bad \x1b[31m escape", None)


class _ReadStore:
    """Unread messages to mueller: a text and a typing notice from anna, a text from ben."""

    def __init__(self) -> None:
        self.read: list[tuple[str, str]] = []

    def unread_messages(self, user: str, limit: int = 1000) -> list[MessageRecord]:
        ben = _record("3", "text/plain", b"Servus")
        return [
            _record("1", "text/plain", b"Hallo"),
            _record("2", "application/im-iscomposing+xml", COMPOSING),
            MessageRecord(**{**{f: getattr(ben, f) for f in ben.__slots__}, "sender": "ben"}),
        ]

    def mark_read(self, user: str, peer: str) -> list[MessageRecord]:
        self.read.append((user, peer))
        return [_record("1", "text/plain", b"Hallo")] if peer == "anna" else []


def test_unread_counts_shown_messages_and_read_tells_the_sender() -> None:
    store, published = _ReadStore(), []
    m = Messages(store, publish=published.append)  # type: ignore[arg-type]
    assert m.unread(OWNER) == {"anna": 1, "ben": 1}  # the typing notice is no message
    assert asyncio.run(m.read(OWNER, "ANNA")) == 1
    assert store.read == [("mueller", "anna")]
    [event] = published
    assert (event.sender, event.recipient) == ("anna", "mueller")  # anna's pages learn it
    assert event.message["id"] == "1" and event.message["imdn_state"] == "displayed"
    assert (
        asyncio.run(m.read(OWNER, "schulz")) == 0 and len(published) == 1
    )  # nothing read: no event
