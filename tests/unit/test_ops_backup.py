"""`heimbuero backup` / `restore` without a running server: what a backup holds, a file
deleted while the backup runs, and the refusals (one error line each, nothing written)."""

from __future__ import annotations

import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from heimbuero import cli, config
from heimbuero.ops import backup as backup_mod
from heimbuero.store import Store
from heimbuero.store.files import FileRecord

ERR = "heimbuero: error: "


def _one_error(capsys: pytest.CaptureFixture[str], code: int, *words: str) -> str:
    assert code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERR), lines
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("backup") / "data"
    assert cli.main(["init", "--data", str(d), "--domain", "office.example"]) == 0
    return d


def _record(file_id: str, size: int) -> FileRecord:
    now = datetime.now(UTC)
    return FileRecord(
        id=file_id, owner="anna", name=f"{file_id}.txt", content_type="text/plain", size=size,
        sha256="0" * 64, duration_s=None, created_at=now, expires_at=now + timedelta(days=1),
    )  # fmt: skip


def test_a_file_deleted_while_the_backup_runs_leaves_no_record_behind(
    data: Path, tmp_path: Path
) -> None:
    cfg = config.load(data)
    store = Store(cfg.db_url)
    kept, gone = "A" * 43, "B" * 43
    (cfg.files_dir / kept).write_bytes(b"kept bytes")
    store.add_file_within_quota(_record(kept, 10), None)
    store.add_file_within_quota(_record(gone, 5), None)  # its bytes are already deleted
    (cfg.files_dir / ("C" * 43)).write_bytes(b"no record: an upload after the snapshot")
    store.close()
    report = backup_mod.backup(data, tmp_path / "b.tar")
    assert report.files == 1 and report.dropped == [gone]
    with tarfile.open(tmp_path / "b.tar") as tar:
        names = sorted(m.name.removeprefix("heimbuero-backup/") for m in tar)
    assert names == sorted([
        "heimbuero.db", "config.toml", "secret", "tls/sip.crt", "tls/sip.key",
        f"files/{kept}", "manifest.json",
    ])  # fmt: skip
    target = tmp_path / "restored"
    backup_mod.restore(tmp_path / "b.tar", target)
    restored = Store(config.load(target).db_url)
    try:
        assert restored.all_file_ids() == {kept}
    finally:
        restored.close()
    assert (target / "files" / kept).read_bytes() == b"kept bytes"
    assert (target / "secret").read_bytes() == (data / "secret").read_bytes()
    assert (target / "secret").stat().st_mode & 0o077 == 0


def test_restore_refuses_what_it_cannot_restore_whole(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "b.tar"
    assert cli.main(["backup", "--data", str(data), "--to", str(archive)]) == 0
    capsys.readouterr()
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x")
    code = cli.main(["restore", str(archive), "--data", str(full)])
    _one_error(capsys, code, "is not empty", "new (empty) data directory")

    raw = archive.read_bytes()
    target = tmp_path / "never"
    for name, blob, words in (
        ("cut.tar", raw[: len(raw) // 2], ("damaged or truncated",)),
        ("tail.tar", raw[: len(raw) - 12000], ("damaged or truncated",)),
        ("flipped.tar", raw[:2048] + bytes([raw[2048] ^ 0xFF]) + raw[2049:],
         ("heimbuero.db", "does not match its checksum")),
        ("empty.tar", b"", ("not a heimbuero backup",)),
        ("text.tar", b"hello\n" * 200, ("not a heimbuero backup",)),
    ):  # fmt: skip
        bad = tmp_path / name
        bad.write_bytes(blob)
        code = cli.main(["restore", str(bad), "--data", str(target)])
        _one_error(capsys, code, *words)
        assert not target.exists(), name
    code = cli.main(["restore", str(tmp_path / "missing.tar"), "--data", str(target)])
    _one_error(capsys, code, "no such file")
    assert not [p for p in tmp_path.iterdir() if ".restoring-" in p.name]
    # a member outside the backup's folder is refused before anything is written
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(data / "config.toml", arcname="../escape.toml")
    code = cli.main(["restore", str(evil), "--data", str(target)])
    _one_error(capsys, code, "unexpected member")
    assert not (tmp_path / "escape.toml").exists()


def test_backup_refuses_a_target_inside_the_data_directory(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["backup", "--data", str(data), "--to", str(data / "b.tar")])
    _one_error(capsys, code, "inside the data directory")
