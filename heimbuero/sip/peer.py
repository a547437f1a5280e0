"""Where a message came from or goes to: transport, host and port (RFC 3261 §18)."""

from __future__ import annotations

from typing import NamedTuple


class Peer(NamedTuple):
    """(transport, host, port): transport lower case ("udp", "tcp", "tls", "ws", "wss"), host
    an IP literal without brackets (or a name the network layer resolves), port a number.

    A plain tuple of the same three values compares and hashes equal, so a Peer finds what was
    stored under one."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """Whether the transport is reliable (a stream: TCP, TLS, WebSocket), so that the
        transaction layer does not retransmit (RFC 3261 §17.1.1.2, §17.1.2.2)."""
        return self.transport != "udp"
