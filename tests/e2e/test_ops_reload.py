"""SIGHUP applies what can change without a restart: the flood limits of `[sip]` (a source
over the new rate is dropped), a renewed SIP TLS certificate (new connections get it, a
certificate file that does not load keeps the old one), and `[mail]`."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import uuid
from pathlib import Path

import pytest

from heimbuero.net.tls import generate_self_signed

from .harness import LOCALHOST, Server, set_toml_option, wait_until

pytestmark = pytest.mark.e2e

DOMAIN = "office.heimbuero.test"


def _tls_fingerprint(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((LOCALHOST, port), timeout=5) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _options_answered(port: int, count: int) -> int:
    """Send `count` OPTIONS at once from one UDP socket; how many got an answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, 0))
        local = s.getsockname()[1]
        for i in range(count):
            branch = f"z9hG4bK{uuid.uuid4().hex}"
            msg = (
                f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {LOCALHOST}:{local};branch={branch};rport\r\n"
                f"From: <sip:probe@{DOMAIN}>;tag={i}\r\nTo: <sip:{DOMAIN}>\r\n"
                f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            s.sendto(msg.encode(), (LOCALHOST, port))
        s.settimeout(1.0)
        answered = 0
        try:
            while True:
                s.recv(65535)
                answered += 1
        except TimeoutError:
            return answered


def _lines_after(srv: Server, mark: int) -> list[str]:
    return srv.log_path.read_text(encoding="utf-8").splitlines()[mark:]


def test_sighup_applies_flood_limits_and_a_renewed_certificate(tmp_path: Path) -> None:
    srv = Server(tmp_path, domain=DOMAIN, users={}, transports=("udp", "tcp", "tls"))
    srv.prepare()
    cfg = srv.config_path
    set_toml_option(cfg, "sip", "flood_exempt", [])
    with srv:
        pid = srv.pid
        assert pid is not None and srv.tls_port is not None
        before = _tls_fingerprint(srv.tls_port)
        assert _options_answered(srv.port, 40) == 40  # the default rate lets 40 at once pass

        def reload() -> list[str]:
            mark = len(srv.log_path.read_text(encoding="utf-8").splitlines())
            os.kill(pid, signal.SIGHUP)
            return wait_until(
                lambda: [x for x in _lines_after(srv, mark) if "reload: " in x] or None,
                10, what="the reload",
            )  # fmt: skip

        # a renewed certificate at the same paths, and much lower flood limits
        key = srv.data_dir / "tls" / "sip.key"
        renewed = generate_self_signed(srv.tls_cert, key, [DOMAIN, LOCALHOST])
        set_toml_option(cfg, "sip", "flood_rate", 2)
        set_toml_option(cfg, "sip", "flood_burst", 5)
        set_toml_option(cfg, "sip", "ban_time", 2)
        set_toml_option(cfg, "mail", "host", "127.0.0.1")
        lines = reload()
        applied = next(x for x in lines if "reload: config.toml reread" in x)
        for what in ("sip limits", "tls", "mail"):
            assert what in applied, lines
        after = _tls_fingerprint(srv.tls_port)
        assert after != before
        assert after.upper() == renewed.replace(":", "").upper().removeprefix("SHA256")[-64:]
        answered = _options_answered(srv.port, 40)
        assert 1 <= answered <= 10, answered  # the burst of 5 (and a little rate), not 40

        # a certificate file that does not load: an error line, the renewed one stays
        srv.tls_cert.write_text("not a certificate\n")
        lines = reload()
        assert any("the old one stays" in x for x in lines), lines
        assert _tls_fingerprint(srv.tls_port) == after
