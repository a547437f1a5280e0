"""Call records (what billing charges from), written from the events of routed calls.

`CallRouting` publishes every change of a routed call's record as one event, with the record's
number; `CallRecorder` subscribes to them and queues the changes, and the server hands the
queue to its writer thread every second and at stop (`take`, then `write` there), so no call
waits for the database. The media relay's statistics come as `CallMediaMeasured` after the call.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from heimbuero.events import (
    CallMediaMeasured,
    CallOffered,
    CallTransferred,
    EventBus,
    RoutedCallAnswered,
    RoutedCallEnded,
    RoutedCallStep,
)

if TYPE_CHECKING:
    from heimbuero.store.db import Store

CallOp = tuple[str, int, dict[str, object]]  # an operation of Store.apply_call_log


class CallRecorder:
    """The call records of routed calls: queued from the bus, written in batches (one
    transaction each) by the writer thread; also counts the calls open and ended (metrics)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ops: list[CallOp] = []
        self._ids: dict[int, int] = {}  # the record's number -> the store's id
        self._open: set[int] = set()  # record numbers started, not ended (for metrics)
        self.results: Counter[str] = Counter()  # ended calls by result (for metrics)

    def subscribe(self, events: EventBus) -> None:
        events.subscribe(CallOffered, self.offered)
        events.subscribe(RoutedCallStep, self.step)
        events.subscribe(RoutedCallAnswered, self.answered)
        events.subscribe(RoutedCallEnded, self.ended)
        events.subscribe(CallTransferred, self.transferred)
        events.subscribe(CallMediaMeasured, self.media)

    @property
    def open_calls(self) -> int:
        return len(self._open)

    def offered(self, event: CallOffered) -> None:
        fields: dict[str, object] = {
            "call_id": event.call_id, "number": event.number, "caller": event.caller[:200],
            "started_at": _utc(event.at), "client": event.client, "rule": event.rule,
        }  # fmt: skip
        self._ops.append(("start", event.record, fields))
        self._open.add(event.record)

    def step(self, event: RoutedCallStep) -> None:
        self._ops.append(("update", event.record, {"step": event.step}))

    def answered(self, event: RoutedCallAnswered) -> None:
        self._ops.append(("update", event.record, {
            "answered_by": event.answered_by, "answered_at": _utc(event.at),
            "ring_seconds": event.ring_seconds, "rule": event.rule,
        }))  # fmt: skip

    def ended(self, event: RoutedCallEnded) -> None:
        fields: dict[str, object] = {
            "result": event.result, "ended_at": _utc(event.at), "end_reason": event.end_reason,
        }  # fmt: skip
        if event.ring_seconds is not None:
            fields["ring_seconds"] = event.ring_seconds
        if event.talk_seconds is not None:
            fields["talk_seconds"] = event.talk_seconds
        self._ops.append(("update", event.record, fields))
        if event.record in self._open:
            self._open.discard(event.record)
            self.results[str(event.result)] += 1

    def transferred(self, event: CallTransferred) -> None:
        """The new call's record links the original's, which ends `transferred` (by Call-ID:
        the original may have ended long before)."""
        fields: dict[str, object] = {"call_id": event.call_id, "from_call_id": event.from_call_id}
        self._ops.append(("transfer", 0, fields))

    def media(self, event: CallMediaMeasured) -> None:
        """The relay's statistics, stored with the call's record (if it has one)."""
        self._ops.append(("media", 0, {"call_id": event.call_id, "media": event.stats}))

    def has_changes(self) -> bool:
        return bool(self._ops)

    def take(self) -> list[CallOp]:
        ops, self._ops = self._ops, []
        return ops

    def write(self, ops: list[CallOp]) -> None:
        """Apply queued operations in order, one transaction per batch (worker thread)."""
        self.store.apply_call_log(ops, self._ids)
        for kind, number, fields in ops:
            if kind == "update" and "ended_at" in fields:
                self._ids.pop(number, None)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
