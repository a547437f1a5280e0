"""The HTTP service: liveness and an authenticated status view of the SIP server.

Later issues add the management API and the web console here. Every route but the liveness
probe needs a login (HTTP Basic against the user's argon2 hash); status is for admins and agents.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from heimbuero.office.accounts import credentials, verify_password
from heimbuero.store.db import Store, UserRecord

STAFF_ROLES = frozenset({"admin", "agent"})
FAILURE_LIMIT = 10  # failed logins per client address per minute before 429
_NOBODY = UserRecord(0, "", "", "", "", credentials("nobody", "-", "no such user at all")[2], None)  # type: ignore[arg-type]


@dataclass
class WebContext:
    """What the HTTP layer reads from the running server."""

    store: Store
    status: Callable[[], dict[str, Any]]
    registrations: Callable[[], list[dict[str, Any]]]


class _Logins:
    """Basic-auth checks with a per-address failure limit (argon2 makes guessing slow too)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failures: dict[str, list[float]] = {}

    def _check(self, name: str, password: str) -> UserRecord | None:
        user = self.store.get_user(name.lower())
        if user is None:
            verify_password(_NOBODY, password)  # same cost as a wrong password: no enumeration
            return None
        return user if verify_password(user, password) else None

    async def user(self, request: Request) -> UserRecord | JSONResponse:
        addr = request.client.host if request.client else "?"
        now = time.monotonic()
        recent = [t for t in self.failures.get(addr, []) if t > now - 60]
        self.failures[addr] = recent
        if len(recent) >= FAILURE_LIMIT:
            return JSONResponse({"detail": "too many failed logins, try again in a minute"}, 429)
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                name, sep, password = "", "", ""
            user = await run_in_threadpool(self._check, name, password) if sep else None
            if user is not None:
                return user
            recent.append(now)
        return JSONResponse(
            {"detail": "login required"},
            401,
            headers={"WWW-Authenticate": 'Basic realm="heimbuero"'},
        )


def create_app(ctx: WebContext) -> Starlette:
    logins = _Logins(ctx.store)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def status(request: Request) -> JSONResponse:
        user = await logins.user(request)
        if isinstance(user, JSONResponse):
            return user
        if user.role not in STAFF_ROLES:
            return JSONResponse({"detail": "only admins and agents may see the server status"}, 403)
        return JSONResponse(ctx.status())

    async def registrations(request: Request) -> JSONResponse:
        user = await logins.user(request)
        if isinstance(user, JSONResponse):
            return user
        rows = ctx.registrations()
        if user.role not in STAFF_ROLES:
            rows = [r for r in rows if r["user"] == user.name]  # everyone sees their own devices
        return JSONResponse({"registrations": rows})

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/api/status", status),
            Route("/api/registrations", registrations),
        ]
    )
