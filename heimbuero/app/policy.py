"""Who may do what: the one authorization module of the application layer.

Every handler asks here. Roles (office/roles.py): `admin` may do everything; `agent` reads
everything and sets and clears overrides; `client` (a business's owner) reads its own
business and changes its rules and override; `employee` reads its own business. Another
business's ids are answered like missing ones (NotFound), so ids cannot be probed."""

from __future__ import annotations

from dataclasses import dataclass

from heimbuero.app.errors import Forbidden, NotFound
from heimbuero.office import callpolicy
from heimbuero.office import files as office_files
from heimbuero.office.roles import BUSINESS, ROLES, STAFF, Person, Role, is_staff

__all__ = ["ROLES", "STAFF", "Actor", "Role", "is_staff"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks: a user's name, role and business (client id; None for staff). The command
    line acts as `Actor.local_admin()`: whoever may open the data directory is its admin."""

    name: str
    role: Role
    client: str | None = None

    @classmethod
    def of(cls, user: Person) -> Actor:
        """The actor of a logged-in user (a store UserRecord or anything with the fields)."""
        return cls(user.name, Role(user.role), user.client)

    @classmethod
    def local_admin(cls) -> Actor:
        return cls("", Role.ADMIN, None)

    @property
    def staff(self) -> bool:
        return self.role in STAFF

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN


# -- checks (raise) --------------------------------------------------------------------------


def require_admin(actor: Actor) -> None:
    if not actor.admin:
        raise Forbidden("only admins may do this")


def require_staff(actor: Actor, message: str = "only admins and agents may do this") -> None:
    if not actor.staff:
        raise Forbidden(message)


def require_client_visible(actor: Actor, client_id: str) -> None:
    """Staff see every client; others only their own business (another one: NotFound)."""
    if not actor.staff and actor.client != client_id:
        raise NotFound("client", client_id)


def require_self_or_admin(actor: Actor, user: str, message: str) -> None:
    if not actor.admin and actor.name != user:
        raise Forbidden(message)


# -- rules (answer) --------------------------------------------------------------------------


def sees_client(actor: Actor, client_id: str | None) -> bool:
    return actor.staff or (client_id is not None and actor.client == client_id)


# The rights below are decided in office/ (where the SIP side asks them too, e.g. *21 from a
# phone); these adapt them to the Actor.


def may_change_rules(actor: Actor, client_id: str) -> bool:
    """Admins and the client owner replace a client's rules document."""
    return callpolicy.may_change_rules(actor.role, actor.client, client_id)


def may_change_forwarding(actor: Actor, client_id: str) -> bool:
    """Staff and the client owner set or cancel a client's override; never an employee."""
    return callpolicy.may_change_forwarding(actor.role, actor.client, client_id)


def may_read_file(actor: Actor, owner: str, parties: tuple[str, ...] | list[str]) -> bool:
    """The owner, the parties it was sent to and staff see and download a file."""
    return office_files.may_read(owner, parties, actor.name, actor.role)


def may_delete_file(actor: Actor, owner: str) -> bool:
    """Only the owner and admins delete a file."""
    return office_files.may_delete(owner, actor.name, actor.role)


def may_delete_conversation(actor: Actor) -> bool:
    """Staff only: the provider keeps its clients' records."""
    return actor.staff


def in_business(role: str) -> bool:
    """Client owners and employees belong to a client business."""
    return role in BUSINESS
