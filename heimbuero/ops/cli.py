"""The operator's commands: `backup`, `restore`, `install-service` (added to the CLI's
parser by heimbuero.cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from heimbuero import config
from heimbuero.config import ConfigError
from heimbuero.ops.backup import BackupError


def cmd_backup(args: argparse.Namespace) -> int:
    from heimbuero.ops.backup import backup

    data_dir = config.resolve_data_dir(args.data)
    try:
        report = backup(data_dir, Path(args.to))
    except BackupError as exc:
        raise ConfigError(str(exc)) from None
    dropped = (
        f"; {len(report.dropped)} file(s) deleted while it ran left out" if report.dropped else ""
    )
    print(
        f"backup written to {report.path}: database (schema {report.schema}), "
        f"{report.files} file(s), {report.bytes} bytes of files{dropped}"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from heimbuero.ops.backup import restore

    data_dir = config.resolve_data_dir(args.data)
    try:
        manifest = restore(Path(args.file), data_dir, args.database_url)
    except BackupError as exc:
        raise ConfigError(str(exc)) from None
    print(
        f"restored the backup of {manifest.get('domain')} from {manifest.get('created_at')} "
        f"into {data_dir}; start it with 'heimbuero serve --data {data_dir}' (pending database "
        "migrations run then)"
    )
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    from heimbuero.ops.service import install_service

    data_dir = config.resolve_data_dir(args.data)
    try:
        text = install_service(data_dir, Path(args.unit_dir), args.user, args.dry_run)
    except BackupError as exc:
        raise ConfigError(str(exc)) from None
    sys.stdout.write(text)
    return 0


def add_parsers(commands: Any, data: argparse.ArgumentParser) -> None:
    """Add the operator's commands to the CLI's subcommands."""
    p = commands.add_parser(
        "backup",
        parents=[data],
        help="write a backup (database, files, config, secret) while serving",
        description="Write one tar file with a consistent copy of the database (SQLite's "
        "online backup API, or pg_dump of one snapshot for PostgreSQL: safe while the server "
        "runs), the stored files that copy knows, "
        "config.toml, the secret and the TLS files of the data directory, and a manifest with "
        "their SHA-256 checksums. The file is replaced atomically; it holds secrets (mode 0600).",
    )
    p.add_argument("--to", metavar="FILE", required=True, help="the backup file to write")
    p.set_defaults(func=cmd_backup)

    p = commands.add_parser(
        "restore",
        parents=[data],
        help="unpack a backup into a new data directory",
        description="Check every member of a backup against its manifest and unpack it into "
        "the data directory given with --data, which must not exist yet or be empty. A "
        "damaged or truncated backup is refused and nothing is written.",
    )
    p.add_argument("file", metavar="FILE", help="a file written by 'heimbuero backup'")
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="for a backup of a PostgreSQL store: the new, empty database to restore into "
        "(postgresql+psycopg://USER:PASSWORD@HOST/DB); config.toml then names it",
    )
    p.set_defaults(func=cmd_restore)

    p = commands.add_parser(
        "install-service",
        parents=[data],
        help="write a systemd unit for 'heimbuero serve'",
        description="Write heimbuero.service (hardened: own user, read-only system, only the "
        "data directory writable, may bind ports below 1024) into --unit-dir and print the "
        "commands that create the user and start the service.",
    )
    p.add_argument(
        "--unit-dir",
        metavar="DIR",
        default="/etc/systemd/system",
        help="where to write the unit (default /etc/systemd/system)",
    )
    p.add_argument(
        "--user", default="heimbuero", help="the system user to run as (default heimbuero)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the unit instead of writing it")
    p.set_defaults(func=cmd_install_service)
