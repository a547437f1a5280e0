"""The built-in RTP relay under load, next to rtpengine and the direct path.

    python bench/relay.py                       # steps 50,100,200,300,500 calls, 10 s each
    python bench/relay.py --calls 100,500 --seconds 5 --generators 2 --json /tmp/relay.json
    python bench/relay.py --targets builtin     # without rtpengine (Debian: rtpengine-daemon)
    python bench/relay.py --relay-repo ../before  # the builtin relay of another checkout
    python bench/relay.py --calls 500 --repeat 5  # five runs per column, taking turns: medians

For each step it starts `python -m heimbuero.media.relay` (its own process, uvloop), sets up
N calls over the relay's control socket as the SIP process does (`offer` and `answer` with the
ports and both sides' addresses), and runs G generator processes that play both sides of the
calls: every 20 ms each side sends one 172-byte G.711 RTP packet (12-byte header, 160 bytes of
payload carrying the send time) to its relay port and reads what arrives. The sides' packets are
spread evenly over the 20 ms (as independent phones send them), not sent in one burst per tick.
Latency is the kernel's receive time stamp of the packet on the receiving socket
(SO_TIMESTAMPNS) minus the wall clock read right before its sendto: the generator's sending of
other packets and its reading are not in the figure. The same calls then
run through rtpengine (`rtpengine --table=-1`: userspace only, one ng control port, calls set up
with ng `offer`/`answer`), and on the direct path (each side sends straight to the other) as
the floor.

It prints one markdown table on stdout: per step, packets sent and lost (a packet counts as
lost when it has not arrived 0.5 s after the step's last send), one-way latency p50/p99 through
the relay and directly, the relay's added latency (the difference), and the relay process's
CPU (per cent of one core, and CPU-seconds per call per minute). The generators' own CPU is
shown too: when they use a whole core each, the step measured the generators, not the relay.
On two or more cores the relay (builtin or rtpengine) runs pinned to core 0 and the generators
to the others (`--no-pin`: wherever the scheduler puts them), so the relay has one core of its
own and the figure is not the relay waiting for a core the generators hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from heimbuero.media.relay_client import RelayClient  # noqa: E402

HOST = "127.0.0.1"
PAYLOAD = 160
PTIME = 0.02
# (the relay's cores, the generators' cores): set by --pin, which is the default on 2+ cores
CORES: tuple[set[int], set[int]] | None = None
REALTIME = 0  # --realtime P: both relays with SCHED_FIFO at priority P


def pin(pid: int, which: int) -> None:
    """Bind process `pid` to the relay's cores (0) or the generators' (1), with --pin."""
    if CORES is not None:
        os.sched_setaffinity(pid, CORES[which])


def bencode(value: Any) -> bytes:
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, int):
        return b"i%de" % value
    data = value.encode() if isinstance(value, str) else value
    return b"%d:%s" % (len(data), data)


def bdecode(data: bytes, i: int = 0) -> tuple[Any, int]:
    c = data[i : i + 1]
    if c == b"d":
        out, i = {}, i + 1
        while data[i : i + 1] != b"e":
            k, i = bdecode(data, i)
            out[k.decode()], i = bdecode(data, i)
        return out, i + 1
    if c == b"l":
        items, i = [], i + 1
        while data[i : i + 1] != b"e":
            v, i = bdecode(data, i)
            items.append(v)
        return items, i + 1
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    colon = data.index(b":", i)
    n = int(data[i:colon])
    return data[colon + 1 : colon + 1 + n], colon + 1 + n


def ng(sock: socket.socket, port: int, command: dict[str, Any]) -> dict[str, Any]:
    cookie = os.urandom(4).hex().encode()
    sock.sendto(cookie + b" " + bencode(command), (HOST, port))
    while True:
        data = sock.recv(65535)
        if data.startswith(cookie + b" "):
            answer, _ = bdecode(data, len(cookie) + 1)
            if answer.get("result") not in (b"ok", b"pong"):
                raise RuntimeError(f"rtpengine: {answer}")
            return dict(answer)


def sdp(address: tuple[str, int]) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {address[0]}\r\ns=-\r\nc=IN IP4 {address[0]}\r\nt=0 0\r\n"
        f"m=audio {address[1]} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
    )


def sdp_port(body: bytes) -> int:
    line = next(ln for ln in body.decode().splitlines() if ln.startswith("m=audio "))
    return int(line.split()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # (Linux; Python names it not)
STAMP = struct.Struct("!q")
TIMESPEC = struct.Struct("@qq")


def generator(
    calls: list[tuple[int, int]], direct: bool, seconds: float, queue: Any, start: Any,
    phase: float = 0.0, prime: bool = False,
) -> None:  # fmt: skip
    """Both sides of `calls` ((a's relay port, b's relay port) each): each side sends every
    20 ms, the sides spread evenly over the 20 ms (shifted by `phase` of one spacing); read what
    arrives. With `prime`, each side first sends one packet that is not counted (time stamp 0),
    so that the relay has latched both sides before the first counted one: for relays told
    other addresses than the generator's (the SDP of a SIP call). Latency: the kernel's receive
    time of a packet (SO_TIMESTAMPNS) minus the wall clock taken right before its sendto, so
    neither the generator's sending of other packets nor its reading enters the figure."""
    sel = selectors.DefaultSelector()
    pairs = []
    for i, (pa, pb) in enumerate(calls):
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (a, b):
            s.bind((HOST, 0))
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sel.register(s, selectors.EVENT_READ)
        to_a = (HOST, pa) if not direct else b.getsockname()
        to_b = (HOST, pb) if not direct else a.getsockname()
        pairs.append((a, b, to_a, to_b, i))
    queue.put(("addresses", [(a.getsockname(), b.getsockname()) for a, b, *_ in pairs]))
    start_at, legs = start.get()
    if legs is not None:  # the relay's ports, known only now (rtpengine chooses them)
        pairs = [(a, b, (HOST, pa), (HOST, pb), i)
                 for (a, b, _, _, i), (pa, pb) in zip(pairs, legs, strict=True)]  # fmt: skip
    senders = []
    for a, b, to_a, to_b, i in pairs:
        senders.append((a, to_a, struct.pack("!I", 2 * i)))
        senders.append((b, to_b, struct.pack("!I", 2 * i + 1)))
    spacing = PTIME / len(senders)
    anc = socket.CMSG_SPACE(TIMESPEC.size)
    pad = bytes(PAYLOAD - STAMP.size)
    if prime:  # (a's first packet may go to b's SDP address: b has not latched yet)
        for sock, dest, ssrc in senders:
            sock.sendto(struct.pack("!BBHI", 0x80, 8, 0, 0) + ssrc + STAMP.pack(0) + pad, dest)
    while time.time() < start_at:
        time.sleep(0.001)
    latencies: list[int] = []  # ns
    sent = received = 0
    t0 = time.monotonic() + phase * spacing
    end = t0 + seconds
    seq, k, due = 1, 0, t0
    cpu0 = time.process_time()
    while True:
        now = time.monotonic()
        while due <= now and due < end:  # everything due (the select below wakes within 1 ms)
            sock, dest, ssrc = senders[k]
            head = struct.pack("!BBHI", 0x80, 8, seq & 0xFFFF, seq * PAYLOAD) + ssrc
            sock.sendto(head + STAMP.pack(time.time_ns()) + pad, dest)
            sent += 1
            k += 1
            if k == len(senders):
                k, seq = 0, seq + 1
            due = t0 + (seq - 1) * PTIME + k * spacing
        if now >= end + 0.5:
            break
        timeout = max(0.0, min(due, end + 0.5) - time.monotonic())
        for key, _ in sel.select(timeout):
            sock = key.fileobj  # type: ignore[assignment]
            while True:
                try:
                    data, cmsgs, _, _ = sock.recvmsg(2048, anc)
                except BlockingIOError:
                    break
                if len(data) < 12 + STAMP.size:
                    continue
                sent_at = STAMP.unpack_from(data, 12)[0]
                if not sent_at:
                    continue  # (a priming packet)
                arrived = None
                for level, kind, value in cmsgs:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = TIMESPEC.unpack(value[: TIMESPEC.size])
                        arrived = sec * 1_000_000_000 + nsec
                if arrived is None:  # (no kernel time stamp: the time of reading)
                    arrived = time.time_ns()
                received += 1
                latencies.append(arrived - sent_at)
    sample = latencies[:: max(1, len(latencies) // 20000)]
    queue.put(("result", {"sent": sent, "received": received,
                          "latencies": [x / 1e9 for x in sample],
                          "cpu": time.process_time() - cpu0, "wall": seconds}))  # fmt: skip


class Gen:
    def __init__(
        self,
        calls: list[tuple[int, int]],
        direct: bool,
        seconds: float,
        phase: float = 0.0,
        prime: bool = False,
    ) -> None:
        ctx = mp.get_context("fork")
        self.queue, self.start_queue = ctx.Queue(), ctx.Queue()
        args = (calls, direct, seconds, self.queue, self.start_queue, phase, prime)
        self.proc = ctx.Process(target=generator, args=args)
        self.proc.start()
        pin(self.proc.pid, 1)

    def addresses(self) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        kind, value = self.queue.get(timeout=30)
        assert kind == "addresses"
        return [tuple(map(tuple, v)) for v in value]  # type: ignore[misc]

    def start(self, at: float, legs: list[tuple[int, int]] | None = None) -> None:
        self.start_queue.put((at, legs))

    def result(self) -> dict[str, Any]:
        kind, value = self.queue.get(timeout=120)
        self.proc.join(10)
        assert kind == "result"
        return dict(value)


def run_step(
    n: int, seconds: float, generators: int, target: str, port_min: int, repo: Path = REPO
) -> dict[str, Any]:
    """N calls through a fresh relay process (builtin: the one of checkout `repo`, or
    rtpengine) or directly."""
    direct = target == "direct"
    if target == "rtpengine":
        return run_rtpengine(n, seconds, generators, port_min)
    legs = [(port_min + 4 * i, port_min + 4 * i + 2) for i in range(n)]
    chunks = [legs[g::generators] for g in range(generators)]
    gens = [Gen(c, direct, seconds, g / generators) for g, c in enumerate(chunks) if c]
    relay = None
    tmp = tempfile.TemporaryDirectory(prefix="heimbuero-bench-relay-")
    try:
        addresses = [g.addresses() for g in gens]
        if not direct:
            control = str(Path(tmp.name) / "control")
            relay = subprocess.Popen(
                [sys.executable, "-m", "heimbuero.media.relay", "--control", control,
                 "--bind", HOST, "--port-min", str(port_min),
                 "--port-max", str(port_min + 4 * n + 3), "--silence-timeout", "600",
                 "--realtime-priority", str(REALTIME)],
                stdout=subprocess.DEVNULL, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
            )  # fmt: skip
            pin(relay.pid, 0)
            while not Path(control).exists():
                time.sleep(0.05)

            async def setup() -> None:
                client = RelayClient(control, timeout=5)
                for chunk, addrs in zip(chunks, addresses, strict=False):
                    for (pa, pb), (addr_a, addr_b) in zip(chunk, addrs, strict=True):
                        key = f"bench-{pa}"
                        r1 = await client.command("offer", call_id=key, ports=[pa, pb],
                                                  address=list(addr_a))  # fmt: skip
                        r2 = await client.command("answer", call_id=key, address=list(addr_b))
                        assert r1["ok"] and r2["ok"], (r1, r2)
                await client.close()

            asyncio.run(setup())
        cpu0 = cpu_seconds(relay.pid) if relay else 0.0
        start = time.time() + 0.5
        for g in gens:
            g.start(start)
        results = [g.result() for g in gens]
        cpu = (cpu_seconds(relay.pid) - cpu0) if relay else 0.0
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(10)
        tmp.cleanup()
    return summary(n, target, results, cpu, seconds)


def run_rtpengine(n: int, seconds: float, generators: int, port_min: int) -> dict[str, Any]:
    """The same calls through rtpengine in userspace: its ports come from its SDP answers, so
    the generators learn them after the set-up (their sockets exist before it)."""
    ng_port = port_min - 1
    proc = subprocess.Popen(
        ["rtpengine", "--table=-1", "--foreground", "--log-stderr", "--log-level=3",
         f"--interface={HOST}", f"--listen-ng={HOST}:{ng_port}", f"--port-min={port_min}",
         f"--port-max={port_min + 4 * n + 99}", "--num-threads=1",
         *(["--scheduling=fifo", f"--priority={REALTIME}"] if REALTIME else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pin(proc.pid, 0)
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.settimeout(2)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                ng(control, ng_port, {"command": "ping"})
                break
            except (TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError("rtpengine did not start") from None
        # generators first (their sockets), with placeholder ports; then the calls
        placeholder = [(1, 1)] * n
        chunks = [list(range(n))[g::generators] for g in range(generators)]
        gens = [Gen([placeholder[i] for i in c], False, seconds, g / generators)
                for g, c in enumerate(chunks) if c]  # fmt: skip
        all_legs = []
        for g, c in zip(gens, chunks, strict=False):
            legs = []
            for i, (addr_a, addr_b) in zip(c, g.addresses(), strict=True):
                key = f"bench-{i}"
                offer = ng(control, ng_port, {"command": "offer", "call-id": key,
                                              "from-tag": "a", "sdp": sdp(addr_a)})  # fmt: skip
                answer = ng(control, ng_port, {"command": "answer", "call-id": key,
                                               "from-tag": "a", "to-tag": "b",
                                               "sdp": sdp(addr_b)})  # fmt: skip
                legs.append((sdp_port(answer["sdp"]), sdp_port(offer["sdp"])))
            all_legs.append(legs)
        cpu0 = cpu_seconds(proc.pid)
        start = time.time() + 0.5
        for g, legs in zip(gens, all_legs, strict=True):
            g.start(start, legs)
        results = [g.result() for g in gens]
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(10)
        control.close()
    return summary(n, "rtpengine", results, cpu, seconds)


def summary(
    n: int, target: str, results: list[dict[str, Any]], cpu: float, seconds: float
) -> dict[str, Any]:
    direct = target == "direct"
    lat = sorted(x for r in results for x in r["latencies"])
    sent = sum(r["sent"] for r in results)
    received = sum(r["received"] for r in results)
    return {
        "calls": n, "target": target, "direct": direct, "sent": sent, "lost": sent - received,
        "p50_ms": 1000 * statistics.median(lat) if lat else None,
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else None,
        "relay_cpu_pct": 100 * cpu / (seconds + 0.5),
        "gen_cpu_pct": [round(100 * r["cpu"] / (seconds + 0.5)) for r in results],
    }  # fmt: skip


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One step's K runs of one column: the medians of p50, p99 and CPU, all runs' losses,
    and the range of p99 (a single stall of the machine moves one run's p99)."""
    med = statistics.median
    return {
        **runs[0], "runs": len(runs),
        "sent": sum(r["sent"] for r in runs), "lost": sum(r["lost"] for r in runs),
        "p50_ms": med(r["p50_ms"] for r in runs), "p99_ms": med(r["p99_ms"] for r in runs),
        "p99_range_ms": [min(r["p99_ms"] for r in runs), max(r["p99_ms"] for r in runs)],
        "relay_cpu_pct": med(r["relay_cpu_pct"] for r in runs),
        "gen_cpu_pct": [round(med(r["gen_cpu_pct"][g] for r in runs))
                        for g in range(len(runs[0]["gen_cpu_pct"]))],
    }  # fmt: skip


def main() -> None:
    global CORES, REALTIME
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="50,100,200,300,500")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--generators", type=int, default=2)
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per step and column, taking turns; the table shows medians",
    )
    p.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=os.cpu_count() > 1,
        help="the relay on core 0, the generators on the other cores (default on "
        "2+ cores: the relay has one core of its own, as the target names)",
    )
    p.add_argument("--realtime", type=int, default=0, metavar="P",
                   help="run both relays with real-time scheduling, SCHED_FIFO at priority P "
                   "(builtin: --realtime-priority, as [media] realtime_priority; rtpengine: "
                   "--scheduling=fifo --priority=P); 0: normal")  # fmt: skip
    p.add_argument("--port-min", type=int, default=20000, help="below the ephemeral ports")
    p.add_argument("--targets", default="builtin,rtpengine", help="builtin and/or rtpengine")
    p.add_argument("--json", type=Path)
    p.add_argument("--relay-repo", type=Path, default=REPO,
                   help="run the builtin relay of this checkout (e.g. a worktree of another "
                   "commit, for a before/after comparison with the same generators)")  # fmt: skip
    args = p.parse_args()
    REALTIME = args.realtime
    if args.pin:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            p.error("--pin needs two cores")
        CORES = ({cores[0]}, set(cores[1:]))
    targets = ["direct", *args.targets.split(",")]
    rows = []
    for n in (int(x) for x in args.calls.split(",")):
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
        for _ in range(args.repeat):
            for target in targets:  # (taking turns, so a busy minute does not hit one column)
                r = run_step(n, args.seconds, args.generators, target, args.port_min,
                             args.relay_repo)  # fmt: skip
                print(json.dumps({k: v for k, v in r.items() if k != "latencies"}),
                      file=sys.stderr, flush=True)  # fmt: skip
                runs[target].append(r)
        rows.extend(combine(runs[t]) for t in targets)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    pinned = (f"relay pinned to core {min(CORES[0])}, generators to {sorted(CORES[1])}"
              if CORES else "not pinned")  # fmt: skip
    print(f"\n{args.seconds:.0f} s per step, {args.repeat} run(s) per step and column "
          f"(medians; p99 range of the runs), {args.generators} generator processes, "
          f"{os.cpu_count()} cores, {pinned}, "
          f"{f'SCHED_FIFO {REALTIME}' if REALTIME else 'normal scheduling'}, "
          f"{time.strftime('%Y-%m-%d')}\n")  # fmt: skip
    print(
        "| calls | relay | packets sent | lost | p50 / p99 ms | added p50 / p99 ms | "
        "p99 of the runs ms | relay CPU % | CPU-s per call-min | generators CPU % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    floor = {r["calls"]: r for r in rows if r["direct"]}
    for r in rows:
        d = floor[r["calls"]]
        added = (
            "-"
            if r["direct"]
            else (f"{r['p50_ms'] - d['p50_ms']:.3f} / {r['p99_ms'] - d['p99_ms']:.3f}")
        )
        lo, hi = r["p99_range_ms"]
        cpu = "-" if r["direct"] else f"{r['relay_cpu_pct']:.0f}"
        per = "-" if r["direct"] else f"{r['relay_cpu_pct'] / 100 * 60 / r['calls']:.3f}"
        print(f"| {r['calls']} | {r['target']} | {r['sent']} | {r['lost']} | "
              f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f} | {added} | {lo:.3f}-{hi:.3f} | {cpu} | "
              f"{per} | {'+'.join(map(str, r['gen_cpu_pct']))} |")  # fmt: skip


if __name__ == "__main__":
    main()
