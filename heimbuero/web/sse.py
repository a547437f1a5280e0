"""Server-Sent Events streams end when the server stops.

An event stream is a response that never finishes by itself: uvicorn's graceful stop waits for
every running response, so one open console page held `heimbuero serve` after SIGTERM for as
long as the browser stayed (and the store's last commits waited behind it). The app keeps one
`stopping` event (set by the server before the HTTP server is told to exit); each stream waits
for its next item or for that event, and ends at once when it is set. The browser reconnects
to the next server (`retry:`), which gives it a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import ASGIApp

T = TypeVar("T")


class ServerStopping(Exception):
    """The server stops: the stream ends."""


def install(app: ASGIApp) -> asyncio.Event:
    """The app's `stopping` event (made once)."""
    state = app.state  # type: ignore[attr-defined]
    if getattr(state, "stopping", None) is None:
        state.stopping = asyncio.Event()
    event: asyncio.Event = state.stopping
    return event


def stopping(request: Request) -> asyncio.Event:
    """The `stopping` event of the app serving `request`."""
    return install(request.app)


async def next_item(queue: asyncio.Queue[T], stop: asyncio.Event, keepalive: float) -> T | None:
    """The next item of `queue`; None when `keepalive` seconds passed without one (time for a
    keep-alive comment); raises ServerStopping once `stop` is set."""
    if stop.is_set():
        raise ServerStopping
    get = asyncio.ensure_future(queue.get())
    ended = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((get, ended), timeout=keepalive, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
        if not get.done():
            get.cancel()  # (an item not taken yet stays in the queue)
    if get.done() and not get.cancelled():
        return get.result()
    if stop.is_set():
        raise ServerStopping
    return None


async def events(
    request: Request,
    queue: asyncio.Queue[tuple[str, dict[str, Any]]],
    opening: str,
    stop: Callable[[], None],
) -> AsyncIterator[str]:
    """The text of an event stream: `opening` (a comment), then each `(event, data)` of `queue`
    (data as JSON), a keep-alive comment after 15 s without one; it ends when the client goes
    or the server stops, and then calls `stop` (the end of the watch that fills the queue)."""
    ending = stopping(request)
    try:
        yield opening
        while not await request.is_disconnected():
            item = await next_item(queue, ending, 15.0)
            if item is None:
                yield ": keep-alive\n\n"
                continue
            event, data = item
            yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
    except ServerStopping:
        pass
    finally:
        stop()
