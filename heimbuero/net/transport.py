"""asyncio UDP, TCP and TLS transports: move bytes between sockets and a sans-IO SIP endpoint,
and arm the one timer the endpoint asks for. No SIP logic lives here beyond stream framing and
the keep-alives of RFC 5626 (CRLF pongs on streams, STUN Binding answers on UDP).

Limits: datagrams and stream messages above `max_message_size` are dropped (a stream is
closed), TCP/TLS connections per remote IP are capped, idle connections are closed. TLS runs
over memory BIOs on a plain stream, so a connection counts against the caps from its first
byte: a handshake must finish within `tls_handshake_timeout`, and at most
`max_tls_handshakes` may be in progress at once (more are closed at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from heimbuero.net.tls import fingerprint
from heimbuero.sip.framing import KEEPALIVE_PONG, FramingError, StreamFramer
from heimbuero.sip.peer import Peer
from heimbuero.sip.stun import binding_response, looks_like_stun

log = logging.getLogger("heimbuero.net")

# A change of (wall clock - monotonic clock) larger than this between two readings is a step
# of the wall clock, not a slew (NTP slews at most 0.5 ms per second).
CLOCK_STEP = 1.0


class Endpoint(Protocol):
    """What the transports drive: the sans-IO SIP core."""

    def receive(self, data: bytes, source: Peer, now: float) -> None: ...
    def outgoing(self) -> list[tuple[bytes, Peer]]: ...
    def next_deadline(self) -> float | None: ...
    def on_timer(self, now: float) -> None: ...
    def unreachable(self, dest: Peer, now: float) -> None: ...
    def clock_stepped(self, delta: float) -> None: ...
    def admit(self, source: Peer, now: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class TransportLimits:
    max_message_size: int = 65535
    tcp_idle_timeout: float = 600.0
    max_tcp_connections_per_ip: int = 100
    tls_handshake_timeout: float = 10.0
    max_tls_handshakes: int = 200


class TlsPolicy(Protocol):
    """Where TLS contexts come from: the server's own (inbound) and one per outbound peer."""

    def server_context(self) -> ssl.SSLContext | None: ...
    def client_context(self, host: str, port: int) -> ssl.SSLContext: ...
    def pin(self, host: str, port: int) -> str | None: ...


# Linux: ICMP errors for an unconnected UDP socket are queued with the address they concern
# (IP_RECVERR / IPV6_RECVERR, read with MSG_ERRQUEUE); Python names neither constant.
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_UNREACHABLE = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                          errno.EHOSTDOWN})  # fmt: skip


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: Transports, sock: socket.socket | None = None) -> None:
        self.owner = owner
        self.sock = sock
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if looks_like_stun(data):
            # RFC 5626 §4.4.2/§8: a STUN keep-alive of an outbound flow, answered on the very
            # socket it came to (heimbuero.sip.stun says which requests get an answer), within
            # the flood limit of its source like any SIP request (no reflector for a ban)
            source = Peer("udp", str(addr[0]), int(addr[1]))
            if not self.owner.endpoint.admit(source, self.owner.now()):
                return
            answer = binding_response(data, source.host, source.port)
            if answer is not None and self.transport is not None:
                self.transport.sendto(answer, addr)
            return
        self.owner.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)
        if self.sock is None or sys.platform != "linux":
            return
        # ICMP port/host unreachable: the transactions waiting on that address fail now
        # (RFC 3261 §18.4). The queue says which address each error is about.
        for _ in range(64):
            try:
                _, ancillary, _, addr = self.sock.recvmsg(1, 512, _MSG_ERRQUEUE)
            except OSError:
                return
            for _level, _kind, data in ancillary:
                if len(data) >= 4 and struct.unpack_from("=I", data)[0] in _UNREACHABLE:
                    self.owner.unreachable("udp", str(addr[0]), int(addr[1]))


class _Tcp(asyncio.Protocol):
    """One SIP stream connection; over TLS the bytes pass through an `ssl.SSLObject`."""

    def __init__(
        self,
        owner: Transports,
        kind: str = "tcp",
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        pin: str | None = None,
    ) -> None:
        self.owner = owner
        self.kind = kind
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.framer = StreamFramer(owner.limits.max_message_size)
        self.last_active = time.monotonic()
        self._tls: ssl.SSLObject | None = None
        self._handshaking = False
        self._pending: list[bytes] = []
        self._deadline: asyncio.TimerHandle | None = None
        self._pin = pin
        self._counted = False  # holds one of the inbound handshake slots
        if tls is not None:
            self._in = ssl.MemoryBIO()
            self._out = ssl.MemoryBIO()
            self._tls = tls.wrap_bio(
                self._in, self._out, server_side=server_hostname is None,
                server_hostname=server_hostname,
            )  # fmt: skip

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        addr = transport.get_extra_info("peername")
        peer = Peer(self.kind, addr[0], addr[1])
        if not self.owner.admit_connection(peer, self):
            transport.close()
            return
        self.peer = peer
        if self._tls is not None:
            # Only inbound handshakes are capped: a flood of them must not cut the server off
            # from its carriers.
            if self._tls.server_side:
                if not self.owner.start_handshake():
                    log.warning("closing TLS connection from %s: too many handshakes", addr[0])
                    transport.close()
                    return
                self._counted = True
            self._handshaking = True
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(
                self.owner.limits.tls_handshake_timeout, self._handshake_timed_out
            )
            self._handshake()

    @property
    def ready(self) -> bool:
        """Bytes written now reach the peer (a TLS handshake is done)."""
        return self._tls is None or not self._handshaking

    def _handshake_timed_out(self) -> None:
        if self._handshaking and self.transport is not None:
            log.info("closing TLS connection from %s: handshake timed out", self.peer)
            self.transport.close()

    def _end_handshake(self) -> None:
        self._handshaking = False
        if self._counted:
            self._counted = False
            self.owner.end_handshake()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _handshake(self) -> None:
        assert self._tls is not None
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            return
        except (ssl.SSLError, ValueError) as exc:
            log.info("TLS handshake with %s failed: %s", self.peer, exc)
            self._flush_tls()
            self._end_handshake()
            if self.transport is not None:
                self.transport.close()
            return
        self._end_handshake()
        if self._pin is not None:
            der = self._tls.getpeercert(binary_form=True)
            if der is None or fingerprint(der) != self._pin:
                log.warning("closing TLS connection to %s: certificate fingerprint differs from "
                            "the pinned one", self.peer)  # fmt: skip
                if self.transport is not None:
                    self.transport.close()
                return
        pending, self._pending = self._pending, []
        for data in pending:
            self._tls.write(data)
        self._flush_tls()

    def _flush_tls(self) -> None:
        data = self._out.read()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self._tls is None:
            self.transport.write(data)
        elif self._handshaking:
            self._pending.append(data)
        else:
            try:
                self._tls.write(data)
            except ssl.SSLError as exc:
                log.info("TLS write to %s failed: %s", self.peer, exc)
                self.transport.close()
                return
            self._flush_tls()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._tls is not None:
            data = self._decrypt(data)
            if not data:
                return
        try:
            messages = self.framer.feed(data)
        except FramingError as exc:
            log.info("closing %s connection from %s: %s", self.kind.upper(), self.peer, exc)
            if self.transport is not None:
                self.transport.close()
            return
        if self.framer.pings:
            self.framer.pings = 0
            self.write(KEEPALIVE_PONG)
        if messages and self.peer is not None:
            self.owner.on_stream_messages(messages, self.peer)

    def _decrypt(self, data: bytes) -> bytes:
        assert self._tls is not None
        self._in.write(data)
        if self._handshaking:
            self._handshake()
            if self._handshaking:
                return b""
        chunks: list[bytes] = []
        try:
            while True:
                chunk = self._tls.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLError) as exc:
            log.debug("TLS connection from %s ends: %s", self.peer, exc)
            if self.transport is not None:
                self.transport.close()
        self._flush_tls()
        return b"".join(chunks)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_handshake()
        if self.peer is not None:
            self.owner.forget_connection(self.peer, self)


class Transports:
    """All listening sockets of one server, and the outbound TCP/TLS connections it opened."""

    def __init__(
        self,
        endpoint: Endpoint,
        limits: TransportLimits,
        clock: Callable[[], float] = time.time,
        tls: TlsPolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.clock = clock
        self.monotonic = monotonic
        self._offset = clock() - monotonic()  # wall minus monotonic: moves only when stepped
        self.tls = tls
        self._handshakes = 0
        self._udp: dict[int, asyncio.DatagramTransport] = {}  # address family -> socket
        self._servers: list[asyncio.AbstractServer] = []
        # every listening socket, for bound() (readiness probes)
        self._bound: list[tuple[str, str, int, asyncio.AbstractServer | asyncio.BaseTransport]] = []
        self._conns: dict[tuple[str, int], _Tcp] = {}
        # SIP TCP connections at once (inbound and outbound); None: no cap (server.py sets it
        # from the open-files limit)
        self.max_connections: int | None = None
        self._per_ip: dict[str, int] = {}
        # told of each SIP connection that closed (server.py: outbound flows fail, RFC 5626 §5.3)
        self.on_connection_closed: Callable[[Peer], None] | None = None
        self._connecting: dict[tuple[str, int], list[bytes]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def listen(self, transport: str, host: str, port: int) -> None:
        """Bind one listening socket; OSError (e.g. address in use) propagates."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if transport == "udp":
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                if family == socket.AF_INET6:
                    # IPv6 only, as asyncio's TCP servers: `[::]` beside `0.0.0.0` on one port
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
            if sys.platform == "linux":
                with contextlib.suppress(OSError):
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
                    else:
                        sock.setsockopt(socket.SOL_IP, _IP_RECVERR, 1)
            t, _ = await loop.create_datagram_endpoint(lambda: _Udp(self, sock), sock=sock)
            self._udp.setdefault(family, t)
            self._bound.append((transport, host, port, t))
        elif transport == "tcp":
            server = await loop.create_server(
                lambda: _Tcp(self), host, port, reuse_address=True, backlog=512
            )
            self._servers.append(server)
            self._bound.append((transport, host, port, server))
        elif transport == "tls":
            tls = self.tls
            if tls is None or tls.server_context() is None:
                raise ValueError("listening on TLS needs a certificate ([sip] tls_cert, tls_key)")
            # the context of the moment a connection comes: a reload may renew the certificate
            server = await loop.create_server(
                lambda: _Tcp(self, "tls", tls.server_context()),
                host, port, reuse_address=True, backlog=512,
            )  # fmt: skip
            self._servers.append(server)
            self._bound.append((transport, host, port, server))
        else:
            raise ValueError(f"unsupported transport {transport!r}")
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep_idle())

    def bound(self) -> list[tuple[str, str, int]]:
        """The listening sockets still open: (transport, host, port) as passed to listen()."""
        out = []
        for transport, host, port, handle in self._bound:
            # (uvloop's servers and transports are no subclasses of asyncio's)
            if isinstance(handle, asyncio.AbstractServer) or hasattr(handle, "is_serving"):
                alive = handle.is_serving()
            else:
                alive = not handle.is_closing()
            if alive:
                out.append((transport, host, port))
        return out

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self._servers:
            server.close()
        for conn in list(self._conns.values()):
            if conn.transport is not None:
                conn.transport.close()
        for t in self._udp.values():
            t.close()
        for server in self._servers:
            await server.wait_closed()

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """The wall clock for the endpoint. A step of it (NTP, a resumed VM) is told apart from
        time passing by the monotonic clock and reported to the endpoint, whose protocol
        timers then move along (`clock_stepped`). The loop's armed timer runs on the monotonic
        clock and stays; only the deadline it stands for moves too."""
        wall = self.clock()
        offset = wall - self.monotonic()
        delta = offset - self._offset
        self._offset = offset
        if abs(delta) > CLOCK_STEP:
            log.warning("wall clock stepped by %+.1f s: protocol timers keep their durations",
                        delta)  # fmt: skip
            self.endpoint.clock_stepped(delta)
            if self._timer_at is not None:
                self._timer_at += delta
        return wall

    # ------------------------------------------------------------------ inbound

    def on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if len(data) > self.limits.max_message_size or not data.strip(b"\r\n\0 "):
            return  # oversized, or a NAT keep-alive (CRLF, NUL) that needs no answer
        self.endpoint.receive(data, Peer("udp", str(addr[0]), int(addr[1])), self.now())
        self.flush()

    def on_stream_messages(self, messages: list[bytes], peer: Peer) -> None:
        now = self.now()
        for m in messages:
            self.endpoint.receive(m, peer, now)
        self.flush()

    def admit_connection(self, peer: Peer, conn: _Tcp) -> bool:
        if self.max_connections is not None and len(self._conns) >= self.max_connections:
            log.warning(
                "refusing TCP connection from %s: %d open (the cap)", peer[1], len(self._conns)
            )
            return False
        n = self._per_ip.get(peer[1], 0)
        if n >= self.limits.max_tcp_connections_per_ip:
            log.warning("refusing TCP connection from %s: too many connections", peer[1])
            return False
        self._per_ip[peer[1]] = n + 1
        self._conns[(peer[1], peer[2])] = conn
        return True

    def start_handshake(self) -> bool:
        """Count one TLS handshake in progress; False when too many are."""
        if self._handshakes >= self.limits.max_tls_handshakes:
            return False
        self._handshakes += 1
        return True

    def end_handshake(self) -> None:
        self._handshakes -= 1

    def forget_connection(self, peer: Peer, conn: _Tcp) -> None:
        key = (peer[1], peer[2])
        if self._conns.get(key) is conn:
            del self._conns[key]
            if self.on_connection_closed is not None:
                self.on_connection_closed(peer)
        n = self._per_ip.get(peer[1], 0) - 1
        if n > 0:
            self._per_ip[peer[1]] = n
        else:
            self._per_ip.pop(peer[1], None)

    def is_connected(self, peer: Peer) -> bool:
        if not peer.reliable:
            return True
        conn = self._conns.get((peer[1], peer[2]))
        return conn is not None and conn.kind == peer[0]

    # ------------------------------------------------------------------ outbound

    def flush(self) -> None:
        """Send what the endpoint produced and re-arm its timer."""
        for data, dest in self.endpoint.outgoing():
            self.send(data, dest)
        self._arm()

    def send(self, data: bytes, dest: Peer) -> None:
        transport, host, port = dest
        if transport == "udp":
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            t = self._udp.get(family)
            if t is not None:
                t.sendto(data, (host, port))
            elif self._loop is not None:
                # No socket of that family (an IPv4-only server, an IPv6 target): what waits
                # on it fails now, not after Timer B/F (after this flush, not inside it).
                self._loop.call_soon(self.unreachable, transport, host, port)
            return
        conn = self._conns.get((host, port))
        if (
            conn is not None
            and conn.kind == transport
            and conn.transport is not None
            and not conn.transport.is_closing()
        ):
            conn.write(data)
            return
        queue = self._connecting.get((host, port))
        if queue is not None:
            queue.append(data)
            return
        self._connecting[(host, port)] = [data]
        assert self._loop is not None
        self._loop.create_task(self._connect(transport, host, port))

    async def _connect(self, transport: str, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        key = (host, port)
        if transport == "tls":
            if self.tls is None:
                log.info("no TLS for %s:%d: TLS is not set up", host, port)
                self.unreachable(transport, host, port)
                return
            try:
                ctx = self.tls.client_context(host, port)
            except (OSError, ValueError, ssl.SSLError) as exc:
                log.warning("no TLS context for %s:%d: %s", host, port, exc)
                self.unreachable(transport, host, port)
                return
            pin = self.tls.pin(host, port)
            factory: Callable[[], _Tcp] = lambda: _Tcp(self, "tls", ctx, host, pin)  # noqa: E731
        else:
            factory = lambda: _Tcp(self)  # noqa: E731
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(factory, host, port), timeout=10.0
            )
        except (TimeoutError, OSError) as exc:
            log.info("%s connection to %s:%d failed: %s", transport.upper(), host, port, exc)
            self.unreachable(transport, host, port)
            return
        queued = self._connecting.pop(key, [])
        conn = self._conns.get(key, proto)
        for data in queued:
            conn.write(data)

    def unreachable(self, transport: str, host: str, port: int) -> None:
        """A connection could not be made (what was queued for it is lost), or ICMP says a UDP
        destination is unreachable: the endpoint's transactions waiting on it fail now
        (RFC 3261 §18.4), not after Timer B/F."""
        self._connecting.pop((host, port), None)
        self.endpoint.unreachable(Peer(transport, host, port), self.now())
        self.flush()

    # ------------------------------------------------------------------ timers

    def _arm(self) -> None:
        now = self.now()  # first: a step found here moves the endpoint's deadlines
        deadline = self.endpoint.next_deadline()
        if deadline is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop or asyncio.get_running_loop()
        delay = max(0.0, deadline - now)
        self._timer_at = deadline
        self._timer = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        now = self.now()  # first: a step found here moves `_timer_at` along
        at = self._timer_at or 0.0
        self._timer = None
        self._timer_at = None
        # The loop's monotonic clock and the wall clock drift apart by microseconds: never let
        # a timer that the loop fired look early to the endpoint.
        self.endpoint.on_timer(max(now, at))
        self.flush()

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self.limits.tcp_idle_timeout / 2 or 10.0))
            cutoff = time.monotonic() - self.limits.tcp_idle_timeout
            for conn in list(self._conns.values()):
                if conn.last_active < cutoff and conn.transport is not None:
                    conn.transport.close()
