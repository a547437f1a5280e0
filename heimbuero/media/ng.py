"""rtpengine's ng control protocol: one bencoded dictionary per UDP datagram, after a cookie.

A request is ``COOKIE SPACE bencode({"command": ..., ...})``; rtpengine answers
``COOKIE SPACE bencode({"result": "ok" | "pong" | "error", ...})`` from the address it was
sent to, and answers a repeated cookie from its cache (so a lost datagram is simply sent
again with the same cookie). The client here never blocks the event loop: each command waits
on a future, is re-sent every ``interval`` seconds, and fails with :class:`NgUnavailable`
after ``timeout``. A reply is taken only from the configured address, only with the cookie of
a command in flight, and only up to ``max_reply`` bytes; anything else is dropped (a host on
the network can neither answer for rtpengine nor make a command fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from typing import Any

from heimbuero.media import bencode

log = logging.getLogger("heimbuero.media")

MAX_REPLY = 32768


class NgUnavailable(Exception):
    """rtpengine did not answer in time (or the socket failed)."""


class NgError(Exception):
    """rtpengine answered ``result: error`` (the reason is the message)."""


def parse_ng_address(value: object) -> tuple[str, int]:
    """``udp:HOST:PORT`` (or ``HOST:PORT``; IPv6 as ``udp:[::1]:2223``): rtpengine's
    ``--listen-ng``. Raises ValueError naming what is wrong."""
    text = str(value).strip()
    if text.startswith("udp:"):
        text = text[4:]
    elif ":" in text and text.split(":", 1)[0].isalpha() and not text.startswith("["):
        raise ValueError("the ng address must be udp:HOST:PORT (only UDP is spoken)")
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("the ng address must be udp:HOST:PORT with a port from 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("the ng address must name an IP address (udp:127.0.0.1:2223)") from None
    return host, int(port)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: NgClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.client._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("rtpengine ng socket: %s", exc)


class NgClient:
    """Commands to one rtpengine over UDP; any number may be in flight at once."""

    def __init__(
        self,
        address: tuple[str, int],
        timeout: float = 1.0,
        interval: float = 0.25,
        max_reply: int = MAX_REPLY,
    ) -> None:
        self.address, self.timeout, self.interval = address, timeout, interval
        self.max_reply = max_reply
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._prefix = os.urandom(4).hex()
        self._counter = 0
        self.dropped = 0  # replies ignored: wrong source, unknown cookie, oversize, malformed

    async def _socket(self) -> asyncio.DatagramTransport:
        if self._transport is None or self._transport.is_closing():
            loop = asyncio.get_running_loop()
            family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), family=family,
                local_addr=("::" if family == socket.AF_INET6 else "0.0.0.0", 0),
            )  # fmt: skip
            self._transport = transport
        return self._transport

    async def command(self, command: str, **fields: Any) -> dict[str, Any]:
        """Send one command; its answer dictionary (``result`` ok or pong), or raise
        :class:`NgError` (rtpengine said error) / :class:`NgUnavailable` (no answer)."""
        self._counter += 1
        cookie = f"{self._prefix}{self._counter:x}".encode()
        datagram = cookie + b" " + bencode.encode({"command": command, **fields})
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[cookie] = future
        try:
            transport = await self._socket()
            deadline = loop.time() + self.timeout
            while True:
                transport.sendto(datagram, self.address)
                wait = min(self.interval, deadline - loop.time())
                if wait <= 0:
                    where = f"{self.address[0]}:{self.address[1]}"
                    raise NgUnavailable(
                        f"rtpengine at {where} did not answer {command} in {self.timeout:g} s"
                    )
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(asyncio.shield(future), wait)
                    break
        except OSError as exc:
            raise NgUnavailable(f"rtpengine ng socket: {exc}") from exc
        finally:
            self._pending.pop(cookie, None)
        result = answer.get("result")
        if result in (b"ok", b"pong"):
            return answer
        reason = answer.get("error-reason", b"")
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise NgError(text or f"result {result!r}")

    def _received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if (str(addr[0]), int(addr[1])) != self.address and not _same(addr, self.address):
            self.dropped += 1
            return
        if len(data) > self.max_reply:
            self.dropped += 1
            log.warning("rtpengine reply of %d bytes dropped (over %d)", len(data), self.max_reply)
            return
        cookie, sep, body = data.partition(b" ")
        future = self._pending.get(cookie)
        if not sep or future is None or future.done():
            self.dropped += 1
            return
        try:
            answer = bencode.decode(body)
        except bencode.BencodeError as exc:
            self.dropped += 1
            log.warning("malformed rtpengine reply dropped: %s", exc)
            return
        if not isinstance(answer, dict):
            self.dropped += 1
            return
        future.set_result(answer)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def _same(addr: tuple[Any, ...], want: tuple[str, int]) -> bool:
    """The same address in another spelling (an IPv6 address written differently)."""
    try:
        return (
            ipaddress.ip_address(str(addr[0])) == ipaddress.ip_address(want[0])
            and int(addr[1]) == want[1]
        )
    except ValueError:
        return False
