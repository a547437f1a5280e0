"""End-to-end messenger with real Linphone clients (issue 5), through the real `heimbuero serve`:

- text both ways between two linphonec (linphone-cli): carol -> dave, dave -> carol;
- a file from one Linphone to another over the server's HTTP file-transfer service (/ft, digest
  with the SIP credentials): the sender is tools/linphone_chat.c (linphonec cannot send files),
  a small liblinphone program compiled here with gcc + pkg-config; the receiver is a linphonec
  that downloads the file by itself; the received file must be byte-identical (SHA-256);
- the same over HTTPS (`[http] tls_cert`/`tls_key`, a self-signed certificate for 127.0.0.1 made
  here): both Linphones trust exactly that certificate as their root CA (linphone_chat
  `--root-ca`, linphonec `[sip] root_ca`), certificate verification stays on;
- IMDN (RFC 5438) with real clients: linphone_chat sends a text in CPIM asking for delivery
  notifications, linphonec's delivery report (a deflate-compressed message/imdn+xml body) comes
  back through heimbuero (the sender's message reaching DeliveredToUser) and into heimbuero's
  history (imdn_state).

Missing programs fail the test with what to install, or skip it when
HEIMBUERO_ALLOW_MISSING_PEERS=1 (tests/conftest.py; the compiler and liblinphone-dev likewise,
see harness.build_linphone_tool).
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
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
    self_signed_cert,
    set_toml_option,
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
# tools/linphone_chat sends (a file or a text), linphonec receives


def run_linphone_chat(
    binary: Path,
    workdir: Path,
    server: Server,
    *,
    user: str,
    to: str,
    file: Path | None = None,
    content_type: str | None = None,
    ft_url: str | None = None,
    text: str | None = None,
    root_ca: Path | None = None,
    imdn: bool = False,
    timeout: float = 60,
) -> tuple[int, list[str], Path]:
    """Run tools/linphone_chat as `user` sending `file` (uploaded to `ft_url`, default the
    server's /ft over HTTP) or `text` to `to`; (exit code, stdout lines, its dir)."""
    run_dir = workdir / f"linphone_chat-{user}"
    run_dir.mkdir(parents=True, exist_ok=True)
    out_path = run_dir / "out.log"
    env = dict(os.environ)
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        env[var] = str(run_dir)
    cmd = [
        str(binary), "--dir", str(run_dir), "--local-port", str(free_port()),
        "--server-port", str(server.port), "--domain", server.domain, "--user", user,
        "--password", server.users[user], "--to", to, "--timeout", str(int(timeout)),
    ]  # fmt: skip
    if file is not None:
        cmd += ["--ft-url", ft_url or f"{server.http_url}/ft", "--file", str(file)]
        cmd += ["--content-type", content_type or "application/octet-stream"]
    if text is not None:
        cmd += ["--text", text]
    if root_ca is not None:
        cmd += ["--root-ca", str(root_ca)]
    if imdn:
        cmd.append("--imdn")
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


def chat_report(code: int, lines: list[str], chat_dir: Path, *others: Any) -> str:
    """linphone_chat's steps and log, then the log_text() of each of `others`."""
    steps = [
        ln for ln in lines if re.match(r"(REGISTERED|IMDN-ID|STATE|SENT|UNREGISTERED|ERROR)\b", ln)
    ]
    return "\n".join(
        [
            f"--- linphone_chat (exit {code}), its steps ---",
            *steps,
            f"--- liblinphone log ---\n{tail(chat_dir / 'linphone.log', 6000)}",
            *(o.log_text() for o in others),
        ]
    )


def chat_states(lines: list[str]) -> list[str]:
    """The chat-message states linphone_chat printed, without the LinphoneChatMessageState."""
    return [
        ln.split()[1].removeprefix("LinphoneChatMessageState")
        for ln in lines
        if ln.startswith("STATE ")
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def send_file_and_check(
    server: Server, tmp_path: Path, *, ft_url: str, root_ca: Path | None = None
) -> None:
    """linphone_chat (carol) uploads a 300 kB file to `ft_url` and sends it to dave, a
    linphonec that downloads it by itself; the copy must be byte-identical. `root_ca`: the
    certificate both trust for HTTPS."""
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
        file_transfer_url=ft_url,
        auto_download_max_size=0,  # 0: download every incoming file, whatever its size
        # liblinphone 5.1 reads [sip] root_ca at start into the SIP stack and the HTTP client
        extra_rc={"sip": {"root_ca": root_ca}} if root_ca else None,
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
            ft_url=ft_url,
            root_ca=root_ca,
        )
        report = chat_report(code, lines, chat_dir, dave, server)
        assert code == 0 and "SENT" in lines, report
        states = chat_states(lines)
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


def test_file_from_linphone_to_linphonec_arrives_byte_identical(
    msg_server: Server, tmp_path: Path
) -> None:
    send_file_and_check(msg_server, tmp_path, ft_url=f"{msg_server.http_url}/ft")


def test_file_over_https_with_a_trusted_self_signed_certificate(tmp_path: Path) -> None:
    """The issue's "upload over HTTPS with the SIP credentials": heimbuero serves HTTP only over
    TLS with a certificate made here for 127.0.0.1; both Linphones get exactly that certificate
    as their root CA and keep verifying (no verify_server_certs=0)."""
    cert, key = self_signed_cert(tmp_path / "tls")
    server = messaging_server(
        tmp_path / "server", domain=DOMAIN, users=USERS, messages={"delivery_timeout": 5}
    )
    set_toml_option(server.config_path, "http", "tls_cert", str(cert))
    set_toml_option(server.config_path, "http", "tls_key", str(key))
    with server:
        assert server.http_port is not None
        base = f"https://127.0.0.1:{server.http_port}"
        trust = ssl.create_default_context(cafile=str(cert))

        def https_up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", verify=trust, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        # SIP answering first does not mean HTTPS listens yet (uvicorn loads the certificate)
        wait_until(https_up, 15, interval=0.1, what=f"{base}/healthz")
        # the port serves no plain HTTP: the upload and dave's download were both over TLS
        send_file_and_check(server, tmp_path, ft_url=f"{base}/ft", root_ca=cert)


# --------------------------------------------------------------------------------------------
# IMDN (RFC 5438) between real clients: the delivery report comes back through heimbuero


# What the peers need (liblinphone 5.1.65), found with E2E_LINPHONEC_DEBUG=6:
# - the sender asks for reports only in CPIM: linphone_chat --imdn turns on the account's "CPIM
#   in basic chat rooms" (there is no linphonerc key for it in 5.1, so linphonec cannot);
# - the receiver sends its report only while liblinphone thinks the network is up: with the
#   harness's `auto_net_state_mon=0` linphonec registers (register_only_when_network_is_up=0)
#   but Imdn::send() returns at once, silently; `auto_net_state_mon=1` fixes that;
# - linphonec's report is a bare message/imdn+xml (its basic chat room has no CPIM) sent with
#   `Content-Encoding: deflate` ("Body has been compressed: 258->187"), whatever
#   `[sip] handle_content_encoding` says.
def test_imdn_delivery_report_from_linphonec_reaches_the_sender_and_the_history(
    msg_server: Server, tmp_path: Path
) -> None:
    server = msg_server
    binary = build_linphone_tool("linphone_chat", tmp_path)
    text = "Diktat Meier ist getippt, bitte kurz bestaetigen"
    with Linphonec(
        tmp_path,
        user="dave",
        password=USERS["dave"],
        server=server,
        # im_notif_policy: all notifications sent and received (5.1's default, said here);
        # auto_net_state_mon: see above, else no report is ever sent
        extra_rc={"sip": {"im_notif_policy": "all", "auto_net_state_mon": 1}},
    ) as dave:
        dave.wait_registered()
        code, lines, chat_dir = run_linphone_chat(
            binary, tmp_path, server, user="carol", to="dave", text=text, imdn=True, timeout=15
        )
        report = chat_report(code, lines, chat_dir, dave, server)
        # this much works (a failure here is a HarnessError, not the expected failure)
        dave.wait_output(
            rf"Message received from sip:carol@{re.escape(DOMAIN)}[^:]*: {re.escape(text)}$"
        )
        states = chat_states(lines)
        imdn_ids = [ln.split(maxsplit=1)[1] for ln in lines if ln.startswith("IMDN-ID ")]
        if "Delivered" not in states or not imdn_ids or not imdn_ids[0]:
            raise HarnessError(f"the text was not sent in CPIM with an imdn.Message-ID\n{report}")
        # Delivered: the MESSAGE's 200; DeliveredToUser: dave's IMDN report came back
        assert code == 0 and "SENT" in lines, report
        assert "DeliveredToUser" in states, report
        assert states.index("Delivered") < states.index("DeliveredToUser"), report

    # heimbuero folded the report into the message it concerns
    def reported() -> dict[str, Any] | None:
        r = httpx.get(
            f"{server.http_url}/api/conversations/dave/messages",
            auth=("carol", USERS["carol"]),
            timeout=10,
        )
        r.raise_for_status()
        for m in r.json():
            if m["sender"] == "carol" and m["text"] == text and m["imdn_state"]:
                return m
        return None

    try:
        message = wait_until(reported, 10, interval=0.2, what="imdn_state in carol's history")
    except HarnessError as exc:
        raise AssertionError(f"{exc}\n{report}") from None
    assert message["imdn_state"] in ("delivered", "displayed"), message
    assert message["state"] == "delivered", message
