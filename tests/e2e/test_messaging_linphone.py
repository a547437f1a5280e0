"""End-to-end messenger with real Linphone clients (issue 5), through the real `heimbuero serve`:

- text both ways between two linphonec (linphone-cli): carol -> dave, dave -> carol;
- a file from one Linphone to another over the server's HTTP file-transfer service (/ft, digest
  with the SIP credentials): the sender is tools/linphone_chat.c (linphonec cannot send files),
  a small liblinphone program compiled here with gcc + pkg-config; the receiver is a linphonec
  that downloads the file by itself; the received file must be byte-identical (SHA-256).

Missing programs fail the test with what to install, or skip it when
HEIMBUERO_ALLOW_MISSING_PEERS=1 (tests/conftest.py; the compiler and liblinphone-dev likewise,
see harness.build_linphone_tool).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DOMAIN
from .harness import (
    HarnessError,
    Linphonec,
    Server,
    _stop_process,
    build_linphone_tool,
    free_port,
    messaging_server,
    tail,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.peers("linphonec")]

# carol and dave are staff (agents): they may message each other
USERS = {
    "carol": "Tannen-Zapfen-55",
    "dave": "Moos-Polster-66",
}


@pytest.fixture
def msg_server(tmp_path: Path) -> Iterator[Server]:
    with messaging_server(
        tmp_path / "server", domain=DOMAIN, users=USERS, messages={"delivery_timeout": 5}
    ) as srv:
        yield srv


def test_linphonec_text_both_ways(msg_server: Server, tmp_path: Path) -> None:
    server = msg_server
    with (
        Linphonec(tmp_path, user="carol", password=USERS["carol"], server=server) as carol,
        Linphonec(tmp_path, user="dave", password=USERS["dave"], server=server) as dave,
    ):
        carol.wait_registered()
        dave.wait_registered()
        carol.command(f"chat sip:dave@{DOMAIN} Guten Morgen, die Akte Meier liegt bereit")
        dave.wait_output(
            rf"Message received from sip:carol@{re.escape(DOMAIN)}[^:]*: "
            r"Guten Morgen, die Akte Meier liegt bereit$"
        )
        dave.command(f"chat sip:carol@{DOMAIN} Danke, schaue ich mir an")
        carol.wait_output(
            rf"Message received from sip:dave@{re.escape(DOMAIN)}[^:]*: "
            r"Danke, schaue ich mir an$"
        )
    # each text arrived once
    assert carol.output().count("Message received from") == 1, carol.log_text()
    assert dave.output().count("Message received from") == 1, dave.log_text()


# --------------------------------------------------------------------------------------------
# files: tools/linphone_chat.c sends, linphonec receives and downloads


def run_linphone_chat(
    binary: Path,
    workdir: Path,
    server: Server,
    *,
    user: str,
    to: str,
    file: Path,
    content_type: str,
    timeout: float = 60,
) -> tuple[int, list[str], Path]:
    """Run tools/linphone_chat as `user` sending `file` to `to`; (exit code, stdout lines, dir)."""
    run_dir = workdir / f"linphone_chat-{user}"
    run_dir.mkdir(parents=True, exist_ok=True)
    out_path = run_dir / "out.log"
    env = dict(os.environ)
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        env[var] = str(run_dir)
    cmd = [
        str(binary), "--dir", str(run_dir), "--local-port", str(free_port()),
        "--server-port", str(server.port), "--domain", server.domain, "--user", user,
        "--password", server.users[user], "--ft-url", f"{server.http_url}/ft", "--to", to,
        "--file", str(file), "--content-type", content_type, "--timeout", str(int(timeout)),
    ]  # fmt: skip
    with out_path.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            code = proc.wait(timeout=timeout + 15)
        except subprocess.TimeoutExpired:
            code = _stop_process(proc, timeout=5)
            raise HarnessError(
                f"linphone_chat did not end within {timeout + 15:.0f} s\n{tail(out_path)}"
            ) from None
        finally:
            _stop_process(proc, timeout=5)
    lines = out_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return code, lines, run_dir


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_from_linphone_to_linphonec_arrives_byte_identical(
    msg_server: Server, tmp_path: Path
) -> None:
    server = msg_server
    binary = build_linphone_tool("linphone_chat", tmp_path)
    source_dir = tmp_path / "outbox"
    source_dir.mkdir()
    original = source_dir / "Schriftsatz-Meier.pdf"
    original.write_bytes(os.urandom(300_000) + b"%%EOF\n")  # several HTTP chunks, not text
    want = sha256(original)
    with Linphonec(
        tmp_path,
        user="dave",
        password=USERS["dave"],
        server=server,
        file_transfer_url=f"{server.http_url}/ft",
        auto_download_max_size=0,  # 0: download every incoming file, whatever its size
    ) as dave:
        dave.wait_registered()
        code, lines, chat_dir = run_linphone_chat(
            binary,
            tmp_path,
            server,
            user="carol",
            to="dave",
            file=original,
            content_type="application/pdf",
        )
        steps = [
            ln for ln in lines if re.match(r"(REGISTERED|STATE|SENT|UNREGISTERED|ERROR)\b", ln)
        ]
        report = (
            f"--- linphone_chat carol (exit {code}), its steps ---\n"
            + "\n".join(steps)
            + f"\n--- liblinphone log ---\n{tail(chat_dir / 'linphone.log', 6000)}\n"
            + dave.log_text()
            + "\n"
            + server.log_text()
        )
        assert code == 0 and "SENT" in lines, report
        states = [
            ln.split()[1].removeprefix("LinphoneChatMessageState")
            for ln in lines
            if ln.startswith("STATE ")
        ]
        assert "FileTransferDone" in states and "Delivered" in states, report

        # linphonec downloads by itself into its data directory
        def received() -> Path | None:
            for path in dave.download_dir.glob(original.name):
                if path.is_file() and path.stat().st_size == original.stat().st_size:
                    return path
            return None

        try:
            got = wait_until(received, 30, interval=0.2, what="the file in dave's data dir")
        except HarnessError as exc:
            found = sorted(str(p.relative_to(dave.dir)) for p in dave.dir.rglob("*") if p.is_file())
            raise HarnessError(f"{exc}; files there: {found}\n{report}") from None
        # the download is written in chunks: wait until its content is complete and equal
        try:
            wait_until(lambda: sha256(got) == want, 10, interval=0.2, what="identical content")
        except HarnessError as exc:
            raise HarnessError(f"{exc}: {got} differs from {original}\n{report}") from None
    assert got.read_bytes() == original.read_bytes()
