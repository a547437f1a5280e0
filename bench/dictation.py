#!/usr/bin/env python3
"""Dictation benchmark: `#` to the job in the queue, and memory during large uploads (issue 14).

    python bench/dictation.py [--quick] [--dictations N] [--parallel N] [--seconds S]
                              [--uploads N] [--upload-mb MB] [--json FILE] [--keep]

Starts `heimbuero init --demo` + `heimbuero serve --sip udp:127.0.0.1:P --http 127.0.0.1:H`
on a fresh data directory, with the typist `tippse` (role agent) and the client users
`diktat0`.. (role client, `heimbuero user set diktatK --client mueller`), password `benchpass`
(written by bench/heimbuero_users.py).

1. `#` to queue (issue 14: "time from `#` to the job visible in the queue"): the typist logs in
   to the console (login form) and opens the queue's event stream (`GET /dictation/events`,
   Server-Sent Events). Each client user's phone (UDP sockets of this process) registers (MD5
   digest), dials `*88` (INVITE, 407, INVITE with the digest), ACKs the 200, waits for the
   prompt and the beep to end, speaks `--seconds` of a 440 Hz tone as RTP (PCMA, 20 ms packets
   in real time) and presses `#` (RFC 4733 telephone-event, its end packet three times). The
   clock starts before the first `#` packet is handed to the kernel and stops (a) when the
   typist's stream delivers the `job` event of the new job and (b) when `GET
   /api/dictation/queue` (the typist's basic auth, polled back to back while a job is awaited)
   first lists it. The server hangs up (BYE) after `#`. `--dictations` one after another, then
   the same number in rounds of `--parallel` phones at once.
2. Memory during large uploads: `--uploads` tus uploads (`POST /api/dictation/uploads`, one
   `PATCH` with the whole file, streamed from disk by httpx) of a generated WAV (8 kHz 16-bit
   noise) of `--upload-mb` MB each, all at once from threads of this process, each followed by
   `POST /api/dictation/jobs` with the upload. The server's RSS (`/proc/PID/status` VmRSS of
   the serve process, and the sum over its process tree) is sampled every 100 ms; a process of
   the bench sends SIP OPTIONS every 10 ms (one at a time) to see whether signalling stalls.

Prints one markdown table on stdout (progress on stderr). Everything on 127.0.0.1 on ports
picked free; every wait has a deadline; the server is stopped by its PID in a finally; the
large files are deleted. See bench/README.md, section "Dictation".
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from console import SipProbe, login, pct, start_server  # noqa: E402
from presence import Msg, challenge, digest, ok_to, parse  # noqa: E402
from run import DOMAIN, HOST, PASSWORD, Ports, Procs, log, process_tree  # noqa: E402

from heimbuero.media import ua_codec as codec  # noqa: E402

TYPIST = "tippse"
CLIENT = "mueller"  # a client of the demo office
TUS = {"Tus-Resumable": "1.0.0"}
MB = 1024 * 1024


@dataclass
class Settings:
    dictations: int = 30
    parallel: int = 5
    seconds: float = 3.0
    uploads: int = 10
    upload_mb: int = 150

    @classmethod
    def quick(cls) -> Settings:
        return cls(dictations=10, parallel=5, seconds=2.0, uploads=10, upload_mb=20)


def cli(*argv: str) -> str:
    r = subprocess.run([sys.executable, "-m", "heimbuero", *argv], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"heimbuero {' '.join(argv[:2])} failed: {r.stderr.strip()[-300:]}")
    return r.stdout


def make_data(tmp: Path, phones: int) -> tuple[Path, dict[str, str]]:
    """`heimbuero init --demo`, the typist and the client users; an API token of each."""
    d = tmp / "data"
    cli("init", "--data", str(d), "--domain", DOMAIN, "--demo")
    for extra in (["--count", str(phones), "--prefix", "diktat", "--role", "client"],
                  ["--count", "0", "--extra", TYPIST, "--role", "agent"]):  # fmt: skip
        r = subprocess.run([sys.executable, str(BENCH / "heimbuero_users.py"), "--data", str(d),
                            "--password", PASSWORD, *extra], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"creating users failed: {r.stderr.strip()[-300:]}")
    for k in range(phones):
        cli("user", "set", f"diktat{k}", "--client", CLIENT, "--data", str(d))
    tokens = {}
    for user in [TYPIST, *(f"diktat{k}" for k in range(phones))]:
        out = cli("token", "create", "--name", "bench", user, "--data", str(d))
        token = re.search(r"\b(hb_\S+)", out)
        if token is None:
            raise RuntimeError(f"no token in: {out!r}")
        tokens[user] = token.group(1)
    return d, tokens


# -- the typist's view: the console's event stream and the queue API --------------------------


class Watch:
    """What the typist sees, with the time each job was first seen: the console's queue stream
    (`GET /dictation/events`, read on a raw socket by a thread) and `GET /api/dictation/queue`
    (polled back to back by another thread while `awaiting` is set)."""

    FRAME = re.compile(rb"event: (\w+)\ndata: ([^\n]*)\n\n")

    def __init__(self, http_port: int, session: str, token: str) -> None:
        import httpx

        self.sse: dict[int, float] = {}  # job id -> time its `job` event (state new) was read
        self.api: dict[int, tuple[float, dict[str, Any]]] = {}  # job id -> (time, job)
        self.awaiting = threading.Event()
        self.stop = threading.Event()
        self.polls = 0
        self.errors: list[str] = []
        self.sock = socket.create_connection((HOST, http_port), timeout=10)
        self.sock.sendall((f"GET /dictation/events HTTP/1.1\r\nHost: {HOST}:{http_port}\r\n"
                           f"Cookie: hb_session={session}\r\nAccept: text/event-stream\r\n\r\n"
                           ).encode())  # fmt: skip
        self.opened = threading.Event()
        self.http = httpx.Client(base_url=f"http://{HOST}:{http_port}", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        self.threads = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=self._poll, daemon=True)]  # fmt: skip
        for t in self.threads:
            t.start()
        if not self.opened.wait(10):
            raise RuntimeError("the typist's event stream did not open")

    def _read(self) -> None:
        buf = b""
        self.sock.settimeout(0.5)
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.time()
            if not data:
                self.errors.append("the event stream closed")
                return
            buf += data
            if not self.opened.is_set() and b"\r\n\r\n" in buf:
                head, _, buf = buf.partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    self.errors.append(f"GET /dictation/events: {head.splitlines()[0]!r}")
                    return
                self.opened.set()
            end = 0
            for m in self.FRAME.finditer(buf):
                item = json.loads(m.group(2))
                if m.group(1) == b"job" and item.get("state") == "new":
                    self.sse.setdefault(int(item["id"]), at)
                end = m.end()
            buf = buf[end:]

    def _poll(self) -> None:
        while not self.stop.is_set():
            if not self.awaiting.wait(0.2):
                continue
            try:
                r = self.http.get("/api/dictation/queue")
            except Exception as exc:  # noqa: BLE001 - reported, the bench goes on
                self.errors.append(f"GET /api/dictation/queue: {exc}")
                time.sleep(0.1)
                continue
            at = time.time()
            self.polls += 1
            if r.status_code != 200:
                self.errors.append(f"GET /api/dictation/queue: {r.status_code}")
                continue
            for job in r.json():
                self.api.setdefault(int(job["id"]), (at, job))

    def by_author(self, author: str, known: set[int]) -> int | None:
        for jid, (_, job) in self.api.items():
            if jid not in known and job["author"] == author and job["source"] == "phone":
                return jid
        return None

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for t in self.threads:
            t.join(5)
        self.http.close()


# -- a client's phone --------------------------------------------------------------------------


class Phone:
    """A client user's phone: a SIP socket and an RTP socket, blocking, used by one thread."""

    def __init__(self, user: str, sip_port: int) -> None:
        self.user = user
        self.server = (HOST, sip_port)
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((HOST, 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((HOST, 0))
        self.port = self.sip.getsockname()[1]
        self.contact = f"<sip:{user}@{HOST}:{self.port}>"
        self.tag = secrets.token_hex(4)

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def via(self) -> str:
        return f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport"

    def send(self, lines: list[str], body: bytes = b"") -> None:
        lines = [*lines, f"Content-Length: {len(body)}"]
        self.sip.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body, self.server)

    def final(self, cid: str, cseq: str, timeout: float) -> Msg:
        """The final answer to (Call-ID, CSeq); requests that arrive meanwhile get 200."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(deadline, f"the answer to {cseq} of {self.user}")
            if msg.is_response:
                if msg.h("call-id") == cid and msg.h("cseq") == cseq and msg.status >= 200:
                    return msg
            elif msg.method != "ACK":
                self.sip.sendto(ok_to(msg), self.server)

    def recv(self, deadline: float, what: str) -> Msg:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what}: none in time")
            self.sip.settimeout(left)
            try:
                data = self.sip.recv(65535)
            except TimeoutError:
                continue
            return parse(data)

    def register(self) -> None:
        ruri, cid, auth = f"sip:{DOMAIN}", f"reg-{secrets.token_hex(8)}", ""
        for cseq in (1, 2):
            self.send([f"REGISTER {ruri} SIP/2.0", self.via(), "Max-Forwards: 70",
                       f"From: <sip:{self.user}@{DOMAIN}>;tag={self.tag}",
                       f"To: <sip:{self.user}@{DOMAIN}>", f"Call-ID: {cid}",
                       f"CSeq: {cseq} REGISTER", f"Contact: {self.contact}", "Expires: 3600",
                       *([auth] if auth else [])])  # fmt: skip
            got = self.final(cid, f"{cseq} REGISTER", 10)
            if got.status == 401 and not auth:
                auth = f"Authorization: {digest(challenge(got), 'REGISTER', ruri, self.user)}"
                continue
            if got.status != 200:
                raise RuntimeError(f"REGISTER {self.user}: {got.first}")
            return

    def _quiet(self, seconds: float) -> bool:
        self.rtp.settimeout(seconds)
        try:
            self.rtp.recv(2048)
        except TimeoutError:
            return True
        return False

    def dictate(self, code: str, seconds: float, pressed: Callable[[str, float], None]) -> None:
        """Dial `code`, wait out the prompt and the beep, speak, press #; wait for the BYE."""
        ruri = f"sip:{code}@{DOMAIN}"
        cid, tag = f"dict-{secrets.token_hex(8)}", secrets.token_hex(4)
        sdp = (f"v=0\r\no=m 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
               f"m=audio {self.rtp.getsockname()[1]} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
               f"a=rtpmap:101 telephone-event/8000\r\n").encode()  # fmt: skip
        head = [f"From: <sip:{self.user}@{DOMAIN}>;tag={tag}", f"To: <{ruri}>",
                f"Call-ID: {cid}", "Max-Forwards: 70", f"Contact: {self.contact}",
                "Content-Type: application/sdp"]  # fmt: skip
        via = self.via()
        self.send([f"INVITE {ruri} SIP/2.0", via, *head, "CSeq: 1 INVITE"], sdp)
        ch = self.final(cid, "1 INVITE", 10)
        if ch.status != 407:
            raise RuntimeError(f"*88 of {self.user}: {ch.first} (expected 407)")
        self.send([f"ACK {ruri} SIP/2.0", via, "Max-Forwards: 70", head[0],
                   f"To: {ch.h('to')}", f"Call-ID: {cid}", "CSeq: 1 ACK"])  # fmt: skip
        auth = f"Proxy-Authorization: {digest(challenge(ch), 'INVITE', ruri, self.user)}"
        self.send([f"INVITE {ruri} SIP/2.0", self.via(), *head, "CSeq: 2 INVITE", auth], sdp)
        ok = self.final(cid, "2 INVITE", 20)
        if ok.status != 200:
            raise RuntimeError(f"*88 of {self.user}: {ok.first}")
        target = re.search(r"<([^>]+)>", ok.h("contact"))
        m_audio = re.search(rb"m=audio (\d+)", ok.body)
        if target is None or m_audio is None:
            raise RuntimeError(f"*88 of {self.user}: no Contact or no audio in the 200")
        routes = [r.strip() for v in reversed(ok.headers.get("record-route", []))
                  for r in v.split(",")]  # fmt: skip
        self.send([f"ACK {target.group(1)} SIP/2.0", self.via(), "Max-Forwards: 70", head[0],
                   f"To: {ok.h('to')}", f"Call-ID: {cid}", "CSeq: 2 ACK",
                   *[f"Route: {r}" for r in routes]])  # fmt: skip
        media = (HOST, int(m_audio.group(1)))
        self.rtp.settimeout(5)
        self.rtp.recv(2048)  # the prompt plays
        deadline = time.monotonic() + 20
        while not self._quiet(0.3):
            if time.monotonic() > deadline:
                raise TimeoutError(f"*88 of {self.user}: the prompt and beep did not end")
        sender = codec.RtpSender(secrets.randbits(32), 8, timestamp=1000)
        pcm = tone(440, seconds)
        start = time.monotonic()
        for i, frame in enumerate(codec.frames(pcm)):
            self.rtp.sendto(sender.audio(frame), media)
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ev = codec.TelephoneEvent(11, True, 10, 800).encode()  # "#"
        packets = []
        for _ in range(3):
            packets.append(codec.RtpPacket(101, sender.sequence, sender.timestamp, sender.ssrc,
                                           ev).encode())  # fmt: skip
            sender.sequence += 1
        pressed(self.user, time.time())
        for p in packets:
            self.rtp.sendto(p, media)
        deadline = time.monotonic() + 10
        while True:  # the server hangs up
            msg = self.recv(deadline, f"the BYE of {self.user}'s dictation")
            if msg.is_response:
                continue
            self.sip.sendto(ok_to(msg), self.server)
            if msg.method == "BYE" and msg.h("call-id") == cid:
                return


_TONES: dict[float, bytes] = {}


def tone(hz: float, seconds: float) -> bytes:
    import math
    import struct

    if seconds not in _TONES:
        n = int(seconds * 8000)
        _TONES[seconds] = struct.pack(
            f"<{n}h", *(int(9000 * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n))
        )
    return _TONES[seconds]


# -- 1. `#` to queue -------------------------------------------------------------------------


def _dictate(p: Phone, code: str, seconds: float, hashes: dict[str, float],
             errors: list[str]) -> None:  # fmt: skip
    try:
        p.dictate(code, seconds, hashes.__setitem__)
    except (RuntimeError, TimeoutError, OSError) as exc:
        errors.append(str(exc))


def dictations(phones: list[Phone], watch: Watch, rounds: int, code: str, seconds: float,
               timeout: float = 15.0) -> list[dict[str, Any]]:  # fmt: skip
    """`rounds` rounds, all `phones` dictating at once in each; per dictation the delays."""
    out: list[dict[str, Any]] = []
    for r in range(rounds):
        known = set(watch.api) | set(watch.sse)
        hashes: dict[str, float] = {}
        errors: list[str] = []
        threads = [threading.Thread(target=_dictate, args=(p, code, seconds, hashes, errors))
                   for p in phones]  # fmt: skip
        for t in threads:
            t.start()
        # the queue API is polled from the first `#` on
        while not hashes and any(t.is_alive() for t in threads):
            time.sleep(0.001)
        watch.awaiting.set()
        for t in threads:
            t.join(60)
        if errors:
            watch.awaiting.clear()
            raise RuntimeError(f"round {r}: {errors[0]}")
        deadline = time.monotonic() + timeout
        found: dict[str, int] = {}
        while len(found) < len(phones) or not all(j in watch.sse for j in found.values()):
            for p in phones:
                if p.user not in found:
                    jid = watch.by_author(p.user, known)
                    if jid is not None:
                        found[p.user] = jid
            if time.monotonic() > deadline:
                watch.awaiting.clear()
                raise TimeoutError(f"round {r}: jobs seen {found}, stream {sorted(watch.sse)}")
            time.sleep(0.005)
        watch.awaiting.clear()
        for user, jid in found.items():
            at, job = watch.api[jid]
            out.append({"user": user, "job": jid, "audio_seconds": job["audio_seconds"],
                        "sse_ms": (watch.sse[jid] - hashes[user]) * 1000,
                        "api_ms": (at - hashes[user]) * 1000})  # fmt: skip
            if abs(job["audio_seconds"] - seconds) > 0.5:
                raise RuntimeError(f"job {jid} has {job['audio_seconds']} s, {seconds} s spoken")
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    res: dict[str, Any] = {"dictations": len(runs)}
    for key in ("sse_ms", "api_ms"):
        xs = [r[key] for r in runs]
        res[key] = {"p50": statistics.median(xs), "p99": pct(xs, 99), "max": max(xs),
                    "min": min(xs), "runs": [round(x, 2) for x in xs]}  # fmt: skip
    return res


# -- 2. memory during large uploads ------------------------------------------------------------


def make_wav(path: Path, mb: int) -> None:
    frames = mb * MB // 2
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        step = 8000 * 60
        for first in range(0, frames, step):
            n = min(step, frames - first)
            w.writeframes((hashlib.sha256(str(first).encode()).digest() * (n // 16 + 1))[: n * 2])


def rss_kb(pid: int) -> tuple[int, int]:
    """VmRSS of the process and the sum of VmRSS over its process tree, in KiB."""
    own, tree = 0, 0
    for p in process_tree(pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
        kb = int(m.group(1)) if m else 0
        tree += kb
        if p == pid:
            own = kb
    return own, tree


class Sampler:
    """The server's RSS every 100 ms, from a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            own, tree = rss_kb(self.pid)
            self.samples.append((time.monotonic() - t0, own, tree))
            self.stop.wait(0.1)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def uploads(http_url: str, pid: int, sip_port: int, s: Settings, wav: Path,
            auths: list[Any]) -> dict[str, Any]:  # fmt: skip
    import httpx

    size = wav.stat().st_size
    with Sampler(pid) as idle_rss, SipProbe(sip_port) as idle_sip:
        time.sleep(2.0)
    idle_own = statistics.median(x[1] for x in idle_rss.samples)
    idle_tree = statistics.median(x[2] for x in idle_rss.samples)
    results: list[dict[str, Any]] = []
    errors: list[str] = []

    def one(i: int) -> None:
        auth = auths[i % len(auths)]
        meta = "filename " + base64.b64encode(f"gross{i}.wav".encode()).decode()
        try:
            with httpx.Client(base_url=http_url, timeout=600, **auth) as c,\
                    wav.open("rb") as f:  # fmt: skip
                t0 = time.monotonic()
                r = c.post("/api/dictation/uploads",
                           headers={"Upload-Length": str(size),
                                    "Upload-Metadata": meta})  # fmt: skip
                if r.status_code != 201:
                    raise RuntimeError(f"tus create {i}: {r.status_code} {r.text[:200]}")
                loc = r.headers["location"]
                r = c.patch(loc, content=f, headers={
                    "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(size)})  # fmt: skip
                if r.status_code != 204 or int(r.headers["upload-offset"]) != size:
                    raise RuntimeError(f"tus PATCH {i}: {r.status_code} {r.text[:200]}")
                t1 = time.monotonic()
                r = c.post("/api/dictation/jobs", json={"title": f"Großes Diktat {i}",
                           "uploads": [loc.rsplit("/", 1)[1]]})  # fmt: skip
                if r.status_code != 201:
                    raise RuntimeError(f"POST /api/dictation/jobs {i}: {r.status_code} "
                                       f"{r.text[:200]}")  # fmt: skip
                t2 = time.monotonic()
                results.append({"upload_s": t1 - t0, "job_s": t2 - t1, "start": t0, "end": t2,
                                "audio_seconds": r.json()["audio_seconds"]})  # fmt: skip
        except (RuntimeError, httpx.HTTPError, KeyError) as exc:
            errors.append(str(exc)[:300])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(s.uploads)]
    with Sampler(pid) as busy_rss, SipProbe(sip_port) as busy_sip:
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(1800)
        wall = time.monotonic() - t0
        time.sleep(0.5)
    if errors:
        raise RuntimeError(f"{len(errors)} uploads failed: {errors[0]}")
    peak_own = max(x[1] for x in busy_rss.samples)
    peak_tree = max(x[2] for x in busy_rss.samples)
    upload_s = [r["upload_s"] for r in results]
    return {
        "uploads": s.uploads, "bytes_each": size, "wall_s": wall,
        "upload_wall_s": max(r["start"] + r["upload_s"] for r in results) - t0,
        "throughput_mib_s": s.uploads * size / MB / wall,
        "upload_s": {"p50": statistics.median(upload_s), "max": max(upload_s)},
        "job_s": {"p50": statistics.median(r["job_s"] for r in results),
                  "max": max(r["job_s"] for r in results)},
        "idle_rss_kib": idle_own, "idle_tree_rss_kib": idle_tree,
        "peak_rss_kib": peak_own, "peak_tree_rss_kib": peak_tree,
        "peak_above_idle_kib": peak_own - idle_own,
        "peak_tree_above_idle_kib": peak_tree - idle_tree,
        "after_rss_kib": busy_rss.samples[-1][1],
        "rss_samples": [(round(t, 1), own, tree) for t, own, tree in busy_rss.samples],
        "sip_options_idle": idle_sip.summary(), "sip_options_during": busy_sip.summary(),
        "audio_seconds": results[0]["audio_seconds"],
    }  # fmt: skip


# -- main -------------------------------------------------------------------------------------


def table(res: dict[str, Any], s: Settings) -> str:
    rows = ["| metric | value | note |", "|---|---|---|"]
    for key, label in (("sequential", "one at a time"), ("parallel", f"{s.parallel} at once")):
        d = res.get(key)
        if not d:
            rows.append(f"| `#` → job in the queue, {label}¹ | n/a | "
                        f"{res.get(key + '_error', 'not measured')} |")  # fmt: skip
            continue
        for k, what in (("sse_ms", "`job` event on the typist's console stream"),
                        ("api_ms", "listed by `GET /api/dictation/queue`")):  # fmt: skip
            x = d[k]
            rows.append(f"| `#` → {what}, {label}, p50 / p99 (ms)¹ | {x['p50']:.1f} / "
                        f"{x['p99']:.1f} | {d['dictations']} dictations of {s.seconds:g} s, "
                        f"max {x['max']:.1f} |")  # fmt: skip
    u = res.get("uploads")
    if u:
        each = u["bytes_each"] / MB
        rows.append(f"| {u['uploads']} tus uploads of {each:.0f} MiB at once: peak RSS above "
                    f"idle (MiB)² | {u['peak_above_idle_kib'] / 1024:.1f} | serve process: idle "
                    f"{u['idle_rss_kib'] / 1024:.0f} MiB, peak {u['peak_rss_kib'] / 1024:.0f} "
                    f"MiB (process tree: +{u['peak_tree_above_idle_kib'] / 1024:.1f} MiB) "
                    "|")  # fmt: skip
        rows.append(f"| … total time, all uploaded and each a job (s)² | {u['wall_s']:.1f} | "
                    f"{u['uploads'] * each:,.0f} MiB; one upload p50 {u['upload_s']['p50']:.1f} s"
                    f", the job from it p50 {u['job_s']['p50'] * 1000:.0f} ms |")  # fmt: skip
        rows.append(f"| … throughput (MiB/s)² | {u['throughput_mib_s']:.1f} | loopback, "
                    f"client and server on the same 2 cores |")  # fmt: skip
        idle, busy = u["sip_options_idle"], u["sip_options_during"]
        rows.append(f"| SIP OPTIONS round trip during the uploads, p50 / p99 / max (ms)³ | "
                    f"{busy['p50_ms']:.1f} / {busy['p99_ms']:.1f} / {busy['max_ms']:.0f} | "
                    f"idle {idle['p50_ms']:.1f} / {idle['p99_ms']:.1f}; {busy['probes']} "
                    f"probes, {busy['lost']} unanswered |")  # fmt: skip
    else:
        rows.append(f"| large uploads² | n/a | {res.get('uploads_error', 'not measured')} |")
    notes = [
        "",
        "¹ A client user's phone (raw UDP in this process, registered) dials *88, waits for the "
        "prompt and beep, speaks a 440 Hz tone as PCMA RTP in real time and presses # (RFC 4733). "
        "From just before the # packets are sent on 127.0.0.1 to the `job` event (state new) "
        "read from the typist's `GET /dictation/events` stream (console session), and to the "
        "first answer of `GET /api/dictation/queue` (polled back to back from the first # of "
        "a round on; the figure includes up to one request's time) that lists the job.",
        "² tus (`POST /api/dictation/uploads`, one streamed `PATCH` each) of a WAV of 8 kHz "
        "16-bit noise, all uploads at once from threads of the bench, then `POST "
        "/api/dictation/jobs` with the upload; VmRSS of the `heimbuero serve` process sampled "
        "every 100 ms, idle = median over 2 s before. Time from the first POST to the last job.",
        "³ A process of the bench sends OPTIONS every 10 ms (one at a time) during the uploads "
        "and for 2 s before them (idle).",
    ]
    return "\n".join(rows + notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 10 dictations of 2 s, 10 uploads of 20 MiB")  # fmt: skip
    ap.add_argument("--dictations", type=int, help="dictations one at a time, and at once")
    ap.add_argument("--parallel", type=int, help="phones dictating at once (default 5)")
    ap.add_argument("--seconds", type=float, help="seconds spoken per dictation")
    ap.add_argument("--uploads", type=int, help="uploads at once (default 10)")
    ap.add_argument("--upload-mb", type=int, help="MiB per upload (default 150)")
    ap.add_argument("--basic", action="store_true",
                    help="uploads with passwords (basic auth) instead of API tokens")  # fmt: skip
    ap.add_argument("--json", type=Path, help="also write every measurement as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (log, database)")
    args = ap.parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    for name in ("dictations", "parallel", "seconds", "uploads", "upload_mb"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    if s.parallel < 1 or s.dictations < s.parallel:
        ap.error("--dictations must be at least --parallel, which must be at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="hb-dictation-"))
    procs = Procs(tmp)
    res: dict[str, Any] = {"settings": {**vars(s), "basic": args.basic}}
    log(f"dictation bench: logs in {tmp}")

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    phones: list[Phone] = []
    watch: Watch | None = None
    sessions: list[Any] = []
    wav = tmp / "gross.wav"
    data = tmp / "data"
    ok = False
    try:
        t0 = time.monotonic()
        data, tokens = make_data(tmp, s.parallel)
        proc, sip_port, http_port = start_server(procs, Ports(), data)
        url = f"http://{HOST}:{http_port}"
        log(f"server up ({time.monotonic() - t0:.1f} s)")
        typist = login(url, TYPIST)
        sessions.append(typist)
        watch = Watch(http_port, typist.cookies["hb_session"], tokens[TYPIST])
        phones = [Phone(f"diktat{k}", sip_port) for k in range(s.parallel)]
        for p in phones:
            p.register()
        log(f"typist's stream open, {len(phones)} phones registered")
        code = "*88"
        try:
            dictations(phones[:1], watch, 1, code, s.seconds)  # warm-up: not counted
            res["sequential"] = summary(
                dictations(phones[:1], watch, s.dictations, code, s.seconds)
            )
            q = res["sequential"]
            log(f"one at a time: stream p50 {q['sse_ms']['p50']:.1f} ms, p99 "
                f"{q['sse_ms']['p99']:.1f}; API p50 {q['api_ms']['p50']:.1f} ms")  # fmt: skip
        except (RuntimeError, TimeoutError, OSError) as exc:
            log(f"dictations one at a time failed: {exc}")
            res["sequential_error"] = str(exc)[:200]
        try:
            rounds = max(1, s.dictations // s.parallel)
            res["parallel"] = summary(dictations(phones, watch, rounds, code, s.seconds))
            q = res["parallel"]
            log(f"{s.parallel} at once: stream p50 {q['sse_ms']['p50']:.1f} ms, p99 "
                f"{q['sse_ms']['p99']:.1f}; API p50 {q['api_ms']['p50']:.1f} ms")  # fmt: skip
        except (RuntimeError, TimeoutError, OSError) as exc:
            log(f"dictations at once failed: {exc}")
            res["parallel_error"] = str(exc)[:200]
        res["watch"] = {"queue_polls": watch.polls, "errors": watch.errors[:5]}
        try:
            make_wav(wav, s.upload_mb)
            log(f"{wav.stat().st_size / MB:.0f} MiB WAV written; {s.uploads} uploads at once")
            users = [f"diktat{k}" for k in range(s.parallel)]
            auths: list[dict[str, Any]] = [
                {"auth": (u, PASSWORD), "headers": TUS} if args.basic
                else {"headers": {**TUS, "Authorization": f"Bearer {tokens[u]}"}}
                for u in users
            ]  # fmt: skip
            res["uploads"] = uploads(url, proc.pid, sip_port, s, wav, auths)
            u = res["uploads"]
            log(f"uploads: {u['wall_s']:.1f} s, {u['throughput_mib_s']:.1f} MiB/s, peak RSS "
                f"{u['peak_rss_kib'] / 1024:.0f} MiB (+{u['peak_above_idle_kib'] / 1024:.1f} "
                f"above idle); OPTIONS during {u['sip_options_during']}")  # fmt: skip
        except (RuntimeError, OSError) as exc:
            log(f"uploads failed: {exc}")
            res["uploads_error"] = str(exc)[:200]
        ok = all(k in res for k in ("sequential", "parallel", "uploads"))
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        if watch is not None:
            watch.close()
        for p in phones:
            p.close()
        for c in sessions:
            c.close()
        procs.stop_all()
        wav.unlink(missing_ok=True)
        for big in data.glob("**/*"):  # the uploaded audio (1.5 GB by default) goes in any case
            if big.is_file() and big.stat().st_size > 10 * MB:
                big.unlink()
        if args.keep or not ok:
            log(f"kept {tmp} (without the large files)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(res, s))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
