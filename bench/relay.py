"""The built-in RTP relay under load, next to the direct path.

    python bench/relay.py                       # steps 50,100,200,300,500 calls, 10 s each
    python bench/relay.py --calls 100,500 --seconds 5 --generators 2 --json /tmp/relay.json

For each step it starts `python -m heimbuero.media.relay` (its own process, uvloop), sets up
N calls over the relay's control socket as the SIP process does (`offer` and `answer` with the
ports and both sides' addresses), and runs G generator processes that play both sides of the
calls: every 20 ms each side sends one 172-byte G.711 RTP packet (12-byte header, 160 bytes of
payload carrying the send time) to its relay port and reads what arrives. Then the same calls
run on the direct path (each side sends straight to the other) as the floor.

It prints one markdown table on stdout: per step, packets sent and lost (a packet counts as
lost when it has not arrived 0.5 s after the step's last send), one-way latency p50/p99 through
the relay and directly, the relay's added latency (the difference), and the relay process's
CPU (per cent of one core, and CPU-seconds per call per minute). The generators' own CPU is
shown too: when they use a whole core each, the step measured the generators, not the relay.
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def generator(
    calls: list[tuple[int, int]], direct: bool, seconds: float, queue: Any, start: Any
) -> None:
    """Both sides of `calls` ((a's relay port, b's relay port) each): send every 20 ms, read."""
    sel = selectors.DefaultSelector()
    pairs = []
    for i, (pa, pb) in enumerate(calls):
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (a, b):
            s.bind((HOST, 0))
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sel.register(s, selectors.EVENT_READ)
        to_a = (HOST, pa) if not direct else b.getsockname()
        to_b = (HOST, pb) if not direct else a.getsockname()
        pairs.append((a, b, to_a, to_b, i))
    queue.put(("addresses", [(a.getsockname(), b.getsockname()) for a, b, *_ in pairs]))
    start_at = float(start.get())
    while time.time() < start_at:
        time.sleep(0.001)
    latencies: list[float] = []
    sent = received = 0
    seq = 0
    t0 = time.monotonic()
    end = t0 + seconds
    tick = t0
    cpu0 = time.process_time()
    while True:
        now = time.monotonic()
        if now >= tick and now < end:
            seq += 1
            head = struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, seq * PAYLOAD, 0)
            for a, b, to_a, to_b, i in pairs:
                stamp = struct.pack("!d", time.monotonic())
                body = stamp + bytes(PAYLOAD - 8)
                a.sendto(head[:8] + struct.pack("!I", 2 * i) + body, to_a)
                b.sendto(head[:8] + struct.pack("!I", 2 * i + 1) + body, to_b)
                sent += 2
            tick += PTIME
        if now >= end + 0.5:
            break
        timeout = max(0.0, min(tick, end + 0.5) - time.monotonic())
        for key, _ in sel.select(timeout):
            sock = key.fileobj
            while True:
                try:
                    data = sock.recv(2048)  # type: ignore[union-attr]
                except BlockingIOError:
                    break
                if len(data) >= 20:
                    received += 1
                    latencies.append(time.monotonic() - struct.unpack("!d", data[12:20])[0])
    queue.put(("result", {"sent": sent, "received": received,
                          "latencies": latencies[::max(1, len(latencies) // 20000)],
                          "cpu": time.process_time() - cpu0, "wall": seconds}))  # fmt: skip


class Gen:
    def __init__(self, calls: list[tuple[int, int]], direct: bool, seconds: float) -> None:
        ctx = mp.get_context("fork")
        self.queue, self.start_queue = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(
            target=generator, args=(calls, direct, seconds, self.queue, self.start_queue)
        )
        self.proc.start()

    def addresses(self) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        kind, value = self.queue.get(timeout=30)
        assert kind == "addresses"
        return [tuple(map(tuple, v)) for v in value]  # type: ignore[misc]

    def start(self, at: float) -> None:
        self.start_queue.put(at)

    def result(self) -> dict[str, Any]:
        kind, value = self.queue.get(timeout=120)
        self.proc.join(10)
        assert kind == "result"
        return dict(value)


def run_step(
    n: int, seconds: float, generators: int, direct: bool, port_min: int
) -> dict[str, Any]:
    """N calls through a fresh relay process (or directly); the measurements."""
    legs = [(port_min + 4 * i, port_min + 4 * i + 2) for i in range(n)]
    chunks = [legs[g::generators] for g in range(generators)]
    gens = [Gen(c, direct, seconds) for c in chunks if c]
    relay = None
    tmp = tempfile.TemporaryDirectory(prefix="heimbuero-bench-relay-")
    try:
        addresses = [g.addresses() for g in gens]
        if not direct:
            control = str(Path(tmp.name) / "control")
            relay = subprocess.Popen(
                [sys.executable, "-m", "heimbuero.media.relay", "--control", control,
                 "--bind", HOST, "--port-min", str(port_min),
                 "--port-max", str(port_min + 4 * n + 3), "--silence-timeout", "600"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
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
    lat = sorted(x for r in results for x in r["latencies"])
    sent = sum(r["sent"] for r in results)
    received = sum(r["received"] for r in results)
    return {
        "calls": n, "direct": direct, "sent": sent, "lost": sent - received,
        "p50_ms": 1000 * statistics.median(lat) if lat else None,
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else None,
        "relay_cpu_pct": 100 * cpu / (seconds + 0.5),
        "gen_cpu_pct": [round(100 * r["cpu"] / (seconds + 0.5)) for r in results],
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="50,100,200,300,500")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--generators", type=int, default=2)
    p.add_argument("--port-min", type=int, default=46000)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = []
    for n in (int(x) for x in args.calls.split(",")):
        for direct in (True, False):
            r = run_step(n, args.seconds, args.generators, direct, args.port_min)
            print(json.dumps(r), file=sys.stderr, flush=True)
            rows.append(r)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\nbuilt-in relay, {args.seconds:.0f} s per step, {args.generators} generator "
          f"processes, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n")  # fmt: skip
    print(
        "| calls | packets sent | lost (relay) | lost (direct) | p50 relay / direct ms | "
        "p99 relay / direct ms | added p50 / p99 ms | relay CPU % | CPU-s per call-min | "
        "generators CPU % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d, r in zip(rows[::2], rows[1::2], strict=True):
        per_call_min = r["relay_cpu_pct"] / 100 * 60 / r["calls"]
        print(f"| {r['calls']} | {r['sent']} | {r['lost']} | {d['lost']} | "
              f"{r['p50_ms']:.3f} / {d['p50_ms']:.3f} | {r['p99_ms']:.3f} / {d['p99_ms']:.3f} | "
              f"{r['p50_ms'] - d['p50_ms']:.3f} / {r['p99_ms'] - d['p99_ms']:.3f} | "
              f"{r['relay_cpu_pct']:.0f} | {per_call_min:.3f} | "
              f"{'+'.join(map(str, r['gen_cpu_pct']))} |")  # fmt: skip


if __name__ == "__main__":
    main()
