"""HTTP routes of the file-transfer service: Linphone's scheme under /ft (SIP digest
credentials) and the API's /api/files (Basic or token login).

/ft as Linphone (and other RCS-style clients) use it:

- `POST /ft` without a body: 204 when the Authorization is good, else 401 with Digest
  challenges (the client's probe);
- `POST /ft` with multipart/form-data, one part `name="File"; filename="…"`: 200 with the RCS
  file-info XML naming the download link and its expiry;
- `GET /ft/<id>`: the file, for its owner, the recipients it was sent to, and staff.

Errors: 400 malformed form or digest mismatch, 401 login (Digest) required, 404 no such file
for you (also: expired, or not yours: alike, so links cannot be probed), 413 file too large or
quota exceeded, 415 not multipart/form-data, 429 too many failed logins.

Uploads are never held in memory: the body is parsed as it arrives and written to disk in a
worker thread, a megabyte at a time; downloads are read and hashed the same way, and the last
chunk is held back until the file's SHA-256 checked out, so a file damaged on disk is never
delivered as complete.
"""

# No `from __future__ import annotations`: FastAPI must see the routes' dependencies, which
# are local to file_routes(), as objects rather than names.

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from heimbuero.app.errors import NotFound
from heimbuero.app.files import Files
from heimbuero.app.policy import Actor, Role
from heimbuero.office.files import (
    FILE_INFO_TYPE,
    BadUpload,
    FileError,
    FileService,
    Upload,
    expected_sha256,
    repr_digest,
)
from heimbuero.sip.auth import DigestAuthenticator, parse_credentials
from heimbuero.store.files import FileRecord
from heimbuero.web.guard import AddressFailures

log = logging.getLogger(__name__)

FAILURE_LIMIT = 10  # failed digest logins per client address per minute before 429
FLUSH_BYTES = 1024 * 1024  # body bytes gathered before a worker thread parses and writes them
_NOT_FOUND = "no such file (or its link expired)"
_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


# -- schemas ---------------------------------------------------------------------------------


class FileOut(BaseModel):
    id: str
    owner: str
    name: str
    content_type: str
    size: int
    sha256: str
    duration_s: float | None
    created_at: datetime
    until: datetime
    link: str
    parties: list[str]


class FileList(BaseModel):
    files: list[FileOut]
    used_bytes: int
    quota_bytes: int | None


class DownloadOut(BaseModel):
    user: str | None
    at: datetime
    remote: str
    status: int
    bytes_sent: int


# -- digest logins ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestLogin:
    name: str
    role: str


class _DigestGuard:
    """HTTP Digest (RFC 7616) with the users' SIP credentials, and a per-address limit of
    failed attempts. The authenticator is not thread-safe: only the event loop calls it."""

    def __init__(self, service: FileService, digest: DigestAuthenticator) -> None:
        self.store = service.store
        self.digest = digest
        self.failures = AddressFailures(FAILURE_LIMIT)  # bounded: old addresses are forgotten

    def _fail(self, addr: str, now: float) -> None:
        self.failures.add(addr, now)

    def challenge(self, stale: bool = False, detail: str = "login required") -> Response:
        response = JSONResponse({"detail": detail}, 401)
        for value in self.digest.challenges(time.time(), stale=stale):
            response.headers.append("WWW-Authenticate", value)
        return response

    async def login(self, request: Request) -> DigestLogin | Response:
        """The user the request's Digest credentials prove, or the response to send."""
        addr = _remote(request)
        now = time.monotonic()
        if self.failures.blocked(addr, now):
            return JSONResponse({"detail": "too many failed logins, try again in a minute"}, 429)
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("digest"):
            return self.challenge()
        params = parse_credentials(header)
        if params is None or not params.get("username"):
            self._fail(addr, now)
            return self.challenge(detail="malformed Digest credentials")
        if not _uri_matches(params.get("uri", ""), request):
            self._fail(addr, now)
            return JSONResponse(
                {"detail": "the Authorization's uri does not name this request's target"}, 400
            )
        username = params["username"]
        creds = await run_in_threadpool(self.store.get_credentials, username)

        def lookup(name: str, algorithm: str) -> str | None:
            if creds is None or name != username:
                return None
            return creds[1] if algorithm == "MD5" else creds[2]

        result = self.digest.verify(request.method, header, time.time(), lookup)
        if result.stale:
            return self.challenge(stale=True)
        if not result.ok or creds is None:
            self._fail(addr, now)
            log.info("digest login of %r from %s refused: %s", username, addr, result.reason)
            return self.challenge(detail="wrong user name or password")
        return DigestLogin(username, creds[0])


def _remote(request: Request) -> str:
    return request.client.host if request.client else "?"


def _uri_matches(uri: str, request: Request) -> bool:
    """The digest's uri names what was requested: the request target as sent (origin form),
    or an absolute URI with that path and query."""
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    target = raw_path.decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    if query:
        target += "?" + query
    if uri == target:
        return True
    if "://" in uri:
        parts = urlsplit(uri)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "") == target
    return False


# -- shared request handling -----------------------------------------------------------------


def _error(exc: FileError) -> JSONResponse:
    return JSONResponse({"detail": exc.message}, exc.status)


def _now() -> datetime:
    return datetime.now(UTC)


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise BadUpload("invalid Content-Length")
    return int(value)


def _has_body(request: Request) -> bool:
    return "transfer-encoding" in request.headers or request.headers.get(
        "content-length", "0"
    ) not in ("0", "")


async def receive_upload(
    service: FileService, request: Request, owner: str, field: str
) -> FileRecord | Response:
    """Stream the request's multipart body into the service; the stored file's record, or the
    error response. Whatever fails, nothing of the upload remains."""
    try:
        return await store_upload(service, request, owner, field)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is left to read it
    except FileError as exc:
        return _error(exc)


async def store_upload(
    service: FileService, request: Request, owner: str, field: str
) -> FileRecord:
    """Stream the request's multipart body into the service: the stored file's record; raises
    FileError (size, quota, form) or ClientDisconnect. Whatever fails, nothing of the upload
    remains (the API and the console's chat both upload through this)."""
    now = _now()
    expected = expected_sha256(
        request.headers.get("repr-digest") or request.headers.get("content-digest"),
        request.headers.get("digest"),
    )
    upload: Upload = await run_in_threadpool(
        service.start_upload,
        owner,
        request.headers.get("content-type", ""),
        _content_length(request),
        now,
        field,
        bool(expected),
    )
    try:
        pending = bytearray()
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= FLUSH_BYTES:
                data = bytes(pending)
                pending.clear()
                await run_in_threadpool(upload.feed, data)
        if pending:
            await run_in_threadpool(upload.feed, bytes(pending))
        await run_in_threadpool(upload.finish)
        return await run_in_threadpool(service.complete_upload, upload, owner, expected, now)
    except ClientDisconnect:
        log.info("upload by %s broken off after %d bytes of file", owner, upload.size)
        raise
    except FileError as exc:
        log.info("upload by %s refused: %s", owner, exc.message)
        raise
    finally:
        # Synchronous on purpose: it must run even when the task is being cancelled.
        upload.abort()


async def send_file(
    service: FileService, request: Request, file_id: str, actor: Actor, files: Files
) -> Response:
    """The file's bytes for a user allowed to download it, else 404; logs the attempt."""
    remote, user = _remote(request), actor.name
    try:
        record = await run_in_threadpool(files.visible, actor, file_id, _now())
    except NotFound:
        await run_in_threadpool(service.log_download, file_id, user, remote, 404, 0)
        return JSONResponse({"detail": _NOT_FOUND}, 404)
    try:
        download = await run_in_threadpool(service.open_download, record)
    except FileError as exc:
        await run_in_threadpool(service.log_download, file_id, user, remote, exc.status, 0)
        return _error(exc)

    async def body() -> AsyncIterator[bytes]:
        status, sent = 200, 0
        try:
            chunk = await run_in_threadpool(download.read)
            while chunk:
                following = await run_in_threadpool(download.read)
                if not following and not download.intact:
                    status = 500
                    # Breaking off (short of Content-Length) tells the client it failed.
                    raise OSError(f"file {record.id} is corrupt on disk")
                yield chunk
                sent += len(chunk)
                chunk = following
        finally:
            download.close()
            with anyio.CancelScope(shield=True):  # a client that left still gets logged
                await run_in_threadpool(service.log_download, record.id, user, remote, status, sent)

    name = quote(record.name, safe="")
    headers = {
        "Content-Length": str(record.size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{name}",
        "Repr-Digest": repr_digest(record.sha256),
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        # Files are the users' content, never pages of this site.
        "Content-Security-Policy": "sandbox",
    }
    return StreamingResponse(body(), media_type=record.content_type, headers=headers)


def _file_out(service: FileService, r: FileRecord) -> FileOut:
    return FileOut(
        id=r.id,
        owner=r.owner,
        name=r.name,
        content_type=r.content_type,
        size=r.size,
        sha256=r.sha256,
        duration_s=r.duration_s,
        created_at=r.created_at,
        until=r.expires_at,
        link=service.link(r.id),
        parties=list(r.parties),
    )


# -- routes ----------------------------------------------------------------------------------


def file_routes(
    service: FileService,
    digest: DigestAuthenticator,
    current_user: Callable[..., Awaitable[Any]],
    files: Files | None = None,
) -> APIRouter:
    """The routes, to be included in the app; `files` (the application layer's handler)
    decides who may see, list and delete files."""
    router = APIRouter()
    files = files or Files(service)
    guard = _DigestGuard(service, digest)
    Me = Annotated[Any, Depends(current_user)]

    # -- Linphone's scheme --

    @router.post("/ft", tags=["file transfer"], openapi_extra=_MULTIPART_BODY)
    @router.post("/ft/", include_in_schema=False)
    async def ft_upload(request: Request) -> Response:
        """Upload for SIP clients (Linphone's file-transfer server scheme), logged in with
        HTTP Digest and their SIP credentials. Without a body: 204 (the client's probe).
        With multipart/form-data (the file in a part named `File`): 200 and the RCS
        file-info XML with the download link and its expiry."""
        login = await guard.login(request)
        if isinstance(login, Response):
            return login
        if not _has_body(request) and "multipart/" not in request.headers.get("content-type", ""):
            return Response(status_code=204)
        stored = await receive_upload(service, request, login.name, "file")
        if isinstance(stored, Response):
            return stored
        document = await run_in_threadpool(service.file_info_xml, stored.id)
        return Response(document, 200, media_type=FILE_INFO_TYPE)

    @router.get("/ft/{file_id}", tags=["file transfer"])
    async def ft_download(file_id: str, request: Request) -> Response:
        """Download for SIP clients (HTTP Digest, SIP credentials): the owner, the
        recipients the link was sent to, and staff; everyone else gets 404."""
        login = await guard.login(request)
        if isinstance(login, Response):
            if "authorization" in request.headers:  # a failed login, not the bare challenge
                await run_in_threadpool(
                    service.log_download, file_id, None, _remote(request), login.status_code
                )
            return login
        actor = Actor(login.name, Role(login.role))
        return await send_file(service, request, file_id, actor, files)

    # -- the API --

    def visible(file_id: str, user: Any) -> FileRecord:
        return files.visible(Actor.of(user), file_id, _now())

    @router.post("/api/files", status_code=201, tags=["files"], openapi_extra=_MULTIPART_BODY)
    async def api_upload(request: Request, user: Me) -> Any:
        """Upload a file (multipart/form-data, the file in a part named `file`). An optional
        `Repr-Digest: sha-256=:BASE64:` is checked. 413 beyond the size limit or quota."""
        stored = await receive_upload(service, request, user.name, "file")
        if isinstance(stored, Response):
            return stored
        return JSONResponse(_file_out(service, stored).model_dump(mode="json"), 201)

    @router.get("/api/files", tags=["files"])
    def api_list(
        user: Me,
        owner: Annotated[str | None, Query(description="whose files (staff only)")] = None,
    ) -> FileList:
        """Your files (staff: `owner`'s) whose links have not expired, newest first, with the
        storage used against the quota."""
        now = _now()
        who, listed = files.list(Actor.of(user), owner, now)
        return FileList(
            files=[_file_out(service, f) for f in listed],
            used_bytes=service.used_bytes(who, now),
            quota_bytes=service.quota_bytes,
        )

    @router.get("/api/files/{file_id}", tags=["files"])
    def api_get(file_id: str, user: Me) -> FileOut:
        """A file's details: size, SHA-256, audio duration, link and expiry, parties."""
        return _file_out(service, visible(file_id, user))

    @router.get("/api/files/{file_id}/content", tags=["files"])
    async def api_content(file_id: str, request: Request, user: Me) -> Response:
        """The file's bytes, with `Repr-Digest` (the same rules and log as /ft downloads)."""
        return await send_file(service, request, file_id, Actor.of(user), files)

    @router.get("/api/files/{file_id}/downloads", tags=["files"])
    def api_downloads(file_id: str, user: Me) -> list[DownloadOut]:
        """The download log of a file: every attempt, refused ones too (its owner and staff)."""
        return [
            DownloadOut(
                user=d.user, at=d.at, remote=d.remote, status=d.status, bytes_sent=d.bytes_sent
            )
            for d in files.downloads(Actor.of(user), file_id)
        ]

    @router.delete("/api/files/{file_id}", status_code=204, tags=["files"])
    def api_delete(file_id: str, user: Me) -> None:
        """Delete a file now (its owner and admins)."""
        files.delete(Actor.of(user), file_id)

    return router
