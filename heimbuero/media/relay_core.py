"""The built-in RTP relay's state, sans-IO: port pairs, latching, per-stream statistics.

A call gets two legs (caller side ``a``, callee side ``b``), each with an RTP port and the
port above it for RTCP. A packet arriving on a leg's port comes from that leg's device and is
sent out of the *other* leg's port to the other device. Latching (symmetric RTP): a leg learns
its device's real address from the first RTP packet it receives; after that, packets from any
other source are dropped, except that a packet carrying the latched SSRC re-latches (a phone
whose NAT binding changed keeps its audio; a third party who does not know the SSRC cannot
take the stream). RTCP latches on its own port the same way (by source address only).
Statistics per direction: loss and jitter from RTP sequence numbers and timestamps
(:class:`StreamStats`), and what the receiving phone says in its RTCP reports
(:class:`ReportStats`); packets are counted, never changed.
Nothing here touches a socket or a clock: the asyncio adapter feeds ``receive(port, data,
source, now)`` and sends what it returns.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]


def peer_address(addr: tuple[object, ...]) -> Address:
    """A datagram's source as ``(host, port)``: an IPv6 socket's 4-tuple (host, port, flow
    info, scope) loses the last two, an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``)
    becomes the IPv4 one, and an IPv6 address is written in its one canonical form, so that
    the same phone always compares equal (latching, RTCP after RTP)."""
    return canonical_host(str(addr[0])), int(addr[1])  # type: ignore[call-overload]


def canonical_host(host: str) -> str:
    """An IP address in canonical form (IPv4-mapped IPv6 as IPv4, brackets dropped; a zone
    ``%eth0`` kept); anything else unchanged."""
    bare, zone, scope = host.strip("[]").partition("%")
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip) + zone + scope


def is_ipv6(host: str) -> bool:
    """Whether ``host`` (an IP address, perhaps in brackets) is an IPv6 one (an IPv4-mapped
    IPv6 address counts as IPv4)."""
    return ":" in canonical_host(host)


class RelayFull(Exception):
    """No free port pair is left in the configured range."""


RTP_SEQ_MOD = 0x10000
MAX_DROPOUT = 3000  # RFC 3550 A.1: a jump forward by more is a restart (or junk) ...
MAX_MISORDER = 100  # ... and so is a jump back by more than this
# a transit time changing by more than this many seconds from one packet to the next is a
# jump of the sender's timestamps (a restarted clock), not network jitter: the jitter goes on
# from the new transit time instead of taking a step of seconds
MAX_TRANSIT_STEP = 1.0
DEFAULT_RATE = 8000  # PCMA, PCMU, G.722 (whose RTP clock is 8000), telephone-event with them
MAX_RATE = 1_000_000
MAX_RATES = 32  # payload types of one call whose clock rate the relay keeps
MAX_RTCP_PACKETS = 16  # packets of one compound RTCP packet that are looked at
MAX_REPORT_SOURCES = 8  # senders (SSRCs) whose reports one phone's statistics keep apart

# sequence number, timestamp and SSRC of an RTP header, read at offset 2 in one call
_rtp_fields = struct.Struct("!HII").unpack_from


@dataclass(slots=True)
class StreamStats:
    """One direction of RTP as the relay received it, from sequence numbers and timestamps:
    expected vs. received packets (RFC 3550 A.1/A.3: sequence wrap; a jump of more than
    MAX_DROPOUT ahead or MAX_MISORDER back that the next packet confirms, or a new SSRC, is a
    restart of the count, whose earlier expected/received stay summed in), and the interarrival
    jitter (RFC 3550 A.8) in milliseconds of the payload's clock rate."""

    packets: int = 0  # RTP packets accepted (and forwarded)
    octets: int = 0
    dropped: int = 0  # packets from a stranger, or no RTP/RTCP at all: not forwarded
    restarts: int = 0  # sequence restarts: a new SSRC (re-INVITE) or a confirmed big jump
    jitter_ms: float = 0.0
    _ssrc: int | None = None
    _base_seq: int = 0
    _max_seq: int = 0
    _cycles: int = 0
    _bad_seq: int = RTP_SEQ_MOD + 1
    _received: int = 0  # packets of the current run that the sequence count accepted
    _expected_prior: int = 0  # of earlier runs
    _received_prior: int = 0
    _transit: float | None = None
    _last_ts: int | None = None
    _rate: int = DEFAULT_RATE

    def record(self, data: bytes, now: float, clock_rate: int = DEFAULT_RATE) -> None:
        """Count one RTP packet (at least 12 bytes, version 2) that arrived at ``now`` (s)."""
        # (once per packet: the steady state -- the same SSRC, a small step ahead -- and the
        # jitter are written out here rather than in calls; _update handles the rest)
        self.packets += 1
        self.octets += len(data)
        seq, ts, ssrc = _rtp_fields(data, 2)
        if ssrc == self._ssrc:
            max_seq = self._max_seq
            if (seq - max_seq) % RTP_SEQ_MOD < MAX_DROPOUT:
                if seq < max_seq:
                    self._cycles += RTP_SEQ_MOD  # wrapped
                self._max_seq = seq
            elif not self._update(seq):
                return  # a big jump not (yet) confirmed: neither counted nor timed
        elif self._ssrc is None:
            self._ssrc = ssrc
            self._start(seq)
        else:
            self._ssrc = ssrc
            self._restart(seq)
        self._received += 1
        # interarrival jitter, RFC 3550 A.8
        if clock_rate != self._rate:
            self._rate, self._transit = clock_rate, None  # (another payload clock: start over)
        if ts == self._last_ts:
            return  # the same sampling instant (an RFC 4733 event's repeats): no spacing
        self._last_ts = ts
        transit = now * clock_rate - ts
        previous = self._transit
        self._transit = transit
        if previous is not None:
            d = abs(transit - previous)
            if d <= clock_rate * MAX_TRANSIT_STEP:  # (more: a timestamp discontinuity)
                self.jitter_ms += (d * 1000 / clock_rate - self.jitter_ms) / 16

    def _start(self, seq: int) -> None:
        self._base_seq = self._max_seq = seq
        self._cycles = self._received = 0
        self._bad_seq = RTP_SEQ_MOD + 1
        self._transit = self._last_ts = None

    def _restart(self, seq: int) -> None:
        self._expected_prior += self._run_expected()
        self._received_prior += self._received
        self.restarts += 1
        self._start(seq)

    def _update(self, seq: int) -> bool:
        udelta = (seq - self._max_seq) % RTP_SEQ_MOD
        if udelta < MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += RTP_SEQ_MOD  # wrapped
            self._max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) % RTP_SEQ_MOD
                return False
            # two packets in sequence after the jump: the sender restarted (RFC 3550 A.1);
            # the first of the two is counted with the new run
            self._restart((seq - 1) % RTP_SEQ_MOD)
            self._received = 1
            self._update(seq)
        # (else: a duplicate or a late packet: received, and the sequence stays)
        return True

    def _run_expected(self) -> int:
        if self._ssrc is None:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1

    @property
    def source(self) -> int | None:
        """The SSRC of the stream now counted."""
        return self._ssrc

    @property
    def clock_rate(self) -> int:
        """The clock rate of the latest packet's payload type."""
        return self._rate

    @property
    def expected(self) -> int:
        return self._expected_prior + self._run_expected()

    @property
    def received(self) -> int:
        """Packets the sequence count accepted (duplicates too, as RFC 3550 A.3 counts)."""
        return self._received_prior + self._received

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    @property
    def loss_pct(self) -> float:
        expected = self.expected
        return round(100.0 * self.lost / expected, 1) if expected else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "packets": self.packets,
            "bytes": self.octets,
            "dropped": self.dropped,
            "expected": self.expected,
            "lost": self.lost,
            "loss_pct": self.loss_pct,
            "jitter_ms": round(self.jitter_ms, 2),
            "restarts": self.restarts,
        }


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block of an RTCP SR or RR (RFC 3550 §6.4.1)."""

    reporter: int  # SSRC of the phone that reports
    ssrc: int  # the source it received
    fraction_lost: int  # of 256, since its previous report
    cumulative_lost: int  # since the start (signed 24 bit: duplicates make it negative)
    highest_seq: int
    jitter: int  # interarrival jitter, timestamp units


def parse_rtcp(data: bytes) -> list[ReportBlock]:
    """The report blocks of a (compound) RTCP packet's SRs and RRs. Anything that is not
    well-formed ends the walk with what was found so far: never an exception."""
    blocks: list[ReportBlock] = []
    offset = 0
    for _ in range(MAX_RTCP_PACKETS):
        if len(data) - offset < 8:
            break
        first, ptype = data[offset], data[offset + 1]
        size = (int.from_bytes(data[offset + 2 : offset + 4], "big") + 1) * 4
        if first >> 6 != 2 or offset + size > len(data):
            break
        count = first & 0x1F
        start = {200: 28, 201: 8}.get(ptype)
        if start is not None and start + 24 * count <= size:
            reporter = int.from_bytes(data[offset + 4 : offset + 8], "big")
            for i in range(count):
                b = data[offset + start + 24 * i : offset + start + 24 * (i + 1)]
                lost = int.from_bytes(b[5:8], "big")
                blocks.append(
                    ReportBlock(
                        reporter=reporter,
                        ssrc=int.from_bytes(b[0:4], "big"),
                        fraction_lost=b[4],
                        cumulative_lost=lost - (1 << 24) if lost & 0x800000 else lost,
                        highest_seq=int.from_bytes(b[8:12], "big"),
                        jitter=int.from_bytes(b[12:16], "big"),
                    )
                )
        offset += size
    return blocks


@dataclass(slots=True)
class ReportStats:
    """What one phone said in its RTCP reports about the audio it received (RFC 3550 §6.4):
    the worst fraction lost of one report interval, the cumulative loss (the highest each
    source reached, summed over sources: a re-INVITE's new stream counts again from zero),
    the highest interarrival jitter."""

    reports: int = 0  # report blocks
    fraction_lost: int = 0  # of 256
    jitter: int = 0  # timestamp units
    _lost: dict[int, int] = field(default_factory=dict)

    def record(self, block: ReportBlock) -> None:
        self.reports += 1
        self.fraction_lost = max(self.fraction_lost, block.fraction_lost)
        self.jitter = max(self.jitter, block.jitter)
        if block.ssrc in self._lost or len(self._lost) < MAX_REPORT_SOURCES:
            self._lost[block.ssrc] = max(self._lost.get(block.ssrc, 0), block.cumulative_lost)

    def as_dict(self, clock_rate: int) -> dict[str, Any]:
        return {
            "reports": self.reports,
            "loss_pct": round(self.fraction_lost * 100 / 256, 1),
            "lost": sum(self._lost.values()),
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
    reports: ReportStats = field(default_factory=ReportStats)  # what its phone said it received

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
    rates: dict[int, int] = field(default_factory=dict)  # payload type -> clock rate (SDP)

    def rate(self, data: bytes) -> int:
        return self.rates.get(data[1] & 0x7F, DEFAULT_RATE)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per direction (``a``: what the caller sent, ``b``: the callee): what the relay
        counted, and under ``reported`` what the receiving phone said in RTCP (if it did)."""
        out: dict[str, dict[str, Any]] = {}
        for name, leg, other in (("a", self.a, self.b), ("b", self.b, self.a)):
            side = leg.stats.as_dict()
            if other.reports.reports:
                side["reported"] = other.reports.as_dict(leg.stats.clock_rate)
            out[name] = side
        return out


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
        # the steady state first: RTP version 2 (no RTCP packet type in the second byte) on
        # the RTP port from the latched source -- what Leg.latch accepts without a change
        if (
            not rtcp
            and leg.latched
            and source == leg.rtp_peer
            and len(data) >= 12
            and data[0] >> 6 == 2
            and not 192 <= data[1] <= 223
        ):
            call.last_packet = now
            leg.stats.record(data, now, call.rates.get(data[1] & 0x7F, DEFAULT_RATE))
            dest = other.rtp_peer
            return (other.port, dest) if dest is not None else None
        if not leg.latch(data, source, rtcp):
            leg.stats.dropped += 1
            return None
        call.last_packet = now
        mux = not rtcp and _is_rtcp(data)
        if rtcp or mux:
            own = leg.stats.source
            for block in parse_rtcp(data):
                if block.ssrc != own:  # (a report about its own stream is no reception)
                    leg.reports.record(block)
        else:
            leg.stats.record(data, now, call.rate(data))
        dest = other.rtcp_peer if rtcp else other.rtp_peer
        if dest is None:
            return None
        return (other.port + 1, dest) if rtcp else (other.port, dest)

    def set_destination(self, call_id: str, side: str, address: Address) -> None:
        """The address the SDP named for a side: where to send before that side has latched."""
        call = self.calls[call_id]
        leg = call.a if side == "a" else call.b
        address = (canonical_host(address[0]), address[1])
        if not leg.latched:
            leg.rtp_peer = address
        if not leg.rtcp_latched:
            leg.rtcp_peer = (address[0], address[1] + 1)

    def set_rates(self, call_id: str, rates: object) -> None:
        """Clock rates of payload types (``{"8": 8000, ...}``, from the SDP the server rewrote);
        what is no sensible number is ignored."""
        call = self.calls.get(call_id)
        if call is None or not isinstance(rates, dict):
            return
        for key, value in list(rates.items())[:MAX_RATES]:
            try:
                pt, rate = int(key), int(value)
            except (TypeError, ValueError):
                continue
            if (
                0 <= pt <= 127
                and 0 < rate <= MAX_RATE
                and (pt in call.rates or len(call.rates) < MAX_RATES)
            ):
                call.rates[pt] = rate

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
