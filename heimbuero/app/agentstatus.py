"""An agent's own status: available, break, away, do-not-disturb, end of shift.

Agents set their own; admins may set anyone's (an agent who forgot to clock off). Only staff
(agents and admins) have a status; a client's users are refused. Stored before the answer;
`AgentStatusChanged` is published after the commit, so team calls skip the agent and presence
shows it at once (the office reload would pick it up within seconds anyway, e.g. after the CLI).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from heimbuero.app.errors import Forbidden, Invalid, NotFound
from heimbuero.app.policy import Actor
from heimbuero.domain.model import AGENT_STATUSES
from heimbuero.events import AgentStatusChanged, Event
from heimbuero.office.roles import is_staff
from heimbuero.store import Store


@dataclass(frozen=True, slots=True)
class Status:
    user: str
    status: str

    def to_json(self) -> dict[str, str]:
        return {"user": self.user, "status": self.status}


class AgentStatus:
    def __init__(self, store: Store, publish: Callable[[Event], None] | None = None) -> None:
        self.store, self.publish = store, publish

    def set(self, actor: Actor, user: str, status: str) -> Status:
        if status not in AGENT_STATUSES:
            raise Invalid("status", f"one of {', '.join(AGENT_STATUSES)}")
        if actor.name != user and not actor.admin:
            if not actor.staff:
                raise NotFound("user", user)
            raise Forbidden("agents set their own status only")
        record = self.store.get_user(user)
        if record is None:
            raise NotFound("user", user)
        if not is_staff(record.role):
            raise Forbidden("only agents and admins have a status")
        with self.store.unit_of_work() as uow:
            uow.users.set_status(user, status)
        if self.publish is not None:
            self.publish(AgentStatusChanged(time.time(), user, status))
        return Status(user, status)

    def list(self, actor: Actor) -> list[Status]:
        """Every agent's and admin's status (staff only)."""
        if not actor.staff:
            raise Forbidden("only staff see the agents' status")
        return [Status(u.name, u.status) for u in self.store.list_users() if is_staff(u.role)]
