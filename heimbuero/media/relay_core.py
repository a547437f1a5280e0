"""The built-in RTP relay's state, sans-IO: port pairs, latching, per-stream statistics.

A call gets two legs (caller side ``a``, callee side ``b``), each with an RTP port and the
port above it for RTCP. A packet arriving on a leg's port comes from that leg's device and is
sent out of the *other* leg's port to the other device. Latching (symmetric RTP): a leg learns
its device's real address from the first RTP packet it receives; after that, packets from any
other source are dropped, except that a packet carrying the latched SSRC re-latches (a phone
whose NAT binding changed keeps its audio; a third party who does not know the SSRC cannot
take the stream). RTCP latches on its own port the same way (by source address only).
Nothing here touches a socket or a clock: the asyncio adapter feeds ``receive(port, data,
source, now)`` and sends what it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

Address = tuple[str, int]


class RelayFull(Exception):
    """No free port pair is left in the configured range."""


@dataclass(slots=True)
class StreamStats:
    """What one direction of RTP looked like, from sequence numbers and timestamps (RFC 3550)."""

    packets: int = 0  # RTP packets accepted
    octets: int = 0
    dropped: int = 0
    _base_seq: int | None = None
    _max_seq: int = 0
    _cycles: int = 0
    _transit: float | None = None
    jitter: float = 0.0  # in timestamp units

    def record(self, data: bytes, now: float, clock_rate: int = 8000) -> None:
        self.packets += 1
        self.octets += len(data)
        seq = int.from_bytes(data[2:4], "big")
        ts = int.from_bytes(data[4:8], "big")
        if self._base_seq is None:
            self._base_seq = seq
            self._max_seq = seq
        else:
            delta = (seq - self._max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self._max_seq:
                    self._cycles += 0x10000
                self._max_seq = seq
        transit = now * clock_rate - ts
        if self._transit is not None:
            d = abs(transit - self._transit)
            self.jitter += (d - self.jitter) / 16
        self._transit = transit

    @property
    def expected(self) -> int:
        if self._base_seq is None:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.packets)

    def as_dict(self, clock_rate: int = 8000) -> dict[str, float | int]:
        return {
            "packets": self.packets,
            "bytes": self.octets,
            "dropped": self.dropped,
            "lost": self.lost,
            "jitter_ms": round(self.jitter * 1000 / clock_rate, 2),
        }


@dataclass(slots=True)
class Leg:
    """One side of a relayed call: our RTP port (RTCP = port + 1) and the device's address."""

    port: int
    rtp_peer: Address | None = None
    rtcp_peer: Address | None = None
    ssrc: bytes | None = None
    latched: bool = False  # rtp_peer came from a packet (not only from the SDP)
    rtcp_latched: bool = False
    stats: StreamStats = field(default_factory=StreamStats)  # packets received on this leg

    def latch(self, data: bytes, source: Address, rtcp: bool) -> bool:
        """Accept ``data`` from ``source`` (latching if first), or say it must be dropped."""
        if rtcp:
            if not self.rtcp_latched:
                self.rtcp_peer, self.rtcp_latched = source, True
            return self.rtcp_peer == source
        if _is_rtcp(data):  # rtcp-mux: RTCP on the RTP port, from the latched RTP source
            return self.latched and self.rtp_peer == source
        if len(data) < 12 or data[0] >> 6 != 2:
            return False  # not RTP version 2: never latches, never forwarded
        ssrc = data[8:12]
        if not self.latched:
            self.rtp_peer, self.ssrc, self.latched = source, ssrc, True
            return True
        if self.rtp_peer == source:
            return True
        if ssrc == self.ssrc:
            self.rtp_peer = source  # the same stream from a new NAT binding
            return True
        return False


def _is_rtcp(data: bytes) -> bool:
    # RFC 5761 §4: RTCP packet types 192-223 occupy the second byte; RTP payload types do not.
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(slots=True)
class RelayCall:
    call_id: str
    a: Leg
    b: Leg
    last_packet: float
    ended: str | None = None

    def stats(self) -> dict[str, dict[str, float | int]]:
        return {"a": self.a.stats.as_dict(), "b": self.b.stats.as_dict()}


class RelayTable:
    """All relayed calls of one relay process, and the ports they hold."""

    def __init__(self, port_min: int, port_max: int, silence_timeout: float = 60.0) -> None:
        if port_min % 2:
            port_min += 1
        self.silence_timeout = silence_timeout
        top = port_max - 1 if port_max % 2 else port_max - 2  # even RTP port, RTCP = +1 <= max
        self._free: list[int] = list(range(top, port_min - 1, -2))
        self.calls: dict[str, RelayCall] = {}
        self._by_port: dict[int, tuple[RelayCall, Leg, Leg, bool]] = {}

    def allocate(self, call_id: str, now: float, ports: tuple[int, int] | None = None) -> RelayCall:
        """Ports for a call (the same ones again for a re-offer of a known call).

        ``ports``: the RTP ports of legs a and b as the SIP process chose them (its
        :class:`PortPool` mirrors this range); they must be free here."""
        call = self.calls.get(call_id)
        if call is not None:
            return call
        if ports is not None:
            if ports[0] == ports[1] or not all(p in self._free for p in ports):
                raise RelayFull(f"relay ports {ports[0]}/{ports[1]} are not free")
            for p in ports:
                self._free.remove(p)
            a, b = Leg(ports[0]), Leg(ports[1])
        elif len(self._free) < 2:
            raise RelayFull("no free relay ports")
        else:
            a, b = Leg(self._free.pop()), Leg(self._free.pop())
        call = RelayCall(call_id, a, b, last_packet=now)
        self.calls[call_id] = call
        for leg, other in ((a, b), (b, a)):
            self._by_port[leg.port] = (call, leg, other, False)
            self._by_port[leg.port + 1] = (call, leg, other, True)
        return call

    def delete(self, call_id: str, reason: str = "ended") -> RelayCall | None:
        call = self.calls.pop(call_id, None)
        if call is None:
            return None
        call.ended = reason
        for leg in (call.a, call.b):
            del self._by_port[leg.port], self._by_port[leg.port + 1]
            self._free.append(leg.port)
        return call

    def receive(
        self, port: int, data: bytes, source: Address, now: float
    ) -> tuple[int, Address] | None:
        """Where to send ``data`` that arrived on ``port``: (our port to send from, to), or None."""
        entry = self._by_port.get(port)
        if entry is None:
            return None
        call, leg, other, rtcp = entry
        if not leg.latch(data, source, rtcp):
            leg.stats.dropped += 1
            return None
        call.last_packet = now
        if not rtcp and not _is_rtcp(data):
            leg.stats.record(data, now)
        if rtcp:
            dest = other.rtcp_peer
            return (other.port + 1, dest) if dest is not None else None
        if _is_rtcp(data):
            dest = other.rtp_peer
            return (other.port, dest) if dest is not None else None
        return (other.port, other.rtp_peer) if other.rtp_peer is not None else None

    def set_destination(self, call_id: str, side: str, address: Address) -> None:
        """The address the SDP named for a side: where to send before that side has latched."""
        call = self.calls[call_id]
        leg = call.a if side == "a" else call.b
        if not leg.latched:
            leg.rtp_peer = address
        if not leg.rtcp_latched:
            leg.rtcp_peer = (address[0], address[1] + 1)

    def silent(self, now: float) -> Iterator[RelayCall]:
        """Calls that carried no packet for the silence timeout."""
        for call in list(self.calls.values()):
            if now - call.last_packet >= self.silence_timeout:
                yield call


class PortPool:
    """The SIP process's view of the relay's port range: it picks a call's two RTP ports at
    once (the SDP must name them before the relay has answered) and the relay opens them."""

    def __init__(self, port_min: int, port_max: int) -> None:
        if port_min % 2:
            port_min += 1
        top = port_max - 1 if port_max % 2 else port_max - 2
        self._free: list[int] = list(range(top, port_min - 1, -2))
        self.calls: dict[str, tuple[int, int]] = {}

    def allocate(self, call_id: str) -> tuple[int, int]:
        """Leg a's and leg b's RTP ports of a call (the same again for a known call)."""
        known = self.calls.get(call_id)
        if known is not None:
            return known
        if len(self._free) < 2:
            raise RelayFull("no free relay ports")
        ports = (self._free.pop(), self._free.pop())
        self.calls[call_id] = ports
        return ports

    def release(self, call_id: str) -> bool:
        ports = self.calls.pop(call_id, None)
        if ports is None:
            return False
        self._free.extend(ports)
        return True
