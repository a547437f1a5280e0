"""The console's chat (/chat): the user's conversations over the messenger, one conversation
with its messages and files, a text form and a file form.

A thin adapter like the JSON API: the same handlers (app/messages.py, app/files.py) as the
session's Actor. Whom a user may message is the messenger's rule (`Messages.peers`,
`Messages.thread`); a peer or file the user may not see answers the same 404 page as a missing
one. A file is uploaded through the console session (its CSRF token in the form's URL, checked
before a byte of the body is read), streamed to disk by the file service with its size and
quota limits (web/files.py `store_upload`), then sent as a message with that file; when the
message is refused, the file is deleted again. New messages arrive over the console's one
event stream (/events, feeds.py); the page then fetches its message list again
(`/chat/{peer}/messages`, an HTML fragment)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from heimbuero.app import Actor, AppError
from heimbuero.office.files import FileError
from heimbuero.office.messaging import content_view
from heimbuero.store.db import UserRecord
from heimbuero.store.messages import MessageRecord
from heimbuero.store.websessions import WebSession

if TYPE_CHECKING:
    from heimbuero.web.console import Area, Console

ROLES = ("admin", "agent", "client", "employee")
CHAT_FORM = 128 * 1024  # a text form: room for the messenger's own limit to answer (413)
HISTORY = 200  # messages shown of one conversation


def chat_routes(router: APIRouter, c: Console, area: Area) -> None:
    """Add the chat's routes to the console's router."""
    from heimbuero.web.console import _csrf_ok, _not_found, _page, _t, i18n, lang_of
    from heimbuero.web.files import send_file, store_upload

    messages = c.handlers.messages

    def file_service() -> Any:
        return c.handlers.files.service if c.handlers.files is not None else None

    def view(m: MessageRecord, me: str) -> dict[str, Any]:
        shown = content_view(m.content_type, m.body)
        service = file_service()
        files = []
        for f in shown["files"]:
            fid = service.file_id_of(f["url"]) if service is not None else None
            files.append({**f, "href": f"/chat-files/{fid}" if fid else None})
        return {
            "id": m.id, "mine": m.sender == me, "sender": m.sender, "at": m.created_at,
            "kind": shown["kind"], "text": shown["text"], "files": files, "state": m.state,
            "imdn_state": m.imdn_state,
        }  # fmt: skip

    def conversation(
        request: Request,
        s: WebSession,
        user: UserRecord,
        peer: str,
        status: int = 200,
        error: str = "",
        text: str = "",
    ) -> Response:
        actor = Actor.of(user)
        try:
            rows = messages.thread(actor, peer, HISTORY)
        except AppError:
            return _not_found(request)
        service = file_service()
        return _page(
            request,
            "chat.html",
            status,
            user=user,
            csrf=s.csrf,
            peer=peer.lower(),
            items=[view(m, user.name) for m in rows],
            size=lambda n: i18n.size(lang_of(request), n),
            max_file=service.max_bytes if service is not None else 0,
            error=error,
            text=text,
            conversations=[],
            people=[],
        )

    @router.get("/chat")
    async def chat_index(request: Request) -> Response:
        """The user's conversations, newest first; with `?new=1` the people to write to."""
        found = area(request, ROLES)
        if isinstance(found, Response):
            return found
        s, user = found
        actor = Actor.of(user)
        listed = await run_in_threadpool(messages.conversations, actor)
        unread = await run_in_threadpool(messages.unread, actor)
        conversations = [
            {"peer": cv.peer, "at": cv.last_at, "unread": unread.get(cv.peer, 0),
             "last": view(cv.last, user.name) if cv.last is not None else None}
            for cv in listed
        ]  # fmt: skip
        new = request.query_params.get("new") == "1"
        part = request.query_params.get("part") == "list"
        return _page(
            request,
            "_conversations.html" if part else "chat.html",
            user=user,
            csrf=s.csrf,
            peer="",
            conversations=conversations,
            people=messages.peers(actor) if new else [],
            new=new,
            size=lambda n: i18n.size(lang_of(request), n),
        )

    @router.get("/chat-files/{file_id}")
    async def chat_file(request: Request, file_id: str) -> Response:
        """A file of a message, for its owner, the users a message shared it with, and staff
        (the API's check and download log); anyone else: the same 404 as a missing file."""
        found = area(request, ROLES)
        if isinstance(found, Response):
            return found
        service = file_service()
        if service is None or c.handlers.files is None:
            return _not_found(request)
        sent = await send_file(service, request, file_id, Actor.of(found[1]), c.handlers.files)
        return _not_found(request) if sent.status_code == 404 else sent

    @router.get("/chat/{peer}")
    async def chat_conversation(request: Request, peer: str) -> Response:
        found = area(request, ROLES)
        if isinstance(found, Response):
            return found
        await messages.read(Actor.of(found[1]), peer)  # shown: read
        return conversation(request, *found, peer)

    @router.get("/chat/{peer}/messages")
    async def chat_messages(request: Request, peer: str) -> Response:
        """The conversation's message list alone (the page fetches it when one arrives)."""
        found = area(request, ROLES)
        if isinstance(found, Response):
            return found
        s, user = found
        try:
            rows = messages.thread(Actor.of(user), peer, HISTORY)
        except AppError:
            return _not_found(request)
        # the open page shows what came: read (the sender's page says "gelesen")
        await messages.read(Actor.of(user), peer)
        return _page(
            request,
            "_messages.html",
            user=user,
            csrf=s.csrf,
            peer=peer.lower(),
            items=[view(m, user.name) for m in rows],
            size=lambda n: i18n.size(lang_of(request), n),
        )

    def refused(exc: AppError) -> tuple[int, str]:
        status = getattr(exc, "status", 400)
        return status, str(exc)

    @router.post("/chat/{peer}")
    async def chat_send(request: Request, peer: str) -> Response:
        found = area(request, ROLES)
        if isinstance(found, Response):
            return found
        s, user = found
        form = await c.form(request, CHAT_FORM)
        if form is None:
            return conversation(request, s, user, peer, 413,
                                _t(request, "Die Nachricht ist zu lang."))  # fmt: skip
        if not _csrf_ok(s.csrf, form.get("csrf")):
            return _page(request, "error.html", 403, user=user, csrf=s.csrf,
                         message=_t(request, "Ungültiges Formular-Token."))  # fmt: skip
        actor = Actor.of(user)
        try:
            messages.thread(actor, peer, 1)
        except AppError:
            return _not_found(request)
        text = form.get("text", "").replace("\r\n", "\n")
        if not text.strip():
            return conversation(request, s, user, peer, 422,
                                _t(request, "Bitte einen Text eingeben."))  # fmt: skip
        try:
            ctype, body = messages.content(text, None)
            await messages.send(actor, peer, ctype, body)
        except AppError as exc:
            status, reason = refused(exc)
            if status in (403, 404):
                return _not_found(request)
            return conversation(
                request, s, user, peer, status,
                _t(request, "Die Nachricht wurde nicht gesendet: %(reason)s", reason=reason),
                text=text[:CHAT_FORM],
            )  # fmt: skip
        return RedirectResponse(f"/chat/{peer.lower()}", 303)

    @router.post("/chat/{peer}/file")
    async def chat_send_file(request: Request, peer: str) -> Response:
        """A file (multipart/form-data, part `file`) sent as a message; the form's CSRF token
        travels in the query string, so it is checked before the body is read."""
        found = area(request, ROLES)
        if isinstance(found, Response):
            return found
        s, user = found
        if not _csrf_ok(s.csrf, request.query_params.get("csrf")):
            return _page(request, "error.html", 403, user=user, csrf=s.csrf,
                         message=_t(request, "Ungültiges Formular-Token."))  # fmt: skip
        actor = Actor.of(user)
        service = file_service()
        try:
            messages.thread(actor, peer, 1)
        except AppError:
            return _not_found(request)
        if service is None:
            off = _t(request, "Dateien sind auf diesem Server abgeschaltet.")
            return conversation(request, s, user, peer, 503, off)
        try:
            record = await store_upload(service, request, user.name, "file")
        except ClientDisconnect:
            return Response(status_code=400)
        except FileError as exc:
            text = (
                _t(request, "Die Datei ist zu groß oder Ihr Speicherplatz ist voll: %(reason)s",
                   reason=exc.message)
                if exc.status == 413
                else _t(request, "Die Datei wurde nicht angenommen: %(reason)s",
                        reason=exc.message)
            )  # fmt: skip
            return conversation(request, s, user, peer, exc.status, text)
        try:
            ctype, body = await run_in_threadpool(messages.content, None, record.id)
            await messages.send(actor, peer, ctype, body)
        except AppError as exc:
            await run_in_threadpool(service.delete, [record.id])
            status, reason = refused(exc)
            return conversation(
                request, s, user, peer, status,
                _t(request, "Die Datei wurde nicht gesendet: %(reason)s", reason=reason),
            )  # fmt: skip
        return RedirectResponse(f"/chat/{peer.lower()}", 303)
