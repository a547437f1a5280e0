"""Attacks against the real server: scanners (sipvicious), a flood of unauthenticated INVITEs
(SIPp), blind garbage-nonce REGISTERs and a flood of wrong passwords.

Attackers send from other loopback addresses (127.0.0.2, 127.0.0.3; Linux routes all of
127.0.0.0/8 to lo) because 127.0.0.1 is in the default `flood_exempt`. In each attack a
legitimate phone keeps registering; its REGISTER latency during the attack is printed
(run pytest with -s to see it). Every attack is a few seconds of bounded load.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import DOMAIN, USERS
from .harness import (
    LOCALHOST,
    Server,
    SipClient,
    run_sipp,
    wait_until,
)

pytestmark = pytest.mark.e2e

ATTACKER = "127.0.0.2"
OFFICE = "127.0.0.3"  # an office router: the phone and the attacker share the address
BIN = Path(sys.executable).parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def _client(port: int, ip: str = LOCALHOST) -> SipClient:
    """A SipClient sending from `ip` (responses come back by rport)."""
    c = SipClient(port)
    if ip != LOCALHOST:
        c.sock.close()
        c.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.sock.bind((ip, 0))
        c.local_port = c.sock.getsockname()[1]
    return c


def _register(c: SipClient, user: str, password: str) -> int:
    aor = f"sip:{user}@{DOMAIN}"
    _, final = c.authenticated_request(
        "REGISTER",
        f"sip:{DOMAIN}",
        username=user,
        password=password,
        from_uri=aor,
        to_uri=aor,
        headers=[("Contact", f"<sip:{user}@{LOCALHOST}:{c.local_port}>"), ("Expires", "300")],
    )
    return final.status or 0


class LegitPhone:
    """A phone that keeps refreshing its registration while an attack runs, timing each one."""

    def __init__(self, port: int, user: str = "bob", ip: str = LOCALHOST) -> None:
        self.client = _client(port, ip)
        self.user = user
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def register_once(self) -> int:
        t0 = time.monotonic()
        status = _register(self.client, self.user, USERS[self.user])
        self.latencies.append(time.monotonic() - t0)
        self.statuses.append(status)
        return status

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.register_once()
            except AssertionError:
                self.statuses.append(0)
            self._stop.wait(0.1)

    def __enter__(self) -> LegitPhone:
        assert self.register_once() == 200
        self.latencies.clear()
        self.statuses.clear()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()

    def report(self, attack: str) -> None:
        ms = sorted(x * 1000 for x in self.latencies)
        print(
            f"\n[{attack}] legitimate REGISTERs during the attack: {len(ms)}, "
            f"ok {self.statuses.count(200)}, latency p50 {statistics.median(ms):.1f} ms, "
            f"max {ms[-1]:.1f} ms"
        )
        assert ms and all(s == 200 for s in self.statuses), self.statuses


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _sv(tool: str) -> str:
    path = BIN / f"sipvicious_{tool}"
    if not path.exists():
        pytest.fail(f"sipvicious is missing: pip install 'sipvicious>=0.3.4' ({path})")
    return str(path)


def _free_udp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


# ---- scanners ---------------------------------------------------------------------------------


def test_sipvicious_svmap_svwar_svcrack_find_nothing(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    # anna's password is early in svcrack's range: without the guard it is found in seconds.
    users = dict(USERS, anna="1000000007")
    server = server_factory(users=users)
    words = tmp_path / "extensions.txt"
    words.write_text("\n".join(["admin", "anna", "bert", "100", "bob", "alice"]) + "\n")
    runs = {
        "svmap": [_sv("svmap"), "-p", str(server.port), LOCALHOST],
        "svwar": [
            _sv("svwar"), "-p", str(server.port), "-d", str(words), "--maximumtime", "5",
            LOCALHOST,
        ],
        "svcrack": [
            _sv("svcrack"), "-p", str(server.port), "-u", "anna", "-r", "1000000000-1000000040",
            "--domain", DOMAIN, "--maximumtime", "5", LOCALHOST,
        ],
    }  # fmt: skip
    outputs: dict[str, str] = {}
    with LegitPhone(server.port) as phone:
        for name, cmd in runs.items():
            # sipvicious 0.3.x ignores -b (bindingip): it sends from 127.0.0.1 like the
            # phone, which is flood-exempt; the scanners are dropped by their User-Agent.
            cmd[1:1] = ["-P", str(_free_udp_port(LOCALHOST)), "-t", "0.05"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            outputs[name] = proc.stdout + proc.stderr
    phone.report("sipvicious")
    print({k: v[-400:] for k, v in outputs.items()})
    assert "anna" not in outputs["svwar"].split("Extension")[-1], outputs["svwar"]
    assert "1000000007" not in outputs["svcrack"], outputs["svcrack"]
    assert LOCALHOST + ":" + str(server.port) not in outputs["svmap"], outputs["svmap"]
    log = server.log_text()
    assert f"SECURITY scanner from {LOCALHOST}" in log


# ---- a flood of unauthenticated INVITEs --------------------------------------------------------


def test_invite_flood_gets_one_407_each_and_memory_stays_bounded(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory(sip_options={"flood_rate": 100_000, "flood_burst": 100_000})
    pid = server.pid
    assert pid is not None
    invites = 1500
    with LegitPhone(server.port) as phone:
        before = _rss_kb(pid)
        result = run_sipp(
            tmp_path,
            "invite-flood",
            scenario=SCENARIOS / "flood_invite.xml",
            remote=f"{LOCALHOST}:{server.port}",
            port=_free_udp_port(ATTACKER),
            calls=invites,
            rate=500,
            timeout=30,
            keys={"domain": DOMAIN},
            extra=["-i", ATTACKER, "-nr"],
        )
        after = _rss_kb(pid)
    phone.report("INVITE flood")
    text = result.msg_path.read_text(errors="replace")
    received_407 = text.count("SIP/2.0 407")
    sent_invites = sum(
        1 for line in text.splitlines() if line.strip().startswith(f"INVITE sip:bob@{DOMAIN}")
    )
    print(f"\nINVITEs sent {sent_invites}, 407s received {received_407}, "
          f"RSS {before} -> {after} kB")  # fmt: skip
    assert sent_invites == invites
    assert received_407 == invites  # one answer per INVITE: no retransmissions
    assert after - before < 15_000, (before, after)


# ---- blind garbage nonces -----------------------------------------------------------------------


def test_garbage_nonce_registers_do_not_lock_out_the_office(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory()
    with LegitPhone(server.port, ip=OFFICE) as phone:
        with _client(server.port, OFFICE) as attacker:
            aor = f"sip:alice@{DOMAIN}"
            for i in range(60):
                garbage = (
                    f'Digest username="alice", realm="{DOMAIN}", nonce="{"Q" * 47}{i % 10}", '
                    f'uri="sip:{DOMAIN}", response="{"0" * 32}", qop=auth, nc=00000001, '
                    'cnonce="x"'
                )
                attacker.request(
                    "REGISTER", f"sip:{DOMAIN}", from_uri=aor, to_uri=aor,
                    headers=[("Authorization", garbage)],
                )  # fmt: skip
                time.sleep(0.02)  # bounded: 60 requests in ~1.5 s, no reply needed
        # A phone behind the same address that was not registered before still gets in.
        with _client(server.port, OFFICE) as alice:
            assert _register(alice, "alice", USERS["alice"]) == 200
    phone.report("garbage nonces")


# ---- wrong passwords against one account -------------------------------------------------------


def test_password_flood_does_not_stop_annas_registered_phone(
    server_factory: Callable[..., Server],
) -> None:
    users = dict(USERS, anna="Linde-Garten-55")
    server = server_factory(users=users)
    with _client(server.port, OFFICE) as anna:
        assert _register(anna, "anna", users["anna"]) == 200
        stop = threading.Event()
        answers: list[int] = []

        def guess() -> None:
            sockets = [_client(server.port, OFFICE) for _ in range(20)]  # many source ports
            try:
                k = 0
                while not stop.is_set() and k < 400:
                    c = sockets[k % len(sockets)]
                    try:
                        _, final = c.authenticated_request(
                            "REGISTER", f"sip:{DOMAIN}", username="anna",
                            password=f"guess{k}", from_uri=f"sip:anna@{DOMAIN}",
                            to_uri=f"sip:anna@{DOMAIN}", timeout=2,
                        )  # fmt: skip
                        answers.append(final.status or 0)
                    except AssertionError:
                        answers.append(0)
                    k += 1
                    stop.wait(0.025)  # ~40 guesses/s: below the flood limit, a patient guesser
            finally:
                for c in sockets:
                    c.close()

        attacker = threading.Thread(target=guess, daemon=True)
        with LegitPhone(server.port, ip=OFFICE) as phone:
            attacker.start()
            wait_until(lambda: len(answers) >= 120, timeout=20, what="120 guesses answered")
            # anna's phone refreshes and calls during the attack.
            refresh_ms = []
            for _ in range(5):
                t0 = time.monotonic()
                assert _register(anna, "anna", users["anna"]) == 200
                refresh_ms.append((time.monotonic() - t0) * 1000)
            _, call = anna.authenticated_request(
                "INVITE", f"sip:carl@{DOMAIN}", username="anna", password=users["anna"],
                from_uri=f"sip:anna@{DOMAIN}", to_uri=f"sip:carl@{DOMAIN}",
            )  # fmt: skip
            stop.set()
            attacker.join(20)
        phone.report("password flood")
        print(f"anna's refreshes during the attack: {[round(x, 1) for x in refresh_ms]} ms")
        # The call got past authentication (carl does not exist: 404), not 403.
        assert call.status == 404, call.summary()
        assert answers.count(403) > len(answers) // 2, answers
        assert 200 not in answers
