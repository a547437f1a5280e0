"""A client's forwarding rules, its override (*21 / *22) and the call simulator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from heimbuero.app import policy
from heimbuero.app._util import country_of, valid
from heimbuero.app.errors import Forbidden, Invalid, NotFound, Problem, Stale
from heimbuero.app.policy import Actor
from heimbuero.domain.model import Client, Directory, Number, Override
from heimbuero.office import directory
from heimbuero.office.routing import RoutePlan, RoutingState
from heimbuero.office.rules_doc import RulesError, document_version, dump_rules_document
from heimbuero.store import Store


def _client(store: Store, actor: Actor, client_id: str) -> Client:
    policy.require_client_visible(actor, client_id)
    c = store.get_client(client_id)
    if c is None:
        raise NotFound("client", client_id)
    return c


class Rules:
    """The rules document of a client (docs/ROUTING.md): everybody of the business and staff
    read it; admins and the client owner replace it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def document(self, actor: Actor, client_id: str) -> dict[str, Any]:
        client_id = valid("client", directory.validate_slug, client_id)
        c = _client(self.store, actor, client_id)
        return dump_rules_document(c.id, self.store.load_directory())

    def version(self, actor: Actor, client_id: str) -> str:
        """The version of the stored document (rules_doc.document_version)."""
        return document_version(self.document(actor, client_id))

    def replace(
        self, actor: Actor, client_id: str, document: Any, expected: str | None = None
    ) -> dict[str, Number]:
        """Validate and store; an invalid document changes nothing and raises Invalid with
        every problem (fields are paths in the document). Returns the parsed numbers.
        With `expected` (the version the editor started from, rules_doc.document_version),
        a document changed meanwhile is not overwritten: Stale (a Conflict). The version is
        compared in the transaction that stores."""
        client_id = valid("client", directory.validate_slug, client_id)
        c = _client(self.store, actor, client_id)
        if not policy.may_change_rules(actor, c.id):
            raise Forbidden("only admins and the client itself may change its rules")
        if not isinstance(document, dict):
            raise Invalid.many([Problem("", "the rules document must be a mapping")])

        def unchanged(d: Directory) -> None:
            if expected is not None and expected != document_version(dump_rules_document(c.id, d)):
                raise Stale("the rules were changed meanwhile; reload them and edit again")

        try:
            return self.store.save_rules(c.id, document, unchanged)
        except RulesError as exc:
            raise Invalid.many([Problem(path, msg) for path, msg in exc.problems]) from None


@dataclass(frozen=True, slots=True)
class OverrideState:
    override: Override
    active: bool


class Overrides:
    """A client's override: like *21 / *22 / #21 / #22 from the client owner's phone. Staff
    and the client owner set and cancel it; the business reads it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _state(self, o: Override | None, client_id: str) -> OverrideState:
        if o is None:
            raise NotFound("", "", f"client {client_id!r} has no override")
        active = self.store.get_override(client_id, now=datetime.now(UTC)) is not None
        return OverrideState(o, active)

    def _writable(self, actor: Actor, client_id: str) -> Client:
        c = _client(self.store, actor, client_id)
        if not policy.may_change_forwarding(actor, c.id):
            raise Forbidden("only staff and the client itself may change its override")
        return c

    def get(self, actor: Actor, client_id: str) -> OverrideState:
        c = _client(self.store, actor, client_id)
        return self._state(self.store.get_override(c.id), c.id)

    def set(
        self, actor: Actor, client_id: str, target: str, until: datetime | None
    ) -> OverrideState:
        """`until` without an offset is the client's local time; it must lie ahead."""
        c = self._writable(actor, client_id)
        target = valid("target", directory.validate_override_target, target)
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=ZoneInfo(c.timezone))
        if until is not None and until <= datetime.now(UTC):
            raise Invalid("until", "lies in the past")
        return self._state(self.store.set_override(Override(c.id, target, until)), c.id)

    def clear(self, actor: Actor, client_id: str) -> None:
        c = self._writable(actor, client_id)
        if not self.store.clear_override(c.id):
            raise NotFound("", "", f"client {client_id!r} has no override")


class Simulator:
    """Which rule a call to a number matches, and the steps it rings. `routing_state` gives
    live presence (None: nobody registered)."""

    def __init__(
        self, store: Store, routing_state: Callable[[], RoutingState] | None = None
    ) -> None:
        self.store, self.routing_state = store, routing_state

    def simulate(
        self, actor: Actor, number: str, at: str | None = None, caller: str | None = None
    ) -> RoutePlan:
        """`caller`: the calling number as typed (None or empty: an unknown caller)."""
        country = country_of(self.store)
        e164 = valid("number", directory.validate_e164, number, "number", country)
        if caller is not None and caller.strip():
            caller = valid("caller", directory.validate_e164, caller, "caller", country)
        else:
            caller = None
        if at is not None:
            valid("at", directory.parse_at, at, "UTC")
        if not actor.staff:
            owner = next((n.client for n in self.store.list_numbers() if n.e164 == e164), None)
            if owner is None or owner != actor.client:
                raise Forbidden("you may only simulate your own business's numbers")
        state = self.routing_state() if self.routing_state is not None else None
        return valid("number", directory.simulate_call, self.store, e164, at, state, caller)
