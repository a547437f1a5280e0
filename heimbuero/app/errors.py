"""The application layer's typed errors, and their one meaning for each adapter.

Handlers raise these (the store's own StoreError types pass through and mean the same);
web/app.py maps them to an HTTP status and `{"detail": …}` with `http_status`, cli.py to one
`heimbuero: error: …` line with `str(exc)`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from heimbuero.store import AlreadyExists, InUse, StoreError
from heimbuero.store import NotFound as StoreNotFound


class AppError(Exception):
    """A request the application refuses; the message says why in one line."""

    status = 400


class NotFound(AppError):
    """No such thing — or one the actor may not know of (another business's ids look the
    same as missing ones)."""

    status = 404

    def __init__(self, kind: str, key: str, message: str | None = None) -> None:
        super().__init__(message or f"no such {kind}: {key!r}")
        self.kind, self.key = kind, key


class Forbidden(AppError):
    """The actor's role does not allow this."""

    status = 403


class Conflict(AppError):
    """The request clashes with what is stored (exists already, still in use, queue full)."""

    status = 409


class Stale(Conflict):
    """A change made against a version of the data that is no longer the stored one (HTTP
    If-Match that does not match: 412 Precondition Failed)."""

    status = 412


class Unavailable(AppError):
    """A part of the running server this needs is not there (presence, messaging)."""

    status = 503


class TooMany(AppError):
    """A rate limit refused the request; try again after `retry_after` seconds."""

    status = 429
    retry_after = 60


class Rejected(AppError):
    """Well-formed input the receiving service refused as a whole (one message, no field)."""

    status = 422


@dataclass(frozen=True, slots=True)
class Problem:
    """One invalid input: `field` names the handler's argument ("number", "body" for the
    whole input), or is a path inside a document ("numbers.+49….rules[2].when")."""

    field: str
    msg: str


class Invalid(AppError):
    """Input that breaks a rule; every problem is listed. `document` is True when the fields
    are paths inside a submitted document (rules) rather than argument names."""

    status = 422

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(msg)
        self.problems: tuple[Problem, ...] = (Problem(field, msg),)
        self.document = False

    @classmethod
    def many(cls, problems: Sequence[Problem], document: bool = True) -> Invalid:
        exc = cls(problems[0].field, problems[0].msg) if problems else cls("", "invalid")
        exc.problems, exc.document = tuple(problems), document
        return exc


def http_status(exc: Exception) -> int:
    """The HTTP status of an application or store error: the one mapping."""
    if isinstance(exc, AppError):
        return exc.status
    if isinstance(exc, StoreNotFound):
        return 404
    if isinstance(exc, AlreadyExists | InUse):
        return 409
    if isinstance(exc, StoreError):
        return 400
    return 500
