"""JSON API of call notes (beside the console's pages; the same handler, app/notes.py).

No `from __future__ import annotations` here: the routes' annotations name the login
dependency given to `notes_routes`, which FastAPI must see as an object."""

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from heimbuero.app import Actor, App
from heimbuero.store.notes import CallNote
from heimbuero.web.params import RowId


class NoteIn(BaseModel):
    client: str = Field(max_length=64)
    caller_name: str = Field("", max_length=200)
    caller_number: str = Field("", max_length=64)
    concern: str = Field("", max_length=500)
    callback: bool = False
    urgent: bool = False
    text: str = Field("", max_length=4000)
    call_id: str | None = Field(None, max_length=300)


class NoteOut(BaseModel):
    id: int
    client: str
    agent: str
    call_id: str | None
    caller_name: str
    caller_number: str
    concern: str
    callback: bool
    urgent: bool
    text: str
    created_at: datetime
    read_at: datetime | None
    done_at: datetime | None


class NoteTaken(NoteOut):
    delivered_to: list[str]


def _out(n: CallNote) -> dict[str, Any]:
    return {f: getattr(n, f) for f in NoteOut.model_fields}


def notes_routes(
    handlers: App, current_actor: Callable[..., Coroutine[Any, Any, Actor]]
) -> APIRouter:
    router = APIRouter(prefix="/api/notes", tags=["notes"])
    Who = Annotated[Actor, Depends(current_actor)]  # noqa: N806

    @router.get("")
    def list_notes(actor: Who, client: str | None = None, limit: int = 100) -> list[NoteOut]:
        """Call notes, newest first: staff any client's, a business's users their own."""
        return [NoteOut(**_out(n)) for n in handlers.notes.list(actor, client, limit)]

    @router.post("", status_code=201)
    async def take_note(body: NoteIn, actor: Who) -> NoteTaken:
        """Take a call note (agents, admins); it is messaged to the client's owners at once."""
        fields = body.model_dump(exclude={"client"})
        note, reached = await handlers.notes.take(actor, body.client, **fields)
        return NoteTaken(**_out(note), delivered_to=reached)

    @router.get("/{note_id}")
    def get_note(note_id: RowId, actor: Who) -> NoteOut:
        return NoteOut(**_out(handlers.notes.get(actor, note_id)))

    @router.post("/{note_id}/{what}")
    def mark_note(note_id: RowId, what: str, actor: Who) -> NoteOut:
        """`read` or `done`: when the client read it, when they dealt with it."""
        return NoteOut(**_out(handlers.notes.mark(actor, note_id, what)))

    return router
