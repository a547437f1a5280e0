"""The messenger's store: history written by operations, conversations, the queue, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from heimbuero.store.db import Store

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Store:
    s = Store(db_url)
    s.upgrade()
    return s


def add(mid: str, sender: str, recipient: str, at: datetime, body: bytes = b"hi",
        state: str = "sending", file_id: str | None = None,
        imdn_id: str | None = None) -> tuple:  # fmt: skip
    return ("add", {
        "id": mid, "sender": sender, "recipient": recipient, "created_at": at,
        "content_type": "text/plain", "body": body, "state": state, "state_at": None,
        "expires_at": at + timedelta(days=7), "imdn_id": imdn_id, "imdn_state": None,
        "file_id": file_id, "origin": "sip",
    })  # fmt: skip


def test_history_per_conversation_in_order_with_states(store: Store) -> None:
    store.apply_message_log([
        add("m1", "carol", "anna", T0, b"eins", imdn_id="i1"),
        add("m2", "anna", "carol", T0 + timedelta(seconds=5), b"zwei"),
        ("state", "m1", "delivered", T0),
        ("report", "i1", "anna", "displayed"),
        add("m3", "carol", "bob", T0 + timedelta(seconds=9), b"drei", state="queued"),
    ])  # fmt: skip
    history = store.conversation_messages("anna", "carol")
    assert history is not None
    assert [(m.id, m.body, m.state) for m in history] == [
        ("m1", b"eins", "delivered"), ("m2", b"zwei", "sending"),
    ]  # fmt: skip
    assert history[0].imdn_state == "displayed"
    assert history[0].created_at == T0
    # both users see the same conversation; most recent first in the list
    convs = store.list_conversations("carol")
    assert [(c.peer, c.last.id if c.last else None) for c in convs] == [
        ("bob", "m3"), ("anna", "m2"),
    ]  # fmt: skip
    assert store.conversation_messages("anna", "bob") is None
    assert [m.id for m in store.load_queued_messages()] == ["m3"]
    # paging back
    page = store.conversation_messages("carol", "anna", limit=1, before="m2")
    assert page is not None and [m.id for m in page] == ["m1"]


def test_unfinished_deliveries_fail_at_restart(store: Store) -> None:
    store.apply_message_log([add("m1", "a", "b", T0), add("m2", "a", "b", T0, state="queued")])
    assert store.fail_unfinished_messages(T0) == 1
    history = store.conversation_messages("a", "b")
    assert history is not None and [m.state for m in history] == ["failed", "queued"]


def test_delete_and_retention_return_the_files_to_delete(store: Store) -> None:
    old = T0 - timedelta(days=100)
    store.apply_message_log([
        add("m1", "a", "b", old, file_id="f1"),
        add("m2", "a", "c", old, file_id="f2", state="queued"),  # still waiting: kept
        add("m3", "a", "d", T0, file_id="f3"),
    ])  # fmt: skip
    count, files = store.delete_idle_conversations(T0 - timedelta(days=30))
    assert (count, files) == (1, ["f1"])
    assert store.conversation_messages("a", "b") is None
    assert store.conversation_messages("a", "c") is not None
    assert store.delete_conversation("d", "a") == ["f3"]
    assert store.delete_conversation("d", "a") is None
    assert [c.peer for c in store.list_conversations("a")] == ["c"]


def test_bad_operation_writes_nothing(store: Store) -> None:
    with pytest.raises(ValueError):
        store.apply_message_log([add("m1", "a", "b", T0), ("state", "m1", "bogus", T0)])
    assert store.conversation_messages("a", "b") is None


def test_unread_until_read_or_reported(store: Store) -> None:
    """A message to anna is unread until a device of hers reports it displayed or she reads
    the conversation; her own messages and other conversations stay as they are."""
    store.apply_message_log([
        add("m1", "carol", "anna", T0, b"eins", imdn_id="i1"),
        add("m2", "carol", "anna", T0 + timedelta(seconds=1), b"zwei"),
        add("m3", "anna", "carol", T0 + timedelta(seconds=2), b"drei"),
        add("m4", "bob", "anna", T0 + timedelta(seconds=3), b"vier"),
        ("report", "i1", "anna", "delivered"),  # delivered is not read
    ])  # fmt: skip
    assert [m.id for m in store.unread_messages("anna")] == ["m1", "m2", "m4"]
    assert [m.id for m in store.unread_messages("carol")] == ["m3"]
    assert [m.id for m in store.mark_read("anna", "carol")] == ["m1", "m2"]
    assert store.mark_read("anna", "carol") == []  # once
    assert store.mark_read("anna", "nobody") == []
    assert [m.id for m in store.unread_messages("anna")] == ["m4"]
    assert [m.id for m in store.unread_messages("carol")] == ["m3"]
    history = store.conversation_messages("carol", "anna")
    assert history is not None and [m.imdn_state for m in history] == [
        "displayed", "displayed", None,
    ]  # fmt: skip
    # late reports: a delivery report does not make it unread again
    store.apply_message_log([("report", "i1", "anna", "delivered")])
    store.apply_message_log([("report", "i1", "anna", "displayed")])
    assert [m.id for m in store.unread_messages("anna")] == ["m4"]
