"""web/sse.next_item: the next item, a keep-alive tick, or the end at the server's stop."""

from __future__ import annotations

import asyncio

import pytest

from heimbuero.web import sse


def test_next_item_item_tick_and_stop() -> None:
    async def go() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        stop = asyncio.Event()
        queue.put_nowait(1)
        assert await sse.next_item(queue, stop, 1.0) == 1
        assert await sse.next_item(queue, stop, 0.01) is None  # time for a keep-alive
        queue.put_nowait(2)  # an item that arrived after a tick is still there
        assert await sse.next_item(queue, stop, 1.0) == 2
        waiting = asyncio.ensure_future(sse.next_item(queue, stop, 30.0))
        await asyncio.sleep(0.01)
        stop.set()
        with pytest.raises(sse.ServerStopping):
            await asyncio.wait_for(waiting, 1.0)  # at once, not after the 30 s tick
        queue.put_nowait(3)
        with pytest.raises(sse.ServerStopping):
            await sse.next_item(queue, stop, 1.0)
        assert queue.get_nowait() == 3  # nothing taken from the queue by the ended wait

    asyncio.run(go())
