"""The HTTP service: liveness, server status, and the management API (FastAPI).

OpenAPI is published at /api/openapi.json, interactive docs at /api/docs. Every route but the
liveness probe needs a login: HTTP Basic against the user's argon2 hash, or an API token as
`Authorization: Bearer TOKEN` (`heimbuero token create`). The routes are thin adapters: each
calls a handler of the application layer (heimbuero/app) as the logged-in user's Actor, and
`app_error_response` maps its typed errors to HTTP. Who may do what (heimbuero/app/policy.py):

- admin: everything;
- agent: reads everything, sets and clears overrides;
- client: reads its own business (client, numbers, users, rules, override, call records) and
  changes its own rules and override;
- employee: reads its own business.

Errors are JSON `{"detail": ...}`: 401 login required (or invalid token, invalid user name or
password), 403 not allowed, 404 no such thing, 409 conflict, 413 body too large, 422 invalid
input with `detail` a list of `{"loc", "field", "msg"}`, 429 too many failed logins, 503 too
many logins being checked. Logins and bodies are checked before a body is read (web/guard.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from heimbuero.app import Actor, App, AppError, Invalid, Problem, TooMany, Unavailable, http_status
from heimbuero.app.billing import SendMail
from heimbuero.app.calls import MAX_OFFSET
from heimbuero.app.clients import ClientInfo
from heimbuero.app.rules import OverrideState
from heimbuero.domain.model import Group, Provider, Step, Trunk, parse_target
from heimbuero.office import accounts, callpolicy, directory
from heimbuero.office.accounts import credentials, verify_password
from heimbuero.office.files import FileService
from heimbuero.office.messaging import content_view
from heimbuero.office.routing import RoutingState
from heimbuero.office.rules_doc import document_version
from heimbuero.sip.auth import DigestAuthenticator
from heimbuero.store.db import CallRecord, Store, StoreError, UserRecord
from heimbuero.store.messages import MessageRecord
from heimbuero.store.totp import SecondFactors
from heimbuero.web import sse
from heimbuero.web.guard import BodyGuard, LoginGate, LoginRefused

_NOBODY = UserRecord(0, "", "", "", "", credentials("nobody", "-", "no such user at all")[2], None)  # type: ignore[arg-type]


@dataclass
class WebContext:
    """What the HTTP layer reads from the running server.

    `domain` is the SIP realm new users' digest hashes are made for (default: status()'s
    "domain"); `routing_state` gives live presence to the simulator (default: nobody
    registered)."""

    store: Store
    status: Callable[[], dict[str, Any]]
    registrations: Callable[[], list[dict[str, Any]]]
    domain: str | None = None
    routing_state: Callable[[], RoutingState] | None = None
    # presence the given user may see, and a watch of its changes (callback; returns the
    # function that ends the watch); None: presence not available
    presence: Callable[[str], list[dict[str, Any]]] | None = None
    presence_watch: Callable[[str, Callable[[dict[str, Any]], None]], Callable[[], None]] | None = (
        None
    )
    # the file-transfer service and the digest authenticator its SIP clients log in with
    files: FileService | None = None
    digest: DigestAuthenticator | None = None
    # send a message (sender, recipient, content type, body) on the server's loop; raises
    # MessageRejected; and a watch of the messages a user is party to (event, message)
    send_message: Callable[[str, str, str, bytes], Awaitable[dict[str, Any]]] | None = None
    message_watch: (
        Callable[[str, Callable[[str, dict[str, Any]], None]], Callable[[], None]] | None
    ) = None
    # the server's own SIP address that HOST, PORT reaches (a trunk must not point there)
    own_sip_address: Callable[[str, int], str | None] | None = None
    # a watch of warnings for the provider's staff (a cap of calls out reached)
    warning_watch: Callable[[Callable[[dict[str, Any]], None]], Callable[[], None]] | None = None
    # ring_watch(user, fn): fn(client card) for each client's call ringing the user's phones
    ring_watch: Callable[[str, Callable[[dict[str, Any]], None]], Callable[[], None]] | None = None
    # usage_watch(fn): fn(UsageChanged) for each change of a client's usage (the live billing pages)
    usage_watch: Callable[[Callable[[Any], None]], Callable[[], None]] | None = None
    # largest body of an API request, and of a file upload (multipart, to /api/files)
    max_body: int = 256 * 1024
    max_upload: int = 500 * 1024 * 1024 + 64 * 1024
    # dictation jobs (heimbuero.app.dictation.Dictation, wired by the server); None: off
    dictation: Any = None
    # publish a domain event on the server's bus (call notes: CallNoteTaken)
    publish: Callable[[Any], None] | None = None
    # send an e-mail (to, subject, text) through the server's [mail] settings; None: no mail
    mail: Callable[[str, str, str], Awaitable[None]] | None = None
    # deliver an invoice's e-mail (blocking, with attachments; Mailer.deliver); None: no mail
    invoice_mail: SendMail | None = None
    # the data folder (voicemail greetings, messages and announcements); None: those routes are off
    data_dir: Path | None = None
    # the data folder's `secret`: the key TOTP secrets are sealed with (None: no second factor
    # can be made or checked)
    secret: bytes | None = None


# -- errors ----------------------------------------------------------------------------------


def _problem(loc: list[Any] | str, msg: str) -> dict[str, Any]:
    field = loc if isinstance(loc, str) else ".".join(str(p) for p in loc)
    return {"loc": loc, "field": field, "msg": msg}


def _unprocessable(*problems: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"detail": list(problems)}, 422)


def _loc(request: Request, p: Problem, document: bool) -> list[Any] | str:
    """Where an invalid input was: a path in a submitted document, or the request's
    path, query or body field the handler's argument came from."""
    if document:
        return p.field or "(document)"
    if p.field == "body":
        return ["body"]
    for name in (p.field, f"{p.field}_id"):
        if name in request.path_params:
            return ["path", name]
    if p.field in request.query_params:
        return ["query", p.field]
    return ["body", p.field]


async def app_error_response(request: Request, exc: Exception) -> JSONResponse:
    """The one mapping of handler (and store) errors to HTTP: status from
    `heimbuero.app.errors.http_status`, `{"detail": message}`, or for invalid input 422 with
    `detail` a list of `{"loc", "field", "msg"}`."""
    if isinstance(exc, Invalid):
        return _unprocessable(
            *(_problem(_loc(request, p, exc.document), p.msg) for p in exc.problems)
        )
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooMany) else None
    return JSONResponse({"detail": str(exc)}, http_status(exc), headers=headers)


def rules_version_of(if_match: str | None) -> str | None:
    """The rules version an `If-Match` header names: None for no header or `*` (any version);
    the tag without its quotes. A weak tag (W/"…") or a list of several tags names no version
    of ours: it never matches (the document is compared strongly)."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip()
    if tag.startswith('"') and tag.endswith('"') and len(tag) >= 2:
        return tag[1:-1]
    return "(no version)" if tag.startswith("W/") or "," in tag else tag


# -- schemas ---------------------------------------------------------------------------------


def _line(v: str | None) -> str | None:
    """A name or one-line text that is shown or put into a SIP header: no control characters
    (CR, LF, NUL, C0/C1) and no bidi overrides (office/callpolicy.py)."""
    return None if v is None else callpolicy.check_text("text", v)


def _lines(v: str | None) -> str | None:
    """A free text shown on screen (notes, messages): line breaks allowed."""
    return None if v is None else callpolicy.check_text("text", v, multiline=True)


class StepModel(BaseModel):
    targets: list[str] = Field(min_length=1, examples=[["group:team"]])
    timeout: int = Field(ge=1, le=600, examples=[30])


class ProviderModel(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    address: str = ""
    vat_id: str = ""
    iban: str = ""
    bic: str = ""
    default_steps: list[StepModel] = []
    country_code: int = Field(default=49, description="numbers typed without + are read in it")

    _texts = field_validator("name", "vat_id", "iban", "bic")(_line)
    _address = field_validator("address")(_lines)


class VipCallerModel(BaseModel):
    number: str = Field(max_length=64, examples=["0171 2345678", "+491712345678"])
    name: str = Field(max_length=100, examples=["Herr Meier (Architekt)"])
    remark: str = Field(default="", max_length=200, examples=["immer sofort durchstellen"])


class ClientFields(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    trade: str | None = None
    contact_person: str | None = None
    greeting: str | None = None
    notes: str | None = None
    timezone: str | None = None
    bundesland: str | None = None
    closure_days: list[date] | None = None
    email: str | None = Field(default=None, max_length=254)  # call notes by e-mail too
    vip_callers: list[VipCallerModel] | None = Field(
        default=None, max_length=100, description="callers the agent's card names (the whole list)"
    )

    _texts = field_validator("name", "trade", "contact_person", "greeting")(_line)
    _notes = field_validator("notes")(_lines)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else directory.validate_timezone(v)

    @field_validator("bundesland")
    @classmethod
    def _land(cls, v: str | None) -> str | None:
        return None if v is None else directory.validate_bundesland(v)


class ClientCreate(ClientFields):
    id: str = Field(examples=["mueller"])
    name: str = Field(min_length=1, max_length=200, examples=["Tischlerei Müller"])

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return directory.validate_slug(v)


class ClientOut(BaseModel):
    id: str
    name: str
    trade: str
    contact_person: str
    greeting: str
    notes: str
    timezone: str
    bundesland: str
    closure_days: list[date]
    numbers: list[str]
    email: str = ""
    vip_callers: list[VipCallerModel] = []


class NumberModel(BaseModel):
    number: str = Field(max_length=64, examples=["089 1234567", "+49891234567"])
    client: str = Field(examples=["mueller"])
    dictation: bool = Field(
        default=False, description="calls to it start dictation by phone for the client"
    )


class NumberPatch(BaseModel):
    dictation: bool = Field(description="true: the client's dictation number; false: calls")


# typed as people write it; the handler reads it with the provider's country code


class UserOut(BaseModel):
    name: str
    role: str
    client: str | None
    display_name: str | None
    mobile: str | None
    created_at: datetime


class UserFields(BaseModel):
    client: str | None = None
    display_name: str | None = Field(default=None, max_length=200)
    mobile: str | None = None

    _display = field_validator("display_name")(_line)


# mobile: typed as people write it; the handler checks it


class UserCreate(UserFields):
    name: str
    password: str
    role: str = accounts.DEFAULT_ROLE


class PasswordModel(BaseModel):
    password: str


class GroupModel(BaseModel):
    name: str
    strategy: str = "ring_all"
    members: list[str] = []

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return directory.validate_slug(v, "group name")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        return directory.validate_strategy(v)


class GroupPatch(BaseModel):
    strategy: str | None = None
    members: list[str] | None = None

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str | None) -> str | None:
        return None if v is None else directory.validate_strategy(v)


class TrunkFields(BaseModel):
    host: str | None = Field(default=None, min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    transport: str | None = None
    prefixes: list[str] | None = None
    username: str | None = None
    password: str | None = Field(default=None, description="write only; never returned")
    registers: bool | None = Field(
        default=None, alias="register", description="register to the carrier"
    )
    inbound_auth: str | None = Field(
        default=None,
        description="how the carrier's calls are recognised: address, address-tcp or digest",
    )
    inbound_username: str | None = Field(default=None, max_length=100)
    inbound_password: str | None = Field(
        default=None, max_length=200, description="write only; stored as digest hashes"
    )
    model_config = ConfigDict(populate_by_name=True)

    @field_validator("transport")
    @classmethod
    def _transport(cls, v: str | None) -> str | None:
        return None if v is None else directory.validate_trunk_transport(v)

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [directory.validate_prefix(p) for p in v]


class TrunkCreate(TrunkFields):
    name: str
    host: str = Field(min_length=1, max_length=255)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return directory.validate_slug(v, "trunk name")


class TrunkOut(BaseModel):
    name: str
    host: str
    port: int
    transport: str
    prefixes: list[str]
    username: str | None
    has_password: bool
    registers: bool = Field(alias="register")
    inbound_auth: str = "address"
    inbound_username: str | None = None
    call_policy: dict[str, Any] = Field(default_factory=dict, description="calls out it carries")
    model_config = ConfigDict(populate_by_name=True)


class ApprovedNumber(BaseModel):
    number: str = Field(max_length=64, examples=["0170 1111111", "+491701111111"])


# typed as people write it; the handler reads it with the provider's country code


class OverrideIn(BaseModel):
    target: str = Field(examples=["office"], description="office (*21) or mobile (*22)")
    until: datetime | None = Field(
        default=None, description="end (ISO 8601; without an offset: the client's local time)"
    )

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        return directory.validate_override_target(v)


class OverrideOut(BaseModel):
    client: str
    target: str
    until: datetime | None
    active: bool


class StepOut(BaseModel):
    targets: list[str]
    timeout: int


class PlanOut(BaseModel):
    client: str | None
    number: str
    rule: str | None
    steps: list[StepOut]
    reason: str
    dictation: bool = False  # the client's dictation number: dictation by phone, no rule


class CallOut(BaseModel):
    id: int
    call_id: str
    client: str | None
    number: str
    caller: str
    rule: str | None
    step: int | None
    answered_by: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    ring_seconds: float
    talk_seconds: float
    result: str | None
    media: dict[str, Any] | None = None  # the relay's per-side packets, loss and jitter
    transferred_from: int | None = None  # the id of the record this call was transferred from
    audio_loss_pct: float | None = Field(
        default=None, description="the worse direction's packet loss (relay count or RTCP)"
    )
    audio_jitter_ms: float | None = Field(
        default=None, description="the worse direction's interarrival jitter (ms)"
    )
    end_reason: str | None = Field(
        default=None,
        description="why the call ended: answered, hangup | session_expired | no_response | "
        "dialog_gone | no_audio; unanswered, caller_cancelled | no_answer | unreachable | busy | "
        "declined | unavailable | refused | rejected; either, server_stopped; null while it runs",
    )


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class TokenOut(BaseModel):
    name: str
    user: str
    created_at: datetime
    last_used: datetime | None
    token: str | None = Field(default=None, description="only in the answer that creates it")


class MessageIn(BaseModel):
    to: str = Field(min_length=1, max_length=64, examples=["anna"])
    text: str | None = Field(default=None, min_length=1, examples=["Bitte Angebot an Meier"])
    file: str | None = Field(default=None, description="id of an uploaded file to send")

    _text = field_validator("text")(_lines)


class FileRef(BaseModel):
    url: str
    name: str | None
    size: int | None
    content_type: str | None
    until: str | None


class MessageOut(BaseModel):
    id: str
    sender: str
    recipient: str
    created_at: datetime
    kind: str = Field(description="text or file")
    text: str | None
    files: list[FileRef]
    content_type: str
    state: str = Field(description="sending, queued, delivered, expired or failed")
    imdn_state: str | None = Field(description="what the recipient's client reported")
    origin: str = Field(description="sip or http")


class MessageSent(BaseModel):
    id: str
    sender: str
    recipient: str
    created_at: datetime
    content_type: str
    kind: str
    text: str | None
    state: str = Field(description="queued until a device of the recipient accepts it")
    file_id: str | None
    origin: str


class ConversationOut(BaseModel):
    peer: str
    created_at: datetime
    last_at: datetime
    last: MessageOut | None
    unread: int = 0  # messages from the peer not yet read (a device's report or opened)


# -- conversions -----------------------------------------------------------------------------


def _message_out(r: MessageRecord) -> MessageOut:
    view = content_view(r.content_type, r.body)
    return MessageOut(
        id=r.id, sender=r.sender, recipient=r.recipient, created_at=r.created_at,
        kind=view["kind"], text=view["text"], files=[FileRef(**f) for f in view["files"]],
        content_type=r.content_type, state=r.state, imdn_state=r.imdn_state, origin=r.origin,
    )  # fmt: skip


def _user_out(u: UserRecord) -> UserOut:
    return UserOut(
        name=u.name,
        role=u.role,
        client=u.client,
        display_name=u.display_name,
        mobile=u.mobile,
        created_at=u.created_at,
    )


def _trunk_out(t: Trunk) -> TrunkOut:
    return TrunkOut.model_validate(
        {
            "name": t.name,
            "host": t.host,
            "port": t.port,
            "transport": t.transport,
            "prefixes": list(t.prefixes),
            "username": t.username,
            "has_password": bool(t.password),
            "register": t.register,
            "inbound_auth": t.inbound.auth,
            "inbound_username": t.inbound.username,
            "call_policy": t.call_policy.to_json(),
        }
    )


def _client_out(info: ClientInfo) -> ClientOut:
    c = info.client
    return ClientOut(
        id=c.id,
        name=c.name,
        trade=c.trade,
        contact_person=c.contact_person,
        greeting=c.greeting,
        notes=c.notes,
        timezone=c.timezone,
        bundesland=c.bundesland,
        closure_days=list(c.closure_days),
        numbers=list(info.numbers),
        email=c.email,
        vip_callers=[
            VipCallerModel(number=v.number, name=v.name, remark=v.remark) for v in c.vip_callers
        ],  # fmt: skip
    )


def _call_out(r: CallRecord) -> CallOut:
    return CallOut(**{f: getattr(r, f) for f in CallOut.model_fields})


def _steps(steps: list[StepModel]) -> tuple[Step, ...]:
    out = []
    for i, s in enumerate(steps):
        try:
            targets = tuple(parse_target(t) for t in s.targets)
        except ValueError as exc:
            raise Invalid(f"default_steps[{i}].targets", str(exc)) from None
        out.append(Step(targets, s.timeout))
    return tuple(out)


# -- logins ----------------------------------------------------------------------------------


class _Logins:
    """Basic-auth and token checks, bounded in cost and memory (web/guard.py's LoginGate)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = LoginGate(
            self._check, store.verify_token, needs_code=SecondFactors(store).enabled
        )

    def _check(self, name: str, password: str) -> UserRecord | None:
        user = self.store.get_user(name.lower())
        if user is None:
            verify_password(_NOBODY, password)  # same cost as a wrong password: no enumeration
            return None
        return user if verify_password(user, password) else None

    async def user(self, request: Request) -> UserRecord:
        known = getattr(request.state, "user", None)  # authenticated before the body was read
        if isinstance(known, UserRecord):
            return known
        addr = request.client.host if request.client else "?"
        try:
            return await self.gate.authenticate(request.headers.get("authorization", ""), addr)
        except LoginRefused as exc:
            raise HTTPException(exc.status, exc.detail, headers=exc.headers) from None


async def current_user(request: Request) -> UserRecord:
    """The logged-in user (HTTP Basic or Bearer token); 401 otherwise."""
    logins: _Logins = request.app.state.logins
    return await logins.user(request)


async def current_actor(request: Request) -> Actor:
    """The logged-in user as the Actor the handlers authorize."""
    return Actor.of(await current_user(request))


Me = Annotated[UserRecord, Depends(current_user)]
Who = Annotated[Actor, Depends(current_actor)]


class _EventStream:
    """One Server-Sent Events response: events put from the server's loop are sent in order
    (at most 1,000 waiting; more are dropped), a comment every 15 s keeps the connection open,
    and the watch that feeds it ends when the client goes."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=1000)

    def put(self, event: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait((event, data))

    def response(
        self, request: Request, opening: str, stop: Callable[[], None]
    ) -> StreamingResponse:
        return StreamingResponse(
            sse.events(request, self.queue, opening, stop),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )


# -- the app ---------------------------------------------------------------------------------


def create_app(ctx: WebContext) -> FastAPI:
    """The HTTP API: each route turns the request into a handler call (heimbuero/app) as the
    logged-in user's Actor and the handler's answer into JSON. Other routers (file transfer,
    operations) are included with `app.include_router`."""
    store = ctx.store
    logins = _Logins(store)

    def realm() -> str:
        return ctx.domain or str(ctx.status().get("domain", "heimbuero"))

    handlers = App.build(
        store,
        realm,
        own_sip_address=ctx.own_sip_address,
        routing_state=ctx.routing_state,
        presence=ctx.presence,
        presence_watch=ctx.presence_watch,
        send_message=ctx.send_message,
        message_watch=ctx.message_watch,
        warning_watch=ctx.warning_watch,
        ring_watch=ctx.ring_watch,
        usage_watch=ctx.usage_watch,
        files=ctx.files,
        dictation=ctx.dictation,
        publish=ctx.publish,
        mail=ctx.mail,
        invoice_mail=ctx.invoice_mail,
        data_dir=ctx.data_dir,
        secret=ctx.secret,
        status=ctx.status,
        registrations=ctx.registrations,
    )
    app = FastAPI(
        title="heimbuero",
        summary="Management API of a self-hosted virtual office server",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,  # /api/docs: the console's page behind the login (web/console)
        redoc_url=None,
    )

    app.state.logins = logins
    app.state.handlers = handlers
    sse.install(app)  # set when the server stops: its event streams end (web/sse.py)
    # Authentication and size checks before any body is read (innermost of the middlewares,
    # so the route's exceptions still reach FastAPI's handlers).
    app.add_middleware(
        BodyGuard, gate=logins.gate, max_body=ctx.max_body, upload_max=ctx.max_upload
    )
    from heimbuero.web.portal import portal_routes

    app.include_router(portal_routes(handlers.forwarding, handlers.closures, current_actor))
    if ctx.files is not None and ctx.digest is not None and handlers.files is not None:
        from heimbuero.web.files import file_routes

        app.include_router(file_routes(ctx.files, ctx.digest, current_user, handlers.files))
    if handlers.dictation is not None:
        from heimbuero.web.dictation import dictation_routes

        app.include_router(dictation_routes(handlers.dictation, current_user))

    from heimbuero.web.console import mount_console

    mount_console(app, store, logins.gate, handlers, current_actor)  # the console at /

    from heimbuero.web.billing import billing_routes  # billing (issue 15)

    app.include_router(billing_routes(handlers.billing, handlers.invoices, current_actor))
    from heimbuero.web.agentstatus import agent_status_routes

    app.include_router(agent_status_routes(handlers.agents, current_actor))
    if handlers.greetings is not None:
        from heimbuero.web.greetings import greeting_routes

        app.include_router(greeting_routes(handlers.greetings, current_actor))
    if handlers.voicemails is not None:
        from heimbuero.web.voicemail import voicemail_routes

        app.include_router(voicemail_routes(handlers.voicemails, current_actor))

    # -- error mapping: the one place where handler errors become HTTP answers --

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _unprocessable(
            *(
                _problem(
                    list(e.get("loc", ())),
                    str(e.get("msg", "invalid")).removeprefix("Value error, "),
                )
                for e in exc.errors()
            )
        )

    app.add_exception_handler(AppError, app_error_response)
    app.add_exception_handler(StoreError, app_error_response)

    # -- server --

    @app.get("/healthz", tags=["server"])
    async def healthz() -> dict[str, str]:
        """Liveness probe (no login)."""
        return {"status": "ok"}

    @app.get("/api/status", tags=["server"])
    async def status(actor: Who) -> dict[str, Any]:
        """The SIP server's status (admins and agents)."""
        return handlers.server.status(actor)

    @app.get("/api/registrations", tags=["server"])
    async def registrations(actor: Who) -> dict[str, Any]:
        """Live SIP registrations; non-staff users see their own devices only."""
        return {"registrations": handlers.server.registrations(actor)}

    @app.get("/api/presence", tags=["presence"])
    async def presence(actor: Who) -> dict[str, Any]:
        """Presence of everyone the caller may see (the same rules as SIP SUBSCRIBE):
        `status` is online, offline or an activity (away, busy, on-the-phone, meeting,
        vacation)."""
        return {"presence": handlers.presence.visible(actor)}

    @app.get("/api/presence/stream", tags=["presence"])
    async def presence_stream(actor: Who, request: Request) -> StreamingResponse:
        """Server-Sent Events: first `snapshot` (all visible presence), then one `presence`
        event per change of someone the caller may see; a comment every 15 s keeps it open."""
        events = _EventStream()
        snapshot, stop = handlers.presence.watch(actor, lambda item: events.put("presence", item))
        opening = f"event: snapshot\ndata: {json.dumps(snapshot)}\n\n"
        return events.response(request, opening, stop)

    @app.get("/api/events", tags=["server"])
    async def staff_events(actor: Who, request: Request) -> StreamingResponse:
        """Server-Sent Events for provider staff: one `warning` event per call out refused by
        a cap (`{"kind": "call_out_cap", "client", "trunk", "number", "status", "reason",
        "warning", "at"}`); a comment every 15 s keeps it open."""
        events = _EventStream()
        stop = handlers.warnings.watch(actor, lambda item: events.put("warning", item))
        return events.response(request, ": staff events\n\n", stop)

    @app.get("/api/me", tags=["users"])
    def me(user: Me) -> UserOut:
        """The logged-in user."""
        return _user_out(user)

    # -- messages --

    @app.get("/api/conversations", tags=["messages"])
    def list_conversations(actor: Who) -> list[ConversationOut]:
        """The caller's conversations, most recent first, each with its last message and how
        many of the peer's messages are unread."""
        unread = handlers.messages.unread(actor)
        return [
            ConversationOut(
                peer=c.peer,
                created_at=c.created_at,
                last_at=c.last_at,
                last=_message_out(c.last) if c.last is not None else None,
                unread=unread.get(c.peer, 0),
            )  # fmt: skip
            for c in handlers.messages.conversations(actor)
        ]

    @app.post("/api/conversations/{peer}/read", tags=["messages"])
    async def read_conversation(peer: str, actor: Who) -> dict[str, int]:
        """The caller read the conversation: the peer's messages become `displayed` (as a
        device's IMDN report would make them; the peer's stream gets a `state` event, and a
        peer's phone that asked for display reports gets one). `{"read": N}`: how many
        changed."""
        return {"read": await handlers.messages.read(actor, peer)}

    @app.get("/api/conversations/{peer}/messages", tags=["messages"])
    def conversation_messages(
        peer: str,
        actor: Who,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        before: Annotated[str | None, Query(description="a message id: page back from it")] = None,
    ) -> list[MessageOut]:
        """The caller's history with `peer`, oldest first (delivery reports are folded into
        the messages they report on)."""
        rows = handlers.messages.history(actor, peer, limit, before)
        return [_message_out(r) for r in handlers.messages.shown(rows)]

    @app.delete("/api/conversations/{peer}", status_code=204, tags=["messages"])
    def delete_conversation(peer: str, actor: Who) -> None:
        """Delete the caller's conversation with `peer` for both, with the files its messages
        shared (staff only: the provider keeps its clients' records)."""
        handlers.messages.delete(actor, peer)

    @app.post("/api/messages", status_code=201, tags=["messages"], response_model=MessageSent)
    async def send_message(body: MessageIn, actor: Who) -> Any:
        """Send a text or an uploaded file to a user: it reaches the recipient's SIP devices
        like a MESSAGE from the caller, or waits for them (state `queued`)."""
        if ctx.send_message is None:
            raise Unavailable("messaging is not available")
        ctype, payload = await run_in_threadpool(handlers.messages.content, body.text, body.file)
        return await handlers.messages.send(actor, body.to, ctype, payload)

    @app.get("/api/messages/stream", tags=["messages"])
    async def message_stream(actor: Who, request: Request) -> StreamingResponse:
        """Server-Sent Events: `message` for each new message the caller sends or receives
        (over SIP or HTTP), `state` when its delivery state changes; a comment every 15 s."""
        events = _EventStream()
        stop = handlers.messages.watch(actor, events.put)
        return events.response(request, ": stream of messages\n\n", stop)

    # -- provider --

    @app.get("/api/provider", tags=["provider"])
    def get_provider(actor: Who) -> ProviderModel:
        p = handlers.provider.get(actor)
        return ProviderModel(
            name=p.name or "-",
            address=p.address,
            vat_id=p.vat_id,
            iban=p.iban,
            bic=p.bic,
            default_steps=[StepModel(targets=s.target_texts(), timeout=s.timeout)
                           for s in p.default_steps],
            country_code=p.country_code,
        )  # fmt: skip

    @app.put("/api/provider", tags=["provider"])
    def put_provider(body: ProviderModel, actor: Who) -> ProviderModel:
        handlers.provider.set(
            actor,
            Provider(
                name=body.name,
                address=body.address,
                vat_id=body.vat_id,
                iban=body.iban,
                bic=body.bic,
                default_steps=_steps(body.default_steps),
                country_code=body.country_code,
            ),
        )
        return body

    # -- clients --

    @app.get("/api/clients", tags=["clients"])
    def list_clients(actor: Who) -> list[ClientOut]:
        """Every client (staff) or your own business."""
        return [_client_out(c) for c in handlers.clients.list(actor)]

    @app.post("/api/clients", status_code=201, tags=["clients"])
    def create_client(body: ClientCreate, actor: Who) -> ClientOut:
        fields = body.model_dump(exclude_none=True)
        return _client_out(handlers.clients.create(actor, fields.pop("id"), **fields))

    @app.get("/api/clients/{client_id}", tags=["clients"])
    def get_client(client_id: str, actor: Who) -> ClientOut:
        return _client_out(handlers.clients.get(actor, client_id))

    @app.patch("/api/clients/{client_id}", tags=["clients"])
    def patch_client(client_id: str, body: ClientFields, actor: Who) -> ClientOut:
        changes = body.model_dump(exclude_none=True)
        return _client_out(handlers.clients.update(actor, client_id, **changes))

    @app.delete("/api/clients/{client_id}", status_code=204, tags=["clients"])
    def delete_client(client_id: str, actor: Who) -> None:
        """Remove a client with its numbers, rules and override (call records stay)."""
        handlers.clients.remove(actor, client_id)

    # -- numbers --

    @app.get("/api/numbers", tags=["numbers"])
    def list_numbers(actor: Who, client: str | None = None) -> list[NumberModel]:
        """Numbers of every client (staff) or of your own business."""
        return [
            NumberModel(number=n.e164, client=n.client, dictation=n.dictation)
            for n in handlers.numbers.list(actor, client)
        ]

    @app.post("/api/numbers", status_code=201, tags=["numbers"])
    def add_number(body: NumberModel, actor: Who) -> NumberModel:
        n = handlers.numbers.add(actor, body.number, body.client, body.dictation)
        return NumberModel(number=n.e164, client=n.client, dictation=n.dictation)

    @app.patch("/api/numbers/{number}", tags=["numbers"])
    def set_number(number: str, body: NumberPatch, actor: Who) -> NumberModel:
        """Make a number the client's dictation number, or back a number for calls."""
        n = handlers.numbers.set_dictation(actor, number, body.dictation)
        return NumberModel(number=n.e164, client=n.client, dictation=n.dictation)

    @app.delete("/api/numbers/{number}", status_code=204, tags=["numbers"])
    def remove_number(number: str, actor: Who) -> None:
        handlers.numbers.remove(actor, number)

    # -- users --

    @app.get("/api/users", tags=["users"])
    def list_users(actor: Who) -> list[UserOut]:
        """Every user (staff) or the users of your own business."""
        return [_user_out(u) for u in handlers.users.list(actor)]

    @app.post("/api/users", status_code=201, tags=["users"])
    def create_user(body: UserCreate, actor: Who) -> UserOut:
        return _user_out(
            handlers.users.create(
                actor,
                body.name,
                body.password,
                body.role,
                body.client,
                body.display_name,
                body.mobile,
            )  # fmt: skip
        )

    @app.patch("/api/users/{name}", tags=["users"])
    def patch_user(name: str, body: UserFields, actor: Who) -> UserOut:
        """Set a user's client, display name and mobile (fields left out stay)."""
        return _user_out(handlers.users.update(actor, name, **body.model_dump(exclude_unset=True)))

    @app.put("/api/users/{name}/password", status_code=204, tags=["users"])
    def set_password(name: str, body: PasswordModel, actor: Who) -> None:
        """Set a password (admins: anyone's; everybody: their own)."""
        handlers.users.set_password(actor, name, body.password)

    @app.delete("/api/users/{name}", status_code=204, tags=["users"])
    def delete_user(name: str, actor: Who) -> None:
        handlers.users.remove(actor, name)

    @app.delete("/api/users/{name}/totp", status_code=204, tags=["users"])
    def reset_second_factor(name: str, actor: Who) -> None:
        """Take a user's second factor (TOTP) away, e.g. after a lost phone (admins); the
        user logs in with the password alone until he switches it on again in the console."""
        handlers.second_factor.reset(actor, name)

    # -- groups --

    def group_out(g: Group) -> GroupModel:
        return GroupModel(name=g.name, strategy=g.strategy, members=list(g.members))

    @app.get("/api/groups", tags=["groups"])
    def list_groups(actor: Who) -> list[GroupModel]:
        return [group_out(g) for g in handlers.groups.list(actor)]

    @app.post("/api/groups", status_code=201, tags=["groups"])
    def create_group(body: GroupModel, actor: Who) -> GroupModel:
        return group_out(handlers.groups.create(actor, body.name, body.strategy, body.members))

    @app.patch("/api/groups/{name}", tags=["groups"])
    def patch_group(name: str, body: GroupPatch, actor: Who) -> GroupModel:
        return group_out(handlers.groups.update(actor, name, body.strategy, body.members))

    @app.delete("/api/groups/{name}", status_code=204, tags=["groups"])
    def delete_group(name: str, actor: Who) -> None:
        """Remove a group; 409 while rules or the provider's default plan ring it."""
        handlers.groups.remove(actor, name)

    # -- trunks --

    @app.get("/api/trunks", tags=["trunks"])
    def list_trunks(actor: Who) -> list[TrunkOut]:
        """Carrier trunks (passwords are never returned)."""
        return [_trunk_out(t) for t in handlers.trunks.list(actor)]

    @app.post("/api/trunks", status_code=201, tags=["trunks"])
    def create_trunk(body: TrunkCreate, actor: Who) -> TrunkOut:
        """Add a trunk; 422 when it points at this server, or registers to the carrier
        (`register`) without `username` and `password`."""
        fields = body.model_dump(exclude_none=True, by_alias=True)
        return _trunk_out(handlers.trunks.create(actor, fields.pop("name"), **fields))

    @app.patch("/api/trunks/{name}", tags=["trunks"])
    def patch_trunk(name: str, body: TrunkFields, actor: Who) -> TrunkOut:
        changes = body.model_dump(exclude_unset=True, by_alias=True)
        return _trunk_out(handlers.trunks.update(actor, name, **changes))

    @app.delete("/api/trunks/{name}", status_code=204, tags=["trunks"])
    def delete_trunk(name: str, actor: Who) -> None:
        handlers.trunks.remove(actor, name)

    # -- call policies (calls out and toll fraud) --

    @app.get("/api/clients/{client_id}/call-policy", tags=["call policy"])
    def get_call_policy(client_id: str, actor: Who) -> dict[str, Any]:
        """What the client may call out to, its caps and its approved forwarding numbers
        (README "Calls out and toll fraud"); `{}` means the safe defaults."""
        return handlers.clients.call_policy(actor, client_id).to_json()

    @app.put("/api/clients/{client_id}/call-policy", tags=["call policy"])
    def put_call_policy(client_id: str, body: dict[str, Any], actor: Who) -> dict[str, Any]:
        """Replace the client's call policy (admins only)."""
        return handlers.clients.change_call_policy(actor, client_id, lambda _old: body).to_json()

    @app.post("/api/clients/{client_id}/approved-numbers", status_code=201, tags=["call policy"])
    def approve_number(client_id: str, body: ApprovedNumber, actor: Who) -> dict[str, Any]:
        """Approve an external number for the client's forwarding rules (admins only); 422
        when the client's or the trunk's destination policy refuses it."""
        return handlers.clients.approve_number(actor, client_id, body.number).to_json()

    @app.delete(
        "/api/clients/{client_id}/approved-numbers/{number}", status_code=204,
        tags=["call policy"],
    )  # fmt: skip
    def withdraw_number(client_id: str, number: str, actor: Who) -> None:
        """Withdraw an approval (admins only); rules that still forward there stop
        validating and their numbers fall back to the provider's default plan."""
        handlers.clients.withdraw_number(actor, client_id, number)

    @app.put("/api/trunks/{name}/call-policy", tags=["call policy"])
    def put_trunk_policy(name: str, body: dict[str, Any], actor: Who) -> dict[str, Any]:
        """Replace what a trunk carries (classes, prefixes, `max_concurrent`; admins only)."""
        return handlers.trunks.set_call_policy(actor, name, body).call_policy.to_json()

    # -- rules --

    def with_version(document: dict[str, Any]) -> JSONResponse:
        return JSONResponse(document, headers={"ETag": f'"{document_version(document)}"'})

    @app.get("/api/clients/{client_id}/rules", tags=["rules"])
    def get_rules(client_id: str, actor: Who) -> JSONResponse:
        """The client's rules document (docs/ROUTING.md) as JSON; its version in `ETag`."""
        return with_version(handlers.rules.document(actor, client_id))

    @app.put("/api/clients/{client_id}/rules", tags=["rules"])
    def put_rules(
        client_id: str,
        document: dict[str, Any],
        actor: Who,
        if_match: Annotated[
            str | None,
            Header(
                max_length=200,
                description="the ETag of the document this edit started from; another "
                "version is stored now: 412 and nothing changes. Left out: replaced regardless",
            ),
        ] = None,
    ) -> JSONResponse:
        """Replace the client's rules. An invalid document changes nothing and is answered
        422 with every problem: `{"loc": "numbers.+49….rules[2].when.time", "msg": …}`.
        With `If-Match` (the `ETag` of GET), a document somebody changed meanwhile is not
        overwritten: 412. The answer carries the new document and its `ETag`."""
        expected = rules_version_of(if_match)
        handlers.rules.replace(actor, client_id, document, expected=expected)
        return with_version(handlers.rules.document(actor, client_id))

    # -- overrides --

    def override_out(s: OverrideState) -> OverrideOut:
        o = s.override
        return OverrideOut(client=o.client, target=o.target, until=o.until, active=s.active)

    @app.get("/api/clients/{client_id}/override", tags=["overrides"])
    def get_override(client_id: str, actor: Who) -> OverrideOut:
        return override_out(handlers.overrides.get(actor, client_id))

    @app.put("/api/clients/{client_id}/override", tags=["overrides"])
    def put_override(client_id: str, body: OverrideIn, actor: Who) -> OverrideOut:
        """Set the override (like *21 / *22 from the client's phone)."""
        return override_out(handlers.overrides.set(actor, client_id, body.target, body.until))

    @app.delete("/api/clients/{client_id}/override", status_code=204, tags=["overrides"])
    def delete_override(client_id: str, actor: Who) -> None:
        """Cancel the override (like #21 / #22)."""
        handlers.overrides.clear(actor, client_id)

    # -- routing --

    @app.get("/api/route/simulate", tags=["routing"])
    def simulate(
        actor: Who,
        number: Annotated[str, Query(examples=["+49891234567"])],
        at: Annotated[
            str | None, Query(description="ISO 8601; without offset: the client's local time")
        ] = None,
        caller: Annotated[
            str | None,
            Query(max_length=64, description="the calling number as typed; default: unknown"),
        ] = None,
    ) -> PlanOut:
        """Which rule a call to `number` from `caller` matches (now or `at`) and the steps it
        rings."""
        return PlanOut(**handlers.simulator.simulate(actor, number, at, caller).to_json())

    # -- call records --

    @app.get("/api/calls", tags=["calls"])
    def list_calls(
        actor: Who,
        client: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        since: Annotated[
            datetime | None, Query(description="started at or after (ISO 8601; no offset: UTC)")
        ] = None,
        until: Annotated[
            datetime | None, Query(description="started before (ISO 8601; no offset: UTC)")
        ] = None,
        offset: Annotated[
            int, Query(ge=0, le=MAX_OFFSET, description="skip this many newer ones")
        ] = 0,
    ) -> list[CallOut]:
        """Call records, newest first: every client's (staff) or your own business's; a
        client without records gives an empty list, an unknown one (or another business's)
        404."""
        records = handlers.calls.list(actor, client, limit, since=since, until=until, offset=offset)
        return [_call_out(r) for r in records]

    # -- tokens --

    @app.get("/api/tokens", tags=["tokens"])
    def list_tokens(actor: Who) -> list[TokenOut]:
        """Your API tokens (admins: everybody's)."""
        return [
            TokenOut(name=t.name, user=t.user, created_at=t.created_at, last_used=t.last_used)
            for t in handlers.tokens.list(actor)
        ]

    @app.post("/api/tokens", status_code=201, tags=["tokens"])
    def create_token(body: TokenCreate, actor: Who) -> TokenOut:
        """A new API token for yourself; the token is in this answer only."""
        t, secret = handlers.tokens.create(actor, actor.name, body.name)
        return TokenOut(name=t.name, user=t.user, created_at=t.created_at, last_used=None,
                        token=secret)  # fmt: skip

    @app.delete("/api/tokens/{name}", status_code=204, tags=["tokens"])
    def revoke_token(name: str, actor: Who) -> None:
        handlers.tokens.revoke(actor, actor.name, name)

    return app
