"""[store] database_url and `heimbuero init --database-url`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from heimbuero import config
from heimbuero.config import ConfigError


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heimbuero", *args], capture_output=True, text=True, timeout=120
    )


def _write(tmp_path: Path, store_table: str) -> Path:
    (tmp_path / "config.toml").write_text(
        f'[server]\ndomain = "x.test"\n\n[store]\n{store_table}\n', encoding="utf-8"
    )
    return tmp_path


def test_default_is_the_sqlite_file(tmp_path: Path) -> None:
    cfg = config.load(_write(tmp_path, ""))
    assert cfg.db_url == f"sqlite:///{tmp_path / 'heimbuero.db'}" and cfg.uses_sqlite_file


def test_postgresql_url_uses_psycopg(tmp_path: Path) -> None:
    cfg = config.load(_write(tmp_path, 'database_url = "postgresql://u:p@h/db"'))
    assert cfg.db_url == "postgresql+psycopg://u:p@h/db" and not cfg.uses_sqlite_file


@pytest.mark.parametrize(
    "line", ['database_url = "mysql://u@h/db"', "database_url = 5", 'url = "postgresql://h/d"']
)
def test_bad_store_settings_are_refused(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError, match=r"\[store\]"):
        config.load(_write(tmp_path, line))


def test_init_and_user_commands_on_postgresql(tmp_path: Path, pg_cluster) -> None:  # type: ignore[no-untyped-def]
    url = pg_cluster.new_database()
    data = tmp_path / "data"
    res = _cli("init", "--data", str(data), "--domain", "x.test", "--database-url", url)
    assert res.returncode == 0, res.stderr
    assert not (data / "heimbuero.db").exists()
    assert "database_url" in (data / "config.toml").read_text(encoding="utf-8")
    res = _cli("user", "add", "anna", "--data", str(data), "--password", "Geheim-12345")
    assert res.returncode == 0, res.stderr
    assert "anna" in _cli("user", "list", "--data", str(data)).stdout
    again = _cli("init", "--data", str(data), "--database-url", "postgresql+psycopg://o@h/other")
    assert again.returncode == 1 and "already uses the database" in again.stderr
