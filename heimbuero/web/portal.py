"""HTTP routes under the client portal's forwarding screen: the simulator with an unsaved draft
and the public holidays of the client's Bundesland. Each route is one handler call
(heimbuero/app/forwarding.py) as the logged-in user's Actor."""

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from heimbuero.app.forwarding import MAX_HOLIDAY_MONTHS, MAX_NOTE, Closures, Forwarding
from heimbuero.app.policy import Actor
from heimbuero.web.params import RowId


class SimulateIn(BaseModel):
    number: str | None = Field(
        default=None, max_length=64, description="the client's number as typed; default: its first"
    )
    at: str | None = Field(
        default=None, max_length=64,
        description="ISO 8601 ('2026-12-24T14:00' or '2026-12-24 14:00': the client's local "
        "time without an offset); default: now",
    )  # fmt: skip
    draft: dict[str, Any] | None = Field(
        default=None, description="an unsaved rules document to simulate instead of the stored one"
    )
    caller: str | None = Field(
        default=None, max_length=64,
        description="the calling number as typed ('0171 2222222'), for rules with a caller "
        "condition; default: an unknown caller",
    )  # fmt: skip


class StepOut(BaseModel):
    targets: list[str]
    timeout: int


class SimulationOut(BaseModel):
    client: str | None
    number: str
    rule: str | None = Field(description="the rule that decided; null: the provider's default")
    steps: list[StepOut]
    reason: str
    dictation: bool = Field(
        False, description="the client's dictation number: dictation by phone, no rule"
    )


class ClosureIn(BaseModel):
    first: date = Field(description="first closed day (YYYY-MM-DD)")
    last: date | None = Field(default=None, description="last closed day; default: first")
    note: str = Field(default="", max_length=MAX_NOTE, examples=["Betriebsurlaub"])


class ClosureOut(BaseModel):
    id: int
    client: str
    first: date
    last: date
    note: str


class HolidayOut(BaseModel):
    date: str
    name: str


def portal_routes(
    forwarding: Forwarding,
    closures: Closures,
    current_actor: Callable[[Request], Awaitable[Actor]],
) -> APIRouter:
    router = APIRouter(tags=["forwarding"])
    who = Annotated[Actor, Depends(current_actor)]

    @router.post("/api/clients/{client_id}/simulate")
    def simulate(client_id: str, body: SimulateIn, actor: who) -> SimulationOut:
        """Where a call to the client's number goes now or at `at`, with the stored rules or
        the unsaved `draft`; an invalid draft is a 422 whose fields are paths in it."""
        plan = forwarding.simulate(actor, client_id, body.number, body.at, body.draft, body.caller)
        return SimulationOut(**plan.to_json())

    @router.get("/api/clients/{client_id}/holidays")
    def holidays(
        client_id: str,
        actor: who,
        months: Annotated[int, Query(ge=1, le=MAX_HOLIDAY_MONTHS)] = 12,
    ) -> list[HolidayOut]:
        """The public holidays of the client's Bundesland from today for `months` months."""
        return [HolidayOut(**h.to_json()) for h in forwarding.holidays(actor, client_id, months)]

    @router.get("/api/clients/{client_id}/week")
    def week(
        client_id: str,
        actor: who,
        number: Annotated[str | None, Query(max_length=64)] = None,
        week: Annotated[str | None, Query(max_length=10, description="a day of the week")] = None,
        slot: Annotated[int, Query(description="slot length: 15, 30 or 60 minutes")] = 60,
        caller: Annotated[
            str | None, Query(max_length=64, description="the calling number; none: unknown")
        ] = None,
    ) -> dict[str, Any]:
        """The week grid: per day, spans of local time and the rule that decides then
        (null: the provider's default plan), with the steps; holidays and closures marked."""
        return forwarding.week(actor, client_id, number, week, slot, caller)

    @router.get("/api/clients/{client_id}/closures")
    def list_closures(client_id: str, actor: who) -> list[ClosureOut]:
        """The client's closures (Betriebsurlaub), by first day."""
        return [ClosureOut(**c.to_json()) for c in closures.list(actor, client_id)]  # type: ignore[arg-type]

    @router.post("/api/clients/{client_id}/closures", status_code=201)
    def add_closure(client_id: str, body: ClosureIn, actor: who) -> ClosureOut:
        """Close from `first` to `last` (inclusive): those days are closure days for routing."""
        c = closures.add(actor, client_id, body.first, body.last, body.note)
        return ClosureOut(**c.to_json())  # type: ignore[arg-type]

    @router.delete("/api/clients/{client_id}/closures/{closure_id}", status_code=204)
    def remove_closure(client_id: str, closure_id: RowId, actor: who) -> None:
        closures.remove(actor, client_id, closure_id)

    return router
