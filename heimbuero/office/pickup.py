"""Call pickup (`*8`): whose ringing call a user may take over at his own phone.

The rule, as a PBX user expects it of the provider's team: the provider's staff (agents and
admins) form one pickup group. A staff user may pick up a call that rings at another staff
user's phone (a client's call routed to an agent, a group call, a colleague's internal call).
A client's owner or employee picks up nothing (another business's calls are none of theirs),
and nobody picks up a call that rings at a client's phone."""

from __future__ import annotations

from .roles import Person, is_staff

NOTHING_TO_PICK_UP = "No call to pick up"
NOT_STAFF = "Call pickup is for the provider's agents"


def may_pick_up(picker: Person, ringing: Person) -> bool:
    """True when `picker` may take over a call that rings at `ringing`'s phone."""
    return picker.name != ringing.name and is_staff(picker.role) and is_staff(ringing.role)
