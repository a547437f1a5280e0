"""The console's event feed: numbered events, catch-up after a lost stream, a snapshot when
the missed events are gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from heimbuero.app import Actor, App, Role
from heimbuero.web.console import feeds as feeds_mod
from heimbuero.web.console.feeds import Feed, Feeds


def test_missed_events_after_an_id() -> None:
    feed = Feed("ab")
    for i in range(5):
        feed.put("presence", {"i": i})
    assert [e[0] for e in feed.missed("ab-2") or []] == [3, 4, 5]
    assert feed.missed("ab-5") == []
    assert feed.missed("cd-2") is None  # another server run: start afresh
    assert feed.missed("ab-9") is None and feed.missed("ab-x") is None


def test_missed_events_beyond_the_buffer_give_none(monkeypatch: Any) -> None:
    monkeypatch.setattr(feeds_mod, "BUFFER", 3)
    feed = Feed("ab")
    for i in range(6):
        feed.put("message", {"i": i})
    assert feed.missed("ab-1") is None
    assert [e[0] for e in feed.missed("ab-3") or []] == [4, 5, 6]


def test_a_reconnect_gets_what_it_missed(tmp_path: Any) -> None:
    from heimbuero.store import Store

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.upgrade()
    feeds = Feeds(App.build(store, lambda: "office.example"))
    anna = Actor("anna", Role.AGENT)

    async def gone() -> bool:
        return False

    async def run() -> None:
        stopping = asyncio.Event()
        first = feeds.stream(anna, "", gone, stopping)
        assert first is not None
        assert await anext(first) == "retry: 1000\n\n"
        assert "event: snapshot" in await anext(first)
        feeds.feeds["anna"].put("presence", {"user": "mueller", "status": "online"})
        got = await anext(first)
        assert got.startswith(f"id: {feeds.epoch}-1\nevent: presence")
        await first.aclose()  # the page lost its stream
        feeds.feeds["anna"].put("message", {"from": "mueller", "text": "Hallo"})
        again = feeds.stream(anna, f"{feeds.epoch}-1", gone, stopping)
        assert again is not None
        await anext(again)
        missed = await anext(again)
        assert missed.startswith(f"id: {feeds.epoch}-2\nevent: message") and "Hallo" in missed
        await again.aclose()
        fresh = feeds.stream(anna, "old-7", gone, stopping)  # unknown id: a snapshot instead
        assert fresh is not None
        await anext(fresh)
        assert "event: snapshot" in await anext(fresh)
        stopping.set()  # the server stops: the stream ends, not after the next keep-alive
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(fresh), 1.0)
        assert not feeds.feeds["anna"].listeners

    asyncio.run(run())
    store.close()
