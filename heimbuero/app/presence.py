"""Presence: who the actor may see (office/visibility.py's rule, applied by the presence
service), as a snapshot and as a watch of changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from heimbuero.app.errors import Unavailable
from heimbuero.app.policy import Actor

Snapshot = Callable[[str], list[dict[str, Any]]]
Watch = Callable[[str, Callable[[dict[str, Any]], None]], Callable[[], None]]


class Presence:
    def __init__(self, snapshot: Snapshot | None = None, watch: Watch | None = None) -> None:
        self.snapshot, self.watch_fn = snapshot, watch

    def visible(self, actor: Actor) -> list[dict[str, Any]]:
        if self.snapshot is None:
            raise Unavailable("presence is not available")
        return self.snapshot(actor.name)

    def watch(
        self, actor: Actor, on_change: Callable[[dict[str, Any]], None]
    ) -> tuple[list[dict[str, Any]], Callable[[], None]]:
        """The visible presence now and a watch of its changes (returns the function that
        ends the watch)."""
        if self.snapshot is None or self.watch_fn is None:
            raise Unavailable("presence is not available")
        stop = self.watch_fn(actor.name, on_change)
        return self.snapshot(actor.name), stop
