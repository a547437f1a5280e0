"""The HTTP service under attack: login floods, unauthenticated and oversized bodies, slow
headers, forged X-Forwarded-For, too many connections, oversized rules documents.

One server for the module (its [http] settings below); each test sends from its own loopback
address so the per-address login limit of one test does not shape another.
"""

from __future__ import annotations

import multiprocessing
import re
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import DOMAIN, USERS
from .harness import Server, SipClient, set_toml_option, wait_until

pytestmark = pytest.mark.e2e

ADMIN = ("root", "Wurzel-Werk-2026")
HEADER_TIMEOUT = 2
MAX_CONNECTIONS = 60


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("httpguard"), domain=DOMAIN, users=USERS, http=True)
    server.prepare()
    server.add_user(*ADMIN, role="admin")
    for key, value in (
        ("header_timeout", HEADER_TIMEOUT),
        ("max_connections", MAX_CONNECTIONS),
        ("max_body_kb", 256),
    ):
        set_toml_option(server.config_path, "http", key, value)
    with server:
        yield server


def client(srv: Server, source: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=srv.http_url, timeout=10, transport=transport)


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def register_ms(phone: SipClient, srv: Server) -> float:
    aor = f"sip:bob@{srv.domain}"
    start = time.perf_counter()
    _, ok = phone.authenticated_request(
        "REGISTER", f"sip:{srv.domain}", username="bob", password=USERS["bob"],
        from_uri=aor, to_uri=aor, headers=[("Contact", f"<sip:bob@127.0.0.1:{phone.local_port}>")],
    )  # fmt: skip
    assert ok.status == 200, ok.summary()
    return (time.perf_counter() - start) * 1000


def raw_request(srv: Server, data: bytes, source: str = "127.0.0.1") -> socket.socket:
    assert srv.http_port is not None
    sock = socket.create_connection(
        ("127.0.0.1", srv.http_port), timeout=5, source_address=(source, 0)
    )
    sock.sendall(data)
    return sock


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _flood(http_url: str, stop: Any, results: Any, threads: int = 40) -> None:
    """The attacker, in a process of its own (its threads must not hold the measuring test's
    interpreter lock): `threads` clients send failing logins until `stop` is set, each from a
    fresh address whenever the last one is refused: the spray of an attacker with many
    addresses, so the pool (not the per-address limit) is what holds. Puts the answer counts."""
    answers: dict[int, int] = {}
    lock = threading.Lock()

    def attacker(i: int) -> None:
        n = 0
        while not stop.is_set():
            source = f"127.1.{i}.{n % 250 + 1}"
            transport = httpx.HTTPTransport(local_address=source)
            with httpx.Client(base_url=http_url, timeout=10, transport=transport) as h:
                while not stop.is_set():
                    try:
                        code = h.get(
                            "/api/status", auth=(f"nobody{i}", "wrong-password-1")
                        ).status_code
                    except httpx.HTTPError:
                        code = 0  # connection refused or closed
                    with lock:
                        answers[code] = answers.get(code, 0) + 1
                    if code in (0, 429):
                        break
            n += 1

    workers = [threading.Thread(target=attacker, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    results.put(answers)


def test_login_flood_keeps_memory_and_sip_latency_bounded(srv: Server) -> None:
    assert srv.pid is not None
    with client(srv, "127.0.0.2") as http, SipClient(srv.port) as phone:
        assert http.get("/api/status", auth=("alice", USERS["alice"])).status_code == 200
        quiet = [register_ms(phone, srv) for _ in range(20)]
        Path(f"/proc/{srv.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = memory_kb(srv.pid)
        forked = multiprocessing.get_context("fork")
        stop, results = forked.Event(), forked.Queue()
        flood = forked.Process(target=_flood, args=(srv.http_url, stop, results))
        flood.start()
        try:
            time.sleep(0.5)  # let the attack build up
            during = []
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                during.append(register_ms(phone, srv))
            # a logged-in console keeps working during the flood (its login is remembered)
            console = http.get("/api/status", auth=("alice", USERS["alice"]))
            assert console.status_code == 200, console.text
        finally:
            stop.set()
            answers: dict[int, int] = results.get(timeout=30)
            flood.join(15)
        after = memory_kb(srv.pid)
    growth_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(
        f"\n40 concurrent failing logins: answers {answers}; peak RSS growth {growth_mb:.0f} MB; "
        f"REGISTER median {statistics.median(quiet):.1f} ms quiet, "
        f"{statistics.median(during):.1f} ms during ({len(during)} REGISTERs)"
    )
    assert answers.get(401, 0) > 0
    # the verifier pool is bounded: logins beyond it are refused at once (503) instead of
    # queueing argon2 work that would starve the SIP side and grow memory without limit
    assert answers.get(503, 0) > answers.get(401, 0), answers
    assert growth_mb < 150
    # every REGISTER sent during the flood was answered 200 (register_ms checks each). How
    # fast, against the quiet figure, is printed above; it is a measurement that depends on
    # the machine and is not asserted here (CI's 2 cores run the attacker too).
    assert len(during) >= 10, during


def test_unauthenticated_big_body_is_refused_before_it_is_read(srv: Server) -> None:
    assert srv.pid is not None
    head = (
        b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 209715200\r\n\r\n"
    )
    start = time.monotonic()
    with raw_request(srv, head + b"{" * 65536, "127.0.0.3") as sock:
        answer = read_answer(sock, 3)
    elapsed = time.monotonic() - start
    status_line = answer.split(b"\r\n", 1)[0]
    print(f"\nunauthenticated 200 MB POST: {status_line!r} after {elapsed:.2f} s")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert elapsed < 2

    chunked = (
        b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    with raw_request(srv, chunked + b"10000\r\n" + b" " * 65536 + b"\r\n", "127.0.0.3") as sock:
        assert read_answer(sock, 3).startswith(b"HTTP/1.1 401")

    with client(srv, "127.0.0.3") as http:
        auth = ("alice", USERS["alice"])
        # declared too large: 413 before the body
        big = http.post(
            "/api/messages", auth=auth, content=b"x" * (300 * 1024),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert big.status_code == 413, big.text
        assert "too large" in big.json()["detail"]

        # streamed (chunked) and too large: cut off while streaming
        sent = 0

        def stream() -> Iterator[bytes]:
            nonlocal sent
            for _ in range(200):  # up to 200 MB, the server stops it long before
                sent += 1
                yield b" " * (1024 * 1024)

        Path(f"/proc/{srv.pid}/clear_refs").write_text("5")
        before = memory_kb(srv.pid)
        try:
            streamed = http.post(
                "/api/messages", auth=auth, content=stream(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            assert streamed.status_code == 413
        except httpx.HTTPError:
            pass  # the server answered and closed while the client was still sending
        growth_mb = (memory_kb(srv.pid)["VmHWM"] - before["VmRSS"]) / 1024
        print(f"chunked 200 MB POST: cut off after {sent} MB sent; RSS growth {growth_mb:.0f} MB")
        assert sent < 200
        assert growth_mb < 50


def test_slow_headers_are_closed_by_the_deadline(srv: Server) -> None:
    start = time.monotonic()
    with raw_request(srv, b"GET /healthz HTTP/1.1\r\n", "127.0.0.4") as sock:
        sock.settimeout(0.3)
        closed_after = None
        with client(srv, "127.0.0.4") as http:
            for i in range(40):  # one header byte every 0.3 s, for up to 12 s
                try:
                    sock.sendall(b"X-a: b\r\n"[i % 8 : i % 8 + 1])
                    if sock.recv(1024) == b"":
                        closed_after = time.monotonic() - start
                        break
                except TimeoutError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    closed_after = time.monotonic() - start
                    break
                if i == 3:  # a normal client is served meanwhile
                    assert http.get("/healthz").status_code == 200
    print(f"\ntrickled headers: closed after {closed_after} s (deadline {HEADER_TIMEOUT} s)")
    assert closed_after is not None
    assert closed_after < HEADER_TIMEOUT + 1.5


def test_forged_x_forwarded_for_does_not_escape_the_address_limit(srv: Server) -> None:
    codes = []
    with httpx.Client(base_url=srv.http_url, timeout=10) as http:  # from 127.0.0.1
        for i in range(12):
            r = http.get(
                "/api/status",
                auth=("alice", f"wrong-password-{i}"),
                headers={
                    "X-Forwarded-For": f"203.0.113.{i + 1}",
                    "Forwarded": f"for=198.51.100.{i}",
                },
            )
            codes.append(r.status_code)
    print(f"\nfailing logins with forged X-Forwarded-For: {codes}")
    assert codes[:10] == [401] * 10
    assert codes[10:] == [429, 429]


def test_connection_cap_refuses_new_connections_while_existing_ones_work(srv: Server) -> None:
    with client(srv, "127.0.0.5") as http:
        assert http.get("/healthz").status_code == 200  # a kept-alive connection
        held = []
        try:
            for _ in range(MAX_CONNECTIONS + 5):
                held.append(raw_request(srv, b"GET /healthz HTTP/1.1\r\n", "127.0.0.6"))
            # the server sends nothing to an unfinished request before the header deadline:
            # a socket that is readable now was closed by the server (refused)
            # (polled for 1.5 s: less than the deadline that closes the others)
            deadline = time.monotonic() + 1.5
            refused = 0
            while refused < 6 and time.monotonic() < deadline:
                refused = len(select.select(held, [], [], 0.1)[0])
            print(
                f"\n{len(held)} connections opened with {MAX_CONNECTIONS} allowed: {refused} closed"
            )
            assert 5 <= refused <= 7  # 65 + the kept-alive one - 60
            assert http.get("/healthz").status_code == 200  # the existing connection is served
        finally:
            for sock in held:
                sock.close()
        # the slots come back
        wait_until(
            lambda: httpx.get(f"{srv.http_url}/healthz", timeout=2).status_code == 200, 10,
            what="a new connection to be served again",
        )  # fmt: skip


def window(i: int) -> str:
    """A time window of its own for rule i (rules with equal conditions are refused anyway)."""
    hour, minute = 8 + i // 30, (i % 30) * 2
    return f"{hour:02d}:{minute:02d}-{hour:02d}:{minute + 1:02d}"


def test_oversized_rules_document_is_refused(srv: Server) -> None:
    with client(srv, "127.0.0.8") as http:
        auth = ADMIN
        assert (
            http.post("/api/clients", auth=auth, json={"id": "mueller", "name": "M"}).status_code
            == 201
        )
        assert (
            http.post(
                "/api/numbers", auth=auth, json={"number": "+49891234567", "client": "mueller"}
            ).status_code
            == 201
        )
        step = {"targets": ["user:alice"], "timeout": 20}
        rules = [{"name": f"r{i}", "when": {"time": window(i)}, "steps": [step]} for i in range(60)]
        doc = {"client": "mueller", "numbers": {"+49891234567": {"rules": rules}}}
        too_many = http.put("/api/clients/mueller/rules", auth=auth, json=doc)
        print(f"\n60 rules: {too_many.status_code} {too_many.text[:160]}")
        assert too_many.status_code == 422
        assert "at most 50" in too_many.text

        doc["numbers"]["+49891234567"]["rules"] = [{"name": "x", "steps": [step] * 11}]
        steps = http.put("/api/clients/mueller/rules", auth=auth, json=doc)
        assert steps.status_code == 422 and "at most 10 steps" in steps.text

        huge = {"client": "mueller", "numbers": {}, "padding": "x" * (300 * 1024)}
        big = http.put("/api/clients/mueller/rules", auth=auth, json=huge)
        assert big.status_code == 413 and "too large" in big.text

        doc["numbers"]["+49891234567"]["rules"] = [{"name": "x", "steps": [step]}]
        assert http.put("/api/clients/mueller/rules", auth=auth, json=doc).status_code == 200


class LowFileLimitServer(Server):
    """`heimbuero serve` started with an open-files limit of 300 (soft and hard)."""

    def serve_command(self) -> list[str]:
        return ["prlimit", "--nofile=300:300", "--", *super().serve_command()]


def options(phone: SipClient, srv: Server) -> int | None:
    target = f"sip:{srv.address}"
    req = phone.request("OPTIONS", target, from_uri=f"sip:probe@{srv.domain}", to_uri=target)
    return phone.final_response(req, 5).status


def test_connection_caps_follow_the_open_files_limit(tmp_path: Path) -> None:
    with LowFileLimitServer(tmp_path, domain=DOMAIN, users={}, http=True) as srv:
        line = wait_until(
            lambda: re.search(r"at most (\d+) SIP TCP and (\d+) HTTP", srv.log_text()), 5,
            what="the connection caps in the log",
        )  # fmt: skip
        sip_cap, http_cap = int(line.group(1)), int(line.group(2))
        print(f"\nopen-files limit 300: caps {sip_cap} SIP TCP + {http_cap} HTTP")
        assert sip_cap + http_cap <= 300 - 64
        with SipClient(srv.port, transport="tcp") as phone:
            assert options(phone, srv) == 200
            held = []
            try:
                for k in range(sip_cap + 4):  # at most 90 per address (100 per address allowed)
                    held.append(
                        socket.create_connection(
                            ("127.0.0.1", srv.port),
                            timeout=5,
                            source_address=(f"127.0.3.{k // 90 + 1}", 0),
                        )  # fmt: skip
                    )
                deadline = time.monotonic() + 2
                refused = 0
                while refused < 5 and time.monotonic() < deadline:
                    refused = len(select.select(held, [], [], 0.1)[0])
                print(f"{len(held)} more SIP TCP connections: {refused} closed at once")
                assert refused == 5  # sip_cap + 4 + the phone's own - sip_cap
                assert options(phone, srv) == 200  # the existing connection still works
            finally:
                for sock in held:
                    sock.close()
