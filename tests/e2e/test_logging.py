"""End-to-end: what `heimbuero serve` logs about registrations, and its log level.

The server runs as in production (`heimbuero serve`, stderr into the server log); a
hand-built REGISTER with digest credentials registers and unregisters one phone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import DOMAIN, USERS
from .harness import Server, SipClient, set_toml_option, wait_until

pytestmark = pytest.mark.e2e


def register(server: Server, client: SipClient, expires: int) -> int:
    """REGISTER alice's contact at `client` with `expires`; the final status."""
    aor = f"sip:alice@{server.domain}"
    _, final = client.authenticated_request(
        "REGISTER",
        f"sip:{server.domain}",
        username="alice",
        password=USERS["alice"],
        from_uri=aor,
        to_uri=aor,
        headers=[
            ("Contact", f"<sip:alice@127.0.0.1:{client.local_port}>"),
            ("Expires", str(expires)),
        ],
    )
    return final.status or 0


def log_lines(server: Server, pattern: str) -> list[str]:
    return re.findall(pattern, server.log_path.read_text(encoding="utf-8", errors="replace"))


def test_registration_changes_are_logged_one_line_each(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory()
    with SipClient(server.port) as phone:
        contact = f"sip:alice@127.0.0.1:{phone.local_port}"
        source = f"udp:127.0.0.1:{phone.local_port}"
        assert register(server, phone, 600) == 200
        registered = (
            rf"INFO heimbuero\.registrar: registration registered user=alice "
            rf"contact={re.escape(contact)} source={re.escape(source)} expires=(\d+)\n"
        )
        (expires,) = wait_until(
            lambda: log_lines(server, registered), 5, what="the registration's log line"
        )
        assert 598 <= int(expires) <= 600, expires
        assert register(server, phone, 0) == 200
        unregistered = (
            rf"registration unregistered user=alice contact={re.escape(contact)} "
            rf"source={re.escape(source)} expires=0\n"
        )
        wait_until(lambda: log_lines(server, unregistered), 5, what="the removal's log line")
    assert len(log_lines(server, r"registration \w+ user=alice")) == 2, server.log_text()
    assert "Authorization" not in server.log_path.read_text(encoding="utf-8")


class _QuietServer(Server):
    """`heimbuero serve --log-level warning`."""

    def serve_command(self) -> list[str]:
        return [*super().serve_command(), "--log-level", "warning"]


@pytest.mark.parametrize("how", ["config", "flag"])
def test_log_level_warning_leaves_registrations_out(tmp_path: Path, how: str) -> None:
    kind = _QuietServer if how == "flag" else Server
    server = kind(tmp_path / "server", domain=DOMAIN, users={"alice": USERS["alice"]})
    server.prepare()
    if how == "config":
        set_toml_option(server.config_path, "server", "log_level", "warning")
    with server, SipClient(server.port) as phone:
        assert register(server, phone, 600) == 200
        assert register(server, phone, 0) == 200
    log = server.log_path.read_text(encoding="utf-8")
    assert "heimbuero: serving" in log, log
    assert "registration" not in log and " INFO " not in log, log
