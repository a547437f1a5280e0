"""The HTTP service: liveness, server status, and the management API (FastAPI).

OpenAPI is published at /api/openapi.json, interactive docs at /api/docs. Every route but the
liveness probe needs a login: HTTP Basic against the user's argon2 hash, or an API token as
`Authorization: Bearer TOKEN` (`heimbuero token create`). Who may do what:

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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from heimbuero.domain.model import Client, Group, Override, Provider, Step, Trunk
from heimbuero.office import accounts, callpolicy, directory
from heimbuero.office.accounts import credentials, verify_password
from heimbuero.office.files import FileService
from heimbuero.office.messaging import FILE_TRANSFER, content_view
from heimbuero.office.routing import RoutingState
from heimbuero.office.rules_doc import RulesError, dump_rules_document
from heimbuero.services import trunks
from heimbuero.services.messaging import MessageRejected
from heimbuero.sip.auth import DigestAuthenticator
from heimbuero.store.db import (
    AlreadyExists,
    CallRecord,
    InUse,
    NotFound,
    Store,
    StoreError,
    UserRecord,
)
from heimbuero.store.messages import MessageRecord
from heimbuero.web.guard import BodyGuard, LoginGate, LoginRefused

STAFF_ROLES = frozenset({"admin", "agent"})
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
    # largest body of an API request, and of a file upload (multipart, to /api/files)
    max_body: int = 256 * 1024
    max_upload: int = 500 * 1024 * 1024 + 64 * 1024


# -- errors ----------------------------------------------------------------------------------


def _problem(loc: list[Any] | str, msg: str) -> dict[str, Any]:
    field = loc if isinstance(loc, str) else ".".join(str(p) for p in loc)
    return {"loc": loc, "field": field, "msg": msg}


def _unprocessable(*problems: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"detail": list(problems)}, 422)


def _forbidden(msg: str = "not allowed for your role") -> HTTPException:
    return HTTPException(403, msg)


class _InvalidField(Exception):
    def __init__(self, loc: list[Any], msg: str) -> None:
        self.loc, self.msg = loc, msg


def _check(loc: list[Any], fn: Callable[..., Any], *args: Any) -> Any:
    """Run a validator; its error becomes a 422 naming `loc`."""
    try:
        return fn(*args)
    except (directory.DirectoryError, accounts.AccountError) as exc:
        raise _InvalidField(loc, str(exc)) from None


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

    _texts = field_validator("name", "vat_id", "iban", "bic")(_line)
    _address = field_validator("address")(_lines)


class ClientFields(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    trade: str | None = None
    contact_person: str | None = None
    greeting: str | None = None
    notes: str | None = None
    timezone: str | None = None
    bundesland: str | None = None
    closure_days: list[date] | None = None

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


class NumberModel(BaseModel):
    number: str = Field(examples=["+49891234567"])
    client: str = Field(examples=["mueller"])

    @field_validator("number")
    @classmethod
    def _e164(cls, v: str) -> str:
        return directory.validate_e164(v)


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

    @field_validator("mobile")
    @classmethod
    def _mobile(cls, v: str | None) -> str | None:
        return directory.validate_e164(v, "mobile") if v else None


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
        return None if v is None else directory.validate_transport(v)

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
    number: str = Field(examples=["+491701111111"])

    @field_validator("number")
    @classmethod
    def _e164(cls, v: str) -> str:
        return directory.validate_e164(v)


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


# -- conversions -----------------------------------------------------------------------------


def _message_out(r: MessageRecord) -> MessageOut:
    view = content_view(r.content_type, r.body)
    return MessageOut(
        id=r.id, sender=r.sender, recipient=r.recipient, created_at=r.created_at,
        kind=view["kind"], text=view["text"], files=[FileRef(**f) for f in view["files"]],
        content_type=r.content_type, state=r.state, imdn_state=r.imdn_state, origin=r.origin,
    )  # fmt: skip


_HIDDEN_KINDS = ("imdn", "composing")  # reports show as imdn_state of the message they concern


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


def _inbound_change(fields: dict[str, Any], domain: str) -> None:
    """Turn the inbound_* fields of a trunk body into the trunk's `inbound` value."""
    auth = fields.pop("inbound_auth", None)
    username = fields.pop("inbound_username", None)
    password = fields.pop("inbound_password", None)
    if auth is None:
        if username is not None or password is not None:
            raise _InvalidField(["body", "inbound_auth"], "required with inbound credentials")
        return
    try:
        fields["inbound"] = trunks.inbound_auth(auth, username, password, domain)
    except ValueError as exc:
        raise _InvalidField(["body", "inbound_auth"], str(exc)) from None


def _call_out(r: CallRecord) -> CallOut:
    return CallOut(**{f: getattr(r, f) for f in CallOut.model_fields})


def _steps(steps: list[StepModel]) -> tuple[Step, ...]:
    return tuple(Step(tuple(s.targets), s.timeout) for s in steps)


# -- logins ----------------------------------------------------------------------------------


class _Logins:
    """Basic-auth and token checks, bounded in cost and memory (web/guard.py's LoginGate)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = LoginGate(self._check, store.verify_token)

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


Me = Annotated[UserRecord, Depends(current_user)]


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
        async def events() -> AsyncIterator[str]:
            try:
                yield opening
                while not await request.is_disconnected():
                    try:
                        event, data = await asyncio.wait_for(self.queue.get(), 15.0)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
            finally:
                stop()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )


# -- the app ---------------------------------------------------------------------------------


def create_app(ctx: WebContext) -> FastAPI:
    store = ctx.store
    logins = _Logins(store)
    app = FastAPI(
        title="heimbuero",
        summary="Management API of a self-hosted virtual office server",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )

    app.state.logins = logins
    # Authentication and size checks before any body is read (innermost of the middlewares,
    # so the route's exceptions still reach FastAPI's handlers).
    app.add_middleware(
        BodyGuard, gate=logins.gate, max_body=ctx.max_body, upload_max=ctx.max_upload
    )
    if ctx.files is not None and ctx.digest is not None:
        from heimbuero.web.files import file_routes

        app.include_router(file_routes(ctx.files, ctx.digest, current_user))

    # -- error mapping --

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

    @app.exception_handler(_InvalidField)
    async def _invalid(request: Request, exc: _InvalidField) -> JSONResponse:
        return _unprocessable(_problem(exc.loc, exc.msg))

    @app.exception_handler(RulesError)
    async def _rules(request: Request, exc: RulesError) -> JSONResponse:
        return _unprocessable(*(_problem(path or "(document)", msg) for path, msg in exc.problems))

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        code = 404 if isinstance(exc, NotFound) else 409
        if not isinstance(exc, NotFound | AlreadyExists | InUse):
            code = 400
        return JSONResponse({"detail": str(exc)}, code)

    # -- authorization helpers --

    def require_admin(user: UserRecord) -> None:
        if user.role != "admin":
            raise _forbidden("only admins may do this")

    def require_staff(user: UserRecord) -> None:
        if user.role not in STAFF_ROLES:
            raise _forbidden("only admins and agents may do this")

    def client_or_404(client_id: str) -> Client:
        c = store.get_client(client_id)
        if c is None:
            raise HTTPException(404, f"no such client: {client_id!r}")
        return c

    def readable_client(user: UserRecord, client_id: str) -> Client:
        if user.role not in STAFF_ROLES and user.client != client_id:
            # Another business's id and a missing one look the same: no probing for clients.
            raise HTTPException(404, f"no such client: {client_id!r}")
        return client_or_404(client_id)

    def rules_writable_client(user: UserRecord, client_id: str) -> Client:
        c = readable_client(user, client_id)
        if callpolicy.may_change_rules(user.role, user.client, c.id):
            return c
        raise _forbidden("only admins and the client itself may change its rules")

    def override_writable_client(user: UserRecord, client_id: str) -> Client:
        c = readable_client(user, client_id)
        if callpolicy.may_change_forwarding(user.role, user.client, c.id):
            return c
        raise _forbidden("only staff and the client itself may change its override")

    def client_out(c: Client) -> ClientOut:
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
            numbers=[n.e164 for n in store.list_numbers(c.id)],
        )

    def realm() -> str:
        return ctx.domain or str(ctx.status().get("domain", "heimbuero"))

    # -- server --

    @app.get("/healthz", tags=["server"])
    async def healthz() -> dict[str, str]:
        """Liveness probe (no login)."""
        return {"status": "ok"}

    @app.get("/api/status", tags=["server"])
    async def status(user: Me) -> dict[str, Any]:
        """The SIP server's status (admins and agents)."""
        if user.role not in STAFF_ROLES:
            raise _forbidden("only admins and agents may see the server status")
        return ctx.status()

    @app.get("/api/registrations", tags=["server"])
    async def registrations(user: Me) -> dict[str, Any]:
        """Live SIP registrations; non-staff users see their own devices only."""
        rows = ctx.registrations()
        if user.role not in STAFF_ROLES:
            rows = [r for r in rows if r["user"] == user.name]
        return {"registrations": rows}

    @app.get("/api/presence", tags=["presence"])
    async def presence(user: Me) -> dict[str, Any]:
        """Presence of everyone the caller may see (the same rules as SIP SUBSCRIBE):
        `status` is online, offline or an activity (away, busy, on-the-phone, meeting,
        vacation)."""
        if ctx.presence is None:
            raise HTTPException(503, "presence is not available")
        return {"presence": ctx.presence(user.name)}

    @app.get("/api/presence/stream", tags=["presence"])
    async def presence_stream(user: Me, request: Request) -> StreamingResponse:
        """Server-Sent Events: first `snapshot` (all visible presence), then one `presence`
        event per change of someone the caller may see; a comment every 15 s keeps it open."""
        if ctx.presence is None or ctx.presence_watch is None:
            raise HTTPException(503, "presence is not available")
        events = _EventStream()
        stop = ctx.presence_watch(user.name, lambda item: events.put("presence", item))
        opening = f"event: snapshot\ndata: {json.dumps(ctx.presence(user.name))}\n\n"
        return events.response(request, opening, stop)

    @app.get("/api/events", tags=["server"])
    async def staff_events(user: Me, request: Request) -> StreamingResponse:
        """Server-Sent Events for provider staff: one `warning` event per call out refused by
        a cap (`{"kind": "call_out_cap", "client", "trunk", "number", "status", "reason",
        "warning", "at"}`); a comment every 15 s keeps it open."""
        require_staff(user)
        if ctx.warning_watch is None:
            raise HTTPException(503, "events are not available")
        events = _EventStream()
        stop = ctx.warning_watch(lambda item: events.put("warning", item))
        return events.response(request, ": staff events\n\n", stop)

    @app.get("/api/me", tags=["users"])
    def me(user: Me) -> UserOut:
        """The logged-in user."""
        return _user_out(user)

    # -- messages --

    @app.get("/api/conversations", tags=["messages"])
    def list_conversations(user: Me) -> list[ConversationOut]:
        """The caller's conversations, most recent first, each with its last message."""
        return [
            ConversationOut(
                peer=c.peer,
                created_at=c.created_at,
                last_at=c.last_at,
                last=_message_out(c.last) if c.last is not None else None,
            )  # fmt: skip
            for c in store.list_conversations(user.name)
        ]

    @app.get("/api/conversations/{peer}/messages", tags=["messages"])
    def conversation_messages(
        peer: str,
        user: Me,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        before: Annotated[str | None, Query(description="a message id: page back from it")] = None,
    ) -> list[MessageOut]:
        """The caller's history with `peer`, oldest first (delivery reports are folded into
        the messages they report on)."""
        rows = store.conversation_messages(user.name, peer.lower(), limit, before)
        if rows is None:
            raise HTTPException(404, "no conversation with this user")
        out = [_message_out(r) for r in rows]
        return [m for m in out if m.kind not in _HIDDEN_KINDS]

    @app.delete("/api/conversations/{peer}", status_code=204, tags=["messages"])
    def delete_conversation(peer: str, user: Me) -> None:
        """Delete the caller's conversation with `peer` for both, with the files its messages
        shared (staff only: the provider keeps its clients' records)."""
        require_staff(user)
        file_ids = store.delete_conversation(user.name, peer.lower())
        if file_ids is None:
            raise HTTPException(404, "no conversation with this user")
        if ctx.files is not None:
            ctx.files.delete(file_ids)

    @app.post("/api/messages", status_code=201, tags=["messages"], response_model=MessageSent)
    async def send_message(body: MessageIn, user: Me) -> Any:
        """Send a text or an uploaded file to a user: it reaches the recipient's SIP devices
        like a MESSAGE from the caller, or waits for them (state `queued`)."""
        if ctx.send_message is None:
            raise HTTPException(503, "messaging is not available")
        if (body.text is None) == (body.file is None):
            return _unprocessable(_problem(["body"], "give exactly one of text and file"))
        if body.text is not None:
            ctype, payload = "text/plain;charset=UTF-8", body.text.encode()
        else:
            info = None
            if ctx.files is not None and body.file is not None:
                info = await run_in_threadpool(ctx.files.file_info_xml, body.file)
            if info is None:
                return _unprocessable(_problem(["body", "file"], "no such file"))
            ctype, payload = FILE_TRANSFER, info
        try:
            return await ctx.send_message(user.name, body.to.lower(), ctype, payload)
        except MessageRejected as exc:
            # SIP answers mapped: 400 invalid, 503 rate limit, 480 the recipient's queue full
            status = {400: 422, 503: 429, 480: 409}.get(exc.status, exc.status)
            headers = {"Retry-After": "60"} if status == 429 else None
            raise HTTPException(status, exc.reason, headers=headers) from None

    @app.get("/api/messages/stream", tags=["messages"])
    async def message_stream(user: Me, request: Request) -> StreamingResponse:
        """Server-Sent Events: `message` for each new message the caller sends or receives
        (over SIP or HTTP), `state` when its delivery state changes; a comment every 15 s."""
        if ctx.message_watch is None:
            raise HTTPException(503, "messaging is not available")
        events = _EventStream()
        stop = ctx.message_watch(user.name, events.put)
        return events.response(request, ": stream of messages\n\n", stop)

    # -- provider --

    @app.get("/api/provider", tags=["provider"])
    def get_provider(user: Me) -> ProviderModel:
        require_staff(user)
        p = store.get_provider()
        return ProviderModel(
            name=p.name or "-",
            address=p.address,
            vat_id=p.vat_id,
            iban=p.iban,
            bic=p.bic,
            default_steps=[StepModel(targets=list(s.targets), timeout=s.timeout)
                           for s in p.default_steps],
        )  # fmt: skip

    @app.put("/api/provider", tags=["provider"])
    def put_provider(body: ProviderModel, user: Me) -> ProviderModel:
        require_admin(user)
        store.set_provider(
            Provider(
                name=body.name,
                address=body.address,
                vat_id=body.vat_id,
                iban=body.iban,
                bic=body.bic,
                default_steps=_steps(body.default_steps),
            )
        )
        return body

    # -- clients --

    @app.get("/api/clients", tags=["clients"])
    def list_clients(user: Me) -> list[ClientOut]:
        """Every client (staff) or your own business."""
        clients = store.list_clients()
        if user.role not in STAFF_ROLES:
            clients = [c for c in clients if c.id == user.client]
        return [client_out(c) for c in clients]

    @app.post("/api/clients", status_code=201, tags=["clients"])
    def create_client(body: ClientCreate, user: Me) -> ClientOut:
        require_admin(user)
        fields = body.model_dump(exclude_none=True)
        fields["closure_days"] = tuple(fields.get("closure_days", ()))
        return client_out(store.add_client(Client(**fields)))

    @app.get("/api/clients/{client_id}", tags=["clients"])
    def get_client(client_id: str, user: Me) -> ClientOut:
        return client_out(readable_client(user, client_id))

    @app.patch("/api/clients/{client_id}", tags=["clients"])
    def patch_client(client_id: str, body: ClientFields, user: Me) -> ClientOut:
        require_admin(user)
        client_or_404(client_id)
        changes = body.model_dump(exclude_none=True)
        if "closure_days" in changes:
            changes["closure_days"] = tuple(changes["closure_days"])
        return client_out(store.update_client(client_id, **changes))

    @app.delete("/api/clients/{client_id}", status_code=204, tags=["clients"])
    def delete_client(client_id: str, user: Me) -> None:
        """Remove a client with its numbers, rules and override (call records stay)."""
        require_admin(user)
        if not store.remove_client(client_id):
            raise HTTPException(404, f"no such client: {client_id!r}")

    # -- numbers --

    @app.get("/api/numbers", tags=["numbers"])
    def list_numbers(user: Me, client: str | None = None) -> list[NumberModel]:
        """Numbers of every client (staff) or of your own business."""
        if client is not None:
            readable_client(user, client)
        elif user.role not in STAFF_ROLES:
            if user.client is None:
                return []
            client = user.client
        return [NumberModel(number=n.e164, client=n.client) for n in store.list_numbers(client)]

    @app.post("/api/numbers", status_code=201, tags=["numbers"])
    def add_number(body: NumberModel, user: Me) -> NumberModel:
        require_admin(user)
        client_or_404(body.client)
        store.add_number(body.number, body.client)
        return body

    @app.delete("/api/numbers/{number}", status_code=204, tags=["numbers"])
    def remove_number(number: str, user: Me) -> None:
        require_admin(user)
        e164 = _check(["path", "number"], directory.validate_e164, number)
        if not store.remove_number(e164):
            raise HTTPException(404, f"no such number: {e164!r}")

    # -- users --

    @app.get("/api/users", tags=["users"])
    def list_users(user: Me) -> list[UserOut]:
        """Every user (staff) or the users of your own business."""
        users = store.list_users()
        if user.role not in STAFF_ROLES:
            users = [u for u in users if u.client is not None and u.client == user.client]
        return [_user_out(u) for u in users]

    @app.post("/api/users", status_code=201, tags=["users"])
    def create_user(body: UserCreate, user: Me) -> UserOut:
        require_admin(user)
        name = _check(["body", "name"], accounts.validate_name, body.name)
        role = _check(["body", "role"], accounts.validate_role, body.role)
        _check(["body", "password"], accounts.check_password, name, body.password)
        if body.client is not None:
            client_or_404(body.client)
        accounts.add_user(store, realm(), name, body.password, role)
        return _user_out(
            store.user_update(
                name, client=body.client, display_name=body.display_name, mobile=body.mobile
            )
        )

    @app.patch("/api/users/{name}", tags=["users"])
    def patch_user(name: str, body: UserFields, user: Me) -> UserOut:
        """Set a user's client, display name and mobile (fields left out stay)."""
        require_admin(user)
        changes = body.model_dump(exclude_unset=True)
        if changes.get("client") is not None:
            client_or_404(changes["client"])
        return _user_out(store.user_update(name, **changes))

    @app.put("/api/users/{name}/password", status_code=204, tags=["users"])
    def set_password(name: str, body: PasswordModel, user: Me) -> None:
        """Set a password (admins: anyone's; everybody: their own)."""
        if user.role != "admin" and user.name != name:
            raise _forbidden("you may only change your own password")
        if store.get_user(name) is None:
            raise HTTPException(404, f"no such user: {name!r}")
        _check(["body", "password"], accounts.check_password, name, body.password)
        accounts.set_password(store, realm(), name, body.password)

    @app.delete("/api/users/{name}", status_code=204, tags=["users"])
    def delete_user(name: str, user: Me) -> None:
        require_admin(user)
        if not store.remove_user(name):
            raise HTTPException(404, f"no such user: {name!r}")

    # -- groups --

    @app.get("/api/groups", tags=["groups"])
    def list_groups(user: Me) -> list[GroupModel]:
        require_staff(user)
        return [
            GroupModel(name=g.name, strategy=g.strategy, members=list(g.members))
            for g in store.list_groups()
        ]

    @app.post("/api/groups", status_code=201, tags=["groups"])
    def create_group(body: GroupModel, user: Me) -> GroupModel:
        require_admin(user)
        g = store.add_group(Group(body.name, body.strategy, tuple(body.members)))
        return GroupModel(name=g.name, strategy=g.strategy, members=list(g.members))

    @app.patch("/api/groups/{name}", tags=["groups"])
    def patch_group(name: str, body: GroupPatch, user: Me) -> GroupModel:
        require_admin(user)
        g = store.update_group(name, body.strategy, body.members)
        return GroupModel(name=g.name, strategy=g.strategy, members=list(g.members))

    @app.delete("/api/groups/{name}", status_code=204, tags=["groups"])
    def delete_group(name: str, user: Me) -> None:
        """Remove a group; 409 while rules or the provider's default plan ring it."""
        require_admin(user)
        if not store.remove_group(name):
            raise HTTPException(404, f"no such group: {name!r}")

    # -- trunks --

    @app.get("/api/trunks", tags=["trunks"])
    def list_trunks(user: Me) -> list[TrunkOut]:
        """Carrier trunks (passwords are never returned)."""
        require_staff(user)
        return [_trunk_out(t) for t in store.list_trunks()]

    def refuse_own_address(trunk: Trunk) -> None:
        own = ctx.own_sip_address and ctx.own_sip_address(trunk.host, trunk.port)
        if own:
            raise _InvalidField(
                ["body", "host"],
                f"{trunk.host}:{trunk.port} is this server's own SIP address {own}: "
                "a trunk must point at the carrier",
            )

    @app.post("/api/trunks", status_code=201, tags=["trunks"])
    def create_trunk(body: TrunkCreate, user: Me) -> TrunkOut:
        require_admin(user)
        fields = body.model_dump(exclude_none=True, by_alias=True)
        if "prefixes" in fields:
            fields["prefixes"] = tuple(fields["prefixes"])
        _inbound_change(fields, realm())
        trunk = Trunk(**fields)
        refuse_own_address(trunk)
        return _trunk_out(store.add_trunk(trunk))

    @app.patch("/api/trunks/{name}", tags=["trunks"])
    def patch_trunk(name: str, body: TrunkFields, user: Me) -> TrunkOut:
        require_admin(user)
        changes = body.model_dump(exclude_unset=True, by_alias=True)
        if changes.get("prefixes") is not None:
            changes["prefixes"] = tuple(changes["prefixes"])
        for required in ("host", "port", "transport", "prefixes", "register"):
            if required in changes and changes[required] is None:
                raise _InvalidField(["body", required], "must not be null")
        _inbound_change(changes, realm())
        if "host" in changes or "port" in changes:
            stored = store.get_trunk(name)
            if stored is None:
                raise NotFound("trunk", name)
            address = {k: changes[k] for k in ("host", "port") if k in changes}
            refuse_own_address(replace(stored, **address))
        return _trunk_out(store.update_trunk(name, **changes))

    @app.delete("/api/trunks/{name}", status_code=204, tags=["trunks"])
    def delete_trunk(name: str, user: Me) -> None:
        require_admin(user)
        if not store.remove_trunk(name):
            raise HTTPException(404, f"no such trunk: {name!r}")

    # -- call policies (calls out and toll fraud) --

    def policy_or_422(data: dict[str, Any]) -> callpolicy.CallPolicy:
        try:
            return callpolicy.parse_policy(data)
        except callpolicy.PolicyError as exc:
            raise _InvalidField(["body"], str(exc)) from None

    @app.get("/api/clients/{client_id}/call-policy", tags=["call policy"])
    def get_call_policy(client_id: str, user: Me) -> dict[str, Any]:
        """What the client may call out to, its caps and its approved forwarding numbers
        (README "Calls out and toll fraud"); `{}` means the safe defaults."""
        return readable_client(user, client_id).call_policy.to_json()

    @app.put("/api/clients/{client_id}/call-policy", tags=["call policy"])
    def put_call_policy(client_id: str, body: dict[str, Any], user: Me) -> dict[str, Any]:
        """Replace the client's call policy (admins only)."""
        require_admin(user)
        client_or_404(client_id)
        policy = policy_or_422(body)
        return store.update_client(client_id, call_policy=policy).call_policy.to_json()

    @app.post("/api/clients/{client_id}/approved-numbers", status_code=201, tags=["call policy"])
    def approve_number(client_id: str, body: ApprovedNumber, user: Me) -> dict[str, Any]:
        """Approve an external number for the client's forwarding rules (admins only); 422
        when the client's or the trunk's destination policy refuses it."""
        require_admin(user)
        c = client_or_404(client_id)
        trunks = store.list_trunks()
        trunk = next((t for t in trunks if body.number.startswith(t.prefixes)), None)
        if trunk is None:
            raise _InvalidField(["body", "number"], f"no trunk allows calls to {body.number}")
        reason = callpolicy.destination_refusal(body.number, c.call_policy, trunk.call_policy)
        if reason is not None:
            raise _InvalidField(["body", "number"], reason)
        approved = tuple(dict.fromkeys((*c.call_policy.approved_numbers, body.number)))
        policy = replace(c.call_policy, approved_numbers=approved)
        return store.update_client(client_id, call_policy=policy).call_policy.to_json()

    @app.delete(
        "/api/clients/{client_id}/approved-numbers/{number}", status_code=204,
        tags=["call policy"],
    )  # fmt: skip
    def withdraw_number(client_id: str, number: str, user: Me) -> None:
        """Withdraw an approval (admins only); rules that still forward there stop
        validating and their numbers fall back to the provider's default plan."""
        require_admin(user)
        c = client_or_404(client_id)
        e164 = _check(["path", "number"], directory.validate_e164, number)
        if e164 not in c.call_policy.approved_numbers:
            raise HTTPException(404, f"{e164} is not approved for client {client_id!r}")
        approved = tuple(n for n in c.call_policy.approved_numbers if n != e164)
        store.update_client(
            client_id, call_policy=replace(c.call_policy, approved_numbers=approved)
        )

    @app.put("/api/trunks/{name}/call-policy", tags=["call policy"])
    def put_trunk_policy(name: str, body: dict[str, Any], user: Me) -> dict[str, Any]:
        """Replace what a trunk carries (classes, prefixes, `max_concurrent`; admins only)."""
        require_admin(user)
        policy = policy_or_422(body)
        return store.update_trunk(name, call_policy=policy).call_policy.to_json()

    # -- rules --

    @app.get("/api/clients/{client_id}/rules", tags=["rules"])
    def get_rules(client_id: str, user: Me) -> dict[str, Any]:
        """The client's rules document (docs/ROUTING.md) as JSON."""
        c = readable_client(user, client_id)
        return dump_rules_document(c.id, store.load_directory())

    @app.put("/api/clients/{client_id}/rules", tags=["rules"])
    def put_rules(client_id: str, document: dict[str, Any], user: Me) -> dict[str, Any]:
        """Replace the client's rules. An invalid document changes nothing and is answered
        422 with every problem: `{"loc": "numbers.+49….rules[2].when.time", "msg": …}`."""
        c = rules_writable_client(user, client_id)
        store.save_rules(c.id, document)
        return dump_rules_document(c.id, store.load_directory())

    # -- overrides --

    def override_out(o: Override | None, client_id: str) -> OverrideOut:
        if o is None:
            raise HTTPException(404, f"client {client_id!r} has no override")
        active = store.get_override(client_id, now=datetime.now(ZoneInfo("UTC"))) is not None
        return OverrideOut(client=o.client, target=o.target, until=o.until, active=active)

    @app.get("/api/clients/{client_id}/override", tags=["overrides"])
    def get_override(client_id: str, user: Me) -> OverrideOut:
        c = readable_client(user, client_id)
        return override_out(store.get_override(c.id), c.id)

    @app.put("/api/clients/{client_id}/override", tags=["overrides"])
    def put_override(client_id: str, body: OverrideIn, user: Me) -> OverrideOut:
        """Set the override (like *21 / *22 from the client's phone)."""
        c = override_writable_client(user, client_id)
        until = body.until
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=ZoneInfo(c.timezone))
        if until is not None and until <= datetime.now(ZoneInfo("UTC")):
            raise _InvalidField(["body", "until"], "lies in the past")
        return override_out(store.set_override(Override(c.id, body.target, until)), c.id)

    @app.delete("/api/clients/{client_id}/override", status_code=204, tags=["overrides"])
    def delete_override(client_id: str, user: Me) -> None:
        """Cancel the override (like #21 / #22)."""
        c = override_writable_client(user, client_id)
        if not store.clear_override(c.id):
            raise HTTPException(404, f"client {client_id!r} has no override")

    # -- routing --

    @app.get("/api/route/simulate", tags=["routing"])
    def simulate(
        user: Me,
        number: Annotated[str, Query(examples=["+49891234567"])],
        at: Annotated[
            str | None, Query(description="ISO 8601; without offset: the client's local time")
        ] = None,
    ) -> PlanOut:
        """Which rule a call to `number` matches (now or `at`) and the steps it rings."""
        try:
            e164 = directory.validate_e164(number)
            if at is not None:
                directory.parse_at(at, "UTC")
        except directory.DirectoryError as exc:
            loc = ["query", "number" if "time" not in str(exc) else "at"]
            raise _InvalidField(loc, str(exc)) from None
        if user.role not in STAFF_ROLES:
            owner = next((n.client for n in store.list_numbers() if n.e164 == e164), None)
            if owner is None or owner != user.client:
                raise _forbidden("you may only simulate your own business's numbers")
        state = ctx.routing_state() if ctx.routing_state is not None else None
        plan = directory.simulate_call(store, e164, at, state)
        return PlanOut(**plan.to_json())

    # -- call records --

    @app.get("/api/calls", tags=["calls"])
    def list_calls(
        user: Me,
        client: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[CallOut]:
        """Call records, newest first: every client's (staff) or your own business's."""
        if client is not None:
            readable_client(user, client)
        elif user.role not in STAFF_ROLES:
            if user.client is None:
                return []
            client = user.client
        return [_call_out(r) for r in store.list_call_records(client, limit=limit)]

    # -- tokens --

    @app.get("/api/tokens", tags=["tokens"])
    def list_tokens(user: Me) -> list[TokenOut]:
        """Your API tokens (admins: everybody's)."""
        tokens = store.list_tokens(None if user.role == "admin" else user.name)
        return [
            TokenOut(name=t.name, user=t.user, created_at=t.created_at, last_used=t.last_used)
            for t in tokens
        ]

    @app.post("/api/tokens", status_code=201, tags=["tokens"])
    def create_token(body: TokenCreate, user: Me) -> TokenOut:
        """A new API token for yourself; the token is in this answer only."""
        t, secret = store.create_token(user.name, body.name)
        return TokenOut(name=t.name, user=t.user, created_at=t.created_at, last_used=None,
                        token=secret)  # fmt: skip

    @app.delete("/api/tokens/{name}", status_code=204, tags=["tokens"])
    def revoke_token(name: str, user: Me) -> None:
        if not store.revoke_token(user.name, name):
            raise HTTPException(404, f"no such token: {name!r}")

    return app
