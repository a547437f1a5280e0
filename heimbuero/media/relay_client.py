"""The SIP process's side of the relay's control socket: short async calls with a timeout."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class RelayUnavailable(Exception):
    """The relay did not answer in time, refused, or is not running."""


class RelayClient:
    """One connection to the relay's Unix control socket; commands are serialized on it."""

    def __init__(self, path: str, timeout: float = 0.5) -> None:
        self.path, self.timeout = path, timeout
        self._lock = asyncio.Lock()
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def command(self, cmd: str, **fields: Any) -> dict[str, Any]:
        async with self._lock:
            try:
                return await asyncio.wait_for(self._send({"cmd": cmd, **fields}), self.timeout)
            except (OSError, TimeoutError, ValueError) as exc:
                await self.close()
                raise RelayUnavailable(f"relay control: {exc or type(exc).__name__}") from exc

    async def _send(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self._conn is None:
            self._conn = await asyncio.open_unix_connection(self.path)
        reader, writer = self._conn
        writer.write(json.dumps(msg).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
        if not line:
            raise OSError("relay closed the control connection")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ValueError("relay answered no object")
        return answer

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None
