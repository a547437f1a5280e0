"""Readiness: every configured SIP socket must listen, the store must take the write lock."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

from heimbuero.net.transport import TransportLimits, Transports
from heimbuero.ops.health import Readiness


class _Nobody:
    def receive(self, data: bytes, source: object, now: float) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ready_while_listening_not_after_close(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    sqlite3.connect(db).close()

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        port = _free_port()
        t = Transports(_Nobody(), TransportLimits())  # type: ignore[arg-type]
        await t.listen("udp", "127.0.0.1", port)
        await t.listen("tcp", "127.0.0.1", port)
        want = [("udp", "127.0.0.1", port), ("tcp", "127.0.0.1", port)]
        ready = Readiness(f"sqlite:///{db}", None, want, t.bound)
        up = await ready.check()
        missing = Readiness(f"sqlite:///{db}", None, [*want, ("tls", "127.0.0.1", 1)], t.bound)
        partly = await missing.check()
        await t.close()
        down = await ready.check()
        return up, partly, down

    up, partly, down = asyncio.run(scenario())
    assert up == []
    assert partly == ["sip: tls:127.0.0.1:1 is not listening"]
    assert len(down) == 2 and all("is not listening" in r for r in down)


def test_a_missing_database_is_a_reason(tmp_path: Path) -> None:
    ready = Readiness(f"sqlite:///{tmp_path / 'gone.db'}", None, [], lambda: [])
    reasons = asyncio.run(ready.check())
    assert len(reasons) == 1 and reasons[0].startswith("store: ") and "missing" in reasons[0]
