"""HTTP routes of dictation: the JSON API the portal, the typist's player and the agent
console use, and resumable uploads (tus 1.0.0 core protocol + creation extension).

Uploads (`/api/dictation/uploads`, tus 1.0.0, https://tus.io/protocols/resumable-upload):
`OPTIONS` tells the version, extensions and the size limit; `POST` with `Upload-Length` and
`Upload-Metadata: filename BASE64` creates an upload (201, `Location`); `HEAD` gives
`Upload-Offset`; `PATCH` with `Content-Type: application/offset+octet-stream` and the
current `Upload-Offset` appends (204 with the new offset; a wrong offset 409; beyond the
announced length 413). Bytes go to disk as they arrive, a megabyte at a time; a PATCH that
breaks off keeps what arrived, and the client goes on from the offset HEAD reports. A
finished upload is named in `POST /api/dictation/jobs` (audio) or as a finished document or
letterhead template (.docx). Every request but OPTIONS needs `Tus-Resumable: 1.0.0` (412).

Jobs: see each route. Another business's job ids answer 404 like missing ones.
"""

# No `from __future__ import annotations`: FastAPI must see the routes' dependencies, which
# are local to dictation_routes(), as objects rather than names.

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from heimbuero.app.dictation import Dictation, Outcome
from heimbuero.app.errors import AppError, http_status
from heimbuero.app.policy import Actor
from heimbuero.events import DictationChanged
from heimbuero.office import dictation_files as media
from heimbuero.office.dictation import State
from heimbuero.store.dictation import JobRecord, ProfileRecord
from heimbuero.web import sse
from heimbuero.web.params import Position, RowId

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
UPLOADS = "/api/dictation/uploads"
FLUSH_BYTES = 1024 * 1024


# -- schemas ---------------------------------------------------------------------------------


class JobIn(BaseModel):
    title: str = Field(max_length=1000)
    work_type: str = "letter"
    priority: str = "normal"
    due: datetime | None = None
    comments: str = Field("", max_length=10000)
    uploads: list[str] = Field(max_length=50)
    author: str | None = Field(None, description="staff only: the client user dictating")


class FromFileIn(BaseModel):
    file_id: str = Field(max_length=100)
    title: str | None = Field(None, max_length=1000)
    author: str | None = None
    work_type: str = "other"
    priority: str = "normal"
    due: datetime | None = None
    comments: str = Field("", max_length=10000)


class DraftIn(BaseModel):
    text: str
    version: int = Field(ge=0)


class DeliverIn(BaseModel):
    upload: str | None = Field(None, description="a finished upload of a .docx to deliver")


class CorrectionIn(BaseModel):
    remark: str = Field(max_length=10000)


class ProfileIn(BaseModel):
    review: bool | None = None
    email: str | None = Field(None, max_length=254)


class TemplateIn(BaseModel):
    upload: str | None = Field(None, description="a finished upload of a .docx; null removes")


def job_out(
    j: JobRecord, *, overdue: bool | None = None, full: bool = True, draft: bool = True
) -> dict[str, Any]:
    """A job as JSON; `draft` (the typist's text in the works) for staff only."""
    out: dict[str, Any] = {
        "id": j.id, "client": j.client_id, "author": j.author, "title": j.title,
        "work_type": j.work_type, "priority": j.priority,
        "due": j.due_at.isoformat() if j.due_at else None, "comments": j.comments,
        "source": j.source, "state": j.state, "typist": j.typist,
        "locked_until": j.locked_until.isoformat() if j.locked_until else None,
        "draft_version": j.draft_version, "remark": j.remark,
        "document": j.document_file is not None, "characters": j.characters,
        "normzeilen": j.normzeilen, "line_chars": j.line_chars,
        "audio_seconds": j.audio_seconds, "audio_minutes": round(j.audio_seconds / 60, 2),
        "created_at": j.created_at.isoformat(), "updated_at": j.updated_at.isoformat(),
        "delivered_at": j.delivered_at.isoformat() if j.delivered_at else None,
    }  # fmt: skip
    if overdue is not None:
        out["overdue"] = overdue
    if full and draft:
        out["draft"] = j.draft
    if full:
        out["parts"] = [
            {
                "position": p.position, "name": p.name, "content_type": p.content_type,
                "size": p.size, "duration_s": p.duration_s,
                "audio": f"/api/dictation/jobs/{j.id}/parts/{p.position}/audio",
            }
            for p in j.parts
        ]  # fmt: skip
        out["history"] = [
            {"at": h.at.isoformat(), "actor": h.actor, "action": h.action, "state": h.state,
             "note": h.note}
            for h in j.history
        ]  # fmt: skip
    return out


def _profile_out(p: ProfileRecord) -> dict[str, Any]:
    return {
        "client": p.client_id,
        "review": p.review,
        "email": p.email,
        "template": p.template_sha256 is not None,
    }


def _error(exc: AppError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, http_status(exc), headers=_tus_headers())


def _tus_headers() -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION}


def _parse_metadata(value: str) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key BASE64` pairs (tus 1.0.0)."""
    out: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, raw = item.partition(" ")
        try:
            out[key] = base64.b64decode(raw.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise ValueError(f"Upload-Metadata: {key!r} is not base64 of UTF-8") from None
    return out


# -- routes ----------------------------------------------------------------------------------


def dictation_routes(
    dictation: Dictation, current_user: Callable[..., Awaitable[Any]]
) -> APIRouter:
    router = APIRouter()
    Me = Annotated[Any, Depends(current_user)]
    # one PATCH at a time per upload: its lock and how many requests use it (then dropped)
    locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def tell(outcome: Outcome) -> None:
        try:
            await dictation.announce(outcome)
        except Exception:
            log.exception("dictation job %d: telling the author failed", outcome.job.id)

    # -- tus --

    @router.options(UPLOADS, tags=["dictation"])
    async def tus_options() -> Response:
        """The tus protocol's capabilities (no login)."""
        service = dictation.files
        limit = service.max_bytes if service else 0
        return Response(
            status_code=204,
            headers={
                **_tus_headers(),
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": "creation",
                "Tus-Max-Size": str(limit),
            },
        )

    def _check_tus(request: Request) -> Response | None:
        if request.headers.get("tus-resumable") != TUS_VERSION:
            return Response(status_code=412, headers={"Tus-Version": TUS_VERSION, **_tus_headers()})
        return None

    @router.post(UPLOADS, tags=["dictation"])
    async def tus_create(request: Request, user: Me) -> Response:
        """Create an upload: `Upload-Length` (bytes), `Upload-Metadata: filename BASE64`
        (an audio file: .wav .mp3 .m4a .aac .ogg .opus; or a .docx document). 413 beyond
        [files] max_size_mb or the quota (stored files + unfinished uploads)."""
        refused = _check_tus(request)
        if refused is not None:
            return refused
        raw = request.headers.get("upload-length", "")
        if not raw.isdigit() or len(raw) > 15:
            return JSONResponse({"detail": "Upload-Length must be a byte count"}, 400,
                                headers=_tus_headers())  # fmt: skip
        if request.headers.get("content-length", "0") not in ("0", ""):
            return JSONResponse({"detail": "creation-with-upload is not supported: PATCH"}, 400,
                                headers=_tus_headers())  # fmt: skip
        try:
            meta = _parse_metadata(request.headers.get("upload-metadata", ""))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, 400, headers=_tus_headers())
        name = meta.get("filename", "").replace("\\", "/").rsplit("/", 1)[-1].strip()
        if not name or len(name) > 255 or any(ord(c) < 32 for c in name):
            return JSONResponse({"detail": "Upload-Metadata needs a filename"}, 400,
                                headers=_tus_headers())  # fmt: skip
        try:
            record = await run_in_threadpool(dictation.start_upload, Actor.of(user), int(raw), name)
        except AppError as exc:
            return _error(exc)
        return Response(
            status_code=201,
            headers={**_tus_headers(), "Location": f"{UPLOADS}/{record.id}", "Upload-Offset": "0"},
        )

    @router.head(UPLOADS + "/{upload_id}", tags=["dictation"])
    async def tus_head(upload_id: str, request: Request, user: Me) -> Response:
        """How many bytes of the upload arrived (`Upload-Offset`)."""
        refused = _check_tus(request)
        if refused is not None:
            return refused
        try:
            record = await run_in_threadpool(dictation.upload, Actor.of(user), upload_id)
        except AppError as exc:
            return Response(status_code=http_status(exc), headers=_tus_headers())
        assert dictation.files is not None
        offset = media.upload_offset(media.upload_path(dictation.files.files_dir, record.id))
        return Response(
            status_code=200,
            headers={
                **_tus_headers(), "Upload-Offset": str(offset),
                "Upload-Length": str(record.length), "Cache-Control": "no-store",
            },
        )  # fmt: skip

    @router.patch(UPLOADS + "/{upload_id}", tags=["dictation"])
    async def tus_patch(upload_id: str, request: Request, user: Me) -> Response:
        """Append bytes at `Upload-Offset` (which must be the offset HEAD reports: 409
        otherwise)."""
        refused = _check_tus(request)
        if refused is not None:
            return refused
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/offset+octet-stream"
        ):
            return JSONResponse(
                {"detail": "PATCH needs Content-Type: application/offset+octet-stream"}, 415,
                headers=_tus_headers(),
            )  # fmt: skip
        claimed = request.headers.get("upload-offset", "")
        if not claimed.isdigit():
            return JSONResponse({"detail": "Upload-Offset must be a byte count"}, 400,
                                headers=_tus_headers())  # fmt: skip
        try:
            record = await run_in_threadpool(dictation.upload, Actor.of(user), upload_id)
        except AppError as exc:
            return _error(exc)
        assert dictation.files is not None
        path = media.upload_path(dictation.files.files_dir, record.id)
        lock, users = locks.get(record.id, (asyncio.Lock(), 0))
        locks[record.id] = (lock, users + 1)
        try:
            return await _append(request, record, path, lock, int(claimed))
        finally:
            lock, users = locks[record.id]
            if users <= 1:
                del locks[record.id]
            else:
                locks[record.id] = (lock, users - 1)

    async def _append(
        request: Request, record: Any, path: Any, lock: asyncio.Lock, claimed: int
    ) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and claimed + int(declared) > record.length:
            return JSONResponse(
                {"detail": f"more bytes than the announced Upload-Length {record.length}"}, 413,
                headers=_tus_headers(),
            )  # fmt: skip
        async with lock:
            offset = media.upload_offset(path)
            if claimed != offset:
                return JSONResponse(
                    {"detail": f"Upload-Offset {claimed} is not the upload's offset {offset}"},
                    409, headers={**_tus_headers(), "Upload-Offset": str(offset)},
                )  # fmt: skip
            appender = await run_in_threadpool(media.Appender, path)
            pending = bytearray()
            written = offset
            too_long = False
            try:
                async for chunk in request.stream():
                    if written + len(pending) + len(chunk) > record.length:
                        too_long = True
                        break
                    pending += chunk
                    if len(pending) >= FLUSH_BYTES:
                        data = bytes(pending)
                        pending.clear()
                        await run_in_threadpool(appender.write, data)
                        written += len(data)
            except ClientDisconnect:
                log.info("upload %s broken off at %d bytes", record.id, written + len(pending))
            finally:
                if pending:
                    data = bytes(pending)
                    pending.clear()
                    appender.write(data)  # synchronous: must also run when cancelled
                    written += len(data)
                appender.close()
        if too_long:
            return JSONResponse(
                {"detail": f"more bytes than the announced Upload-Length {record.length}"}, 413,
                headers={**_tus_headers(), "Upload-Offset": str(written)},
            )  # fmt: skip
        return Response(status_code=204, headers={**_tus_headers(), "Upload-Offset": str(written)})

    # -- jobs --

    @router.post("/api/dictation/jobs", status_code=201, tags=["dictation"])
    async def create_job(body: JobIn, user: Me) -> Any:
        """A job from finished uploads (their audio parts in order); the author is the
        logged-in client user (staff name `author`)."""
        job = await run_in_threadpool(
            lambda: dictation.create(
                Actor.of(user), title=body.title, work_type=body.work_type,
                priority=body.priority, due=body.due, comments=body.comments,
                uploads=body.uploads, author=body.author,
            )
        )  # fmt: skip
        await tell(Outcome(job, State.NEW))
        return JSONResponse(job_out(job), 201)

    @router.post("/api/dictation/jobs/from-file", status_code=201, tags=["dictation"])
    async def from_file(body: FromFileIn, user: Me) -> Any:
        """A job from an audio file already sent in the messenger (staff; the author is the
        file's owner unless `author` names one)."""
        job = await run_in_threadpool(
            lambda: dictation.from_file(
                Actor.of(user), body.file_id, title=body.title, author=body.author,
                work_type=body.work_type, priority=body.priority, due=body.due,
                comments=body.comments,
            )
        )  # fmt: skip
        await tell(Outcome(job, State.NEW))
        return JSONResponse(job_out(job), 201)

    @router.get("/api/dictation/jobs", tags=["dictation"])
    def list_jobs(
        user: Me,
        client: str | None = None,
        work_type: str | None = None,
        state: str | None = None,
    ) -> list[dict[str, Any]]:
        """Jobs, newest first: staff every client's, a client's users their business's."""
        jobs = dictation.jobs(Actor.of(user), client, work_type, state)
        return [job_out(j, full=False) for j in jobs]

    @router.get("/api/dictation/queue", tags=["dictation"])
    def queue(
        user: Me,
        client: str | None = None,
        work_type: Annotated[str | None, Query()] = None,
    ) -> list[dict[str, Any]]:
        """The typists' queue (staff): waiting and taken jobs, urgent first, then by due
        time; `overdue` marks those past due."""
        return [
            job_out(j, overdue=late, full=False)
            for j, late in dictation.queue(Actor.of(user), client, work_type)
        ]

    @router.get("/api/dictation/stream", tags=["dictation"])
    async def stream(request: Request, user: Me) -> StreamingResponse:
        """Server-Sent Events: `job` with `{"id", "client", "state", "author", "typist"}`
        each time a job you may see is created or changes state (the portal's live state,
        the typists' live queue); a comment every 15 s keeps the connection open."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=1000)

        def put(item: dict[str, Any]) -> None:
            with contextlib.suppress(asyncio.QueueFull):  # a reader that stalls loses some
                queue.put_nowait(("job", item))

        def on_change(e: DictationChanged) -> None:
            item = {"id": e.job_id, "client": e.client, "state": e.state, "author": e.author,
                    "typist": e.typist}  # fmt: skip
            loop.call_soon_threadsafe(put, item)

        stop = dictation.watch(Actor.of(user), on_change)

        return StreamingResponse(
            sse.events(request, queue, ": dictation jobs\n\n", stop),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    @router.get("/api/dictation/jobs/{job_id}", tags=["dictation"])
    def get_job(job_id: RowId, user: Me) -> dict[str, Any]:
        """A job with its audio parts, draft and history."""
        actor = Actor.of(user)
        return job_out(dictation.get(actor, job_id), draft=actor.staff)

    @router.post("/api/dictation/jobs/{job_id}/take", tags=["dictation"])
    async def take(job_id: RowId, user: Me) -> dict[str, Any]:
        """Check the job out to you (staff). 409 when somebody else has it."""
        outcome = await run_in_threadpool(dictation.take, Actor.of(user), job_id)
        await tell(outcome)
        return job_out(outcome.job)

    @router.post("/api/dictation/jobs/{job_id}/release", tags=["dictation"])
    def release(job_id: RowId, user: Me) -> dict[str, Any]:
        """Give the job back to the queue."""
        return job_out(dictation.release(Actor.of(user), job_id))

    @router.post("/api/dictation/jobs/{job_id}/heartbeat", tags=["dictation"])
    def heartbeat(job_id: RowId, user: Me) -> dict[str, Any]:
        """Keep your lock: it ends [dictation] lock_minutes after the last heartbeat."""
        job = dictation.heartbeat(Actor.of(user), job_id)
        return {"id": job.id, "locked_until": job.locked_until.isoformat() if job.locked_until
                else None}  # fmt: skip

    @router.put("/api/dictation/jobs/{job_id}/draft", tags=["dictation"])
    def save_draft(job_id: RowId, body: DraftIn, user: Me) -> dict[str, Any]:
        """Save the typed text; `version` is the version it was based on (409 when newer
        text is stored). Answers the new version."""
        job = dictation.save_draft(Actor.of(user), job_id, body.text, body.version)
        return {"id": job.id, "version": job.draft_version}

    @router.get("/api/dictation/jobs/{job_id}/parts/{position}/audio", tags=["dictation"])
    def audio(job_id: RowId, position: Position, user: Me) -> Response:
        """An audio part's bytes; `Range` requests are answered with 206 (seeking)."""
        part, path = dictation.audio(Actor.of(user), job_id, position)
        return FileResponse(
            path, media_type=part.content_type, filename=part.name,
            headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
        )  # fmt: skip

    @router.post("/api/dictation/jobs/{job_id}/deliver", tags=["dictation"])
    async def deliver(job_id: RowId, user: Me, body: DeliverIn | None = None) -> dict[str, Any]:
        """Deliver your draft as DOCX (the client's letterhead, or the default document) or
        a finished .docx upload; counts its Normzeilen; the author gets it in the messenger
        and by e-mail (or it goes to review when the client wants one)."""
        outcome = await run_in_threadpool(
            dictation.deliver, Actor.of(user), job_id, body.upload if body else None
        )
        await tell(outcome)
        return job_out(outcome.job)

    @router.post("/api/dictation/jobs/{job_id}/approve", tags=["dictation"])
    async def approve(job_id: RowId, user: Me) -> dict[str, Any]:
        """A reviewed job goes to its author (staff)."""
        outcome = await run_in_threadpool(dictation.approve, Actor.of(user), job_id)
        await tell(outcome)
        return job_out(outcome.job)

    @router.post("/api/dictation/jobs/{job_id}/corrections", tags=["dictation"])
    async def corrections(job_id: RowId, body: CorrectionIn, user: Me) -> dict[str, Any]:
        """Ask for corrections of a delivered job (its author's business): it reopens with
        the remark."""
        actor = Actor.of(user)
        outcome = await run_in_threadpool(dictation.request_corrections, actor, job_id, body.remark)
        await tell(outcome)
        return job_out(outcome.job, draft=actor.staff)

    @router.get("/api/dictation/jobs/{job_id}/document", tags=["dictation"])
    def document(
        job_id: RowId, user: Me, kind: Literal["docx", "pdf"] = Query("docx", alias="format")
    ) -> Response:
        """The delivered document: the DOCX, or (`?format=pdf`) its text as PDF."""
        if kind == "pdf":
            name, data = dictation.document_pdf(Actor.of(user), job_id)
            disposition = f"attachment; filename*=UTF-8''{quote(name)}"
            return Response(data, media_type="application/pdf",
                            headers={"Content-Disposition": disposition})  # fmt: skip
        name, path = dictation.document(Actor.of(user), job_id)
        return FileResponse(path, media_type=media.DOCX_TYPE, filename=name)

    @router.get("/api/dictation/clients/{client_id}/profile", tags=["dictation"])
    def get_profile(client_id: str, user: Me) -> dict[str, Any]:
        return _profile_out(dictation.profile(Actor.of(user), client_id))

    @router.put("/api/dictation/clients/{client_id}/profile", tags=["dictation"])
    def put_profile(client_id: str, body: ProfileIn, user: Me) -> dict[str, Any]:
        """Review before delivery, and the address documents are e-mailed to (admins)."""
        return _profile_out(
            dictation.set_profile(Actor.of(user), client_id, review=body.review, email=body.email)
        )

    @router.put("/api/dictation/clients/{client_id}/template", tags=["dictation"])
    def put_template(client_id: str, body: TemplateIn, user: Me) -> dict[str, Any]:
        """The client's letterhead template: a finished upload of a .docx with docxtpl
        placeholders (`{{ title }}`, `{{ client }}`, `{{ author }}`, `{{ date }}`, and
        `{{ text }}` or the paragraphs `{%p for p in paragraphs %}`, `{{ p }}`,
        `{%p endfor %}`); null removes it (admins)."""
        actor = Actor.of(user)
        if body.upload is None:
            return _profile_out(dictation.set_template(actor, client_id, None))
        return _profile_out(dictation.template_from_upload(actor, client_id, body.upload))

    return router
