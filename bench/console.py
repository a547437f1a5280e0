#!/usr/bin/env python3
"""Console benchmark: the screen pop's delay and the admin's client list (issue 12).

    python bench/console.py [--quick] [--calls N] [--agents N] [--clients N] [--requests N]
                            [--list-only] [--before DIR] [--json FILE] [--keep]

Starts `heimbuero init` + `heimbuero serve --sip udp:127.0.0.1:P --http 127.0.0.1:H` on a
fresh data directory with the agents `agent0`.. (role agent) and the admin `boss` (password
`benchpass`, written by bench/heimbuero_users.py), a trunk `carrier` at this process's carrier
socket (`heimbuero trunk add`) and an API token of `boss` (`heimbuero token create`). Then, as a
user would, through the HTTP API with that token: `--clients` clients (`c0000`..), each with a
number; client `cK` (K < agents) has a rule that rings `user:agentK`.

1. Screen pop (issue 12: "time from the INVITE arriving at the server to the screen-pop event
   on an agent's open event stream, p50/p99, with 50 agents connected"): every agent logs in to
   the console (login form) and opens its event stream (`GET /events`, Server-Sent Events) and
   registers a phone (a UDP socket of this process, REGISTER with an MD5 digest). The carrier
   socket then calls the numbers in turn, one call at a time (call i rings agent i mod N); the
   clock starts just before the INVITE is handed to the kernel and stops when the `ringing`
   event of that call is read from that agent's stream. The phone answers 486 (busy), the
   carrier ACKs the final answer, then the next call.
2. The admin's client list ("page render time of the admin's client list with 500 clients"):
   `boss` logs in; `GET /admin` (the overview with the client list, 50 clients a page)
   `--requests` times, one after the other on one keep-alive connection; the time to the last
   byte of the page, and its size. Measured at 50 clients too (before the rest are created), to
   see how it grows; at all clients also page 6 (`?page=6`), a search (`?q=betrieb 4`: 111
   clients match) and the largest page (`?per_page=200`).
3. `--before DIR` (a checkout of older code, e.g. `git worktree add --detach /tmp/main main`):
   after the rest, the server is stopped and `heimbuero serve` of DIR started on the same data
   directory, and `GET /admin` measured again the same way: before/after in one run, on one
   machine, with the same data.

`--list-only` leaves out the screen pop (1).

Prints one markdown table on stdout (progress on stderr). Everything on 127.0.0.1 on ports
picked free; every wait has a deadline; the server is stopped by its PID in a finally. See
bench/README.md, section "Console".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import secrets
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from presence import Msg, challenge, digest, parse  # noqa: E402
from run import DOMAIN, HOST, PASSWORD, Ports, Procs, log, sip_options, wait_until  # noqa: E402

ADMIN = "boss"
PER_PAGE = 50  # clients on a page of the admin's list (heimbuero/app/clients.py)
POP_P99_TARGET_MS = None  # the issue names no figure; the table shows "—"


@dataclass
class Settings:
    agents: int = 50
    clients: int = 500
    calls: int = 200
    requests: int = 50
    early_clients: int = 50  # the client list is measured at this size too
    call_timeout: float = 10.0

    @classmethod
    def quick(cls) -> Settings:
        return cls(agents=10, clients=100, calls=30, requests=10, early_clients=20)


def number_of(k: int) -> str:
    return f"+4930555{k:05d}"


def pct(xs: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


# -- set-up: data directory and HTTP API ------------------------------------------------------


def cli(*argv: str) -> str:
    r = subprocess.run([sys.executable, "-m", "heimbuero", *argv], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"heimbuero {' '.join(argv[:2])} failed: {r.stderr.strip()[-300:]}")
    return r.stdout


def make_data(tmp: Path, agents: int, carrier_port: int) -> tuple[Path, str]:
    """`heimbuero init`, the agents and the admin, the carrier trunk; the admin's API token."""
    d = tmp / "data"
    cli("init", "--data", str(d), "--domain", DOMAIN)
    for extra in (["--count", str(agents), "--prefix", "agent", "--role", "agent"],
                  ["--count", "0", "--extra", ADMIN, "--role", "admin"]):  # fmt: skip
        r = subprocess.run([sys.executable, str(BENCH / "heimbuero_users.py"), "--data", str(d),
                            "--password", PASSWORD, *extra], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"creating users failed: {r.stderr.strip()[-300:]}")
    cli("trunk", "add", "carrier", "--address", f"{HOST}:{carrier_port}", "--data", str(d))
    out = cli("token", "create", "--name", "bench", ADMIN, "--data", str(d))
    token = re.search(r"\b(hb_\S+)", out)
    if token is None:
        raise RuntimeError(f"no token in: {out!r}")
    return d, token.group(1)


def start_server(
    procs: Procs, ports: Ports, data: Path, root: Path = ROOT, name: str = "heimbuero"
) -> tuple[Any, int, int]:
    """`heimbuero serve` of the code in `root` (its package comes first on the path)."""
    sip, http = ports.one(), ports.one()
    proc = procs.start([sys.executable, "-m", "heimbuero", "serve", "--data", str(data),
                        "--sip", f"udp:{HOST}:{sip}", "--http", f"{HOST}:{http}"],
                       name, cwd=root)  # fmt: skip

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"heimbuero serve exited (rc {proc.returncode})")
        h = sip_options(sip)
        if h is None or not h["status"].startswith("SIP/2.0 200"):
            return False
        with socket.socket() as s:
            return s.connect_ex((HOST, http)) == 0

    wait_until(ready, 60, "heimbuero serve answering OPTIONS and HTTP", interval=0.1)
    return proc, sip, http


def add_clients(api: Any, first: int, last: int, agents: int) -> None:
    """Clients c{first}..c{last-1} through the API, each with a number; those below `agents`
    get a rule that rings their agent."""
    for k in range(first, last):
        cid = f"c{k:04d}"
        r = api.post("/api/clients", json={
            "id": cid, "name": f"Betrieb {k} GmbH", "trade": "Handwerk",
            "contact_person": f"Frau Inhaberin {k}", "greeting": f"Betrieb {k}, guten Tag",
            "timezone": "Europe/Berlin",
        })  # fmt: skip
        if r.status_code != 201:
            raise RuntimeError(f"POST /api/clients {cid}: {r.status_code} {r.text[:200]}")
        r = api.post("/api/numbers", json={"number": number_of(k), "client": cid})
        if r.status_code != 201:
            raise RuntimeError(f"POST /api/numbers {cid}: {r.status_code} {r.text[:200]}")
        if k < agents:
            doc = {"client": cid, "numbers": {number_of(k): {"rules": [
                {"name": "Immer", "steps": [{"targets": [f"user:agent{k}"], "timeout": 30}]},
            ]}}}  # fmt: skip
            r = api.put(f"/api/clients/{cid}/rules", json=doc)
            if r.status_code != 200:
                raise RuntimeError(f"PUT rules {cid}: {r.status_code} {r.text[:200]}")


def login(http_url: str, name: str) -> Any:
    """A console session (the login form, as a browser sends it): an httpx.Client with it."""
    import httpx

    c = httpx.Client(base_url=http_url, timeout=30)
    page = c.get("/")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    if m is None:
        raise RuntimeError(f"no login form at / ({page.status_code})")
    r = c.post("/login", data={"csrf": m.group(1), "name": name, "password": PASSWORD})
    if r.status_code != 303 or "hb_session" not in c.cookies:
        raise RuntimeError(f"login of {name}: {r.status_code} {r.text[:200]}")
    return c


# -- 2. the admin's client list ---------------------------------------------------------------


def _probe(port: int, stop: Any, out: Any) -> None:
    rtts, lost = [], 0
    while not stop.is_set():
        t0 = time.perf_counter()
        if sip_options(port, timeout=2.0) is None:
            lost += 1
        else:
            rtts.append((time.perf_counter() - t0) * 1000)
        stop.wait(0.01)
    out.put((rtts, lost))


class SipProbe:
    """OPTIONS to the server every 10 ms (one at a time) from a process of its own: how long
    SIP waits while pages are made (the web console and SIP share the server's event loop)."""

    def __init__(self, sip_port: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self.stop, self.out = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_probe, args=(sip_port, self.stop, self.out), daemon=True)
        self.rtts: list[float] = []
        self.lost = 0

    def __enter__(self) -> SipProbe:
        self.proc.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.rtts, self.lost = self.out.get(timeout=10)
        self.proc.join(5)

    def summary(self) -> dict[str, Any]:
        r = self.rtts or [0.0]
        return {"probes": len(self.rtts), "lost": self.lost, "p50_ms": statistics.median(r),
                "p99_ms": pct(r, 99), "max_ms": max(r)}  # fmt: skip


# (what, query) of the client list measured at all clients besides the first page
LIST_VIEWS = (
    ("page 6", "?page=6"),
    ("search `q=betrieb 4`", "?q=betrieb+4"),
    ("200 a page", "?per_page=200"),
)


def client_list(
    admin: Any, requests: int, clients: int, sip_port: int, query: str = "",
    links: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """`GET /admin{query}` `requests` times; the page must link `links` clients (None: at
    least one)."""
    path = "/admin" + query
    admin.get(path)  # warm (templates compiled, connection open)
    with SipProbe(sip_port) as idle:
        time.sleep(1.0)
    times, size = [], 0
    with SipProbe(sip_port) as busy:
        for _ in range(requests):
            t0 = time.perf_counter()
            r = admin.get(path)
            body = r.content
            times.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"GET {path}: {r.status_code}")
            size = len(body)
    shown = body.decode().count('href="/admin/clients/c')
    if (links is None and shown < 1) or (links is not None and shown != links):
        raise RuntimeError(f"GET {path} links {shown} clients, not {links or 'some'}")
    return {"clients": clients, "path": path, "requests": requests,
            "p50_ms": statistics.median(times), "p99_ms": pct(times, 99), "max_ms": max(times),
            "bytes": size, "client_links": shown, "runs_ms": [round(t, 2) for t in times],
            "sip_options_idle": idle.summary(), "sip_options_during": busy.summary()}  # fmt: skip


def measure_before(
    root: Path, s: Settings, procs: Procs, ports: Ports, data: Path, proc: Any,
    sessions: list[Any],
) -> dict[str, Any] | None:  # fmt: skip
    """Stop the server, start `heimbuero serve` of `root` on the same data, and measure
    `GET /admin` there (the older code's page may list every client: any count is taken)."""
    for c in sessions:
        c.close()
    sessions.clear()
    procs.stop(proc)
    try:
        _, sip_port, http_port = start_server(procs, ports, data, root, "heimbuero-before")
        admin = login(f"http://{HOST}:{http_port}", ADMIN)
        sessions.append(admin)
        got = client_list(admin, s.requests, s.clients, sip_port)
    except (RuntimeError, OSError) as exc:
        log(f"the client list of {root} failed: {exc}")
        return None
    got["code"] = str(root)
    log(f"before ({root}): GET /admin p50 {got['p50_ms']:.1f} ms, p99 {got['p99_ms']:.1f} ms, "
        f"{got['client_links']} clients linked")  # fmt: skip
    return got


# -- 1. screen pop ----------------------------------------------------------------------------


def response(msg: Msg, status: str, to_tag: str) -> bytes:
    lines = [f"SIP/2.0 {status}"]
    lines += [f"Via: {v}" for v in msg.headers.get("via", [])]
    to = msg.h("to")
    if ";tag=" not in to:
        to += f";tag={to_tag}"
    lines += [f"From: {msg.h('from')}", f"To: {to}", f"Call-ID: {msg.h('call-id')}",
              f"CSeq: {msg.h('cseq')}", "Content-Length: 0"]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Stream:
    """One agent's console event stream: GET /events on a raw socket, read as it arrives."""

    FRAME = re.compile(rb"event: (\w+)\ndata: ([^\n]*)\n\n")

    def __init__(self, http_port: int, session: str, agent: int) -> None:
        self.agent = agent
        self.sock = socket.create_connection((HOST, http_port), timeout=10)
        self.sock.sendall((f"GET /events HTTP/1.1\r\nHost: {HOST}:{http_port}\r\n"
                           f"Cookie: hb_session={session}\r\nAccept: text/event-stream\r\n\r\n"
                           ).encode())  # fmt: skip
        self.sock.setblocking(False)
        self.buf = b""
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.open = False

    def read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            at = time.time()
            if not data:
                raise RuntimeError(f"event stream of agent{self.agent} closed")
            self.buf += data
            if not self.open and b"\r\n\r\n" in self.buf:
                head, _, self.buf = self.buf.partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"GET /events: {head.splitlines()[0]!r}")
                self.open = True
            end = 0
            for m in self.FRAME.finditer(self.buf):
                self.events.append((at, m.group(1).decode(), json.loads(m.group(2))))
                end = m.end()
            self.buf = self.buf[end:]


class PopBench:
    def __init__(self, s: Settings, sip_port: int, carrier: socket.socket) -> None:
        self.s = s
        self.server = (HOST, sip_port)
        self.sel = selectors.DefaultSelector()
        self.carrier = carrier
        self.carrier.setblocking(False)
        self.sel.register(carrier, selectors.EVENT_READ, "carrier")
        self.phones: list[socket.socket] = []
        self.streams: list[Stream] = []
        self.finals: dict[str, Msg] = {}  # carrier: Call-ID -> final response
        self.reg: dict[str, Msg] = {}  # phone REGISTER: Call-ID -> final response
        self.invites = 0
        self.busy_tag = secrets.token_hex(4)

    def close(self) -> None:
        for s in self.phones:
            s.close()
        for st in self.streams:
            st.sock.close()
        self.sel.close()

    def poll(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            if isinstance(key.data, Stream):
                key.data.read()
                continue
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            while True:
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                self._sip(key.data, sock, parse(data), addr)

    def _sip(self, who: str, sock: socket.socket, msg: Msg, addr: Any) -> None:
        cid = msg.h("call-id")
        if msg.is_response:
            if msg.status < 200:
                return
            if who == "carrier":
                if cid not in self.finals:
                    self.finals[cid] = msg
                    self._ack(msg)
            else:
                self.reg[cid] = msg
            return
        if msg.method == "INVITE":  # a phone rings: busy (the pop is what is measured)
            self.invites += 1
            sock.sendto(response(msg, "486 Busy Here", self.busy_tag), addr)
        elif msg.method != "ACK":
            sock.sendto(response(msg, "200 OK", self.busy_tag), addr)

    def _ack(self, final: Msg) -> None:
        via = final.headers["via"][0]
        num = final.h("cseq").split()[0]
        lines = [f"ACK sip:{final.h('to').split('<sip:')[1].split('@')[0]}@{DOMAIN} SIP/2.0",
                 f"Via: {via}", "Max-Forwards: 70", f"From: {final.h('from')}",
                 f"To: {final.h('to')}", f"Call-ID: {final.h('call-id')}", f"CSeq: {num} ACK",
                 "Content-Length: 0"]  # fmt: skip
        self.carrier.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.server)

    def wait(self, cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f} s")
            self.poll(0.05)

    def register_phones(self) -> None:
        for k in range(self.s.agents):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((HOST, 0))
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, "phone")
            self.phones.append(s)
            user, port = f"agent{k}", s.getsockname()[1]
            ruri, cid, tag = f"sip:{DOMAIN}", f"reg-{secrets.token_hex(8)}", secrets.token_hex(4)
            auth = ""
            for cseq in (1, 2):
                via = f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport"
                lines = [f"REGISTER {ruri} SIP/2.0",
                         via, "Max-Forwards: 70", f"From: <sip:{user}@{DOMAIN}>;tag={tag}",
                         f"To: <sip:{user}@{DOMAIN}>", f"Call-ID: {cid}", f"CSeq: {cseq} REGISTER",
                         f"Contact: <sip:{user}@{HOST}:{port}>", "Expires: 3600"]  # fmt: skip
                if auth:
                    lines.append(auth)
                lines.append("Content-Length: 0")
                self.reg.pop(cid, None)
                s.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.server)
                self.wait(lambda c=cid: c in self.reg, 10, f"REGISTER {user}")  # type: ignore[misc]
                got = self.reg[cid]
                if got.status == 401 and not auth:
                    auth = f"Authorization: {digest(challenge(got), 'REGISTER', ruri, user)}"
                    continue
                if got.status != 200:
                    raise RuntimeError(f"REGISTER {user}: {got.first}")
                break

    def open_streams(self, http_port: int, sessions: list[str]) -> None:
        for k, sid in enumerate(sessions):
            st = Stream(http_port, sid, k)
            self.sel.register(st.sock, selectors.EVENT_READ, st)
            self.streams.append(st)

        def opened() -> bool:
            return all(
                st.open and any(e[1] == "snapshot" for e in st.events) for st in self.streams
            )

        self.wait(opened, 20, "every event stream's snapshot")

    def stray_pops(self) -> int:
        """`ringing` events on a stream whose agent the call did not ring (should be none)."""
        return sum(1 for st in self.streams for _, ev, data in st.events
                   if ev == "ringing" and data.get("client") != f"c{st.agent:04d}")  # fmt: skip

    def call(self, i: int) -> dict[str, Any]:
        k = i % self.s.agents
        number, caller = number_of(k), f"+49170{i:07d}"
        cport = self.carrier.getsockname()[1]
        cid = f"pop-{i}-{secrets.token_hex(6)}"
        lines = [f"INVITE sip:{number}@{DOMAIN} SIP/2.0",
                 f"Via: SIP/2.0/UDP {HOST}:{cport};branch=z9hG4bK{secrets.token_hex(8)};rport",
                 "Max-Forwards: 70", f"From: <sip:{caller}@{HOST}>;tag={secrets.token_hex(4)}",
                 f"To: <sip:{number}@{DOMAIN}>", f"Call-ID: {cid}", "CSeq: 1 INVITE",
                 f"Contact: <sip:{caller}@{HOST}:{cport}>", "Content-Length: 0"]  # fmt: skip
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
        st = self.streams[k]
        seen = len(st.events)
        sent = time.time()
        self.carrier.sendto(raw, self.server)

        def popped() -> tuple[float, dict[str, Any]] | None:
            for at, ev, data in st.events[seen:]:
                if ev == "ringing" and data.get("call_id") == cid:
                    return at, data
            return None

        try:
            self.wait(lambda: popped() is not None, self.s.call_timeout, f"the pop of call {i}")
        except TimeoutError:
            raise TimeoutError(
                f"no pop of call {i} within {self.s.call_timeout:.0f} s; "
                f"agent{k}'s stream had {st.events[seen:]!r}"
            ) from None
        at, card = popped()  # type: ignore[misc]
        self.wait(lambda: cid in self.finals, self.s.call_timeout, f"call {i}'s final answer")
        if card.get("client") != f"c{k:04d}":
            raise RuntimeError(f"call {i}: the card is of {card.get('client')!r}")
        return {"ms": (at - sent) * 1000, "final": self.finals[cid].status}


# -- main -------------------------------------------------------------------------------------


def table(res: dict[str, Any], s: Settings) -> str:
    rows = ["| metric | value | note |", "|---|---|---|"]
    pop = res.get("pop")
    if pop:
        rows.append(f"| screen pop: INVITE sent → `ringing` event read, p50 (ms)¹ | "
                    f"{pop['p50_ms']:.2f} | {pop['calls']} calls, {pop['agents']} agents with open "
                    f"event streams and registered phones |")  # fmt: skip
        rows.append(f"| screen pop: INVITE sent → `ringing` event read, p99 (ms)¹ | "
                    f"{pop['p99_ms']:.2f} | max {pop['max_ms']:.2f} |")  # fmt: skip
    else:
        rows.append(f"| screen pop¹ | n/a | {res.get('pop_error', 'not measured')} |")
    lists = [res.get("list_early"), res.get("list"), *res.get("list_views", []),
             res.get("before")]  # fmt: skip
    for lst in lists:
        if not lst:
            continue
        busy, idle = lst["sip_options_during"], lst["sip_options_idle"]
        who = f"before ({lst['code']}): " if "code" in lst else ""
        rows.append(
            f"| {who}`GET {lst['path']}`, {lst['clients']:,} clients: page p50 / p99 / max "
            f"(ms)² | {lst['p50_ms']:.1f} / {lst['p99_ms']:.1f} / {lst['max_ms']:.1f} | "
            f"{lst['client_links']} clients linked, {lst['bytes'] / 1024:,.0f} KiB; SIP OPTIONS "
            f"meanwhile p50 / p99 / max {busy['p50_ms']:.1f} / {busy['p99_ms']:.1f} / "
            f"{busy['max_ms']:.1f} ms³ (idle {idle['p50_ms']:.1f} / {idle['p99_ms']:.1f}) |"
        )
    if "list_error" in res:
        rows.append(f"| admin client list² | n/a | {res['list_error']} |")
    notes = [
        "",
        "¹ The carrier (a trusted trunk, raw UDP in this process) calls a client number whose "
        "only rule rings one agent; the clock starts before the INVITE is sent on 127.0.0.1 and "
        "stops when that agent's `GET /events` stream (Server-Sent Events, read on a raw socket "
        "in the same process) delivers the `ringing` event with the client card. One call at a "
        "time; the agent's phone (a UDP socket of this process) answers 486.",
        "² `boss` (role admin) logged in through the login form; each page `--requests` times, "
        "one request after another on one keep-alive connection (httpx), time to the page's "
        "last byte; every client has a number. 50 clients a page unless `per_page` says "
        "otherwise; `before`: the code of `--before`, whose page lists every client.",
        "³ A process of the bench sends OPTIONS to the server every 10 ms (one at a time) while "
        "the page's requests run, and for 1 s before them (idle): the time SIP waits while "
        "the page is made (the console and SIP share the server's event loop and the GIL).",
    ]
    return "\n".join(rows + notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 10 agents, 100 clients, 30 calls, 10 requests")  # fmt: skip
    ap.add_argument("--agents", type=int)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--calls", type=int)
    ap.add_argument("--requests", type=int)
    ap.add_argument("--list-only", action="store_true",
                    help="measure the admin's client list only (no screen pop)")  # fmt: skip
    ap.add_argument("--before", type=Path, metavar="DIR",
                    help="a checkout of older code: GET /admin is measured with it too, on the "
                         "same data, after the rest")  # fmt: skip
    ap.add_argument("--json", type=Path, help="also write every measurement as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server log, data)")
    args = ap.parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    for name in ("agents", "clients", "calls", "requests"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    s.early_clients = min(s.early_clients, s.clients)
    if s.agents > s.clients:
        ap.error("--agents must not exceed --clients (each agent gets a client's calls)")
    if args.before is not None and not (args.before / "heimbuero" / "__main__.py").is_file():
        ap.error(f"--before {args.before}: no heimbuero package there")

    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="hb-console-"))
    procs = Procs(tmp)
    ports = Ports()
    res: dict[str, Any] = {"settings": vars(s).copy()}
    log(f"console bench: logs in {tmp}")

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    carrier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier.bind((HOST, 0))
    bench: PopBench | None = None
    sessions: list[Any] = []
    ok = False
    try:
        t0 = time.monotonic()
        data, token = make_data(tmp, s.agents, carrier.getsockname()[1])
        proc, sip_port, http_port = start_server(procs, ports, data)
        url = f"http://{HOST}:{http_port}"
        log(f"server up ({time.monotonic() - t0:.1f} s)")
        with httpx.Client(base_url=url, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as api:  # fmt: skip
            t0 = time.monotonic()
            add_clients(api, 0, s.early_clients, s.agents)
            admin = login(url, ADMIN)
            sessions.append(admin)
            try:
                if s.early_clients < s.clients:
                    early = client_list(admin, s.requests, s.early_clients, sip_port,
                                        links=min(PER_PAGE, s.early_clients))  # fmt: skip
                    res["list_early"] = early
                    log(f"GET /admin at {s.early_clients} clients: p50 {early['p50_ms']:.1f} ms")
                add_clients(api, s.early_clients, s.clients, s.agents)
                log(f"{s.clients} clients added through the API "
                    f"({time.monotonic() - t0:.1f} s in all)")  # fmt: skip
                res["list"] = client_list(admin, s.requests, s.clients, sip_port,
                                          links=min(PER_PAGE, s.clients))  # fmt: skip
                log(
                    f"GET /admin at {s.clients} clients: p50 {res['list']['p50_ms']:.1f} ms, "
                    f"p99 {res['list']['p99_ms']:.1f} ms, {res['list']['bytes']:,} bytes; SIP "
                    f"OPTIONS round trip idle {res['list']['sip_options_idle']}, during "
                    f"{res['list']['sip_options_during']}"
                )
                res["list_views"] = []
                for what, query in LIST_VIEWS:
                    got = client_list(admin, s.requests, s.clients, sip_port, query)
                    res["list_views"].append(got)
                    log(f"GET /admin{query} ({what}): p50 {got['p50_ms']:.1f} ms, "
                        f"{got['client_links']} clients linked")  # fmt: skip
            except (RuntimeError, httpx.HTTPError) as exc:
                log(f"client list failed: {exc}")
                res["list_error"] = str(exc)[:200]
                add_clients(api, s.early_clients, s.clients, s.agents)
        try:
            if args.list_only:
                raise RuntimeError("left out (--list-only)")
            bench = PopBench(s, sip_port, carrier)
            agents = []
            for k in range(s.agents):
                agents.append(login(url, f"agent{k}"))
            sessions += agents
            bench.open_streams(http_port, [a.cookies["hb_session"] for a in agents])
            bench.register_phones()
            log(f"{s.agents} agents logged in, event streams open, phones registered")
            for i in range(min(s.agents, 10)):  # warm-up: not counted
                bench.call(i)
            runs = []
            for i in range(s.calls):
                runs.append(bench.call(i))
                time.sleep(0.01)
            ms = [r["ms"] for r in runs]
            res["pop"] = {
                "calls": len(runs), "agents": s.agents, "p50_ms": statistics.median(ms),
                "p99_ms": pct(ms, 99), "max_ms": max(ms), "min_ms": min(ms),
                "finals": sorted({r["final"] for r in runs}),
                "pops_on_another_agents_stream": bench.stray_pops(),
                "runs_ms": [round(x, 3) for x in ms],
            }  # fmt: skip
            p = res["pop"]
            log(f"screen pop: p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms, max "
                f"{p['max_ms']:.2f} ms; finals {p['finals']}, "
                f"{p['pops_on_another_agents_stream']} pops on another agent's stream")  # fmt: skip
        except (RuntimeError, TimeoutError, OSError) as exc:
            log(f"screen pop failed: {exc}")
            res["pop_error"] = str(exc)[:200]
        if args.before is not None:
            res["before"] = measure_before(args.before, s, procs, ports, data, proc, sessions)
        ok = ("pop" in res or args.list_only) and "list" in res
        ok = ok and (args.before is None or res["before"] is not None)
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        if bench is not None:
            bench.close()
        carrier.close()
        for c in sessions:
            c.close()
        procs.stop_all()
        if args.keep or not ok:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(res, s))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
