"""The import contracts of pyproject.toml ([tool.importlinter]): every import points down
(cli > server > web > services > office > store > domain; sip and net apart) and no cycles.

Runs import-linter on the package as it is, and on a copy with one upward import added, to
show the contract catches it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # this tree's heimbuero, not the installed one
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(ROOT / "heimbuero", root / "heimbuero",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_package_keeps_its_contracts() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the cycle this package had: the store reading the office's rules parser
        ("store/db.py", "from heimbuero.office import rules_doc", "layers"),
        ("domain/model.py", "from heimbuero.store import Store", "layers"),
        ("office/routing.py", "import heimbuero.services.calls", "layers"),
        ("sip/message.py", "from heimbuero.net import tls", "sip is sans-IO"),
        ("domain/model.py", "import heimbuero.sip.message", "domain is the leaf"),
    ],
)
def test_an_upward_import_breaks_the_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    root = _copy(tmp_path)
    path = root / "heimbuero" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = _lint(root)
    assert result.returncode != 0, result.stdout
    assert any(broken in ln and "BROKEN" in ln for ln in result.stdout.splitlines()), result.stdout


def test_a_cycle_between_siblings_breaks_the_contract(tmp_path: Path) -> None:
    root = _copy(tmp_path)  # office.routing is imported by office.rules_doc; close the loop
    path = root / "heimbuero" / "office" / "routing.py"
    path.write_text(path.read_text() + "\nfrom heimbuero.office import rules_doc  # noqa\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "no import cycles" in result.stdout and "BROKEN" in result.stdout, result.stdout
