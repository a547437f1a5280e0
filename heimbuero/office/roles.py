"""The roles a user can have, and the one definition of the provider's staff.

A leaf module (standard library only): office/, services/ and the application layer
(heimbuero/app/policy.py) all read roles from here."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    """What a user is: the provider's `admin` and `agent` (staff), a client business's owner
    (`client`) and its `employee`s. Members compare equal to their strings."""

    ADMIN = "admin"
    AGENT = "agent"
    CLIENT = "client"
    EMPLOYEE = "employee"


ROLES: tuple[str, ...] = tuple(r.value for r in Role)
STAFF: frozenset[Role] = frozenset({Role.ADMIN, Role.AGENT})
BUSINESS: frozenset[Role] = frozenset({Role.CLIENT, Role.EMPLOYEE})


def is_staff(role: str) -> bool:
    """True for the provider's staff (admins and agents)."""
    return role in STAFF


class Person(Protocol):
    """Anything with a user's name, role and business (client id; None for staff): a stored
    user, an Actor."""

    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def client(self) -> str | None: ...
