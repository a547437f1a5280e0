"""Bounded resources on the HTTP side: logins, request bodies, slow clients, connections.

- Logins: argon2 verifications run in a small pool (`LOGIN_WORKERS` threads at the lowest CPU
  priority, at most `LOGIN_QUEUE` waiting; more: 503 at once), successful ones are remembered
  for `LOGIN_CACHE_SECONDS` (keyed by a hash of the credentials), and failures are counted per
  client address and per account in bounded tables.
- Bodies: `BodyGuard` answers 401 before reading the body of an unauthenticated API request
  and 413 when a body declares or streams more than the route allows.
- Slow clients and too many connections: `guarded_h11()` is uvicorn's h11 protocol with a
  deadline for a request's headers and a cap on open connections (more: closed at once).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from heimbuero.services.guard import source_key
from heimbuero.store.db import UserRecord

log = logging.getLogger(__name__)

LOGIN_WORKERS = 2  # argon2 verifications at once (each takes ~64 MiB and most of a core)
LOGIN_QUEUE = 8  # verifications waiting for a worker; more: 503 at once
LOGIN_CACHE_SECONDS = 30.0  # a verified password is believed this long without argon2
LOGIN_CACHE_SIZE = 1024
FAILURES_PER_ADDRESS = 10  # failed logins per client address per minute before 429
FAILURES_PER_ACCOUNT = 30  # failed logins per account per minute before 429 (for that account)
FAILURE_WINDOW = 60.0
# wrong second-factor codes per account in 15 minutes before its codes get 429 (on top of the
# limits above): a million codes, three good at a time, at most ~1,000 guesses a day
CODE_FAILURES_PER_ACCOUNT = 10
CODE_FAILURE_WINDOW = 900.0
FAILURE_KEYS = 10_000  # addresses (and accounts) remembered; the oldest are dropped

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

AUDIO_MAX = 10 * 1024 * 1024 + 64 * 1024  # an uploaded greeting or announcement


class LoginRefused(Exception):
    """A login that failed: `status` 401, 429 or 503 with `detail` for the answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail

    @property
    def headers(self) -> dict[str, str]:
        if self.status == 401:
            return {"WWW-Authenticate": 'Basic realm="heimbuero", Bearer'}
        return {"Retry-After": "1" if self.status == 503 else "60"}


class FailureTable:
    """Failures per key within a sliding window; at most `max_keys` keys (the least recently
    failed are forgotten first) and `limit` timestamps per key, so memory stays bounded."""

    def __init__(self, limit: int, window: float = FAILURE_WINDOW, max_keys: int = FAILURE_KEYS):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._keys: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def blocked(self, key: str, now: float) -> bool:
        times = self._keys.get(key)
        if times is None:
            return False
        while times and times[0] <= now - self.window:
            del times[0]
        if not times:
            del self._keys[key]
            return False
        return len(times) >= self.limit

    def add(self, key: str, now: float) -> None:
        keys = self._keys
        times = keys.get(key)
        if times is None:
            keys[key] = [now]
            # Over the bound, or the oldest key's last failure has left the window: forget it
            # (the new key itself is never forgotten here: its failure is `now`).
            while keys and (
                len(keys) > self.max_keys or next(iter(keys.values()))[-1] <= now - self.window
            ):
                keys.popitem(last=False)
            return
        keys.move_to_end(key)
        times.append(now)
        if len(times) > self.limit:
            del times[0]


class AddressFailures(FailureTable):
    """Failures per client address, an IPv6 address counted by its /64 (as the SIP guard
    does: services.guard.source_key), so walking through one's prefix gains no attempts."""

    def blocked(self, key: str, now: float) -> bool:
        return super().blocked(source_key(key), now)

    def add(self, key: str, now: float) -> None:
        super().add(source_key(key), now)


def _lower_priority() -> None:
    """Run this worker thread (and the threads argon2 starts for its lanes, which inherit it) at
    the lowest CPU priority: SIP on the event loop comes first when cores are busy."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class LoginGate:
    """Checks `Authorization` headers (HTTP Basic against argon2, or an API token) with bounded
    cost: see the module's docstring."""

    def __init__(
        self,
        check_password: Callable[[str, str], UserRecord | None],
        check_token: Callable[[str], UserRecord | None],
        *,
        workers: int = LOGIN_WORKERS,
        queue: int = LOGIN_QUEUE,
        needs_code: Callable[[str], bool] = lambda _name: False,
    ) -> None:
        self.check_password, self.check_token = check_password, check_token
        self.needs_code = needs_code  # users with a second factor: no password-only API login
        self.pool = ThreadPoolExecutor(
            workers, thread_name_prefix="login", initializer=_lower_priority
        )
        self.capacity = workers + queue
        self.pending = 0
        self.by_address = AddressFailures(FAILURES_PER_ADDRESS)
        self.by_account = FailureTable(FAILURES_PER_ACCOUNT)
        self.codes_by_account = FailureTable(CODE_FAILURES_PER_ACCOUNT, CODE_FAILURE_WINDOW)
        self.cache: OrderedDict[bytes, tuple[float, UserRecord]] = OrderedDict()

    def forget_verified(self) -> None:
        """Drop remembered logins (after a password change or a removed user)."""
        self.cache.clear()

    async def _run(self, fn: Callable[..., UserRecord | None], *args: Any) -> UserRecord | None:
        if self.pending >= self.capacity:
            raise LoginRefused(503, "server busy checking logins, try again in a moment")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self.pending -= 1

    def code_blocked(self, address: str, account: str) -> bool:
        """Whether a second-factor code of `account` from `address` may not be checked now:
        the login limits are reached, or the account's limit of wrong codes."""
        now = time.monotonic()
        return (
            self.by_address.blocked(address, now)
            or self.by_account.blocked(account, now)
            or self.codes_by_account.blocked(account, now)
        )

    def code_failed(self, address: str, account: str) -> None:
        """Count a wrong second-factor code as a failed login (the same limits), and toward
        the account's own limit of wrong codes."""
        now = time.monotonic()
        self.by_address.add(address, now)
        self.by_account.add(account, now)
        self.codes_by_account.add(account, now)
        log.warning("failed HTTP login from %s for %r (wrong second-factor code)", address, account)

    async def authenticate(
        self, authorization: str, address: str, *, first_factor: bool = False
    ) -> UserRecord:
        """The user of an `Authorization` header; LoginRefused otherwise. A password alone
        (Basic) does not log in a user who has a second factor, unless `first_factor` (the
        console's login, which asks for the code next): such users use API tokens."""
        user = await self._authenticate(authorization, address)
        if (
            not first_factor
            and authorization.partition(" ")[0].lower() == "basic"
            and await asyncio.get_running_loop().run_in_executor(None, self.needs_code, user.name)
        ):
            raise LoginRefused(
                401, "this user logs in with a second factor: use an API token (Bearer)"
            )
        return user

    async def _authenticate(self, authorization: str, address: str) -> UserRecord:
        now = time.monotonic()
        scheme, _, value = authorization.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        key = hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).digest()
        hit = self.cache.get(key)
        if hit is not None:
            if hit[0] > now:
                return hit[1]
            del self.cache[key]
        if self.by_address.blocked(address, now):
            raise LoginRefused(429, "too many failed logins, try again in a minute")
        user: UserRecord | None = None
        account = ""
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            name, sep, password = decoded.partition(":")
            account = name.lower()
            if sep and account:
                if self.by_account.blocked(account, now):
                    raise LoginRefused(429, "too many failed logins for this user, try later")
                user = await self._run(self.check_password, account, password)
        elif scheme == "bearer" and value:
            user = await self._run(self.check_token, value)
        else:
            raise LoginRefused(401, "login required")
        now = time.monotonic()
        if user is None:
            self.by_address.add(address, now)
            if account:
                self.by_account.add(account, now)
            log.warning("failed HTTP login from %s%s", address, f" for {account!r}" * bool(account))
            raise LoginRefused(
                401, "invalid user name or password" if scheme == "basic" else "invalid token"
            )
        if scheme == "basic":
            self.cache[key] = (now + LOGIN_CACHE_SECONDS, user)
            while len(self.cache) > LOGIN_CACHE_SIZE:
                self.cache.popitem(last=False)
        return user


def header(scope: Scope, name: bytes) -> str:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return ""


async def answer(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw.append((b"connection", b"close"))  # the unread body makes the connection unusable
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class BodyGuard:
    """Pure ASGI middleware for /api: a request that carries a body must be authenticated
    before the body is read (401), and may not declare or stream more than its route allows
    (413). The user it authenticated is left in `scope["state"]["user"]`. Requests without a
    body pass unchanged (the routes authenticate them)."""

    def __init__(
        self,
        app: ASGIApp,
        gate: LoginGate,
        max_body: int,
        upload_max: int,
    ) -> None:
        self.app, self.gate = app, gate
        self.max_body, self.upload_max = max_body, upload_max

    def limit(self, path: str) -> int:
        if path.rstrip("/") == "/api/files" or path.startswith("/api/dictation/uploads/"):
            return self.upload_max  # file uploads; dictation's resumable (tus) PATCHes
        if path.endswith("/greeting") or "/announcements/" in path:
            return AUDIO_MAX  # greetings and announcements (the handler says why when larger)
        return self.max_body

    def _forgetting(self, send: Send) -> Send:
        """`send`, forgetting remembered logins when the answer is a success."""

        async def forgetting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                self.gate.forget_verified()
            await send(message)

        return forgetting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        if scope["method"] != "GET" and path.startswith("/api/users"):
            send = self._forgetting(send)  # a changed password or removed user counts at once
        length = header(scope, b"content-length")
        chunked = "chunked" in header(scope, b"transfer-encoding").lower()
        if not chunked and length in ("", "0"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        try:
            user = await self.gate.authenticate(
                header(scope, b"authorization"), client[0] if client else "?"
            )
        except LoginRefused as exc:
            await answer(send, exc.status, exc.detail, exc.headers)
            return
        scope.setdefault("state", {})["user"] = user
        limit = self.limit(path)
        too_large = f"request body too large (at most {limit} bytes here)"
        if length and (not length.isdigit() or int(length) > limit):
            await answer(send, 413, too_large)
            return
        seen = 0
        started = answered = False

        async def counted() -> Message:
            nonlocal seen, started, answered
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer here: the app may turn the error below into a 400 of its own
                    # (FastAPI does while parsing a body); whatever it sends is dropped.
                    if not started:
                        started = answered = True
                        await answer(send, 413, too_large)
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counted, tracked)


def guarded_h11(max_connections: int, header_timeout: float) -> type:
    """uvicorn's h11 protocol with a cap on open connections (more are closed at once) and a
    deadline for each request's headers (a client trickling them is closed)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        refused = 0
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                GuardedH11.refused += 1
                if GuardedH11.refused in (1, 10, 100) or GuardedH11.refused % 1000 == 0:
                    log.warning(
                        "refusing HTTP connections: %d open (the cap); %d refused so far",
                        len(self.connections), GuardedH11.refused,
                    )  # fmt: skip
                transport.abort()
                self.transport = transport
                return
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self.conn.their_state in (h11.IDLE, h11.DONE):
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            busy = self.cycle is not None and not self.cycle.response_complete
            if busy or self.conn.their_state is h11.SEND_BODY:
                self._disarm()  # this request's headers are complete

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self.flow is None:  # refused in connection_made
                return
            super().connection_lost(exc)

    return GuardedH11
