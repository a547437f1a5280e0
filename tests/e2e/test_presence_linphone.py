"""End-to-end presence with a real Linphone client: liblinphone publishes "away" (PUBLISH,
RFC 3903) and a watcher subscribed to that user receives it in a NOTIFY.

linphonec has no command to set its own presence, so the client is `tools/linphone_publish.c`, a
small program against Debian's liblinphone-dev, compiled here into the test's tmp dir with gcc
and pkg-config (harness.build_linphone_tool). Like a missing peer program, a missing compiler or
liblinphone-dev fails the test with what to install, or skips it when
HEIMBUERO_ALLOW_MISSING_PEERS=1 (see tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import DOMAIN, USERS
from .harness import (
    HarnessError,
    Server,
    SipClient,
    _stop_process,
    build_linphone_tool,
    free_port,
    tail,
    wait_until,
)
from .test_presence import next_notify, subscribe

pytestmark = pytest.mark.e2e


class LinphonePublisher:
    """tools/linphone_publish as `user`: registers, publishes away, stays until stdin closes."""

    def __init__(self, binary: Path, workdir: Path, *, user: str, server: Server) -> None:
        self.dir = workdir / f"linphone-{user}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.out_path = self.dir / "out.log"
        self.user = user
        self.server = server
        self.port = free_port()
        self.cmd = [
            str(binary), "--dir", str(self.dir), "--local-port", str(self.port),
            "--server-port", str(server.port), "--domain", DOMAIN, "--user", user,
            "--password", USERS[user], "--timeout", "60",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        for var in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
            env[var] = str(self.dir)
        with self.out_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.dir, env=env, stdin=subprocess.PIPE, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def lines(self) -> list[str]:
        return self.out_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def wait_for(self, marker: str, timeout: float = 20) -> None:
        def seen() -> bool:
            lines = self.lines()
            errors = [line for line in lines if line.startswith("ERROR")]
            if errors or (self.proc is not None and self.proc.poll() is not None):
                if marker in lines:
                    return True
                raise HarnessError(
                    f"linphone_publish {self.user} failed before {marker}: {errors}\n"
                    + self.log_text()
                )
            return marker in lines

        try:
            wait_until(seen, timeout, interval=0.05, what=f"linphone_publish {marker}")
        except HarnessError as exc:
            raise HarnessError(f"{exc}\n{self.log_text()}") from None

    def close(self, timeout: float = 10) -> int:
        """Close stdin (the program un-REGISTERs and exits); its exit code."""
        assert self.proc is not None
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_process(self.proc, timeout=3)
            raise HarnessError(
                f"linphone_publish {self.user} did not exit after stdin closed\n" + self.log_text()
            ) from None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
            _stop_process(self.proc, timeout=5)

    def log_text(self) -> str:
        return (
            f"--- linphone_publish {self.user} output {self.out_path} ---\n"
            f"{tail(self.out_path, 4000)}\n"
            f"--- liblinphone log ---\n{tail(self.dir / 'linphone.log', 8000)}\n"
            + self.server.log_text()
        )


def test_linphone_publishes_away_and_watcher_receives_it(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    binary = build_linphone_tool("linphone_publish", tmp_path)
    server = server_factory(sip_options={"presence_min_interval": 0})
    with SipClient(server.port) as bob:
        ok = subscribe(bob, "bob", "alice", USERS["bob"])
        assert ok.status == 200, ok.summary()
        assert "<basic>closed</basic>" in next_notify(bob).body.decode()
        alice = LinphonePublisher(binary, tmp_path, user="alice", server=server)
        try:
            alice.start()
            alice.wait_for("REGISTERED")
            alice.wait_for("PUBLISHED")
            try:
                away = next_notify(bob, timeout=10, want=lambda m: b"<rpid:away/>" in m.body)
            except HarnessError as exc:
                raise HarnessError(f"{exc}\n{alice.log_text()}") from None
            text = away.body.decode()
            assert "<basic>open</basic>" in text, text
            assert f'entity="sip:alice@{DOMAIN}"' in text, text
            # stdin closed: the client un-PUBLISHes, un-REGISTERs, exits 0; bob sees alice closed
            assert alice.close() == 0, alice.log_text()
            lines = alice.lines()
            assert "UNPUBLISHED" in lines and "UNREGISTERED" in lines, alice.log_text()
            try:
                gone = next_notify(
                    bob, timeout=10, want=lambda m: b"<basic>closed</basic>" in m.body
                )
            except HarnessError as exc:
                raise HarnessError(f"{exc}\n{alice.log_text()}") from None
            assert b"<rpid:away/>" not in gone.body, gone.body.decode()
        finally:
            alice.stop()
