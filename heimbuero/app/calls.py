"""Call records: staff read every client's, the others their own business's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from heimbuero.app import policy
from heimbuero.app._util import valid
from heimbuero.app.errors import Invalid, NotFound, Unavailable
from heimbuero.app.policy import Actor
from heimbuero.domain.model import caller_number
from heimbuero.office import directory
from heimbuero.store import CallRecord, Store
from heimbuero.store.notes import NoteStore

HISTORY = 5  # earlier calls and notes of a caller on the screen pop
MAX_OFFSET = 1_000_000_000  # records skipped when paging (a bigger one overflows SQL's integer)


def _utc(field: str, moment: datetime | None) -> datetime | None:
    """`moment` in UTC (one without an offset is UTC already); Invalid when UTC has no such
    moment (an offset that pushes the year 1 or 9999 beyond the calendar)."""
    if moment is None or moment.tzinfo is None:
        return None if moment is None else moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise Invalid(field, f"{field} {moment.isoformat()} is out of range") from None


class Calls:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list(
        self,
        actor: Actor,
        client_id: str | None = None,
        limit: int = 100,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
    ) -> list[CallRecord]:
        """Newest first; started at or after `since` and before `until` when given, the
        `offset` newest skipped (paging). A client the actor may not see is NotFound as
        elsewhere, and so is one that does not exist and has no records (a deleted client's
        records outlive it and are still listed)."""
        if limit < 1 or not 0 <= offset <= MAX_OFFSET:
            raise Invalid("limit", f"limit must be at least 1 and offset 0 to {MAX_OFFSET}")
        since, until = _utc("since", since), _utc("until", until)
        if client_id is not None:
            client_id = valid("client", directory.validate_slug, client_id)
            policy.require_client_visible(actor, client_id)
        elif not actor.staff:
            if actor.client is None:
                return []
            client_id = actor.client
        records = self.store.list_call_records(
            client_id, limit=limit, since=since, until=until, offset=offset
        )
        if not records and client_id is not None and self.store.get_client(client_id) is None:
            raise NotFound("client", client_id)
        return records

    def caller_history(
        self, actor: Actor, client_id: str, caller: str, exclude_call: str = ""
    ) -> dict[str, Any]:
        """What the client's records say of a caller, for the screen pop: their last calls
        (but `exclude_call`, the one ringing) and the notes taken of them, newest first."""
        client_id = valid("client", directory.validate_slug, client_id)
        policy.require_client_visible(actor, client_id)
        number = caller_number(caller)
        if not number:
            return {"caller": number, "calls": [], "notes": []}
        calls = [
            r
            for r in self.store.call_records_of_caller(client_id, number, HISTORY + 1)
            if r.call_id != exclude_call
        ][:HISTORY]
        notes = NoteStore(self.store).by_caller(client_id, number, HISTORY)
        return {
            "caller": number,
            "calls": [
                {
                    "started_at": r.started_at.isoformat(),
                    "result": r.result,
                    "answered_by": r.answered_by,
                    "talk_seconds": round(r.talk_seconds),
                }
                for r in calls
            ],  # fmt: skip
            "notes": [
                {
                    "created_at": n.created_at.isoformat(),
                    "agent": n.agent,
                    "caller_name": n.caller_name,
                    "concern": n.concern,
                    "text": n.text[:300],
                }
                for n in notes
            ],  # fmt: skip
        }


WarningWatch = Callable[[Callable[[dict[str, Any]], None]], Callable[[], None]]


RingWatch = Callable[[str, Callable[[dict[str, Any]], None]], Callable[[], None]]


class Warnings:
    """What the provider's staff are told as it happens: warnings (a cap of calls out
    reached), and the client card of each client's call that rings their phones."""

    def __init__(self, watch: WarningWatch | None = None, ring: RingWatch | None = None) -> None:
        self.watch_fn, self.ring_fn = watch, ring

    def watch_ringing(
        self, actor: Actor, on_ring: Callable[[dict[str, Any]], None]
    ) -> Callable[[], None]:
        """The screen pop: `on_ring(card)` for each client's call ringing the actor's phones
        (client, name, greeting, notes, trade, contact person, number, caller)."""
        policy.require_staff(actor)
        if self.ring_fn is None:
            raise Unavailable("events are not available")
        return self.ring_fn(actor.name, on_ring)

    def watch(
        self, actor: Actor, on_warning: Callable[[dict[str, Any]], None]
    ) -> Callable[[], None]:
        policy.require_staff(actor)
        if self.watch_fn is None:
            raise Unavailable("events are not available")
        return self.watch_fn(on_warning)
