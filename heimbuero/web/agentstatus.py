"""Agents' own status over HTTP. Thin: heimbuero/app/agentstatus.py decides and stores."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from heimbuero.app.agentstatus import AgentStatus
from heimbuero.app.policy import Actor


class StatusIn(BaseModel):
    status: str  # available, break, away, dnd, off


class StatusOut(BaseModel):
    user: str
    status: str


def agent_status_routes(
    agents: AgentStatus, current_actor: Callable[[Request], Awaitable[Actor]]
) -> APIRouter:
    router = APIRouter(tags=["presence"])
    who = Annotated[Actor, Depends(current_actor)]

    @router.put("/api/users/{name}/status")
    def set_status(name: str, body: StatusIn, actor: who) -> StatusOut:
        """An agent's own status (admins: anyone's): available, break, away, dnd (do not
        disturb) or off (end of shift). Only available agents are rung by team calls."""
        return StatusOut(**agents.set(actor, name, body.status).to_json())

    @router.get("/api/agents/status")
    def list_status(actor: who) -> list[StatusOut]:
        """Every agent's status (staff only)."""
        return [StatusOut(**s.to_json()) for s in agents.list(actor)]

    return router
