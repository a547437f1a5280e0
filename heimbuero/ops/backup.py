"""`heimbuero backup` and `heimbuero restore`: one tar file with the database, the stored
files, config.toml, the secret and the TLS files, and a manifest with a SHA-256 per member.

Consistency while the server runs: the database is copied first, with SQLite's online backup
API (one read transaction: a snapshot of one moment, writers go on meanwhile). The files put
into the archive are exactly the ones that snapshot has records of: a file uploaded after it
is left out (the restored database does not know it), and a file deleted after it (its bytes
gone by the time they are read) is deleted from the database copy too, so the archive never
holds a record without bytes or bytes without a record. Stored files never change once in
place (a new upload is a new file), so bytes read later are the bytes of the snapshot.

Archive layout (all under `heimbuero-backup/`): `heimbuero.db`, `files/ID`, `config.toml`,
`secret`, `tls/…`, and last `manifest.json` with {"format": 1, "members": {path: {"size",
"sha256"}}, …}. Restore checks every member against it and refuses anything else."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from heimbuero import __version__
from heimbuero import config as config_mod

PREFIX = "heimbuero-backup"
MANIFEST = "manifest.json"
FORMAT = 1
CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore cannot be done; the message says why in one line."""


@dataclass
class BackupReport:
    path: Path
    files: int = 0
    bytes: int = 0
    dropped: list[str] = field(default_factory=list)  # deleted while the backup ran
    schema: str | None = None


class _Hashing(io.RawIOBase):
    """A file read through, hashed on the way (exactly `size` bytes: short files fail)."""

    def __init__(self, src: BinaryIO, size: int) -> None:
        self.src, self.left = src, size
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        want = self.left if n is None or n < 0 else min(n, self.left)
        data = self.src.read(want)
        if not data:
            raise BackupError("a file shrank while it was being archived")
        self.left -= len(data)
        self.hash.update(data)
        return data


def _add_bytes(
    tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o600
) -> dict[str, object]:
    info = tarfile.TarInfo(f"{PREFIX}/{name}")
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _add_file(
    tar: tarfile.TarFile, name: str, src: BinaryIO, mode: int = 0o600
) -> dict[str, object]:
    size = os.fstat(src.fileno()).st_size
    info = tarfile.TarInfo(f"{PREFIX}/{name}")
    info.size, info.mode, info.mtime = size, mode, int(time.time())
    reader = _Hashing(src, size)
    tar.addfile(info, reader)
    return {"size": size, "sha256": reader.hash.hexdigest()}


def snapshot_database(db_path: Path, dest: Path) -> None:
    """Copy a live SQLite database (WAL mode) consistently: the online backup API in one step.
    The copy is a single file (journal mode DELETE)."""
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path}")
    src = sqlite3.connect(db_path, timeout=30)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)  # pages=-1: all pages under one read transaction
        dst.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy the database {db_path}: {exc}") from None
    finally:
        dst.close()
        src.close()


def _schema_revision(db: Path) -> str | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return str(row[0]) if row else None


def backup(data_dir: Path, to: Path, inside_ok: bool = False) -> BackupReport:
    """Write a backup of the data directory to `to` (replaced atomically when it exists).
    `inside_ok`: `to` may be in the data directory (the backup before an upgrade)."""
    from heimbuero.store import Store

    cfg = config_mod.load(data_dir)
    to = to.expanduser().resolve()
    if to.is_dir():
        raise BackupError(f"{to} is a directory: name the backup file")
    if to.is_relative_to(cfg.data_dir) and not inside_ok:
        raise BackupError(f"{to} is inside the data directory: put backups elsewhere")
    if not to.parent.is_dir():
        raise BackupError(f"no such directory: {to.parent}")
    report = BackupReport(to)
    with tempfile.TemporaryDirectory(prefix="heimbuero-backup-") as tmp:
        db_copy = Path(tmp) / config_mod.DB_FILE
        snapshot_database(cfg.db_path, db_copy)
        report.schema = _schema_revision(db_copy)
        copy = Store(f"sqlite:///{db_copy}")
        try:
            records = copy.list_files(None)
        except Exception as exc:  # an old schema without files has none to copy
            if "no such table" not in str(exc):
                raise
            records = []
        fd, partial = tempfile.mkstemp(dir=to.parent, prefix=f".{to.name}.", suffix=".partial")
        os.close(fd)
        try:
            members: dict[str, dict[str, object]] = {}
            with (
                open(partial, "wb") as raw,
                tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for record in records:
                    path = cfg.files_dir / record.id
                    try:
                        src = path.open("rb")
                    except FileNotFoundError:
                        report.dropped.append(record.id)  # deleted after the snapshot
                        continue
                    with src:
                        members[f"files/{record.id}"] = entry = _add_file(
                            tar, f"files/{record.id}", src
                        )
                    report.files += 1
                    report.bytes += int(str(entry["size"]))
                if report.dropped:
                    copy.delete_file_records(report.dropped)
                copy.close()
                with db_copy.open("rb") as src:
                    members[config_mod.DB_FILE] = _add_file(tar, config_mod.DB_FILE, src)
                for name in (config_mod.CONFIG_FILE, config_mod.SECRET_FILE):
                    with (cfg.data_dir / name).open("rb") as src:
                        members[name] = _add_file(tar, name, src)
                for path in sorted(_tls_files(cfg)):
                    rel = path.relative_to(cfg.data_dir).as_posix()
                    with path.open("rb") as src:
                        members[rel] = _add_file(tar, rel, src)
                manifest = {
                    "format": FORMAT,
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "heimbuero": __version__,
                    "schema": report.schema,
                    "domain": cfg.domain,
                    "members": members,
                    "dropped_files": report.dropped,
                }
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
                tar.close()  # the end-of-archive blocks, then all of it to the disk
                raw.flush()
                os.fsync(raw.fileno())
            os.chmod(partial, 0o600)
            os.replace(partial, to)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        finally:
            copy.close()
    return report


def _tls_files(cfg: config_mod.Config) -> Iterator[Path]:
    """TLS certificates and keys kept inside the data directory (paths elsewhere are the
    operator's to back up, e.g. /etc/letsencrypt)."""
    for path in (cfg.tls_cert_path, cfg.tls_key_path):
        resolved = path.resolve()
        if resolved.is_file() and resolved.is_relative_to(cfg.data_dir):
            yield resolved


# -- restore ------------------------------------------------------------------------------------


def _safe_name(name: str) -> str | None:
    """The member's path below PREFIX, or None when it is not one a backup writes."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or len(p.parts) < 2 or p.parts[0] != PREFIX:
        return None
    return "/".join(p.parts[1:])


def restore(archive: Path, data_dir: Path) -> dict[str, object]:
    """Unpack a backup into a new data directory (missing or empty); returns its manifest.
    Every member is checked against the manifest before the directory appears."""
    archive = archive.expanduser()
    data_dir = data_dir.expanduser().resolve()
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not empty: restore into a new (empty) data directory")
    if not data_dir.parent.is_dir():
        raise BackupError(f"no such directory: {data_dir.parent}")
    staging = Path(tempfile.mkdtemp(dir=data_dir.parent, prefix=f".{data_dir.name}.restoring-"))
    try:
        os.chmod(staging, 0o700)
        manifest, seen = _unpack(archive, staging)
        members = manifest.get("members")
        if not isinstance(members, dict):
            raise BackupError(f"{archive}: the manifest lists no members")
        for name, want in members.items():
            got = seen.get(name)
            if got is None:
                raise BackupError(f"{archive} is incomplete: {name} is missing")
            if got != {"size": want.get("size"), "sha256": want.get("sha256")}:
                raise BackupError(f"{archive} is damaged: {name} does not match its checksum")
        extra = sorted(set(seen) - set(members))
        if extra:
            raise BackupError(f"{archive}: {extra[0]} is not in the manifest")
        for need in (config_mod.DB_FILE, config_mod.CONFIG_FILE, config_mod.SECRET_FILE):
            if need not in seen:
                raise BackupError(f"{archive} is not a heimbuero backup: {need} is missing")
        (staging / config_mod.FILES_DIR).mkdir(exist_ok=True)
        if data_dir.exists():
            data_dir.rmdir()
        os.replace(staging, data_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _unpack(archive: Path, staging: Path) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    seen: dict[str, dict[str, object]] = {}
    manifest: dict[str, object] | None = None
    try:
        tar = tarfile.open(archive, "r:")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise BackupError(f"no such file: {archive}") from None
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{archive} is not a heimbuero backup (not a tar file: {exc})") from None
    try:
        with tar:
            for member in tar:
                name = _safe_name(member.name)
                if name is None or not member.isfile():
                    raise BackupError(
                        f"{archive} is not a heimbuero backup: unexpected member {member.name!r}"
                    )
                if manifest is not None:
                    raise BackupError(f"{archive}: members after the manifest")
                src = tar.extractfile(member)
                assert src is not None
                if name == MANIFEST:
                    try:
                        manifest = json.loads(src.read(16 << 20))
                    except ValueError:
                        raise BackupError(f"{archive} is damaged: unreadable manifest") from None
                    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                        raise BackupError(f"{archive}: unknown backup format")
                    continue
                dest = staging / name
                dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                digest = hashlib.sha256()
                size = 0
                with dest.open("xb") as out:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(dest, 0o600)
                seen[name] = {"size": size, "sha256": digest.hexdigest()}
    except (tarfile.TarError, EOFError) as exc:
        raise BackupError(f"{archive} is damaged or truncated: {exc}") from None
    except FileExistsError:
        raise BackupError(f"{archive}: a member appears twice") from None
    if manifest is None:
        raise BackupError(f"{archive} is damaged or truncated: no manifest at its end")
    return manifest, seen
