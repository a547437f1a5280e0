"""The messages of a voicemail box over HTTP: list, download (with Range), mark heard,
delete. Thin: heimbuero/app/voicemail.py checks who may and changes the store."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel

from heimbuero.app.policy import Actor
from heimbuero.app.voicemail import Message, Voicemails
from heimbuero.web.params import RowId


class MessageOut(BaseModel):
    id: int
    caller: str
    received_at: str  # ISO 8601 in the box's timezone (its client's)
    seconds: float
    state: str  # new | heard


def _out(m: Message) -> MessageOut:
    return MessageOut(id=m.id, caller=m.caller, received_at=m.received.isoformat(),
                      seconds=round(m.seconds, 2), state=m.state)  # fmt: skip


def voicemail_routes(
    voicemails: Voicemails, current_actor: Callable[[Request], Awaitable[Actor]]
) -> APIRouter:
    router = APIRouter(tags=["voicemail"])
    who = Annotated[Actor, Depends(current_actor)]

    @router.get("/api/voicemail/{owner}/messages")
    def list_messages(owner: str, actor: who) -> list[MessageOut]:
        """The box's messages (a client's or a user's), newest first."""
        return [_out(m) for m in voicemails.list_box(actor, owner)]

    @router.get("/api/voicemail/{owner}/messages/{voicemail_id}/audio",
                response_class=FileResponse)  # fmt: skip
    def get_audio(owner: str, voicemail_id: RowId, actor: who) -> FileResponse:
        """The recording (8 kHz mono WAV); `Range` requests are answered with 206."""
        m = voicemails.message(actor, owner, voicemail_id)
        return FileResponse(m.path, media_type="audio/wav", filename=f"voicemail-{m.id}.wav")

    @router.post("/api/voicemail/{owner}/messages/{voicemail_id}/heard", status_code=204)
    def post_heard(owner: str, voicemail_id: RowId, actor: who) -> Response:
        """Mark the message heard (the box's phones learn the new counts)."""
        voicemails.set_heard(actor, owner, voicemail_id)
        return Response(status_code=204)

    @router.delete("/api/voicemail/{owner}/messages/{voicemail_id}", status_code=204)
    def delete_message(owner: str, voicemail_id: RowId, actor: who) -> Response:
        """Delete the message: committed and its WAV removed before the answer."""
        voicemails.remove(actor, owner, voicemail_id)
        return Response(status_code=204)

    return router
