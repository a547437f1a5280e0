"""HTTP endpoints for operators: `/readyz` (readiness) and `/metrics` (Prometheus), and the
count of HTTP answers by status. Mounted onto the API app by the server (`mount_ops`)."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from heimbuero.ops.runtime import Operations


class StatusCounter:
    """Pure ASGI middleware: counts each HTTP answer by its status code."""

    def __init__(self, app: ASGIApp, count: Callable[[int], None]) -> None:
        self.app, self.count = app, count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.count(int(message["status"]))
            await send(message)

        await self.app(scope, receive, counted)


def allowed(
    client_ip: str | None,
    authorization: str,
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
    token: str | None,
) -> bool:
    """May this client read /metrics: its address is in the allow-list, or it sent
    `Authorization: Bearer TOKEN` with the configured token."""
    if client_ip:
        try:
            addr = ipaddress.ip_address(client_ip)
        except ValueError:
            addr = None
        if addr is not None:
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            if any(addr in net for net in allow):
                return True
    if token:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return True
    return False


def ops_routes(ops: Operations) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness probe (no login): 200 when the store takes writes and every SIP socket
        listens, else 503 with the reasons."""
        reasons = await ops.readiness.check()
        if reasons:
            return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ok"})

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus metrics: from the allow-list ([metrics] allow) or with the bearer token
        ([metrics] token); 403 otherwise."""
        settings = ops.metrics_settings
        client = request.client.host if request.client else None
        if not allowed(
            client, request.headers.get("authorization", ""), settings.networks(), settings.token
        ):
            return JSONResponse(
                {"detail": "metrics are open to the allow-list and the bearer token only"},
                status_code=403,
            )
        await ops.refresh_file_bytes()
        body, content_type = ops.metrics.render()
        return Response(body, media_type=content_type)

    return router


def mount_ops(app: FastAPI, ops: Operations) -> ASGIApp:
    """Add the operator endpoints to the API app; returns the app to serve: the API app
    wrapped in the count of answers by status (outside, so that 500s count too)."""
    app.include_router(ops_routes(ops))
    return StatusCounter(app, ops.metrics.http_answer)
