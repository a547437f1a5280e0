"""Who may see and reach whom: the one rule behind presence, messages and shared files."""

from __future__ import annotations

from dataclasses import dataclass

from heimbuero.office import roles
from heimbuero.office.roles import BUSINESS

STAFF = roles.STAFF  # the one definition (office/roles.py); services/messaging.py reads it here


@dataclass(frozen=True, slots=True)
class Person:
    """Who someone is, for visibility: role and (for client users and employees) business."""

    role: str
    client: str | None = None


def may_see(watcher: str, w: Person | None, presentity: str, p: Person | None) -> bool:
    """Agents and admins see everyone; a client user sees staff and the users of its own
    business; employees see staff and their colleagues of the same business. Unknown users
    (None) see and are seen by nobody. Messaging follows the same rule (`may_see(sender, …,
    recipient, …)`)."""
    if w is None or p is None:
        return False
    if watcher == presentity or w.role in STAFF:
        return True
    if p.role in STAFF:
        return w.role in BUSINESS
    if w.role in BUSINESS:
        return w.client is not None and w.client == p.client
    return False
