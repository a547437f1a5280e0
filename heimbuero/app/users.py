"""Users, their devices (SIP registrations) and their API tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from heimbuero.app import policy
from heimbuero.app._util import country_of, valid
from heimbuero.app.errors import NotFound
from heimbuero.app.policy import Actor
from heimbuero.office import accounts, callpolicy, directory
from heimbuero.store import ApiToken, Store, UserRecord

_UNSET: Any = object()


class Users:
    """Create, change, list and remove users. `realm` gives the SIP domain the digest hashes
    are made for."""

    def __init__(self, store: Store, realm: Callable[[], str]) -> None:
        self.store, self.realm = store, realm

    def list(self, actor: Actor) -> list[UserRecord]:
        """Every user (staff) or the users of the actor's own business."""
        users = self.store.list_users()
        if not actor.staff:
            users = [u for u in users if policy.sees_client(actor, u.client)]
        return users

    def registrations(self, actor: Actor, now: float) -> dict[str, int]:
        """Stored registrations per user (staff: everyone's; others: their own)."""
        counts = self.store.count_bindings(now)
        return counts if actor.staff else {k: v for k, v in counts.items() if k == actor.name}

    def create(
        self,
        actor: Actor,
        name: str,
        password: str,
        role: str = accounts.DEFAULT_ROLE,
        client: str | None = None,
        display_name: str | None = None,
        mobile: str | None = None,
    ) -> UserRecord:
        """A new user with its office fields, written in one transaction (admins)."""
        policy.require_admin(actor)
        name = valid("name", accounts.validate_name, name)
        role = valid("role", accounts.validate_role, role)
        valid("password", accounts.check_password, name, password)
        if client is not None:
            client = valid("client", directory.validate_slug, client)
        if display_name is not None:
            valid("display_name", callpolicy.check_text, "display name", display_name)
        if mobile:
            country = country_of(self.store)
            mobile = valid("mobile", directory.validate_e164, mobile, "mobile", country)
        creds = accounts.credentials(name, self.realm(), password)
        return self.store.add_user(
            name, role, *creds, client=client, display_name=display_name or None,
            mobile=mobile or None,
        )  # fmt: skip

    def update(
        self,
        actor: Actor,
        name: str,
        client: str | None = _UNSET,
        display_name: str | None = _UNSET,
        mobile: str | None = _UNSET,
        allow_rfc2069: bool | None = None,
    ) -> UserRecord:
        """Set a user's client, display name, mobile, SIP switches (admins); an empty value
        clears a field, one left out stays."""
        policy.require_admin(actor)
        name = valid("name", accounts.validate_name, name)
        changes: dict[str, Any] = {}
        if client is not _UNSET:
            changes["client"] = valid("client", directory.validate_slug, client) if client else None
        if display_name is not _UNSET:
            if display_name:
                valid("display_name", callpolicy.check_text, "display name", display_name)
            changes["display_name"] = display_name or None
        if mobile is not _UNSET:
            changes["mobile"] = None
            if mobile:
                c = country_of(self.store)
                changes["mobile"] = valid("mobile", directory.validate_e164, mobile, "mobile", c)
        if allow_rfc2069 is not None:
            changes["allow_rfc2069"] = allow_rfc2069
        return self.store.user_update(name, **changes)

    def set_password(self, actor: Actor, name: str, password: str) -> str:
        """A new password (admins: anyone's; everybody: their own); returns the user name."""
        name = valid("name", accounts.validate_name, name)
        policy.require_self_or_admin(actor, name, "you may only change your own password")
        if self.store.get_user(name) is None:
            raise NotFound("user", name)
        valid("password", accounts.check_password, name, password)
        self.store.set_password(name, *accounts.credentials(name, self.realm(), password))
        return name

    def remove(self, actor: Actor, name: str) -> str:
        """Remove a user and its registrations (admins); returns the user name."""
        policy.require_admin(actor)
        name = valid("name", accounts.validate_name, name)
        if not self.store.remove_user(name):
            raise NotFound("user", name)
        return name


class Tokens:
    """API tokens: everybody manages their own, admins everybody's."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self, actor: Actor, user: str | None = None) -> list[ApiToken]:
        """Tokens of `user` (None: everybody's for admins, one's own for the others)."""
        if not actor.admin:
            user = actor.name
        return self.store.list_tokens(user)

    def create(self, actor: Actor, user: str, name: str) -> tuple[ApiToken, str]:
        user = valid("user", accounts.validate_name, user)
        policy.require_self_or_admin(actor, user, "you may only create your own tokens")
        return self.store.create_token(user, name)

    def revoke(self, actor: Actor, user: str, name: str) -> None:
        user = valid("user", accounts.validate_name, user)
        policy.require_self_or_admin(actor, user, "you may only revoke your own tokens")
        if not self.store.revoke_token(user, name):
            raise NotFound("token", name if user == actor.name else f"{user}/{name}")
