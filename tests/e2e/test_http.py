"""The HTTP service of `heimbuero serve --http`: liveness, login, roles, live registrations."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from .conftest import USERS
from .harness import Server, SipClient, wait_until

pytestmark = pytest.mark.e2e


def test_status_needs_staff_login_and_shows_registrations(
    server_factory: Callable[..., Server],
) -> None:
    srv = server_factory(http=True)
    srv.cli(
        "user",
        "add",
        "kunde",
        "--password",
        "Tischlerei-2026",
        "--role",
        "client",
        "--data",
        str(srv.data_dir),
    )
    base = srv.http_url
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        anonymous = http.get("/api/status")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        assert http.get("/api/status", auth=("alice", "wrong-password-1")).status_code == 401
        assert http.get("/api/status", auth=("nobody", "wrong-password-1")).status_code == 401
        assert http.get("/api/status", auth=("kunde", "Tischlerei-2026")).status_code == 403

        status = http.get("/api/status", auth=("alice", USERS["alice"]))
        assert status.status_code == 200
        assert status.json()["domain"] == srv.domain
        assert status.json()["registrations"] == 0

        with SipClient(srv.port) as phone:
            aor = f"sip:bob@{srv.domain}"
            _, ok = phone.authenticated_request(
                "REGISTER", f"sip:{srv.domain}", username="bob", password=USERS["bob"],
                from_uri=aor, to_uri=aor,
                headers=[("Contact", f"<sip:bob@127.0.0.1:{phone.local_port}>")],
            )  # fmt: skip
            assert ok.status == 200

        def bob_listed() -> bool:
            rows = http.get("/api/registrations", auth=("alice", USERS["alice"])).json()[
                "registrations"
            ]
            return any(r["user"] == "bob" for r in rows)

        wait_until(bob_listed, 10, what="bob's registration in /api/registrations")
        # a client sees its own devices only
        own = http.get("/api/registrations", auth=("kunde", "Tischlerei-2026")).json()
        assert own == {"registrations": []}


def test_http_port_in_use_is_one_clear_error(server_factory: Callable[..., Server]) -> None:
    first = server_factory(http=True)
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "heimbuero", "serve", "--data", str(first.data_dir),
         "--sip", "udp:127.0.0.1:1", "--http", f"127.0.0.1:{first.http_port}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("heimbuero: error: ")
    assert "Traceback" not in res.stderr
