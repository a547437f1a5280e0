"""The in-process bus of domain events (heimbuero/events.py)."""

from __future__ import annotations

import logging

import pytest

from heimbuero.events import (
    CallAnswered,
    CallEnded,
    Event,
    EventBus,
    MessageDelivered,
    MessageStateChanged,
    MessageStored,
)


def test_subscribers_get_the_events_of_their_type_in_order() -> None:
    bus = EventBus()
    got: list[tuple[str, Event]] = []
    bus.subscribe(CallAnswered, lambda e: got.append(("a", e)))
    bus.subscribe(CallEnded, lambda e: got.append(("e", e)))
    bus.subscribe(CallAnswered, lambda e: got.append(("b", e)))
    answered = CallAnswered(1.0, "c1", ("anna",))
    bus.publish(answered)
    bus.publish(CallEnded(2.0, "c1"))
    assert got == [("a", answered), ("b", answered), ("e", CallEnded(2.0, "c1"))]


def test_a_subscriber_of_a_class_gets_its_subclasses() -> None:
    bus = EventBus()
    stored: list[Event] = []
    changed: list[Event] = []
    bus.subscribe(MessageStored, stored.append)
    bus.subscribe(MessageStateChanged, changed.append)
    m = {"sender": "anna", "recipient": "ben"}
    bus.publish(MessageStored(1.0, m))
    bus.publish(MessageDelivered(2.0, m))
    assert [type(e) for e in stored] == [MessageStored, MessageDelivered]
    assert [type(e) for e in changed] == [MessageDelivered]


def test_a_failing_subscriber_is_logged_and_never_reaches_the_publisher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    after: list[Event] = []

    def broken(e: CallEnded) -> None:
        raise RuntimeError("boom")

    bus.subscribe(CallEnded, broken)
    bus.subscribe(CallEnded, after.append)
    with caplog.at_level(logging.ERROR, logger="heimbuero.events"):
        bus.publish(CallEnded(1.0, "c1"))  # does not raise
    assert after == [CallEnded(1.0, "c1")]
    assert "a subscriber of CallEnded failed" in caplog.text


def test_unsubscribe_and_the_external_sink() -> None:
    bus = EventBus()
    got: list[Event] = []
    forwarded: list[Event] = []

    class Sink:
        def publish(self, event: Event) -> None:
            forwarded.append(event)

    stop = bus.subscribe(CallEnded, got.append)
    assert bus.has_subscribers(CallEnded) and not bus.has_subscribers(CallAnswered)
    stop()
    stop()  # twice is harmless
    bus.publish(CallEnded(1.0, "c1"))
    assert got == []
    bus.forward_to(Sink())
    bus.publish(CallEnded(2.0, "c2"))
    assert forwarded == [CallEnded(2.0, "c2")]


def test_events_are_frozen() -> None:
    e = CallEnded(1.0, "c1")
    with pytest.raises(AttributeError):
        e.call_id = "other"  # type: ignore[misc]
