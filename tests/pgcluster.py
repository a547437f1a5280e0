"""A throwaway PostgreSQL cluster for the tests (Debian's postgresql binaries, the newest
major version installed under /usr/lib/postgresql).

`PgCluster.start()` runs `initdb` as an unprivileged user (the system user `heimbuero-test`,
created when the tests run as root), listens on a random port of 127.0.0.1 and on a unix
socket in a temporary directory, and trusts local connections. `new_database()` gives each
test a database of its own. `stop()` shuts the cluster down and removes its directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def _newest_bin() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = Path(os.environ["HEIMBUERO_PG_BIN"]) if "HEIMBUERO_PG_BIN" in os.environ else _newest_bin()
PG_USER = "heimbuero-test"


def available() -> bool:
    return (PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
        )
    return ["runuser", "-u", PG_USER, "--", *argv]


class PgCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="heimbuero-pg-"))
        self.port = _free_port()
        self.user = PG_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def start(self, timeout: float = 60.0, durable: bool = False) -> None:
        """`durable`: fsync on, as in production (the bench); the tests run without it."""
        self.dir.chmod(0o755)
        if os.geteuid() == 0:
            _as_user([])  # creates the user when missing
            shutil.chown(self.dir, PG_USER)
        data = self.dir / "data"
        subprocess.run(
            _as_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", self.user,
                      "--auth=trust", "-E", "UTF8", "--no-sync"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir}"
            " -c max_connections=200" + ("" if durable else " -c fsync=off")
        )
        subprocess.run(
            _as_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts,
                      "-l", str(self.dir / "log"), "-w", "-t", str(int(timeout)), "start"]),
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str) -> str:
        """Over the unix socket: reachable from a network namespace a test creates, where
        127.0.0.1 is that namespace's own loopback."""
        return f"postgresql+psycopg://{self.user}@/{database}?host={self.dir}&port={self.port}"

    def new_database(self, *, via_socket: bool = False, template: str | None = None) -> str:
        """Create an empty database (or a copy of `template`); returns its SQLAlchemy URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        conninfo = f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            copy = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.socket_url(name) if via_socket else self.url(name)

    def stop(self) -> None:
        subprocess.run(
            _as_user([str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate",
                      "stop"]),
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)
