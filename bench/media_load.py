#!/usr/bin/env python3
"""SIP INVITE latency of heimbuero while relayed calls run, next to the idle figure.

    python bench/media_load.py                   # 300 relayed calls, 3 repeats (~3 min)
    python bench/media_load.py --held 300 --rate 200 --seconds 8 --repeat 3 --json /tmp/m.json

Each repeat starts a fresh `heimbuero serve` (embedded store, `[media] relay = "always"`, the
built-in relay) and times the same calls twice in it, with the latency row of bench/run.py
(SIPp caller -> heimbuero -> SIPp callee, `--rate` calls/s for `--seconds`; every INVITE
carries SDP, so the relay opens ports for each of these calls too; timed from a loopback
capture with the kernel's time stamps):

1. **idle**: nothing else runs;
2. **loaded**: first `--held` calls are set up through heimbuero and held (a second SIPp caller
   and callee, registered as `user0`), every one of them relayed. The relay ports each side was
   given are read from the SDP the two SIPp received (their message traces), and the generators
   of bench/relay.py play both sides of every held call through them: one 172-byte G.711 packet
   per side every 20 ms, both directions, spread evenly. The latency calls run while they play.

It prints one markdown table: per state the INVITE round trip at the caller (INVITE sent ->
200 received) and the time heimbuero held the INVITE and the 200 (in -> out), p50/p99 each,
medians over the repeats; for the loaded state also the held calls' audio: packets sent and
lost, and the relay's one-way latency p50/p99 over the same seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import relay as media  # noqa: E402
import run as sipbench  # noqa: E402

HELD_CALLEE = "user0"
# the relay's ports: below the bench's SIPp ports (bench/run.py picks them from 20000 up)
PORT_MIN, PORT_MAX = 10000, 14999


class RelayedHeimbuero(sipbench.Heimbuero):
    """heimbuero with every call's audio relayed by the built-in relay."""

    label = "heimbuero-relayed"
    template: Path | None = None
    office_template: Path | None = None
    realtime = 0  # [media] realtime_priority (--realtime)

    @classmethod
    def copy_data(cls, template: Path, data: Path) -> None:
        super().copy_data(template, data)
        cfg = data / "config.toml"
        media_keys = (
            f'[media]\nrelay = "always"\nbackend = "builtin"\nport_min = {PORT_MIN}\n'
            f"port_max = {PORT_MAX}\nsilence_timeout = 600\n"
            f"realtime_priority = {cls.realtime}\n"
        )
        text, n = re.subn(r"(?m)^\[media\]\s*$", media_keys, cfg.read_text(), count=1)
        if n != 1:
            raise RuntimeError("config.toml has no [media] table")
        cfg.write_text(text)


def sdp_ports(trace: Path, first_line: re.Pattern[str]) -> dict[str, int]:
    """{Call-ID: audio port} of every message in a SIPp message trace (-trace_msg) that SIPp
    received and whose first line matches."""
    out: dict[str, int] = {}
    try:
        text = trace.read_text(errors="replace")
    except FileNotFoundError:
        return out
    for chunk in re.split(r"(?m)^-{20,}.*$", text):
        head, _, message = chunk.strip().partition("\n\n")
        if "message received" not in head:
            continue
        message = message.strip()
        if not first_line.match(message):
            continue
        call_id = re.search(r"(?mi)^(?:call-id|i)\s*:\s*(\S+)", message)
        port = re.search(r"(?m)^m=audio (\d+) ", message)
        if call_id and port:
            out[call_id.group(1)] = int(port.group(1))
    return out


def hold_calls(
    b: sipbench.Bench, server: RelayedHeimbuero, caller: int, callee: int, held: int
) -> list[tuple[int, int]]:
    """`held` calls from SIPp on `caller` to HELD_CALLEE (SIPp on `callee`), answered and held;
    per call (the port the caller's side sends to, the port the callee's side sends to)."""
    uas_trace, uac_trace = b.tmp / "held-uas.msg", b.tmp / "held-uac.msg"
    b.procs.start(  # (the held calls' SIPp are stopped with the rest: Procs.stop_all)
        b._sipp_base(callee)
        + ["-sf", sipbench.SCENARIOS / "uas_call.xml", "-m", str(held), "-timeout", "3600s",
           "-trace_msg", "-message_file", str(uas_trace)],
        b.name("uas-held"),
    )  # fmt: skip
    sipbench.wait_until(lambda: sipbench.port_bound(callee), 10, "SIPp held callee listening")
    b.procs.start(
        b._sipp_base(caller)
        + ["-sf", sipbench.SCENARIOS / "uac_hold.xml", f"{sipbench.HOST}:{server.port}",
           "-s", HELD_CALLEE, "-key", "domain", sipbench.DOMAIN, "-m", str(held),
           "-l", str(held), "-r", "100", "-d", "3600000", "-timeout", "3600s",
           "-trace_msg", "-message_file", str(uac_trace)],
        b.name("uac-held"),
    )  # fmt: skip
    ok = re.compile(r"SIP/2\.0 200 ")
    invite = re.compile(r"INVITE ")

    def established() -> dict[str, tuple[int, int]] | None:
        a, z = sdp_ports(uac_trace, ok), sdp_ports(uas_trace, invite)
        both = {cid: (a[cid], z[cid]) for cid in a.keys() & z.keys()}
        return both if len(both) >= held else None

    legs = sipbench.wait_until(established, 60 + held / 20, f"{held} held calls answered", 0.5)
    for a_port, b_port in legs.values():
        if not (PORT_MIN <= a_port <= PORT_MAX and PORT_MIN <= b_port <= PORT_MAX):
            raise RuntimeError(f"a held call is not relayed: SDP ports {a_port}, {b_port}")
    return list(legs.values())


def one_repeat(b: sipbench.Bench, rep: int, held: int, generators: int) -> dict[str, Any]:
    s = b.s
    caller, callee = b.ports.one(), b.ports.one()
    held_caller, held_callee = b.ports.one(), b.ports.one()
    server = RelayedHeimbuero(b)
    server.also_trusted = (held_caller,)
    try:
        server.start(caller)
        sipbench.register_callee(b, server, callee)
        r = b.register(server, held_callee, [HELD_CALLEE], 10)
        if not r.passed(0):
            raise RuntimeError(f"registering {HELD_CALLEE} failed: {r.brief()}")
        idle = sipbench.time_calls(b, server, caller, callee, sipbench.CALLEE, f"idle #{rep + 1}")
        legs = hold_calls(b, server, held_caller, held_callee, held)
        sipbench.log(f"{len(legs)} held calls relayed; audio starts")
        play = s.latency_seconds + 8  # (the calls' own set-up and teardown inside the window)
        chunks = [legs[g::generators] for g in range(generators)]
        gens = [
            media.Gen(c, False, play, g / generators, prime=True) for g, c in enumerate(chunks) if c
        ]
        for g in gens:
            g.addresses()
        for g in gens:
            g.start(time.time() + 0.5)
        time.sleep(2.5)  # (every side latched, the audio steady)
        t0 = time.monotonic()
        loaded = sipbench.time_calls(
            b, server, caller, callee, sipbench.CALLEE, f"loaded #{rep + 1}"
        )
        if time.monotonic() - t0 > play - 2.5:
            sipbench.log("  the latency calls outlasted the audio: the loaded figure is partial")
        audio = media.summary(held, "builtin", [g.result() for g in gens], 0.0, play)
        sipbench.log(f"audio #{rep + 1}: " + json.dumps({k: audio[k] for k in
                     ("sent", "lost", "p50_ms", "p99_ms", "gen_cpu_pct")}))  # fmt: skip
    finally:
        server.stop()
        b.procs.stop_all()
    return {"idle": idle, "loaded": loaded, "audio": audio}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--held", type=int, default=300, help="relayed calls playing audio")
    p.add_argument("--rate", type=int, default=200, help="latency calls per second")
    p.add_argument("--seconds", type=float, default=8.0, help="of latency calls per state")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--generators", type=int, default=2)
    p.add_argument(
        "--realtime",
        type=int,
        default=0,
        metavar="P",
        help="[media] realtime_priority = P: the relay with SCHED_FIFO (0: normal)",
    )
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, traces)")
    args = p.parse_args()
    if os.geteuid() != 0:
        p.error("the loopback capture needs root (or CAP_NET_RAW)")
    RelayedHeimbuero.realtime = args.realtime
    s = sipbench.Settings(
        repeat=args.repeat, contacts=1, warmup_contacts=0,
        latency_rate=args.rate, latency_seconds=args.seconds,
    )  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="heimbuero-bench-media-"))
    b = sipbench.Bench(s, tmp)
    runs = []
    try:
        for rep in range(args.repeat):
            runs.append(one_repeat(b, rep, args.held, args.generators))
    finally:
        b.procs.stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            sipbench.log(f"kept {tmp}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    med = statistics.median
    print(f"\n{args.repeat} repeat(s), {args.rate} calls/s for {args.seconds:.0f} s per state, "
          f"{args.held} held relayed calls, {os.cpu_count()} cores, relay "
          f"{f'SCHED_FIFO {args.realtime}' if args.realtime else 'at normal priority'}, "
          f"{time.strftime('%Y-%m-%d')}; medians of the repeats\n")  # fmt: skip
    print("| state | INVITE->200 at the caller p50 / p99 ms | heimbuero holds INVITE p50 / "
          "p99 ms | holds 200 p50 / p99 ms | calls ok / failed | held calls' audio: "
          "sent / lost, relay p50 / p99 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for state in ("idle", "loaded"):
        rs = [r[state] for r in runs]

        def m(key: str, rs: list[dict[str, Any]] = rs) -> str:
            return f"{med(r[key] for r in rs):.3f}"

        if state == "loaded":
            au = [r["audio"] for r in runs]
            sent, lost = sum(a["sent"] for a in au), sum(a["lost"] for a in au)
            p50, p99 = med(a["p50_ms"] for a in au), med(a["p99_ms"] for a in au)
            audio = f"{sent} / {lost}, {p50:.3f} / {p99:.3f}"
        else:
            audio = "-"
        ok, failed = sum(r["calls"] for r in rs), sum(r["failed"] for r in rs)
        print(f"| {state} | {m('rtt_p50_ms')} / {m('rtt_p99_ms')} | "
              f"{m('invite_held_p50_ms')} / {m('invite_held_p99_ms')} | "
              f"{m('ok_held_p50_ms')} / {m('ok_held_p99_ms')} | "
              f"{ok} / {failed} | {audio} |")  # fmt: skip


if __name__ == "__main__":
    main()
