"""The built-in RTP relay as its own process: UDP sockets for a port range + a control socket.

Control protocol (one JSON object per line over a Unix stream socket, one answer line each):
``{"cmd": "offer", "call_id": C, "side": "a", "address": [host, port]}`` allocates (or reuses)
the call's port pair (``"ports": [A, B]`` names leg a's and leg b's RTP ports, as the SIP
process's ``PortPool`` chose them) and answers ``{"ok": true, "port": P}`` -- the relay port
that the *other* side must send to (``"rates": {"8": 8000}``: the clock rates of payload
types, for the jitter); ``answer`` is the same for side ``b``; ``delete`` ends the call and
answers its statistics (per direction: packets, bytes, expected, lost, loss %, jitter in ms,
and what the receiving phone reported in RTCP); ``query`` answers the statistics; ``silent``
lists calls past the silence timeout (the SIP process then lets them go). A full port range
answers ``{"ok": false, "error": "no free relay ports"}``.
Addresses (``"address"``) may be IPv4 or IPv6: with ``--bind6`` each relay port is opened on
the IPv4 address and on the IPv6 one (the same port number), a packet is sent to a phone from
the socket of that phone's family, so a leg faces an IPv4 or an IPv6 phone and a call may bridge
the two families. Without ``--bind6`` the relay carries IPv4 only.
With ``--realtime-priority P`` (1-99) the process runs with real-time scheduling (SCHED_FIFO
at priority P): no process of normal priority delays a packet; it needs root or CAP_SYS_NICE,
and without either it says so on stderr and runs at normal priority.
Run: ``python -m heimbuero.media.relay --control PATH --port-min N --port-max M [--bind A]
[--bind6 A6] [--realtime-priority P]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from heimbuero.media.relay_core import RelayFull, RelayTable, peer_address

_monotonic = time.monotonic


class _Port(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay, port: int, v6: bool) -> None:
        self.relay, self.port, self.v6 = relay, port, v6
        self.transport: asyncio.DatagramTransport | None = None
        # (looked up once: datagram_received runs for every packet)
        self._receive = relay.table.receive
        self._senders, self._senders6 = relay.senders, relay.senders6

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclasses of asyncio's: no isinstance check here
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # (an IPv6 socket's source is a 4-tuple, in the form the table compares)
        out = self._receive(self.port, data, peer_address(addr) if self.v6 else addr, _monotonic())
        if out is not None:
            port, dest = out
            # from the same port number, out of the socket of the receiving phone's family
            send = (self._senders6 if ":" in dest[0] else self._senders).get(port)
            if send is not None:
                send(data, dest)


class Relay:
    """The relay process's event-loop side: opens a call's four UDP ports (on each address
    family it relays) while it lives."""

    def __init__(
        self,
        bind: str,
        port_min: int,
        port_max: int,
        silence_timeout: float,
        bind6: str | None = None,
    ) -> None:
        self.bind, self.bind6 = bind, bind6
        self.table = RelayTable(port_min, port_max, silence_timeout)
        self.sockets: dict[int, _Port] = {}  # IPv4
        self.sockets6: dict[int, _Port] = {}  # IPv6 (with bind6)
        # each open port's transport.sendto, per family: what a packet is sent out of
        self.senders: dict[int, Callable[[bytes, Any], None]] = {}
        self.senders6: dict[int, Callable[[bytes, Any], None]] = {}

    async def _open(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        proto = _Port(self, port, v6=False)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: proto, local_addr=(self.bind, port)
        )
        self.sockets[port] = proto
        self.senders[port] = transport.sendto
        if self.bind6 is None:
            return
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            # IPv6 only: "::" must not take the port's IPv4 side, which the socket above holds
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.bind6, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        proto6 = _Port(self, port, v6=True)
        transport6, _ = await loop.create_datagram_endpoint(lambda: proto6, sock=sock)
        self.sockets6[port] = proto6
        self.senders6[port] = transport6.sendto

    def _close(self, port: int) -> None:
        self.senders.pop(port, None)
        self.senders6.pop(port, None)
        for sockets in (self.sockets, self.sockets6):
            proto = sockets.pop(port, None)
            if proto is not None and proto.transport is not None:
                proto.transport.close()

    async def command(self, msg: dict[str, Any]) -> dict[str, Any]:
        cmd, call_id = msg.get("cmd"), str(msg.get("call_id", ""))
        if cmd == "ping":
            return {"ok": True}
        if cmd in ("offer", "answer"):
            fresh = call_id not in self.table.calls
            ports = msg.get("ports")
            try:
                if ports is not None:
                    ports = (int(ports[0]), int(ports[1]))
                call = self.table.allocate(call_id, time.monotonic(), ports)
            except (RelayFull, TypeError, IndexError) as exc:
                return {"ok": False, "error": str(exc)}
            if fresh:
                try:
                    for leg in (call.a, call.b):
                        await self._open(leg.port)
                        await self._open(leg.port + 1)
                except OSError as exc:
                    self._delete(call_id)
                    return {"ok": False, "error": f"relay port busy: {exc}"}
            side = "a" if cmd == "offer" else "b"
            self.table.set_rates(call_id, msg.get("rates"))
            address = msg.get("address")
            if address:
                self.table.set_destination(call_id, side, (str(address[0]), int(address[1])))
            # the offer's SDP goes on to b: b must send to leg b's port (and a to leg a's)
            return {"ok": True, "port": (call.b if side == "a" else call.a).port}
        if cmd == "delete":
            call = self._delete(call_id)
            return {"ok": call is not None, "stats": call.stats() if call else None}
        if cmd == "query":
            known = self.table.calls.get(call_id)
            return {"ok": known is not None, "stats": known.stats() if known else None}
        if cmd == "silent":
            return {"ok": True, "calls": [c.call_id for c in self.table.silent(time.monotonic())]}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _delete(self, call_id: str) -> Any:
        call = self.table.calls.get(call_id)
        if call is None:
            return None
        for leg in (call.a, call.b):
            self._close(leg.port)
            self._close(leg.port + 1)
        return self.table.delete(call_id)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict):
                        raise ValueError("not an object")
                    answer = await self.command(msg)
                except ValueError as exc:
                    answer = {"ok": False, "error": f"bad command: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    async def serve(self, control: str, parent: int | None = None) -> None:
        server = await asyncio.start_unix_server(self._client, path=control)
        os.chmod(control, 0o600)  # only the server's own user may allocate ports or end calls
        async with server:
            if parent is None:
                await server.serve_forever()
                return
            # a relay whose server died (kill -9) must not hold the ports its successor needs
            while os.getppid() == parent:
                await asyncio.sleep(0.5)


def realtime(priority: int) -> None:
    """Run this process with real-time scheduling (SCHED_FIFO at `priority`), or say on stderr
    why not and go on at normal priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError) as exc:  # (PermissionError; no SCHED_FIFO on this OS)
        why = f"real-time priority {priority} refused ({exc}; it needs root or CAP_SYS_NICE)"
        print(f"heimbuero-relay: {why}: the relay runs at normal priority", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="heimbuero-relay", description=__doc__)
    parser.add_argument("--control", required=True, help="Unix socket path for commands")
    parser.add_argument("--bind", default="0.0.0.0", help="the IPv4 address of the ports")
    parser.add_argument("--bind6", help="the IPv6 address of the ports (default: IPv4 only)")
    parser.add_argument("--port-min", type=int, default=30000)
    parser.add_argument("--port-max", type=int, default=30999)
    parser.add_argument("--silence-timeout", type=float, default=60.0)
    parser.add_argument("--parent", type=int, help="exit when this process is gone")
    parser.add_argument(
        "--realtime-priority", type=int, default=0, choices=range(100), metavar="P",
        help="SCHED_FIFO at this priority, 1-99 (0: normal scheduling)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.realtime_priority:
        realtime(args.realtime_priority)
    relay = Relay(args.bind, args.port_min, args.port_max, args.silence_timeout, args.bind6)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency on Linux
        asyncio.run(relay.serve(args.control, args.parent))
    else:
        uvloop.run(relay.serve(args.control, args.parent))


if __name__ == "__main__":
    main()
