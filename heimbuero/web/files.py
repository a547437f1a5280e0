"""HTTP routes of the file-transfer service: Linphone's scheme under /ft (SIP digest
credentials) and the API's /api/files (Basic or token login)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter

from heimbuero.office.files import FileService
from heimbuero.sip.auth import DigestAuthenticator


def file_routes(
    service: FileService,
    digest: DigestAuthenticator,
    current_user: Callable[..., Awaitable[Any]],
) -> APIRouter:
    """The routes, to be included in the app."""
    return APIRouter()
