"""End-to-end harness: the real `heimbuero serve` process and real SIP peers (SIPp, baresip).

Everything here listens on 127.0.0.1, on ports picked free at run time, is bounded in time and
count, and is stopped by its own PID in a `finally`. Waiting is always polling against a deadline;
nothing relies on a fixed sleep for correctness.

Pieces:

- `free_port()` / `free_ports()`: ports free for both UDP and TCP, never handed out twice.
- `Server`: `heimbuero init`, `user add`, `[sip]` settings in config.toml, `serve`, readiness by
  OPTIONS, stop by SIGTERM (exit code recorded), log file under the test's tmp dir.
- `SipClient` + `parse_message()` + `digest_response()`: a hand-built SIP UAC for single requests.
- `run_sipp()` / `start_sipp()` / `start_sipp_uas()` / `start_sipp_callee()`: SIPp runs with every
  trace file in a per-run directory.
- `Baresip`: one softphone, driven over its ctrl_tcp socket (netstring-framed JSON).
- `build_linphone_tool()`: compiles one of the liblinphone clients in tools/ (gcc, pkg-config).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
LOCALHOST = "127.0.0.1"
LOCALHOST6 = "::1"


def bracket(host: str) -> str:
    """A host as written in SIP: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


SERVER_READY_TIMEOUT = 15.0  # seconds from `serve` to the first 200 for OPTIONS
SERVER_STOP_TIMEOUT = 15.0  # seconds from SIGTERM to exit
CLI_TIMEOUT = 60.0  # seconds for `init` / `user add`

T = TypeVar("T")


class HarnessError(AssertionError):
    """A peer or the server did not do what a test needed; the message says what, with logs."""


# --------------------------------------------------------------------------------------------
# waiting and small helpers


def wait_until(
    predicate: Callable[[], T | None | bool],
    timeout: float,
    *,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy; raise HarnessError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def tail(path: Path, max_chars: int = 12000) -> str:
    """The end of a text file (or a note that it is missing), for failure messages."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"<{path} does not exist>"
    text = data.decode("utf-8", "replace")
    if len(text) > max_chars:
        text = "[...]\n" + text[-max_chars:]
    return text


def _kill_process_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process started with start_new_session=True (its PID is its group id)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop_process(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int:
    """Send `sig` to the process by PID, wait, SIGKILL its group on timeout; returns exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_process_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


# --------------------------------------------------------------------------------------------
# free ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_issued_ports: set[int] = set()
_port_rng = random.Random(os.getpid() ^ time.time_ns())


def _port_is_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((LOCALHOST, port))
            except OSError:
                return False
    return True


def free_ports(count: int = 1, *, consecutive: bool = False) -> list[int]:
    """`count` ports on 127.0.0.1 that are free for both UDP and TCP right now.

    Picked at random outside the kernel's ephemeral range (so outgoing connections of other
    processes do not take them meanwhile) and never handed out twice in this test session.
    `consecutive=True` gives a block P, P+1, ... (baresip's TLS takes SIP port + 1; media ranges).
    """
    eph_lo, eph_hi = _ephemeral_range()
    # below the ephemeral range, but not in the server's default media relay (20000-29999)
    # and media application (30000-30999) ranges: a server started with its defaults must
    # not take a port handed out here, and a range set here must not overlap its defaults
    ranges = [
        (r0, r1)
        for r0, r1 in (
            (10000, min(eph_lo, 20000) - 1),
            (31000, min(eph_lo, 65535) - 1),
            (eph_hi + 1, 65535 - 64),
        )
        if r1 - r0 > 1000
    ]
    if not ranges:
        ranges = [(10000, 65000)]
    for _ in range(2000):
        lo, hi = _port_rng.choice(ranges)
        if consecutive:
            base = _port_rng.randint(lo, hi - count)
            candidates = list(range(base, base + count))
            if all(p not in _issued_ports and _port_is_free(p) for p in candidates):
                _issued_ports.update(candidates)
                return candidates
        else:
            p = _port_rng.randint(lo, hi)
            if p not in _issued_ports and _port_is_free(p):
                _issued_ports.add(p)
                if count == 1:
                    return [p]
                return [p] + free_ports(count - 1)
    raise HarnessError(
        f"could not find {count} free {'consecutive ' if consecutive else ''}ports on {LOCALHOST}"
    )


def free_port() -> int:
    return free_ports(1)[0]


# --------------------------------------------------------------------------------------------
# SIP messages: parse, build, digest

COMPACT_HEADERS = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
}


def _canonical(name: str) -> str:
    n = name.strip().lower()
    return COMPACT_HEADERS.get(n, n)


@dataclasses.dataclass
class SipMessage:
    """A parsed SIP request or response (headers unfolded; names kept as received)."""

    start_line: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/")

    @property
    def status(self) -> int | None:
        if not self.is_response:
            return None
        parts = self.start_line.split(" ", 2)
        try:
            return int(parts[1])
        except (IndexError, ValueError):
            return None

    @property
    def reason(self) -> str:
        parts = self.start_line.split(" ", 2)
        return parts[2] if self.is_response and len(parts) > 2 else ""

    @property
    def method(self) -> str | None:
        return None if self.is_response else self.start_line.split(" ", 1)[0]

    def header(self, name: str) -> str | None:
        """First value of a header (compact forms understood), or None."""
        want = _canonical(name)
        for n, v in self.headers:
            if _canonical(n) == want:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        want = _canonical(name)
        return [v for n, v in self.headers if _canonical(n) == want]

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    @property
    def cseq(self) -> tuple[int, str] | None:
        value = self.header("CSeq")
        if not value:
            return None
        parts = value.split()
        try:
            return int(parts[0]), parts[1] if len(parts) > 1 else ""
        except ValueError:
            return None

    def to_tag(self) -> str | None:
        value = self.header("To") or ""
        m = re.search(r";\s*tag\s*=\s*([^;>\s,]+)", value.split(">")[-1], re.I)
        return m.group(1) if m else None

    def summary(self) -> str:
        return f"{self.start_line} (Call-ID {self.header('Call-ID')}, CSeq {self.header('CSeq')})"


def split_frame(data: bytes) -> tuple[bytes, bytes] | None:
    """For a stream: split one message (by Content-Length) off `data`; None if incomplete."""
    # skip keep-alive CRLFs between messages (RFC 5626 3.5.1)
    stripped = data.lstrip(b"\r\n")
    end = stripped.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = stripped[: end + 4]
    m = re.search(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", head, re.I)
    length = int(m.group(1)) if m else 0
    total = end + 4 + length
    if len(stripped) < total:
        return None
    return stripped[:total], stripped[total:]


def parse_message(data: bytes) -> SipMessage:
    """Parse one SIP message; tolerant (this parses what the server sends, the server is judged)."""
    sep = data.find(b"\r\n\r\n")
    head, body = (data, b"") if sep < 0 else (data[:sep], data[sep + 4 :])
    lines = head.decode("utf-8", "replace").split("\r\n")
    start = lines[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            n, v = headers[-1]
            headers[-1] = (n, v + " " + line.strip())
        elif ":" in line:
            n, v = line.split(":", 1)
            headers.append((n.strip(), v.strip()))
    return SipMessage(start, headers, body, data)


def new_branch() -> str:
    return "z9hG4bK-e2e-" + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def parse_challenge(value: str) -> dict[str, str]:
    """`Digest realm="x", nonce="y"` -> {"scheme": "Digest", "realm": "x", "nonce": "y"}.

    Parameter names are lower-cased.
    """
    scheme, _, rest = value.strip().partition(" ")
    out = {"scheme": scheme}
    for m in re.finditer(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', rest):
        out[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return out


def _hash(algorithm: str, text: str) -> str:
    alg = algorithm.upper().removesuffix("-SESS")
    if alg == "MD5":
        return hashlib.md5(text.encode()).hexdigest()
    if alg == "SHA-256":
        return hashlib.sha256(text.encode()).hexdigest()
    raise HarnessError(f"digest algorithm {algorithm!r} not supported by the harness")


def digest_response(
    challenge: Mapping[str, str],
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` (RFC 7616, qop=auth)."""
    algorithm = challenge.get("algorithm", "MD5")
    realm = challenge["realm"]
    nonce = challenge["nonce"]
    cnonce = cnonce or secrets.token_hex(8)
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in qops:
        ncs = f"{nc:08x}"
        resp = _hash(algorithm, f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
        parts += [f'response="{resp}"', "qop=auth", f"nc={ncs}", f'cnonce="{cnonce}"']
    else:
        resp = _hash(algorithm, f"{ha1}:{nonce}:{ha2}")
        parts.append(f'response="{resp}"')
    parts.append(f"algorithm={algorithm}")
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


def pick_challenge(response: SipMessage, algorithm: str = "MD5") -> dict[str, str]:
    """The first Digest challenge of `response` with `algorithm` (a missing algorithm means MD5)."""
    name = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    for value in response.header_values(name):
        ch = parse_challenge(value)
        if (
            ch["scheme"].lower() == "digest"
            and ch.get("algorithm", "MD5").upper() == algorithm.upper()
        ):
            return ch
    raise HarnessError(
        f"no {algorithm} Digest challenge in {name} of: {response.summary()}\n{response.raw!r}"
    )


@dataclasses.dataclass
class SentRequest:
    method: str
    ruri: str
    call_id: str
    from_tag: str
    from_uri: str
    to_uri: str
    cseq: int
    branch: str
    raw: bytes


class SipClient:
    """A hand-driven SIP UAC on 127.0.0.1 (UDP socket or one TCP connection) for single requests.

    Via carries `rport`, so the server answers this socket whatever the Via says (RFC 3581).
    """

    def __init__(
        self,
        server_port: int,
        *,
        transport: str = "udp",
        server_host: str = LOCALHOST,
        local_port: int = 0,
        cafile: Path | None = None,
        local_host: str = LOCALHOST,
    ) -> None:
        """`local_port`: the UDP port (or TCP source port) to send from (e.g. one listed in
        trusted_peers, or a trunk's address); 0 = any. `local_host`: the UDP address to send
        from (e.g. a carrier's inside a test's network namespace).
        `cafile`: for transport "tls", the certificate to trust (the server's self-signed one)."""
        self.transport = transport.lower()
        self.server = (server_host, server_port)
        self._buffer = b""
        if ":" in server_host and local_host == LOCALHOST:
            local_host = LOCALHOST6  # an IPv6 server: send from the IPv6 loopback
        self.local_host = local_host
        if self.transport == "udp":
            family = socket.AF_INET6 if ":" in local_host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.sock.bind((local_host, local_port))
        elif self.transport == "tcp":
            source = (local_host, local_port) if local_port else None
            self.sock = socket.create_connection(self.server, timeout=5, source_address=source)
        elif self.transport == "tls":
            ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            raw = socket.create_connection(self.server, timeout=5)
            self.sock = ctx.wrap_socket(raw, server_hostname=server_host)
        else:
            raise ValueError(transport)
        self.local_port = self.sock.getsockname()[1]
        self.received: list[SipMessage] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def recv(self, timeout: float) -> SipMessage | None:
        """The next message from the server, or None when `timeout` seconds pass without one."""
        deadline = time.monotonic() + timeout
        while True:
            if self.transport in ("tcp", "tls"):
                framed = split_frame(self._buffer)
                if framed:
                    one, self._buffer = framed
                    msg = parse_message(one)
                    self.received.append(msg)
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                if self.transport == "udp":
                    data, _ = self.sock.recvfrom(65535)
                    if not data.strip(b"\r\n"):
                        continue  # keep-alive
                    msg = parse_message(data)
                    self.received.append(msg)
                    return msg
                data = self.sock.recv(65535)
                if not data:
                    return None  # connection closed
                self._buffer += data
            except TimeoutError:
                return None

    def build_request(
        self,
        method: str,
        ruri: str,
        *,
        from_uri: str,
        to_uri: str,
        call_id: str | None = None,
        cseq: int = 1,
        from_tag: str | None = None,
        to_tag: str | None = None,
        branch: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SentRequest:
        branch = branch or new_branch()
        call_id = call_id or f"e2e-{secrets.token_hex(8)}@{LOCALHOST}"
        from_tag = from_tag or new_tag()
        via_transport = self.transport.upper()
        sent_by = f"{bracket(self.local_host)}:{self.local_port}"
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/{via_transport} {sent_by};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <{from_uri}>;tag={from_tag}",
            f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
        ]
        lines += [f"{n}: {v}" for n, v in headers]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        return SentRequest(method, ruri, call_id, from_tag, from_uri, to_uri, cseq, branch, raw)

    def send(self, req: SentRequest) -> SentRequest:
        self.send_raw(req.raw)
        return req

    def request(self, method: str, ruri: str, **kw: Any) -> SentRequest:
        return self.send(self.build_request(method, ruri, **kw))

    def final_response(
        self, req: SentRequest, timeout: float = 5.0, *, retransmit: bool = True
    ) -> SipMessage:
        """Wait for the final response to `req` (provisional ones are skipped).

        Over UDP the request is retransmitted (T1 = 0.5 s doubling, RFC 3261 17.1) until then.
        """
        deadline = time.monotonic() + timeout
        next_retrans, interval = time.monotonic() + 0.5, 0.5
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise HarnessError(
                    f"no final response to {req.method} {req.ruri} within {timeout} s; "
                    f"got: {[m.start_line for m in self.received if m.header('Call-ID') == req.call_id]}"  # noqa: E501
                )
            wait = (
                min(deadline, next_retrans) - now
                if (retransmit and self.transport == "udp")
                else deadline - now
            )
            msg = self.recv(max(wait, 0.01))
            if msg is None:
                if retransmit and self.transport == "udp" and time.monotonic() >= next_retrans:
                    self.send_raw(req.raw)
                    interval = min(interval * 2, 4.0)
                    next_retrans = time.monotonic() + interval
                continue
            if not msg.is_response or msg.header("Call-ID") != req.call_id:
                continue
            cseq = msg.cseq
            if cseq is None or cseq[0] != req.cseq or cseq[1].upper() != req.method.upper():
                continue
            if msg.status is not None and msg.status >= 200:
                if req.method == "INVITE" and msg.status >= 300:
                    self.ack_non_2xx(req, msg)
                return msg
            # 1xx: an INVITE is not retransmitted after a provisional response (RFC 3261 17.1.1.2)
            if req.method == "INVITE":
                retransmit = False

    def ack_non_2xx(self, invite: SentRequest, response: SipMessage) -> None:
        """ACK for a non-2xx final response: same branch, To with the response's tag (17.1.1.3)."""
        lines = [
            f"ACK {invite.ruri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {LOCALHOST}:{self.local_port}"
            f";branch={invite.branch};rport",
            "Max-Forwards: 70",
            f"From: <{invite.from_uri}>;tag={invite.from_tag}",
            f"To: {response.header('To')}",
            f"Call-ID: {invite.call_id}",
            f"CSeq: {invite.cseq} ACK",
            "Content-Length: 0",
        ]
        self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())

    def authenticated_request(
        self,
        method: str,
        ruri: str,
        *,
        username: str,
        password: str,
        algorithm: str = "MD5",
        timeout: float = 5.0,
        **kw: Any,
    ) -> tuple[SipMessage, SipMessage]:
        """Send, answer a 401/407 challenge once; returns (challenge response, final response)."""
        first = self.request(method, ruri, **kw)
        challenge_resp = self.final_response(first, timeout)
        if challenge_resp.status not in (401, 407):
            raise HarnessError(
                f"expected a 401/407 challenge to {method}, got {challenge_resp.summary()}"
            )
        ch = pick_challenge(challenge_resp, algorithm)
        auth_name = "Proxy-Authorization" if challenge_resp.status == 407 else "Authorization"
        value = digest_response(ch, method=method, uri=ruri, username=username, password=password)
        extra = list(kw.pop("headers", ())) + [(auth_name, value)]
        second = self.request(
            method,
            ruri,
            call_id=first.call_id,
            from_tag=first.from_tag,
            cseq=first.cseq + 1,
            headers=extra,
            **kw,
        )
        return challenge_resp, self.final_response(second, timeout)


def sip_ping(
    port: int, *, host: str = LOCALHOST, ruri: str | None = None, timeout: float = 0.5
) -> SipMessage | None:
    """One OPTIONS to the server itself over UDP: its final response, or None after `timeout`."""
    with SipClient(port, server_host=host) as c:
        target = ruri or f"sip:{bracket(host)}:{port}"
        req = c.request("OPTIONS", target, from_uri=f"sip:probe@{bracket(host)}", to_uri=target)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = c.recv(left)
            if msg is None:
                return None
            if (
                msg.is_response
                and msg.header("Call-ID") == req.call_id
                and (msg.status or 0) >= 200
            ):
                return msg
        return None


# --------------------------------------------------------------------------------------------
# config.toml editing


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def set_toml_option(path: Path, section: str, key: str, value: object) -> None:
    """Set `key = value` in `[section]` of a TOML file: replace the key's line, or add it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    new_line = f"{key} = {_toml_value(value)}"
    current: str | None = None
    section_end: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            if current == section and section_end is None:
                section_end = i
            current = stripped.strip("[]").strip()
            continue
        if current == section and re.match(rf"{re.escape(key)}\s*=", stripped):
            lines[i] = new_line
            break
    else:
        if current == section and section_end is None:
            section_end = len(lines)
        if section_end is None:
            lines += ["", f"[{section}]", new_line]
        else:
            # insert after the last non-blank line of the section
            at = section_end
            while at > 0 and not lines[at - 1].strip():
                at -= 1
            lines.insert(at, new_line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # the file must still parse and hold the value
    parsed = tomllib.loads(path.read_text(encoding="utf-8"))
    got = parsed.get(section, {}).get(key)
    want = list(value) if isinstance(value, tuple) else value
    if got != want:
        raise HarnessError(f"{path}: [{section}] {key} reads back as {got!r}, wanted {want!r}")


# --------------------------------------------------------------------------------------------
# the server under test


def heimbuero_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "heimbuero", *args]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.pop("HEIMBUERO_DATA", None)  # every command gets --data explicitly
    env["PYTHONUNBUFFERED"] = "1"
    return env


def parse_demo_passwords(stdout: str) -> dict[str, str]:
    """The "  NAME  PASSWORD" lines `heimbuero init --demo` prints once, as {name: password}."""
    out: dict[str, str] = {}
    in_list = False
    for line in stdout.splitlines():
        if "passwords" in line and line.rstrip().endswith(":"):
            in_list = True
            continue
        if in_list:
            m = re.fullmatch(r"\s{2,}([a-z0-9][a-z0-9._-]*)\s+(\S+)\s*", line)
            if not m:
                break
            out[m.group(1)] = m.group(2)
    if not out:
        raise HarnessError(f"`heimbuero init --demo` printed no passwords:\n{stdout}")
    return out


_PG_CLUSTER: Any = None
STORE_ENV = "HEIMBUERO_TEST_STORE"


def run_store_url(*, via_socket: bool = False) -> str | None:
    """None (each server's SQLite file) unless HEIMBUERO_TEST_STORE=postgresql: then a new
    database in a temporary PostgreSQL cluster started for the whole test run (`via_socket`:
    its URL names the cluster's unix socket instead of 127.0.0.1)."""
    global _PG_CLUSTER
    store = os.environ.get(STORE_ENV, "sqlite")
    if store == "sqlite":
        return None
    if store != "postgresql":
        raise HarnessError(f"{STORE_ENV} must be sqlite or postgresql, not {store!r}")
    if _PG_CLUSTER is None:
        import atexit

        sys.path.insert(0, str(REPO_ROOT / "tests"))
        from pgcluster import PgCluster

        cluster = PgCluster()
        cluster.start()
        atexit.register(cluster.stop)
        _PG_CLUSTER = cluster
    return str(_PG_CLUSTER.new_database(via_socket=via_socket))


class Server:
    """`heimbuero serve` on 127.0.0.1, started exactly as a user would start it.

    with Server(tmp_path, users={"alice": "..."}, sip_options={"trusted_peers": [...]}) as srv:
        srv.port, srv.domain, srv.restart(), srv.log_text()

    Leaving the block sends SIGTERM by PID; a non-zero exit code fails the test (unless the block
    already failed, in which case the server log is printed and the original error propagates).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        domain: str = "heimbuero.test",
        users: Mapping[str, str] | None = None,
        sip_options: Mapping[str, object] | None = None,
        transports: Sequence[str] = ("udp", "tcp"),
        port: int | None = None,
        http: bool = False,
        demo: bool = False,
        database_url: str | None = None,
        listen_host: str = LOCALHOST,
        also_listen: Sequence[str] = (),
    ) -> None:
        """`listen_host`: where SIP listens (e.g. 0.0.0.0 inside a test's network namespace;
        readiness is still checked on 127.0.0.1). `also_listen`: more hosts SIP listens on with
        the same transports and ports (e.g. ::1 beside 127.0.0.1)."""
        self.workdir = Path(workdir)
        self.listen_host = listen_host
        self.also_listen = tuple(also_listen)
        # `init --database-url`: e.g. a PostgreSQL database; HEIMBUERO_TEST_STORE=postgresql
        # gives every server of the run a new database in one shared temporary cluster; a
        # server listening beyond loopback may run in a test's network namespace, where
        # 127.0.0.1 is not the cluster's: it reaches the cluster by its unix socket
        self.database_url = database_url or run_store_url(
            via_socket=listen_host not in (LOCALHOST, LOCALHOST6)
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.domain = domain
        self.users = dict(users or {})
        self.sip_options = dict(sip_options or {})
        self.transports = tuple(transports)
        self.port = port or free_port()
        self.tls_port = free_port() if "tls" in self.transports else None
        self.http_port = free_port() if http else None
        self.demo = demo  # `init --demo`: the demo office; its printed passwords go to .users
        self.demo_passwords: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_codes: list[int] = []
        self._starts = 0
        self._log_start = 0  # where the log of the current start begins

    # -- commands ---------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.data_dir / "config.toml"

    @property
    def sip_listen(self) -> str:
        return ",".join(
            f"{t}:{bracket(host)}:{self.tls_port if t == 'tls' else self.port}"
            for host in (self.listen_host, *self.also_listen)
            for t in self.transports
        )

    @property
    def tls_cert(self) -> Path:
        """The certificate `init` made (self-signed) for SIP over TLS."""
        return self.data_dir / "tls" / "sip.crt"

    @property
    def address(self) -> str:
        """host:port to send SIP to."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def ping_host(self) -> str:
        """Where readiness is checked: 127.0.0.1, or ::1 for a server on IPv6 alone."""
        return LOCALHOST6 if ":" in self.listen_host else LOCALHOST

    @property
    def address6(self) -> str:
        """[::1]:port, to send SIP to over IPv6 (a server with also_listen=("::1",))."""
        return f"[{LOCALHOST6}]:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def cli(
        self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run `heimbuero ARGS` (one-shot command); output goes to the server log too."""
        cmd = heimbuero_command(*args)
        try:
            res = subprocess.run(
                cmd,
                cwd=REPO_ROOT,
                env=_child_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"`{' '.join(cmd)}` did not finish within {timeout} s") from exc
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(args)}\n[exit {res.returncode}]\n{res.stdout}{res.stderr}\n")
        if check and res.returncode != 0:
            raise HarnessError(
                f"`heimbuero {' '.join(args)}` exited {res.returncode}\n"
                f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
            )
        return res

    def sql(
        self, statement: str, params: Mapping[str, object] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one SQL statement on the server's store (the SQLite file or its PostgreSQL
        database) in its own transaction; the rows it returns."""
        from sqlalchemy import create_engine, text

        url = self.database_url or f"sqlite:///{self.data_dir / 'heimbuero.db'}"
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), dict(params or {}))
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def init(self) -> None:
        args = ["init", "--data", str(self.data_dir), "--domain", self.domain]
        if self.database_url:
            args += ["--database-url", self.database_url]
        if self.demo:
            args.append("--demo")
        res = self.cli(*args)
        if not self.config_path.is_file():
            raise HarnessError(f"`heimbuero init` succeeded but wrote no {self.config_path}")
        if self.demo:
            self.demo_passwords = parse_demo_passwords(res.stdout)
            self.users.update(self.demo_passwords)

    def add_user(self, name: str, password: str, role: str = "agent") -> None:
        self.cli(
            "user",
            "add",
            name,
            "--password",
            password,
            "--role",
            role,
            "--data",
            str(self.data_dir),
        )
        self.users[name] = password

    def set_sip_option(self, key: str, value: object) -> None:
        """Set a `[sip]` key in config.toml (takes effect at the next start)."""
        set_toml_option(self.config_path, "sip", key, value)
        self.sip_options[key] = value

    def prepare(self) -> None:
        """init + users + settings, once per data directory."""
        if self.config_path.exists():
            return
        extra_users = dict(self.users)
        self.init()
        for name, password in extra_users.items():
            self.add_user(name, password)
        for key, value in self.sip_options.items():
            self.set_sip_option(key, value)

    def serve_command(self) -> list[str]:
        cmd = heimbuero_command("serve", "--data", str(self.data_dir), "--sip", self.sip_listen)
        if self.http_port is not None:
            cmd += ["--http", f"{LOCALHOST}:{self.http_port}"]
        return cmd

    @property
    def http_url(self) -> str:
        assert self.http_port is not None, "start the Server with http=True"
        return f"http://{LOCALHOST}:{self.http_port}"

    # -- process ----------------------------------------------------------------------------

    def start(self, *, ready_timeout: float = SERVER_READY_TIMEOUT) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise HarnessError("server already running")
        self._starts += 1
        cmd = self.serve_command()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start #{self._starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self._log_start = log.tell()
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(ready_timeout)

    def _http_listening(self) -> bool:
        """True without HTTP; else when the HTTP port takes a connection (SIP answers while
        the server still starts the rest: HTTP listens a moment later)."""
        if self.http_port is None:
            return True
        with socket.socket() as s:
            s.settimeout(0.3)
            return s.connect_ex((LOCALHOST, self.http_port)) == 0

    def _says_serving(self) -> bool:
        """True when this start's log has `serve`'s "serving" line: the start-up work after the
        transports bound (trunk DNS lookups, presence) is done. SIP answers OPTIONS before."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return b"heimbuero: serving " in log.read()

    def wait_ready(self, timeout: float = SERVER_READY_TIMEOUT) -> None:
        """Poll with OPTIONS (no auth) until the server answers 200, with HTTP until its HTTP
        port takes connections, and until it says it is serving."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: SipMessage | None = None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise HarnessError(
                    f"heimbuero serve exited with code {code} before it was ready\n"
                    + self.log_text()
                )
            last = (
                sip_ping(self.port, host=self.ping_host, ruri=f"sip:{self.domain}", timeout=0.3)
                or last
            )
            if (
                last is not None
                and last.status == 200
                and self._http_listening()
                and self._says_serving()
            ):
                return
        got = f"last answer: {last.start_line}" if last else "no answer"
        raise HarnessError(
            f"heimbuero serve not ready on udp:{bracket(self.ping_host)}:{self.port} within "
            f"{timeout} s ({got})\n" + self.log_text()
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = SERVER_STOP_TIMEOUT) -> int:
        """SIGTERM by PID, wait for exit; returns the exit code (SIGKILL and error on timeout)."""
        if self.proc is None:
            raise HarnessError("server was never started")
        if self.proc.poll() is not None:
            code = self.proc.returncode
        else:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_process_group(self.proc, signal.SIGKILL)
                self.proc.wait(timeout=10)
                self.exit_codes.append(self.proc.returncode)
                raise HarnessError(
                    f"heimbuero serve did not exit within {timeout} s of SIGTERM\n{self.log_text()}"
                ) from None
        self.exit_codes.append(code)
        return code

    def restart(self) -> None:
        code = self.stop()
        if code != 0:
            raise HarnessError(
                f"heimbuero serve exited with {code} after SIGTERM, expected 0\n{self.log_text()}"
            )
        self.start()

    def kill(self) -> None:
        if self.proc is not None:
            _kill_process_group(self.proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def log_text(self, max_chars: int = 20000) -> str:
        text = tail(self.log_path, max_chars)
        return f"--- server log {self.log_path} ---\n{text}\n--- end of server log ---"

    def __enter__(self) -> Server:
        try:
            self.prepare()
            self.start()
        except BaseException:
            self.kill()
            print(self.log_text(), file=sys.stderr)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        code: int | None = None
        stop_error: BaseException | None = None
        try:
            if self.proc is not None:
                code = self.stop()
        except BaseException as e:  # noqa: BLE001 - reported below
            stop_error = e
        finally:
            self.kill()
        if exc_type is not None:
            print(self.log_text(), file=sys.stderr)
            return  # the test's own failure propagates
        if stop_error is not None:
            raise stop_error
        if code is not None and code != 0:
            raise HarnessError(
                f"heimbuero serve exited with {code} after SIGTERM, expected 0\n{self.log_text()}"
            )


# --------------------------------------------------------------------------------------------
# SIPp


@dataclasses.dataclass
class SippResult:
    name: str
    cmd: list[str]
    returncode: int | None
    rundir: Path

    @property
    def stat_path(self) -> Path:
        return self.rundir / "stat.csv"

    @property
    def err_path(self) -> Path:
        return self.rundir / "errors.log"

    @property
    def msg_path(self) -> Path:
        return self.rundir / "messages.log"

    @property
    def log_path(self) -> Path:
        return self.rundir / "actions.log"

    @property
    def screen_path(self) -> Path:
        return self.rundir / "screen.log"

    @property
    def output_path(self) -> Path:
        return self.rundir / "output.log"

    def stats(self) -> dict[str, str]:
        """The last row of the -trace_stat file (cumulative counters at the end of the run)."""
        try:
            text = self.stat_path.read_text(errors="replace")
        except FileNotFoundError:
            return {}
        rows = list(csv.reader(io.StringIO(text), delimiter=";"))
        rows = [r for r in rows if r]
        if len(rows) < 2:
            return {}
        return dict(zip(rows[0], rows[-1], strict=False))

    def stat(self, name: str) -> int:
        value = self.stats().get(name)
        if value is None:
            raise HarnessError(f"{self.name}: no {name!r} in {self.stat_path}\n{self.report()}")
        return int(value)

    @property
    def successful_calls(self) -> int:
        return self.stat("SuccessfulCall(C)")

    @property
    def failed_calls(self) -> int:
        return self.stat("FailedCall(C)")

    def messages(self) -> str:
        try:
            return self.msg_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def received_first_lines(self) -> list[str]:
        """Start lines of every message SIPp received (from -trace_msg)."""
        out = []
        for block in re.split(r"-{20,} [^\n]*\n", self.messages()):
            m = re.search(r"message received \[\d+\] bytes\s*:\s*\n\s*\n?([^\r\n]+)", block)
            if m:
                out.append(m.group(1).strip())
        return out

    def report(self) -> str:
        parts = [
            f"=== SIPp {self.name}: exit code {self.returncode}",
            f"$ {' '.join(self.cmd)}",
            f"--- screen ---\n{tail(self.screen_path, 4000)}",
            f"--- errors ---\n{tail(self.err_path, 4000)}",
            f"--- output ---\n{tail(self.output_path, 2000)}",
            f"--- messages (end) ---\n{tail(self.msg_path, 8000)}",
        ]
        return "\n".join(parts)

    def check(self) -> SippResult:
        """Assert that SIPp exited 0 (every call succeeded)."""
        if self.returncode != 0:
            raise HarnessError(
                f"SIPp {self.name} exited {self.returncode}, expected 0\n{self.report()}"
            )
        return self


def scenario_path(name: str) -> Path:
    path = SCENARIOS / name
    if not path.is_file():
        raise HarnessError(f"no scenario {path}")
    return path


def write_inf(path: Path, rows: Sequence[Sequence[str]], order: str = "SEQUENTIAL") -> Path:
    """A SIPp injection file: first line the order, then `;`-separated fields ([field0], ...)."""
    lines = [order] + [";".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class SippProcess:
    """A SIPp run in the background (its own session; stopped by PID)."""

    def __init__(self, name: str, cmd: list[str], rundir: Path, timeout: float) -> None:
        self.name = name
        self.cmd = cmd
        self.rundir = rundir
        self.timeout = timeout
        self._out = (rundir / "output.log").open("ab")
        self.proc = subprocess.Popen(
            cmd,
            cwd=rundir,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.port = int(cmd[cmd.index("-p") + 1])  # SIPp's own SIP port
        self.started = time.monotonic()

    def poll(self) -> int | None:
        return self.proc.poll()

    def result(self) -> SippResult:
        return SippResult(self.name, self.cmd, self.proc.returncode, self.rundir)

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to end (it ends itself: -m and -timeout bound every run)."""
        if timeout is None:
            timeout = max(self.timeout + 15 - (time.monotonic() - self.started), 5)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise HarnessError(
                f"SIPp {self.name} still running after {timeout:.0f} s; killed\n"
                + self.result().report()
            ) from None
        finally:
            self._out.close()
        return self.result()

    def stop(self) -> SippResult:
        _stop_process(self.proc, sig=signal.SIGTERM, timeout=5)
        self._out.close()
        return self.result()

    def wait_for_message(self, pattern: str, timeout: float) -> str:
        """Wait until SIPp's message trace (-trace_msg) matches the regex `pattern`."""
        rx = re.compile(pattern, re.M)

        def found() -> str | None:
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"SIPp {self.name} ended before {pattern!r} appeared\n{self.result().report()}"
                )
            m = rx.search(self.result().messages())
            return m.group(0) if m else None

        try:
            return wait_until(found, timeout, interval=0.05, what=f"SIPp {self.name}: {pattern!r}")
        except HarnessError as exc:
            if "timed out" in str(exc):
                raise HarnessError(f"{exc}\n{self.result().report()}") from None
            raise

    def __enter__(self) -> SippProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()


def sipp_command(
    *,
    rundir: Path,
    scenario: str | Path | None = None,
    builtin: str | None = None,
    remote: str | None = None,
    port: int,
    transport: str = "u1",
    calls: int = 1,
    rate: float | None = None,
    rate_period_ms: int | None = None,
    limit: int | None = None,
    timeout: float = 30,
    service: str | None = None,
    auth: tuple[str, str] | None = None,
    auth_uri: str | None = None,
    inf: Path | None = None,
    keys: Mapping[str, str] | None = None,
    sets: Mapping[str, str] | None = None,
    ooc_scenario: str | Path | None = None,
    trace_msg: bool = True,
    recv_timeout_ms: int | None = None,
    extra: Sequence[str] = (),
    local_ip: str = LOCALHOST,
) -> list[str]:
    """The SIPp command line: always -cp, -nostdin, -m, -timeout(_error), -i, -p and traces."""
    ctrl_port = free_port()
    media_port = free_ports(4, consecutive=True)[0]
    cmd = ["sipp"]
    if remote:
        cmd.append(remote)
    if builtin:
        cmd += ["-sn", builtin]
    elif scenario is not None:
        path = Path(scenario)
        cmd += ["-sf", str(path if path.is_absolute() else scenario_path(str(scenario)))]
    else:
        raise ValueError("scenario or builtin needed")
    cmd += [
        "-i",
        local_ip,
        "-p",
        str(port),
        "-mp",
        str(media_port),
        "-cp",
        str(ctrl_port),
        "-t",
        transport,
        "-m",
        str(calls),
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-trace_stat",
        "-stf",
        str(rundir / "stat.csv"),
        "-fd",
        "1",
        "-trace_err",
        "-error_file",
        str(rundir / "errors.log"),
        "-trace_screen",
        "-screen_file",
        str(rundir / "screen.log"),
        "-trace_logs",
        "-log_file",
        str(rundir / "actions.log"),
    ]
    if trace_msg:
        cmd += ["-trace_msg", "-message_file", str(rundir / "messages.log")]
    if rate is not None:
        cmd += ["-r", str(rate)]
    if rate_period_ms is not None:
        cmd += ["-rp", str(rate_period_ms)]
    if limit is not None:
        cmd += ["-l", str(limit)]
    if service:
        cmd += ["-s", service]
    if auth:
        cmd += ["-au", auth[0], "-ap", auth[1]]
    if auth_uri:
        # digest uri= is "sip:" + this; without it SIPp puts sip:REMOTE_IP:PORT there, which is
        # not the Request-URI (RFC 7616 3.4.6 lets the server refuse such credentials)
        cmd += ["-auth_uri", auth_uri]
    if inf is not None:
        cmd += ["-inf", str(inf)]
    if ooc_scenario is not None:
        path = Path(ooc_scenario)
        cmd += ["-oocsf", str(path if path.is_absolute() else scenario_path(str(ooc_scenario)))]
    if recv_timeout_ms is not None:
        cmd += ["-recv_timeout", str(recv_timeout_ms)]
    for k, v in (keys or {}).items():
        cmd += ["-key", k, str(v)]
    for k, v in (sets or {}).items():
        cmd += ["-set", k, str(v)]
    cmd += list(extra)
    return cmd


_sipp_runs = 0


def _sipp_rundir(workdir: Path, name: str) -> Path:
    global _sipp_runs
    _sipp_runs += 1
    rundir = Path(workdir) / f"sipp-{_sipp_runs:02d}-{name}"
    rundir.mkdir(parents=True, exist_ok=False)
    return rundir


def start_sipp(workdir: Path, name: str, **kw: Any) -> SippProcess:
    """Start SIPp in the background (see `sipp_command` for the options); keep its PID."""
    rundir = _sipp_rundir(workdir, name)
    if "inf_rows" in kw:
        kw["inf"] = write_inf(rundir / "users.csv", kw.pop("inf_rows"))
    cmd = sipp_command(rundir=rundir, **kw)
    return SippProcess(name, cmd, rundir, float(kw.get("timeout", 30)))


def run_sipp(workdir: Path, name: str, **kw: Any) -> SippResult:
    """Run SIPp to its end; returns exit code and trace paths (does not assert success)."""
    with start_sipp(workdir, name, **kw) as proc:
        return proc.wait()


def start_sipp_uas(
    workdir: Path,
    name: str = "uas",
    *,
    port: int | None = None,
    scenario: str | None = None,
    **kw: Any,
) -> SippProcess:
    """A SIPp UAS in the background: SIPp's built-in `uas`, or a server-mode scenario file."""
    port = port or free_port()
    if scenario is None:
        kw.setdefault("builtin", "uas")
    return start_sipp(workdir, name, scenario=scenario, port=port, **kw)


def start_sipp_callee(
    workdir: Path,
    server: Server,
    *,
    user: str,
    password: str,
    on_invite: str = "callee_answer.xml",
    calls: int = 1,
    transport: str = "u1",
    port: int | None = None,
    contact_host: str | None = None,
    via_host: str | None = None,
    expires: int = 3600,
    timeout: float = 60,
    trace_msg: bool = True,
    name: str | None = None,
    wait_registered: bool = True,
    local_ip: str = LOCALHOST,
) -> SippProcess:
    """A SIPp phone: REGISTERs (digest auth), then answers `calls` INVITEs on the same socket.

    One SIPp process: the main scenario (callee_register.xml) registers and then waits until the
    out-of-call scenario `on_invite` (-oocsf) has completed `calls` calls; every INVITE is a new
    Call-ID, which SIPp in client mode hands to the out-of-call scenario. SIPp exits 0 only if
    registration worked and `calls` calls went through `on_invite` to its end.

    `contact_host` / `via_host` default to 127.0.0.1:PORT; pass e.g. "192.168.1.20:5060" to play
    a phone behind NAT (the REGISTER still comes from 127.0.0.1:PORT).
    """
    port = port or free_port()
    local = f"{bracket(local_ip)}:{port}"
    proc = start_sipp(
        workdir,
        name or f"callee-{user}",
        scenario="callee_register.xml",
        ooc_scenario=on_invite,
        remote=server.address6 if ":" in local_ip else server.address,
        local_ip=local_ip,
        port=port,
        transport=transport,
        calls=1,
        timeout=timeout,
        service=user,
        auth=(user, password),
        auth_uri=server.domain,
        keys={
            "domain": server.domain,
            "contact_host": contact_host or local,
            "via_host": via_host or contact_host or local,
            "expires": str(expires),
        },
        sets={"expected_calls": str(calls)},
        trace_msg=trace_msg,
    )
    if wait_registered:
        wait_sipp_registered(proc)
    return proc


def wait_sipp_registered(proc: SippProcess, timeout: float = 10) -> None:
    """Wait for the callee scenario's log line written after its REGISTER got 200."""

    def registered() -> bool:
        if proc.poll() is not None:
            raise HarnessError(
                f"SIPp {proc.name} ended before registering\n{proc.result().report()}"
            )
        return "REGISTERED" in tail(proc.rundir / "actions.log")

    try:
        wait_until(registered, timeout, what=f"SIPp {proc.name} to register")
    except HarnessError as exc:
        if "timed out" in str(exc):
            proc.stop()
            raise HarnessError(f"{exc}\n{proc.result().report()}") from None
        raise


def run_sipp_caller(
    workdir: Path,
    server: Server,
    *,
    user: str,
    password: str,
    callee: str,
    scenario: str = "caller_auth.xml",
    calls: int = 1,
    rate: float | None = None,
    transport: str = "u1",
    port: int | None = None,
    timeout: float = 30,
    trace_msg: bool = True,
    name: str | None = None,
    keys: Mapping[str, str] | None = None,
    local_ip: str = LOCALHOST,
    **kw: Any,
) -> SippResult:
    """Run a caller scenario (caller_*.xml) as USER calling sip:CALLEE@DOMAIN; returns its result.

    The caller's own name goes in as -key user; the digest credentials as -au/-ap (SIPp 3.6.1's
    [authentication] does not take [fieldN] values, so an -inf file cannot carry them).
    """
    return run_sipp(
        workdir,
        name or f"caller-{user}",
        scenario=scenario,
        remote=server.address6 if ":" in local_ip else server.address,
        local_ip=local_ip,
        port=port or free_port(),
        transport=transport,
        calls=calls,
        rate=rate,
        timeout=timeout,
        service=callee,
        auth=(user, password),
        auth_uri=f"{callee}@{server.domain}",
        keys={"domain": server.domain, "user": user, **(keys or {})},
        trace_msg=trace_msg,
        **kw,
    )


# --------------------------------------------------------------------------------------------
# baresip


class Baresip:
    """One baresip softphone with its own config folder, driven over ctrl_tcp.

    with Baresip(tmp_path, user="bob", password=..., server=srv, answermode="auto") as bob:
        bob.wait_registered()
        bob.command("dial", "sip:alice@DOMAIN")
        bob.wait_for_event("CALL_ESTABLISHED")
    """

    def __init__(
        self,
        workdir: Path,
        *,
        user: str,
        password: str,
        server: Server,
        answermode: str = "manual",
        transport: str = "udp",
        regint: int = 60,
        contacts: Sequence[str] = (),
        host: str = LOCALHOST,
        server_address: str | None = None,
        audio_source: str = "ausine,440",
        extra_config: Sequence[str] = (),
        account_params: str = "",
    ) -> None:
        """`contacts`: lines of baresip's contacts file (`"Bob" <sip:bob@D>;presence=p2p`).
        `host`: the address SIP and RTP use (a home network's, inside a test's namespace;
        ::1 for a phone on IPv6, which then reaches the server at [::1]);
        `server_address`: host:port of the server as the phone reaches it;
        `audio_source`: e.g. `aufile,FILE.wav` (48 kHz stereo S16LE, like the ausine default);
        `extra_config`: more lines of baresip's config (e.g. `module sndfile.so`);
        `account_params`: more parameters of the account line (e.g. `;sipnat=outbound`)."""
        self.account_params = account_params
        self.contacts = tuple(contacts)
        self.host = host
        self.server_address = server_address
        self.audio_source = audio_source
        self.extra_config = tuple(extra_config)
        self.user = user
        self.password = password
        self.server = server
        self.domain = server.domain
        self.answermode = answermode
        self.transport = transport
        self.regint = regint
        self.dir = Path(workdir) / f"baresip-{user}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_ports(2, consecutive=True)[0]  # PORT for UDP/TCP, PORT+1 for TLS
        self.ctrl_port = free_port()
        rtp = free_ports(8, consecutive=True)
        self.rtp_range = f"{rtp[0]}-{rtp[-1]}"
        self.log_path = self.dir / "out.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._fifo_fd: int | None = None
        self._sock: socket.socket | None = None
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self._token = 0

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    def write_config(self) -> None:
        (self.dir / "config").write_text(
            "\n".join(
                [
                    f"sip_listen\t\t{bracket(self.host)}:{self.sip_port}",
                    f"net_interface\t\t{self.host}",  # media on the same address
                    f"rtp_ports\t\t{self.rtp_range}",
                    "audio_player\t\taufile,/dev/null",
                    f"audio_source\t\t{self.audio_source}",
                    "ausrc_srate\t\t48000",  # ausine: 48 kHz stereo only; baresip resamples
                    "ausrc_channels\t\t2",
                    "audio_alert\t\taufile,/dev/null",
                    "module_path\t\t/usr/lib/baresip/modules",
                    "module\t\t\tstdio.so",
                    "module\t\t\tg711.so",
                    "module\t\t\taufile.so",
                    "module\t\t\tausine.so",
                    "module_tmp\t\taccount.so",
                    "module_app\t\tcontact.so",
                    "module_app\t\tpresence.so",
                    "module_app\t\tmenu.so",
                    "module_app\t\tctrl_tcp.so",
                    f"ctrl_tcp_listen\t\t{LOCALHOST}:{self.ctrl_port}",
                    # over TLS, trust the server's self-signed certificate
                    *([f"sip_cafile\t\t{self.server.tls_cert}"] if self.transport == "tls" else []),
                    *self.extra_config,
                    "",
                ]
            )
        )
        # a phone on IPv6 reaches the server at [::1]
        server = self.server_address or (
            self.server.address6 if ":" in self.host else self.server.address
        )
        if self.transport == "tls":
            host = bracket(LOCALHOST6) if ":" in self.host else LOCALHOST
            server = f"{host}:{self.server.tls_port}"
        (self.dir / "accounts").write_text(
            f"<sip:{self.user}@{self.domain};transport={self.transport}>;auth_pass={self.password};"
            f'outbound="sip:{server};transport={self.transport}";regint={self.regint};'
            f"mwi=no;answermode={self.answermode}{self.account_params}\n"
        )
        (self.dir / "contacts").write_text("".join(f"{c}\n" for c in self.contacts))
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "current_contact").unlink()

    def start(self, timeout: float = 15) -> None:
        if shutil.which("baresip") is None:
            raise HarnessError("baresip is not installed")
        self.write_config()
        fifo = self.dir / "stdin.fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        # opened read-write: never blocks, never sees EOF (with </dev/null stdio would give up)
        self._fifo_fd = os.open(fifo, os.O_RDWR)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["baresip", "-f", str(self.dir)],
                cwd=self.dir,
                stdin=self._fifo_fd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._connect(timeout)

    def _connect(self, timeout: float) -> None:
        def connect() -> socket.socket | None:
            if self.proc is None or self.proc.poll() is not None:
                raise HarnessError(f"baresip {self.user} exited at start\n{self.log_text()}")
            try:
                return socket.create_connection((LOCALHOST, self.ctrl_port), timeout=1)
            except OSError:
                return None

        self._sock = wait_until(
            connect, timeout, interval=0.05, what=f"baresip {self.user} ctrl_tcp port"
        )

    # -- control protocol ---------------------------------------------------------------------

    def _send(self, obj: Mapping[str, Any]) -> None:
        assert self._sock is not None
        data = json.dumps(obj).encode()
        self._sock.sendall(str(len(data)).encode() + b":" + data + b",")

    def _read_one(self, timeout: float) -> dict[str, Any] | None:
        """One netstring JSON object from ctrl_tcp, or None after `timeout` seconds."""
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        while True:
            m = re.match(rb"(\d+):", self._buf)
            if m:
                n = int(m.group(1))
                start = m.end()
                if len(self._buf) >= start + n + 1:
                    payload = self._buf[start : start + n]
                    self._buf = self._buf[start + n + 1 :]
                    obj: dict[str, Any] = json.loads(payload.decode("utf-8", "replace"))
                    return obj
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise HarnessError(
                    f"baresip {self.user}: control connection closed\n{self.log_text()}"
                )
            self._buf += chunk

    def command(
        self, command: str, params: str | None = None, timeout: float = 5
    ) -> dict[str, Any]:
        """Send a command; return its response (events arriving meanwhile are queued)."""
        self._token += 1
        token = f"t{self._token}"
        msg: dict[str, Any] = {"command": command, "token": token}
        if params is not None:
            msg["params"] = params
        self._send(msg)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            obj = self._read_one(left) if left > 0 else None
            if obj is None:
                raise HarnessError(
                    f"baresip {self.user}: no response to {command!r} within {timeout} s\n"
                    + self.log_text()
                )
            if obj.get("event"):
                self.events.append(obj)
            elif obj.get("response") and obj.get("token") == token:
                return obj

    def wait_for_event(
        self,
        type_: str,
        timeout: float = 10,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The first (queued or new) event of `type_` matching `predicate`; it is consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("type") == type_ and (predicate is None or predicate(ev)):
                    return self.events.pop(i)
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessError(
                    f"baresip {self.user} exited while waiting for {type_}\n{self.log_text()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [e.get("type") for e in self.events]
                raise HarnessError(
                    f"baresip {self.user}: no {type_} event within {timeout} s (queued: {seen})\n"
                    + self.log_text()
                )
            obj = self._read_one(min(left, 0.5))
            if obj is not None and obj.get("event"):
                self.events.append(obj)

    def registered(self) -> bool:
        """True once the account shows a successful registration (`reginfo`)."""
        if any(e.get("type") == "REGISTER_OK" for e in self.events):
            return True
        data = str(self.command("reginfo").get("data", ""))
        text = re.sub(r"\x1b\[[0-9;]*m", "", data)
        return bool(re.search(rf"{re.escape(self.user)}@\S*.*\bOK\b", text))

    def wait_registered(self, timeout: float = 15) -> None:
        try:
            wait_until(
                self.registered, timeout, interval=0.2, what=f"baresip {self.user} to register"
            )
        except HarnessError as exc:
            raise HarnessError(f"{exc}\n{self.log_text()}\n{self.server.log_text()}") from None

    def log_text(self) -> str:
        return f"--- baresip {self.user} log {self.log_path} ---\n{tail(self.log_path, 8000)}"

    def stop(self, timeout: float = 5) -> None:
        """`quit` over ctrl_tcp (un-REGISTERs), then kill by PID if it is still there."""
        try:
            if self.proc is not None and self.proc.poll() is None and self._sock is not None:
                with contextlib.suppress(OSError, HarnessError):
                    self._send({"command": "quit", "token": "quit"})
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=timeout)
        finally:
            if self.proc is not None:
                _stop_process(self.proc, sig=signal.SIGTERM, timeout=3)
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if self._fifo_fd is not None:
                os.close(self._fifo_fd)
                self._fifo_fd = None

    def __enter__(self) -> Baresip:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.stop()
        if exc_type is not None:
            print(self.log_text(), file=sys.stderr)


# --------------------------------------------------------------------------------------------
# messenger (issue 5): servers with [messages] settings, MESSAGEs SIPp received, linphonec
#
# Used by test_messaging_sipp.py and test_messaging_linphone.py.


def messaging_server(
    workdir: Path,
    *,
    domain: str,
    users: Mapping[str, str],
    messages: Mapping[str, object] | None = None,
    **kw: Any,
) -> Server:
    """A prepared (initialised, not started) Server with HTTP and `[messages]` settings.

    Enter it (`with` / ExitStack.enter_context) to start it; `prepare()` is then a no-op.
    """
    kw.setdefault("http", True)
    srv = Server(workdir, domain=domain, users=users, **kw)
    srv.prepare()
    for key, value in (messages or {}).items():
        set_toml_option(srv.config_path, "messages", key, value)
    return srv


def sipp_trace(result: SippResult | SippProcess) -> list[tuple[str, SipMessage]]:
    """Every message SIPp sent or received (its -trace_msg file), in order, as
    ("sent" | "received", message).

    SIPp 3.6.1 writes `UDP message received [N] bytes :` and `UDP message sent (N bytes):`, each
    followed by an empty line and the message; the body is cut by Content-Length.
    """
    path = result.rundir / "messages.log"
    text = path.read_bytes() if path.exists() else b""
    out: list[tuple[str, SipMessage]] = []
    for m in re.finditer(rb"message (sent|received) [\[(](\d+)\]? bytes\)? ?:\n\n", text):
        size = int(m.group(2))
        msg = parse_message(text[m.end() : m.end() + size])
        length = msg.header("Content-Length")
        if length is not None and length.strip().isdigit():
            msg.body = msg.body[: int(length)]
        out.append((m.group(1).decode(), msg))
    return out


def sipp_received(result: SippResult | SippProcess, method: str | None = None) -> list[SipMessage]:
    """Every message SIPp received, in order; only requests of `method` if given."""
    return [
        msg
        for direction, msg in sipp_trace(result)
        if direction == "received" and (method is None or msg.method == method)
    ]


class Linphonec:
    """One linphone-cli (`linphonec`) with its own HOME/XDG dirs, driven over a stdin FIFO.

    Config and behaviour as verified in ../shared/PEERS.md: a fresh linphonerc before each start
    (linphonec rewrites it on exit), readiness by `status register`, `chat sip:…` to send, the
    out.log lines `Message received from sip:…: TEXT` on receipt, files downloaded by itself into
    $XDG_DATA_HOME/linphone/.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        user: str,
        password: str,
        server: Server,
        file_transfer_url: str | None = None,
        auto_download_max_size: int = 0,
        extra_rc: Mapping[str, Mapping[str, object]] | None = None,
    ) -> None:
        self.user = user
        self.password = password
        self.server = server
        self.dir = Path(workdir) / f"linphonec-{user}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.file_transfer_url = file_transfer_url
        self.auto_download_max_size = auto_download_max_size
        self.extra_rc = {k: dict(v) for k, v in (extra_rc or {}).items()}
        self.log_path = self.dir / "out.log"
        self.rc_path = self.dir / "linphonerc"
        self.proc: subprocess.Popen[bytes] | None = None
        self._fifo_fd: int | None = None

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.server.domain}"

    @property
    def download_dir(self) -> Path:
        """Where linphonec 5.1.65 puts received files (and its call-history and zrtp databases):
        $HOME/.local/share/linphone, whatever XDG_DATA_HOME says. It does not create it: without
        it the download fails ("Can't open file …")."""
        return self.dir / ".local" / "share" / "linphone"

    def write_rc(self) -> None:
        realm = self.server.domain  # the server's digest realm is its domain
        sections: dict[str, dict[str, object]] = {
            "sip": {
                "sip_port": self.port,
                "sip_tcp_port": 0,
                "sip_tls_port": 0,
                "bind_address": LOCALHOST,
                "register_only_when_network_is_up": 0,
                "auto_net_state_mon": 0,
                "default_proxy": 0,  # else `status register` says registered=0 even when it is
            },
            "net": {"bind_address": LOCALHOST},
            "video": {"enabled": 0, "capture": 0, "display": 0},
            "app": {"auto_download_incoming_files_max_size": self.auto_download_max_size},
            "storage": {"uri": str(self.dir / "linphone.db")},
            "proxy_0": {
                "reg_proxy": f"<sip:{self.server.address};transport=udp>",
                # the outbound proxy: else a MESSAGE to sip:x@DOMAIN goes to DOMAIN's DNS
                "reg_route": f"<sip:{self.server.address};transport=udp;lr>",
                "reg_identity": f'"{self.user}" <{self.aor}>',
                "reg_expires": 300,
                "reg_sendregister": 1,
                "publish": 0,
            },
            "auth_info_0": {"username": self.user, "passwd": self.password, "realm": realm},
        }
        if self.file_transfer_url:
            sections["misc"] = {"file_transfer_server_url": self.file_transfer_url}
        for name, values in self.extra_rc.items():
            sections.setdefault(name, {}).update(values)
        lines: list[str] = []
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines += [f"{k}={v}" for k, v in values.items()]
            lines.append("")
        self.rc_path.write_text("\n".join(lines), encoding="utf-8")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
            env[var] = str(self.dir)
        return env

    def start(self) -> None:
        if shutil.which("linphonec") is None:
            raise HarnessError("linphonec is not installed (apt-get install linphone-cli)")
        self.write_rc()
        self.download_dir.mkdir(parents=True, exist_ok=True)
        fifo = self.dir / "stdin.fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        self._fifo_fd = os.open(fifo, os.O_RDWR)  # never blocks, never sees EOF
        # E2E_LINPHONEC_DEBUG=6: liblinphone's full log (SIP messages included) into out.log
        debug = os.environ.get("E2E_LINPHONEC_DEBUG", "0")
        cmd = ["stdbuf", "-oL", "linphonec", "-c", str(self.rc_path), "-d", debug]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.dir,
                env=self.env(),
                stdin=self._fifo_fd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def command(self, line: str) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise HarnessError(f"linphonec {self.user} is not running\n{self.log_text()}")
        assert self._fifo_fd is not None
        os.write(self._fifo_fd, line.encode() + b"\n")

    def output(self) -> str:
        return tail(self.log_path, 1_000_000)

    def wait_output(
        self, pattern: str, timeout: float = 15, *, nudge: str | None = None, since: int = 0
    ) -> str:
        """Wait until out.log (from character `since` on) matches the regex `pattern`; write
        `nudge` to linphonec each second meanwhile."""
        rx = re.compile(pattern, re.M)
        last_nudge = [0.0]

        def found() -> str | None:
            if self.proc is None or self.proc.poll() is not None:
                raise HarnessError(
                    f"linphonec {self.user} exited while waiting for {pattern!r}\n"
                    + self.log_text()
                )
            m = rx.search(self.output(), since)
            if m:
                return m.group(0)
            if nudge and time.monotonic() - last_nudge[0] >= 1.0:
                last_nudge[0] = time.monotonic()
                self.command(nudge)
            return None

        try:
            return wait_until(
                found, timeout, interval=0.1, what=f"linphonec {self.user}: {pattern!r}"
            )
        except HarnessError as exc:
            if "timed out" in str(exc):
                raise HarnessError(f"{exc}\n{self.log_text()}\n{self.server.log_text()}") from None
            raise

    def wait_registered(self, timeout: float = 20) -> None:
        # `registered, identity="carol" <sip:carol@D> duration=300`
        self.wait_output(
            rf"^(linphonec> )?registered, identity=.*{re.escape(self.aor)}\b",
            timeout,
            nudge="status register",
        )

    def log_text(self) -> str:
        return f"--- linphonec {self.user} out.log {self.log_path} ---\n{tail(self.log_path, 8000)}"

    def stop(self, timeout: float = 5) -> None:
        """`unregister`, wait until `status register` says registered=0 (the un-REGISTER was
        answered), `quit`; kill by PID if it is still there after `timeout` s."""
        try:
            if self.proc is not None and self.proc.poll() is None and self._fifo_fd is not None:
                with contextlib.suppress(OSError, HarnessError):
                    since = len(self.output())
                    self.command("unregister")
                    self.wait_output(
                        r"^(linphonec> )?registered=0", 5, nudge="status register", since=since
                    )
                with contextlib.suppress(OSError, HarnessError):
                    self.command("quit")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=timeout)
        finally:
            if self.proc is not None:
                _stop_process(self.proc, sig=signal.SIGTERM, timeout=3)
            if self._fifo_fd is not None:
                os.close(self._fifo_fd)
                self._fifo_fd = None

    def __enter__(self) -> Linphonec:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.stop()
        if exc_type is not None:
            print(self.log_text(), file=sys.stderr)


# --------------------------------------------------------------------------------------------
# the liblinphone test clients in tools/ (linphone_publish.c, linphone_chat.c + linphone_common.h)

TOOLS_DIR = Path(__file__).resolve().parent / "tools"
LINPHONE_PKG_CONFIG = "linphone"  # Debian's liblinphone-dev installs linphone.pc
LINPHONE_COMPILE_TIMEOUT = 120.0


def _missing_linphone_build_tools() -> str | None:
    """The Debian packages missing to build a liblinphone client, or None."""
    missing = [p for p in ("gcc", "pkg-config") if shutil.which(p) is None]
    exists = ["pkg-config", "--exists", LINPHONE_PKG_CONFIG]
    if "pkg-config" in missing or subprocess.run(exists, timeout=30).returncode != 0:
        missing.append("liblinphone-dev")
    return " ".join(missing) or None


def build_linphone_tool(name: str, workdir: Path) -> Path:
    """Compile tools/`name`.c (with tools/linphone_common.h) into `workdir`/`name`.

    gcc, pkg-config or liblinphone-dev missing: the test fails with what to install, or is
    skipped when HEIMBUERO_ALLOW_MISSING_PEERS=1 (the rule for missing peers, tests/conftest.py).
    A compile error raises HarnessError with gcc's output.
    """
    packages = _missing_linphone_build_tools()
    if packages:
        message = (
            f"cannot build the liblinphone test client: install `apt-get install {packages}` "
            "(or run scripts/test, which does)"
        )
        if os.environ.get("HEIMBUERO_ALLOW_MISSING_PEERS") == "1":
            pytest.skip(f"{message}; skipped as HEIMBUERO_ALLOW_MISSING_PEERS=1")
        pytest.fail(
            f"{message}; or set HEIMBUERO_ALLOW_MISSING_PEERS=1 to skip such tests", pytrace=False
        )
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", LINPHONE_PKG_CONFIG],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    binary = workdir / name
    # Debian's linphone.pc has an empty Libs line: the library itself is named here
    cmd = [
        "gcc", "-Wall", "-Werror", "-I", str(TOOLS_DIR), "-o", str(binary),
        str(TOOLS_DIR / f"{name}.c"), *flags, "-llinphone",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=LINPHONE_COMPILE_TIMEOUT)
    if res.returncode != 0:
        raise HarnessError(f"`{shlex.join(cmd)}` exited {res.returncode}:\n{res.stderr}")
    return binary


# HTTPS with a certificate made by the test (test_files.py, test_messaging_linphone.py)


def self_signed_cert(directory: Path, host: str = LOCALHOST) -> tuple[Path, Path]:
    """A self-signed EC certificate for the IP address `host` and its key, made with openssl in
    `directory`: (cert.pem, key.pem). The certificate is its own CA: clients that should trust
    the server get cert.pem as their root CA.

    Its subjectAltName holds `host` twice, as IP:host (what OpenSSL, so Python's ssl, checks for
    an IP address) and as DNS:host: liblinphone 5.1 verifies with mbedtls 2.28, which cannot read
    iPAddress entries ("subject alt name: <unsupported>") and compares the name of the URL,
    "127.0.0.1", with the DNS entries only; with IP alone it fails the handshake (CN-mismatch)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    cmd = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(cert),
        "-addext", f"subjectAltName=IP:{host},DNS:{host}",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise HarnessError(f"`{shlex.join(cmd)}` exited {res.returncode}:\n{res.stderr}")
    return cert, key


# --------------------------------------------------------------------------------------------
# a call between two hand-driven phones

HAND_OFFER = (
    b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
)


def reply(
    phone: SipClient, req: SipMessage, status: str, extra: str = "", body: bytes = b""
) -> None:
    """Answer a request the server sent to a hand-driven phone (To gets the tag `bob1` when it
    has none; `extra`: more header lines, each ending in CRLF)."""
    via = "".join(f"Via: {v}\r\n" for v in req.header_values("Via"))
    rr = "".join(f"Record-Route: {v}\r\n" for v in req.header_values("Record-Route"))
    to = req.header("To") or ""
    head = (
        f"SIP/2.0 {status}\r\n{via}{rr}From: {req.header('From')}\r\n"
        f"To: {to}{'' if 'tag=' in to else ';tag=bob1'}\r\n"
        f"Call-ID: {req.header('Call-ID')}\r\nCSeq: {req.header('CSeq')}\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    phone.send_raw(head.encode() + body)


def next_request(phone: SipClient, method: str, timeout: float = 5) -> SipMessage:
    """The next request of `method` the phone receives (others are skipped)."""

    def one() -> SipMessage | None:
        msg = phone.recv(0.2)
        return msg if msg is not None and msg.method == method else None

    result: SipMessage = wait_until(one, timeout, interval=0.0, what=f"a {method} at the phone")
    return result


def in_dialog(phone: SipClient, method: str, invite: SentRequest, ok: SipMessage, cseq: int
              ) -> SentRequest:  # fmt: skip
    """Send `method` (ACK, BYE, …) inside the call `invite` set up, whose 200 is `ok`: to its
    Contact, along its Record-Route."""
    contact = re.search(r"<([^>]+)>", ok.header("Contact") or "")
    if contact is None:
        raise HarnessError(f"the 200 has no Contact: {ok.summary()}")
    return phone.request(
        method, contact.group(1), from_uri=invite.from_uri, to_uri=invite.to_uri, cseq=cseq,
        call_id=invite.call_id, from_tag=invite.from_tag, to_tag=ok.to_tag(),
        headers=[("Route", r) for r in ok.header_values("Record-Route")],
    )  # fmt: skip


def hand_call(
    server: Server, alice: SipClient, bob: SipClient, users: Mapping[str, str]
) -> tuple[SentRequest, SipMessage]:
    """bob registers; alice sends an authenticated INVITE (with HAND_OFFER) to bob; the sent
    INVITE and the INVITE as it reached bob (not answered yet)."""
    aor, me = f"sip:bob@{server.domain}", f"sip:alice@{server.domain}"
    _, reg = bob.authenticated_request(
        "REGISTER", f"sip:{server.domain}", username="bob", password=users["bob"],
        from_uri=aor, to_uri=aor,
        headers=[("Contact", f"<sip:bob@127.0.0.1:{bob.local_port}>"), ("Expires", "300")],
    )  # fmt: skip
    if reg.status != 200:
        raise HarnessError(f"bob could not register: {reg.summary()}")
    contact = ("Contact", f"<sip:alice@127.0.0.1:{alice.local_port}>")
    first = alice.request("INVITE", aor, from_uri=me, to_uri=aor, body=HAND_OFFER,
                          content_type="application/sdp", headers=[contact])  # fmt: skip
    challenge = alice.final_response(first, 5)
    auth = digest_response(pick_challenge(challenge, "MD5"), method="INVITE", uri=aor,
                           username="alice", password=users["alice"])  # fmt: skip
    inv = alice.request(
        "INVITE", aor, from_uri=me, to_uri=aor, call_id=first.call_id,
        from_tag=first.from_tag, cseq=2, body=HAND_OFFER, content_type="application/sdp",
        headers=[contact, ("Proxy-Authorization", auth)],
    )  # fmt: skip
    return inv, next_request(bob, "INVITE")
