"""The project installs without setuptools deprecation warnings (pip builds its metadata)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "AGPL-3.0-or-later"
    # PEP 639 license expressions need setuptools 77 or later
    assert "setuptools>=77" in project["build-system"]["requires"]


def test_editable_install_prints_no_license_deprecation() -> None:
    """What `pip install -e .` prints while it builds the metadata (dry run: nothing changes)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Would install heimbuero" in output
    assert "project.license" not in output
    assert "SetuptoolsDeprecationWarning" not in output
