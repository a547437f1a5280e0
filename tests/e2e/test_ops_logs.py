"""The server's log as an operator configures it: JSON lines with levels per area and short
numbers from config.toml; the shipped fail2ban filter (checked by fail2ban's own
fail2ban-regex) finds the wrong password in it; SIGHUP switches to logfmt and then text
without a restart, and the registration made before stays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from .harness import REPO_ROOT, Server, SipClient, SipMessage, set_toml_option, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.peers("fail2ban-regex")]

DOMAIN = "office.heimbuero.test"
ADMIN, ADMIN_PW = "alice", "Lavendel-Feld-71"
FILTER = REPO_ROOT / "docs" / "fail2ban" / "heimbuero.conf"


def _register(phone: SipClient, user: str, password: str, contact_user: str) -> SipMessage:
    aor = f"sip:{user}@{DOMAIN}"
    _, final = phone.authenticated_request(
        "REGISTER", f"sip:{DOMAIN}", username=user, password=password, from_uri=aor, to_uri=aor,
        headers=[("Contact", f"<sip:{contact_user}@127.0.0.1:{phone.local_port}>")],
    )  # fmt: skip
    return final


def _fail2ban(lines: list[str], fmt: str, tmp_path: Path) -> str:
    log = tmp_path / f"{fmt}.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = subprocess.run(
        ["fail2ban-regex", str(log), f"{FILTER}[logformat={fmt}]"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def _server_lines(srv: Server, start: int) -> list[str]:
    """Lines the server logged (not the harness's and CLI notes) after line `start`."""
    text = srv.log_path.read_text(encoding="utf-8").splitlines()[start:]
    return [x for x in text if x and not x.startswith(("===", "heimbuero: ", "$ ", "[exit"))]


def test_json_logs_fail2ban_and_reload_on_sighup(tmp_path: Path) -> None:
    srv = Server(tmp_path, domain=DOMAIN, users={}, http=True)
    srv.prepare()
    srv.add_user(ADMIN, ADMIN_PW, role="admin")
    cfg = srv.config_path
    set_toml_option(cfg, "server", "log_format", "json")
    set_toml_option(cfg, "server", "log_numbers", "short")
    set_toml_option(cfg, "server", "log_level", "warning,registrar=info")
    with srv, SipClient(srv.port) as phone:
        start = len(srv.log_path.read_text(encoding="utf-8").splitlines())
        assert _register(phone, ADMIN, ADMIN_PW, "+4930123456").status == 200
        with SipClient(srv.port) as guesser:
            assert _register(guesser, ADMIN, "Falsch-geraten-1", "x").status in (401, 403)

        def json_lines() -> list[dict[str, str]] | None:
            rows = [json.loads(x) for x in _server_lines(srv, start)]
            ok = any(r["logger"] == "heimbuero.security" for r in rows)
            return rows if ok and any(r["logger"] == "heimbuero.registrar" for r in rows) else None

        rows = wait_until(json_lines, 10, what="the registration and the security event")
        reg = next(r for r in rows if r["logger"] == "heimbuero.registrar")
        assert reg["level"] == "INFO" and "contact=sip:+4930…56@127.0.0.1" in reg["msg"], reg
        assert "+4930123456" not in srv.log_path.read_text(encoding="utf-8")
        # warning for everything but the registrar: no INFO line of another area
        assert all(r["level"] != "INFO" or r["logger"] == "heimbuero.registrar" for r in rows)
        out = _fail2ban([json.dumps(r) for r in rows], "json", tmp_path)
        assert "1 matched" in out, out

        pid = srv.pid
        assert pid is not None
        for fmt in ("logfmt", "text"):
            set_toml_option(cfg, "server", "log_format", fmt)
            set_toml_option(cfg, "server", "log_level", "info")
            mark = len(srv.log_path.read_text(encoding="utf-8").splitlines())
            os.kill(pid, signal.SIGHUP)

            def reloaded(mark: int = mark) -> bool:
                return any("reload: config.toml reread" in x for x in _server_lines(srv, mark))

            def security(mark: int = mark) -> list[str] | None:
                lines = _server_lines(srv, mark)
                return lines if any("SECURITY" in x for x in lines) else None

            wait_until(reloaded, 10, what=f"the reload to {fmt}")
            with SipClient(srv.port) as guesser:
                assert _register(guesser, ADMIN, "Falsch-geraten-2", "x").status in (401, 403)
            lines = wait_until(security, 10, what="the security event")
            if fmt == "logfmt":
                assert all(x.startswith("time=") for x in lines), lines
            else:
                assert all(x[:4].isdigit() and " heimbuero" in x for x in lines), lines
            out = _fail2ban(lines, fmt, tmp_path)
            assert "1 matched" in out, out
        # nothing was restarted: the same process, the registration still there
        assert srv.alive() and srv.pid == pid
        regs = httpx.get(f"{srv.http_url}/api/registrations", auth=(ADMIN, ADMIN_PW), timeout=10)
        assert [r["user"] for r in regs.json()["registrations"]] == [ADMIN]
