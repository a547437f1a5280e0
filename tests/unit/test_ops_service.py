"""The systemd unit: hardened, the shipped copy is what install-service writes with the
default paths, and systemd itself finds nothing wrong with it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from heimbuero import cli
from heimbuero.ops.service import DEFAULT_DATA, DEFAULT_EXEC, render_unit

ROOT = Path(__file__).resolve().parents[2]


def _settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_shipped_unit_is_the_rendered_one_and_hardened() -> None:
    shipped = (ROOT / "docs" / "systemd" / "heimbuero.service").read_text(encoding="utf-8")
    assert shipped == render_unit(DEFAULT_DATA, DEFAULT_EXEC, "heimbuero")
    s = _settings(shipped)
    assert s["User"] == ["heimbuero"] and s["ProtectSystem"] == ["strict"]
    assert s["ReadWritePaths"] == ["/var/lib/heimbuero"]
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectHome"] == ["yes"]
    assert s["ExecStart"] == ["/opt/heimbuero/.venv/bin/heimbuero serve --data /var/lib/heimbuero"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_install_service_writes_a_unit_systemd_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    code = cli.main(["install-service", "--data", str(data), "--unit-dir", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    unit = tmp_path / "heimbuero.service"
    assert out.startswith(f"wrote {unit}\n")
    assert "systemctl enable --now heimbuero.service" in out
    s = _settings(unit.read_text(encoding="utf-8"))
    assert s["ReadWritePaths"] == [str(data)]
    program = s["ExecStart"][0].split()[0]
    assert Path(program).is_file()
    verify = shutil.which("systemd-analyze")
    if verify is None:
        pytest.skip("systemd-analyze is not installed")
    res = subprocess.run([verify, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_install_service_refuses_bad_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["--user", "Root Kit"], ["--unit-dir", str(tmp_path / "missing")]):
        code = cli.main(["install-service", "--data", str(tmp_path / "d"), *args])
        assert code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("heimbuero: error: "), err
    assert not (tmp_path / "heimbuero.service").exists()
