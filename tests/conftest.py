"""Test-suite wide settings: markers, and the rule for missing SIP peers.

End-to-end tests (`@pytest.mark.e2e`) drive the real server with real SIP peers. A test names
the programs it needs with `@pytest.mark.peers("sipp", "baresip")`. When one of them is not on
PATH the test FAILS with a message saying what to install; set HEIMBUERO_ALLOW_MISSING_PEERS=1
to skip such tests instead (e.g. on a machine without the Debian packages).
"""

from __future__ import annotations

import os
import shutil

import pytest

# Debian package that provides each peer program
PEER_PACKAGES = {
    "sipp": "sip-tester",
    "baresip": "baresip",
    "kamailio": "kamailio",
    "linphonec": "linphone-cli",
    "rtpengine": "rtpengine-daemon",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test against the real server and real SIP peers"
    )
    config.addinivalue_line(
        "markers",
        "peers(*programs): external programs (SIP peers) an end-to-end test needs on PATH",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    needed: list[str] = []
    for mark in item.iter_markers(name="peers"):
        needed.extend(mark.args)
    missing = [p for p in needed if shutil.which(p) is None]
    if not missing:
        return
    packages = " ".join(sorted({PEER_PACKAGES.get(p, p) for p in missing}))
    message = (
        f"missing SIP peer program(s): {', '.join(missing)} - install with "
        f"`apt-get install {packages}` (or run scripts/test, which does)"
    )
    if os.environ.get("HEIMBUERO_ALLOW_MISSING_PEERS") == "1":
        pytest.skip(f"{message}; skipped as HEIMBUERO_ALLOW_MISSING_PEERS=1")
    pytest.fail(
        f"{message}; or set HEIMBUERO_ALLOW_MISSING_PEERS=1 to skip such tests", pytrace=False
    )


@pytest.fixture(scope="session")
def pg_cluster():  # type: ignore[no-untyped-def]
    """One temporary PostgreSQL cluster for the test session (see tests/pgcluster.py)."""
    from pgcluster import PgCluster, available

    if not available():
        pytest.fail(
            "PostgreSQL 15 is not installed - `apt-get install postgresql` "
            "(or run scripts/test, which does)",
            pytrace=False,
        )
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """A fresh empty database: the SQLite file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'heimbuero.db'}"
    return request.getfixturevalue("pg_cluster").new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def server_database_url(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """For `Server(..., database_url=...)`: None (the SQLite file) or a new PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_cluster").new_database()
