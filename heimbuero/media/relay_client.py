"""The SIP process's side of the relay: its control socket (short async calls with a timeout)
and the relay process itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from heimbuero.media.relay_config import RelaySettings

log = logging.getLogger("heimbuero.media")


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


class RelayProcess:
    """The built-in relay as a child process of ``serve``: started, restarted when it dies,
    fed the SIP process's commands in order, asked for silent calls every few seconds."""

    def __init__(
        self,
        settings: RelaySettings,
        control: Path,
        on_stats: Callable[[str, dict[str, Any]], None],
        on_silent: Callable[[str], None],
        bind: str = "0.0.0.0",
        poll: float = 5.0,
        bind6: str | None = None,
    ) -> None:
        self.settings, self.control, self.bind, self.poll = settings, control, bind, poll
        self.bind6 = bind6  # the IPv6 address of the relay's ports (None: IPv4 media only)
        self.on_stats, self.on_silent = on_stats, on_silent
        self.client = RelayClient(str(control), timeout=2.0)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def send(self, command: dict[str, Any]) -> None:
        self.queue.put_nowait(command)

    async def start(self, timeout: float = 10.0) -> None:
        await self._spawn(timeout)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sender()),
            loop.create_task(self._supervise()),
            loop.create_task(self._silence()),
        ]

    async def _spawn(self, timeout: float) -> None:
        self.control.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()
        s = self.settings
        v6 = ["--bind6", self.bind6] if self.bind6 is not None else []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "heimbuero.media.relay", "--control", str(self.control),
            "--bind", self.bind, *v6, "--port-min", str(s.port_min), "--port-max",
            str(s.port_max), "--silence-timeout", str(s.silence_timeout), "--parent",
            str(os.getpid()), "--realtime-priority", str(s.realtime_priority),
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (await self.client.command("ping")).get("ok"):
                    return
            except RelayUnavailable:
                pass
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RelayUnavailable("the media relay did not start")
            await asyncio.sleep(0.05)

    async def _sender(self) -> None:
        while True:
            command = await self.queue.get()
            cmd = command.pop("cmd")
            try:
                answer = await self.client.command(cmd, **command)
            except RelayUnavailable as exc:
                log.error("media relay: %s %s failed: %s", cmd, command.get("call_id"), exc)
                continue
            if not answer.get("ok"):
                if cmd != "delete":
                    log.warning("media relay refused %s %s: %s", cmd, command.get("call_id"),
                                answer.get("error"))  # fmt: skip
            elif cmd == "delete" and answer.get("stats"):
                self.on_stats(str(command.get("call_id")), answer["stats"])

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            log.error("media relay exited with %s; restarting it (calls it carried lose audio)",
                      code)  # fmt: skip
            await asyncio.sleep(1.0)
            with contextlib.suppress(RelayUnavailable):
                await self._spawn(10.0)

    async def _silence(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                answer = await self.client.command("silent")
            except RelayUnavailable:
                continue
            for key in answer.get("calls") or ():
                self.on_silent(str(key))

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.client.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()
