"""Agent groups that rules ring (staff read them, admins change them)."""

from __future__ import annotations

from collections.abc import Iterable

from heimbuero.app import policy
from heimbuero.app._util import valid
from heimbuero.app.errors import NotFound
from heimbuero.app.policy import Actor
from heimbuero.domain.model import Group
from heimbuero.office import accounts, directory
from heimbuero.store import Store


def _members(members: Iterable[str]) -> tuple[str, ...]:
    return tuple(valid("members", accounts.validate_name, m) for m in members)


class Groups:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self, actor: Actor) -> list[Group]:
        policy.require_staff(actor)
        return self.store.list_groups()

    def create(
        self, actor: Actor, name: str, strategy: str = "ring_all", members: Iterable[str] = ()
    ) -> Group:
        policy.require_admin(actor)
        name = valid("name", directory.validate_slug, name, "group name")
        strategy = valid("strategy", directory.validate_strategy, strategy)
        return self.store.add_group(Group(name, strategy, _members(members)))

    def update(
        self,
        actor: Actor,
        name: str,
        strategy: str | None = None,
        members: Iterable[str] | None = None,
    ) -> Group:
        """Change the strategy and/or replace the members (None: unchanged)."""
        policy.require_admin(actor)
        name = valid("name", directory.validate_slug, name, "group name")
        if strategy is not None:
            strategy = valid("strategy", directory.validate_strategy, strategy)
        listed = None if members is None else list(_members(members))
        return self.store.update_group(name, strategy, listed)

    def remove(self, actor: Actor, name: str) -> str:
        """Remove a group; InUse (409) while rules or the provider's default plan ring it."""
        policy.require_admin(actor)
        if not self.store.remove_group(name):
            raise NotFound("group", name)
        return name
