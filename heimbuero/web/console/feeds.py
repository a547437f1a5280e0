"""Server-Sent Events for the console, with catch-up.

One `Feed` per logged-in user gathers what the API's streams give that user (presence,
messages, provider warnings for staff, `usage` when billing rated a usage reading of the
user's business or rated its open usage again after a tariff assignment or recompute — staff:
of any client) into a bounded buffer with numbered events. A page's
EventSource that lost its stream reconnects with `Last-Event-ID` and gets what it missed; a
feed lives on `GRACE` seconds after its last page went, so a short outage loses nothing. When
the id is unknown (the server restarted, or more than `BUFFER` events passed) the stream
starts with a fresh `snapshot` instead. Feeds are bounded in number (`MAX_FEEDS`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from heimbuero.app import Actor, App, AppError
from heimbuero.web import sse

BUFFER = 500  # events kept per user for catch-up
GRACE = 120.0  # seconds a feed outlives its last page
MAX_FEEDS = 1000
QUEUE = 1000  # events waiting for one slow page; more are dropped (it catches up on reconnect)
KEEPALIVE = 15.0


class Feed:
    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.seq = 0
        self.buffer: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=BUFFER)
        self.listeners: set[asyncio.Queue[tuple[int, str, dict[str, Any]]]] = set()
        self.stops: list[Callable[[], None]] = []
        self.idle_since = time.monotonic()

    def put(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        item = (self.seq, event, data)
        self.buffer.append(item)
        for q in self.listeners:
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(item)

    def missed(self, last_event_id: str) -> list[tuple[int, str, dict[str, Any]]] | None:
        """The events after `last_event_id`, or None when they cannot all be given."""
        epoch, _, n = last_event_id.partition("-")
        if epoch != self.epoch or not n.isdigit():
            return None
        after = int(n)
        if after > self.seq:
            return None
        if self.buffer and self.buffer[0][0] > after + 1:
            return None  # some fell out of the buffer
        if not self.buffer and after < self.seq:
            return None
        return [e for e in self.buffer if e[0] > after]

    def close(self) -> None:
        for stop in self.stops:
            with contextlib.suppress(Exception):
                stop()
        self.stops.clear()


class Feeds:
    def __init__(self, handlers: App) -> None:
        self.handlers = handlers
        self.epoch = secrets.token_hex(4)
        self.feeds: dict[str, Feed] = {}
        self.pending: set[asyncio.Task[None]] = set()  # history lookups under way

    def listening(self) -> int:
        """Event streams open now (pages listening, over all users)."""
        return sum(len(f.listeners) for f in self.feeds.values())

    def _reap(self, now: float) -> None:
        for user, feed in list(self.feeds.items()):
            if not feed.listeners and now - feed.idle_since > GRACE:
                feed.close()
                del self.feeds[user]

    def snapshot(self, actor: Actor) -> dict[str, Any]:
        try:
            presence = self.handlers.presence.visible(actor)
        except AppError:
            presence = []
        return {"presence": presence}

    def feed(self, actor: Actor) -> Feed | None:
        now = time.monotonic()
        self._reap(now)
        feed = self.feeds.get(actor.name)
        if feed is not None:
            return feed
        if len(self.feeds) >= MAX_FEEDS:
            return None
        feed = Feed(self.epoch)
        with contextlib.suppress(AppError):
            _, stop = self.handlers.presence.watch(actor, lambda d: feed.put("presence", d))
            feed.stops.append(stop)
        with contextlib.suppress(AppError):
            feed.stops.append(self.handlers.messages.watch(actor, feed.put))
        with contextlib.suppress(AppError):  # usage rated: a business's users see their own
            feed.stops.append(self.handlers.billing.watch(actor, lambda d: feed.put("usage", d)))
        if actor.staff:
            with contextlib.suppress(AppError):
                feed.stops.append(
                    self.handlers.warnings.watch(actor, lambda d: feed.put("warning", d))
                )
            with contextlib.suppress(AppError):  # the screen pop, then the caller's history
                feed.stops.append(
                    self.handlers.warnings.watch_ringing(actor, lambda d: self._pop(actor, feed, d))
                )
        self.feeds[actor.name] = feed
        return feed

    def _pop(self, actor: Actor, feed: Feed, card: dict[str, Any]) -> None:
        """The card at once; the caller's earlier calls and notes (read from the store in a
        worker thread, off the event loop) as a `history` event right after."""
        feed.put("ringing", card)
        calls = self.handlers.calls

        async def history() -> None:
            with contextlib.suppress(AppError):
                found = await asyncio.to_thread(
                    calls.caller_history, actor, card["client"], card["caller"], card["call_id"]
                )
                feed.put("history", {"call_id": card["call_id"], **found})

        task = asyncio.ensure_future(history())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def stream(
        self,
        actor: Actor,
        last_event_id: str,
        disconnected: Callable[[], Any],
        stopping: asyncio.Event,
    ) -> AsyncIterator[str] | None:
        feed = self.feed(actor)
        if feed is None:
            return None
        queue: asyncio.Queue[tuple[int, str, dict[str, Any]]] = asyncio.Queue(QUEUE)
        feed.listeners.add(queue)
        missed = feed.missed(last_event_id) if last_event_id else None

        def frame(n: int, event: str, data: dict[str, Any]) -> str:
            return f"id: {feed.epoch}-{n}\nevent: {event}\ndata: {json.dumps(data)}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 1000\n\n"
                last = feed.seq
                if missed is None:
                    yield frame(last, "snapshot", self.snapshot(actor))
                else:
                    for old in missed:
                        yield frame(*old)
                while not await disconnected():
                    item = await sse.next_item(queue, stopping, KEEPALIVE)
                    if item is None:
                        yield ": keep-alive\n\n"
                        continue
                    if item[0] > last:
                        last = item[0]
                        yield frame(*item)
            except sse.ServerStopping:
                pass
            finally:
                feed.listeners.discard(queue)
                if not feed.listeners:
                    feed.idle_since = time.monotonic()

        return events()
