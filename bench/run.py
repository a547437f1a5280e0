#!/usr/bin/env python3
"""heimbuero side by side with Kamailio and the direct SIPp floor, in one run on this machine.

    python bench/run.py [--repeat N] [--quick] [--only ROWS] [--targets T] [--json FILE]
                        [--memory-repeat N] [--memory-rate R] [--keep]

Prints one markdown table (stdout); progress goes to stderr. What each row measures and how:
bench/README.md. Everything listens on 127.0.0.1 on ports picked free; every process is bounded
in count (-m) and time (-timeout, wait deadlines) and is stopped by its own PID in a finally.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCENARIOS = BENCH / "scenarios"
sys.path.insert(0, str(BENCH))

from capture import LoopbackCapture, invite_timings  # noqa: E402

HOST = "127.0.0.1"
DOMAIN = "bench.local"
PASSWORD = "benchpass"  # the password of every bench user (heimbuero and Kamailio alike)
CALLEE = "callee"
# the routed row: a client business whose number's only rule rings the callee (docs/ROUTING.md)
CLIENT = "bench"
NUMBER = "+49301111111"
ROUTED_RULES = f"""client: {CLIENT}
numbers:
  "{NUMBER}":
    rules:
      - name: Bench
        steps: [{{targets: ["user:{CALLEE}"], timeout: 30}}]
"""
ROWS = ("calls", "latency", "register", "memory", "routed", "soak")  # --only 1-6 in this order
RUN_ORDER = ("calls", "latency", "routed", "register", "memory", "soak")  # routed next to latency
SOAK_CALLER = "user0"  # the soak row's caller authenticates its INVITEs as this bench user
TARGETS = ("floor", "kamailio", "heimbuero", "heimbuero-pg")
DEFAULT_TARGETS = ("floor", "kamailio", "heimbuero")  # heimbuero-pg: asked for by --targets
HEIMBUERO = ("heimbuero", "heimbuero-pg")
LABELS = {
    "floor": "direct SIPp uac->uas floor",
    "kamailio": "Kamailio",
    "heimbuero": "heimbuero",
    "heimbuero-pg": "heimbuero on PostgreSQL",
}


@dataclass
class Settings:
    """Sizes and durations of one bench run (--quick shrinks them)."""

    repeat: int = 3
    step_seconds: float = 3.0  # length of one load step of a rate search: -m rate*step_seconds
    start_rate: int = 1000  # first step of a rate search without a hint
    min_rate: int = 50
    max_rate: int = 32000  # rate searches stop here
    precision: float = 0.05  # rate searches stop when the bracket is this narrow
    min_achieved: float = 0.9  # a step counts only if SIPp really offered 90 % of the rate
    max_retrans: float = 0.01  # ... and retransmitted for at most 1 % of the calls
    recv_timeout_ms: int = 3000  # a call with no answer for this long counts as failed
    latency_rate: int = 200
    latency_seconds: float = 8.0
    contacts: int = 100_000
    # Warm-up of the memory row: new addresses of record for longer than Timer J (32 s) at the
    # fill rate, then the settle time, before the first reading. RSS keeps the high-water mark
    # of the REGISTER transactions alive at once (each lives 32 s; pymalloc keeps an arena while
    # one binding in it lives); the warm-up pays that peak before "before", so the fill reuses
    # it and the figure no longer follows the rate the fill achieved (592 B at 856/s and 684 B
    # at 982/s with a 1,000-registration warm-up).
    warmup_contacts: int = 40_000
    memory_repeat: int = 1
    # REGISTER rate while warming up and filling: fixed and low enough for any machine
    memory_rate: int = 1000
    memory_open: int = 200
    settle_seconds: float = 34.0  # > 64*T1: RFC 3261 Timer J, so finished transactions are gone
    soak_seconds: float = 100.0  # the soak row: calls with digest-authenticated INVITEs ...
    soak_rate: int = 400  # ... at this fixed rate (about 30 % of heimbuero's clean call rate)
    soak_sample: float = 5.0  # seconds between two memory readings

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            repeat=1,
            step_seconds=2.0,
            precision=0.1,
            latency_seconds=4.0,
            contacts=20_000,
            warmup_contacts=500,
            settle_seconds=3.0,
            soak_seconds=20.0,
        )


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Unavailable(Exception):
    """A target cannot be measured on this machine (not installed, not starting)."""


# -- processes and ports -------------------------------------------------------------------


class Procs:
    """Every process the bench starts; each is stopped by its own PID (and its process group)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], name: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"{name}.log", "ab") as out:
            p = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.logdir,
                start_new_session=True,
            )
        self.running.append(p)
        return p

    def wait(self, p: subprocess.Popen[bytes], timeout: float) -> int | None:
        """The exit status, or None when it ran past `timeout` seconds (it is stopped then)."""
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(p)
            return None

    def stop(self, p: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=grace)
        # children left in the group it led (Kamailio's workers), if any
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        if p in self.running:
            self.running.remove(p)

    def stop_all(self) -> None:
        for p in reversed(list(self.running)):
            self.stop(p)


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


class Ports:
    """Free ports on 127.0.0.1, never the same one twice in a run."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def block(self, n: int = 1) -> int:
        """The first of n consecutive free ports (SIPp's -mp needs a few)."""
        for _ in range(500):
            base = random.randrange(20000, 60000 - n)
            span = range(base, base + n)
            if not self.taken.intersection(span) and all(_bindable(p) for p in span):
                self.taken.update(span)
                return base
        raise RuntimeError("no free port block on 127.0.0.1")

    def one(self) -> int:
        return self.block(1)


def port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


# -- SIP probe and memory ------------------------------------------------------------------


def sip_options(port: int, timeout: float = 0.5) -> dict[str, str] | None:
    """Send OPTIONS to the server itself; its status line and headers, or None without answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        msg = (
            f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{lport};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:bench-probe@{DOMAIN}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{HOST}:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@{HOST}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Accept: application/sdp\r\n"
            f"Content-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        s.sendto(msg.encode(), (HOST, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65535).decode("latin-1")
            except (TimeoutError, ConnectionRefusedError):
                return None
            if branch not in data:
                continue
            lines = data.split("\r\n")
            if lines[0].startswith("SIP/2.0 1"):
                continue
            headers = {"status": lines[0]}
            for line in lines[1:]:
                if not line:
                    break
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            return headers
    return None


def process_tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _proc_kb(path: str, key: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def memory_kb(pid: int) -> tuple[int, str]:
    """Memory of a server: VmRSS of one process, or the sum of Pss over a process tree (shared
    memory, as Kamailio keeps its contacts in, counted once)."""
    pids = process_tree(pid)
    if len(pids) == 1:
        return _proc_kb(f"/proc/{pid}/status", "VmRSS"), "VmRSS"
    return sum(
        _proc_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids
    ), f"sum of Pss over {len(pids)} processes"


# -- SIPp ----------------------------------------------------------------------------------


@dataclass
class SippRun:
    """The outcome of one bounded SIPp client run."""

    rc: int | None
    calls: int
    created: int = 0
    ok: int = 0
    failed: int = 0
    retrans: int = 0
    rate: float = 0.0  # calls per second SIPp actually created, until the last one
    target_rate: float = 0.0
    wall: float = 0.0

    def passed(self, min_achieved: float, max_retrans: float = 1.0) -> bool:
        return (
            self.rc == 0
            and self.ok == self.calls
            and self.failed == 0
            and (self.target_rate == 0 or self.rate >= min_achieved * self.target_rate)
            and self.retrans <= max_retrans * self.calls
        )

    def brief(self) -> str:
        return (
            f"rc={self.rc} ok={self.ok}/{self.calls} failed={self.failed} retrans={self.retrans} "
            f"rate={self.rate:.0f}/{self.target_rate:.0f} wall={self.wall:.1f}s"
        )


def _read_stat(path: Path) -> list[dict[str, str]]:
    """Every line of a SIPp -trace_stat file as {column: value}."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return []
    head = lines[0].split(";") if lines else []
    return [dict(zip(head, ln.split(";"), strict=False)) for ln in lines[1:]]


def _epoch(stamp: str) -> float:
    """SIPp writes times as 'date<TAB>time<TAB>epoch'."""
    return float(stamp.split("\t")[-1])


def offered_rate(rows: list[dict[str, str]], calls: int) -> float:
    """Calls per second SIPp created until its last call was created (from the periodic dumps,
    interpolated), so that the tail of the last answers does not count."""
    try:
        start = _epoch(rows[0]["StartTime"])
        prev_t, prev_n = start, 0
        for row in rows:
            t, n = _epoch(row["CurrentTime"]), int(row["OutgoingCall(C)"])
            if n >= calls:
                done = prev_t + (t - prev_t) * (calls - prev_n) / max(n - prev_n, 1)
                return calls / max(done - start, 1e-3)
            prev_t, prev_n = t, n
    except (KeyError, ValueError, IndexError):
        pass
    return 0.0


def users_csv(path: Path, names: list[str]) -> Path:
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for n in names:
            f.write(f"{n};[authentication username={n} password={PASSWORD}]\n")
    return path


class Bench:
    """State of one run: settings, temp dir, processes, ports, results."""

    def __init__(self, s: Settings, tmp: Path) -> None:
        self.s = s
        self.tmp = tmp
        self.procs = Procs(tmp)
        self.ports = Ports()
        self.seq = 0
        self.results: dict[str, dict[str, Any]] = {r: {} for r in ROWS}
        self.notes: dict[str, str] = {}
        self.user_offset = 0

    def name(self, what: str) -> str:
        self.seq += 1
        return f"{self.seq:03d}-{what}"

    def _sipp_base(self, port: int) -> list[str]:
        return [
            "sipp",
            "-i",
            HOST,
            "-p",
            str(port),
            "-mp",
            str(self.ports.block(4)),
            "-cp",
            str(self.ports.one()),
            "-nostdin",
            "-buff_size",
            "4194304",
        ]

    def start_uas(
        self, scenario: str, port: int, calls: int, seconds: float
    ) -> subprocess.Popen[bytes]:
        argv = self._sipp_base(port) + [
            "-sf",
            SCENARIOS / scenario,
            "-m",
            str(calls),
            "-timeout",
            f"{int(seconds)}s",
        ]
        p = self.procs.start(argv, self.name(f"uas-{scenario[:-4]}"))
        wait_until(lambda: port_bound(port) or p.poll() is not None, 10, "SIPp callee listening")
        if p.poll() is not None:
            raise RuntimeError(f"SIPp callee exited at once (rc {p.returncode}); see {self.tmp}")
        return p

    def run_uac(
        self,
        scenario: str,
        dest: int,
        port: int,
        calls: int,
        rate: float,
        extra: list[str] = (),
        limit: int | None = None,
        seconds: float | None = None,
    ) -> SippRun:
        """One bounded SIPp client run: `calls` calls at `rate`/s from `port` to 127.0.0.1:dest."""
        name = self.name(f"uac-{scenario[:-4]}-{int(rate)}")
        stat = self.tmp / f"{name}.stat.csv"
        budget = seconds if seconds is not None else calls / max(rate, 1) + 20
        argv = (
            self._sipp_base(port)
            + [
                "-sf",
                SCENARIOS / scenario,
                f"{HOST}:{dest}",
                "-m",
                str(calls),
                "-r",
                f"{rate:g}",
                "-key",
                "domain",
                DOMAIN,
                "-timeout",
                f"{int(budget)}s",
                "-timeout_error",
                "-recv_timeout",
                str(self.s.recv_timeout_ms),
                "-trace_stat",
                "-stf",
                stat,
                "-fd",
                "200ms",
            ]
            + list(extra)
        )
        if limit:
            argv += ["-l", str(limit)]
        t0 = time.monotonic()
        p = self.procs.start(argv, name)
        rc = self.procs.wait(p, budget + 15)
        rows = _read_stat(stat)
        st = rows[-1] if rows else {}

        def num(key: str) -> float:
            try:
                return float(st.get(key, "0") or 0)
            except ValueError:
                return 0.0

        return SippRun(
            rc=rc,
            calls=calls,
            created=int(num("OutgoingCall(C)")),
            ok=int(num("SuccessfulCall(C)")),
            failed=int(num("FailedCall(C)")),
            retrans=int(num("Retransmissions(C)")),
            rate=offered_rate(rows, calls),
            target_rate=0 if limit else rate,
            wall=time.monotonic() - t0,
        )

    def register(
        self, server: Server, port: int, names: list[str], rate: float, limit: int | None = None
    ) -> SippRun:
        csv = users_csv(self.tmp / f"{self.name('users')}.csv", names)
        seconds = max(60.0, len(names) / 250 + 30) if limit else None
        return self.run_uac(
            "uac_register.xml",
            server.port,
            port,
            len(names),
            rate,
            extra=["-inf", str(csv), "-auth_uri", DOMAIN],
            limit=limit,
            seconds=seconds,
        )

    def next_users(self, n: int) -> list[str]:
        """n user names for the REGISTER row, continuing where the last step stopped."""
        pool = self.s.contacts + self.s.warmup_contacts
        out = [f"user{(self.user_offset + i) % pool}" for i in range(n)]
        self.user_offset = (self.user_offset + n) % pool
        return out


# -- servers -------------------------------------------------------------------------------


class Server:
    """A SIP server under test, listening on udp:127.0.0.1:port."""

    label = ""

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.caller_port: int | None = None
        self.logname = ""

    def start(self, caller_port: int | None = None) -> None:
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise Unavailable(f"{self.label} exited during start-up: {self.log_tail()}")
            h = sip_options(self.port)
            return h is not None and h["status"].startswith("SIP/2.0 200")

        try:
            wait_until(ready, timeout, f"{self.label} answering OPTIONS with 200", interval=0.1)
        except TimeoutError as exc:
            raise Unavailable(f"{exc}; last log lines: {self.log_tail()}") from None

    def log_tail(self) -> str:
        if self.proc is None:
            return ""
        path = self.b.tmp / f"{self.logname}.log"
        try:
            lines = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-5:])

    def restart(self) -> None:
        self.stop()
        self.start(self.caller_port)

    def stop(self) -> None:
        if self.proc is not None:
            self.b.procs.stop(self.proc)
            self.proc = None

    def memory(self) -> tuple[int, str]:
        assert self.proc is not None
        return memory_kb(self.proc.pid)

    def extra_memory(self) -> dict[str, int]:
        return {}


def kamailio_binary() -> tuple[str, str]:
    exe = shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if os.path.exists("/usr/sbin/kamailio") else None
    )
    if exe is None:
        raise Unavailable("kamailio is not installed (apt-get install kamailio)")
    candidates = glob.glob("/usr/lib/*/kamailio/modules") + glob.glob("/usr/lib*/kamailio/modules")
    candidates += glob.glob("/usr/local/lib*/kamailio/modules")
    for d in candidates:
        if os.path.exists(os.path.join(d, "tm.so")):
            return exe, d
    raise Unavailable("kamailio modules (tm.so) not found")


class Kamailio(Server):
    label = "Kamailio"

    def start(self, caller_port: int | None = None) -> None:
        exe, modules = kamailio_binary()
        self.caller_port = caller_port
        self.port = self.b.ports.one()
        self.logname = self.b.name("kamailio")
        rundir = self.b.tmp / self.logname
        rundir.mkdir()
        argv = [
            exe,
            "-f",
            BENCH / "kamailio.cfg",
            "-L",
            modules,
            "-l",
            f"udp:{HOST}:{self.port}",
            "-DD",
            "-E",
            "-m",
            "512",
            "-M",
            "16",
            "-Y",
            rundir,
            "-w",
            rundir,
        ]
        self.proc = self.b.procs.start(argv, self.logname)
        self.wait_ready(20)

    def extra_memory(self) -> dict[str, int]:
        h = sip_options(self.port, timeout=2) or {}
        try:
            return {"shm_real_used_bytes": int(h.get("x-shm-used", ""))}
        except ValueError:
            return {}


class Heimbuero(Server):
    label = "heimbuero"
    template: Path | None = None
    office_template: Path | None = None
    also_trusted: tuple[int, ...] = ()  # SIPp ports trusted besides the caller's (no challenge)

    def __init__(self, b: Bench, office: bool = False) -> None:
        super().__init__(b)
        self.office = office  # start from the template with the routed row's client and rules

    @classmethod
    def prepare(cls, b: Bench) -> None:
        """Once per run: a data directory with the bench users, copied for every server start."""
        if cls.template is not None:
            return
        d = b.tmp / f"{cls.label}-template"
        py = sys.executable
        t0 = time.monotonic()
        r = subprocess.run(
            [
                py,
                "-m",
                "heimbuero",
                "init",
                "--data",
                str(d),
                "--domain",
                DOMAIN,
                *cls.init_args(),
            ],  # fmt: skip
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode != 0:
            raise Unavailable(f"'heimbuero init' failed: {_last_line(r.stderr or r.stdout)}")
        users = b.s.contacts + b.s.warmup_contacts
        r = subprocess.run(
            [
                py,
                str(BENCH / "heimbuero_users.py"),
                "--data",
                str(d),
                "--count",
                str(users),
                "--extra",
                CALLEE,
                "--password",
                PASSWORD,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if r.returncode != 0:
            raise Unavailable(f"creating users failed: {_last_line(r.stderr or r.stdout)}")
        log(f"heimbuero data template: {r.stdout.strip()} ({time.monotonic() - t0:.1f} s in all)")
        cls.template = d

    @classmethod
    def prepare_office(cls, b: Bench) -> None:
        """Once per run: the template plus client CLIENT with NUMBER, the callee belonging to it,
        and the rules document ROUTED_RULES, written with heimbuero's own office commands."""
        if cls.office_template is not None:
            return
        cls.prepare(b)
        assert cls.template is not None
        d = b.tmp / f"{cls.label}-template-office"
        cls.copy_data(cls.template, d)
        rules = b.tmp / "routed-rules.yaml"
        rules.write_text(ROUTED_RULES)
        data = ["--data", str(d)]
        for argv in (
            ["client", "add", CLIENT, "--name", "Bench GmbH", "--timezone", "Europe/Berlin"],
            ["number", "add", "--client", CLIENT, NUMBER],
            ["user", "set", CALLEE, "--client", CLIENT],
            ["rules", "import", CLIENT, str(rules)],
        ):
            r = subprocess.run(
                [sys.executable, "-m", "heimbuero", *argv, *data],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if r.returncode != 0:
                raise Unavailable(
                    f"'heimbuero {' '.join(argv[:2])}' failed: {_last_line(r.stderr or r.stdout)}"
                )
            log(f"heimbuero office template: {r.stdout.strip()}")
        cls.office_template = d

    @classmethod
    def init_args(cls) -> list[str]:
        """Extra arguments of `heimbuero init` for the template (the store to use)."""
        return []

    @classmethod
    def copy_data(cls, template: Path, data: Path) -> None:
        """A server's own data directory (and store) from a template."""
        shutil.copytree(template, data)

    def start(self, caller_port: int | None = None) -> None:
        self.prepare(self.b)
        if self.office:
            self.prepare_office(self.b)
        template = self.office_template if self.office else self.template
        assert template is not None
        self.caller_port = caller_port
        self.port = self.b.ports.one()
        self.logname = self.b.name(self.label)
        data = self.b.tmp / self.logname
        self.copy_data(template, data)
        cfg = data / "config.toml"
        text = cfg.read_text()
        trusted = [p for p in (caller_port, *self.also_trusted) if p]
        peers = "trusted_peers = [" + ", ".join(f'"{HOST}:{p}"' for p in trusted) + "]"
        text, n = re.subn(r"(?m)^trusted_peers\s*=.*$", peers, text)
        if n != 1:
            text = re.sub(r"(?m)^\[sip\]\s*$", "[sip]\n" + peers, text, count=1)
        cfg.write_text(text)
        argv = [
            sys.executable,
            "-m",
            "heimbuero",
            "serve",
            "--data",
            data,
            "--sip",
            f"udp:{HOST}:{self.port}",
        ]
        self.proc = self.b.procs.start(argv, self.logname, cwd=ROOT)
        self.wait_ready(60)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][-300:] if lines else "(no output)"


class HeimbueroPg(Heimbuero):
    """heimbuero with `[store] database_url` on a PostgreSQL cluster the bench starts (Debian's
    binaries, initdb as an unprivileged user, fsync and synchronous_commit on as in
    production); each server start gets its own database, copied from the template's."""

    label = "heimbuero-pg"
    template: Path | None = None
    office_template: Path | None = None
    cluster: Any = None

    @classmethod
    def shutdown(cls) -> None:
        if cls.cluster is not None:
            cls.cluster.stop()
            cls.cluster = None

    @staticmethod
    def _pgcluster() -> Any:
        sys.path.insert(0, str(ROOT))
        from tests import pgcluster

        return pgcluster

    @classmethod
    def bin_dir(cls) -> Path:
        return Path(cls._pgcluster().PG_BIN)

    @classmethod
    def _cluster(cls) -> Any:
        if cls.cluster is None:
            pgcluster = cls._pgcluster()
            if not pgcluster.available():
                raise Unavailable("PostgreSQL is not installed (apt-get install postgresql)")
            cluster = pgcluster.PgCluster()
            cluster.start(durable=True)
            cls.cluster = cluster
        return cls.cluster

    @classmethod
    def init_args(cls) -> list[str]:
        return ["--database-url", cls._cluster().new_database()]

    @classmethod
    def copy_data(cls, template: Path, data: Path) -> None:
        shutil.copytree(template, data)
        cfg = data / "config.toml"
        text = cfg.read_text()
        found = re.search(r'(?m)^database_url\s*=\s*"[^"]*/([A-Za-z0-9_]+)"', text)
        if found is None:
            raise Unavailable(f"no PostgreSQL database_url in {cfg}")
        url = cls._cluster().new_database(template=found.group(1))
        cfg.write_text(text[: found.start()] + f'database_url = "{url}"' + text[found.end() :])


SERVERS: dict[str, type[Server]] = {
    "kamailio": Kamailio,
    "heimbuero": Heimbuero,
    "heimbuero-pg": HeimbueroPg,
}


@contextlib.contextmanager
def serving(
    b: Bench, target: str, caller_port: int | None, office: bool = False
) -> Iterator[Server | None]:
    """The started server of a target (None for the floor), stopped on the way out; with
    `office`, heimbuero's data also has the routed row's client, number and rules."""
    if target == "floor":
        yield None
        return
    server = SERVERS[target](b, office=True) if office else SERVERS[target](b)  # type: ignore[call-arg]
    try:
        server.start(caller_port)
        yield server
    finally:
        server.stop()


def register_callee(b: Bench, server: Server, callee_port: int) -> None:
    """The SIPp callee's binding: registered from the port the callee will listen on."""
    r = b.register(server, callee_port, [CALLEE], 10)
    if not r.passed(0):
        raise RuntimeError(
            f"registering the callee at {server.label} failed: {r.brief()}; logs in {b.tmp}"
        )


# -- rate search ---------------------------------------------------------------------------


def find_rate(s: Settings, step: Callable[[int], bool], hint: float | None) -> tuple[int, bool]:
    """Highest rate at which step(rate) passes: ramp (x2, or x1.25 around a hint), then bisect.

    Returns (rate, capped): capped when max_rate passed (the real limit is higher).
    """

    def rnd(x: float) -> int:
        return max(s.min_rate, int(round(x / 10.0)) * 10)

    factor = 1.25 if hint else 2.0
    r = rnd(min(hint or s.start_rate, s.max_rate))
    lo, hi = 0, None
    while True:
        if step(r):
            lo = r
            if hi is not None:
                break
            if r >= s.max_rate:
                return r, True
            r = rnd(min(r * factor, s.max_rate))
        else:
            hi = r
            if lo:
                break
            if r <= s.min_rate:
                return 0, False
            r = rnd(r / factor)
    while hi - lo > max(s.precision * hi, 10):
        mid = rnd((lo + hi) / 2)
        if mid in (lo, hi):
            break
        if step(mid):
            lo = mid
        else:
            hi = mid
    return lo, False


# -- rows ----------------------------------------------------------------------------------


def row_calls(b: Bench, target: str, rep: int, state: dict[str, Any]) -> dict[str, Any]:
    """One repeat of row 1: the highest call rate that passes (state carries the hint)."""
    s = b.s
    caller, callee = b.ports.one(), b.ports.one()
    with serving(b, target, caller) as server:
        if server is not None:
            register_callee(b, server, callee)

        def step(rate: int) -> bool:
            n = int(rate * s.step_seconds)
            uas = b.start_uas("uas_call.xml", callee, n, n / rate + 30)
            try:
                dest = server.port if server else callee
                r = b.run_uac("uac_call.xml", dest, caller, n, rate, extra=["-s", CALLEE])
            finally:
                b.procs.stop(uas)
            ok = r.passed(s.min_achieved, s.max_retrans)
            log(f"  calls {target} #{rep + 1} {rate}/s: {'ok' if ok else 'FAIL'} ({r.brief()})")
            if not ok and server is not None:
                # a fresh server, so that the last step's leftovers don't load the next one
                server.restart()
                register_callee(b, server, callee)
            return ok

        rate, cap = find_rate(s, step, state.get("hint"))
    state["hint"] = rate or None
    log(f"calls {target} #{rep + 1}: {rate}/s{' (cap)' if cap else ''}")
    return {"rate": rate, "capped": cap}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def row_latency(b: Bench, target: str, rep: int, state: dict[str, Any]) -> dict[str, Any]:
    """One repeat of row 2: calls at latency_rate, timed from a loopback capture."""
    return _latency(b, "latency", target, rep, CALLEE, office=False)


def row_routed(b: Bench, target: str, rep: int, state: dict[str, Any]) -> dict[str, Any]:
    """One repeat of row 5: as row 2, but the caller dials the client number NUMBER, which
    heimbuero routes by the client's rules (first rule: ring user CALLEE)."""
    if target not in HEIMBUERO:
        raise RuntimeError("the routed row is measured for heimbuero only")
    return _latency(b, "routed", target, rep, NUMBER, office=True)


def _latency(b: Bench, row: str, target: str, rep: int, dial: str, office: bool) -> dict[str, Any]:
    """Calls to sip:DIAL@DOMAIN at latency_rate, timed from a loopback capture."""
    caller, callee = b.ports.one(), b.ports.one()
    with serving(b, target, caller, office) as server:
        if server is not None:
            register_callee(b, server, callee)
        return time_calls(b, server, caller, callee, dial, f"{row} {target} #{rep + 1}")


def time_calls(
    b: Bench, server: Server | None, caller: int, callee: int, dial: str, what: str
) -> dict[str, Any]:
    """Calls from SIPp on port `caller` to sip:DIAL@DOMAIN at latency_rate for latency_seconds,
    through `server` (started, the callee registered) or straight to the SIPp callee on port
    `callee`, timed from a loopback capture."""
    s = b.s
    rate = s.latency_rate
    n = int(rate * s.latency_seconds)
    uas = b.start_uas("uas_call.xml", callee, n, s.latency_seconds + 30)
    ports = [caller, callee] + ([server.port] if server else [])
    try:
        capture = LoopbackCapture(ports)
        try:
            capture.open()
        except PermissionError:
            raise RuntimeError(
                "capturing on lo needs root or CAP_NET_RAW (AF_PACKET socket)"
            ) from None
        with capture:
            dest = server.port if server else callee
            r = b.run_uac("uac_call.xml", dest, caller, n, rate, extra=["-s", dial])
    finally:
        b.procs.stop(uas)
    t = invite_timings(capture.datagrams(), caller, callee, server.port if server else None)
    if not r.passed(s.min_achieved):
        log(f"  {what}: calls failed ({r.brief()})")
    one = {
        "calls": r.ok,
        "failed": r.failed,
        "retrans": r.retrans,
        "samples": len(t["held"]) if server else len(t["rtt"]),
        "rtt_p50_ms": _pct(t["rtt"], 0.5) * 1e3,
        "rtt_p99_ms": _pct(t["rtt"], 0.99) * 1e3,
    }
    if server is not None:
        one["added_p50_ms"] = _pct(t["held"], 0.5) * 1e3
        one["added_p99_ms"] = _pct(t["held"], 0.99) * 1e3
        one["added_max_ms"] = max(t["held"], default=float("nan")) * 1e3
        for part in ("invite_held", "ok_held"):
            one[f"{part}_p50_ms"] = _pct(t[part], 0.5) * 1e3
            one[f"{part}_p99_ms"] = _pct(t[part], 0.99) * 1e3
    log(f"{what}: " + ", ".join(f"{k}={v:.3f}" for k, v in one.items()))
    return one


def row_register(b: Bench, target: str, rep: int, state: dict[str, Any]) -> dict[str, Any]:
    """One repeat of row 3: the highest digest-authenticated REGISTER rate that passes."""
    s = b.s
    with serving(b, target, None) as server:

        def step(rate: int) -> bool:
            n = int(rate * s.step_seconds)
            names = b.next_users(n)
            if server is None:
                port = b.ports.one()
                uas = b.start_uas("uas_register.xml", port, n, n / rate + 30)
                try:
                    csv = users_csv(b.tmp / f"{b.name('users')}.csv", names)
                    extra = ["-inf", str(csv), "-auth_uri", DOMAIN]
                    r = b.run_uac("uac_register.xml", port, b.ports.one(), n, rate, extra=extra)
                finally:
                    b.procs.stop(uas)
            else:
                r = b.register(server, b.ports.one(), names, rate)
            ok = r.passed(s.min_achieved, s.max_retrans)
            verdict = "ok" if ok else "FAIL"
            log(f"  register {target} #{rep + 1} {rate}/s: {verdict} ({r.brief()})")
            if not ok and server is not None:
                server.restart()
            return ok

        rate, cap = find_rate(s, step, state.get("hint"))
    state["hint"] = rate or None
    log(f"register {target} #{rep + 1}: {rate}/s{' (cap)' if cap else ''}")
    return {"rate": rate, "capped": cap}


def settle(server: Server, seconds: float) -> None:
    """Wait `seconds` (the server must stay up meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.proc is None or server.proc.poll() is not None:
            raise RuntimeError(f"{server.label} exited while settling: {server.log_tail()}")
        time.sleep(0.5)


def row_memory(b: Bench, target: str, rep: int, state: dict[str, Any]) -> dict[str, Any]:
    """One repeat of row 4: server memory per contact after `contacts` registrations."""
    s = b.s
    with serving(b, target, None) as server:
        assert server is not None
        warm = [f"user{s.contacts + i}" for i in range(s.warmup_contacts)]
        t0 = time.monotonic()
        r = b.register(server, b.ports.one(), warm, s.memory_rate, limit=s.memory_open)
        warm_rate = r.ok / max(time.monotonic() - t0, 1e-9)
        log(f"  memory {target} #{rep + 1}: warm-up {r.ok} registrations at {warm_rate:.0f}/s")
        if r.ok < len(warm):
            log(f"  memory {target}: warm-up registrations failed ({r.brief()})")
        settle(server, s.settle_seconds)  # the warm-up's transactions end (Timer J)
        before, how = server.memory()
        extra_before = server.extra_memory()
        t0 = time.monotonic()
        names = [f"user{i}" for i in range(s.contacts)]
        r = b.register(server, b.ports.one(), names, s.memory_rate, limit=s.memory_open)
        fill = time.monotonic() - t0
        log(f"  memory {target} #{rep + 1}: {r.ok} registrations in {fill:.1f} s ({r.brief()})")
        # wait out RFC 3261 Timer J so that no finished REGISTER transaction is counted
        settle(server, s.settle_seconds)
        after, _ = server.memory()
        extra_after = server.extra_memory()
        threads = _proc_kb(f"/proc/{server.proc.pid}/status", "Threads")
    per = (after - before) * 1024 / r.ok if r.ok else float("nan")
    one: dict[str, Any] = {
        "contacts": r.ok,
        "failed": r.failed,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "warmup": len(warm),
        "warmup_rate": warm_rate,
        "measure": how,
        "bytes_per_contact": per,
        "fill_seconds": fill,
        "fill_rate": r.ok / fill if fill else 0,
        "threads": threads,
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        "pythonmalloc": os.environ.get("PYTHONMALLOC"),
    }
    for k, v in extra_after.items():
        one[f"{k}_per_contact"] = (v - extra_before.get(k, 0)) / r.ok if r.ok else None
    log(f"memory {target} #{rep + 1}: {per:.0f} B/contact ({how}: {before} -> {after} kB)")
    return one


def _counts(path: Path) -> dict[str, int]:
    """The last line of SIPp's -trace_counts file: column name -> count."""
    rows = _read_stat(path)
    out: dict[str, int] = {}
    for k, v in (rows[-1] if rows else {}).items():
        with contextlib.suppress(ValueError, TypeError):
            out[k] = int(v)
    return out


def _soak_counts(counts: dict[str, int]) -> dict[str, int]:
    """From the soak scenario's per-line counters (`N_WHAT_Kind`, lines numbered from 0): the
    first INVITE's retransmissions, 408s received, and 407s received after the BYE."""
    lines: list[tuple[int, str, str, int]] = []
    for k, v in counts.items():
        parts = k.split("_")
        if len(parts) == 3 and parts[0].isdigit():
            lines.append((int(parts[0]), parts[1], parts[2], v))
    invites = sorted(i for i, what, _, _ in lines if what == "INVITE")
    byes = sorted(i for i, what, _, _ in lines if what == "BYE")
    first, bye = (invites or [-1])[0], (byes or [1 << 30])[0]
    return {
        "first_invite_retrans": sum(v for i, _, k, v in lines if i == first and k == "Retrans"),
        "answered_408": sum(v for _, w, k, v in lines if w == "408" and k == "Recv"),
        "bye_407": sum(v for i, w, k, v in lines if w == "407" and k == "Recv" and i > bye),
    }


def row_soak(b: Bench, target: str, rep: int, state: dict[str, Any]) -> dict[str, Any]:
    """One repeat of the soak row: `soak_seconds` of calls at `soak_rate`/s whose INVITEs are
    challenged (407) and answered with digest credentials; memory sampled all along."""
    s = b.s
    if target == "floor":
        raise RuntimeError("the soak row is measured for the servers only")
    caller, callee = b.ports.one(), b.ports.one()
    n = int(s.soak_rate * s.soak_seconds)
    with serving(b, target, None) as server:
        assert server is not None
        register_callee(b, server, callee)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    samples.append((time.monotonic() - t0, server.memory()[0]))
                stop.wait(s.soak_sample)

        uas = b.start_uas("uas_call.xml", callee, n, s.soak_seconds + 60)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        before = set(glob.glob(str(b.tmp / "uac_call_auth_*_counts.csv")))
        try:
            extra = ["-s", CALLEE, "-au", SOAK_CALLER, "-ap", PASSWORD, "-key", "caller"]
            extra += [SOAK_CALLER, "-auth_uri", f"{CALLEE}@{DOMAIN}", "-trace_counts"]
            r = b.run_uac("uac_call_auth.xml", server.port, caller, n, s.soak_rate, extra=extra)
            # a few more readings after the last call: what stays once the load is gone
            end = time.monotonic() + 2 * s.soak_sample
            while time.monotonic() < end:
                time.sleep(0.5)
        finally:
            stop.set()
            sampler.join(timeout=s.soak_sample + 5)
            b.procs.stop(uas)
    if r.created == 0:
        raise RuntimeError(f"SIPp placed no soak call ({r.brief()}); logs in {b.tmp}")
    # SIPp names it <scenario>_<pid>_counts.csv in its working directory
    found = sorted(set(glob.glob(str(b.tmp / "uac_call_auth_*_counts.csv"))) - before)
    counts = _counts(Path(found[-1])) if found else {}
    kb = [m for _, m in samples]
    one: dict[str, Any] = {
        "calls": n,
        "ok": r.ok,
        "failed": r.failed,
        **_soak_counts(counts),
        "retrans": r.retrans,
        "offered_rate": r.rate,
        "rss_start_kb": kb[0] if kb else None,
        "rss_peak_kb": max(kb) if kb else None,
        "rss_end_kb": kb[-1] if kb else None,
        "samples": samples,
        "counts": counts,
    }
    log(
        f"soak {target} #{rep + 1}: {r.ok}/{n} ok, {r.failed} failed, "
        f"{one['first_invite_retrans']} first INVITEs retransmitted, {one['answered_408']} 408, "
        f"{one['bye_407']} BYE 407; memory {one['rss_start_kb']} -> peak {one['rss_peak_kb']} "
        f"-> end {one['rss_end_kb']} kB ({r.brief()})"
    )
    log("  soak memory samples (s, kB): " + ", ".join(f"{t:.0f}:{m}" for t, m in samples))
    return one


RowFunc = Callable[[Bench, str, int, dict[str, Any]], dict[str, Any]]
ROW_FUNCS: dict[str, RowFunc] = {
    "calls": row_calls,
    "latency": row_latency,
    "register": row_register,
    "memory": row_memory,
    "routed": row_routed,
    "soak": row_soak,
}


def summarize(row: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over the repeats of a row for one target."""
    if row in ("calls", "register"):
        return {
            "runs": [r["rate"] for r in runs],
            "value": statistics.median(r["rate"] for r in runs),
            "capped": any(r["capped"] for r in runs),
        }
    if row in ("latency", "routed"):
        keys = runs[0].keys()
        return {"runs": runs, "value": {k: statistics.median(r[k] for r in runs) for k in keys}}
    if row == "soak":
        keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and v is not None]
        value = {k: statistics.median(r[k] for r in runs if r.get(k) is not None) for k in keys}
        return {"runs": runs, "value": value}
    return {
        "runs": runs,
        "value": statistics.median(r["bytes_per_contact"] for r in runs),
        "measure": runs[0]["measure"],
    }


# -- table ---------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if v != v:  # NaN
        return "n/a"
    return f"{v:,.{digits}f}"


def build_table(b: Bench, rows: list[str], targets: list[str]) -> str:
    s = b.s
    res = b.results

    def cell(
        row: str,
        target: str,
        get: Callable[[dict[str, Any]], Any],
        digits: int = 0,
        suffix: str = "",
    ) -> str:
        if target not in targets:
            return "not run"
        r = res[row].get(target)
        if r is None:
            return "n/a"
        if "error" in r:
            return "n/a⁶"
        v = get(r)
        out = _fmt(v, digits)
        if r.get("capped"):
            out = "≥ " + out
        return out + (suffix if v is not None else "")

    def ratio(row: str, get: Callable[[dict[str, Any]], Any], digits: int = 2) -> str:
        try:
            h, k = get(res[row]["heimbuero"]), get(res[row]["kamailio"])
            return f"{h / k:.{digits}f}×" if h is not None and k else "—"
        except (KeyError, TypeError, ZeroDivisionError):
            return "—"

    def met(
        row: str, get: Callable[[dict[str, Any]], Any], ok: Callable[[float], bool], target: str
    ) -> str:
        try:
            v = get(res[row]["heimbuero"])
            if target == "—":
                return target
            return f"{target} ({'met' if ok(v) else 'missed'})"
        except (KeyError, TypeError):
            return target

    pg = "heimbuero-pg" in targets
    lines = [
        "| metric | direct SIPp uac->uas floor | Kamailio | heimbuero "
        + ("| heimbuero on PostgreSQL⁹ " if pg else "")
        + "| heimbuero/Kamailio | target |",
        "|---|---|---|---|---|---|" + ("---|" if pg else ""),
    ]

    def add(
        metric: str,
        row: str,
        get: Callable[[dict[str, Any]], Any],
        digits: int,
        floor_get: Any,
        target: str,
        ok: Callable[[float], bool],
        others: str | None = None,
    ) -> None:
        """One table line; `others` replaces the floor, Kamailio and ratio cells (a row that
        only heimbuero can run)."""
        cells = [
            others if others else cell(row, "floor", floor_get, digits) if floor_get else "—",
            others if others else cell(row, "kamailio", get, digits),
            cell(row, "heimbuero", get, digits),
            *([cell(row, "heimbuero-pg", get, digits)] if pg else []),
            "—" if others else ratio(row, get),
            met(row, get, ok, target),
        ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")

    v = lambda r: r["value"]  # noqa: E731
    if "calls" in rows:
        add(
            "highest call rate with 0 failed calls¹ ² (calls/s)",
            "calls",
            v,
            0,
            v,
            "≥ 1500",
            lambda x: x >= 1500,
        )
    if "latency" in rows:
        add(
            "INVITE latency added by the proxy³, p50 (ms)",
            "latency",
            lambda r: r["value"].get("added_p50_ms"),
            3,
            lambda r: "(" + _fmt(r["value"]["rtt_p50_ms"], 3) + ")",
            "≤ 0.3",
            lambda x: x <= 0.3,
        )
        add(
            "INVITE latency added by the proxy³, p99 (ms)",
            "latency",
            lambda r: r["value"].get("added_p99_ms"),
            3,
            lambda r: "(" + _fmt(r["value"]["rtt_p99_ms"], 3) + ")",
            "≤ 2",
            lambda x: x <= 2,
        )
    if "routed" in rows:
        for q, goal, limit in (("p50", "≤ 0.3", 0.3), ("p99", "≤ 2", 2.0)):
            add(
                f"INVITE latency added by the proxy, routed call to a client number³ ⁷, {q} (ms)",
                "routed",
                lambda r, q=q: r["value"].get(f"added_{q}_ms"),
                3,
                None,
                f"{goal}, same budget as the plain proxy",
                lambda x, limit=limit: x <= limit,
                others="—⁷",
            )
    if "register" in rows:
        add(
            "REGISTER rate with digest auth, 0 failures² ⁴ (registrations/s)",
            "register",
            v,
            0,
            v,
            "≥ 3000",
            lambda x: x >= 3000,
        )
    if "memory" in rows:
        add(
            f"memory per registered contact at {s.contacts:,} contacts⁵ (bytes)",
            "memory",
            v,
            0,
            None,
            "≤ 2048",
            lambda x: x <= 2048,
        )

    if "soak" in rows:
        soak = (
            f"at {s.soak_rate} calls/s for {s.soak_seconds:g} s with digest-authenticated INVITEs⁸"
        )
        for metric, key, digits in (
            (f"soak {soak}: memory at the start (MB)", "rss_start_kb", 1),
            (f"soak {soak}: peak memory (MB)", "rss_peak_kb", 1),
            (f"soak {soak}: memory after the load (MB)", "rss_end_kb", 1),
        ):
            add(metric, "soak", lambda r, k=key: r["value"][k] / 1024, digits, None, "—",
                lambda x: True, )  # fmt: skip
        for metric, key, goal in (
            ("failed calls", "failed", "0"),
            ("first INVITEs retransmitted (no answer within 500 ms)", "first_invite_retrans", "0"),
            ("calls ended 408", "answered_408", "0"),
            ("in-dialog BYEs answered 407", "bye_407", "0"),
        ):
            add(f"soak {soak}: {metric}", "soak", lambda r, k=key: r["value"][k], 0, None, goal,
                lambda x: x == 0)  # fmt: skip

    cmd = "python bench/run.py" + ("".join(" " + x for x in sys.argv[1:]))
    mem = f" (memory: {s.memory_repeat})" if "memory" in rows else ""
    notes = [
        "",
        f"Medians of {s.repeat} runs{mem}; {os.cpu_count()} cores, {_versions()}; "
        f"all on 127.0.0.1/UDP; `{cmd}`.",
        "",
        f"¹ A rate passes when a SIPp run of rate × {s.step_seconds:g} s calls (INVITE, 100, 180, "
        "200, ACK, BYE, 200; ACK and BYE along the Record-Route) has 0 failed calls (no answer "
        f"within {s.recv_timeout_ms / 1000:g} s fails a call), retransmits for at most "
        f"{s.max_retrans:.0%} of the calls and SIPp offered ≥ {s.min_achieved:.0%} of the rate. "
        f"The rate is stepped up, then bisected to {s.precision:.0%}; after a failed step the "
        "server is restarted. The callee is a SIPp UAS registered at the server. "
        "“≥” marks the search cap.",
        "² Kamailio (bench/kamailio.cfg): tm, sl, rr, maxfwd, pv, textops, registrar, usrloc "
        "(db_mode 0), auth, kex; children=1. It does not challenge INVITEs; it challenges REGISTER "
        "(MD5, qop=auth) against one clear-text password for every user (pv_www_authenticate, no "
        "user lookup). heimbuero: `heimbuero init`, users written through its store, the caller's "
        "address in [sip] trusted_peers so that it does not challenge the INVITEs either; it "
        "checks REGISTER against the user's stored HA1.",
        f"³ At {s.latency_rate} calls/s for {s.latency_seconds:g} s, from kernel timestamps of the "
        "datagrams on lo (AF_PACKET): per call, the time the proxy held the INVITE (in → out) plus "
        "the time it held the 200 (in → out). In brackets in the floor column: the INVITE → 200 "
        "round trip with no proxy (SIPp's own turnaround), for scale.",
        "⁴ REGISTER → 401 → REGISTER with MD5 credentials → 200, each for another address of "
        "record (user0, user1, … from a SIPp -inf file); the floor is SIPp answering SIPp with the "
        "same messages, unchecked. Pass rule and search as in ¹.",
        f"⁵ {s.contacts:,} new addresses of record registered at {s.memory_rate:,}/s, after "
        f"{s.warmup_contacts:,} warm-up registrations at that rate and {s.settle_seconds:g} s, and "
        f"measured {s.settle_seconds:g} s after the last one (past RFC 3261 Timer J, so finished "
        "transactions are gone). heimbuero: VmRSS of its process, after − before, "
        "divided by the contacts; Kamailio: the same with the sum of Pss over its processes (its "
        "contacts live in shared memory).",
    ] + _not_measured(b, rows)
    if "soak" in rows:
        notes.append(
            f"⁸ One run of {s.soak_rate} × {s.soak_seconds:g} calls at {s.soak_rate}/s "
            f"(`scenarios/uac_call_auth.xml`): INVITE → 407 → ACK → INVITE with MD5 credentials of "
            f"`{SOAK_CALLER}` → 100/180/200 → ACK → BYE along the Record-Route → 200, to the "
            "registered SIPp callee; neither server trusts the caller (Kamailio: "
            "pv_proxy_authenticate against the one password, no user lookup). Memory: heimbuero's "
            f"VmRSS, Kamailio's Pss summed over its processes, read every {s.soak_sample:g} s; "
            "“start” is the first reading (callee registered, no call yet), “after the load” "
            f"{2 * s.soak_sample:g} s after SIPp's last call. Counts from SIPp's -trace_counts "
            "file: retransmissions of the first INVITE, 408s to the authenticated INVITE, 407s to "
            "the BYE; a call fails when an answer is missing for "
            f"{s.recv_timeout_ms / 1000:g} s."
        )
    if pg:
        notes.append(
            "⁹ The same heimbuero with `[store] database_url` on a PostgreSQL cluster the bench "
            f"starts ({_pg_version()}): Debian's binaries, initdb as an unprivileged user, fsync "
            "and synchronous_commit on (as in production), over TCP on 127.0.0.1; every start "
            "gets its own database, copied from the template's (`CREATE DATABASE … TEMPLATE`)."
        )
    if "routed" in rows:
        notes.append(
            f"⁷ As ³, but the caller dials sip:{NUMBER}@{DOMAIN}, a number of client "
            f"`{CLIENT}` (`heimbuero client add`, `number add`, `user set {CALLEE} --client "
            f"{CLIENT}`, `rules import` before serve) whose only rule is unconditional: "
            f'`steps: [{{targets: ["user:{CALLEE}"], timeout: 30}}]`; heimbuero routes it '
            "(route(), plan step, call record) and rings the callee's registered device. "
            "Not applicable to the floor and Kamailio: Kamailio has no office routing; compare "
            "with heimbuero's own plain latency row above."
        )
    return "\n".join(lines + notes)


def _pg_version() -> str:
    try:
        out = subprocess.run(
            [str(HeimbueroPg.bin_dir() / "postgres"), "--version"],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
    except OSError:
        return "PostgreSQL ?"
    found = re.search(r"(\d+\.\d+)", out)
    return f"PostgreSQL {found.group(1)}" if found else "PostgreSQL ?"


def _not_measured(b: Bench, rows: list[str]) -> list[str]:
    """Footnote ⁶: why a cell shows n/a."""
    reasons: dict[str, list[str]] = {}
    for row in rows:
        for target, r in b.results[row].items():
            if "error" in r:
                reasons.setdefault(" ".join(str(r["error"]).split())[:400], []).append(
                    f"{LABELS[target]} {row}"
                )
    return [f"⁶ Not measured ({', '.join(cells)}): {why}" for why, cells in reasons.items()]


def _versions() -> str:
    parts = []
    try:
        out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"SIPp v([\d.]+)", out)
        parts.append(f"SIPp {m.group(1)}" if m else "SIPp")
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        exe, _ = kamailio_binary()
        out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"kamailio ([\d.]+)", out)
        parts.append(f"Kamailio {m.group(1)}" if m else "Kamailio")
    except (Unavailable, OSError, subprocess.TimeoutExpired):
        pass
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


# -- main ----------------------------------------------------------------------------------


def parse_rows(spec: str) -> list[str]:
    out = []
    for part in spec.split(","):
        part = part.strip().lower()
        if part.isdigit() and 1 <= int(part) <= len(ROWS):
            part = ROWS[int(part) - 1]
        if part not in ROWS:
            raise argparse.ArgumentTypeError(
                f"unknown row {part!r}: use {', '.join(ROWS)} or 1-{len(ROWS)}"
            )
        out.append(part)
    return [r for r in RUN_ORDER if r in out]


def parse_targets(spec: str) -> list[str]:
    out = [t.strip().lower() for t in spec.split(",") if t.strip()]
    bad = [t for t in out if t not in TARGETS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown target {bad[0]!r}: use {', '.join(TARGETS)}")
    return [t for t in TARGETS if t in out]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark heimbuero side by side with Kamailio and the direct SIPp floor; "
        "prints one markdown table. Rows: 1 calls, 2 latency, 3 register, 4 memory, "
        "5 routed, 6 soak "
        "(see bench/README.md).",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="runs per figure, the median is shown (default 3, --quick 1)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 1 repeat, short steps, 20,000 contacts"
    )
    ap.add_argument(
        "--only",
        type=parse_rows,
        default=list(RUN_ORDER),
        metavar="ROWS",
        help="comma-separated rows to run: calls, latency, register, memory, routed, soak (or 1-6)",
    )
    ap.add_argument(
        "--targets",
        type=parse_targets,
        default=list(DEFAULT_TARGETS),
        metavar="T",
        help="comma-separated columns to measure: floor, kamailio, heimbuero, heimbuero-pg "
        "(heimbuero on a PostgreSQL cluster the bench starts; default: the first three)",
    )
    ap.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    ap.add_argument(
        "--memory-repeat",
        type=int,
        metavar="N",
        help="runs of the memory row (default 1: each takes 4-5 minutes)",
    )
    ap.add_argument(
        "--memory-rate",
        type=int,
        metavar="R",
        help="registrations/s of the memory row's warm-up and fill (default 1000)",
    )
    ap.add_argument(
        "--soak-seconds",
        type=float,
        metavar="S",
        help="length of the soak row's load (default 100 s; --quick 20 s)",
    )
    ap.add_argument(
        "--soak-rate",
        type=int,
        metavar="R",
        help="calls/s of the soak row (default 400, about 30 %% of heimbuero's clean rate)",
    )
    ap.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, stats)"
    )
    args = ap.parse_args(argv)

    s = Settings.quick() if args.quick else Settings()
    if args.repeat is not None:
        if args.repeat < 1:
            ap.error("--repeat must be at least 1")
        s.repeat = args.repeat
    if args.memory_repeat is not None:
        if args.memory_repeat < 1:
            ap.error("--memory-repeat must be at least 1")
        s.memory_repeat = args.memory_repeat
    if args.memory_rate is not None:
        if args.memory_rate < 10:
            ap.error("--memory-rate must be at least 10")
        s.memory_rate = args.memory_rate
    if args.soak_seconds is not None:
        if args.soak_seconds < 5:
            ap.error("--soak-seconds must be at least 5")
        s.soak_seconds = args.soak_seconds
    if args.soak_rate is not None:
        if args.soak_rate < 1:
            ap.error("--soak-rate must be at least 1")
        s.soak_rate = args.soak_rate
    if shutil.which("sipp") is None:
        print(
            "bench/run.py: error: sipp is not installed (apt-get install sip-tester)",
            file=sys.stderr,
        )
        return 1

    tmp = Path(tempfile.mkdtemp(prefix="heimbuero-bench-"))
    b = Bench(s, tmp)
    started = time.monotonic()
    log(f"bench: rows {','.join(args.only)}; targets {','.join(args.targets)}; logs in {tmp}")

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        for row in args.only:
            targets = [
                t
                for t in args.targets
                if not (row in ("memory", "soak") and t == "floor")
                and not (row == "routed" and t not in HEIMBUERO)  # office routing: heimbuero's own
            ]
            repeats = s.memory_repeat if row == "memory" else 1 if row == "soak" else s.repeat
            runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
            states: dict[str, dict[str, Any]] = {t: {} for t in targets}
            t0 = time.monotonic()
            # targets take turns within each repeat, so that a noisy minute on this shared
            # machine does not land on one column only
            for rep in range(repeats):
                for target in targets:
                    if target in b.notes or "error" in b.results[row].get(target, {}):
                        continue
                    log(f"== {row} #{rep + 1}/{repeats}: {LABELS[target]}")
                    try:
                        runs[target].append(ROW_FUNCS[row](b, target, rep, states[target]))
                    except Unavailable as exc:
                        log(f"{LABELS[target]} unavailable: {exc}")
                        b.notes[target] = str(exc)[:300]
                    except (RuntimeError, TimeoutError) as exc:
                        log(f"{row} {LABELS[target]} failed: {exc}")
                        b.results[row][target] = {"error": str(exc)[:300]}
                    finally:
                        b.procs.stop_all()
            for target in targets:
                if target in b.notes:
                    b.results[row][target] = {"error": b.notes[target]}
                elif runs[target] and "error" not in b.results[row].get(target, {}):
                    b.results[row][target] = summarize(row, runs[target])
            log(f"   {row} took {time.monotonic() - t0:.0f} s")
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted")
    finally:
        b.procs.stop_all()
        HeimbueroPg.shutdown()
        if not args.keep and not interrupted:
            shutil.rmtree(tmp, ignore_errors=True)
        elif args.keep:
            log(f"kept {tmp}")

    table = build_table(b, args.only, args.targets)
    print(table)
    log(f"bench took {time.monotonic() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "settings": asdict(s),
                    "rows": args.only,
                    "targets": args.targets,
                    "versions": _versions(),
                    "results": b.results,
                    "notes": b.notes,
                    "table": table,
                },
                indent=2,
                default=str,
            )
        )
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
