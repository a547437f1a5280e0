"""Voicemail greetings and announcements over HTTP: upload (the raw audio file as the body),
download, list, delete. Thin: heimbuero/app/greetings.py checks, converts and stores."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel

from heimbuero.app.greetings import Audio, Greetings
from heimbuero.app.policy import Actor


class AudioOut(BaseModel):
    owner: str
    name: str
    seconds: float


def _out(audio: Audio) -> AudioOut:
    return AudioOut(owner=audio.owner, name=audio.name, seconds=round(audio.seconds, 2))


def greeting_routes(
    greetings: Greetings, current_actor: Callable[[Request], Awaitable[Actor]]
) -> APIRouter:
    router = APIRouter(tags=["voicemail"])
    who = Annotated[Actor, Depends(current_actor)]

    @router.put("/api/voicemail/{owner}/greeting")
    async def put_greeting(owner: str, request: Request, actor: who) -> AudioOut:
        """The mailbox's greeting (a client's or a user's): the body is a WAV, MP3 or Ogg
        file (at most 10 MB, 5 minutes); converted for the phone line before it replaces the
        old one. 422 for a file that is no audio the server reads."""
        data = await request.body()
        return _out(await asyncio.to_thread(greetings.set_greeting, actor, owner, data))

    @router.get("/api/voicemail/{owner}/greeting", response_class=FileResponse)
    def get_greeting(owner: str, actor: who) -> FileResponse:
        """The greeting callers hear (8 kHz WAV); 404 while the spoken default is used."""
        audio = greetings.greeting(actor, owner)
        return FileResponse(audio.path, media_type="audio/wav", filename=f"{owner}.wav")

    @router.delete("/api/voicemail/{owner}/greeting", status_code=204)
    def delete_greeting(owner: str, actor: who) -> Response:
        """Back to the spoken default greeting."""
        greetings.delete_greeting(actor, owner)
        return Response(status_code=204)

    @router.get("/api/clients/{client_id}/announcements")
    def list_announcements(client_id: str, actor: who) -> list[AudioOut]:
        """The client's own announcements (`announce:NAME` in its rules)."""
        return [_out(a) for a in greetings.announcements(actor, client_id)]

    @router.put("/api/clients/{client_id}/announcements/{name}")
    async def put_announcement(client_id: str, name: str, request: Request, actor: who) -> AudioOut:
        """An announcement of the client (body: WAV, MP3 or Ogg, as for greetings)."""
        data = await request.body()
        return _out(
            await asyncio.to_thread(greetings.set_announcement, actor, client_id, name, data)
        )

    @router.delete("/api/clients/{client_id}/announcements/{name}", status_code=204)
    def delete_announcement(client_id: str, name: str, actor: who) -> Response:
        greetings.delete_announcement(actor, client_id, name)
        return Response(status_code=204)

    return router
