"""The running server as its staff see it: status, live registrations, store size.

The numbers come from the server's own objects through callables (web/app.py's WebContext
wires them); without a running server (the command line, unit tests) they are empty."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from heimbuero.app import policy
from heimbuero.app.policy import Actor
from heimbuero.store import Store

Status = Callable[[], dict[str, Any]]
Registrations = Callable[[], list[dict[str, Any]]]


def visible_registrations(actor: Actor, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live registrations the actor may see: staff all, others their own devices."""
    return rows if actor.staff else [r for r in rows if r["user"] == actor.name]


def require_status_reader(actor: Actor) -> None:
    policy.require_staff(actor, "only admins and agents may see the server status")


class ServerState:
    def __init__(
        self,
        store: Store,
        status: Status | None = None,
        registrations: Registrations | None = None,
    ) -> None:
        self.store, self.status_fn, self.registrations_fn = store, status, registrations

    def status(self, actor: Actor) -> dict[str, Any]:
        """The SIP server's status (staff): uptime, registrations, calls now, trunks, …"""
        require_status_reader(actor)
        return dict(self.status_fn()) if self.status_fn is not None else {}

    def registrations(self, actor: Actor) -> list[dict[str, Any]]:
        """Live SIP registrations: staff see all, the others their own devices."""
        rows = self.registrations_fn() if self.registrations_fn is not None else []
        return visible_registrations(actor, rows)

    def store_bytes(self, actor: Actor) -> int | None:
        """Bytes the database takes (admins); None when not known."""
        policy.require_admin(actor)
        return self.store.size_bytes()
