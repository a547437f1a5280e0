"""`heimbuero rules import` refuses an oversize document before reading it: one error line,
nothing changed (a real subprocess on a temporary demo data directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from heimbuero.office.rules_doc import MAX_DOCUMENT_BYTES

ERR = "heimbuero: error: "


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HEIMBUERO_DATA"}
    proc = subprocess.run(
        [sys.executable, "-m", "heimbuero", *args],
        capture_output=True,
        input=stdin,
        env=env,
        timeout=60,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("rules-size") / "data"
    first = run("init", "--data", str(data), "--domain", "office.example", "--demo")
    assert first.returncode == 0, first.stderr
    return data


def _one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERR), proc.stderr
    return lines[0]


def test_an_oversize_file_is_refused_by_its_size_in_one_line(demo: Path, tmp_path: Path) -> None:
    before = run("rules", "export", "mueller", "--data", str(demo))
    assert before.returncode == 0, before.stderr
    huge = tmp_path / "regeln.yaml"
    with huge.open("wb") as f:  # 64 MB that take no disk space (sparse)
        f.truncate(64 * 1024 * 1024)
    line = _one_error(run("rules", "import", "mueller", str(huge), "--data", str(demo)))
    assert str(huge) in line and f"{64 * 1024 * 1024} bytes" in line, line
    assert f"at most {MAX_DOCUMENT_BYTES} bytes" in line and "nothing changed" in line, line
    after = run("rules", "export", "mueller", "--data", str(demo))
    assert after.stdout == before.stdout


def test_an_oversize_document_on_stdin_is_refused_in_one_line(demo: Path) -> None:
    text = b"# " + b"x" * (MAX_DOCUMENT_BYTES + 10) + b"\nclient: mueller\nnumbers: {}\n"
    line = _one_error(run("rules", "import", "mueller", "-", "--data", str(demo), stdin=text))
    assert f"more than {MAX_DOCUMENT_BYTES} bytes" in line, line


def test_a_document_at_the_limit_is_still_read(demo: Path, tmp_path: Path) -> None:
    doc = tmp_path / "regeln.yaml"
    body = b"client: mueller\nnumbers: {}\n"
    doc.write_bytes(b"#" * (MAX_DOCUMENT_BYTES - len(body) - 1) + b"\n" + body)
    assert doc.stat().st_size == MAX_DOCUMENT_BYTES
    proc = run("rules", "import", "mueller", str(doc), "--data", str(demo))
    assert "may have at most" not in proc.stderr, proc.stderr
