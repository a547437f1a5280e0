"""The web console: server-rendered pages (Jinja2) on the HTTP port at `/`.

Login with user name and password goes through the API's LoginGate (the same argon2 check and
the same failure limits per address and per account); a login opens a session stored in the
database (store/websessions.py) whose random id travels in an HttpOnly, SameSite=Lax cookie
(Secure over HTTPS). Every POST carries the session's synchronizer token (the login form a
token bound to a cookie of its own). Each page calls the same handlers (heimbuero/app) as the
JSON API, as the session's Actor; refusals of pages of another role look like "not found".

A user with a second factor (TOTP, app/secondfactor.py) gets no session for the password:
the login leaves a challenge in the database (store/totp.py; its random id in a cookie of its
own, five minutes, at most five wrong codes) and the session is opened only for a current
code. Wrong codes count toward the same failure limits as wrong passwords. /totp switches the
second factor on (current password, then a first code) and off (password and code)."""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import segno
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.staticfiles import StaticFiles

from heimbuero.app import Actor, App, AppError
from heimbuero.app.secondfactor import WrongCode
from heimbuero.domain.model import AGENT_STATUSES
from heimbuero.store.db import Store, UserRecord
from heimbuero.store.totp import LoginChallenges
from heimbuero.store.websessions import WebSession, WebSessions
from heimbuero.web import sse
from heimbuero.web.console import i18n
from heimbuero.web.console.feeds import Feeds
from heimbuero.web.guard import LoginGate, LoginRefused
from heimbuero.web.params import RowId

HERE = Path(__file__).parent
SESSION_COOKIE = "hb_session"
LOGIN_COOKIE = "hb_login"  # the login form's token (before there is a session)
CODE_COOKIE = "hb_code"  # a login waiting for its second-factor code (store/totp.py)
MAX_CODE_FAILURES = 5  # wrong codes for one login; then the password is asked again
MAX_FORM = 16 * 1024  # bytes of a console form
T = TypeVar("T")

# what console_routes hands to the modules of its pages (admin.py, billing.py, ...):
# `area(request, roles)` the session and user of a page of those roles (None: any logged-in
# user), `posted(request, s, user[, limit])` the session's form with its CSRF token checked,
# `form_of(request, roles)` both; each returns the response to send instead when it fails
Area = Callable[[Request, "tuple[str, ...] | None"], "tuple[WebSession, UserRecord] | Response"]
Posted = Callable[..., Awaitable["dict[str, str] | Response"]]
FormOf = Callable[
    [Request, "tuple[str, ...] | None"],
    Awaitable["tuple[WebSession, UserRecord, dict[str, str]] | Response"],
]

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(("html",)),
    trim_blocks=True,
    lstrip_blocks=True,
)

_AREA = {"admin": "/admin", "agent": "/console", "client": "/portal", "employee": "/portal"}


LANG_COOKIE = "hb_lang"
_store_for_zones: list[Store] = []


def lang_of(request: Request) -> str:
    return i18n.choose(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language", ""))


def _t(request: Request, text: str, **values: str) -> str:
    out = i18n.gettext(lang_of(request), text)
    return out % values if values else out


def _page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    lang = lang_of(request)
    zones: dict[str | None, str] = {}

    def when(moment: Any, client: str | None = None) -> str:
        if client not in zones:
            c = _store_for_zones[0].get_client(client) if client and _store_for_zones else None
            zones[client] = c.timezone if c is not None and c.timezone else "Europe/Berlin"
        return i18n.when(lang, moment, zones[client])

    html = _env.get_template(name).render(
        lang=lang,
        _=lambda text: i18n.gettext(lang, text),
        when=when,
        here=request.url.path,
        **values,
    )
    return HTMLResponse(
        html,
        status,
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
            "Referrer-Policy": "same-origin",
        },
    )


def _not_found(request: Request) -> HTMLResponse:
    return _page(request, "notfound.html", 404, user=None)


def _cookie(response: Response, request: Request, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


class Console:
    def __init__(self, store: Store, gate: LoginGate, handlers: App) -> None:
        self.store, self.gate, self.handlers = store, gate, handlers
        self.sessions = WebSessions(store)
        self.challenges = LoginChallenges(store)

    def session(self, request: Request) -> tuple[WebSession, UserRecord] | None:
        """The request's session and its user (None: not logged in, expired, or removed)."""
        sid = request.cookies.get(SESSION_COOKIE, "")
        s = self.sessions.get(sid)
        if s is None:
            return None
        user = self.store.get_user(s.user)
        return None if user is None else (s, user)

    async def form(self, request: Request, limit: int = MAX_FORM) -> dict[str, str] | None:
        """The form's fields, or None when it is larger than `limit` bytes or not a form."""
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) > limit:
            return None
        body = await request.body()
        if len(body) > limit:
            return None
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}

    async def check_password(self, request: Request, name: str, password: str) -> UserRecord:
        """The LoginGate's check (argon2, bounded, counted per address and account)."""
        header = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
        return await self.gate.authenticate(header, _address(request), first_factor=True)

    def counted(self, request: Request, name: str, use_code: Callable[[], T]) -> T:
        """Run `use_code` (a handler call that takes a second-factor code of `name`); a
        WrongCode counts like a wrong password and becomes LoginRefused 401, and once the
        failure limits are reached it is not run (LoginRefused 429)."""
        addr = _address(request)
        if self.gate.code_blocked(addr, name):
            raise LoginRefused(429, "too many failed logins, try again in a minute")
        try:
            return use_code()
        except WrongCode:
            self.gate.code_failed(addr, name)
            raise LoginRefused(401, "wrong code") from None


def _address(request: Request) -> str:
    return request.client.host if request.client else "?"


def _csrf_ok(expected: str, given: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(expected.encode(), (given or "").encode())


def console_routes(store: Store, gate: LoginGate, handlers: App) -> APIRouter:
    c = Console(store, gate, handlers)
    _store_for_zones[:] = [store]
    router = APIRouter(include_in_schema=False)
    router.console = c  # type: ignore[attr-defined]

    def login_page(request: Request, status: int = 200, error: str = "") -> HTMLResponse:
        token = request.cookies.get(LOGIN_COOKIE, "")
        if len(token) != 43:
            token = secrets.token_urlsafe(32)
        response = _page(request, "login.html", status, user=None, csrf=token, error=error)
        _cookie(response, request, LOGIN_COOKIE, token, 3600)
        return response

    @router.get("/")
    async def index(request: Request) -> Response:
        found = c.session(request)
        if found is not None:
            return RedirectResponse(_AREA.get(found[1].role, "/password"), 303)
        return login_page(request)

    @router.get("/lang/{lang}")
    async def switch_language(request: Request, lang: str, next: str = "/") -> Response:
        """Set the page language (a cookie) and go back where the link was."""
        if lang not in i18n.LANGUAGES:
            return _not_found(request)
        back = next if next.startswith("/") and not next.startswith("//") else "/"
        response = RedirectResponse(back.replace("\\", "/"), 303)
        _cookie(response, request, LANG_COOKIE, lang, 365 * 24 * 3600)
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await c.form(request)
        if form is None:
            return login_page(request, 413, _t(request, "Das Formular ist zu groß."))
        if not _csrf_ok(request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf")):
            return login_page(
                request, 403, _t(request, "Die Seite war veraltet. Bitte erneut anmelden.")
            )
        name = form.get("name", "").strip().lower()
        try:
            user = await c.check_password(request, name, form.get("password", ""))
        except LoginRefused as exc:
            text = {
                401: "Benutzername oder Passwort ist falsch.",
                429: "Zu viele Fehlversuche. Bitte in einer Minute erneut versuchen.",
            }.get(exc.status, "Der Server ist ausgelastet. Bitte gleich erneut versuchen.")
            message = _t(request, text)
            return login_page(request, exc.status, message)
        if c.handlers.second_factor.enabled(user.name):
            cid, _ = c.challenges.create(user.name)
            response = RedirectResponse("/login/code", 303)
            _cookie(response, request, CODE_COOKIE, cid, int(c.challenges.lifetime.total_seconds()))
            response.delete_cookie(LOGIN_COOKIE, path="/")
            return response
        return logged_in(request, user)

    def logged_in(request: Request, user: UserRecord, to: str | None = None) -> Response:
        sid, _ = c.sessions.create(user.name)
        response = RedirectResponse(to or _AREA.get(user.role, "/password"), 303)
        _cookie(response, request, SESSION_COOKIE, sid, int(c.sessions.lifetime.total_seconds()))
        response.delete_cookie(LOGIN_COOKIE, path="/")
        response.delete_cookie(CODE_COOKIE, path="/")
        return response

    def code_page(request: Request, csrf: str, status: int = 200, error: str = "") -> Response:
        return _page(request, "code.html", status, user=None, csrf=csrf, error=error)

    def login_again(request: Request, status: int, error: str) -> Response:
        response = login_page(request, status, error)
        response.delete_cookie(CODE_COOKIE, path="/")
        return response

    @router.get("/login/code")
    async def login_code_page(request: Request) -> Response:
        """The login's second step: the form for the code of the user's authenticator app."""
        challenge = c.challenges.get(request.cookies.get(CODE_COOKIE, ""))
        if challenge is None:
            response = RedirectResponse("/", 303)
            response.delete_cookie(CODE_COOKIE, path="/")
            return response
        return code_page(request, challenge.csrf)

    @router.post("/login/code")
    async def login_code(request: Request) -> Response:
        cid = request.cookies.get(CODE_COOKIE, "")
        challenge = c.challenges.get(cid)
        form = await c.form(request)
        if challenge is None:
            return login_again(
                request, 401, _t(request, "Die Anmeldung ist abgelaufen. Bitte erneut anmelden.")
            )
        if form is None or not _csrf_ok(challenge.csrf, form.get("csrf")):
            return code_page(
                request, challenge.csrf, 403, _t(request, "Ungültiges Formular-Token.")
            )
        user = c.store.get_user(challenge.user)
        try:
            if user is None:
                raise LoginRefused(401, "no such user")
            code, sf = form.get("code", ""), c.handlers.second_factor
            left = c.counted(request, challenge.user, lambda: sf.check(challenge.user, code))
        except LoginRefused as exc:
            if exc.status == 429:
                return code_page(
                    request,
                    challenge.csrf,
                    429,
                    _t(request, "Zu viele Fehlversuche. Bitte in einer Minute erneut versuchen."),
                )
            if user is None or c.challenges.failed(cid) >= MAX_CODE_FAILURES:
                c.challenges.end(cid)
                return login_again(
                    request, 401, _t(request, "Zu viele falsche Codes. Bitte erneut anmelden.")
                )
            return code_page(
                request, challenge.csrf, 401, _t(request, "Der Code ist falsch oder verbraucht.")
            )
        c.challenges.end(cid)
        # a backup code: the second factor's page says how many are left (a lost phone:
        # switch it off there, with another backup code, and on again with the new phone)
        return logged_in(request, user, None if left is None else f"/totp?backup_left={left}")

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        found = c.session(request)
        form = await c.form(request)
        if found is None:
            return RedirectResponse("/", 303)
        if form is None or not _csrf_ok(found[0].csrf, form.get("csrf")):
            return _page(
                request,
                "error.html",
                403,
                user=found[1],
                csrf=found[0].csrf,
                message=_t(request, "Ungültiges Formular-Token."),
            )
        c.sessions.end(request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def area(
        request: Request, roles: tuple[str, ...] | None
    ) -> tuple[WebSession, UserRecord] | Response:
        """The session and its user when the user has one of `roles` (None: any role); else
        the login page (no session) or the 404 page (another role's area)."""
        found = c.session(request)
        if found is None:
            return RedirectResponse("/", 303)
        if roles is not None and found[1].role not in roles:
            return _not_found(request)
        return found

    async def posted(
        request: Request, s: WebSession, user: UserRecord, limit: int = MAX_FORM
    ) -> dict[str, str] | Response:
        """The form of a POST in a session, or the 403 page when its CSRF token is wrong."""
        form = await c.form(request, limit)
        if form is None or not _csrf_ok(s.csrf, form.get("csrf")):
            return _page(
                request,
                "error.html",
                403,
                user=user,
                csrf=s.csrf,
                message=_t(request, "Ungültiges Formular-Token."),
            )
        return form

    async def form_of(
        request: Request, roles: tuple[str, ...] | None
    ) -> tuple[WebSession, UserRecord, dict[str, str]] | Response:
        """The session, user and posted form of a POST to a page of `roles` (None: any role);
        the response to send instead when `area` or `posted` refuses."""
        found = area(request, roles)
        if isinstance(found, Response):
            return found
        s, user = found
        form = await posted(request, s, user)
        return form if isinstance(form, Response) else (s, user, form)

    @router.get("/console")
    async def agent_console(request: Request) -> Response:
        found = area(request, ("agent", "admin"))
        if isinstance(found, Response):
            return found
        s, user = found
        actor = Actor.of(user)
        try:
            presence = c.handlers.presence.visible(actor)
        except AppError:
            presence = []
        clients = c.handlers.clients.list(actor)
        notes = c.handlers.notes.list(actor, limit=20)
        labels = (_t(request, "Verfügbar"), _t(request, "Pause"), _t(request, "Abwesend"),
                  _t(request, "Nicht stören"), _t(request, "Feierabend"))  # fmt: skip
        return _page(
            request,
            "console.html",
            user=user,
            csrf=s.csrf,
            presence=presence,
            clients=clients,
            notes=notes,
            taken=request.query_params.get("taken"),
            statuses=list(zip(AGENT_STATUSES, labels, strict=True)),
            my_status=user.status,
        )

    @router.post("/console/status")
    async def set_status(request: Request) -> Response:
        """The agent's own status from the console (break, end of shift, ...)."""
        got = await form_of(request, ("agent", "admin"))
        if isinstance(got, Response):
            return got
        s, user, form = got
        try:
            c.handlers.agents.set(Actor.of(user), user.name, form.get("status", ""))
        except AppError as exc:
            return _page(request, "error.html", getattr(exc, "status", 400), user=user,
                         csrf=s.csrf, message=str(exc))  # fmt: skip
        return RedirectResponse("/console", 303)

    @router.post("/console/notes")
    async def take_note(request: Request) -> Response:
        got = await form_of(request, ("agent", "admin"))
        if isinstance(got, Response):
            return got
        s, user, form = got
        try:
            note, _ = await c.handlers.notes.take(
                Actor.of(user),
                form.get("client", ""),
                caller_name=form.get("caller_name", ""),
                caller_number=form.get("caller_number", ""),
                concern=form.get("concern", ""),
                callback=form.get("callback") == "on",
                urgent=form.get("urgent") == "on",
                text=form.get("text", ""),
                call_id=form.get("call_id") or None,
            )
        except AppError as exc:
            return _page(
                request,
                "error.html",
                getattr(exc, "status", 400),
                user=user,
                csrf=s.csrf,
                message=_t(
                    request, "Die Notiz wurde nicht gespeichert: %(reason)s", reason=str(exc)
                ),
            )
        return RedirectResponse(f"/console?taken={note.id}", 303)

    @router.get("/portal")
    async def portal(request: Request) -> Response:
        found = area(request, ("client", "employee"))
        if isinstance(found, Response):
            return found
        s, user = found
        actor = Actor.of(user)
        try:
            presence = [p for p in c.handlers.presence.visible(actor)]
        except AppError:
            presence = []
        calls = c.handlers.calls.list(actor, limit=20)
        notes = c.handlers.notes.list(actor, limit=50)
        return _page(
            request,
            "portal.html",
            user=user,
            csrf=s.csrf,
            presence=presence,
            calls=calls,
            notes=notes,
        )

    @router.post("/portal/notes/{note_id}/{what}")
    async def mark_note(request: Request, note_id: RowId, what: str) -> Response:
        got = await form_of(request, ("client", "employee"))
        if isinstance(got, Response):
            return got
        s, user, form = got
        try:
            c.handlers.notes.mark(Actor.of(user), note_id, what)
        except AppError:
            return _not_found(request)
        return RedirectResponse("/portal", 303)

    @router.post("/admin/totp/{name}/reset")
    async def reset_second_factor(request: Request, name: str) -> Response:
        """Take a user's second factor away (a lost phone)."""
        got = await form_of(request, ("admin",))
        if isinstance(got, Response):
            return got
        s, user, form = got
        try:
            c.handlers.second_factor.reset(Actor.of(user), name)
        except AppError:
            return _not_found(request)
        return RedirectResponse(f"/admin?reset={name}", 303)

    from heimbuero.web.console.chat import chat_routes

    chat_routes(router, c, area)

    feeds = Feeds(handlers)

    from heimbuero.web.console.admin import admin_pages

    admin_pages(router, c, area, form_of, feeds)

    @router.get("/events")
    async def events(request: Request) -> Response:
        """Server-Sent Events of the session's user (presence, messages, billed usage of the
        user's business, warnings for staff), numbered; a reconnect with `Last-Event-ID` gets
        what it missed (feeds.py)."""
        found = c.session(request)
        if found is None:
            return Response("login required\n", 401, media_type="text/plain")
        stream = feeds.stream(
            Actor.of(found[1]),
            request.headers.get("last-event-id", "")[:64],
            request.is_disconnected,
            sse.stopping(request),
        )
        if stream is None:
            return Response("too many event streams, try again later\n", 503)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get("/password")
    async def password_page(request: Request) -> Response:
        found = c.session(request)
        if found is None:
            return RedirectResponse("/", 303)
        return _page(request, "password.html", user=found[1], csrf=found[0].csrf)

    @router.post("/password")
    async def change_password(request: Request) -> Response:
        got = await form_of(request, None)
        if isinstance(got, Response):
            return got
        s, user, form = got

        def again(status: int, error: str) -> HTMLResponse:
            return _page(request, "password.html", status, user=user, csrf=s.csrf, error=error)

        try:
            await c.check_password(request, user.name, form.get("old", ""))
        except LoginRefused as exc:
            if exc.status == 429:
                return again(
                    429,
                    _t(request, "Zu viele Fehlversuche. Bitte in einer Minute erneut versuchen."),
                )
            return again(403, _t(request, "Das bisherige Passwort stimmt nicht."))
        new = form.get("new", "")
        if new != form.get("repeat", ""):
            return again(422, _t(request, "Die beiden neuen Passwörter stimmen nicht überein."))
        try:
            c.handlers.users.set_password(Actor.of(user), user.name, new)
        except AppError as exc:
            return again(
                422,
                _t(
                    request, "Das neue Passwort wurde nicht angenommen: %(reason)s", reason=str(exc)
                ),
            )
        c.gate.forget_verified()
        c.sessions.end_all_of(user.name, keep=request.cookies.get(SESSION_COOKIE, ""))
        return _page(request, "password.html", user=user, csrf=s.csrf, done=True)

    # -- the second factor (TOTP) of one's own login --------------------------------------

    def totp_page(
        request: Request, s: WebSession, user: UserRecord, status: int = 200, **values: Any
    ) -> Response:
        sf = c.handlers.second_factor
        pending = sf.pending(Actor.of(user))
        enabled = sf.enabled(user.name)
        return _page(
            request,
            "totp.html",
            status,
            user=user,
            csrf=s.csrf,
            enabled=enabled,
            pending=pending,
            qr=qr_svg(pending.uri) if pending is not None else "",
            backup_left=sf.backup_left(Actor.of(user)) if enabled else 0,
            **values,
        )

    def code_refused(
        request: Request, s: WebSession, user: UserRecord, exc: LoginRefused
    ) -> Response:
        """The /totp page after a wrong code (403) or too many of them (429)."""
        text = (
            "Zu viele Fehlversuche. Bitte in einer Minute erneut versuchen."
            if exc.status == 429
            else "Der Code ist falsch oder verbraucht."
        )
        return totp_page(request, s, user, 429 if exc.status == 429 else 403,
                         error=_t(request, text))  # fmt: skip

    async def with_password(
        request: Request, s: WebSession, user: UserRecord, form: dict[str, str]
    ) -> Response | None:
        """None when the form's `password` is the user's; the page with the error otherwise
        (a wrong password counts toward the login limits)."""
        try:
            await c.check_password(request, user.name, form.get("password", ""))
        except LoginRefused as exc:
            text = (
                "Zu viele Fehlversuche. Bitte in einer Minute erneut versuchen."
                if exc.status == 429
                else "Das Passwort stimmt nicht."
            )
            return totp_page(request, s, user, 429 if exc.status == 429 else 403,
                             error=_t(request, text))  # fmt: skip
        return None

    async def totp_form(
        request: Request, password: bool
    ) -> tuple[WebSession, UserRecord, dict[str, str]] | Response:
        """The session, user and posted form of a /totp POST (CSRF checked; with `password`,
        also the current password); the response to send instead when any of it fails."""
        got = await form_of(request, None)
        if isinstance(got, Response) or not password:
            return got
        refused = await with_password(request, *got)
        return got if refused is None else refused

    @router.get("/totp")
    async def totp_settings(request: Request) -> Response:
        found = c.session(request)
        if found is None:
            return RedirectResponse("/", 303)
        used = request.query_params.get("backup_left", "")
        return totp_page(request, *found, done=request.query_params.get("done", ""),
                         used_backup=used.isdigit())  # fmt: skip

    @router.post("/totp/start")
    async def totp_start(request: Request) -> Response:
        """A new secret, after the current password; shown until a first code confirms it."""
        got = await totp_form(request, password=True)
        if isinstance(got, Response):
            return got
        s, user, _ = got
        try:
            c.handlers.second_factor.begin(Actor.of(user))
        except AppError as exc:
            return totp_page(request, s, user, getattr(exc, "status", 400), error=str(exc))
        return RedirectResponse("/totp", 303)

    @router.post("/totp/confirm")
    async def totp_confirm(request: Request) -> Response:
        got = await totp_form(request, password=False)
        if isinstance(got, Response):
            return got
        s, user, form = got
        try:
            codes = c.handlers.second_factor.confirm(Actor.of(user), form.get("code", ""))
        except WrongCode:
            return totp_page(request, s, user, 422,
                             error=_t(request, "Der Code ist falsch oder verbraucht."))  # fmt: skip
        except AppError as exc:
            return totp_page(request, s, user, getattr(exc, "status", 400), error=str(exc))
        # the other sessions were opened with the password alone
        c.sessions.end_all_of(user.name, keep=request.cookies.get(SESSION_COOKIE, ""))
        # (the page itself, not a redirect: the backup codes are shown this once)
        return totp_page(request, s, user, done="on", codes=codes)

    @router.post("/totp/disable")
    async def totp_disable(request: Request) -> Response:
        """Switch the second factor off: the current password and a current code."""
        got = await totp_form(request, password=True)
        if isinstance(got, Response):
            return got
        s, user, form = got
        code, sf = form.get("code", ""), c.handlers.second_factor
        try:
            c.counted(request, user.name, lambda: sf.disable(Actor.of(user), code))
        except LoginRefused as exc:
            return code_refused(request, s, user, exc)
        return RedirectResponse("/totp?done=off", 303)

    @router.post("/totp/backup")
    async def totp_backup(request: Request) -> Response:
        """New backup codes (the old ones void): the current password and a code of the app."""
        got = await totp_form(request, password=True)
        if isinstance(got, Response):
            return got
        s, user, form = got
        code, sf = form.get("code", ""), c.handlers.second_factor
        try:
            codes = c.counted(request, user.name,
                              lambda: sf.renew_backup_codes(Actor.of(user), code))  # fmt: skip
        except LoginRefused as exc:
            return code_refused(request, s, user, exc)
        except AppError as exc:
            return totp_page(request, s, user, getattr(exc, "status", 400), error=str(exc))
        return totp_page(request, s, user, codes=codes)

    from heimbuero.web.console.forwarding import editor_pages, forwarding_pages
    from heimbuero.web.console.forwarding_rules import rule_pages

    forwarding_pages(router, handlers, area, form_of)
    editor_pages(router, handlers, area, form_of)
    rule_pages(router, handlers, area, form_of)

    from heimbuero.web.console.dictation import dictation_pages

    dictation_pages(router, handlers, area, posted)

    from heimbuero.web.console.billing import billing_pages

    billing_pages(router, handlers, area, form_of)
    return router


def qr_svg(text: str) -> str:
    """`text` as a QR code in inline SVG markup (no request of its own: the page's CSP holds)."""
    return str(segno.make(text, error="m").svg_inline(omitsize=True, dark="#000", light="#fff"))


def static_files() -> StaticFiles:
    return StaticFiles(directory=HERE / "static")


SECURITY_SCHEMES = {
    "basic": {"type": "http", "scheme": "basic", "description": "a user's name and password"},
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "an API token (`heimbuero token create USER --name NAME`)",
    },
}
_METHODS = ("get", "post", "put", "patch", "delete")


def _with_security(app: Any) -> None:
    """The OpenAPI document declares how to log in: Basic or Bearer on every route but
    /healthz."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return dict(app.openapi_schema)
        doc: dict[str, Any] = build()
        doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        doc["security"] = [{"basic": []}, {"bearer": []}]
        for path, ops in doc.get("paths", {}).items():
            if path == "/healthz":
                for op in ops.values():
                    op["security"] = []
        app.openapi_schema = doc
        return doc

    app.openapi = openapi


def docs_route(app: Any, c: Console) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/api/docs")
    async def api_docs(request: Request) -> Response:
        """The API's operations from its OpenAPI document, behind the console's login and
        without anything loaded from elsewhere (works offline)."""
        found = c.session(request)
        if found is None:
            return RedirectResponse("/", 303)
        doc = app.openapi()
        ops = [
            {
                "method": m.upper(),
                "path": path,
                "summary": op.get("summary", ""),
                "text": op.get("description", ""),
                "public": op.get("security") == [],
            }
            for path, item in sorted(doc.get("paths", {}).items())
            for m, op in item.items()
            if m in _METHODS
        ]
        return _page(
            request,
            "apidocs.html",
            user=found[1],
            csrf=found[0].csrf,
            ops=ops,
            schemes=SECURITY_SCHEMES,
        )

    return router


def mount_console(
    app: Any, store: Store, gate: LoginGate, handlers: App, current_actor: Any
) -> None:
    """The console's pages at `/`, the API's docs page at /api/docs and the style sheet at
    `/static` (one call in web/app.py)."""
    from heimbuero.web.console.notes_api import notes_routes

    router = console_routes(store, gate, handlers)
    app.include_router(router)
    app.include_router(notes_routes(handlers, current_actor))
    app.include_router(docs_route(app, router.console))  # type: ignore[attr-defined]
    app.mount("/static", static_files(), name="static")
    _with_security(app)
