"""Kernel-timestamped capture of SIP over UDP on the loopback interface, for the latency row.

SIPp's response times have millisecond resolution, too coarse for a proxy that adds tens of
microseconds. Here an AF_PACKET socket on `lo` gets every UDP datagram to or from the given
ports with the kernel's nanosecond timestamp, taken when the sender hands it to the interface,
so the time a proxy holds a message is (its datagram out) - (the datagram in), independent of
when this process reads them. Needs root or CAP_NET_RAW.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
from dataclasses import dataclass

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
# classic BPF opcodes
_LD_B_ABS, _LD_H_ABS, _LD_H_IND, _LDX_MSH = 0x30, 0x28, 0x48, 0xB1
_JEQ_K, _JSET_K, _AND_K, _RET_K = 0x15, 0x45, 0x54, 0x06
_SKF_AD_PKTTYPE = -0x1000 + 4


@dataclass(frozen=True)
class Datagram:
    """One captured UDP datagram: kernel time (s), ports and the SIP fields the bench needs."""

    t: float
    src: int
    dst: int
    first_line: str
    call_id: str
    cseq_method: str


def _bpf(ports: list[int]) -> bytes:
    """Accept outgoing IPv4/UDP datagrams (no fragments) from or to one of `ports`."""
    n = len(ports)
    prog: list[tuple[int, int, int, int]] = []

    def op(code: int, jt: int = 0, jf: int = 0, k: int = 0) -> None:
        prog.append((code, jt, jf, k & 0xFFFFFFFF))

    # Each packet is seen twice on lo (sent and received); keep the sent copy.
    # layout: 0 pkttype, 1 jeq, 2 ldb[0], 3 and, 4 jeq v4, 5 ldb[9], 6 jeq udp, 7 ldh[6],
    # 8 jset frag, 9 ldx msh, 10 ldh[x+0], 11..11+n-1 jeq src, 11+n ldh[x+2], ... jeq dst,
    # then ret 0, ret accept.
    reject = 12 + 2 * n  # index of "ret 0"
    accept = reject + 1

    def to(target: int) -> int:
        return target - len(prog) - 1

    op(_LD_B_ABS, k=_SKF_AD_PKTTYPE)
    op(_JEQ_K, 0, to(reject), PACKET_OUTGOING)
    op(_LD_B_ABS, k=0)
    op(_AND_K, k=0xF0)
    op(_JEQ_K, 0, to(reject), 0x40)
    op(_LD_B_ABS, k=9)
    op(_JEQ_K, 0, to(reject), 17)
    op(_LD_H_ABS, k=6)
    op(_JSET_K, to(reject), 0, 0x1FFF)
    op(_LDX_MSH, k=0)
    op(_LD_H_IND, k=0)
    for p in ports:
        op(_JEQ_K, to(accept), 0, p)
    op(_LD_H_IND, k=2)
    for p in ports:
        op(_JEQ_K, to(accept), 0, p)
    assert len(prog) == reject
    op(_RET_K, k=0)
    op(_RET_K, k=0x40000)
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def _header(text: str, *names: str) -> str:
    for line in text.split("\r\n")[1:]:
        if not line:
            break
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() in names:
            return value.strip()
    return ""


class LoopbackCapture:
    """Collects the datagrams to or from `ports` on lo, from open() (or entering) to leaving."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.raw: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def __enter__(self) -> LoopbackCapture:
        if self._sock is None:
            self.open()
        return self

    def open(self) -> None:
        """Open the socket and start reading; PermissionError without root or CAP_NET_RAW."""
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        code = _bpf(self.ports)
        buf = ctypes.create_string_buffer(code)
        fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        self._filter_buf = buf  # the kernel copies it, but keep it alive until attached
        sock.bind(("lo", ETH_P_ALL))
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._sock is not None
        anc = socket.CMSG_SPACE(16)
        while not self._stop.is_set():
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(65536, anc)
            except TimeoutError:
                continue
            except OSError:
                break
            t = 0.0
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", value[:16])
                    t = sec + nsec / 1e9
            self.raw.append((t, data))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def datagrams(self) -> list[Datagram]:
        out = []
        for t, data in self.raw:
            ihl = (data[0] & 0x0F) * 4
            src, dst = struct.unpack("!HH", data[ihl : ihl + 4])
            text = data[ihl + 8 :].decode("latin-1")
            first = text.split("\r\n", 1)[0]
            cseq = _header(text, "cseq").split()
            out.append(
                Datagram(
                    t=t,
                    src=src,
                    dst=dst,
                    first_line=first,
                    call_id=_header(text, "call-id", "i"),
                    cseq_method=cseq[1] if len(cseq) > 1 else "",
                )
            )
        return out


def _first(found: dict[str, float], key: str, t: float) -> None:
    if key not in found:
        found[key] = t


def invite_timings(
    datagrams: list[Datagram], caller: int, callee: int, proxy: int | None
) -> dict[str, list[float]]:
    """Per-call times in seconds (first copies only, retransmissions ignored):

    rtt: the caller's INVITE sent -> the 200 for it received; and with a proxy:
    invite_held: INVITE into the proxy -> out to the callee; ok_held: the callee's 200 into the
    proxy -> out to the caller; held: their sum, the latency the proxy adds to call set-up.
    """
    calls: dict[str, dict[str, float]] = {}
    for d in datagrams:
        if not d.call_id or d.cseq_method != "INVITE":
            continue
        c = calls.setdefault(d.call_id, {})
        if d.first_line.startswith("INVITE "):
            if d.src == caller:
                _first(c, "inv_from_caller", d.t)
            elif proxy is not None and d.src == proxy and d.dst == callee:
                _first(c, "inv_to_callee", d.t)
        elif d.first_line.startswith("SIP/2.0 200"):
            if d.dst == caller:
                _first(c, "ok_to_caller", d.t)
            if proxy is not None and d.src == callee and d.dst == proxy:
                _first(c, "ok_from_callee", d.t)
    out: dict[str, list[float]] = {"rtt": [], "invite_held": [], "ok_held": [], "held": []}
    for c in calls.values():
        if "inv_from_caller" in c and "ok_to_caller" in c:
            out["rtt"].append(c["ok_to_caller"] - c["inv_from_caller"])
        if proxy is not None and len(c) == 4:
            inv = c["inv_to_callee"] - c["inv_from_caller"]
            ok = c["ok_to_caller"] - c["ok_from_callee"]
            out["invite_held"].append(inv)
            out["ok_held"].append(ok)
            out["held"].append(inv + ok)
    return out
