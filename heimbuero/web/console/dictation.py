"""The typists' pages of the console: the queue (/dictation) and the player with the editor
of a job the typist holds (/dictation/{job_id}).

A thin adapter like the JSON API (web/dictation.py): the same handlers (app/dictation.py) as
the session's Actor. The provider's staff (agents and admins) are the typists; for anyone
else, a job the user does not hold, and another business's job, the pages answer the same 404
as a missing id. Taking a job is atomic in the handler: of two typists, one gets the job and
the other the queue again with who has it.

The player page works with the console session alone: its audio comes from
/dictation/{id}/audio/{position} (Range requests for seeking), the editor form saves the draft
(POST /dictation/{id}/draft, the draft's version against a stale tab), and the same form
delivers (`/deliver`) or gives the job back (`/release`) after saving what was typed. The
page's script (static/dictation.js) autosaves through the draft route (JSON answer when asked
for), sends a heartbeat so the lock does not run out while the page is open, and drives the
player (speed, rewind, hotkeys)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.concurrency import run_in_threadpool

from heimbuero.app import Actor, App, AppError
from heimbuero.app.dictation import MAX_DRAFT, Dictation, Outcome
from heimbuero.app.errors import Conflict, NotFound, http_status
from heimbuero.events import DictationChanged
from heimbuero.office.dictation import State, WorkType
from heimbuero.store.db import UserRecord
from heimbuero.store.dictation import JobRecord
from heimbuero.store.websessions import WebSession
from heimbuero.web import sse
from heimbuero.web.console import Area, Posted, _not_found, _page, _t
from heimbuero.web.params import MAX_ID

log = logging.getLogger(__name__)

ROLES = ("agent", "admin")  # the typists: the queue handler allows staff only
# the editor form: the draft's characters (up to 4 bytes each in multipart) and the fields
EDITOR_FORM = MAX_DRAFT * 4 + 64 * 1024
WORK_TYPES = {
    WorkType.LETTER: "Brief",
    WorkType.QUOTE: "Angebot",
    WorkType.INVOICE_TEXT: "Rechnungstext",
    WorkType.REPORT: "Bericht",
    WorkType.MINUTES: "Protokoll",
    WorkType.OTHER: "Sonstiges",
}
STATES = {
    State.NEW: "neu",
    State.IN_PROGRESS: "in Arbeit",
    State.REVIEW: "in Prüfung",
    State.DELIVERED: "abgegeben",
    State.CORRECTIONS_REQUESTED: "Korrektur erbeten",
}
HEARTBEAT_S = 60
NOT_HELD = "Sie halten diesen Auftrag nicht (mehr): bitte in der Warteschlange übernehmen."


def _holds(user: UserRecord, job: JobRecord) -> bool:
    return job.state == State.IN_PROGRESS.value and job.typist == user.name


def dictation_pages(router: APIRouter, handlers: App, area: Area, posted: Posted) -> None:
    """Add the typists' routes to the console's router."""

    def desk() -> Dictation | None:
        return handlers.dictation

    async def tell(d: Dictation, outcome: Outcome) -> None:
        try:
            await d.announce(outcome)
        except Exception:
            log.exception("dictation job %d: telling the author failed", outcome.job.id)

    def queue_page(
        request: Request,
        s: WebSession,
        user: UserRecord,
        d: Dictation,
        status: int = 200,
        error: str = "",
        notice: str = "",
    ) -> Response:
        actor = Actor.of(user)
        client = request.query_params.get("client", "")[:64]
        work_type = request.query_params.get("work_type", "")[:32]
        try:
            rows = d.queue(actor, client or None, work_type or None)
        except AppError as exc:
            rows = []
            status = max(status, http_status(exc))
            error = error or _t(request, "Der Filter wurde nicht angenommen: %(reason)s",
                                reason=str(exc))  # fmt: skip
        jobs = [
            {
                "id": j.id, "client": j.client_id, "author": j.author, "title": j.title,
                "work_type": _t(request, WORK_TYPES.get(WorkType(j.work_type), j.work_type)),
                "urgent": j.priority == "urgent", "due": j.due_at, "overdue": late,
                "state": _t(request, STATES[State(j.state)]), "typist": j.typist,
                "mine": _holds(user, j), "minutes": round(j.audio_seconds / 60, 1),
            }
            for j, late in rows
        ]  # fmt: skip
        part = request.query_params.get("part") == "list"
        return _page(
            request,
            "_dictation_list.html" if part else "dictation.html",
            status,
            user=user,
            csrf=s.csrf,
            jobs=jobs,
            clients=handlers.clients.list(actor),
            work_types=[(w.value, _t(request, label)) for w, label in WORK_TYPES.items()],
            client=client,
            work_type=work_type,
            error=error,
            notice=notice,
        )

    def typist(
        request: Request, job_id: int = 1
    ) -> tuple[WebSession, UserRecord, Dictation] | Response:
        found = area(request, ROLES)
        if isinstance(found, Response):
            return found
        d = desk()
        if d is None or not 0 < job_id <= MAX_ID:  # (beyond the database's integers)
            return _not_found(request)
        return found[0], found[1], d

    def held(d: Dictation, user: UserRecord, job_id: int) -> JobRecord | None:
        """The job when the user holds it; None for any other (missing, foreign, not held)."""
        try:
            job = d.get(Actor.of(user), job_id)
        except AppError:
            return None
        return job if _holds(user, job) else None

    @router.get("/dictation")
    async def queue(request: Request) -> Response:
        """The queue: urgent first, then by due time; filter by client and work type."""
        got = typist(request)
        if isinstance(got, Response):
            return got
        s, user, d = got
        notice = ""
        delivered = request.query_params.get("delivered", "")
        released = request.query_params.get("released", "")
        if delivered.isdigit():
            notice = _t(request, "Auftrag %(id)s wurde abgegeben.", id=delivered)
        elif released.isdigit():
            notice = _t(request, "Auftrag %(id)s ist zurück in der Warteschlange.", id=released)
        return await run_in_threadpool(queue_page, request, s, user, d, 200, "", notice)

    @router.get("/dictation/events")
    async def events(request: Request) -> Response:
        """Server-Sent Events for the open queue: `job` (id, state, typist) each time a job
        is created or changes state (the handler's watch, like the API's stream); the page
        then fetches its list again (`?part=list`)."""
        got = typist(request)
        if isinstance(got, Response):
            return got
        _, user, d = got
        loop = asyncio.get_running_loop()
        changes: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=100)

        def put(item: dict[str, Any]) -> None:
            with contextlib.suppress(asyncio.QueueFull):  # the page reloads its list anyway
                changes.put_nowait(("job", item))

        def on_change(e: DictationChanged) -> None:
            item = {"id": e.job_id, "state": e.state, "typist": e.typist}
            loop.call_soon_threadsafe(put, item)

        try:
            stop = d.watch(Actor.of(user), on_change)
        except AppError:
            return _not_found(request)

        return StreamingResponse(
            sse.events(request, changes, ": dictation queue\n\n", stop),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.post("/dictation/{job_id}/take")
    async def take(request: Request, job_id: int) -> Response:
        """Take the job (the handler the API's take uses); the player page, or the queue with
        who was faster."""
        got = typist(request, job_id)
        if isinstance(got, Response):
            return got
        s, user, d = got
        form = await posted(request, s, user)
        if isinstance(form, Response):
            return form
        actor = Actor.of(user)
        try:
            outcome = await run_in_threadpool(d.take, actor, job_id)
        except NotFound:
            return _not_found(request)
        except Conflict:
            try:
                job = d.get(actor, job_id)
            except AppError:
                return _not_found(request)
            if _holds(user, job):  # already one's own: go on typing
                return RedirectResponse(f"/dictation/{job_id}", 303)
            if job.state == State.IN_PROGRESS.value and job.typist:
                text = _t(request, "Auftrag %(id)s hat bereits %(typist)s übernommen.",
                          id=str(job_id), typist=job.typist)  # fmt: skip
            else:
                text = _t(request, "Auftrag %(id)s ist nicht mehr in der Warteschlange.",
                          id=str(job_id))  # fmt: skip
            return await run_in_threadpool(queue_page, request, s, user, d, 409, text)
        except AppError as exc:
            return await run_in_threadpool(queue_page, request, s, user, d,
                                           http_status(exc), str(exc))  # fmt: skip
        await tell(d, outcome)
        return RedirectResponse(f"/dictation/{job_id}", 303)

    @router.get("/dictation/{job_id}")
    async def player(request: Request, job_id: int) -> Response:
        """The player and the editor of a job the user holds."""
        got = typist(request, job_id)
        if isinstance(got, Response):
            return got
        s, user, d = got
        job = await run_in_threadpool(held, d, user, job_id)
        if job is None:
            return _not_found(request)
        return _page(
            request,
            "dictation_job.html",
            user=user,
            csrf=s.csrf,
            job=job,
            work_type=_t(request, WORK_TYPES.get(WorkType(job.work_type), job.work_type)),
            parts=[
                {
                    "src": f"/dictation/{job.id}/audio/{p.position}",
                    "peaks": f"/dictation/{job.id}/peaks/{p.position}",
                    "name": p.name,
                    "seconds": p.duration_s,
                }
                for p in job.parts
            ],  # fmt: skip
            heartbeat=HEARTBEAT_S,
            error=request.query_params.get("error", "") == "empty",
            saved=request.query_params.get("saved", "") == "1",
        )

    @router.get("/dictation/{job_id}/audio/{position}")
    async def audio(request: Request, job_id: int, position: int) -> Response:
        """An audio part of the job (the API's audio handler; Range requests for seeking)."""
        got = typist(request, job_id)
        if isinstance(got, Response):
            return got
        _, user, d = got
        try:
            part, path = await run_in_threadpool(d.audio, Actor.of(user), job_id, position)
        except AppError:
            return _not_found(request)
        return FileResponse(
            path, media_type=part.content_type,
            headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
        )  # fmt: skip

    @router.get("/dictation/{job_id}/peaks/{position}")
    async def peaks(request: Request, job_id: int, position: int) -> Response:
        """The waveform of an audio part for the player: JSON `{"seconds", "peaks"}`, peaks
        the flat list min0, max0, min1, max1, … (-127..127) of up to 1600 slices; for whoever
        may fetch the audio (the same 404s), computed once per part on the server."""
        got = typist(request, job_id)
        if isinstance(got, Response):
            return got
        _, user, d = got
        try:
            part, values = await run_in_threadpool(d.peaks, Actor.of(user), job_id, position)
        except NotFound:
            return _not_found(request)
        except AppError as exc:
            return JSONResponse({"detail": str(exc)}, http_status(exc))
        return JSONResponse(
            {"seconds": part.duration_s, "peaks": values},
            headers={"Cache-Control": "private, no-store"},
        )

    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    async def save(
        request: Request, job_id: int
    ) -> tuple[WebSession, UserRecord, Dictation, JobRecord] | Response:
        """Save the editor form's text when it changed (its `version` must be the stored one);
        the job as saved, or the answer to send (404, 403 token, 409 newer text, 4xx)."""
        got = typist(request, job_id)
        if isinstance(got, Response):
            return got
        s, user, d = got
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > EDITOR_FORM:
            reason = _t(request, "Der Text ist zu lang.")
            if wants_json(request):
                return JSONResponse({"detail": reason}, 413)
            return _page(request, "error.html", 413, user=user, csrf=s.csrf, message=reason)
        form = await posted(request, s, user, EDITOR_FORM)
        if isinstance(form, Response):
            if wants_json(request):
                reason = _t(request, "Ungültiges Formular-Token oder zu großes Formular.")
                return JSONResponse({"detail": reason}, form.status_code)
            return form
        job = await run_in_threadpool(held, d, user, job_id)
        if job is None:
            try:  # a job the typist lost (the lock ran out, an admin gave it back): say so
                await run_in_threadpool(d.get, Actor.of(user), job_id)
            except AppError:
                if wants_json(request):
                    return JSONResponse({"detail": _t(request, "Nicht gefunden.")}, 404)
                return _not_found(request)
            lost = _t(request, NOT_HELD)
            if wants_json(request):
                return JSONResponse({"detail": lost}, 409)
            return _page(request, "error.html", 409, user=user, csrf=s.csrf, message=lost)
        version = form.get("version", "")
        if "text" not in form or not version.isdigit() or len(version) > 12:
            reason = _t(request, "Text und Version fehlen.")
            return (
                JSONResponse({"detail": reason}, 400)
                if wants_json(request)
                else (_page(request, "error.html", 400, user=user, csrf=s.csrf, message=reason))
            )
        text = form["text"].replace("\r\n", "\n")
        if text == job.draft:  # (saved already, by the page's script a moment ago)
            return s, user, d, job
        try:
            job = await run_in_threadpool(d.save_draft, Actor.of(user), job_id, text, int(version))
        except AppError as exc:
            status = http_status(exc)
            if isinstance(exc, Conflict):
                reason = _t(request, "Nicht gespeichert: auf dem Server liegt neuerer Text "
                                     "(anderes Fenster?). Bitte die Seite neu laden.")  # fmt: skip
            else:
                reason = _t(request, "Nicht gespeichert: %(reason)s", reason=str(exc))
            if wants_json(request):
                return JSONResponse({"detail": reason}, status)
            return _page(request, "error.html", status, user=user, csrf=s.csrf, message=reason)
        return s, user, d, job

    @router.post("/dictation/{job_id}/draft")
    async def draft(request: Request, job_id: int) -> Response:
        """Save the draft: the editor form (fields csrf, text, version); JSON `{"version"}`
        for the page's script, else back to the page."""
        saved = await save(request, job_id)
        if isinstance(saved, Response):
            return saved
        job = saved[3]
        if wants_json(request):
            return JSONResponse({"version": job.draft_version})
        return RedirectResponse(f"/dictation/{job_id}?saved=1", 303)

    @router.post("/dictation/{job_id}/heartbeat")
    async def heartbeat(request: Request, job_id: int) -> Response:
        """Keep the lock while the page is open (form field csrf; JSON answer)."""
        got = typist(request, job_id)
        if isinstance(got, Response):
            return got
        s, user, d = got
        form = await posted(request, s, user)
        if isinstance(form, Response):
            return JSONResponse({"detail": "csrf"}, form.status_code)
        try:
            job = await run_in_threadpool(d.heartbeat, Actor.of(user), job_id)
        except NotFound:
            return JSONResponse({"detail": _t(request, "Nicht gefunden.")}, 404)
        except AppError:
            reason = _t(request, NOT_HELD)
            return JSONResponse({"detail": reason}, 409)
        until = job.locked_until.isoformat() if job.locked_until else None
        return JSONResponse({"locked_until": until})

    @router.post("/dictation/{job_id}/deliver")
    async def deliver(request: Request, job_id: int) -> Response:
        """Save the editor's text, then deliver it (the API's deliver handler)."""
        saved = await save(request, job_id)
        if isinstance(saved, Response):
            return saved
        s, user, d, job = saved
        if not job.draft.strip():
            return RedirectResponse(f"/dictation/{job_id}?error=empty", 303)
        try:
            outcome = await run_in_threadpool(d.deliver, Actor.of(user), job_id, None)
        except AppError as exc:
            return _page(request, "error.html", http_status(exc), user=user,
                         csrf=s.csrf, message=_t(request, "Nicht abgegeben: %(reason)s",
                                                 reason=str(exc)))  # fmt: skip
        await tell(d, outcome)
        return RedirectResponse(f"/dictation?delivered={job_id}", 303)

    @router.post("/dictation/{job_id}/release")
    async def release(request: Request, job_id: int) -> Response:
        """Save the editor's text, then give the job back to the queue."""
        saved = await save(request, job_id)
        if isinstance(saved, Response):
            return saved
        s, user, d, _ = saved
        try:
            await run_in_threadpool(d.release, Actor.of(user), job_id)
        except AppError as exc:
            return _page(request, "error.html", http_status(exc), user=user,
                         csrf=s.csrf, message=str(exc))  # fmt: skip
        return RedirectResponse(f"/dictation?released={job_id}", 303)
