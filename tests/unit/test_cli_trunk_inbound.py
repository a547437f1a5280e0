"""`heimbuero trunk set NAME --inbound-auth …`: how a carrier's calls are recognised, stored as
the trunk's `inbound` field (digest credentials only as hashes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from heimbuero.sip.auth import ha1
from heimbuero.store import Store

ERR = "heimbuero: error: "


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEIMBUERO_DATA"}
    return subprocess.run([sys.executable, "-m", "heimbuero", *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


def test_trunk_inbound_auth_modes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = ["--data", str(data)]
    assert run("init", *d, "--domain", "office.example").returncode == 0
    added = run("trunk", "add", "carrier", "--address", "192.0.2.9:5060", *d)
    assert added.returncode == 0, added.stderr
    assert "inbound calls by address" in added.stdout
    proc = run("trunk", "set", "carrier", "--inbound-auth", "address-tcp", *d)
    assert proc.returncode == 0 and "inbound calls by address-tcp" in proc.stdout
    secret = "Carrier-Secret-2026"
    proc = run("trunk", "set", "carrier", "--inbound-auth", "digest", "--inbound-username",
               "sbc1", "--inbound-password", secret, *d)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "inbound calls digest as sbc1" in proc.stdout
    listed = run("trunk", "list", *d).stdout.splitlines()
    assert listed[0].split()[-1] == "INBOUND" and listed[1].split()[-1] == "digest"
    assert secret not in run("trunk", "list", *d).stdout
    store = Store(f"sqlite:///{data / 'heimbuero.db'}")
    try:
        trunk = store.get_trunk("carrier")
    finally:
        store.close()
    assert trunk is not None
    assert trunk.inbound.auth == "digest" and trunk.inbound.username == "sbc1"
    assert trunk.inbound.ha1_md5 == ha1("MD5", "sbc1", "office.example", secret)
    assert trunk.inbound.ha1_sha256 == ha1("SHA-256", "sbc1", "office.example", secret)
    for bad in (
        ["--inbound-auth", "password"],
        ["--inbound-auth", "digest", "--inbound-username", "sbc1"],
        ["--inbound-auth", "digest", "--inbound-username", "sbc1", "--inbound-password", "short"],
        ["--inbound-auth", "address", "--inbound-username", "sbc1"],
        ["--inbound-username", "sbc1"],
    ):
        proc = run("trunk", "set", "carrier", *bad, *d)
        assert proc.returncode == 1 and proc.stderr.startswith(ERR), (bad, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1
