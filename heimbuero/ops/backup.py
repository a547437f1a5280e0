"""`heimbuero backup` and `heimbuero restore`: one tar file with the database, the stored
files, config.toml, the secret and the TLS files, and a manifest with a SHA-256 per member.

Consistency while the server runs: the database is copied first, with SQLite's online backup
API (one read transaction: a snapshot of one moment, writers go on meanwhile). The files put
into the archive are exactly the ones that snapshot has records of: a file uploaded after it
is left out (the restored database does not know it), and a file deleted after it (its bytes
gone by the time they are read) is deleted from the database copy too, so the archive never
holds a record without bytes or bytes without a record. Stored files never change once in
place (a new upload is a new file), so bytes read later are the bytes of the snapshot.

On PostgreSQL (`[store] database_url`) the same holds with PostgreSQL's own tools: a
REPEATABLE READ transaction exports its snapshot, `pg_dump --snapshot` dumps exactly that
moment (custom format), and the files are listed in that same transaction; files deleted
before their bytes were read are named in the manifest (`dropped_files`) and their records
are deleted from the restored database. `pg_dump`/`pg_restore` come with Debian's
postgresql-client and must be at least the server's version.

Archive layout (all under `heimbuero-backup/`): `heimbuero.db` (SQLite) or `heimbuero.pgdump`
(PostgreSQL, `pg_dump -Fc`), `files/ID`, `config.toml`, `secret`, `tls/…`, and last
`manifest.json` with {"format": 1, "database": "sqlite" | "postgresql", "members": {path:
{"size", "sha256"}}, …}. Restore checks every member against it and refuses anything else.
A PostgreSQL backup is restored into an empty database named with `--database-url`."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
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
PG_DUMP = "heimbuero.pgdump"
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
        copy: Store | None = None
        if cfg.uses_sqlite_file:
            db_name = config_mod.DB_FILE
            db_copy = Path(tmp) / db_name
            snapshot_database(cfg.db_path, db_copy)
            report.schema = _schema_revision(db_copy)
            copy = Store(f"sqlite:///{db_copy}")
            try:
                file_ids = [r.id for r in copy.list_files(None)]
            except Exception as exc:  # an old schema without files has none to copy
                if "no such table" not in str(exc):
                    raise
                file_ids = []
        else:
            db_name = PG_DUMP
            db_copy = Path(tmp) / db_name
            report.schema, file_ids = dump_postgresql(cfg.db_url, db_copy)
        fd, partial = tempfile.mkstemp(dir=to.parent, prefix=f".{to.name}.", suffix=".partial")
        os.close(fd)
        try:
            members: dict[str, dict[str, object]] = {}
            with (
                open(partial, "wb") as raw,
                tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for file_id in file_ids:
                    path = cfg.files_dir / file_id
                    try:
                        src = path.open("rb")
                    except FileNotFoundError:
                        report.dropped.append(file_id)  # deleted after the snapshot
                        continue
                    with src:
                        members[f"files/{file_id}"] = entry = _add_file(
                            tar, f"files/{file_id}", src
                        )
                    report.files += 1
                    report.bytes += int(str(entry["size"]))
                if copy is not None:
                    if report.dropped:
                        copy.delete_file_records(report.dropped)
                    copy.close()
                with db_copy.open("rb") as src:
                    members[db_name] = _add_file(tar, db_name, src)
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
                    "database": "sqlite" if cfg.uses_sqlite_file else "postgresql",
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
            if copy is not None:
                copy.close()
    return report


def libpq_url(db_url: str) -> str:
    """The libpq connection URI of a SQLAlchemy PostgreSQL URL (for psycopg, pg_dump)."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        newest = sorted(
            Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        if not newest:
            raise BackupError(
                f"{name} is not installed (Debian: apt-get install postgresql-client)"
            )
        found = str(newest[-1])
    return found


def dump_postgresql(db_url: str, dest: Path) -> tuple[str | None, list[str]]:
    """Dump the database at one moment (`pg_dump --snapshot` of a REPEATABLE READ
    transaction) to `dest`; returns that moment's schema revision and stored file ids."""
    import psycopg

    uri = libpq_url(db_url)
    try:
        conn = psycopg.connect(uri)
    except psycopg.Error as exc:
        raise BackupError(f"cannot connect to the database: {exc}".strip()) from None
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        revision = None
        file_ids: list[str] = []
        tables = {
            str(r[0])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        if "alembic_version" in tables:
            rev = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = str(rev[0]) if rev else None
        if "files" in tables:
            file_ids = [str(r[0]) for r in conn.execute("SELECT id FROM files ORDER BY id")]
        done = subprocess.run(
            [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
             f"--snapshot={snapshot}", "--file", str(dest), "--dbname", uri],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            raise BackupError(f"pg_dump failed: {done.stderr.strip().splitlines()[-1:]}")
        conn.rollback()
    finally:
        conn.close()
    return revision, file_ids


def restore_postgresql(dump: Path, db_url: str, dropped: list[str]) -> None:
    """Load a `pg_dump -Fc` file into the empty database at `db_url`; the records of files
    that were deleted while the backup ran are deleted again."""
    import psycopg

    uri = libpq_url(db_url)
    try:
        with psycopg.connect(uri) as conn:
            used = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchone()
    except psycopg.Error as exc:
        raise BackupError(f"cannot connect to the database: {exc}".strip()) from None
    if used and used[0]:
        raise BackupError("the database is not empty: restore into a new, empty database")
    done = subprocess.run(
        [_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
         "--single-transaction", "--dbname", uri, str(dump)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip().splitlines()[-1:]}")
    if dropped:
        from heimbuero.store import Store

        store = Store(db_url)
        try:
            store.delete_file_records(dropped)
        finally:
            store.close()


def _set_database_url(config_path: Path, db_url: str) -> None:
    """Point a restored config.toml's `[store] database_url` at the new database."""
    lines = config_path.read_text(encoding="utf-8").splitlines(keepends=True)
    section, out, done = "", [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if section == "store" and not done:
                out.append(f"database_url = {json.dumps(db_url)}\n")
                done = True
            section = stripped[1:-1].strip()
        elif section == "store" and stripped.startswith("database_url"):
            if not done:
                out.append(f"database_url = {json.dumps(db_url)}\n")
                done = True
            continue
        out.append(line)
    if not done:
        if section != "store":
            out.append("\n[store]\n")
        out.append(f"database_url = {json.dumps(db_url)}\n")
    config_path.write_text("".join(out), encoding="utf-8")


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


def restore(archive: Path, data_dir: Path, database_url: str | None = None) -> dict[str, object]:
    """Unpack a backup into a new data directory (missing or empty); returns its manifest.
    Every member is checked against the manifest before the directory appears. A PostgreSQL
    backup needs `database_url`, a new empty database, which config.toml then names."""
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
        postgresql = PG_DUMP in seen
        db_member = PG_DUMP if postgresql else config_mod.DB_FILE
        for need in (db_member, config_mod.CONFIG_FILE, config_mod.SECRET_FILE):
            if need not in seen:
                raise BackupError(f"{archive} is not a heimbuero backup: {need} is missing")
        if postgresql:
            if not database_url:
                raise BackupError(
                    f"{archive} holds a PostgreSQL database: pass --database-url with a new, "
                    "empty database to restore it into"
                )
            url = config_mod.check_database_url(database_url)
            if url.startswith("sqlite"):
                raise BackupError("--database-url: a PostgreSQL backup restores into PostgreSQL")
            dropped = manifest.get("dropped_files") or []
            assert isinstance(dropped, list)
            restore_postgresql(staging / PG_DUMP, url, [str(d) for d in dropped])
            (staging / PG_DUMP).unlink()
            _set_database_url(staging / config_mod.CONFIG_FILE, url)
        elif database_url:
            raise BackupError(
                f"{archive} holds a SQLite database: it is restored into the data directory "
                "(no --database-url)"
            )
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
